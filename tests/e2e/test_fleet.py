"""The fleet tier end to end: Envoys with the filter (the Wasm filter and the native module, the
harness's `host` parameter, with the same assertions), the rate limit service (tools/fleet-engine:
Limitador's counting over Redis) and Redis, all started here and stopped by process id.

The service's limits file is generated from the filter's configuration by the command-line
tool (`ratelimit-config engine-config`), as users are told to do.
"""
import json
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from fleet_harness import fleet_redis, start_fleet_engine  # noqa: F401 (fixtures)
from harness import ROOT, grpc_cluster, prometheus

TOOL = ROOT / "target" / "debug" / "ratelimit-config"
LIMIT, WINDOW_S, N = 10, 4, 4  # 10 per 4 s, sub-windows of 1 s
KEY = {"x-api-key": "fleet-client"}


def filter_config(timeout="1s", **fleet):
    """The counting tests allow the service a generous 1 s: with `on_error: local`, an answer
    slower than the timeout would be decided by the local tier, which is not what they count.
    The failure tests set a short timeout and check that it is kept."""
    return {
        "fleet": {"cluster": "rls", "sub_windows": N, "timeout": timeout, **fleet},
        "rules": [{
            "name": "api",
            "key": [{"header": "x-api-key"}],
            "limits": [{"name": "per_4s", "requests": LIMIT, "window": f"{WINDOW_S}s", "fleet": True}],
        }],
    }


def limits_yaml(config: dict) -> str:
    assert TOOL.exists(), "built by `make unit` (cargo test --features cli)"
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(config, f)
    out = subprocess.run([TOOL, "engine-config", f.name], capture_output=True, text=True, check=True)
    Path(f.name).unlink()
    return out.stdout


def fleet_of(start_envoy, engine, config, count, concurrency=2):
    return [start_envoy(config, concurrency=concurrency, clusters=[grpc_cluster("rls", engine.port)])
            for _ in range(count)]


def wait_for_sub_window(offset=0.15):
    """Sleeps to `offset` s into the next 1 s sub-window (the filter's clock is the wall clock)."""
    now = time.time()
    time.sleep(1 - now % 1 + offset)
    return int(time.time())


def round_robin(envoys, n):
    return [envoys[i % len(envoys)].request("/api/x", KEY).status for i in range(n)]


def test_three_envoys_admit_one_limit_fleet_wide_and_the_window_slides(start_envoy, fleet_redis, start_fleet_engine):
    config = filter_config()
    engine = start_fleet_engine(limits_yaml(config), redis_url=fleet_redis.url)
    envoys = fleet_of(start_envoy, engine, config, 3)
    a = wait_for_sub_window()
    first = round_robin(envoys, 5)
    assert first == [200] * 5
    time.sleep(a + 2 + 0.15 - time.time())  # sub-window a+2
    second = round_robin(envoys, 10)
    assert second.count(200) == 5 and second.count(429) == 5, second
    # A fixed 4 s window from the first hit would open again at a+4; the spans still hold the 10.
    time.sleep(a + 4 + 0.15 - time.time())
    assert round_robin(envoys, 3) == [429] * 3
    # At sub-window a+5 the first five have left every span: exactly five more.
    time.sleep(a + 5 + 0.15 - time.time())
    third = round_robin(envoys, 10)
    assert third.count(200) == 5, third
    refused = envoys[0].request("/api/x", KEY)
    assert refused.status == 429
    assert refused.header("x-ratelimit-remaining") == "0"
    assert refused.json()["policy"] == "per_4s"
    assert 1 <= int(refused.header("retry-after")) <= WINDOW_S + 2
    # Every fleet refusal was the service's: each Envoy alone admitted fewer than its limit.
    stats = [prometheus(e) for e in envoys]
    assert sum(s.get("ratelimit_api_fleet_admitted", 0) for s in stats) >= 15
    assert sum(s.get("ratelimit_api_fleet_refused", 0) for s in stats) >= 8


def test_exact_with_evenly_spread_traffic(start_envoy, fleet_redis, start_fleet_engine):
    config = filter_config()
    engine = start_fleet_engine(limits_yaml(config), redis_url=fleet_redis.url)
    envoys = fleet_of(start_envoy, engine, config, 3)
    wait_for_sub_window()
    statuses = round_robin(envoys, 30)
    assert statuses.count(200) == LIMIT, statuses
    assert statuses[:LIMIT] == [200] * LIMIT


def test_concurrent_traffic_stays_within_the_engines_race_bound(start_envoy, fleet_redis, start_fleet_engine):
    """Limitador checks, then increments (two round trips): k calls in flight on one key can each
    miss the others' increments. The bound is LIMIT + (k - 1) x hits; with one call in flight per
    client and worker, k is at most the 3 Envoys x 2 workers, and hits is the lease (1)."""
    config = filter_config()
    engine = start_fleet_engine(limits_yaml(config), redis_url=fleet_redis.url)
    envoys = fleet_of(start_envoy, engine, config, 3)
    wait_for_sub_window()
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda e: e.burst("/api/x", KEY, 40, 4), envoys))
    admitted = sum(r.status == 200 for rs in results for r in rs)
    print(f"\nconcurrent: {admitted} admitted of 120 (limit {LIMIT}, 12 connections)")
    assert LIMIT <= admitted <= LIMIT + 5


def test_leases_save_calls_and_never_exceed_the_limit(start_envoy, fleet_redis, start_fleet_engine):
    config = filter_config(lease=4)
    engine = start_fleet_engine(limits_yaml(config), redis_url=fleet_redis.url)
    envoys = fleet_of(start_envoy, engine, config, 3, concurrency=1)
    wait_for_sub_window()
    statuses = round_robin(envoys, 30)
    admitted = statuses.count(200)
    stats = [prometheus(e) for e in envoys]
    calls = sum(s.get("ratelimit_api_fleet_calls", 0) for s in stats)
    leased = sum(s.get("ratelimit_api_fleet_leased", 0) for s in stats)
    print(f"\nleases of 4: {admitted} admitted of 30, {calls} calls, {leased} requests on a lease")
    assert calls < 30
    assert admitted <= LIMIT
    assert admitted >= LIMIT - 3 * 3, "unused lease hits are lost, at most lease-1 per Envoy"
    assert leased > 0


@pytest.mark.parametrize("policy,status", [("local", 200), ("allow", 200), ("deny", 503)])
def test_engine_down_follows_on_error_within_the_timeout(start_envoy, fleet_redis, start_fleet_engine, policy, status):
    config = filter_config(on_error=policy, timeout="250ms")
    engine = start_fleet_engine(limits_yaml(config), redis_url=fleet_redis.url)
    [envoy] = fleet_of(start_envoy, engine, config, 1)
    assert envoy.request("/api/x", KEY).status == 200
    engine.stop()
    started = time.monotonic()
    r = envoy.request("/api/x", KEY)
    elapsed = time.monotonic() - started
    assert r.status == status, r.body
    assert elapsed < 0.25 + 0.5, elapsed
    if status == 503:
        assert r.json()["error"] == "rate_limit_unavailable"
        assert r.header("retry-after") == "1"
    assert prometheus(envoy).get("ratelimit_api_fleet_failed", 0) >= 1
    if policy == "local":
        # Each Envoy enforces the limit on its own while the service is away.
        statuses = [envoy.request("/api/x", KEY).status for _ in range(LIMIT + 2)]
        assert statuses.count(200) == LIMIT - 2, statuses


def test_redis_down_answers_within_the_timeout(start_envoy, fleet_redis, start_fleet_engine):
    config = filter_config(on_error="deny", timeout="250ms")
    engine = start_fleet_engine(limits_yaml(config), redis_url=fleet_redis.url)
    [envoy] = fleet_of(start_envoy, engine, config, 1)
    assert envoy.request("/api/x", KEY).status == 200
    fleet_redis.pause()  # the engine waits on Redis: only the filter's timeout ends the wait
    try:
        for _ in range(3):
            started = time.monotonic()
            r = envoy.request("/api/x", KEY)
            elapsed = time.monotonic() - started
            assert r.status == 503 and r.json()["error"] == "rate_limit_unavailable"
            assert elapsed < 0.25 + 0.5, elapsed
    finally:
        fleet_redis.resume()


def test_the_fleet_count_survives_an_envoy_restart(start_envoy, fleet_redis, start_fleet_engine):
    config = filter_config()
    engine = start_fleet_engine(limits_yaml(config), redis_url=fleet_redis.url)
    first, second = fleet_of(start_envoy, engine, config, 2)
    wait_for_sub_window()
    assert round_robin([first, second], LIMIT) == [200] * LIMIT
    first.close()
    restarted = start_envoy(config, clusters=[grpc_cluster("rls", engine.port)])
    # A new process: its local counts are gone, the fleet's are in Redis.
    assert restarted.request("/api/x", KEY).status == 429
    assert second.request("/api/x", KEY).status == 429


def test_a_request_that_joined_a_call_is_answered_when_the_leader_leaves(start_envoy, fleet_redis, start_fleet_engine):
    """One call in flight per client and worker: a second request of the client waits on the first
    one's call. When the first one's client hangs up mid-call, the second is still decided by
    `on_error` within the service's timeout, not left waiting for an answer that will not come (in
    the native module the call belongs to the leader's stream, which Envoy destroys, dropping the
    call: the module fails it at once; in the Wasm filter the call belongs to the root context and
    runs to its timeout)."""
    config = filter_config(on_error="deny", timeout="2s")
    engine = start_fleet_engine(limits_yaml(config), redis_url=fleet_redis.url)
    envoy = start_envoy(config, concurrency=1, clusters=[grpc_cluster("rls", engine.port)])
    assert envoy.request("/api/x", KEY).status == 200
    fleet_redis.pause()  # the service waits on Redis: the call stays in flight
    leader, joined = envoy.connection(), envoy.connection()
    try:
        leader.request("GET", "/api/x", headers=KEY)  # sent, its answer never read
        time.sleep(0.3)
        started = time.monotonic()
        joined.request("GET", "/api/x", headers=KEY)
        time.sleep(0.3)
        leader.close()  # the leader's client hangs up: Envoy destroys its stream
        r = joined.getresponse()
        elapsed = time.monotonic() - started
        body = json.loads(r.read())
        print(f"\nthe joined request was answered {elapsed:.2f} s after it was sent")
        assert r.status == 503 and body["error"] == "rate_limit_unavailable", body
        assert elapsed < 2 + 0.5, f"waited {elapsed:.2f} s: the service's timeout is 2 s"
    finally:
        joined.close()
        fleet_redis.resume()
