import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import HOSTS, NATIVE, WASM, Envoy, Upstream  # noqa: E402


@pytest.fixture(scope="session")
def upstream():
    if "wasm" in HOSTS and not WASM.exists():
        pytest.exit(f"{WASM} is missing: build it first (make build)", returncode=2)
    if "native" in HOSTS and not NATIVE.exists():
        pytest.exit(f"{NATIVE} is missing: build it first (make build-native)", returncode=2)
    up = Upstream()
    yield up
    up.close()


@pytest.fixture(params=HOSTS)
def host(request) -> str:
    """The host the filter runs in: the proxy-wasm filter or the dynamic module (each test that
    starts Envoy through `start_envoy` runs against each host in RATELIMIT_HOSTS)."""
    return request.param


@pytest.fixture
def start_envoy(upstream, host):
    """Starts Envoys for one test and stops every one of them afterwards, pass or fail."""
    started: list[Envoy] = []

    def start(filter_config, concurrency: int = 2, wait: bool = True, hcm_overrides=None, clusters=None) -> Envoy:
        envoy = Envoy(filter_config, upstream, concurrency=concurrency, hcm_overrides=hcm_overrides,
                      clusters=clusters, host=host)
        started.append(envoy)
        return envoy.start(wait=wait)

    yield start
    for envoy in started:
        envoy.close()

# Redis and the fleet engine (tools/fleet-engine), for the fleet tier's tests.
from fleet_harness import fleet_redis, start_fleet_engine  # noqa: E402,F401

# Compose stacks on a Docker engine: the stand-in images, built once per session.
from compose_harness import docker_images, envoy_image  # noqa: E402,F401
