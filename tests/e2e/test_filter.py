"""The filter end to end, in a real Envoy (V8), through envoy/envoy.yaml."""
import re
import subprocess
import time
from collections import Counter

from harness import ROOT, admin_get, envoy_binary, eventually, prometheus


def rule(name="api", limits=None, key=None, **extra):
    r = {"name": name, "limits": limits or [{"requests": 3, "window": "30s"}]}
    if key is not None:
        r["key"] = key
    r.update(extra)
    return r


API_KEY = [{"header": "x-api-key"}]


def sleep_until(t):
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def statuses(responses):
    return [r.status for r in responses]


def test_exact_admission_count_across_four_workers(start_envoy):
    envoy = start_envoy(
        {"rules": [rule(key=API_KEY, limits=[{"requests": 100, "window": "30s"}])]},
        concurrency=4,
    )
    started = time.monotonic()
    responses = envoy.burst("/api/items", {"x-api-key": "hammer"}, total=600, connections=48)
    elapsed = time.monotonic() - started
    assert elapsed < 25, "the burst must fit in one window for the count to be exact"
    assert Counter(statuses(responses)) == {200: 100, 429: 500}
    # The connections really were spread over several worker threads (several VMs).
    stats = admin_get(envoy.admin_port, "/stats?filter=worker_.*downstream_cx_total")
    busy = [int(v) for v in re.findall(r"worker_\d+\.downstream_cx_total: (\d+)", stats) if int(v) > 0]
    assert len(busy) >= 2, stats


def test_the_window_slides(start_envoy):
    envoy = start_envoy({"rules": [rule(key=API_KEY, limits=[{"requests": 4, "window": "2s"}])]})
    h = {"x-api-key": "slider"}
    # A count leaves a 2 s window 2.0-2.1 s after it was made (sub-windows of 100 ms): each batch
    # waits until the one before the last has surely left (its end + 2.15 s) and checks that the
    # last one is surely still in (its start + 1.9 s), rather than assume a quick machine.
    def batch(n):
        start = time.monotonic()
        return start, statuses([envoy.request("/x", h) for _ in range(n)]), time.monotonic()

    t0 = time.monotonic()
    _, first, end0 = batch(2)
    assert first == [200, 200]
    sleep_until(t0 + 1.0)
    start1, second, end1 = batch(3)
    assert second == [200, 200, 429]
    # At 2.3 s the requests of 0 s have left the window, those of 1.0 s have not: exactly 2 fit.
    # (A fixed 2 s window would have reset and admitted 4.)
    sleep_until(max(t0 + 2.3, end0 + 2.15))
    start2, third, _ = batch(3)
    assert start2 < start1 + 1.9, "too slow for this schedule"
    assert third == [200, 200, 429]
    # At 3.3 s the 1.0 s requests are gone, the 2.3 s ones still count.
    sleep_until(max(t0 + 3.3, end1 + 2.15))
    start3, fourth, _ = batch(3)
    assert start3 < start2 + 1.9, "too slow for this schedule"
    assert fourth == [200, 200, 429]


def test_each_key_has_its_own_counter(start_envoy):
    envoy = start_envoy({"rules": [rule(key=API_KEY)]})
    a, b = {"x-api-key": "key-a"}, {"x-api-key": "key-b"}
    assert statuses([envoy.request("/x", a) for _ in range(4)]) == [200, 200, 200, 429]
    assert statuses([envoy.request("/x", b) for _ in range(4)]) == [200, 200, 200, 429]
    assert envoy.request("/x", a).status == 429


def test_falls_back_to_the_client_ip(start_envoy):
    envoy = start_envoy({"rules": [rule(key=[{"header": "x-api-key"}, {"client_ip": {}}])]})
    assert statuses([envoy.request("/x") for _ in range(4)]) == [200, 200, 200, 429]
    assert envoy.request("/x", {"x-api-key": "has-a-key"}).status == 200
    assert envoy.request("/x").status == 429
    # A forged X-Forwarded-For does not change the key without trusted hops.
    assert envoy.request("/x", {"x-forwarded-for": "198.51.100.77"}).status == 429


def test_exempt_routes_pass_untouched(start_envoy):
    envoy = start_envoy(
        {
            "rules": [
                {"name": "health", "match": {"path": {"exact": "/healthz"}}, "exempt": True},
                rule(limits=[{"requests": 1, "window": "30s"}]),
            ]
        }
    )
    for path in ["/healthz"] * 20 + ["/healthz/", "/HEALTHZ?x=1"]:
        r = envoy.request(path)
        assert r.status == 200, path
        assert r.header("x-ratelimit-limit") is None, path
    assert envoy.request("/other").status == 200
    assert envoy.request("/other").status == 429
    # A path that only looks like the exempt one is limited.
    assert envoy.request("/healthz/../other").status == 429


def test_several_limits_hold_together(start_envoy):
    limits = [
        {"name": "per_second", "requests": 2, "window": "1s"},
        {"name": "per_3s", "requests": 3, "window": "3s"},
    ]
    envoy = start_envoy({"rules": [rule(key=API_KEY, limits=limits)]})
    h = {"x-api-key": "multi"}
    t0 = time.monotonic()
    first = [envoy.request("/x", h) for _ in range(3)]
    assert statuses(first) == [200, 200, 429]
    assert first[2].json()["policy"] == "per_second"
    assert first[2].header("x-ratelimit-limit") == "2"
    sleep_until(t0 + 1.2)
    second = [envoy.request("/x", h) for _ in range(2)]
    assert statuses(second) == [200, 429]
    assert second[0].header("x-ratelimit-limit") == "3", "the 3 s limit is now the tighter one"
    assert second[0].header("x-ratelimit-remaining") == "0"
    assert second[1].json()["policy"] == "per_3s"
    assert second[1].header("x-ratelimit-limit") == "3"


def test_headers_and_body_exactly(start_envoy):
    envoy = start_envoy({"rules": [rule(key=API_KEY, limits=[{"name": "per_10s", "requests": 2, "window": "10s"}])]})
    h = {"x-api-key": "exact"}
    before = time.time()
    r1, r2, r3 = (envoy.request("/x", h) for _ in range(3))
    after = time.time()
    for r, remaining in ((r1, "1"), (r2, "0")):
        assert r.status == 200
        assert r.json()["upstream"] == "demo", "allowed requests reach the upstream"
        assert r.all("x-ratelimit-limit") == ["2"]
        assert r.all("x-ratelimit-remaining") == [remaining]
        reset = int(r.header("x-ratelimit-reset"))
        assert before < reset <= after + 10.5 + 1, "the oldest request leaves within one window and one sub-window"
        assert r.header("retry-after") is None
    assert r3.status == 429
    names = Counter(k.lower() for k, _ in r3.headers)
    for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after", "content-type"):
        assert names[name] == 1, f"{name} appears {names[name]} times in {r3.headers}"
    assert r3.header("content-type") == "application/json"
    assert r3.header("x-ratelimit-limit") == "2"
    assert r3.header("x-ratelimit-remaining") == "0"
    retry_after = int(r3.header("retry-after"))
    reset = int(r3.header("x-ratelimit-reset"))
    assert 9 <= retry_after <= 11
    assert abs(reset - (after + retry_after)) <= 2
    assert r3.json() == {
        "error": "too_many_requests",
        "message": f"Rate limit exceeded: 2 requests per 10s. Retry in {retry_after} seconds.",
        "policy": "per_10s",
        "limit": 2,
        "window_seconds": 10,
        "retry_after": retry_after,
        "reset": reset,
    }


def test_retry_after_is_honoured(start_envoy):
    envoy = start_envoy({"rules": [rule(key=API_KEY, limits=[{"requests": 2, "window": "2s"}])]})
    h = {"x-api-key": "patient"}
    assert statuses([envoy.request("/x", h) for _ in range(3)]) == [200, 200, 429]
    refused = envoy.request("/x", h)
    assert refused.status == 429
    wait = int(refused.header("retry-after"))
    assert 1 <= wait <= 3
    time.sleep(wait)
    assert envoy.request("/x", h).status == 200


def test_a_refused_client_is_answered_from_memory_until_its_retry_time(start_envoy):
    """A worker remembers a refusal that stays true until its retry time: later requests of the
    client cost no store access, and their replies are the ones the store would give."""
    limits = [{"name": "per_3s", "requests": 2, "window": "3s"}]
    envoy = start_envoy({"rules": [rule(key=API_KEY, limits=limits)]}, concurrency=1)
    h = {"x-api-key": "flooder"}
    assert statuses([envoy.request("/x", h) for _ in range(2)]) == [200, 200]
    refused = [envoy.request("/x", h) for _ in range(20)]
    assert statuses(refused) == [429] * 20
    reset = refused[0].header("x-ratelimit-reset")
    for r in refused:
        wait = int(r.header("retry-after"))
        assert 1 <= wait <= 4
        assert r.header("x-ratelimit-remaining") == "0"
        assert r.header("x-ratelimit-reset") == reset, "one retry moment for every refusal"
        body = r.json()
        assert body["retry_after"] == wait and body["reset"] == int(reset)
        assert body["message"] == f"Rate limit exceeded: 2 requests per 3s. Retry in {wait} seconds."
    stats = prometheus(envoy)
    assert stats["ratelimit_api_refused"] == 20 and stats["ratelimit_api_per_3s_refused"] == 20
    assert stats["ratelimit_api_refused_from_memory"] == 19, "only the first refusal read the store"
    sleep_until_epoch = int(reset) - time.time()
    time.sleep(max(0.0, sleep_until_epoch))
    assert envoy.request("/x", h).status == 200, "admitted again at the retry time"


def test_shadow_mode_never_refuses(start_envoy):
    envoy = start_envoy({"mode": "shadow", "rules": [rule(key=API_KEY, limits=[{"requests": 2, "window": "30s"}])]})
    responses = [envoy.request("/x", {"x-api-key": "shadowed"}) for _ in range(5)]
    assert statuses(responses) == [200] * 5
    assert [r.header("x-ratelimit-remaining") for r in responses] == ["1", "0", "0", "0", "0"]
    assert all(r.header("retry-after") is None for r in responses)
    shadowed = r"refused rule=api limit=30s client=[0-9a-f]{16} plan=- action=pass shadow=true"
    assert eventually(lambda: re.search(shadowed, envoy.log()))
    assert "shadowed" not in envoy.log(), "the API key never appears in logs"
    stats = prometheus(envoy)
    assert stats["ratelimit_api_allowed"] == 2
    assert stats["ratelimit_api_shadow_refused"] == 3
    assert stats["ratelimit_api_refused"] == 0


def test_disabled_filter_does_nothing(start_envoy):
    envoy = start_envoy({"enabled": False, "rules": [rule(limits=[{"requests": 1, "window": "30s"}])]})
    responses = [envoy.request("/x") for _ in range(5)]
    assert statuses(responses) == [200] * 5
    assert all(r.header("x-ratelimit-limit") is None for r in responses)


def test_missing_key_can_be_refused(start_envoy):
    envoy = start_envoy({"rules": [rule(key=API_KEY, on_missing_key="deny")]})
    r = envoy.request("/x")
    assert r.status == 401
    assert r.json()["error"] == "missing_client_key"
    assert envoy.request("/x", {"x-api-key": "present"}).status == 200


def test_a_malformed_config_stops_envoy_and_names_the_field(start_envoy):
    bad = {"rules": [rule(limits=[{"requests": 5, "window": "5 parsecs"}])]}
    envoy = start_envoy(bad, wait=False)
    code = envoy.proc.wait(60)
    assert code != 0
    log = envoy.log()
    assert "$.rules[0].limits[0].window" in log, log[-3000:]
    assert "unit" in log


def test_the_shipped_config_runs_as_documented(start_envoy):
    envoy = start_envoy(None)  # the filter configuration of envoy/envoy.yaml, unchanged
    assert all(envoy.request("/healthz").status == 200 for _ in range(15))
    h = {"x-api-key": "demo"}
    assert statuses([envoy.request("/api/links/bulk", h) for _ in range(4)]) == [200, 200, 200, 429]
    links = [envoy.request("/api/links", h) for _ in range(11)]
    assert statuses(links) == [200] * 10 + [429]
    assert links[0].header("x-ratelimit-remaining") == "9"


def test_the_shipped_envoy_yaml_validates():
    run = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", "envoy/envoy.yaml", "--disable-hot-restart"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "OK" in run.stdout + run.stderr


def test_ietf_structured_headers_problem_json_and_request_cost(start_envoy):
    config = {
        "response": {"status": 503, "preset": "problem_json", "headers": {"style": "ietf_draft11"}},
        "rules": [
            rule(
                key=API_KEY,
                cost={"header": "x-batch-size", "default": 1, "max": 10},
                limits=[
                    {"name": "burst", "requests": 10, "window": "10s"},
                    {"name": "daily", "requests": 100, "window": "1d"},
                ],
            )
        ],
    }
    envoy = start_envoy(config)
    h = {"x-api-key": "batcher"}
    first = envoy.request("/x", {**h, "x-batch-size": "4"})
    assert first.status == 200
    assert first.header("ratelimit-policy") == '"burst";q=10;w=10, "daily";q=100;w=86400'
    burst, daily = first.header("ratelimit").split(", ")
    # t: the oldest counted unit leaves after one window and at most one sub-window (W/20).
    assert re.fullmatch(r'"burst";r=6;t=1[01]', burst), burst
    daily_t = int(re.fullmatch(r'"daily";r=96;t=(\d+)', daily).group(1))
    assert 86_400 < daily_t <= 86_400 + 4_320, daily
    assert first.header("x-ratelimit-limit") is None
    # A batch of 50 is charged as the maximum, 10: it does not fit in the 6 left.
    refused = envoy.request("/x", {**h, "x-batch-size": "50"})
    assert refused.status == 503
    assert refused.header("content-type") == "application/problem+json"
    assert refused.header("retry-after") is not None
    body = refused.json()
    assert body["status"] == 503
    assert body["violated-policies"] == ["burst"]
    assert body["type"] == "https://iana.org/assignments/http-problem-types#quota-exceeded"
    # A malformed cost is charged the default, 1: 6 of those still fit.
    assert statuses([envoy.request("/x", {**h, "x-batch-size": "lots"}) for _ in range(7)]) == [200] * 6 + [503]


def test_stats_in_prometheus_never_name_a_client(start_envoy):
    config = {
        "rules": [
            {"name": "health", "match": {"path": {"exact": "/healthz"}}, "exempt": True},
            rule(key=API_KEY, on_missing_key="allow", limits=[
                {"name": "burst", "requests": 2, "window": "30s"},
                {"name": "daily", "requests": 100, "window": "1d"},
            ]),
        ]
    }
    envoy = start_envoy(config, concurrency=2)
    for key in ("secret-key-1", "secret-key-2"):
        assert statuses([envoy.request("/x", {"x-api-key": key}) for _ in range(3)]) == [200, 200, 429]
    envoy.request("/x")  # no key: allowed uncounted
    envoy.request("/healthz")
    stats = prometheus(envoy)
    assert stats["ratelimit_api_allowed"] == 4
    assert stats["ratelimit_api_refused"] == 2
    assert stats["ratelimit_api_burst_refused"] == 2
    assert stats["ratelimit_api_daily_refused"] == 0
    assert stats["ratelimit_api_missing_key"] == 1
    assert stats["ratelimit_api_clients_tracked"] == 2
    assert stats["ratelimit_api_capacity_refused"] == 0
    assert stats["ratelimit_api_door_admitted"] == 0 and stats["ratelimit_api_clients_evicted"] == 0
    assert not any(name.startswith("ratelimit_health") for name in stats), "exempt rules have no stats"
    everything = admin_get(envoy.admin_port, "/stats/prometheus") + admin_get(envoy.admin_port, "/stats")
    assert eventually(lambda: "refused rule=api limit=burst" in envoy.log())
    assert "secret-key" not in everything + envoy.log()


def test_client_ip_keys_by_network_prefix(start_envoy):
    """A client rotating addresses inside its IPv6 /64 (or an IPv4 /24) is one client."""
    # envoy.yaml's Envoy appends the address it sees (use_remote_address): the address this test
    # writes is the second from the right.
    by_prefix = {"client_ip": {"trusted_hops": 2, "ipv4_prefix": 24, "ipv6_prefix": 64}}
    envoy = start_envoy({"rules": [rule(key=[by_prefix], limits=[{"requests": 3, "window": "30s"}])]})

    def via(address):
        return envoy.request("/x", {"x-forwarded-for": address}).status

    assert [via(f"2001:db8:1:2::{i:x}") for i in range(1, 6)] == [200, 200, 200, 429, 429]
    assert via("2001:db8:1:2:ffff:ffff:ffff:ffff") == 429
    assert via("2001:db8:1:3::1") == 200, "the next /64 is another client"
    assert [via(f"198.51.100.{i}") for i in range(1, 5)] == [200, 200, 200, 429]
    assert via("198.51.101.1") == 200, "the next /24 is another client"


def test_a_capacity_refusal_says_so_and_its_retry_after_is_true(start_envoy):
    """A client whose slot another client took stays refused, through the page summary, and is
    told so: its own error code, no limit headers, a Retry-After after which it is admitted."""
    config = {"store": {"max_clients": 1, "slots_per_page": 1},
              "rules": [rule(key=API_KEY, limits=[{"requests": 2, "window": "1s"}])]}
    envoy = start_envoy(config)
    a, b = {"x-api-key": "client-a"}, {"x-api-key": "client-b"}
    # b's two requests must fall in one doorkeeper generation (21 sub-windows of 50 ms, counted
    # from the epoch on Envoy's wall clock): a second request in the next generation is, by
    # design, a first request there. Start just after a generation begins.
    generation_s = 1.05
    time.sleep(generation_s - time.time() % generation_s + 0.02)
    assert statuses([envoy.request("/x", a) for _ in range(2)]) == [200, 200]
    # b's first request goes into the doorkeeper, its second takes the only slot: a's counts move
    # into the summary.
    assert statuses([envoy.request("/x", b) for _ in range(2)]) == [200, 200]
    refused = envoy.request("/x", a)
    t0 = time.monotonic()
    assert refused.status == 429
    assert refused.json()["error"] == "rate_limit_capacity", refused.body
    assert refused.header("x-ratelimit-limit") is None and refused.header("x-ratelimit-remaining") is None
    retry_after = int(refused.header("retry-after"))
    assert refused.json()["retry_after"] == retry_after and 1 <= retry_after <= 3
    sleep_until(t0 + retry_after)
    assert envoy.request("/x", a).status == 200, "admitted once Retry-After has passed"
    stats = prometheus(envoy)
    assert stats["ratelimit_api_capacity_refused"] == 1
    assert stats["ratelimit_api_door_admitted"] == 1 and stats["ratelimit_api_clients_evicted"] >= 1
    assert stats["ratelimit_api_1s_refused"] == 0, "not a refusal by the limit"
    assert eventually(lambda: "ratelimit: capacity rule=api limit=- " in envoy.log())


def test_headers_the_upstream_sent_under_the_filters_names_are_replaced(start_envoy):
    """The response carries each rate-limit header once, the filter's value, also when the
    upstream answered with a header of the same name."""
    route = {"name": "local", "virtual_hosts": [{"name": "api", "domains": ["*"], "routes": [{
        "name": "api", "match": {"prefix": "/"}, "route": {"cluster": "demo_upstream"},
        "response_headers_to_add": [{"header": {"key": "x-ratelimit-limit", "value": "999"},
                                     "append_action": "APPEND_IF_EXISTS_OR_ADD"}]}]}]}
    config = {"rules": [{"name": "api", "key": [{"header": "x-api-key"}],
                         "limits": [{"requests": 5, "window": "1m"}]}]}
    envoy = start_envoy(config, hcm_overrides={"route_config": route})
    r = envoy.request("/x", {"x-api-key": "upstream-sent"})
    assert r.status == 200
    assert r.all("x-ratelimit-limit") == ["5"]
    assert r.all("x-ratelimit-remaining") == ["4"]
