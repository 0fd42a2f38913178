"""Choosing and keying requests like a gateway, in a real Envoy: header, query, address-range,
metadata and filter-state selectors, composite and shared keys, per-route counters, plans and
limits from values other filters computed (a real jwt_authn with a key pair made here, Envoy's
header_to_metadata and set_filter_state), and rolling a limit out (a rule in shadow mode, a
candidate limit, the status header and access-log field). Envoy Gateway's own cases
(test/e2e/tests/ratelimit.go) are ported where they fit: their policies are 3 per hour."""
from __future__ import annotations

import base64
import copy
import json
import re
import time

import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from harness import ENVOY_YAML, eventually, prometheus

BASE = yaml.safe_load(ENVOY_YAML.read_text())
HCM = BASE["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def statuses(envoy, path, headers=None, n=4):
    return [envoy.request(path, headers or {}).status for _ in range(n)]


def rules(*rules, **top):
    return {**top, "rules": list(rules)}


def hourly(name, requests=3, **extra):
    return {"name": name, "limits": [{"requests": requests, "window": "1h"}], **extra}


def before_the_limiter(*filters) -> dict:
    """HCM overrides: `filters` ahead of envoy.yaml's own chain (the limiter, then the router)."""
    return {"http_filters": list(filters) + copy.deepcopy(HCM["http_filters"])}


# --- 1. headers -----------------------------------------------------------------------------

def test_envoy_gateway_header_cases(start_envoy):
    envoy = start_envoy(rules(
        # RateLimitHeaderMatch: both headers, one shared bucket.
        hourly("both", key="shared", match={"path": {"prefix": "/get"}, "headers": [
            {"name": "x-user-id", "exact": "one"}, {"name": "x-user-org", "exact": "acme"}]}),
        # GlobalRateLimitHeaderInvertMatch: one bucket per user name, admin excluded.
        hourly("names", key=[{"header": "x-user-name"}], on_missing_key="allow",
               match={"path": {"prefix": "/names"}, "headers": [{"name": "x-user-name", "exact": "admin", "invert": True}]}),
        # A regular expression, and absence.
        hourly("models", key="shared", match={"path": {"prefix": "/models"}, "headers": [
            {"name": "x-model", "regex": "gpt-4(o|\\.1)?"}, {"name": "x-internal", "present": False}]}),
    ))
    both = {"x-user-id": "one", "x-user-org": "acme"}
    assert statuses(envoy, "/get", both) == [200, 200, 200, 429]
    assert statuses(envoy, "/get", {"x-user-id": "one"}) == [200] * 4, "one matched header is not limited"
    assert statuses(envoy, "/names", {"x-user-name": "username"}) == [200, 200, 200, 429]
    assert statuses(envoy, "/names", {"x-user-name": "admin"}) == [200] * 4
    assert statuses(envoy, "/models", {"x-model": "gpt-4o"}) == [200, 200, 200, 429]
    assert statuses(envoy, "/models", {"x-model": "gpt-4o-mini"}) == [200] * 4, "the whole value must match"
    assert statuses(envoy, "/models", {"x-model": "gpt-4.1", "x-internal": "1"}) == [200] * 4


# --- 2. composite keys -------------------------------------------------------------------------

def test_a_counter_per_tenant_and_model(start_envoy):
    envoy = start_envoy(rules({
        "name": "tenant_model", "key": {"all": [{"header": "x-tenant"}, {"header": "x-model"}]},
        "on_missing_key": "deny", "limits": [{"requests": 2, "window": "1h"}]}))
    pair = lambda t, m: {"x-tenant": t, "x-model": m}  # noqa: E731
    assert statuses(envoy, "/v1", pair("acme", "gpt"), 3) == [200, 200, 429]
    assert statuses(envoy, "/v1", pair("acme", "claude"), 3) == [200, 200, 429]
    assert statuses(envoy, "/v1", pair("umbrella", "gpt"), 1) == [200]
    missing = envoy.request("/v1", {"x-tenant": "acme"})
    assert missing.status == 401 and missing.json()["error"] == "missing_client_key"


# --- 3. source address ranges --------------------------------------------------------------------

def test_address_ranges_one_bucket_or_one_per_address(start_envoy):
    # The client address is the entry the proxy in front wrote into x-forwarded-for: Envoy
    # (use_remote_address) appends its own peer, hence two trusted hops.
    hops = 2
    envoy = start_envoy(rules(
        {"name": "partners", "match": {"source_cidr": {"cidrs": ["198.51.100.0/24", "2001:db8::/32"], "trusted_hops": hops}},
         "key": "shared", "limits": [{"requests": 3, "window": "1h"}]},
        {"name": "internal", "match": {"source_cidr": {"cidrs": ["10.0.0.0/8"], "trusted_hops": hops, "invert": True}},
         "key": [{"client_ip": {"trusted_hops": hops}}], "limits": [{"requests": 2, "window": "1h"}]},
    ))
    via = lambda address: {"x-forwarded-for": address}  # noqa: E731
    # RateLimitCIDRMatch with type Exact: the whole range, IPv4 and IPv6, shares one bucket.
    assert [envoy.request("/", via(a)).status for a in
            ["198.51.100.1", "198.51.100.2", "2001:db8::5", "198.51.100.3"]] == [200, 200, 200, 429]
    # Distinct: one bucket per address outside the exempt range; the exempt range is not limited.
    assert statuses(envoy, "/", via("203.0.113.7"), 3) == [200, 200, 429]
    assert statuses(envoy, "/", via("203.0.113.8"), 1) == [200]
    assert statuses(envoy, "/", via("10.1.2.3"), 4) == [200] * 4


# --- 4. query parameters ---------------------------------------------------------------------

def test_envoy_gateway_query_parameter_case(start_envoy):
    envoy = start_envoy(rules(hourly("alice", key="shared", match={
        "path": {"prefix": "/get"}, "query_params": [{"name": "user", "exact": "alice"}]})))
    assert statuses(envoy, "/get?user=alice") == [200, 200, 200, 429]
    assert statuses(envoy, "/get?name=bob") == [200] * 4
    assert statuses(envoy, "/get?user=al%69ce", n=1) == [429], "the decoded value counts"


# --- 5, 6. values other filters computed ----------------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class KeyPair:
    """An RSA key pair made for the test: the JWKS jwt_authn verifies with, and RS256 tokens."""

    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self.key.public_key().public_numbers()
        as_bytes = lambda n: n.to_bytes((n.bit_length() + 7) // 8, "big")  # noqa: E731
        self.jwks = json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "test",
                                          "n": b64url(as_bytes(numbers.n)), "e": b64url(as_bytes(numbers.e))}]})

    def token(self, **claims) -> str:
        payload = {"iss": "https://issuer.test", "aud": "api", "exp": int(time.time()) + 3600, **claims}
        header = {"alg": "RS256", "typ": "JWT", "kid": "test"}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}".encode()
        signature = self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input.decode()}.{b64url(signature)}"


def jwt_authn(jwks: str) -> dict:
    return {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"test": {"issuer": "https://issuer.test", "audiences": ["api"],
                               "local_jwks": {"inline_string": jwks},
                               "payload_in_metadata": "jwt_payload", "forward": False}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "test"}}]}}


JWT = "envoy.filters.http.jwt_authn"


def test_jwt_claims_from_jwt_authn_select_key_and_plan(start_envoy, host):
    keys = KeyPair()
    claim = lambda *path: {"namespace": JWT, "key": "jwt_payload", "path": list(path)}  # noqa: E731
    config = rules(
        {"name": "writes",
         "match": {"metadata": [{**claim("scope"), "regex": ".*\\bwrite\\b.*"}]},
         "key": [{"metadata": claim("sub")}],
         "limits": [{"requests": {"free": 2, "gold": 4}, "window": "1h"}]},
        plans={"names": ["free", "gold"], "default": "free", "metadata": claim("org", "tier")},
    )
    if host == "native":
        # Envoy 1.40's module ABI reads metadata by namespace and key, not a path into a
        # structured value: the module refuses the configuration at load, naming each path.
        envoy = start_envoy(config, hcm_overrides=before_the_limiter(jwt_authn(keys.jwks)), wait=False)
        assert envoy.proc.wait(60) != 0
        log = envoy.log()
        for at in ("$.rules[0].match.metadata[0].path", "$.rules[0].key[0].metadata.path", "$.plans.metadata.path"):
            assert at in log, log[-3000:]
        return
    envoy = start_envoy(config, hcm_overrides=before_the_limiter(jwt_authn(keys.jwks)))
    bearer = lambda **claims: {"authorization": f"Bearer {keys.token(**claims)}"}  # noqa: E731
    alice = bearer(sub="alice", scope="read write", org={"tier": "free"})
    # The client's own headers do not pick the key: the verified claim does.
    spoofed = {**alice, "x-api-key": "someone-else"}
    first = envoy.request("/items", spoofed)
    assert (first.status, first.header("x-ratelimit-limit"), first.header("x-ratelimit-remaining")) == (200, "2", "1")
    assert statuses(envoy, "/items", alice, 2) == [200, 429]
    # A fresh token of the same subject shares its counter; another subject, gold, has 4.
    assert statuses(envoy, "/items", bearer(sub="alice", scope="write", jti="2"), 1) == [429]
    bob = bearer(sub="bob", scope="write", org={"tier": "gold"})
    assert statuses(envoy, "/items", bob, 5) == [200] * 4 + [429]
    assert envoy.request("/items", bob).header("x-ratelimit-limit") == "4"
    # Read-only tokens are not selected; no token never reaches the limiter (jwt_authn's 401).
    assert statuses(envoy, "/items", bearer(sub="carol", scope="read"), 4) == [200] * 4
    assert envoy.request("/items").status == 401


def test_metadata_and_filter_state_from_other_filters(start_envoy):
    """A tenant another filter puts in dynamic metadata (here header_to_metadata, standing in for
    ext_authz) and a tool name in filter state (set_filter_state, standing in for an MCP filter):
    one counter per tenant and tool, and the tenant's limit from metadata, bounded."""
    to_metadata = {"name": "envoy.filters.http.header_to_metadata", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config",
        "request_rules": [
            {"header": "x-tenant", "remove": True,
             "on_header_present": {"metadata_namespace": "tenancy", "key": "tenant", "type": "STRING"}},
            {"header": "x-tenant-limit", "remove": True,
             "on_header_present": {"metadata_namespace": "tenancy", "key": "limit", "type": "NUMBER"}}]}}
    tool_state = {"name": "envoy.filters.http.set_filter_state", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.set_filter_state.v3.Config",
        "on_request_headers": [{"object_key": "mcp.tool", "factory_key": "envoy.string",
                                "format_string": {"text_format_source": {"inline_string": "%REQ(x-mcp-tool)%"}}}]}}
    envoy = start_envoy(rules(
        {"name": "tools", "match": {"filter_state": [{"key": "mcp.tool", "regex": "[a-z_]+"}]},
         "key": {"all": [{"metadata": {"namespace": "tenancy", "key": "tenant"}}, {"filter_state": "mcp.tool"}]},
         "on_missing_key": "deny",
         "limits": [{"requests": 2, "window": "1h",
                     "requests_from": {"metadata": {"namespace": "tenancy", "key": "limit"}, "max": 4}}]}),
        hcm_overrides=before_the_limiter(to_metadata, tool_state))
    call = lambda tenant, tool, limit=None: {  # noqa: E731
        "x-tenant": tenant, "x-mcp-tool": tool, **({"x-tenant-limit": limit} if limit else {})}
    assert statuses(envoy, "/mcp", call("acme", "search"), 3) == [200, 200, 429]
    assert statuses(envoy, "/mcp", call("acme", "fetch"), 3) == [200, 200, 429], "another tool"
    assert statuses(envoy, "/mcp", call("umbrella", "search", "3"), 4) == [200, 200, 200, 429]
    assert statuses(envoy, "/mcp", call("initech", "search", "99"), 5) == [200] * 4 + [429], "bounded by max"
    assert envoy.request("/mcp", call("acme", "NOT-A-TOOL")).status == 200, "the selector does not match"
    assert envoy.request("/mcp", {"x-mcp-tool": "search"}).status == 401, "no tenant: deny"


# --- 7. rollout --------------------------------------------------------------------------------

STATUS_LOG = "%REQ(:PATH)% %RESPONSE_CODE% status=%FILTER_STATE(wasm.ratelimit_status:PLAIN)%\n"


def test_shadow_rule_candidate_limit_and_the_status_they_leave(start_envoy, tmp_path):
    access_log = tmp_path / "access.log"
    logging = {"access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": str(access_log), "log_format": {"text_format_source": {"inline_string": STATUS_LOG}}}}]}
    envoy = start_envoy(rules(
        {"name": "trial", "mode": "shadow", "match": {"path": {"prefix": "/trial"}}, "key": [{"header": "x-api-key"}],
         "limits": [{"name": "tight", "requests": 2, "window": "1h"}]},
        {"name": "api", "key": [{"header": "x-api-key"}],
         "limits": [{"name": "enforced", "requests": 4, "window": "1h"},
                    {"name": "candidate", "requests": 2, "window": "1h", "shadow": True}]},
        response={"status_header": "x-ratelimit-status", "status_filter_state": True},
    ), hcm_overrides=logging)
    key = {"x-api-key": "k"}
    trial = [envoy.request("/trial", key) for _ in range(4)]
    assert [(r.status, r.header("x-ratelimit-status")) for r in trial] == [
        (200, "passed"), (200, "passed"), (200, "shadow_refused"), (200, "shadow_refused")]
    time.sleep(1.1)  # the refusal log writes at most one line a second per worker
    api = [envoy.request("/api", key) for _ in range(5)]
    assert [(r.status, r.header("x-ratelimit-status")) for r in api] == [
        (200, "passed"), (200, "passed"), (200, "shadow_refused"), (200, "shadow_refused"), (429, "refused")]
    # The candidate shows in no header: the enforced limit does.
    assert (api[3].header("x-ratelimit-limit"), api[3].header("x-ratelimit-remaining")) == ("4", "0")
    def logged():
        lines = access_log.read_text().splitlines() if access_log.exists() else []
        return lines if len(lines) >= 9 else None

    lines = eventually(logged) or []
    assert [line.split("status=")[1] for line in lines] == [
        "passed", "passed", "shadow_refused", "shadow_refused",
        "passed", "passed", "shadow_refused", "shadow_refused", "refused"]
    stats = prometheus(envoy)
    assert stats["ratelimit_trial_shadow_refused"] == 2
    assert stats["ratelimit_trial_tight_shadow_refused"] == 2
    assert stats["ratelimit_api_candidate_shadow_refused"] == 2
    assert stats["ratelimit_api_enforced_refused"] == 1
    log = eventually(lambda: re.search(r"ratelimit: refused rule=api limit=candidate .*action=pass shadow=true",
                                       envoy.log()))
    assert log, envoy.log()[-2000:]


# --- 8. buckets as a gateway expects --------------------------------------------------------------

def test_shared_per_route_and_else_buckets(start_envoy):
    route_config = copy.deepcopy(HCM["route_config"])
    cluster = route_config["virtual_hosts"][0]["routes"][0]["route"]
    route_config["virtual_hosts"][0]["routes"] = [
        {"name": name, "match": {"prefix": f"/{name}"}, "route": cluster} for name in ("foo", "bar", "other")]
    envoy = start_envoy(rules(
        # One bucket for every client of the rule.
        {"name": "everyone", "match": {"path": {"prefix": "/other/all"}}, "key": "shared",
         "limits": [{"requests": 2, "window": "1h"}]},
        # Each Envoy route counts alone (Envoy Gateway's default), per user.
        {"name": "per_route", "match": {"route_names": ["foo", "bar"]},
         "key": {"all": [{"header": "x-user-id"}, {"route_name": {}}]}, "limits": [{"requests": 2, "window": "1h"}]},
        # The "else" bucket: whatever no rule above chose.
        {"name": "else", "key": "shared", "limits": [{"requests": 3, "window": "1h"}]},
    ), hcm_overrides={"route_config": route_config})
    assert [envoy.request("/other/all", {"x-api-key": k}).status for k in "abc"] == [200, 200, 429]
    user = {"x-user-id": "one"}
    assert statuses(envoy, "/foo", user, 3) == [200, 200, 429]
    assert statuses(envoy, "/bar", user, 3) == [200, 200, 429], "each route counts alone"
    assert [envoy.request(p, {"x-api-key": k}).status for p, k in
            [("/other/x", "a"), ("/other/y", "b"), ("/other/w", "c"), ("/other/z", "d")]] == [200, 200, 200, 429]
