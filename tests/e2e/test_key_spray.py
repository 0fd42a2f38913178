"""Clients spraying new API keys, in a real Envoy: nobody locked out, nobody reset, memory flat.

wrk sends requests that each carry a never-seen key, at least 20 times `store.max_clients` of
them, against a rule with a short limit and a "day" limit that outlives the test. Meanwhile and
afterwards, new legitimate clients arrive (three requests each) and must be admitted; a victim
that reached its day limit before the spray must stay refused, for its own count; a client
sending as fast as it can through the spray must get at most its day's quota and at least 90% of
it (what the page's summary inherits under a spray this large costs it a little); Envoy's
resident memory must stay flat once the store is full; and throughput must hold. SPRAY_SECONDS
(default 4) sets the length of each of the two spray phases.

A second test runs 10,000 keys in rotation against `max_clients` 10,000: capacity sized by what
is active refuses nobody.
"""
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness import prometheus

SPRAY_SECONDS = int(os.environ.get("SPRAY_SECONDS", "4"))
MAX_CLIENTS = 512  # 32 pages of 16
SHORT, DAY = 200, 200  # per second, per day
# Envoy answers directly (no upstream) so the spray measures Envoy and the filter, not the demo,
# and without envoy.yaml's access log (a line per request, for people watching `make run`).
DIRECT = {"route_config": {"name": "direct", "virtual_hosts": [{
    "name": "all", "domains": ["*"],
    "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}],
}]}, "access_log": []}
# `id` is a global that setup() gives each thread (a file-level local would shadow it, and every
# thread would send the same keys).
LUA = """
local counter = 0
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
function init(args)
  prefix = args[1] or "spray"
end
request = function()
  counter = counter + 1
  return wrk.format("GET", "/api/x", {["x-api-key"] = prefix .. "-" .. id .. "-" .. counter})
end
"""
ROTATE_LUA = Path(__file__).resolve().parents[2] / "bench" / "rotate_keys.lua"


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def wrk(envoy, seconds, lua_path, *args, env=None):
    run = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "--timeout", "5s", "-s", str(lua_path),
         f"http://127.0.0.1:{envoy.listen_port}", "--", *args],
        capture_output=True, text=True, timeout=seconds + 60, env={**os.environ, **(env or {})},
    )
    assert run.returncode == 0, run.stderr
    requests = int(re.search(r"(\d+) requests in", run.stdout).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", run.stdout).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", run.stdout)
    # rotate_keys.lua: where its first thread stopped, for the next run to go on from
    walked = re.search(r"bench_keys next (\d+)", run.stdout)
    return requests, rps, int(non_2xx.group(1)) if non_2xx else 0, int(walked.group(1)) if walked else None


def error_of(response):
    return response.json().get("error") if response.status != 200 else None


class Newcomers(threading.Thread):
    """New legitimate clients, one after another, three requests each on one connection."""

    def __init__(self, envoy, prefix):
        super().__init__()
        self.envoy, self.prefix = envoy, prefix
        self.stop = threading.Event()
        self.clients = []  # per client: the statuses of its three requests

    def run(self):
        conn = self.envoy.connection()
        while not self.stop.is_set():
            key = {"x-api-key": f"{self.prefix}-{len(self.clients)}"}
            self.clients.append([self.envoy.request("/api/x", key, conn=conn).status for _ in range(3)])
            time.sleep(0.01)
        conn.close()

    def first_admitted(self):
        return sum(1 for c in self.clients if c[0] == 200), len(self.clients)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is installed by `make setup`")
def test_a_key_spray_locks_nobody_out_resets_nobody_and_keeps_memory_flat(start_envoy, tmp_path):
    config = {
        "store": {"max_clients": MAX_CLIENTS},
        "rules": [{"name": "api", "key": [{"header": "x-api-key"}],
                   "limits": [{"name": "short", "requests": SHORT, "window": "1s"},
                              {"name": "day", "requests": DAY, "window": "1d"}]}],
    }
    envoy = start_envoy(config, concurrency=2, hcm_overrides=DIRECT)
    lua = tmp_path / "spray.lua"
    lua.write_text(LUA)

    # The victim reaches its day limit before the spray.
    victim = {"x-api-key": "victim"}
    conn = envoy.connection()
    victim_admitted, deadline = 0, time.monotonic() + 10
    while victim_admitted < DAY and time.monotonic() < deadline:
        victim_admitted += envoy.request("/api/x", victim, conn=conn).status == 200
    assert victim_admitted == DAY
    assert error_of(envoy.request("/api/x", victim, conn=conn)) == "too_many_requests"

    stop = threading.Event()
    steady, victim_during, samples = [], [], []  # (time, status); (time, error); (s, RSS KiB)
    t0 = time.monotonic()

    def steady_client():
        c = envoy.connection()
        while not stop.is_set():
            steady.append((time.monotonic(), envoy.request("/api/x", {"x-api-key": "steady"}, conn=c).status))
        c.close()

    def victim_client():
        c = envoy.connection()
        while not stop.is_set():
            victim_during.append(error_of(envoy.request("/api/x", victim, conn=c)))
            time.sleep(0.05)
        c.close()

    def sampler():
        while not stop.is_set():
            samples.append((time.monotonic() - t0, rss_kb(envoy.proc.pid)))
            time.sleep(0.25)

    during = Newcomers(envoy, "during")
    threads = [threading.Thread(target=f) for f in (steady_client, victim_client, sampler)] + [during]
    for t in threads:
        t.start()
    try:
        rss_before = rss_kb(envoy.proc.pid)
        first_n, first_rps, *_ = wrk(envoy, SPRAY_SECONDS, lua, "a")
        rss_middle = rss_kb(envoy.proc.pid)
        second_n, second_rps, *_ = wrk(envoy, SPRAY_SECONDS, lua, "b")
        rss_after = rss_kb(envoy.proc.pid)
    finally:
        stop.set()
        during.stop.set()
        for t in threads:
            t.join()
    after = Newcomers(envoy, "after")
    after.start()
    time.sleep(1.5)
    after.stop.set()
    after.join()
    victim_after = error_of(envoy.request("/api/x", victim, conn=conn))
    conn.close()
    stats = prometheus(envoy)

    sprayed = first_n + second_n
    print(f"\nspray: {sprayed} requests with new keys = {sprayed / MAX_CLIENTS:.0f}x max_clients "
          f"({first_rps:.0f} then {second_rps:.0f} req/s)")
    print(f"RSS KiB: before {rss_before}, after phase 1 {rss_middle}, after phase 2 {rss_after}")
    print("RSS curve (s, KiB): " + ", ".join(f"{t:.1f}:{kb}" for t, kb in samples[:: max(1, len(samples) // 20)]))
    print(f"stats: {stats}")
    for name, group in (("during", during), ("after", after)):
        admitted, total = group.first_admitted()
        all_admitted = sum(c.count(200) for c in group.clients)
        print(f"new clients {name} the spray: {total}, first request admitted {admitted} "
              f"({100 * admitted / total:.2f}%), all requests admitted {all_admitted} of {3 * total}")
    admitted = [t for t, s in steady if s == 200]
    print(f"steady client: {len(steady)} requests, {len(admitted)} admitted")
    print(f"victim during the spray: {len(victim_during)} requests, answers {set(victim_during)}")

    assert sprayed >= 20 * MAX_CLIENTS, "a spray of at least 20x max_clients"
    # Nobody locked out: new clients' first requests are admitted, during and after the spray.
    for name, group in (("during", during), ("after", after)):
        admitted_first, total = group.first_admitted()
        assert total >= 20, (name, total)
        assert admitted_first >= 0.99 * total, (name, admitted_first, total)
    # Nobody reset: the victim stays refused, for its own count (an ordinary refusal).
    assert set(victim_during) == {"too_many_requests"}, set(victim_during)
    assert victim_after == "too_many_requests"
    # No over-admission: the steady client gets at most its day's quota (and most of it), never
    # more than SHORT within a second (client-side times, so allow 50 ms of latency jitter).
    assert len(steady) > DAY, "it sent more than its quota"
    assert 0.9 * DAY <= len(admitted) <= DAY, len(admitted)
    for i, start in enumerate(admitted):
        assert sum(1 for t in admitted[i:] if t <= start + 1 - 0.05) <= SHORT
    # Memory is bounded by the store's capacity, not by the number of keys seen.
    assert stats["ratelimit_api_clients_tracked"] <= MAX_CLIENTS
    assert stats["ratelimit_api_door_admitted"] > 10 * MAX_CLIENTS, "first requests take no slot"
    assert rss_after - rss_middle < 8 * 1024, f"RSS grew {rss_after - rss_middle} KiB in phase 2"
    # Throughput holds (the margin absorbs a noisy shared machine).
    assert second_rps > 0.5 * first_rps, (first_rps, second_rps)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is installed by `make setup`")
def test_as_many_active_clients_as_max_clients_are_never_refused(start_envoy):
    # What the README promises, as the simulator checks it: with as many active clients as
    # max_clients, clients under their limits are not refused, though pages overflow and their
    # clients share the summary. "Under" with a margin (the simulator: each client at 30 % of
    # its limit): a client near its limit in an overflowing page can meet an honest capacity
    # refusal (seen with 3-second rounds on a calm machine: 15 of 186,996 requests, every key at
    # 93 % of its limit). So wrk runs 1-second rounds, and the test checks that premise instead
    # of assuming it.
    keys, limit = 10_000, 20
    config = {
        "store": {"max_clients": keys},
        "rules": [{"name": "api", "key": [{"header": "x-api-key"}],
                   "limits": [{"requests": limit, "window": "1m"}]}],
    }
    envoy = start_envoy(config, concurrency=2, hcm_overrides=DIRECT)
    # Every key at least twice (on a busy machine wrk may need more than one round).
    # Each round goes on with the walk over the keys where the last one stopped, so that every key
    # gets its share (the average below is then every key's count, within a request or two).
    n = non_2xx = walked = 0
    for _ in range(10):
        env = {"BENCH_KEYS": str(keys), "BENCH_PATH": "/api/x", "BENCH_START": str(walked)}
        more, rps, refused, walked = wrk(envoy, 1, ROTATE_LUA, env=env)
        n, non_2xx = n + more, non_2xx + refused
        if n >= 2 * keys:
            break
    stats = prometheus(envoy)
    print(f"\n{keys} rotating keys, max_clients {keys}: {n} requests ({rps:.0f} req/s, "
          f"{n / keys:.1f} per key), {non_2xx} refused; stats {stats}")
    assert n / keys <= 0.5 * limit, "the premise: every client well under its limit"
    assert n >= 2 * keys, "every key came back"
    assert non_2xx == 0
    assert stats["ratelimit_api_refused"] == 0 and stats["ratelimit_api_capacity_refused"] == 0
    assert stats["ratelimit_api_allowed"] >= n  # wrk does not count the requests in flight at its end
