"""envoy/docker-compose.yml, run for real on a Docker engine: `up`, the README's demo through the
published port, Retry-After honoured, `down` leaving nothing behind.

Needs a Docker engine and `docker compose` (v2) or `docker-compose` (1.29); skipped, saying why,
when either is missing. The images are the ones the compose file names: on a machine with no
registry, the stand-ins of tests/docker/standin_images.py (`make docker-images`, also run here),
built from the Envoy binary `make setup` installs; elsewhere the official images, if present.
Each stack runs under its own compose project name with free host ports, and is taken down with
its volumes, also when a test fails; whatever `down` missed is removed by the project's label
(compose_harness.py).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from compose_harness import COMPOSE, NO_COMPOSE, Stack
from harness import HOSTS, ROOT, http_get, admin_get

# One Docker engine: its stacks and image builds run on one pytest-xdist worker (make e2e).
pytestmark = pytest.mark.xdist_group("docker")

ENVOY_DIR = ROOT / "envoy"
COMPOSE_FILE = ENVOY_DIR / "docker-compose.yml"
COMPOSE_CONFIG = ENVOY_DIR / "envoy.compose.yaml"
# The variant with the filter as an Envoy dynamic module (make build-native).
NATIVE_COMPOSE_FILE = ENVOY_DIR / "docker-compose.native.yml"


class SingleStack(Stack):
    """docker-compose.yml's stack: Envoy's proxy and admin ports."""

    def __init__(self, files: list[Path]) -> None:
        super().__init__(files, ["ENVOY_HTTP_PORT", "ENVOY_ADMIN_PORT"])
        self.http_port = self.ports["ENVOY_HTTP_PORT"]
        self.admin_port = self.ports["ENVOY_ADMIN_PORT"]

    def wait_ready(self, timeout: float = 60) -> None:
        """Envoy answers through the published port and reaches the upstream (by service name):
        /healthz is exempt from every limit, so this counts nothing."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                r = http_get(self.http_port, "/healthz")
                if r.status == 200 and r.json().get("upstream") == "demo":
                    return
                last = f"{r.status} {r.body[:200]!r}"
            except (OSError, ValueError) as e:  # docker-proxy accepts before Envoy listens
                last = repr(e)
            time.sleep(0.2)
        raise TimeoutError(f"the stack did not serve /healthz within {timeout} s (last: {last})\n"
                           f"{self.compose('ps', check=False).stdout}\n{self.logs('envoy')[-3000:]}")


@pytest.fixture
def stacks(envoy_image):
    """Starts compose projects for one test; takes every one down afterwards, pass or fail."""
    started: list[SingleStack] = []

    def start(files: list[Path]) -> SingleStack:
        stack = SingleStack(files)
        started.append(stack)
        stack.up()
        stack.wait_ready()
        return stack

    yield start
    for stack in started:
        stack.close()


def readme_demo(port: int) -> list:
    """The README's loop: 12 GETs of /api/links with x-api-key: demo."""
    return [http_get(port, "/api/links", {"x-api-key": "demo"}) for _ in range(12)]


# --- the compose file as the compose tool reads it (no engine needed) ----------------------------

@pytest.mark.skipif(COMPOSE is None, reason=NO_COMPOSE)
@pytest.mark.parametrize("profile", [[], ["--profile", "metrics"]], ids=["default", "metrics"])
def test_the_compose_tool_accepts_the_file(profile):
    run = subprocess.run([*COMPOSE, *profile, "--file", str(COMPOSE_FILE), "config"],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, ENVOY_HTTP_PORT="10000", ENVOY_ADMIN_PORT="9901"))
    assert run.returncode == 0, run.stderr
    services = yaml.safe_load(run.stdout)["services"]
    assert {"envoy", "upstream"} <= set(services)
    # docker compose v2 leaves out the services of inactive profiles; docker-compose 1.29 lists them.
    for name in ("prometheus", "grafana"):
        assert name in services if profile else services.get(name, {"profiles": ["metrics"]})["profiles"] == ["metrics"]


# --- running it ----------------------------------------------------------------------------------

def assert_readme_demo(responses: list, started: float) -> int:
    """The README's answers (10 x 200 counting down, then 429 with Retry-After and the JSON body);
    returns the Retry-After of the first 429."""
    assert [r.status for r in responses] == [200] * 10 + [429] * 2
    assert [r.header("x-ratelimit-remaining") for r in responses] == [str(n) for n in range(9, -1, -1)] + ["0", "0"]
    assert {r.header("x-ratelimit-limit") for r in responses} == {"10"}
    for r in responses:
        assert started <= int(r.header("x-ratelimit-reset")) <= time.time() + 64
    # Admitted requests reached the demo upstream by its service name.
    assert responses[0].json() == {"ok": True, "method": "GET", "path": "/api/links", "upstream": "demo"}
    # The 429: Retry-After and the default JSON body.
    refused = responses[10]
    retry_after = int(refused.header("retry-after"))
    assert 1 <= retry_after <= 63
    assert refused.header("content-type") == "application/json"
    body = refused.json()
    assert body["error"] == "too_many_requests"
    assert (body["policy"], body["limit"], body["window_seconds"]) == ("per_minute", 10, 60)
    assert body["retry_after"] == retry_after
    assert body["message"] == f"Rate limit exceeded: 10 requests per 1m. Retry in {retry_after} seconds."
    return retry_after


def test_compose_up_serves_the_readme_demo_and_down_leaves_nothing(stacks):
    stack = stacks([COMPOSE_FILE])  # the shipped file, unchanged
    started = time.time()
    retry_after = assert_readme_demo(readme_demo(stack.http_port), started)
    # The bulk rule: 3 per minute.
    bulk = [http_get(stack.http_port, "/api/links/bulk", {"x-api-key": "demo"}).status for _ in range(4)]
    assert bulk == [200, 200, 200, 429]

    # Envoy's logs, as `docker compose logs envoy` shows them: the filter loaded, one access-log
    # line per request, the refusal, no start-up chatter.
    deadline = time.monotonic() + 10
    while "GET /api/links/bulk 429" not in (logs := stack.logs("envoy")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "configuration loaded (3 rules)" in logs
    assert "GET /api/links 200 remaining=9 retry-after=-" in logs
    assert f"GET /api/links 429 remaining=0 retry-after={retry_after}" in logs
    assert "GET /api/links/bulk 429 remaining=0 retry-after=" in logs
    assert re.search(r"\[info\]\[wasm\] .*refused rule=api limit=per_minute client=[0-9a-f]{16} ", logs), logs
    assert "[info][main]" not in logs and "statically linked extensions" not in logs

    # The admin listener, published on the host's loopback: the filter's stats.
    assert admin_get(stack.admin_port, "/ready").strip() == "LIVE"
    deadline = time.monotonic() + 5
    while "wasmcustom.ratelimit.api.refused: 2" not in (stats := admin_get(stack.admin_port, "/stats?filter=wasmcustom")):
        assert time.monotonic() < deadline, stats  # each worker flushes its counts once a second
        time.sleep(0.2)
    assert "wasmcustom.ratelimit.api.allowed: 10" in stats

    before = stack.leftovers()
    assert len(before["containers"]) == 2 and len(before["networks"]) == 1, before
    stack.down()
    assert stack.leftovers() == {"containers": [], "networks": [], "volumes": []}


@pytest.mark.skipif(COMPOSE is None, reason=NO_COMPOSE)
def test_the_compose_tool_accepts_the_native_file():
    run = subprocess.run([*COMPOSE, "--file", str(NATIVE_COMPOSE_FILE), "config"],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, ENVOY_HTTP_PORT="10000", ENVOY_ADMIN_PORT="9901"))
    assert run.returncode == 0, run.stderr
    services = yaml.safe_load(run.stdout)["services"]
    assert set(services) == {"envoy", "upstream"}
    assert services["envoy"]["environment"] == {
        "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": "/usr/local/lib/envoy/dynamic_modules"}


@pytest.mark.skipif("native" not in HOSTS, reason="RATELIMIT_HOSTS leaves the native module out")
def test_native_compose_up_serves_the_readme_demo_and_down_leaves_nothing(stacks):
    # docker-compose.native.yml as shipped: the module mounted on the search path of the same
    # Envoy image, loaded by name; the same answers as the Wasm stack's.
    stack = stacks([NATIVE_COMPOSE_FILE])
    started = time.time()
    retry_after = assert_readme_demo(readme_demo(stack.http_port), started)

    deadline = time.monotonic() + 10
    line = f"GET /api/links 429 remaining=0 retry-after={retry_after}"
    while line not in (logs := stack.logs("envoy")) and time.monotonic() < deadline:
        time.sleep(0.2)
    # The module's ABI matched the image's Envoy, and it loaded the configuration.
    assert "[info][dynamic_modules] Dynamic module ABI version v0.2.0 matched" in logs
    assert "ratelimit: configuration loaded (3 rules, native module, ABI v0.2.0)" in logs
    assert "GET /api/links 200 remaining=9 retry-after=-" in logs and line in logs
    assert re.search(r"\[info\]\[dynamic_modules\] ratelimit: refused rule=api limit=per_minute "
                     r"client=[0-9a-f]{16} ", logs), logs
    assert "[info][main]" not in logs and "statically linked extensions" not in logs

    # The stats, under the module's metrics namespace.
    deadline = time.monotonic() + 5
    while "dynamicmodulescustom.ratelimit.api.refused: 2" not in (
            stats := admin_get(stack.admin_port, "/stats?filter=dynamicmodulescustom")):
        assert time.monotonic() < deadline, stats
        time.sleep(0.2)
    assert "dynamicmodulescustom.ratelimit.api.allowed: 10" in stats

    stack.down()
    assert stack.leftovers() == {"containers": [], "networks": [], "volumes": []}


@pytest.mark.skipif("native" not in HOSTS, reason="RATELIMIT_HOSTS leaves the native module out")
def test_an_image_that_ships_the_module_loads_it_by_name(envoy_image, tmp_path):
    # deploy/Dockerfile.native, built as its header says (a context holding only the module) on
    # the Envoy image the compose files name; then Envoy's validate mode in that image, with
    # docker-compose.native.yml's config (the module named, found on the search path the image sets).
    context = tmp_path / "context"
    context.mkdir()
    shutil.copy(ROOT / "target" / "filter" / "libenvoy_ratelimit.so", context)
    tag = f"envoy-ratelimit-native-e2e:{os.getpid()}{secrets.token_hex(3)}"
    build = subprocess.run(["docker", "build", "--quiet", "-f", str(ROOT / "deploy" / "Dockerfile.native"),
                            "-t", tag, str(context)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    try:
        env = subprocess.run(["docker", "image", "inspect", "--format", "{{json .Config.Env}}", tag],
                             capture_output=True, text=True, timeout=60, check=True)
        assert "ENVOY_DYNAMIC_MODULES_SEARCH_PATH=/usr/local/lib/envoy/dynamic_modules" in json.loads(env.stdout)
        config = ENVOY_DIR / "envoy.native.compose.yaml"
        run = subprocess.run(
            ["docker", "run", "--rm", "--network", "none", "--entrypoint", "/usr/local/bin/envoy",
             "--mount", f"type=bind,source={config},target=/etc/envoy/ratelimit.yaml,readonly",
             tag, "--mode", "validate", "-c", "/etc/envoy/ratelimit.yaml", "--disable-hot-restart"],
            capture_output=True, text=True, timeout=120)
        output = run.stdout + run.stderr
        assert run.returncode == 0, output[-3000:]
        assert "Dynamic module ABI version v0.2.0 matched" in output
        assert "ratelimit: configuration loaded (3 rules, native module, ABI v0.2.0)" in output
    finally:
        subprocess.run(["docker", "image", "rm", tag], capture_output=True, timeout=120)


SHORT_WINDOW = "3s"


def shortened_config() -> str:
    """envoy.compose.yaml with its one-minute windows cut to 3 s, and nothing else changed."""
    text = COMPOSE_CONFIG.read_text()
    assert text.count('"window": "1m"') == 2, "the bulk and api rules' per-minute limits"
    short = text.replace('"window": "1m"', f'"window": "{SHORT_WINDOW}"')

    def filter_config(doc: str):
        config = yaml.safe_load(doc)
        hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        wasm = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm")
        return config, json.loads(wasm["typed_config"]["config"]["configuration"]["value"])

    (full, rules), (short_full, short_rules) = filter_config(text), filter_config(short)
    changed = [(r["name"], lim["name"]) for r in short_rules["rules"] for lim in r.get("limits", [])
               if lim["window"] == SHORT_WINDOW]
    assert changed == [("bulk", "per_minute"), ("api", "per_minute")]
    for rule in short_rules["rules"]:
        for limit in rule.get("limits", []):
            if limit["window"] == SHORT_WINDOW:
                limit["window"] = "1m"
    assert short_rules == rules
    hcm = ["static_resources", "listeners", 0, "filter_chains", 0, "filters", 0, "typed_config"]
    for doc in (full, short_full):  # everything but the filter configuration is the same
        node = doc
        for step in hcm:
            node = node[step]
        for f in node["http_filters"]:
            if f["name"] == "envoy.filters.http.wasm":
                f["typed_config"]["config"]["configuration"]["value"] = None
    assert short_full == full
    return short


def test_retry_after_is_honoured(stacks, tmp_path):
    # The shipped config's windows are a minute: waiting out a Retry-After would take ~60 s. An
    # override file mounts the same config with the per-minute windows cut to 3 s (checked above:
    # nothing else differs), so the wait is ~3 s. The stack is otherwise the shipped one.
    config = tmp_path / "envoy.compose.yaml"
    config.write_text(shortened_config())
    override = tmp_path / "short-windows.yml"
    override.write_text(yaml.safe_dump({"services": {"envoy": {"volumes": [{
        "type": "bind", "source": str(config),
        "target": "/srv/ratelimit/envoy/envoy.compose.yaml", "read_only": True}]}}}))
    stack = stacks([COMPOSE_FILE, override])
    mounts = yaml.safe_load(stack.compose("config").stdout)["services"]["envoy"]["volumes"]
    assert sorted(m["source"] for m in mounts) == sorted([str(config), str(ROOT / "target/filter/envoy_ratelimit_wasm.wasm")])

    key = {"x-api-key": "retry-after"}
    assert [http_get(stack.http_port, "/api/links/bulk", key).status for _ in range(3)] == [200, 200, 200]
    sent = time.monotonic()
    refused = http_get(stack.http_port, "/api/links/bulk", key)
    received = time.monotonic()
    assert refused.status == 429
    retry_after = int(refused.header("retry-after"))
    # 3 s window in sub-windows of 0.15 s: quota returns within 3.15 s, rounded up.
    assert 1 <= retry_after <= 4
    assert refused.json()["retry_after"] == retry_after
    # Not too long either: a second before Retry-After runs out, the request is still refused
    # (a refused request consumes nothing, so asking again changes nothing).
    early = sent + retry_after - 1.3
    if early > time.monotonic():
        time.sleep(early - time.monotonic())
        assert http_get(stack.http_port, "/api/links/bulk", key).status == 429
    time.sleep(max(0.0, received + retry_after - time.monotonic()))
    again = http_get(stack.http_port, "/api/links/bulk", key)
    assert again.status == 200, (again.status, again.headers)

    stack.down()
    assert stack.leftovers() == {"containers": [], "networks": [], "volumes": []}
