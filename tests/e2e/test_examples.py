"""Each shipped example reproduces its reference API's rate-limit contract, in a real Envoy.

The examples are used unchanged except that their windows are shortened so the tests run fast.
"""
import json
import re
import time
from collections import Counter
from datetime import datetime, timezone

from harness import ROOT

EXAMPLES = ROOT / "envoy" / "examples"


def example(name, windows):
    config = json.loads((EXAMPLES / name).read_text())
    for rule in config["rules"]:
        for limit in rule.get("limits", []):
            limit["window"] = windows[limit["window"]]
    return config


def statuses(responses):
    return [r.status for r in responses]


def send(envoy, n, path, headers=None, method="GET"):
    conn = envoy.connection()
    try:
        return [envoy.request(path, headers, method=method, conn=conn) for _ in range(n)]
    finally:
        conn.close()


def assert_retry_after(r, low, high):
    value = r.header("retry-after")
    assert value is not None and value.isdigit(), r.headers
    assert low <= int(value) <= high, value
    return int(value)


def test_000_codeqr_plans_and_x_ratelimit_headers(start_envoy):
    envoy = start_envoy(example("000-codeqr.json", {"1m": "4s"}))
    free = {"authorization": "Bearer cq_free_1"}
    responses = send(envoy, 61, "/api/links", free)
    assert statuses(responses) == [200] * 60 + [429]
    assert [r.header("x-ratelimit-remaining") for r in responses[:60]] == [str(n) for n in range(59, -1, -1)]
    assert {r.header("x-ratelimit-limit") for r in responses} == {"60"}
    refused = responses[60]
    wait = assert_retry_after(refused, 1, 5)
    reset = int(refused.header("x-ratelimit-reset"))
    assert abs(reset - (time.time() + wait)) <= 2, "reset is the epoch second of the retry"
    assert refused.header("content-type") == "application/json"
    # Another key of the same plan has its own counter; other plans have their own levels.
    assert envoy.request("/api/links", {"authorization": "Bearer cq_free_2"}).status == 200
    starter = envoy.request("/api/links", {"authorization": "Bearer cq_s", "x-plan": "starter"})
    assert starter.header("x-ratelimit-limit") == "150"
    pro = envoy.request("/api/links", {"authorization": "Bearer cq_p", "x-plan": "pro"})
    assert pro.header("x-ratelimit-limit") == "600"
    enterprise = send(envoy, 80, "/api/links", {"authorization": "Bearer cq_e", "x-plan": "enterprise"})
    assert statuses(enterprise) == [200] * 80, "enterprise: custom, no limit configured"
    assert enterprise[0].header("x-ratelimit-limit") is None
    assert envoy.request("/healthz").header("x-ratelimit-limit") is None


def test_001_qrforge_minute_and_day_limits_with_codes(start_envoy):
    envoy = start_envoy(example("001-qrforge.json", {"1m": "4s", "1d": "30s"}))
    user = {"x-user-id": "u-1"}
    responses = send(envoy, 11, "/v1/qr", user)
    assert statuses(responses) == [200] * 10 + [429]
    refused = responses[10]
    request_id = refused.header("x-request-id")
    assert request_id and re.fullmatch(r"[0-9a-f-]{36}", request_id), refused.headers
    assert refused.json() == {
        "ok": False,
        "version": "2025-11-14-v1",
        "request_id": request_id,
        "code": "rate_limit_minute",
        "message": "Too many requests this minute.",
    }
    assert list(refused.json()) == ["ok", "version", "request_id", "code", "message"], "the documented field order"
    assert refused.header("x-ratelimit-limit") is None, "QRForge documents no rate-limit headers"
    assert_retry_after(refused, 1, 5)
    # Each refusal quotes its own request id.
    again = envoy.request("/v1/qr", user)
    assert again.json()["request_id"] == again.header("x-request-id") != request_id
    # Plan "bulk": no minute limit (0), 50 per day.
    bulk = send(envoy, 51, "/v1/qr", {"x-user-id": "u-2", "x-plan": "bulk"})
    assert statuses(bulk) == [200] * 50 + [429]
    assert bulk[50].json()["code"] == "rate_limit_day"
    assert bulk[50].json()["message"] == "Daily API quota exceeded."
    # Enterprise: 0 at both levels, no limit.
    assert statuses(send(envoy, 30, "/v1/qr", {"x-user-id": "u-3", "x-plan": "enterprise"})) == [200] * 30
    # Requests are per user: an unauthenticated one is refused outright.
    assert envoy.request("/v1/qr").status == 401


def test_002_linkforty_endpoints_exemptions_and_body(start_envoy):
    envoy = start_envoy(example("002-linkforty.json", {"1m": "6s"}))
    token = {"authorization": "Bearer lf_key"}
    for path in ("/health", "/api/qr/abc", "/abc123", "/Xy9"):
        rs = send(envoy, 25, path, token)
        assert statuses(rs) == [200] * 25, path
        assert rs[0].header("x-ratelimit-limit") is None, path
    bulk = send(envoy, 21, "/api/links/bulk", token, method="POST")
    assert statuses(bulk) == [200] * 20 + [429]
    assert bulk[0].header("x-ratelimit-limit") == "20"
    refused = bulk[20]
    wait = assert_retry_after(refused, 1, 7)
    assert refused.json() == {
        "error": "Too Many Requests",
        "message": f"Rate limit exceeded. Try again in {wait} seconds.",
        "statusCode": 429,
        "retryAfter": wait,
    }
    assert refused.header("x-ratelimit-remaining") == "0"
    # Bulk requests also count against the general 100/min: 80 left.
    links = send(envoy, 81, "/api/links", token)
    assert statuses(links) == [200] * 80 + [429]
    assert links[0].header("x-ratelimit-limit") == "100"
    assert links[0].header("x-ratelimit-remaining") == "79"
    # Webhooks have their own 50/min (another client: no key, so by IP).
    hooks = send(envoy, 51, "/api/webhooks")
    assert statuses(hooks) == [200] * 50 + [429]


def test_003_prolifi_per_key_limit_headers_and_error_object(start_envoy):
    envoy = start_envoy(example("003-prolifi.json", {"1m": "20s"}), concurrency=2)
    key = {"authorization": "Bearer pk_live_1"}
    responses = envoy.burst("/events", key, total=1010, connections=16)
    assert Counter(statuses(responses)) == {200: 1000, 429: 10}
    ok = next(r for r in responses if r.status == 200)
    assert ok.header("x-ratelimit-limit") == "1000"
    assert ok.header("x-ratelimit-remaining") is not None
    assert ok.header("x-ratelimit-reset") is None, "Prolifi documents Limit and Remaining only"
    refused = next(r for r in responses if r.status == 429)
    assert_retry_after(refused, 1, 21)
    assert refused.header("x-ratelimit-remaining") == "0"
    assert refused.json() == {
        "error": {
            "type": "rate_limit_error",
            "message": "Too many requests. Please retry after the rate limit resets.",
        }
    }
    assert envoy.request("/events", {"authorization": "Bearer pk_live_2"}).status == 200, "each key is independent"


def test_004_barcodegen_plan_message_with_iso_retry_time(start_envoy):
    envoy = start_envoy(example("004-barcodegen.json", {"1m": "4s", "1s": "1s"}))
    free = {"authorization": "Bearer bg_free"}
    responses = send(envoy, 11, "/api/barcode/qr/hello", free)
    assert statuses(responses) == [200] * 10 + [429]
    refused = responses[10]
    wait = assert_retry_after(refused, 1, 5)
    assert refused.header("content-type") == "application/json"
    assert refused.header("x-ratelimit-limit") is None
    message = refused.json()["error"]
    match = re.fullmatch(r"Rate limit exceeded \(10 req/min\)\. Retry after (\S+Z)\.", message)
    assert match, message
    retry_at = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert abs(retry_at.timestamp() - (time.time() + wait)) <= 1.5, (retry_at, wait)
    # The ISO time is honest: a retry at that moment is admitted.
    time.sleep(max(0.0, retry_at.timestamp() - time.time()) + 0.05)
    assert envoy.request("/api/barcode/qr/hello", free).status == 200
    starter = send(envoy, 51, "/api/barcode/qr/x", {"authorization": "Bearer bg_s", "x-plan": "starter"})
    assert statuses(starter) == [200] * 50 + [429]
    assert "(50 req/min)" in starter[50].json()["error"]
    # Business: 500 per second and no per-minute limit.
    business = send(envoy, 60, "/api/barcode/qr/x", {"authorization": "Bearer bg_b", "x-plan": "business"})
    assert statuses(business) == [200] * 60
