"""Real client libraries from PyPI (pinned in tests/requirements.txt, nobody here wrote them)
pointed at the filter in a real Envoy: each reads our refusals and headers the way its users rely
on, so a regression in what we send shows up as a real client misbehaving.

Windows are a few seconds at most; no test waits longer than a client is told to.
"""
import json
import time
from datetime import datetime, timezone

import anthropic
import openai
import pytest
import ratelimit_headers
import urllib3
from github import Github, GithubRetry
from githubkit import GitHub
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import http_backoff

from harness import ROOT

EXAMPLES = ROOT / "envoy" / "examples"


def limited(limits, response=None, key=None):
    rule = {"name": "api", "key": key or "shared", "limits": limits}
    return {"rules": [rule], "response": response or {}}


def example(name, window):
    """A shipped example with every window shortened to `window`."""
    config = json.loads((EXAMPLES / name).read_text())
    for rule in config["rules"]:
        for limit in rule["limits"]:
            limit["window"] = window
    return config


def url(envoy, path="/api"):
    return f"http://127.0.0.1:{envoy.listen_port}{path}"


def exhaust(envoy, n, headers=None, path="/api"):
    for _ in range(n):
        assert envoy.request(path, headers).status == 200


def test_urllib3_retry_waits_retry_after_and_is_admitted(start_envoy):
    envoy = start_envoy(limited([{"requests": 2, "window": "2s"}]))
    exhaust(envoy, 2)
    refused = envoy.request("/api")
    assert refused.status == 429
    wait = int(refused.header("retry-after"))
    assert envoy.request("/api").status == 429, "a retry before Retry-After is refused"
    retry = urllib3.Retry(total=1, status_forcelist=[429], backoff_factor=0)
    started = time.monotonic()
    response = urllib3.PoolManager(retries=retry).request("GET", url(envoy))
    assert response.status == 200, "one retry, after Retry-After, is admitted"
    assert time.monotonic() - started <= wait + 1


def test_openai_waits_retry_after_ms_and_shows_the_message(start_envoy):
    envoy = start_envoy(example("005-openai.json", "1s"))
    client = openai.OpenAI(base_url=url(envoy, "/v1"), api_key="sk-test", max_retries=1)
    auth = {"authorization": "Bearer sk-test"}
    exhaust(envoy, 60, auth, "/v1/models")
    refused = envoy.request("/v1/models", auth)
    ms, seconds = int(refused.header("retry-after-ms")), int(refused.header("retry-after"))
    assert ms < seconds * 1000, (ms, seconds)
    exhaust_again = time.monotonic()
    while envoy.request("/v1/models", auth).status == 200:
        assert time.monotonic() - exhaust_again < 2
    started = time.monotonic()
    client.models.with_raw_response.list()
    # It waited the milliseconds, not the rounded-up seconds (at least 1 more).
    assert time.monotonic() - started < ms / 1000 + 0.8, (ms, seconds)
    refusing = openai.OpenAI(base_url=url(envoy, "/v1"), api_key="sk-test", max_retries=0)
    while True:
        try:
            refusing.models.with_raw_response.list()
        except openai.RateLimitError as e:
            assert "Please try again in" in str(e), str(e)
            assert e.body["code"] == "rate_limit_exceeded"
            break


def test_anthropic_gives_a_long_wait_back_at_once_and_retries_a_short_one(start_envoy):
    hourly = example("006-anthropic.json", "1h")
    envoy = start_envoy(hourly)
    client = anthropic.Anthropic(base_url=url(envoy, ""), api_key="sk-ant-test", max_retries=2)
    key = {"authorization": "Bearer sk-ant-test"}  # the client's own way (2.17)
    exhaust(envoy, 50, key, "/v1/messages")
    started = time.monotonic()
    with pytest.raises(anthropic.RateLimitError) as refused:
        client.messages.with_raw_response.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "hi"}])
    # Without x-should-retry: false it would sleep the hour's Retry-After, twice.
    assert time.monotonic() - started < 2
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert "rate limit of 50 requests per 1h" in str(refused.value)
    envoy.close()
    envoy = start_envoy(example("006-anthropic.json", "1s"))
    client = anthropic.Anthropic(base_url=url(envoy, ""), api_key="sk-ant-test", max_retries=1)
    exhaust(envoy, 50, key, "/v1/messages")
    response = client.messages.with_raw_response.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "hi"}])
    assert response.http_response.status_code == 200, "retried after retry-after-ms, admitted"


def hf_config(names):
    burst, slow = names
    limits = [{"name": burst, "requests": 1, "window": "1s"}, {"name": slow, "requests": 2, "window": "6s"}]
    return limited(limits, {"headers": {"style": "ietf_draft11"}})


def both_exhausted(envoy):
    """Both limits refuse the next request: the burst's frees in a second, the slow one's later."""
    assert envoy.request("/api").status == 200
    time.sleep(1.1)
    assert envoy.request("/api").status == 200
    refused = envoy.request("/api")
    assert refused.status == 429
    return refused


def test_huggingface_hub_reads_the_binding_limit_first(start_envoy):
    envoy = start_envoy(hf_config(["burst", "slow"]))
    refused = both_exhausted(envoy)
    assert refused.header("ratelimit").startswith('"slow";r=0;'), refused.header("ratelimit")
    # One retry, after the wait of the first item it reads: the binding limit's.
    response = http_backoff("GET", url(envoy), max_retries=1, retry_on_status_codes=429)
    assert response.status_code == 200


def test_huggingface_hub_skips_names_with_dashes(start_envoy):
    # What `ratelimit-config check` warns of: "slow-down" is invisible to huggingface_hub.
    envoy = start_envoy(hf_config(["burst", "slow-down"]))
    both_exhausted(envoy)
    with pytest.raises(HfHubHTTPError) as refused:
        http_backoff("GET", url(envoy), max_retries=1, retry_on_status_codes=429)
    assert refused.value.response.status_code == 429, "it waited for the burst only"


def test_pygithub_reads_the_reset_as_epoch_seconds_and_retries_after_retry_after(start_envoy):
    envoy = start_envoy(limited([{"requests": 2, "window": "2s"}]))
    gh = Github(base_url=url(envoy), retry=GithubRetry(total=1, backoff_factor=0))
    requester = gh._Github__requester
    requester.requestJsonAndCheck("GET", "/repos/x")
    assert gh.rate_limiting == (1, 2)
    reset = gh.rate_limiting_resettime
    assert time.time() <= reset <= time.time() + 3, reset
    requester.requestJsonAndCheck("GET", "/repos/x")
    # The third is refused, and retried once after Retry-After: admitted.
    requester.requestJsonAndCheck("GET", "/repos/x")
    envoy.close()
    delta = start_envoy(limited([{"requests": 2, "window": "2s"}], {"headers": {"reset": "delta_seconds"}}))
    gh = Github(base_url=url(delta))
    gh._Github__requester.requestJsonAndCheck("GET", "/repos/x")
    # What `check` warns of: seconds from now read as a Unix time.
    assert datetime.fromtimestamp(gh.rate_limiting_resettime, timezone.utc).year == 1970


def test_githubkit_retries_once_after_retry_after(start_envoy):
    envoy = start_envoy(limited([{"requests": 1, "window": "2s"}]))
    gh = GitHub(base_url=url(envoy), auto_retry=True)
    assert gh.request("GET", "/repos/x").status_code == 200
    started = time.monotonic()
    assert gh.request("GET", "/repos/x").status_code == 200, "refused, then retried once: admitted"
    assert time.monotonic() - started >= 0.5


def test_ratelimit_headers_reads_each_style(start_envoy):
    envoy = start_envoy(limited([{"requests": 3, "window": "1h"}], {"headers": {"style": "x_rate_limit"}}))
    state = ratelimit_headers.parse(response_headers=dict(envoy.request("/api").headers))
    assert (state.source, state.limit, state.remaining) == ("github", 3, 2)
    # When the oldest request leaves the hour (to the window's slot): a time to come, not 1970.
    assert 0 < state.reset.timestamp() - time.time() <= 3600 + 300, state.reset
    envoy.close()
    envoy = start_envoy(limited([{"requests": 3, "window": "1h"}], {"headers": {"style": "ietf_draft06"}}))
    state = ratelimit_headers.parse(response_headers=dict(envoy.request("/api").headers))
    assert (state.source, state.limit, state.remaining) == ("ietf", 3, 2)
    assert 0 < state.reset.timestamp() - time.time() <= 3600 + 300, state.reset
    envoy.close()
    # Envoy's own form: what Envoy Gateway's users' clients read today, byte for byte.
    envoy = start_envoy(limited([{"requests": 3, "window": "1h"}], {"headers": {"style": "envoy_draft03"}}))
    r = envoy.request("/api")
    assert (r.header("x-ratelimit-limit"), r.header("x-ratelimit-remaining")) == ("3, 3;w=3600", "2")
    assert 0 < int(r.header("x-ratelimit-reset")) <= 3600 + 300
    state = ratelimit_headers.parse(response_headers=dict(r.headers))
    # What `check` warns of: no number in the limit, and the reset read as a Unix time.
    assert state.limit is None and state.reset.year == 1970
