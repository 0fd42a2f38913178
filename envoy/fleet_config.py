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
"""
from __future__ import annotations

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


if __name__ == "__main__":
    if sys.argv[1:2] == ["filter"]:
        print(json.dumps(filter_config(), indent=2))
    elif sys.argv[1:2] == ["envoy"] and len(sys.argv) == 6:
        port, admin, host, service_port = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
        print(yaml.safe_dump(envoy_config(port, admin, host, service_port), sort_keys=False))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
