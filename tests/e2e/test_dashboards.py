"""The Grafana dashboard and the Prometheus alert rules of deploy/, against the stats a real Envoy
with the filter exports.

No Grafana runs here (none can be installed on this machine: it is in neither Debian's archive nor
PyPI). What is checked instead: the dashboard's JSON (panels, targets, variables), that every query
of it and of the alert rules selects stats a real Envoy with the filter exports, once
envoy/prometheus.yml's relabelling has labelled them, and — with promtool, Debian's `prometheus`
package, which `make test` installs — that the rules pass `promtool check rules` and their unit
tests, and that every dashboard query parses and returns series when evaluated over those real
stats (`promtool test rules`, each query wrapped in `absent()`, which must come out empty).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from harness import ROOT, Envoy, prometheus

DASHBOARD = ROOT / "deploy" / "grafana" / "ratelimit-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "ratelimit-alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "ratelimit-alerts.test.yml"
PROMETHEUS_YML = ROOT / "envoy" / "prometheus.yml"
PROMTOOL = shutil.which("promtool")
# `make e2e` sets PROMTOOL_REQUIRED=1 (make test installs promtool first): there a missing promtool
# fails these tests instead of skipping them.
REQUIRED = os.environ.get("PROMTOOL_REQUIRED") == "1"
LABELS = ("ratelimit_rule", "ratelimit_stat")


def need_promtool():
    if not PROMTOOL:
        message = "promtool is not installed (Debian: apt-get install prometheus; make test does)"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def exported(upstream):
    """Name -> value of every `ratelimit_*` series a real Envoy with envoy/envoy.yaml's filter
    configuration exports on /stats/prometheus, after a few admitted and refused requests."""
    envoy = Envoy(None, upstream).start()
    try:
        statuses = [envoy.request("/api/links/bulk", {"x-api-key": "dashboards"}).status for _ in range(5)]
        series = prometheus(envoy)  # settled: each worker hands its counts over once a second
    finally:
        envoy.close()
    assert statuses == [200] * 3 + [429] * 2, "the bulk rule: 3 per minute"
    assert (series["ratelimit_bulk_allowed"], series["ratelimit_bulk_refused"]) == (3, 2)
    return series


def relabel(name: str) -> dict[str, str]:
    """The labels envoy/prometheus.yml's metric_relabel_configs add to a series of this name
    (Prometheus anchors a relabelling regex at both ends: fullmatch)."""
    job = yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"][0]
    labels = {}
    for step in job["metric_relabel_configs"]:
        assert step["source_labels"] == ["__name__"]
        m = re.fullmatch(step["regex"], name)
        if m:
            labels[step["target_label"]] = m.expand(step["replacement"].replace("$", "\\"))
    return labels


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = [(f"panel {p['title']!r}", t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    out += [(f"variable {v['name']!r}", v["query"]["query"]) for v in dash["templating"]["list"]
            if v["type"] == "query"]
    return out


def alert_queries() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    return [(f"alert {r['alert']}", r["expr"]) for r in rules]


def concrete(expr: str) -> str:
    """A dashboard query as Grafana sends it, every rule selected ("All")."""
    return (expr.replace("$__rate_interval", "2m").replace("${rule}", ".+").replace("$rule", ".+")
            .replace("label_values(", "count by (ratelimit_rule) (").replace(", ratelimit_rule)", ")"))


# --- the relabelling ------------------------------------------------------------------------------

def test_relabelling_gives_every_filter_stat_its_rule_and_stat(exported):
    stats = set()
    for name in exported:
        labels = relabel(name)
        assert set(labels) == set(LABELS), name
        assert name == f"{labels['ratelimit_rule']}_{labels['ratelimit_stat']}"
        stats.add(labels["ratelimit_stat"])
    # Every per-rule stat of src/engine/stats.rs, and the limits' own.
    assert stats == {"allowed", "refused", "shadow_refused", "missing_key", "ambiguous_key", "capacity_refused",
                     "store_contention", "clients_tracked", "clients_evicted", "fleet_calls",
                     "fleet_admitted", "fleet_refused", "fleet_failed", "fleet_leased",
                     "fleet_refills", "fleet_batched", "fleet_reports", "fleet_report_refused",
                     "door_admitted", "refused_from_memory", "given_back", "settled", "overspent"}
    rules = {relabel(n)["ratelimit_rule"] for n in exported}
    assert {"ratelimit_api", "ratelimit_bulk", "ratelimit_api_per_minute", "ratelimit_api_per_day",
            "ratelimit_bulk_per_minute"} <= rules
    assert relabel("ratelimit_bulk_refused") == {"ratelimit_rule": "ratelimit_bulk", "ratelimit_stat": "refused"}
    assert relabel("envoy_http_downstream_rq_total") == {}, "no other stat is labelled"


# --- the dashboard --------------------------------------------------------------------------------

def test_the_dashboard_is_a_grafana_dashboard_over_one_prometheus_datasource():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["rule"]["includeAll"] and variables["rule"]["multi"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    graphs = [p for p in dash["panels"] if p["type"] != "row"]
    assert len(graphs) >= 12
    for p in graphs:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and p["description"], p["title"]
        assert all(t["expr"] and t["refId"] for t in p["targets"]), p["title"]
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, p["title"]
    # What the issue asks it to show.
    shown = " ".join(t["expr"] for p in graphs for t in p["targets"])
    for stat in ("allowed", "refused", "shadow_refused", "capacity_refused", "store_contention",
                 "clients_tracked", "fleet_calls", "fleet_failed"):
        assert re.search(rf'ratelimit_stat=~?"[^"]*\b{stat}\b', shown), stat


def selected_stats(expr: str) -> list[str]:
    """The value (a regex) of every ratelimit_stat matcher of a query."""
    return re.findall(r'ratelimit_stat\s*=~?\s*"([^"]*)"', expr)


QUERIES = dashboard_queries() + alert_queries()


@pytest.mark.parametrize("where,expr", QUERIES, ids=[where for where, _ in QUERIES])
def test_every_query_selects_stats_the_filter_exports(exported, where, expr):
    stats = {relabel(n)["ratelimit_stat"] for n in exported}
    matchers = selected_stats(expr)
    assert matchers, f"{where}: selects no ratelimit_stat"
    for regex in matchers:
        matched = {s for s in stats if re.fullmatch(regex, s)}
        assert matched, f"{where}: ratelimit_stat {regex!r} matches no stat a real Envoy exports"
        for alternative in regex.split("|"):
            assert alternative in stats, f"{where}: {alternative!r} is not a stat the filter exports"
    for name in re.findall(r"\bratelimit_\w+", expr):
        assert name in LABELS or name in exported, f"{where}: {name} is neither a label nor an exported stat"


def promtool_expr_tests(exported, queries) -> dict:
    """A promtool test file: the real Envoy's series, relabelled, as counters that grow (gauges
    too: their values do not matter here), and each query wrapped in absent(): empty iff the
    query returns series."""
    series = [{"series": "%s{%s,job=\"envoy\",instance=\"envoy:9901\"}" % (
                   name, ",".join(f'{k}="{v}"' for k, v in sorted(relabel(name).items()))),
               "values": "0+60x30" if name.endswith("_allowed") else "0+6x30"}
              for name in sorted(exported)]
    return {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "promql_expr_test": [{"expr": f"absent({concrete(expr)})", "eval_time": "20m", "exp_samples": []}
                             for _, expr in queries]}]}


def run_promtool_test(tmp_path, test: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "queries.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    return subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=120)


def test_every_dashboard_query_returns_series_over_the_real_stats(exported, tmp_path):
    need_promtool()
    run = run_promtool_test(tmp_path, promtool_expr_tests(exported, dashboard_queries()))
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert "SUCCESS" in run.stdout


def test_the_query_check_fails_on_a_misspelt_stat(exported, tmp_path):
    """The check above can fail: a query of a stat nobody exports returns nothing."""
    need_promtool()
    wrong = [("a typo", 'sum by (ratelimit_rule) (rate({ratelimit_stat="alowed"}[$__rate_interval]))')]
    run = run_promtool_test(tmp_path, promtool_expr_tests(exported, wrong))
    assert run.returncode != 0 and "FAILED" in run.stdout + run.stderr


# --- the alert rules ------------------------------------------------------------------------------

def test_the_alert_rules_pass_promtools_check_and_their_unit_tests():
    need_promtool()
    check = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "SUCCESS: 4 rules found" in check.stdout, check.stdout + check.stderr
    test = subprocess.run([PROMTOOL, "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True,
                          timeout=120)
    assert test.returncode == 0, (test.stdout + test.stderr)[-4000:]


def test_the_alert_unit_tests_use_the_real_stats_and_labels(exported):
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    named = [s["series"] for t in tests for s in t["input_series"]]
    assert named
    for series in named:
        name, labels = re.fullmatch(r"(\w+)\{(.*)\}", series).groups()
        labels = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        assert name in exported or relabel(name), series
        assert {k: labels[k] for k in LABELS} == relabel(name), series
    # The rule names used (api, bulk) are envoy.yaml's, so their stats are exported as named.
    assert {re.match(r"\w+", s).group() for s in named} <= set(exported)


def test_the_compose_prometheus_loads_the_alert_rules():
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    compose = yaml.safe_load((ROOT / "envoy" / "docker-compose.yml").read_text())
    mounts = {v["target"]: (ROOT / "envoy" / v["source"]).resolve()
              for v in compose["services"]["prometheus"]["volumes"]}
    assert [mounts[f] for f in config["rule_files"]] == [ALERTS.resolve()]
