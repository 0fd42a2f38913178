"""The deployment files users copy: docker-compose (no Docker engine here, so its structure is
checked against what Envoy really runs)."""
from pathlib import PurePosixPath

import yaml

from harness import ENVOY_YAML, ROOT, WASM


def compose():
    return yaml.safe_load((ROOT / "envoy" / "docker-compose.yml").read_text())


def mounts(service):
    out = {}
    for volume in service["volumes"]:
        host, container, *mode = volume.split(":")
        assert mode == ["ro"], f"{volume} should be read-only"
        out[container] = (ROOT / "envoy" / host).resolve()
    return out


def test_compose_runs_the_same_envoy_yaml_and_the_built_wasm():
    services = compose()["services"]
    envoy = services["envoy"]
    assert envoy["image"].startswith("envoyproxy/envoy:v1.40")
    assert envoy["network_mode"] == "host", "envoy.yaml addresses the upstream on 127.0.0.1"
    files = mounts(envoy)
    workdir = PurePosixPath(envoy["working_dir"])
    config_arg = envoy["command"][envoy["command"].index("-c") + 1]
    config_in_container = str(workdir / config_arg)
    assert files[config_in_container] == ENVOY_YAML.resolve()
    # The .wasm path written in envoy.yaml, resolved from the working directory, is the mount of
    # the file `make build` produces.
    config = yaml.safe_load(ENVOY_YAML.read_text())
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    wasm_filter = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm")
    filename = wasm_filter["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"]
    assert files[str(workdir / filename)] == WASM.resolve()


def test_compose_upstream_serves_the_port_envoy_yaml_expects():
    services = compose()["services"]
    upstream = services["upstream"]
    assert upstream["network_mode"] == "host"
    files = mounts(upstream)
    script = upstream["command"][1]
    assert files[script] == (ROOT / "envoy" / "demo_upstream.py").resolve()
    port = int(upstream["command"][upstream["command"].index("--port") + 1])
    config = yaml.safe_load(ENVOY_YAML.read_text())
    endpoint = config["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert endpoint["endpoint"]["address"]["socket_address"]["port_value"] == port
    assert "upstream" in services["envoy"]["depends_on"]
