"""A crashed filter: what each of Envoy 1.40's Wasm failure policies does when the filter traps
in the middle of a request, and what the native module does when it panics.

The filter here is the TEST build of `make build-trap` (cargo feature `trap-on-demand`,
target/filter/test/): a request carrying `x-ratelimit-test-trap` panics inside the filter once
its decision is made and its hit counted (src/engine/trap.rs). In the Wasm build the panic
aborts and V8 traps (`Uncaught RuntimeError: unreachable`), which fails the worker's VM; the
native module catches it at the C boundary (src/native/guard.rs).

Envoy runs one worker (`--concurrency 1`) so that the worker whose VM failed serves every later
request: with several workers, a trap fails only the VM of the worker it happened on.
docs/src/operating/failures.md gives the table these tests back.
"""
from __future__ import annotations

import re
import time

import pytest

from harness import BUILT_NATIVE, BUILT_WASM, HOSTS, ROOT, Envoy, admin_get, eventually

TRAP_DIR = ROOT / "target" / "filter" / "test"
TRAP_BUILDS = {"wasm": TRAP_DIR / "envoy_ratelimit_wasm.wasm", "native": TRAP_DIR / "libenvoy_ratelimit.so"}
TRAP = {"x-ratelimit-test-trap": "1"}
KEY = {"x-api-key": "crash-client"}
CONFIG = {"rules": [{"name": "api", "key": [{"header": "x-api-key"}],
                     "limits": [{"name": "per_minute", "requests": 5, "window": "1m"}]}]}
# The recipes' fail_open is replaced by each test's policy (Envoy takes one of the two).
FAIL_CLOSED = {"fail_open": None, "failure_policy": "FAIL_CLOSED"}
FAIL_OPEN = {"fail_open": None, "failure_policy": "FAIL_OPEN"}
LEGACY_FAIL_OPEN = {"failure_policy": None, "reload_config": None, "fail_open": True}
# Reload at most once per 1.5 to 3 s (Envoy draws each wait in [base, 2 * base)).
FAIL_RELOAD = {"fail_open": None, "failure_policy": "FAIL_RELOAD",
               "reload_config": {"backoff": {"base_interval": "1.5s"}}}
RELOAD_WAIT = 3.1  # past the longest wait FAIL_RELOAD's backoff can draw
DEFAULT_RELOAD_WAIT = 2.1  # past the longest wait of the default backoff (base 1 s)

wasm_only = pytest.mark.skipif("wasm" not in HOSTS, reason="RATELIMIT_HOSTS leaves the Wasm filter out")


@pytest.fixture
def crashing(upstream):
    """Starts an Envoy with the test build for `host` and the Wasm `policy`; stops it afterwards."""
    started: list[Envoy] = []

    def start(policy: dict, host: str = "wasm") -> Envoy:
        build = TRAP_BUILDS[host]
        assert build.exists(), f"{build} is missing: make build-trap"
        envoy = Envoy(CONFIG, upstream, concurrency=1, host=host, plugin_overrides=policy, build=build)
        started.append(envoy)
        return envoy.start()

    yield start
    for envoy in started:
        envoy.close()


def stats(envoy: Envoy, prefix: str) -> dict[str, int]:
    text = admin_get(envoy.admin_port, "/stats")
    return {m.group(1): int(m.group(2)) for m in re.finditer(rf"^({re.escape(prefix)}\S*): (\d+)$", text, re.M)}


def statuses(envoy: Envoy, n: int) -> list[int]:
    return [envoy.request("/api/x", KEY).status for _ in range(n)]


def limited(envoy: Envoy) -> tuple[int, str | None]:
    """One request of the client: its status and what the filter says is left."""
    r = envoy.request("/api/x", KEY)
    return r.status, r.header("x-ratelimit-remaining")


# Every shipped Envoy configuration with the Wasm filter (the Istio and Envoy Gateway manifests
# are checked by test_manifests.py).
RECIPES = [ROOT / "envoy" / p for p in (
    "envoy.yaml", "envoy.compose.yaml", "envoy.fleet.compose.yaml", "examples/llm/envoy.yaml",
    "placement/ratelimit-before-jwt.yaml", "placement/ratelimit-after-jwt.yaml")]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT / "envoy")))
def test_every_envoy_recipe_reloads_a_crashed_vm(path):
    """The policy the tests below favour, set explicitly (Envoy's default is FAIL_CLOSED), and
    not through the deprecated fail_open (Envoy takes one of the two)."""
    text = path.read_text()
    assert text.count("envoy.filters.http.wasm") == text.count("failure_policy: FAIL_RELOAD") == 1
    assert "fail_open" not in text


def test_shipped_builds_cannot_trap():
    """The builds users deploy have no trap: only make build-trap's copies do."""
    shipped = {"wasm": BUILT_WASM, "native": BUILT_NATIVE}
    for build in (shipped[host] for host in HOSTS):
        assert build.exists() and b"x-ratelimit-test-trap" not in build.read_bytes(), build
    for build in TRAP_BUILDS.values():
        assert build.exists() and b"x-ratelimit-test-trap" in build.read_bytes(), build


@wasm_only
def test_fail_closed_answers_503_to_the_trap_and_to_every_later_request(crashing):
    envoy = crashing(FAIL_CLOSED)
    assert [limited(envoy) for _ in range(2)] == [(200, "4"), (200, "3")]
    trapped = envoy.request("/api/x", {**KEY, **TRAP})
    assert (trapped.status, trapped.body) == (503, b"")
    assert eventually(lambda: "Uncaught RuntimeError: unreachable" in envoy.log())
    # The worker's VM stays failed: every request is refused, well past any reload backoff.
    assert statuses(envoy, 3) == [503] * 3
    time.sleep(DEFAULT_RELOAD_WAIT)
    assert statuses(envoy, 3) == [503] * 3
    assert envoy.proc.poll() is None
    assert stats(envoy, "wasm.ratelimit.vm_reload") == {
        "wasm.ratelimit.vm_reload": 0, "wasm.ratelimit.vm_reload_backoff": 0,
        "wasm.ratelimit.vm_reload_failure": 0, "wasm.ratelimit.vm_reload_success": 0}


@wasm_only
def test_fail_open_answers_503_to_the_trap_then_lets_everything_through_unlimited(crashing):
    envoy = crashing(FAIL_OPEN)
    assert [limited(envoy) for _ in range(2)] == [(200, "4"), (200, "3")]
    # The trapping request itself still gets Envoy's 503 (only the legacy fail_open spares it).
    assert envoy.request("/api/x", {**KEY, **TRAP}).status == 503
    # Then the filter is skipped: twice the limit passes, with no rate-limit headers.
    after = [limited(envoy) for _ in range(10)]
    assert after == [(200, None)] * 10


@wasm_only
def test_legacy_fail_open_passes_the_trapping_request_too(crashing):
    envoy = crashing(LEGACY_FAIL_OPEN)
    assert [limited(envoy) for _ in range(2)] == [(200, "4"), (200, "3")]
    trapped = envoy.request("/api/x", {**KEY, **TRAP})
    assert (trapped.status, trapped.header("x-ratelimit-remaining")) == (200, None)
    assert [limited(envoy) for _ in range(10)] == [(200, None)] * 10
    assert "Using deprecated option 'envoy.extensions.wasm.v3.PluginConfig.fail_open'" in envoy.log()


@wasm_only
def test_fail_reload_brings_limiting_back_with_the_counts_kept(crashing):
    envoy = crashing(FAIL_RELOAD)
    assert [limited(envoy) for _ in range(2)] == [(200, "4"), (200, "3")]
    time.sleep(RELOAD_WAIT)  # the VM loaded longer ago than any backoff: the next failure reloads at once
    assert envoy.request("/api/x", {**KEY, **TRAP}).status == 503
    # The next request gets a new VM; the counts are the shared data's, kept (the trapped
    # request's hit included: 2 + 1 + this one leaves 1).
    assert limited(envoy) == (200, "1")
    assert stats(envoy, "wasm.ratelimit.vm_reload_success") == {"wasm.ratelimit.vm_reload_success": 1}
    # A second trap right after the reload: within the backoff, the VM stays failed (503).
    assert envoy.request("/api/x", {**KEY, **TRAP}).status == 503
    assert statuses(envoy, 2) == [503, 503]
    assert stats(envoy, "wasm.ratelimit.vm_reload_backoff")["wasm.ratelimit.vm_reload_backoff"] >= 2
    time.sleep(RELOAD_WAIT)
    # Reloaded again, still counting where it was: the 5th hit (the second trap's) is spent.
    assert limited(envoy) == (429, "0")
    assert stats(envoy, "wasm.ratelimit.vm_reload_success") == {"wasm.ratelimit.vm_reload_success": 2}
    assert "envoy_wasm_ratelimit_vm_reload_success{} 2" in admin_get(envoy.admin_port, "/stats/prometheus")
    assert envoy.proc.poll() is None


@pytest.mark.skipif("native" not in HOSTS, reason="RATELIMIT_HOSTS leaves the native module out")
def test_native_module_catches_the_panic_and_fails_only_that_request(crashing):
    envoy = crashing({}, host="native")
    assert [limited(envoy) for _ in range(2)] == [(200, "4"), (200, "3")]
    trapped = envoy.request("/api/x", {**KEY, **TRAP})
    assert trapped.status == 500
    assert trapped.json()["error"] == "rate_limit_failure"
    caught = "a bug in deciding a request was caught (panic: ratelimit: trap on demand"
    assert eventually(lambda: caught in envoy.log())
    # Envoy is up, the module goes on counting where it was (the trapped request's hit counted).
    assert envoy.proc.poll() is None
    assert [limited(envoy) for _ in range(3)] == [(200, "1"), (200, "0"), (429, "0")]
    assert stats(envoy, "dynamicmodulescustom.ratelimit.module_panics") == {
        "dynamicmodulescustom.ratelimit.module_panics": 1}
