"""Under attack, faults and hostile input, in a real Envoy."""
import time
from collections import Counter

from harness import LdsEnvoy, eventually

API_KEY = [{"header": "x-api-key"}]


def statuses(responses):
    return [r.status for r in responses]


def test_exact_under_load_eight_workers_several_windows(start_envoy):
    limit, window = 100, 3.0
    envoy = start_envoy(
        {"rules": [{"name": "api", "key": API_KEY, "limits": [{"requests": limit, "window": "3s"}]}]},
        concurrency=8,
    )
    for round_ in range(3):
        started = time.monotonic()
        responses = envoy.burst("/x", {"x-api-key": "hammered"}, total=500, connections=64)
        assert time.monotonic() - started < window, "the burst must fit in one window"
        assert Counter(statuses(responses)) == {200: limit, 429: 500 - limit}, f"round {round_}"
        # Wait until every admission of this round has left the window (W + W/N).
        time.sleep(window * 1.05 + 0.3)


def test_hostile_requests_never_bypass_or_trap(start_envoy):
    config = {
        "rules": [
            {"name": "health", "match": {"path": {"exact": "/healthz"}}, "exempt": True},
            {"name": "bulk", "match": {"path": {"prefix": "/api/links/bulk"}},
             "key": [{"header": "x-api-key"}, {"bearer": {}}, {"client_ip": {"trusted_hops": 1}}],
             "limits": [{"requests": 1, "window": "60s"}]},
            {"name": "api", "match": {"path": {"prefix": "/api"}},
             "key": [{"header": "x-api-key"}, {"bearer": {}}, {"client_ip": {"trusted_hops": 1}}],
             "limits": [{"requests": 3, "window": "60s"}]},
        ]
    }
    # Envoy's own limits would answer 431 before the filter sees these: raise them for the test.
    envoy = start_envoy(config, hcm_overrides={
        "max_request_headers_kb": 256,
        "common_http_protocol_options": {"max_headers_count": 5000},
    })

    def raw(path, headers):
        conn = envoy.connection()
        try:
            conn.putrequest("GET", path, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders()
            r = conn.getresponse()
            r.read()
            return r.status
        finally:
            conn.close()

    # Path tricks: every spelling of the bulk endpoint counts against the bulk rule.
    key = {"x-api-key": "tricky"}
    assert envoy.request("/api/links/bulk", key).status == 200
    for path in ["//api//links/bulk", "/api/links/bulk/", "/API/Links/Bulk", "/api/links/./bulk",
                 "/api/links/x/../bulk", "/api%2Flinks%2Fbulk", "/api/links/bulk?x=1", "/api/links/%62ulk",
                 "/api/links/bulk#f", "/api/./links//bulk/./"]:
        assert envoy.request(path, key).status != 200, f"{path} dodged the bulk rule"
    # Odd bytes and sizes in the key header: defined outcomes, never a 5xx.
    for value in [b"\xff\xfe\xfd", b"k" * (64 * 1024), b"\x80" * 100, b"   ", b""]:
        assert raw("/api/odd", [("x-api-key", value)]) in (200, 429)
    # Thousands of headers.
    assert raw("/api/many", [(f"x-h-{i}", "v") for i in range(3000)] + [("x-api-key", "many")]) == 200
    # Odd Authorization forms fall through to the client IP (one shared counter for them all).
    ip_statuses = [raw("/api/auth", [("authorization", value)]) for value in
                   [b"Bearer", b"Bearer ", b"Basic dXNlcjpwYXNz", b"Bearer a b", b"bearer\t", b"\xff"]]
    assert ip_statuses.count(200) <= 3 and ip_statuses.count(429) >= 3, ip_statuses
    # X-Forwarded-For: Envoy (use_remote_address) appends the address it saw; with one trusted
    # hop that entry is the key, so forged entries of any length change nothing.
    forged = [raw("/api/xff", [("x-forwarded-for", chain)]) for chain in
              ["1.1.1.1", "1.1.1.1, 2.2.2.2", ", , ,", "not-an-ip", "9.9.9.9," * 200]]
    assert 429 in forged, forged
    # The VM is still alive and exact afterwards.
    fresh = [envoy.request("/api/after", {"x-api-key": "after"}) for _ in range(4)]
    assert statuses(fresh) == [200, 200, 200, 429]
    assert fresh[0].header("x-ratelimit-remaining") == "2"
    time.sleep(0.2)
    log = envoy.log()
    for sign in ("panicked", "Function: proxy_on_request_headers failed", "wasm trap", "unreachable"):
        assert sign not in log, sign


def test_config_reload_keeps_counters_and_rejects_a_broken_config(upstream, tmp_path, host):
    def config(requests, window="30s"):
        return {"rules": [{"name": "api", "key": API_KEY, "limits": [{"requests": requests, "window": window}]}]}

    with LdsEnvoy(upstream.port, tmp_path, config(3), host) as envoy:
        def get(key="reloaded"):
            conn = envoy.connection()
            try:
                conn.request("GET", "/x", headers={"x-api-key": key})
                r = conn.getresponse()
                r.read()
                return r.status, r.getheader("x-ratelimit-limit")
            finally:
                conn.close()

        assert [get()[0] for _ in range(4)] == [200, 200, 200, 429]
        # Raise the limit to 5: the filter's vm_id is unchanged (the module's store is the
        # process's), so the 3 counted requests stay.
        envoy.publish(config(5))
        envoy.wait_for("listener_manager.lds.update_success", 2)
        # the new listener takes over (fresh keys until it answers with the new limit)
        warm = iter(range(1000))
        assert eventually(lambda: get(f"warm-{next(warm)}") == (200, "5"), timeout=10)
        assert get("probe") == (200, "5")
        assert [get()[0] for _ in range(3)] == [200, 200, 429], "counts survived the reload"
        # A broken config is rejected; the previous one keeps serving.
        envoy.publish(config(5, window="5 parsecs"))
        envoy.wait_for("listener_manager.lds.update_rejected", 1)
        assert get()[0] == 429
        assert get("another") == (200, "5")
        assert eventually(lambda: "$.rules[0].limits[0].window" in envoy.log())
