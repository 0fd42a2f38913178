"""`make run`'s console as a newcomer sees it: envoy/run.py with envoy/envoy.yaml (ports swapped to
free ones), its output read as a person would read it."""
import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from harness import ROOT, envoy_binary, free_port, http_get, render_config

RUN = ROOT / "envoy" / "run.py"
KEY = "console-key-7f3a"  # never to be printed
QUERY_SECRET = "query-secret-91c2"


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextlib.contextmanager
def console(tmp_path, config: dict, *extra: str):
    """run.py with `config` (ports swapped) as a person starts it; on leaving, stopped as Ctrl-C
    would, and checked to leave nothing running. Yields the output file."""
    config_path = tmp_path / "envoy.yaml"
    config_path.write_text(yaml.safe_dump(config))
    output = tmp_path / "console.txt"
    with open(output, "wb") as out:
        run = subprocess.Popen(
            [sys.executable, str(RUN), "--envoy", envoy_binary(), "--config", str(config_path), *extra],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )
    children: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while "is ready" not in output.read_text() and time.monotonic() < deadline:
            assert run.poll() is None, output.read_text()
            time.sleep(0.1)
        children = children_of(run.pid)
        assert len(children) == 2, "the demo upstream and Envoy"
        yield output
        time.sleep(1.0)  # the access log is written out every 100 ms
    finally:
        # As Ctrl-C would: run.py stops Envoy and the upstream by their process ids.
        # run.py gives each of its two processes 10 s to stop before killing it.
        stopping, exited_by_itself, killed = time.monotonic(), run.poll() is not None, False
        if not exited_by_itself:
            run.send_signal(signal.SIGINT)
            try:
                run.wait(30)
            except subprocess.TimeoutExpired:
                run.kill()
                run.wait()
                killed = True
        took = time.monotonic() - stopping
        survivors = [pid for pid in children if alive(pid)]
        for pid in survivors:  # started by this test (through run.py): stop them anyway
            os.kill(pid, signal.SIGKILL)
    assert not survivors, (
        f"run.py left {survivors} running (exited by itself: {exited_by_itself}, killed after "
        f"{took:.1f} s: {killed}, exit code {run.returncode}); its output ends with:\n"
        + output.read_text()[-2000:]
    )


def test_make_run_console_shows_where_to_curl_then_a_line_per_request(tmp_path):
    listen, admin, upstream = free_port(), free_port(), free_port()
    with console(tmp_path, render_config(None, upstream, listen, admin)) as output:
        statuses = [http_get(listen, "/api/links", {"x-api-key": KEY}).status for _ in range(12)]
        assert statuses == [200] * 10 + [429] * 2
        assert http_get(listen, "/healthz").status == 200
        assert http_get(listen, f"/api/links/bulk?api_key={QUERY_SECRET}", {"x-api-key": KEY}).status == 200

    text = output.read_text()
    before, banner_and_after = text.split("\nEnvoy with the rate-limit filter is ready", 1)
    # Before the banner: no start-up chatter (Envoy's info level prints ~240 lines of extension
    # lists), only the filter's own lines.
    assert "[info][main]" not in before and "envoy.filters.http:" not in before, before[:3000]
    assert len(before.strip().splitlines()) <= 8, before
    assert all("[wasm]" in line for line in before.strip().splitlines()), before
    assert "configuration loaded (3 rules)" in before
    banner, after = banner_and_after.split("Ctrl-C stops.\n", 1)
    assert f"http://127.0.0.1:{listen}" in banner
    assert f"curl -i -H 'x-api-key: demo' http://127.0.0.1:{listen}/api/links" in banner
    assert "api: prefix /api, 10 requests per 1m, 1000 requests per 1d, per header x-api-key else client_ip" in banner

    # After: one access-log line per request, in order, and the filter's refusal line(s).
    access = [line for line in after.splitlines() if line and not line.startswith("[")]
    expected = [f"GET /api/links 200 remaining={n} retry-after=-" for n in range(9, -1, -1)]
    assert access[:10] == expected, after
    refused = [re.fullmatch(r"GET /api/links 429 remaining=0 retry-after=(\d+)", line) for line in access[10:12]]
    assert all(refused) and all(1 <= int(m.group(1)) <= 63 for m in refused), access
    assert access[12:] == ["GET /healthz 200 remaining=- retry-after=-", "GET /api/links/bulk 200 remaining=2 retry-after=-"]
    logs = [line for line in after.splitlines() if line.startswith("[")]
    assert any(re.search(r"\]\[info\]\[wasm\] .*refused rule=api limit=per_minute client=[0-9a-f]{16} ", line)
               for line in logs), after
    # Secrets stay out of the console: the key, and a key in the query string.
    assert KEY not in text and QUERY_SECRET not in text


def test_make_run_example_llm_serves_token_budgets(tmp_path):
    """`make run EXAMPLE=llm`: its banner, a chat completion's tokens in the access log, and the
    refusal once the minute's 1,000 tokens are used."""
    listen, admin, upstream = free_port(), free_port(), free_port()
    config = render_config(None, upstream, listen, admin, envoy_yaml=ROOT / "envoy" / "examples" / "llm" / "envoy.yaml")
    with console(tmp_path, config, "--example", "llm") as output:
        statuses = []
        for tokens in (600, 350, 100):
            conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=10)
            conn.request("POST", "/v1/chat/completions", body=json.dumps({"model": "demo-model", "messages": []}),
                         headers={"authorization": "Bearer sk-console", "x-demo-tokens": str(tokens)})
            r = conn.getresponse()
            statuses.append((r.status, json.loads(r.read())))
            conn.close()
            time.sleep(0.2)
    assert [s for s, _ in statuses] == [200, 200, 429], statuses
    assert statuses[2][1]["error"]["type"] == "tokens"
    text = output.read_text()
    before, banner = text.split("\nEnvoy with the rate-limit filter is ready", 1)
    assert "work-in-progress" not in before, before[:2000]
    assert "llm: prefix /v1/, 1000 tokens per 1m, 20 requests per 1m, per bearer" in banner
    assert f"curl -i http://127.0.0.1:{listen}/v1/chat/completions" in banner
    access = [line for line in banner.split("Ctrl-C stops.\n", 1)[1].splitlines() if line.startswith("POST")]
    # The binding limit first (the least left: 19 requests), then the token budget.
    assert access[0].startswith("POST /v1/chat/completions 200 tokens=600 ratelimit=\"requests\";r=19;"), access
    assert "\"tokens\";r=900;" in access[0], access
    assert access[2].startswith("POST /v1/chat/completions 429 tokens=- "), access
    assert "sk-console" not in text
