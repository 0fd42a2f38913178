"""The config tooling: the committed JSON Schema accepts every shipped config and rejects bad
ones; the command-line checker names fields and fails with a non-zero exit."""
import json
import subprocess

import jsonschema
import pytest
import yaml

from harness import ENVOY_YAML, ROOT

SCHEMA = json.loads((ROOT / "envoy" / "ratelimit.schema.json").read_text())
TOOL = ROOT / "target" / "debug" / "ratelimit-config"


def shipped_configs():
    configs = {p.name: json.loads(p.read_text()) for p in sorted((ROOT / "envoy" / "examples").glob("*.json"))}
    envoy = yaml.safe_load(ENVOY_YAML.read_text())
    hcm = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    wasm = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm")
    configs["envoy.yaml"] = json.loads(wasm["typed_config"]["config"]["configuration"]["value"])
    return configs


@pytest.mark.parametrize("name,config", sorted(shipped_configs().items()))
def test_every_shipped_config_matches_the_schema(name, config):
    jsonschema.Draft202012Validator(SCHEMA).validate(config)


def test_the_schema_rejects_what_the_filter_rejects():
    validator = jsonschema.Draft202012Validator(SCHEMA)
    bad = [
        {"rules": [{"name": "a", "limits": [{"requests": 1, "window": "1y"}]}]},
        {"rules": [{"name": "a", "limitz": []}]},
        {"rules": [{"name": "a", "limits": [{"requests": -1, "window": 1}]}]},
        {"mode": "dry", "rules": []},
        {},
    ]
    for config in bad:
        assert list(validator.iter_errors(config)), config


def test_the_checker_names_the_field_and_fails(tmp_path):
    assert TOOL.exists(), "built by `make unit` (cargo test --features cli)"
    good = subprocess.run([TOOL, "check", *sorted(str(p) for p in (ROOT / "envoy" / "examples").glob("*.json"))],
                          capture_output=True, text=True)
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.count(": ok: ") == 8, "the five reference APIs and three ready-made refusals"
    assert ": warning: " not in good.stdout, good.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": [{"name": "x y", "limits": [{"requests": 1, "window": "999d"}]}]}))
    run = subprocess.run([TOOL, "check", str(bad)], capture_output=True, text=True)
    assert run.returncode == 1
    assert f"{bad}: $.rules[0].name: " in run.stdout
    assert f"{bad}: $.rules[0].limits[0].window: must be between 100ms and 366d" in run.stdout


def test_explain_shows_rule_key_plan_and_headers():
    run = subprocess.run(
        [TOOL, "explain", str(ROOT / "envoy" / "examples" / "000-codeqr.json"), "--path", "/api/links",
         "--header", "authorization: Bearer cq_1", "--header", "x-plan: pro"],
        capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr
    for expected in ("rule: api (rules[1])", 'key: Bearer "cq_1"', "plan: pro", "per_minute: 600 per 1m",
                     "x-ratelimit-remaining: 599", "request 601 within the window: refused with status 429"):
        assert expected in run.stdout, run.stdout
