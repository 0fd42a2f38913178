"""Batched counting end to end: three Envoys (the Wasm filter) admit on the local tier's word, report each
client's hits to the rate limit service (tools/fleet-engine: Limitador's counting over Redis) once
the oldest is a batch interval old, and take back the service's refusals; and lease refills asked
ahead of need, so that a client within its quota never waits for the service.

The native module refuses batched counting at load (its reports need a timer on each worker that
dynamic-module ABI 0.2.0 does not give a filter): its test here is the refusal's. Its lease refills
ahead of need are sent from the stream that asks for them, and Envoy drops a stream's callout when
the stream ends, usually before the answer when the upstream is fast: the refill test is the Wasm
filter's (leases themselves are tested on both hosts in test_fleet.py).
"""
import time

import pytest

from fleet_harness import fleet_redis, start_fleet_engine  # noqa: F401 (fixtures)
from harness import HOSTS, Envoy, grpc_cluster, prometheus
from test_fleet import KEY, LIMIT, WINDOW_S, fleet_of, filter_config, limits_yaml, round_robin, wait_for_sub_window

INTERVAL_MS = 200


def batched_config():
    return filter_config(counting="batched", batch_interval=f"{INTERVAL_MS}ms")


# Batched counting and refills ahead run in the Wasm filter only (see above).
wasm_only = pytest.mark.parametrize("host", [h for h in HOSTS if h == "wasm"])


@pytest.mark.skipif("native" not in HOSTS, reason="RATELIMIT_HOSTS leaves the native module out")
def test_the_native_module_refuses_batched_counting_at_load(upstream):
    envoy = Envoy(batched_config(), upstream, clusters=[grpc_cluster("rls", 1)], host="native")
    try:
        envoy.start(wait=False)
        assert envoy.proc.wait(60) != 0
        assert '$.fleet.counting: "batched" is not supported by the native module' in envoy.log()
    finally:
        envoy.close()


def stat(envoys, name):
    return sum(prometheus(e).get(f"ratelimit_api_{name}", 0) for e in envoys)


@wasm_only
def test_batched_hits_reach_the_service_and_count_fleet_wide(start_envoy, fleet_redis, start_fleet_engine):
    config = batched_config()
    engine = start_fleet_engine(limits_yaml(config), redis_url=fleet_redis.url)
    envoys = fleet_of(start_envoy, engine, config, 3, concurrency=1)
    wait_for_sub_window()
    assert round_robin(envoys, 6) == [200] * 6, "admitted on the local tier's word"
    time.sleep(4 * INTERVAL_MS / 1000)  # reported within interval + a tick + a round trip
    # Every span counter of the client holds the six hits: the service counted them all.
    spans = [c.value for c in fleet_redis.counters() if c.variables]
    assert spans and max(spans) == 6, spans
    assert stat(envoys, "fleet_batched") == 6
    assert 3 <= stat(envoys, "fleet_reports") <= 6, "one report per Envoy and client per interval"
    assert stat(envoys, "fleet_report_refused") == 0


@wasm_only
def test_a_refused_report_refuses_the_client_within_the_stated_bound(start_envoy, fleet_redis, start_fleet_engine):
    """In one interval each Envoy admits on its own (here up to its local limit, 10): the bound is
    LIMIT + what each admits in interval + interval/4 + a round trip. Once the service refuses a
    report, the Envoy refuses the client, then asks request by request until the counts it had
    sent have left every span."""
    config = batched_config()
    engine = start_fleet_engine(limits_yaml(config), redis_url=fleet_redis.url)
    envoys = fleet_of(start_envoy, engine, config, 3, concurrency=1)
    wait_for_sub_window()
    started = time.monotonic()
    burst = round_robin(envoys, 24)  # 8 per Envoy, each well under its local limit
    took = time.monotonic() - started
    admitted_in_burst = burst.count(200)
    time.sleep(4 * INTERVAL_MS / 1000)
    # The first report to arrive fits (8 of 10); the others are refused (all or nothing) and
    # their Envoys refuse the client until the sub-window ends, then ask request by request
    # (the service has room for 2). The first Envoy admits until its next report is refused.
    after = round_robin(envoys, 9)
    time.sleep(4 * INTERVAL_MS / 1000)
    last = [envoys[i % 3].request("/api/x", KEY) for i in range(9)]
    statuses = [r.status for r in last]
    print(f"\nbatched: {admitted_in_burst} of 24 admitted in {took * 1000:.0f} ms, then {after}, then {statuses}")
    assert admitted_in_burst == 24, "admitted on the local tier's word"
    assert statuses == [429] * 9, "every Envoy took the service's refusal back (or reached its local limit)"
    total = admitted_in_burst + after.count(200)
    # Each Envoy admits 8 in the burst and at most 3 after; the engine's own race (reports in
    # flight at once) can add (k - 1) x hits on top of LIMIT: the bound covers it here.
    assert total <= LIMIT + 3 * (8 + 3)
    assert stat(envoys, "fleet_report_refused") >= 1
    fleet_refusals = [r for r in last if r.json().get("policy") == "per_4s"]
    assert fleet_refusals, "the same contract as any refusal"
    assert all(1 <= int(r.header("retry-after")) <= WINDOW_S + 2 for r in fleet_refusals)


@wasm_only  # the native module's refills ahead die with their stream (docs/src/deploying/native.md)
def test_a_lease_is_refilled_before_it_runs_out(start_envoy, fleet_redis, start_fleet_engine):
    """A client within its quota never waits for the service once it holds a lease: the request
    that takes the lease under half its grant asks for the next one, and nobody waits for it."""
    config = filter_config(lease=4)
    config["rules"][0]["limits"][0]["requests"] = 100
    engine = start_fleet_engine(limits_yaml(config), redis_url=fleet_redis.url)
    [envoy] = fleet_of(start_envoy, engine, config, 1, concurrency=1)
    wait_for_sub_window()
    statuses = [envoy.request("/api/x", KEY).status for _ in range(12)]
    assert statuses == [200] * 12
    refills = stat([envoy], "fleet_refills")
    calls = stat([envoy], "fleet_calls")
    leased = stat([envoy], "fleet_leased")
    print(f"\nlease 4: 12 requests, {calls} calls ({refills} refills ahead), {leased} on a lease")
    assert refills >= 2 and leased >= 10, "requests after the first took hits from leases refilled ahead"
    assert calls <= 1 + refills
