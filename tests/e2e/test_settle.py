"""Counting what the response says, in a real Envoy: only 2xx count, 5xx and resets give the
hold back, token usage from a JSON body (json_to_metadata) or the last SSE event
(sse_to_metadata) replaces the 100 tokens a request holds, concurrent requests at the edge of a
budget stay within the stated bound, Envoy Gateway's UsageRateLimit case, and the official
`openai` client reading our refusals. Runs envoy/examples/llm/ (`make run EXAMPLE=llm`) with only
ports and paths swapped: 1,000 tokens and 20 requests per minute per bearer token."""
from __future__ import annotations

import http.client
import json
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from harness import HOSTS, ROOT, Envoy, Upstream, prometheus

LLM = ROOT / "envoy" / "examples" / "llm"
CHAT = "/v1/chat/completions"
# What Envoy needs after a response's last byte to end the stream and run the filter's log phase
# (where the filter settles): well under this on an idle machine.
SETTLE = 0.2


@pytest.fixture(scope="module", params=HOSTS)
def llm(request):
    upstream = Upstream(LLM / "upstream.py")
    envoy = Envoy(None, upstream, concurrency=2, envoy_yaml=LLM / "envoy.yaml", host=request.param)
    try:
        yield envoy.start()
    finally:
        envoy.close()
        upstream.close()


def key() -> str:
    """A bearer token of its own for each test: its own budget."""
    return f"sk-{uuid.uuid4().hex[:12]}"


def chat(envoy, token, tokens=None, status=None, stream=False, extra=None):
    """One chat completion; the response, its body read whole."""
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json", **(extra or {})}
    if tokens is not None:
        headers["x-demo-tokens"] = str(tokens)
    if status is not None:
        headers["x-demo-status"] = str(status)
    body = json.dumps({"model": "demo-model", "messages": [], "stream": stream})
    conn = http.client.HTTPConnection("127.0.0.1", envoy.listen_port, timeout=20)
    try:
        conn.request("POST", CHAT, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
    finally:
        conn.close()
    time.sleep(SETTLE)
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def left(headers) -> dict[str, int]:
    """Each limit's remaining quota in the IETF `RateLimit` header: {"tokens": 900, ...}."""
    items = [item.strip().split(";") for item in headers["ratelimit"].split(",")]
    return {parts[0].strip('"'): int(next(p[2:] for p in parts if p.startswith("r="))) for parts in items}


def test_usage_from_json_and_sse_replaces_the_hold_and_only_2xx_count(llm):
    token = key()
    status, headers, body = chat(llm, token, tokens=300)
    assert status == 200 and json.loads(body)["usage"]["total_tokens"] == 300
    assert left(headers) == {"tokens": 900, "requests": 19}, "100 tokens held while in flight"
    assert 'qu="tokens"' in headers["ratelimit-policy"], headers["ratelimit-policy"]
    # 300 used: the next request holds 100 of the 700 left.
    status, headers, body = chat(llm, token, tokens=250, stream=True)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert b'"total_tokens": 250' in body and body.rstrip().endswith(b"data: [DONE]")
    assert left(headers) == {"tokens": 600, "requests": 18}
    # 550 used; a 500 (even one that reports usage) and a 429 from upstream count nothing.
    for failed in (500, 429):
        status, headers, _ = chat(llm, token, tokens=400, status=failed)
        assert status == failed
        assert left(headers) == {"tokens": 350, "requests": 17}, f"after {failed}: {headers}"
    status, headers, _ = chat(llm, token, tokens=1)
    assert left(headers) == {"tokens": 350, "requests": 17}, "the failures gave everything back"


def test_a_reset_stream_gives_the_hold_back(llm):
    token = key()
    # The upstream closes the connection without answering: Envoy answers 503 itself.
    status, headers, _ = chat(llm, token, extra={"x-demo-reset": "1"})
    assert status == 503
    # The client goes away while the upstream is still thinking: no response at all.
    with socket.create_connection(("127.0.0.1", llm.listen_port)) as s:
        body = b'{"model": "demo-model", "messages": []}'
        s.sendall(b"POST " + CHAT.encode() + b" HTTP/1.1\r\nhost: x\r\nauthorization: Bearer " + token.encode()
                  + b"\r\nx-demo-delay-ms: 1500\r\ncontent-type: application/json\r\ncontent-length: "
                  + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(0.3)
    time.sleep(SETTLE)
    status, headers, _ = chat(llm, token)
    assert status == 200
    assert left(headers) == {"tokens": 900, "requests": 19}, "neither the 503 nor the reset counted"


def test_a_stream_cut_after_it_started_keeps_its_hold(llm):
    """The client closes mid-stream (events 300 ms apart, the usage last): the status was 200 and
    the usage of 500 never came, so the 100 held stay counted: what the filter knows (the book's
    "Counting responses" chapter)."""
    token = key()
    with socket.create_connection(("127.0.0.1", llm.listen_port)) as s:
        body = b'{"model": "demo-model", "messages": [], "stream": true}'
        s.sendall(b"POST " + CHAT.encode() + b" HTTP/1.1\r\nhost: x\r\nauthorization: Bearer " + token.encode()
                  + b"\r\nx-demo-tokens: 500\r\nx-demo-delay-ms: 300\r\ncontent-type: application/json"
                  + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert s.recv(12).startswith(b"HTTP/1.1 200")
    time.sleep(SETTLE)
    _, headers, _ = chat(llm, token)
    assert left(headers)["tokens"] == 800, headers


def burst(envoy, token, n, tokens, delay_ms):
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(
            lambda _: chat(envoy, token, tokens=tokens, extra={"x-demo-delay-ms": str(delay_ms)})[0],
            range(n)))


def test_concurrent_requests_at_the_edge_of_a_budget_stay_within_the_bound(llm):
    before = prometheus(llm)
    # Each uses 150 tokens but holds 100: at most 10 are admitted while they are in flight
    # (10 x 100 = 1,000), and what is counted exceeds the budget by at most the excess of those
    # in flight: 10 x 50.
    over = burst(llm, key(), 24, tokens=150, delay_ms=400)
    # Each uses 80 and holds 100: the estimate covers the actual, nothing over the budget.
    covered = burst(llm, key(), 24, tokens=80, delay_ms=400)
    after = prometheus(llm)
    admitted_over, admitted_covered = over.count(200), covered.count(200)
    print(f"admitted: {admitted_over} using 150 (holding 100), {admitted_covered} using 80")
    assert set(over) <= {200, 429} and set(covered) <= {200, 429}
    assert 1 <= admitted_over <= 10, over
    assert 1 <= admitted_covered <= 1000 // 80, covered
    settled = after.get("ratelimit_llm_tokens_settled", 0) - before.get("ratelimit_llm_tokens_settled", 0)
    overspent = after.get("ratelimit_llm_tokens_overspent", 0) - before.get("ratelimit_llm_tokens_overspent", 0)
    assert settled == 150 * admitted_over + 80 * admitted_covered
    assert overspent == 50 * admitted_over, "only the excess over the estimate is over-spent"
    assert 150 * admitted_over <= 1000 + 50 * admitted_over, "the bound: the budget plus the excesses"
    assert 80 * admitted_covered <= 1000, "an estimate that covers the actual: never over"


def test_envoy_gateways_usage_rate_limit_case(start_envoy):
    """Envoy Gateway's UsageRateLimit conformance case: a limit of 21 per hour, a request cost of
    0 and a response cost of 10 (here a response header the route adds) answer 200, 200, 200,
    429."""
    config = {"rules": [{"name": "usage", "key": [{"header": "x-user-id"}], "limits": [
        {"requests": 21, "window": "1h",
         "cost": {"request": 0, "response": {"header": "x-cost", "max": 100}}}]}]}
    route = {"name": "local", "virtual_hosts": [{"name": "api", "domains": ["*"], "routes": [{
        "name": "api", "match": {"prefix": "/"}, "route": {"cluster": "demo_upstream"},
        "response_headers_to_add": [{"header": {"key": "x-cost", "value": "10"}}]}]}]}
    envoy = start_envoy(config, hcm_overrides={"route_config": route})
    answers = []
    for _ in range(4):
        answers.append(envoy.request("/get", {"x-user-id": "one"}).status)
        time.sleep(SETTLE)
    assert answers == [200, 200, 200, 429]


def test_the_openai_client_reads_a_refusal_as_a_rate_limit_error(llm):
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{llm.listen_port}/v1", api_key=key(), max_retries=0)
    ask = dict(model="demo-model", messages=[{"role": "user", "content": "hi"}])
    first = client.chat.completions.create(**ask, extra_headers={"x-demo-tokens": "600"})
    assert first.usage.total_tokens == 600
    time.sleep(SETTLE)
    chunks = list(client.chat.completions.create(
        **ask, stream=True, stream_options={"include_usage": True}, extra_headers={"x-demo-tokens": "350"}))
    assert chunks[-1].usage.total_tokens == 350
    time.sleep(SETTLE)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(**ask)
    error = refused.value
    assert error.status_code == 429
    assert "Rate limit reached for tokens per minute: 1000 per 1m" in str(error), str(error)
    assert error.code == "rate_limit_exceeded" and error.type == "tokens"
    # The 600 leave the window within a minute and one sub-window (60 s / 20) of being counted.
    retry_after = int(error.response.headers["retry-after"])
    assert 1 <= retry_after <= 63, retry_after
