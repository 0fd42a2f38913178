"""The deployment files users copy: docker-compose (its structure checked against what Envoy
really runs; tests/e2e/test_compose.py runs it on a Docker engine), the Envoy placement variants
(validated by Envoy and run for real), the Prometheus scrape config, and the OCI image of the
filter (built and checked byte for byte)."""
import base64
import gzip
import hashlib
import hmac
import importlib.util
import http.client
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import PurePosixPath

import pytest
import yaml

from harness import (
    ENVOY_YAML,
    ROOT,
    BUILT_WASM,
    WASM,
    Response,
    admin_get,
    envoy_binary,
    free_port,
    procs,
    render_config,
    settled,
    stop,
    wait_for_port,
)


# --- docker-compose: the file's structure (tests/e2e/test_compose.py runs it) -------------------

COMPOSE_FILE = ROOT / "envoy" / "docker-compose.yml"
COMPOSE_CONFIG = ROOT / "envoy" / "envoy.compose.yaml"
DEMO_UPSTREAM_YAML = ROOT / "envoy" / "demo-upstream.yaml"
PROMETHEUS_YML = ROOT / "envoy" / "prometheus.yml"


def compose():
    return yaml.safe_load(COMPOSE_FILE.read_text())


def mounts(service):
    """container path -> host file of a service's bind mounts, each read-only (long syntax, so a
    missing file is an error rather than an empty directory created in its place)."""
    out = {}
    for volume in service["volumes"]:
        assert volume["type"] == "bind" and volume["read_only"] is True, volume
        out[volume["target"]] = (COMPOSE_FILE.parent / volume["source"]).resolve()
    return out


PORT = re.compile(r"^(?:(?P<ip>[\d.]+):)?\$\{(?P<var>\w+):-(?P<default>\d+)\}:(?P<target>\d+)$")


def published(service):
    """container port -> (host ip or None, variable, default host port)."""
    out = {}
    for spec in service["ports"]:
        m = PORT.match(spec)
        assert m, f"{spec}: expected [ip:]${{VAR:-port}}:port"
        out[int(m["target"])] = (m["ip"], m["var"], int(m["default"]))
    return out


def socket_of(config, *path):
    node = config
    for step in path:
        node = node[step]
    return node["socket_address"]["address"], node["socket_address"]["port_value"]


def endpoint_of(config):
    cluster = config["static_resources"]["clusters"][0]
    return cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]


def test_compose_envoy_config_is_generated_from_envoy_yaml():
    # Committed, and exactly what envoy/compose_config.py makes of envoy.yaml today.
    run = subprocess.run([sys.executable, str(ROOT / "envoy" / "compose_config.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    base, generated = yaml.safe_load(ENVOY_YAML.read_text()), yaml.safe_load(COMPOSE_CONFIG.read_text())
    # The filter, its configuration and the routes are envoy.yaml's, byte for byte.
    assert http_filter(generated, WASM_FILTER) == http_filter(base, WASM_FILTER)
    assert hcm(generated) == hcm(base)
    assert generated["overload_manager"] == base["overload_manager"]
    # Only the addresses differ: listen on the container's addresses, reach the upstream by name.
    assert socket_of(generated, "admin", "address") == ("0.0.0.0", socket_of(base, "admin", "address")[1])
    listener, base_listener = generated["static_resources"]["listeners"][0], base["static_resources"]["listeners"][0]
    assert socket_of(listener, "address") == ("0.0.0.0", socket_of(base_listener, "address")[1])
    assert generated["static_resources"]["clusters"][0]["type"] == "STRICT_DNS"
    assert socket_of(endpoint_of(generated)) == ("upstream", socket_of(endpoint_of(base))[1])


def test_compose_envoy_runs_the_generated_config_and_the_built_wasm():
    services = compose()["services"]
    envoy = services["envoy"]
    assert envoy["image"] == "envoyproxy/envoy:v1.40.0"
    assert envoy["entrypoint"] == ["/usr/local/bin/envoy"]
    assert "network_mode" not in envoy, "on the project's bridge network, with published ports"
    files = mounts(envoy)
    workdir = PurePosixPath(envoy["working_dir"])
    command = envoy["command"]
    assert files[str(workdir / command[command.index("-c") + 1])] == COMPOSE_CONFIG.resolve()
    # The .wasm path of the config, resolved from the working directory, is the file `make build` writes.
    config = yaml.safe_load(COMPOSE_CONFIG.read_text())
    filename = http_filter(config, WASM_FILTER)["config"]["vm_config"]["code"]["local"]["filename"]
    assert files[str(workdir / filename)] == BUILT_WASM.resolve()


def test_compose_envoy_logs_as_make_run_does():
    # envoy/run.py: what `make run` starts Envoy with.
    spec = importlib.util.spec_from_file_location("envoy_run", ROOT / "envoy" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    CONSOLE_FLAGS = run.CONSOLE_FLAGS
    command = compose()["services"]["envoy"]["command"]
    at = command.index(CONSOLE_FLAGS[0])
    assert command[at:at + len(CONSOLE_FLAGS)] == CONSOLE_FLAGS


def test_compose_publishes_envoy_ports_and_reaches_the_upstream_by_name():
    services = compose()["services"]
    config = yaml.safe_load(COMPOSE_CONFIG.read_text())
    listen = socket_of(config["static_resources"]["listeners"][0], "address")[1]
    admin = socket_of(config, "admin", "address")[1]
    ports = published(services["envoy"])
    assert ports == {
        listen: (None, "ENVOY_HTTP_PORT", 10000),
        admin: ("127.0.0.1", "ENVOY_ADMIN_PORT", 9901),  # the admin API can stop Envoy: loopback only
    }
    # The upstream service is the cluster's address, listening on the cluster's port.
    host, port = socket_of(endpoint_of(config))
    upstream = services[host]
    assert host in services["envoy"]["depends_on"]
    assert upstream["image"] == services["envoy"]["image"], "one image for the stack"
    files = mounts(upstream)
    config_arg = upstream["command"][upstream["command"].index("-c") + 1]
    assert files[config_arg] == DEMO_UPSTREAM_YAML.resolve()
    demo = yaml.safe_load(DEMO_UPSTREAM_YAML.read_text())
    assert socket_of(demo["static_resources"]["listeners"][0], "address") == ("0.0.0.0", port)
    assert "ports" not in upstream


# --- docker-compose: the native module's variant (docker-compose.native.yml) -------------------

NATIVE_COMPOSE_FILE = ROOT / "envoy" / "docker-compose.native.yml"
NATIVE_COMPOSE_CONFIG = ROOT / "envoy" / "envoy.native.compose.yaml"
NATIVE_FILTER = "envoy.filters.http.dynamic_modules"
BUILT_NATIVE = ROOT / "target" / "filter" / "libenvoy_ratelimit.so"


def native_compose():
    return yaml.safe_load(NATIVE_COMPOSE_FILE.read_text())


def test_native_compose_config_is_envoy_compose_yaml_with_the_module_by_name():
    sys.path.insert(0, str(ROOT / "envoy"))
    import native_config
    assert native_config.main(["--check"]) == 0, "run envoy/native_config.py (make compose-config)"
    base, native = yaml.safe_load(COMPOSE_CONFIG.read_text()), yaml.safe_load(NATIVE_COMPOSE_CONFIG.read_text())
    assert native == native_config.to_native(base, by_name=True)
    module = http_filter(native, NATIVE_FILTER)
    assert module["dynamic_module_config"] == {"name": "envoy_ratelimit"}
    assert module["filter_name"] == "ratelimit"
    # The filter's JSON configuration is envoy.compose.yaml's (and so envoy.yaml's), byte for byte.
    assert module["filter_config"]["value"] == http_filter(base, WASM_FILTER)["config"]["configuration"]["value"]
    # Everything else is envoy.compose.yaml: the addresses, the routes, the other filters.
    without = lambda config, name: [f for f in hcm(config)["http_filters"] if f["name"] != name]  # noqa: E731
    assert without(native, NATIVE_FILTER) == without(base, WASM_FILTER)
    assert {k: v for k, v in hcm(native).items() if k != "http_filters"} == \
        {k: v for k, v in hcm(base).items() if k != "http_filters"}
    assert {k: v for k, v in native.items() if k != "static_resources"} == \
        {k: v for k, v in base.items() if k != "static_resources"}
    assert native["static_resources"]["clusters"] == base["static_resources"]["clusters"]


def test_native_compose_is_the_wasm_stack_with_the_module_mounted_on_the_search_path():
    wasm, native = compose()["services"], native_compose()["services"]
    assert set(native) == {"envoy", "upstream"}
    assert native["upstream"] == wasm["upstream"]
    envoy = native["envoy"]
    # Same image, entrypoint, working directory, ports and dependencies as the Wasm stack's Envoy.
    for key in ("image", "entrypoint", "working_dir", "ports", "depends_on"):
        assert envoy[key] == wasm["envoy"][key], key
    # The same command but for the config file and the component whose lines are shown.
    command, wasm_command = envoy["command"], wasm["envoy"]["command"]
    config_at = command.index("-c") + 1
    assert command[config_at] == "envoy/envoy.native.compose.yaml"
    swapped = {"envoy/envoy.native.compose.yaml": "envoy/envoy.compose.yaml", "dynamic_modules:info": "wasm:info"}
    assert [swapped.get(arg, arg) for arg in command] == wasm_command
    # The config and the module `make build-native` writes, mounted read-only; the module under
    # the name Envoy looks for (lib<name>.so) in ENVOY_DYNAMIC_MODULES_SEARCH_PATH.
    files = {}
    for volume in envoy["volumes"]:
        assert volume["type"] == "bind" and volume["read_only"] is True, volume
        files[volume["target"]] = (NATIVE_COMPOSE_FILE.parent / volume["source"]).resolve()
    search_path = PurePosixPath(envoy["environment"]["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"])
    assert files == {
        str(PurePosixPath(envoy["working_dir"]) / command[config_at]): NATIVE_COMPOSE_CONFIG.resolve(),
        str(search_path / "libenvoy_ratelimit.so"): BUILT_NATIVE.resolve(),
    }


def test_native_compose_config_validates_with_the_module_on_the_search_path():
    # As the container runs it: the module found by name in ENVOY_DYNAMIC_MODULES_SEARCH_PATH
    # (here target/filter, where `make build-native` writes libenvoy_ratelimit.so).
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(NATIVE_COMPOSE_CONFIG), "--disable-hot-restart"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(BUILT_NATIVE.parent)},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "ratelimit: configuration loaded (3 rules, native module, ABI v0.2.0)" in output


FLEET_COMPOSE_FILE = ROOT / "envoy" / "docker-compose.fleet.yml"
FLEET_COMPOSE_CONFIG = ROOT / "envoy" / "envoy.fleet.compose.yaml"
FLEET_LIMITS = ROOT / "envoy" / "limitador-limits.yaml"


@pytest.mark.parametrize("path", [COMPOSE_CONFIG, DEMO_UPSTREAM_YAML, FLEET_COMPOSE_CONFIG], ids=lambda p: p.name)
def test_compose_envoy_configs_validate(path):
    result = envoy_validate(path.relative_to(ROOT))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


# --- docker-compose: the optional Prometheus and Grafana (profile "metrics") --------------------
# Neither image can be had here (no registry; Grafana is in neither Debian nor PyPI; Debian's
# Prometheus is 2.42, not the compose file's v3.5.0), so this profile is checked by structure;
# `docker compose config` reads it in test_compose.py, and test_dashboards.py checks the dashboard
# and the alert rules with promtool against a real Envoy's stats.

def test_compose_metrics_profile_scrapes_envoy_admin():
    services = compose()["services"]
    assert "profiles" not in services["envoy"] and "profiles" not in services["upstream"], \
        "Envoy and the upstream start without any profile"
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["metrics"]
    files = mounts(prometheus)
    config_arg = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    assert files[config_arg.split("=", 1)[1]] == PROMETHEUS_YML.resolve()
    storage = next(a for a in prometheus["command"] if a.startswith("--storage.tsdb.path="))
    assert prometheus["tmpfs"] == [storage.split("=", 1)[1]], "no volume left behind by `down`"
    assert published(prometheus) == {9090: ("127.0.0.1", "PROMETHEUS_PORT", 9090)}
    assert "envoy" in prometheus["depends_on"]

    scrape = yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"]
    envoy_job = next(job for job in scrape if job["job_name"] == "envoy")
    assert envoy_job["metrics_path"] == "/stats/prometheus"
    targets = [t for group in envoy_job["static_configs"] for t in group["targets"]]
    admin_port = socket_of(yaml.safe_load(COMPOSE_CONFIG.read_text()), "admin", "address")[1]
    assert targets == [f"envoy:{admin_port}"]
    # The alert rules are mounted where prometheus.yml loads them from.
    rule_files = yaml.safe_load(PROMETHEUS_YML.read_text())["rule_files"]
    assert [files[f] for f in rule_files] == [(ROOT / "deploy" / "prometheus" / "ratelimit-alerts.yml").resolve()]


def test_compose_metrics_profile_has_grafana_with_the_dashboard_provisioned():
    services = compose()["services"]
    grafana = services["grafana"]
    assert grafana["profiles"] == ["metrics"]
    assert grafana["image"].startswith("grafana/grafana:")
    assert published(grafana) == {3000: ("127.0.0.1", "GRAFANA_PORT", 3000)}
    assert "prometheus" in grafana["depends_on"]
    files = mounts(grafana)
    provisioning = files["/etc/grafana/provisioning"]
    assert provisioning == (ROOT / "deploy" / "grafana" / "provisioning").resolve()
    # The datasource is the compose Prometheus, by its service name and container port.
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    # The dashboard provider reads the folder the dashboard is mounted into.
    provider = yaml.safe_load((provisioning / "dashboards" / "ratelimit.yml").read_text())["providers"][0]
    folder = provider["options"]["path"]
    dashboards = {target: host for target, host in files.items() if target.startswith(folder + "/")}
    assert list(dashboards.values()) == [(ROOT / "deploy" / "grafana" / "ratelimit-dashboard.json").resolve()]
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] in dashboards

# --- docker-compose.fleet.yml: the file's structure (tests/e2e/test_compose_fleet.py runs it) ----

def fleet_compose():
    return yaml.safe_load(FLEET_COMPOSE_FILE.read_text())


def cluster_named(config, name):
    return next(c for c in config["static_resources"]["clusters"] if c["name"] == name)


def test_fleet_compose_files_are_generated_from_envoy_yaml():
    # Committed, and exactly what envoy/fleet_config.py makes of envoy.yaml today (the limits
    # file through `ratelimit-config engine-config`, built by `make unit`).
    run = subprocess.run([sys.executable, str(ROOT / "envoy" / "fleet_config.py"), "compose", "--check"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    base, generated = yaml.safe_load(COMPOSE_CONFIG.read_text()), yaml.safe_load(FLEET_COMPOSE_CONFIG.read_text())
    # envoy.compose.yaml, with the filter configuration made fleet-wide and one cluster added.
    base_filter = json.loads(http_filter(base, WASM_FILTER)["config"]["configuration"]["value"])
    fleet_filter = json.loads(http_filter(generated, WASM_FILTER)["config"]["configuration"]["value"])
    assert fleet_filter["fleet"] == {"cluster": "ratelimit_service", "timeout": "100ms", "on_error": "local"}
    def without_fleet(rule):
        limits = [{k: v for k, v in lim.items() if k != "fleet"} for lim in rule.get("limits", [])]
        return {**rule, "limits": limits} if "limits" in rule else rule
    assert [without_fleet(r) for r in fleet_filter["rules"]] == base_filter["rules"]
    # Each limited rule's shortest limit is fleet-wide, the others stay per Envoy.
    marked = [[lim["window"] for lim in r.get("limits", []) if lim.get("fleet")] for r in fleet_filter["rules"]]
    assert marked == [[] if r.get("exempt") else ["1m"] for r in base_filter["rules"]]
    assert [c["name"] for c in generated["static_resources"]["clusters"]] == ["demo_upstream", "ratelimit_service"]
    assert generated["static_resources"]["clusters"][0] == base["static_resources"]["clusters"][0]
    assert generated["admin"] == base["admin"]
    assert generated["static_resources"]["listeners"][0]["address"] == base["static_resources"]["listeners"][0]["address"]
    assert FLEET_LIMITS.read_text().startswith("# GENERATED from envoy/envoy.yaml")


def test_fleet_compose_envoys_run_the_generated_config_on_both_networks():
    spec = importlib.util.spec_from_file_location("envoy_run", ROOT / "envoy" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    fleet, single = fleet_compose(), compose()["services"]["envoy"]
    config = yaml.safe_load(FLEET_COMPOSE_CONFIG.read_text())
    filename = http_filter(config, WASM_FILTER)["config"]["vm_config"]["code"]["local"]["filename"]
    listen = socket_of(config["static_resources"]["listeners"][0], "address")[1]
    admin = socket_of(config, "admin", "address")[1]
    for n in (1, 2, 3):
        envoy = fleet["services"][f"envoy{n}"]
        assert (envoy["image"], envoy["entrypoint"]) == (single["image"], single["entrypoint"])
        command = envoy["command"]
        at = command.index(run.CONSOLE_FLAGS[0])
        assert command[at:at + len(run.CONSOLE_FLAGS)] == run.CONSOLE_FLAGS, "make run's console"
        assert command[command.index("--concurrency") + 1] == "2"
        workdir = PurePosixPath(envoy["working_dir"])
        files = mounts(envoy)
        assert files[str(workdir / command[command.index("-c") + 1])] == FLEET_COMPOSE_CONFIG.resolve()
        assert files[str(workdir / filename)] == BUILT_WASM.resolve()
        assert published(envoy) == {
            listen: (None, f"ENVOY{n}_HTTP_PORT", 10000 + n - 1),
            admin: ("127.0.0.1", f"ENVOY{n}_ADMIN_PORT", 9900 + n),
        }
        assert envoy["networks"] == ["default", "ratelimit"]
        assert set(envoy["depends_on"]) == {"upstream", "limitador"}


def test_fleet_compose_service_and_redis_are_reached_by_name_on_the_internal_network():
    compose = fleet_compose()
    services = compose["services"]
    assert compose["networks"]["ratelimit"] == {"internal": True}
    config = yaml.safe_load(FLEET_COMPOSE_CONFIG.read_text())
    cluster = cluster_named(config, "ratelimit_service")
    assert cluster["type"] == "STRICT_DNS"
    host, port = socket_of(cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"])
    limitador = services[host]
    # limitador-server's own command line (the official image: no entrypoint, on its PATH).
    command = limitador["command"]
    assert command[0] == "limitador-server" and "entrypoint" not in limitador
    assert command[command.index("--rls-port") + 1] == str(port)
    assert command[command.index("--rls-ip") + 1] == "0.0.0.0"
    limits_arg, storage, url = command[-3:]
    assert mounts(limitador) == {limits_arg: FLEET_LIMITS.resolve()}
    assert storage == "redis"
    redis_host, redis_port = url.removeprefix("redis://").split(":")
    redis = services[redis_host]
    assert redis_port == "6379"
    assert limitador["depends_on"] == {redis_host: {"condition": "service_healthy"}}
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    # Persistence: the append-only file, in the volume the compose file declares.
    assert redis["command"][:3] == ["redis-server", "--appendonly", "yes"]
    assert redis["volumes"] == ["redis-data:/data"] and "redis-data" in compose["volumes"]
    for name in (host, redis_host):
        assert services[name]["networks"] == ["ratelimit"] and "ports" not in services[name]
    # The images are those the stand-ins are built as.
    standins = {s.name for s in load_standins()}
    images = {services[n]["image"] for n in services}
    assert images == {"envoyproxy/envoy:v1.40.0", "${LIMITADOR_IMAGE:-quay.io/kuadrant/limitador:v2.6.0}", "redis:7.0.15"}
    assert {i.removeprefix("${LIMITADOR_IMAGE:-").removesuffix("}") for i in images} == standins


def load_standins():
    spec = importlib.util.spec_from_file_location("standin_images", ROOT / "tests" / "docker" / "standin_images.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.STANDINS


# --- Envoy placement variants -------------------------------------------------------------------

PLACEMENT = ROOT / "envoy" / "placement"
BEFORE_JWT = PLACEMENT / "ratelimit-before-jwt.yaml"
AFTER_JWT = PLACEMENT / "ratelimit-after-jwt.yaml"
WASM_FILTER = "envoy.filters.http.wasm"
JWT_FILTER = "envoy.filters.http.jwt_authn"


def hcm(config):
    return config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def http_filter(config, name):
    return next(f for f in hcm(config)["http_filters"] if f["name"] == name)["typed_config"]


def filter_config(config):
    """The rate-limit filter's own JSON configuration embedded in an Envoy config."""
    return json.loads(http_filter(config, WASM_FILTER)["config"]["configuration"]["value"])


def envoy_validate(path, cwd=ROOT):
    """`envoy --mode validate`: builds the whole config, loads the .wasm and runs the filter's
    on_configure, so an invalid filter configuration fails it too."""
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("path", [BEFORE_JWT, AFTER_JWT], ids=lambda p: p.name)
def test_placement_validates_as_shipped(path):
    # Run from the repository root, as documented: the .wasm path in the file is relative.
    result = envoy_validate(path.relative_to(ROOT))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "ratelimit: configuration loaded" in output


@pytest.mark.parametrize("path", [BEFORE_JWT, AFTER_JWT], ids=lambda p: p.name)
def test_placement_keeps_the_layout_of_envoy_yaml(path):
    base = yaml.safe_load(ENVOY_YAML.read_text())
    variant = yaml.safe_load(path.read_text())
    assert variant["admin"] == base["admin"]
    assert variant["static_resources"]["clusters"] == base["static_resources"]["clusters"]
    listener, base_listener = variant["static_resources"]["listeners"][0], base["static_resources"]["listeners"][0]
    assert listener["address"] == base_listener["address"]
    assert hcm(variant)["route_config"] == hcm(base)["route_config"]
    plugin, base_plugin = http_filter(variant, WASM_FILTER)["config"], http_filter(base, WASM_FILTER)["config"]
    assert plugin["vm_config"] == base_plugin["vm_config"], "same vm_id, runtime and relative .wasm path"
    assert plugin["failure_policy"] == base_plugin["failure_policy"] == "FAIL_RELOAD"
    assert "fail_open" not in plugin


def filter_names(path):
    return [f["name"] for f in hcm(yaml.safe_load(path.read_text()))["http_filters"]]


def test_before_jwt_places_the_limiter_first():
    assert filter_names(BEFORE_JWT) == [WASM_FILTER, JWT_FILTER, "envoy.filters.http.router"]
    rules = {r["name"]: r for r in filter_config(yaml.safe_load(BEFORE_JWT.read_text()))["rules"]}
    # Nothing is verified yet: the token only identifies, and the per-IP rule bounds token rotation.
    assert rules["api"]["key"] == [{"bearer": {}}, {"client_ip": {}}]
    assert rules["api"]["also"] == ["per_ip"]
    assert rules["per_ip"]["key"] == [{"client_ip": {}}]


def test_after_jwt_keys_by_the_verified_subject_only():
    config = yaml.safe_load(AFTER_JWT.read_text())
    assert filter_names(AFTER_JWT) == [
        "envoy.filters.http.header_mutation", JWT_FILTER, WASM_FILTER, "envoy.filters.http.router"]
    removed = {m["remove"] for m in http_filter(config, "envoy.filters.http.header_mutation")["mutations"]["request_mutations"]}
    assert removed == {"x-client-id", "x-plan"}, "client-sent identity headers are dropped first"
    provider = http_filter(config, JWT_FILTER)["providers"]["demo"]
    claims = {c["header_name"]: c["claim_name"] for c in provider["claim_to_headers"]}
    assert claims == {"x-client-id": "sub", "x-plan": "plan"}
    limited = [r for r in filter_config(config)["rules"] if not r.get("exempt")]
    assert limited and all(r["key"] == [{"header": "x-client-id"}] for r in limited)
    assert all(r["on_missing_key"] == "deny" for r in limited)


# Running them: an in-process upstream that echoes the request headers it got, tokens signed with
# the test key taken from the placement file itself.

class EchoHeaders(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = json.dumps({"headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def echo_upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoHeaders)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@dataclass
class Running:
    listen_port: int
    admin_port: int

    def get(self, path, headers=None) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.listen_port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            r = conn.getresponse()
            return Response(r.status, r.getheaders(), r.read())
        finally:
            conn.close()


@contextmanager
def running(config: dict, upstream_port: int):
    """Envoy from `config` on free ports, in front of `upstream_port`, run from the repository root
    (the relative .wasm path), stopped by its process id."""
    assert WASM.exists(), f"{WASM} is missing: make build"
    config = json.loads(json.dumps(config))
    listen_port, admin_port = free_port(), free_port()
    config["admin"]["address"]["socket_address"]["port_value"] = admin_port
    config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = listen_port
    endpoint = config["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    endpoint["address"]["socket_address"]["port_value"] = upstream_port
    workdir = tempfile.mkdtemp(prefix="envoy-deploy-")
    config_path = f"{workdir}/envoy.yaml"
    with open(config_path, "w") as f:
        yaml.safe_dump(config, f)
    proc = subprocess.Popen(
        [envoy_binary(), "-c", config_path, "--concurrency", "2", "--disable-hot-restart",
         "--log-level", "info", "--log-path", f"{workdir}/envoy.log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=ROOT,
    )
    try:
        procs.wait_envoy_ready(admin_port, listen_port, proc)
        yield Running(listen_port, admin_port)
    finally:
        stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Issuer:
    """Signs HS256 tokens the placement's demo provider accepts: its issuer, audience and the
    `oct` key of its inline JWKS."""

    def __init__(self, config):
        provider = http_filter(config, JWT_FILTER)["providers"]["demo"]
        (key,) = json.loads(provider["local_jwks"]["inline_string"])["keys"]
        assert key["kty"] == "oct" and key["alg"] == "HS256"
        self.secret = base64.urlsafe_b64decode(key["k"] + "=" * (-len(key["k"]) % 4))
        self.kid, self.iss, self.aud = key["kid"], provider["issuer"], provider["audiences"][0]

    def token(self, **claims) -> str:
        payload = {"iss": self.iss, "aud": self.aud, "exp": int(time.time()) + 3600, **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        header = {"alg": "HS256", "typ": "JWT", "kid": self.kid}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
        signature = hmac.new(self.secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64url(signature)}"


def bearer(token):
    return {"authorization": f"Bearer {token}"}


def test_before_jwt_answers_429_before_401(echo_upstream):
    config = yaml.safe_load(BEFORE_JWT.read_text())
    issuer = Issuer(config)
    with running(config, echo_upstream) as envoy:
        # No token: the limiter admits 10 (counted per client IP), jwt_authn refuses them; then
        # the limiter refuses before jwt_authn is reached.
        anonymous = [envoy.get("/api/items") for _ in range(11)]
        assert [r.status for r in anonymous] == [401] * 10 + [429]
        assert anonymous[-1].json()["error"] == "too_many_requests"
        assert int(anonymous[-1].header("retry-after")) >= 1
        # A valid token is its own (unverified) key: admitted, authenticated, rate-limit headers.
        ok = envoy.get("/api/items", bearer(issuer.token(sub="alice")))
        assert ok.status == 200
        assert (ok.header("x-ratelimit-limit"), ok.header("x-ratelimit-remaining")) == ("10", "9")
        # Health checks need neither a token nor quota.
        assert envoy.get("/healthz").status == 200


def demo_token_from_the_book():
    text = (ROOT / "docs" / "src" / "deploying" / "envoy.md").read_text()
    return re.search(r"DEMO_TOKEN=(ey[\w-]+\.[\w-]+\.[\w-]+)", text).group(1)


def test_after_jwt_limits_each_verified_subject(echo_upstream):
    config = yaml.safe_load(AFTER_JWT.read_text())
    issuer = Issuer(config)
    with running(config, echo_upstream) as envoy:
        # No token, with or without an identity header: 401 from jwt_authn, nothing counted.
        assert envoy.get("/api/items").status == 401
        assert envoy.get("/api/items", {"x-client-id": "bob"}).status == 401

        alice = issuer.token(sub="alice", plan="pro")
        # The identity headers the client sent are replaced by the token's claims.
        first = envoy.get("/api/items", {**bearer(alice), "x-client-id": "bob", "x-plan": "enterprise"})
        assert first.status == 200
        seen = first.json()["headers"]
        assert (seen["x-client-id"], seen["x-plan"]) == ("alice", "pro")
        assert "authorization" not in seen, "forward: false removes the verified token"
        assert first.header("x-ratelimit-remaining") == "9"
        rest = [envoy.get("/api/items", bearer(alice)).status for _ in range(10)]
        assert rest == [200] * 9 + [429]
        # A fresh token of the same subject shares the subject's counter...
        assert envoy.get("/api/items", bearer(issuer.token(sub="alice", jti="2nd"))).status == 429
        # ...and another subject has its own (the request above that claimed "bob" was not his).
        bob = envoy.get("/api/items", bearer(issuer.token(sub="bob")))
        assert (bob.status, bob.header("x-ratelimit-remaining")) == (200, "9")

        # A verified token without "sub" cannot borrow a key from a client-sent header.
        no_sub = envoy.get("/api/items", {**bearer(issuer.token(sub=None)), "x-client-id": "bob"})
        assert no_sub.status == 401
        assert no_sub.json()["error"] == "missing_client_key"

        # The demo token the book's Envoy chapter gives for curl is accepted.
        assert envoy.get("/api/items", bearer(demo_token_from_the_book())).status == 200
        assert envoy.get("/healthz").status == 200


def test_filter_stats_reach_prometheus_through_an_istio_style_stats_matcher(echo_upstream):
    """Istio only creates the Envoy stats its inclusion list matches. The filter's stats are
    matched as `wasmcustom.<key_prefix>...` (the book's Istio chapter: proxyStatsMatcher), and Prometheus sees
    them as `<key_prefix>_<rule>_<stat>` on the path prometheus.yml scrapes."""
    config = render_config(None, echo_upstream, 0, 0)
    config["stats_config"] = {"stats_matcher": {"inclusion_list": {"patterns": [{"prefix": "wasmcustom.ratelimit"}]}}}
    metrics_path = yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"][0]["metrics_path"]
    with running(config, echo_upstream) as envoy:
        assert envoy.get("/api/links", {"x-api-key": "metrics"}).status == 200
        text = settled(lambda: admin_get(envoy.admin_port, metrics_path))
    series = dict(re.findall(r"^(\w+)\{\} (\d+)$", text, re.M))
    assert series["ratelimit_api_allowed"] == "1"
    assert "ratelimit_api_per_minute_refused" in series
    assert not any(name.startswith("envoy_cluster_") for name in series), "the matcher drops the rest"


# --- The OCI image of the filter ----------------------------------------------------------------

OCI_SCRIPT = ROOT / "deploy" / "build-oci-image.py"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def build_oci(out, *extra):
    result = subprocess.run(
        [sys.executable, str(OCI_SCRIPT), "--wasm", str(WASM), "--out", str(out), "--json", *extra],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def read_blob(layout, desc) -> bytes:
    algorithm, hex_digest = desc["digest"].split(":")
    assert algorithm == "sha256"
    data = (layout / "blobs" / "sha256" / hex_digest).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hex_digest, f"digest of {desc['digest']}"
    assert len(data) == desc["size"], f"size of {desc['digest']}"
    return data


def plugin_wasm_as_istio_reads_it(manifest, layer: bytes) -> bytes:
    """Istio's (and Envoy Gateway's) image fetcher, "compat" variant: one layer of type
    application/vnd.oci.image.layer.v1.tar+gzip, gunzipped, untarred, the file whose base name is
    plugin.wasm, which must start with the Wasm magic."""
    assert len(manifest["layers"]) == 1 and manifest["layers"][0]["mediaType"] == OCI_LAYER
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        members = tar.getmembers()
        assert [(m.name, m.isreg()) for m in members] == [("plugin.wasm", True)]
        data = tar.extractfile(members[0]).read()
    assert data[:4] == b"\0asm"
    return data


def test_oci_image_layout_holds_the_built_wasm(tmp_path):
    layout, archive = tmp_path / "layout", tmp_path / "layout.tar"
    summary = build_oci(layout, "--tag", "9.9.9", "--tar", str(archive))
    wasm = WASM.read_bytes()

    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    (entry,) = index["manifests"]
    assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "9.9.9"

    manifest = json.loads(read_blob(layout, entry))
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == entry["mediaType"]
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    config = json.loads(read_blob(layout, manifest["config"]))
    layer = read_blob(layout, manifest["layers"][0])
    assert config["rootfs"] == {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(gzip.decompress(layer)).hexdigest()}"]}
    assert (config["os"], config["architecture"]) == ("wasip1", "wasm")
    assert plugin_wasm_as_istio_reads_it(manifest, layer) == wasm

    # Nothing else in the layout, and the printed digests are the real ones.
    referenced = {d["digest"].split(":")[1] for d in (entry, manifest["config"], manifest["layers"][0])}
    assert {p.name for p in (layout / "blobs" / "sha256").iterdir()} == referenced
    assert summary["manifest_digest"] == entry["digest"]
    assert summary["wasm_sha256"] == hashlib.sha256(wasm).hexdigest()

    # The archive holds the same layout, file for file.
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}
    assert files == {str(p.relative_to(layout)): p.read_bytes() for p in layout.rglob("*") if p.is_file()}

    # Reproducible: the same .wasm gives the same image digest.
    assert build_oci(tmp_path / "again", "--tag", "9.9.9")["manifest_digest"] == summary["manifest_digest"]


def test_oci_script_refuses_what_is_not_wasm(tmp_path):
    not_wasm = tmp_path / "plugin.wasm"
    not_wasm.write_bytes(b"#!/bin/sh\n")
    result = subprocess.run(
        [sys.executable, str(OCI_SCRIPT), "--wasm", str(not_wasm), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and "not a WebAssembly module" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(
    not (shutil.which("skopeo") and shutil.which("docker-registry")),
    reason="needs skopeo and a local registry (Debian: apt-get install skopeo docker-registry)",
)
def test_oci_layout_pushes_to_a_registry_and_pulls_back(tmp_path):
    summary = build_oci(tmp_path / "layout")
    port = free_port()
    (tmp_path / "registry.yml").write_text(yaml.safe_dump({
        "version": 0.1,
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }))
    registry = subprocess.Popen(
        ["docker-registry", "serve", str(tmp_path / "registry.yml")],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, registry)
        image = f"127.0.0.1:{port}/envoy-ratelimit-wasm:0.1.0"
        push = subprocess.run(
            ["skopeo", "copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'layout'}:0.1.0", f"docker://{image}"],
            capture_output=True, text=True, timeout=60,
        )
        assert push.returncode == 0, push.stderr
        base = f"http://127.0.0.1:{port}/v2/envoy-ratelimit-wasm"
        request = urllib.request.Request(f"{base}/manifests/0.1.0", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.headers["Docker-Content-Digest"] == summary["manifest_digest"]
            manifest = json.loads(r.read())
        with urllib.request.urlopen(f"{base}/blobs/{manifest['layers'][0]['digest']}", timeout=10) as r:
            layer = r.read()
        assert plugin_wasm_as_istio_reads_it(manifest, layer) == WASM.read_bytes()
    finally:
        stop(registry)


def test_dockerfile_builds_the_same_one_layer_image():
    lines = [l.strip() for l in (ROOT / "deploy" / "Dockerfile").read_text().splitlines()]
    instructions = [l for l in lines if l and not l.startswith("#")]
    assert instructions == ["FROM scratch", "COPY plugin.wasm ./"]
