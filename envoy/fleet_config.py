#!/usr/bin/env python3
"""The demo of envoy/envoy.yaml made fleet-wide: the Envoy configs and the rate limit service's
limits file of `make run-fleet` (and of the fleet compose stack), generated, never forked by hand.

What changes from envoy.yaml, and nothing else:
- the filter configuration gains a top-level "fleet" (the service's cluster, a short timeout,
  on_error "local") and every limited rule "fleet": true;
- a cluster "ratelimit_service" (HTTP/2) to the service is added;
- each Envoy gets its own listener and admin port (or address).
The service's limits file comes from the filter configuration through
`ratelimit-config engine-config` (the same command users run).

    .venv/bin/python envoy/fleet_config.py filter            # the fleet-wide filter JSON
    .venv/bin/python envoy/fleet_config.py envoy PORT ADMIN_PORT SERVICE_HOST SERVICE_PORT
    .venv/bin/python envoy/fleet_config.py compose [--check] # the fleet compose stack's files

`compose` writes the two generated files of envoy/docker-compose.fleet.yml (`make compose-config`;
`--check` exits 1 when either is not what envoy.yaml gives today, which a test runs):
- envoy.fleet.compose.yaml, the config of its three Envoys (one file: each Envoy has an address
  of its own on the compose network, all listen on 10000 with admin 9901): envoy.compose.yaml's
  text (envoy.yaml with only the addresses changed, compose_config.py) with the filter
  configuration made fleet-wide and the cluster of the service, `limitador:8081` by DNS, added;
  checked to parse to exactly envoy_config() of that base;
- limitador-limits.yaml, the service's limits file, from that filter configuration by
  `ratelimit-config engine-config` (`make tool` builds it).
"""
from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SOURCE = HERE / "envoy.yaml"
# The fleet compose stack (docker-compose.fleet.yml): its Envoy config and the service's limits.
COMPOSE_ENVOY = HERE / "envoy.fleet.compose.yaml"
COMPOSE_LIMITS = HERE / "limitador-limits.yaml"
# The compose service of the rate limit service, and the port it serves RLS on.
COMPOSE_SERVICE = ("limitador", 8081)
CLUSTER = "ratelimit_service"
TOOL = ROOT / "target" / "debug" / "ratelimit-config"
FLEET = {"cluster": CLUSTER, "timeout": "100ms", "on_error": "local"}


def wasm_plugin(config: dict) -> dict:
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    wasm = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm")
    return wasm["typed_config"]["config"]


def fleetwide(filter_config: dict, **fleet) -> dict:
    """`filter_config` with the service added and every limited rule fleet-wide."""
    out = copy.deepcopy(filter_config)
    out["fleet"] = {**FLEET, **fleet}
    for rule in out["rules"]:
        if not rule.get("exempt"):
            rule["fleet"] = True
    return out


def filter_config(source: Path = SOURCE) -> dict:
    config = yaml.safe_load(source.read_text())
    return fleetwide(json.loads(wasm_plugin(config)["configuration"]["value"]))


def service_cluster(host: str, port: int, dns: bool = False) -> dict:
    return {
        "name": CLUSTER,
        "type": "STRICT_DNS" if dns else "STATIC",
        "connect_timeout": "0.25s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": host, "port_value": port}}}}]}],
        },
    }


def envoy_config(listen_port: int, admin_port: int, service_host: str, service_port: int,
                 base: dict | None = None, dns: bool = False) -> dict:
    """envoy.yaml (or `base`, e.g. the compose variant) made fleet-wide on the given ports."""
    config = copy.deepcopy(base or yaml.safe_load(SOURCE.read_text()))
    config["admin"]["address"]["socket_address"]["port_value"] = admin_port
    config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = listen_port
    plugin = wasm_plugin(config)
    plugin["configuration"]["value"] = json.dumps(
        fleetwide(json.loads(plugin["configuration"]["value"])), indent=2)
    config["static_resources"]["clusters"].append(service_cluster(service_host, service_port, dns))
    return config


def limits_yaml(filter_json: dict, tool: Path = TOOL) -> str:
    """The service's limits file (Limitador's format), from the filter configuration."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(filter_json, f)
    try:
        return subprocess.run([str(tool), "engine-config", f.name], capture_output=True, text=True,
                              check=True).stdout
    finally:
        Path(f.name).unlink()


# --- the fleet compose stack's files ---------------------------------------------------------------
FILTER_VALUE = ("static_resources", "listeners", 0, "filter_chains", 0, "filters", 0, "typed_config",
                "http_filters", 0, "typed_config", "config", "configuration", "value")

COMPOSE_ENVOY_HEADER = """\
# GENERATED from envoy/envoy.yaml by envoy/fleet_config.py (make compose-config): do not edit.
# The config of the three Envoys of envoy/docker-compose.fleet.yml: envoy.compose.yaml (envoy.yaml
# with only the addresses changed) with the filter configuration made fleet-wide ("fleet" and
# every limited rule "fleet": true) and the cluster of the rate limit service added.
"""

COMPOSE_LIMITS_HEADER = """\
# GENERATED from envoy/envoy.yaml by envoy/fleet_config.py (make compose-config): do not edit.
# The limits file of the rate limit service (Limitador) of envoy/docker-compose.fleet.yml.
"""

CLUSTER_COMMENT = """\
  # The rate limit service: the compose service "limitador" (Envoy's RLS over gRPC, so HTTP/2),
  # by DNS. Added by envoy/fleet_config.py.
"""


def compact_json(config: dict) -> str:
    """The filter configuration as envoy.yaml writes it: a key per line, a rule per line."""
    lines = []
    for key, value in config.items():
        if isinstance(value, list):
            items = ",\n".join(f"    {json.dumps(item)}" for item in value)
            lines.append(f'  {json.dumps(key)}: [\n{items}\n  ]')
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}"


def compose_envoy(source_text: str) -> str:
    """envoy.fleet.compose.yaml from envoy.yaml's text, comments kept."""
    sys.path.insert(0, str(HERE))
    import compose_config

    base_text = compose_config.render(source_text)
    root = yaml.compose(base_text)
    value = compose_config.node_at(root, FILTER_VALUE)
    assert value.style == "|", "the filter configuration is a literal block"
    first = base_text[value.start_mark.index:].split("\n", 2)[1]
    indent = " " * (len(first) - len(first.lstrip()))
    fleet = fleetwide(json.loads(value.value))
    filter_json = {"fleet": fleet.pop("fleet"), **fleet}  # the service first, then the rules
    block = "|\n" + "".join(f"{indent}{line}\n" for line in compact_json(filter_json).splitlines())
    text = base_text[:value.start_mark.index] + block + base_text[value.end_mark.index:]

    clusters = yaml.compose(text)
    for step in ("static_resources", "clusters"):
        clusters = next(v for k, v in clusters.value if k.value == step)
    end = clusters.end_mark.index
    cluster = yaml.safe_dump([service_cluster(*COMPOSE_SERVICE, dns=True)], sort_keys=False,
                             default_flow_style=False, width=200)
    cluster = "".join(f"  {line}\n" for line in cluster.splitlines())
    text = text[:end] + ("" if text[:end].endswith("\n") else "\n") + CLUSTER_COMMENT + cluster + text[end:]

    lines = text.splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    text = COMPOSE_ENVOY_HEADER + "".join(lines)

    base = yaml.safe_load(base_text)
    expected = envoy_config(10000, 9901, *COMPOSE_SERVICE, base=base, dns=True)
    generated = yaml.safe_load(text)
    for doc in (expected, generated):  # the filter JSON compared as JSON, not as text
        plugin = wasm_plugin(doc)
        plugin["configuration"]["value"] = json.loads(plugin["configuration"]["value"])
    assert generated == expected, "the generated config is not envoy_config() of envoy.compose.yaml"
    assert (base["admin"], base["static_resources"]["listeners"][0]["address"]) == (
        generated["admin"], generated["static_resources"]["listeners"][0]["address"])
    return text


def compose_files(tool: Path = TOOL) -> dict[Path, str]:
    """The generated files of the fleet compose stack, path -> text."""
    source_text = SOURCE.read_text()
    envoy = compose_envoy(source_text)
    value = wasm_plugin(yaml.safe_load(envoy))["configuration"]["value"]
    limits = limits_yaml(json.loads(value), tool)
    return {COMPOSE_ENVOY: envoy, COMPOSE_LIMITS: COMPOSE_LIMITS_HEADER + limits}


def compose_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="fleet_config.py compose")
    ap.add_argument("--check", action="store_true", help="fail if a generated file is not up to date")
    args = ap.parse_args(argv)
    if not TOOL.exists():
        print(f"{TOOL} is missing: run `make tool`", file=sys.stderr)
        return 1
    stale = []
    for path, text in compose_files().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
            else:
                print(f"{path.name} is up to date")
        else:
            path.write_text(text)
            print(f"wrote {path}")
    for path in stale:
        print(f"{path} is not what {SOURCE.name} gives: run `make compose-config`", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["filter"]:
        print(json.dumps(filter_config(), indent=2))
    elif sys.argv[1:2] == ["envoy"] and len(sys.argv) == 6:
        port, admin, host, service_port = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
        print(yaml.safe_dump(envoy_config(port, admin, host, service_port), sort_keys=False))
    elif sys.argv[1:2] == ["compose"]:
        sys.exit(compose_main(sys.argv[2:]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
