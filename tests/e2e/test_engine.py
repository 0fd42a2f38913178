"""The fleet tier's test engine (tools/fleet-engine) over gRPC: Limitador's counting behind Envoy's rate
limit service, with Redis. Every Redis and engine is started on a free port and stopped by pid
(fixtures in fleet_harness.py). Skipped only when the engine binary is absent (`make fleet-engine`).
"""
import math
import subprocess
import time

import grpc
import pytest

from fleet_harness import ENGINE_BIN, OK, OVER_LIMIT, REQUIRED, ROOT, UNKNOWN, RlsClient

pytestmark = pytest.mark.skipif(
    not ENGINE_BIN.exists() and not REQUIRED, reason=f"fleet engine not built ({ENGINE_BIN} is missing): run `make fleet-engine`"
)

DOMAIN = "fleet-test"
CLIENT = "descriptors[0]['client']"


def per_client_limit(max_value: int, seconds: int, name: str = "per-client") -> str:
    """One Limitador limit: `max_value` per `seconds` for each value of descriptors[0].client,
    applying when descriptors[0].limit == 'a' (the limits-file format limitador-server reads)."""
    return f"""
- namespace: {DOMAIN}
  name: {name}
  max_value: {max_value}
  seconds: {seconds}
  conditions: ["descriptors[0]['limit'] == 'a'"]
  variables: ["descriptors[0]['client']"]
"""


def desc(client: str):
    return [[("limit", "a"), ("client", client)]]


def codes(client: RlsClient, descriptors, n: int, hits=None) -> list[int]:
    return [client.call(DOMAIN, descriptors, hits).code for _ in range(n)]


# The engine's own flags, and limitador-server's command line (the stand-in image runs the
# official image's command line: tools/fleet-engine/src/limitador_cli.rs).
CLIS = ["own", "limitador-server"]


@pytest.mark.parametrize("cli", CLIS)
def test_a_limit_is_enforced_over_redis(fleet_redis, start_fleet_engine, cli):
    engine = start_fleet_engine(per_client_limit(5, 60), fleet_redis.url, cli=cli)
    assert "serving envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit" in engine.output()
    assert ("(as limitador-server)" in engine.output()) == (cli == "limitador-server")
    with engine.client() as rls:
        assert codes(rls, desc("alice"), 8) == [OK] * 5 + [OVER_LIMIT] * 3
        # another client has its own counter; a request no limit applies to is always OK
        assert codes(rls, desc("bob"), 5) == [OK] * 5
        assert codes(rls, [[("limit", "other"), ("client", "alice")]], 3) == [OK] * 3
    counters = fleet_redis.counters()
    # refused calls are not counted: Limitador increments only what it admits
    assert {c.variables[CLIENT]: c.value for c in counters} == {"alice": 5, "bob": 5}
    assert all(0 < c.ttl_ms <= 60_000 for c in counters)


def test_hits_addend_counts_as_n_and_a_refusal_counts_nothing(fleet_redis, start_fleet_engine):
    engine = start_fleet_engine(per_client_limit(10, 60), fleet_redis.url)
    with engine.client() as rls:
        assert rls.call(DOMAIN, desc("c"), 4).code == OK  # 4
        assert rls.call(DOMAIN, desc("c"), 4).code == OK  # 8
        assert rls.call(DOMAIN, desc("c"), 4).code == OVER_LIMIT  # 12 > 10: refused whole
        assert rls.call(DOMAIN, desc("c"), 2).code == OK  # 10
        assert rls.call(DOMAIN, desc("c"), None).code == OVER_LIMIT  # unset counts as 1
        assert rls.call(DOMAIN, desc("d"), 0).code == OK  # 0 counts as 1 too
        assert rls.call(DOMAIN, desc("e"), 11).code == OVER_LIMIT  # more than the limit at once
    assert {c.variables[CLIENT]: c.value for c in fleet_redis.counters()} == {"c": 10, "d": 1}


def test_counts_survive_an_engine_restart(fleet_redis, start_fleet_engine):
    engine = start_fleet_engine(per_client_limit(5, 60), fleet_redis.url)
    with engine.client() as rls:
        assert codes(rls, desc("k"), 3) == [OK] * 3
    first_pid = engine.proc.pid
    engine.restart()
    assert engine.proc.pid != first_pid
    with engine.client() as rls:
        assert codes(rls, desc("k"), 3) == [OK, OK, OVER_LIMIT]


def test_two_engines_on_one_redis_share_the_count(fleet_redis, start_fleet_engine):
    limits = per_client_limit(6, 60)
    a, b = start_fleet_engine(limits, fleet_redis.url), start_fleet_engine(limits, fleet_redis.url)
    with a.client() as ra, b.client() as rb:
        answers = [(ra if i % 2 else rb).call(DOMAIN, desc("shared")).code for i in range(9)]
    assert answers == [OK] * 6 + [OVER_LIMIT] * 3


NO_ANSWER = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}  # caller's deadline


def test_with_redis_stopped_calls_fail_or_wait_never_admit(fleet_redis, start_fleet_engine):
    """Limitador as limitador-server runs it (the redis crate's default reconnection): the call
    that finds the connection gone gets UNAVAILABLE "Service unavailable" at once; the calls after
    it wait on the reconnection and get no answer before their deadline. Nothing is admitted."""
    engine = start_fleet_engine(per_client_limit(3, 60), fleet_redis.url)
    with engine.client() as rls:
        assert rls.call(DOMAIN, desc("r")).code == OK
        fleet_redis.stop()
        outcomes = []
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                rls.call(DOMAIN, desc("r"), timeout=0.5)
            outcomes.append(err.value.code())
            assert time.monotonic() - started < 0.7
            if err.value.code() == grpc.StatusCode.UNAVAILABLE:
                assert err.value.details() == "Service unavailable"
        assert outcomes[0] == grpc.StatusCode.UNAVAILABLE, outcomes
        assert set(outcomes[1:]) <= NO_ANSWER | {grpc.StatusCode.UNAVAILABLE}, outcomes
        assert engine.proc.poll() is None, "the engine must keep running without Redis"


def test_with_a_capped_reconnect_delay_the_engine_is_back_soon_after_redis(fleet_redis, start_fleet_engine):
    engine = start_fleet_engine(per_client_limit(3, 60), fleet_redis.url, redis_max_reconnect_delay_ms=100)
    with engine.client() as rls:
        assert rls.call(DOMAIN, desc("r")).code == OK
        fleet_redis.stop()
        with pytest.raises(grpc.RpcError) as err:
            rls.call(DOMAIN, desc("r"), timeout=0.5)
        assert err.value.code() in NO_ANSWER | {grpc.StatusCode.UNAVAILABLE}
        time.sleep(1.5)
        fleet_redis.start()  # same port, empty: nothing was saved
        back = time.monotonic()
        while True:
            try:
                answer = rls.call(DOMAIN, desc("r"), timeout=0.5)
                break
            except grpc.RpcError:
                assert time.monotonic() - back < 3, "the engine did not reconnect to Redis"
        assert answer.code == OK
        assert codes(rls, desc("r"), 3) == [OK, OK, OVER_LIMIT]  # a fresh count


def test_with_redis_paused_a_call_waits_for_the_callers_deadline(fleet_redis, start_fleet_engine):
    engine = start_fleet_engine(per_client_limit(3, 60), fleet_redis.url)
    with engine.client() as rls:
        assert rls.call(DOMAIN, desc("p")).code == OK
        fleet_redis.pause()
        try:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                rls.call(DOMAIN, desc("p"), timeout=0.3)
            took = time.monotonic() - started
            assert err.value.code() in NO_ANSWER
            assert 0.29 <= took < 1.0
        finally:
            fleet_redis.resume()
        # the command sent while Redis was paused is answered once it resumes; the count goes on
        assert rls.call(DOMAIN, desc("p")).code == OK
        assert engine.proc.poll() is None


def test_engine_stopped_or_paused(fleet_redis, start_fleet_engine):
    engine = start_fleet_engine(per_client_limit(3, 60), fleet_redis.url)
    with engine.client() as rls:
        assert rls.call(DOMAIN, desc("s")).code == OK
        engine.pause()
        try:
            with pytest.raises(grpc.RpcError) as err:
                rls.call(DOMAIN, desc("s"), timeout=0.3)
            assert err.value.code() in NO_ANSWER
        finally:
            engine.resume()
        engine.stop()
        with pytest.raises(grpc.RpcError) as err:
            rls.call(DOMAIN, desc("s"), timeout=1.0)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_an_empty_domain_answers_unknown(fleet_redis, start_fleet_engine):
    engine = start_fleet_engine(per_client_limit(1, 60), fleet_redis.url)
    with engine.client() as rls:
        assert rls.call("", desc("x")).code == UNKNOWN


def test_one_counter_over_refuses_the_whole_call_and_counts_nothing(fleet_redis, start_fleet_engine):
    # Two limits on one request: a tight one on descriptor 0 and a loose one on descriptor 1.
    limits = f"""
- namespace: {DOMAIN}
  max_value: 2
  seconds: 60
  conditions: ["descriptors[0]['limit'] == 'tight'"]
  variables: ["descriptors[0]['client']"]
- namespace: {DOMAIN}
  max_value: 100
  seconds: 60
  conditions: ["descriptors[1]['limit'] == 'loose'"]
  variables: ["descriptors[1]['client']"]
"""
    engine = start_fleet_engine(limits, fleet_redis.url)
    both = [[("limit", "tight"), ("client", "z")], [("limit", "loose"), ("client", "z")]]
    with engine.client() as rls:
        assert codes(rls, both, 4) == [OK, OK, OVER_LIMIT, OVER_LIMIT]
        # order matters: swapped, neither condition matches, so no limit applies at all
        assert rls.call(DOMAIN, list(reversed(both))).code == OK
    values = sorted(c.value for c in fleet_redis.counters())
    assert values == [2, 2], "the loose counter must not count the refused calls"


def test_a_condition_on_a_missing_descriptor_resets_the_call(fleet_redis, start_fleet_engine):
    """Limitador 0.14 panics evaluating `descriptors[1]...` on a request with one descriptor
    (limit.rs `applies`: unwrap of IndexOutOfBounds); the stream is reset, the engine lives on.
    So every request of a domain must carry as many descriptors as its limits index."""
    limits = per_client_limit(5, 60) + f"""
- namespace: {DOMAIN}
  max_value: 5
  seconds: 60
  conditions: ["descriptors[1]['limit'] == 'b'"]
  variables: []
"""
    engine = start_fleet_engine(limits, fleet_redis.url)
    with engine.client() as rls:
        with pytest.raises(grpc.RpcError) as err:
            rls.call(DOMAIN, desc("x"))
        assert err.value.code() == grpc.StatusCode.CANCELLED
        # a missing key (not a missing index) is just "does not apply"
        assert rls.call(DOMAIN, [[("client", "x")], [("other", "y")]]).code == OK
    assert engine.proc.poll() is None
    assert "IndexOutOfBounds" in engine.output()


@pytest.mark.parametrize("cli", CLIS)
def test_draft_headers_when_asked(fleet_redis, start_fleet_engine, cli):
    plain = start_fleet_engine(per_client_limit(3, 60), fleet_redis.url, cli=cli)
    with plain.client() as rls:
        answer = rls.call(DOMAIN, desc("h"))
        assert answer.headers == {} and answer.statuses == 0  # as limitador-server by default
    engine = start_fleet_engine(per_client_limit(3, 60), fleet_redis.url, headers=True, cli=cli)
    with engine.client() as rls:
        answer = rls.call(DOMAIN, desc("h"))  # the 2nd hit of this counter
        assert answer.code == OK and answer.statuses == 0
        assert answer.headers["X-RateLimit-Limit"] == '3, 3;w=60;name="per-client"'
        assert answer.headers["X-RateLimit-Remaining"] == "1"
        assert 58 <= int(answer.headers["X-RateLimit-Reset"]) <= 60


@pytest.mark.parametrize("cli", CLIS)
def test_in_memory_storage(start_fleet_engine, cli):
    engine = start_fleet_engine(per_client_limit(2, 60), cli=cli)
    with engine.client() as rls:
        assert codes(rls, desc("m"), 3) == [OK, OK, OVER_LIMIT]
    engine.restart()
    with engine.client() as rls:
        assert codes(rls, desc("m"), 1) == [OK]  # memory: a restart forgets


def test_a_window_starts_at_the_first_hit(fleet_redis, start_fleet_engine):
    engine = start_fleet_engine(per_client_limit(2, 1), fleet_redis.url)
    with engine.client() as rls:
        time.sleep((0.5 - time.time() % 1) % 1)  # start mid-second on the wall clock
        first = time.monotonic()  # the first hit is after this, and before `hit_by`
        assert codes(rls, desc("w"), 1) == [OK]
        hit_by = time.monotonic()
        assert codes(rls, desc("w"), 2) == [OK, OVER_LIMIT]
        (counter,) = fleet_redis.counters()
        read_by = time.monotonic()
        # the TTL was set by the first hit, in ms precision (at least what is left of a second
        # since `first`: 800 or more unless this machine was slow)
        assert 1000 * (1 - (read_by - first)) - 2 <= counter.ttl_ms <= 1000, (counter.ttl_ms, read_by - first)
        # still refused just before a second after the first hit, whatever the clock's second
        time.sleep(max(0.0, first + 0.85 - time.monotonic()))
        sent = time.monotonic()
        assert sent < first + 0.98, "woke too late to probe before the window's end"
        assert rls.call(DOMAIN, desc("w")).code == OVER_LIMIT
        time.sleep(max(0.0, max(first + 1.1, hit_by + 1.02) - time.monotonic()))
        assert codes(rls, desc("w"), 3) == [OK, OK, OVER_LIMIT]


SPANS = DOMAIN + "-spans"  # own domain: every request in it carries N+1 descriptors


def span_limits(limit_id: str, max_value: int, window: float, n: int) -> str:
    """N+1 span limits (see tools/fleet-engine/README.md): limit k binds descriptor k, one counter per
    (client, span); each lives ceil((N+1)·W/N) s from its first hit."""
    seconds = math.ceil((n + 1) * window / n)
    return "".join(
        f"""
- namespace: {SPANS}
  name: span-{k}
  max_value: {max_value}
  seconds: {seconds}
  conditions: ["descriptors[{k}]['limit'] == '{limit_id}'"]
  variables: ["descriptors[{k}]['client']", "descriptors[{k}]['span']"]
"""
        for k in range(n + 1)
    )


def span_descriptors(limit_id: str, client: str, now: float, window: float, n: int):
    """What a filter sends at `now`: spans j = m-N..m of sub-window m, span j at index j mod (N+1)."""
    m = math.floor(now / (window / n))
    slots = [None] * (n + 1)
    for j in range(m - n, m + 1):
        slots[j % (n + 1)] = [("limit", limit_id), ("client", client), ("span", str(j))]
    return slots


def max_in_any_window(times: list[float], window: float) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def test_span_counters_keep_a_sliding_bound(fleet_redis, start_fleet_engine):
    """10 per 2 s. A plain Limitador limit (first-hit fixed window) admits 19 within 0.7 s across
    its window's end; the N+1 span limits (N = 4, sub-windows of 0.5 s) admit at most 10 in any
    2 s and re-admit as sub-windows slide out, like an exact sliding window of 2 s (within a
    sub-window). Times are from t0, the start of a sub-window on the wall clock."""
    limit, window, n = 10, 2.0, 4
    engine = start_fleet_engine(per_client_limit(limit, int(window)) + span_limits("s", limit, window, n),
                                fleet_redis.url)
    plain_times, span_times = [], []
    plain_counts, span_counts = [], []
    # (offset from t0, requests sent to each, when the batch must be done): each batch ends in
    # its sub-window (and the first two within the plain window from t0+0.05), else a slow call
    # would move a request into another one; the test checks that premise rather than assume it
    schedule = [(0.05, 1, 0.5), (1.55, 9, 2.0), (2.2, 10, 2.5), (2.6, 10, 3.0), (4.3, 10, 4.5)]
    with engine.client() as rls:
        step = window / n
        t0 = (math.floor(time.time() / step) + 1) * step
        for offset, count, done_by in schedule:
            time.sleep(max(0.0, t0 + offset - time.time()))
            plain = span = 0
            for i in range(count):
                now = time.time()
                if offset == 2.2 and i == 0:
                    # the plain window it opens must have ended by the 4.3 batch
                    assert now - t0 < 2.3, "the 2.2 batch started too late for this schedule"
                if rls.call(DOMAIN, desc("c")).ok:
                    plain += 1
                    plain_times.append(now)
                if rls.call(SPANS, span_descriptors("s", "c", now, window, n)).ok:
                    span += 1
                    span_times.append(now)
            assert time.time() - t0 < done_by, "calls too slow for this schedule"
            plain_counts.append(plain)
            span_counts.append(span)
    assert plain_counts == [1, 9, 10, 0, 10]  # windows from t0+0.05 and t0+2.2
    assert max_in_any_window(plain_times, window) == 19  # the fixed window's 2x across its end
    # at 2.2 the 1 + 9 admitted since t0 are still within the spans' view; at 2.6 the first
    # request's sub-window has slid out (1 more); at 4.3 the 9 of t0+1.55 have too (9 more)
    assert span_counts == [1, 9, 0, 1, 9]
    assert max_in_any_window(span_times, window) == limit


def test_envoys_own_ratelimit_filter_is_answered_by_the_engine(fleet_redis, start_fleet_engine, tmp_path):
    """Envoy's built-in envoy.filters.http.ratelimit (Envoy's gRPC client, HTTP/2 cluster, as a
    Wasm filter's dispatch_grpc_call uses it) against the engine: 3 per client, then 429."""
    import http.client
    import subprocess

    import yaml
    from harness import Upstream, envoy_binary, free_port, stop, wait_for_port

    engine = start_fleet_engine(f"""
- namespace: envoy-builtin
  max_value: 3
  seconds: 60
  conditions: ["descriptors[0]['generic_key'] == 'api'"]
  variables: ["descriptors[0]['client']"]
""", fleet_redis.url)
    upstream = Upstream()
    listen, admin = free_port(), free_port()
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "t",
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {
                                "cluster": "upstream",
                                "rate_limits": [{"actions": [
                                    {"generic_key": {"descriptor_value": "api"}},
                                    {"request_headers": {"header_name": "x-client", "descriptor_key": "client"}},
                                ]}],
                            }}],
                        }]},
                        "http_filters": [
                            {"name": "envoy.filters.http.ratelimit", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
                                "domain": "envoy-builtin",
                                "failure_mode_deny": True,
                                "timeout": "1s",
                                "rate_limit_service": {
                                    "transport_api_version": "V3",
                                    "grpc_service": {"envoy_grpc": {"cluster_name": "engine"}},
                                },
                            }},
                            {"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                        ],
                    },
                }]}],
            }],
            "clusters": [
                {"name": "upstream", "type": "STATIC", "load_assignment": {"cluster_name": "upstream", "endpoints": [
                    {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                        "address": "127.0.0.1", "port_value": upstream.port}}}}]}]}},
                {"name": "engine", "type": "STATIC",
                 "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                     "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                     "explicit_http_config": {"http2_protocol_options": {}}}},
                 "load_assignment": {"cluster_name": "engine", "endpoints": [
                     {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                         "address": "127.0.0.1", "port_value": engine.port}}}}]}]}},
            ],
        },
    }
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    envoy = subprocess.Popen(
        [envoy_binary(), "-c", str(path), "--concurrency", "1", "--disable-hot-restart",
         "--log-path", str(tmp_path / "envoy.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )

    def get(client: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=5)
        try:
            conn.request("GET", "/x", headers={"x-client": client})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    try:
        wait_for_port(listen, envoy)
        assert [get("one") for _ in range(5)] == [200, 200, 200, 429, 429]
        assert get("two") == 200
        engine.stop()  # failure_mode_deny: the engine gone means 500
        assert get("three") == 500
    finally:
        stop(envoy)
        upstream.close()


def test_limitador_servers_options_it_cannot_honour_stop_it_by_name(tmp_path):
    if not ENGINE_BIN.exists():
        pytest.skip(f"{ENGINE_BIN} is missing")
    program = tmp_path / "limitador-server"
    program.symlink_to(ENGINE_BIN.resolve())
    limits = tmp_path / "limits.yaml"
    limits.write_text(per_client_limit(1, 60))
    for args, named in [(["--http-port", "8080"], "--http-port"), (["-vvv", "--validate"], "--validate")]:
        run = subprocess.run([program, *args, limits, "memory"], capture_output=True, text=True, timeout=10)
        assert run.returncode == 2, run
        assert f"fleet-engine: {named}: " in run.stderr and "not supported by fleet-engine" in run.stderr
    run = subprocess.run([program, limits, "disk", "/tmp/x"], capture_output=True, text=True, timeout=10)
    assert run.returncode == 2 and "the disk storage is not supported" in run.stderr, run


def test_the_fleet_compose_stacks_limits_file_loads(start_fleet_engine):
    # envoy/limitador-limits.yaml (generated from envoy.yaml), as docker-compose.fleet.yml's
    # Limitador loads it: limitador-server's command line, here with in-memory counters.
    limits = (ROOT / "envoy" / "limitador-limits.yaml").read_text()
    engine = start_fleet_engine(limits, cli="limitador-server")
    count = limits.count("- namespace:")
    assert count == 10, "each rule's per-minute limit, 5 span counters each"
    assert f'{count} limits in namespaces ["ratelimit.api", "ratelimit.bulk"]' in engine.output()
