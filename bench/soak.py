"""The soak: a real Envoy with the filter for a set time under mixed traffic and configuration
reloads, then an exact check of every admission from Envoy's access log (bench/soak_oracle.py),
Envoy's resident memory over time, and every status. `make soak` (SOAK_SECONDS, HOST=wasm|native).

Traffic (Python threads, keep-alive connections each renewed every 50 to 500 requests):
- hot: 3 keys hammered far beyond their limit (`hot`: 40 or 60 per 2 s, alternating by reload);
- users: 1,000 keys, skewed (a few keys busy, most quiet), 5 per 5 s and 30 per minute, with
  `store.max_clients` 256 so that pages evict and the summary counts; 2% of requests go to an
  exempt /healthz;
- multi: 20 keys with costs 1 to 3 (`x-cost`), 20 per second and 100 per 10 s;
- spray (in the spray phases only): every request a never-seen key, on the users' rule.
Every `--reload-seconds` the listener is republished by LDS (a watched directory) with the next
configuration version: the hot limit alternates 40/60 and every limit's message names the
version (it is in each refusal's body); the store and the windows stay, so counts must survive.

Phases: warm-up (the first 20%), then steady, spray, steady, spray (20% each). Exit status 1 on
any breach: an admission over a limit, a 5xx, a reload rejected or never applied, the access log
missing requests the clients saw answered, or Envoy's RSS growing more than --rss-growth-pct
from the end of warm-up to the highest sample of the run's second half.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))
from harness import LdsEnvoy, free_port, prometheus  # noqa: E402
from soak_oracle import Admission, check, decision_interval  # noqa: E402

KEY = [{"header": "x-api-key"}]
HOT_LIMITS = (40, 60)
PHASES = [("warm-up", 0.0, 0.2, False), ("steady-1", 0.2, 0.4, False), ("spray-1", 0.4, 0.6, True),
          ("steady-2", 0.6, 0.8, False), ("spray-2", 0.8, 1.0, True)]
# One line per request: the oracle's truth. START_TIME in µs, DURATION in whole ms.
LOG_FORMAT = ("%START_TIME(%s.%6f)% %DURATION% %RESPONSE_CODE% %REQ(:PATH)% %REQ(X-API-KEY)% "
              "%REQ(X-COST)% %RESP(X-RATELIMIT-LIMIT)% %RESPONSE_FLAGS%\n")
LIMITS = {  # (rule, limit name) -> (window ms, requests; None: from the response's header)
    ("hot", "per_2s"): (2000, None),
    ("users", "per_5s"): (5000, 5),
    ("users", "per_minute"): (60000, 30),
    ("multi", "per_second"): (1000, 20),
    ("multi", "per_10s"): (10000, 100),
}


def filter_config(version: int, fresh_counters: bool = False) -> dict:
    """Configuration `version`. `fresh_counters` (a deliberately broken setup, to show the
    oracle fails) moves the store to a new key prefix at every version: counts lost at each
    reload."""
    def limit(name, window, requests):
        return {"name": name, "requests": requests, "window": window, "message": f"config v{version}"}

    store = {"max_clients": 256}
    if fresh_counters:
        store["key_prefix"] = f"soak{version}"
    return {
        "store": store,
        "response": {"body": {"error": "too_many_requests", "message": "{{message}}", "limit": "{{limit}}",
                              "policy": "{{policy}}", "retry_after": "{{retry_after}}"}},
        "rules": [
            {"name": "health", "match": {"path": {"exact": "/healthz"}}, "exempt": True},
            {"name": "hot", "match": {"path": {"prefix": "/hot"}}, "key": KEY,
             "limits": [limit("per_2s", "2s", HOT_LIMITS[version % 2])]},
            {"name": "users", "match": {"path": {"prefix": "/users"}}, "key": KEY,
             "limits": [limit("per_5s", "5s", 5), limit("per_minute", "1m", 30)]},
            {"name": "multi", "match": {"path": {"prefix": "/multi"}}, "key": KEY,
             "cost": {"header": "x-cost", "default": 1, "max": 5},
             "limits": [limit("per_second", "1s", 20), limit("per_10s", "10s", 100)]},
        ],
    }


def hcm_overrides(access_log: Path) -> dict:
    """Envoy answers every request itself (no upstream to measure) and logs each to a file."""
    return {
        "route_config": {"name": "direct", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}],
        }]},
        "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(access_log), "log_format": {"text_format_source": {"inline_string": LOG_FORMAT}}}}],
    }


class Clock:
    """The run's phases, by wall-clock time from the start."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.t0 = seconds, time.time()
        self.stopped = threading.Event()

    def phase(self, t: float | None = None) -> tuple[str, bool] | None:
        frac = ((time.time() if t is None else t) - self.t0) / self.seconds
        for name, lo, hi, spray in PHASES:
            if lo <= frac < hi:
                return name, spray
        return None

    def phase_bounds(self, name: str) -> tuple[float, float]:
        _, lo, hi, _ = next(p for p in PHASES if p[0] == name)
        return self.t0 + lo * self.seconds, self.t0 + hi * self.seconds


class Client(threading.Thread):
    """One traffic source: `pick()` gives (path, headers) for its next request, or None to idle."""

    def __init__(self, kind: str, name: str, port: int, clock: Clock, pick, seed: int) -> None:
        super().__init__(name=name, daemon=True)
        self.kind = kind
        self.port, self.clock, self.pick, self.rng = port, clock, pick, random.Random(seed)
        self.statuses: Counter = Counter()  # (source, status, error field of a refusal) -> count
        self.versions: Counter = Counter()  # configuration versions named by refusals
        self.errors: Counter = Counter()

    def run(self) -> None:
        try:
            self.send_until_stopped()
        except Exception as e:  # noqa: BLE001 (a dead source would silently thin the traffic)
            self.errors[f"crashed: {e!r}"] += 1

    def send_until_stopped(self) -> None:
        conn, left = None, 0
        while not self.clock.stopped.is_set():
            phase = self.clock.phase()
            request = self.pick(self.rng, phase) if phase else None
            if request is None:
                time.sleep(0.05)
                continue
            if conn is None or left == 0:
                if conn is not None:
                    conn.close()
                conn, left = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10), self.rng.randint(50, 500)
            left -= 1
            try:
                conn.request("GET", request[0], headers=request[1])
                r = conn.getresponse()
                self.record(r.status, r.read())
            except (OSError, http.client.HTTPException) as e:
                self.errors[type(e).__name__] += 1
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def record(self, status: int, body: bytes) -> None:
        error = None
        if status == 429:
            try:
                doc = json.loads(body)
            except ValueError:
                doc = {"error": "(not JSON)"}
            error = doc.get("error")
            match = re.fullmatch(r"config v(\d+)", str(doc.get("message", "")))
            if match:
                self.versions[int(match.group(1))] += 1
        self.statuses[(self.kind, status, error)] += 1


def traffic(port: int, clock: Clock) -> list[Client]:
    users = [f"user-{i}" for i in range(1000)]
    sprayed = iter(range(10**12))

    def hot(rng, phase):
        return "/hot", {"x-api-key": f"hot-{rng.randrange(3)}"}

    def user(rng, phase):
        if rng.random() < 0.02:
            return "/healthz", {}
        # skewed: index = 1000 * u^3, so the first keys are busy and most are quiet
        return "/users/x", {"x-api-key": users[int(len(users) * rng.random() ** 3)]}

    def multi(rng, phase):
        return "/multi", {"x-api-key": f"multi-{rng.randrange(20)}", "x-cost": str(rng.randint(1, 3))}

    def spray(rng, phase):
        return ("/users/x", {"x-api-key": f"spray-{next(sprayed)}"}) if phase[1] else None

    sources = [("hot", hot, 4), ("users", user, 4), ("multi", multi, 2), ("spray", spray, 2)]
    return [Client(name, f"{name}-{i}", port, clock, pick, seed=f"{name}-{i}")
            for name, pick, count in sources for i in range(count)]


class Reloader(threading.Thread):
    """Publishes the next configuration version every `period` seconds, by LDS."""

    def __init__(self, envoy: LdsEnvoy, clock: Clock, period: float, fresh_counters: bool) -> None:
        super().__init__(name="reloader", daemon=True)
        self.envoy, self.clock, self.period, self.fresh = envoy, clock, period, fresh_counters
        self.version = 0
        self.published: list[tuple[float, int]] = []

    def run(self) -> None:
        while not self.clock.stopped.wait(self.period):
            self.version += 1
            self.envoy.publish(filter_config(self.version, self.fresh))
            self.published.append((time.time(), self.version))


class RssSampler(threading.Thread):
    """Envoy's resident memory (VmRSS of /proc/<pid>/status, KiB) every second."""

    def __init__(self, pid: int, clock: Clock) -> None:
        super().__init__(name="rss", daemon=True)
        self.pid, self.clock = pid, clock
        self.samples: list[tuple[float, int]] = []

    def sample(self) -> None:
        with open(f"/proc/{self.pid}/status") as f:
            self.samples.append((time.time(), int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))))

    def run(self) -> None:
        while not self.clock.stopped.wait(1.0):
            self.sample()

    def growth(self, warmup_end: float, half: float) -> dict:
        """RSS at the end of warm-up (the last sample before it ends), the highest sample of the
        run's second half, and the growth between them."""
        base = [kib for t, kib in self.samples if t <= warmup_end][-1]
        peak = max(kib for t, kib in self.samples if t >= half)
        return {"warmup_end_kib": base, "second_half_max_kib": peak, "growth_kib": peak - base,
                "growth_pct": 100.0 * (peak - base) / base, "first_kib": self.samples[0][1],
                "last_kib": self.samples[-1][1], "samples": len(self.samples)}


def parse_log(path: Path) -> list[tuple]:
    """(start s, duration ms, status, path, key, cost, limit header, flags) per line."""
    rows = []
    for line in path.read_text().splitlines():
        start, duration, status, req_path, key, cost, limit, flags = line.split(" ")
        rows.append((float(start), int(duration), int(status), req_path, key,
                     int(cost) if cost != "-" else 1, int(limit) if limit != "-" else None, flags))
    return rows


def rule_of(path: str) -> str | None:
    for prefix, rule in (("/hot", "hot"), ("/users", "users"), ("/multi", "multi")):
        if path.startswith(prefix):
            return rule
    return None


def admissions(rows: list[tuple]) -> tuple[dict, list[str]]:
    """The oracle's input: every 200 of a limited route, per (rule, key, limit name); and the
    lines that contradict the configuration (a hot answer without a limit header it could have)."""
    found, odd = defaultdict(list), []
    for start, duration, status, path, key, cost, limit_header, _ in rows:
        rule = rule_of(path)
        if status != 200 or rule is None:
            continue
        lo, hi = decision_interval(start, duration)
        for (r, name), (_, requests) in LIMITS.items():
            if r != rule:
                continue
            if requests is None:
                if limit_header not in HOT_LIMITS:
                    odd.append(f"{path} {key}: X-RateLimit-Limit {limit_header}")
                    continue
                requests = limit_header
            found[(rule, key, name)].append(Admission(lo, hi, cost, requests))
    return found, odd


def traffic_class(path: str, key: str) -> str:
    if path == "/healthz":
        return "health"
    for prefix in ("spray", "probe", "hot", "multi", "user"):
        if key.startswith(prefix):
            return prefix
    return "other"


def phase_report(rows: list[tuple], clock: Clock) -> list[dict]:
    """Per phase, from the access log: requests/s, and statuses per traffic class."""
    by_phase = defaultdict(lambda: defaultdict(Counter))
    for start, _, status, path, key, *_ in rows:
        phase = clock.phase(start)
        by_phase[phase[0] if phase else "after"][traffic_class(path, key)][status] += 1
    report = []
    for name, *_ in PHASES + [("after",)]:
        classes = by_phase.get(name, {})
        total = sum(sum(c.values()) for c in classes.values())
        lo, hi = clock.phase_bounds(name) if name != "after" else (0, 0)
        report.append({"phase": name, "requests": total, "rps": total / (hi - lo) if hi > lo else None,
                       "statuses": {cls: dict(sorted(c.items())) for cls, c in sorted(classes.items())}})
    return report


def hot_rate(found: dict, clock: Clock) -> float:
    """Admissions per hot key per 2 s after warm-up, on average (the limit is 40 or 60)."""
    after = clock.phase_bounds("steady-1")[0] * 1000
    keys = [k for k in found if k[0] == "hot"]
    admitted = sum(sum(a.cost for a in found[k] if a.lo_ms >= after) for k in keys)
    seconds = clock.seconds * (1 - PHASES[0][2])
    return admitted / max(len(keys), 1) / (seconds / 2)


def final_version(envoy: LdsEnvoy, version: int, timeout: float = 20) -> int | None:
    """The configuration version a fresh connection is refused by, once it is `version` (or the
    last one seen after `timeout`): the sixth request of a new key in 5 s is refused with the
    limit's message, which names the version."""
    deadline, n, seen = time.monotonic() + timeout, 0, None
    while time.monotonic() < deadline:
        n += 1
        conn = http.client.HTTPConnection("127.0.0.1", envoy.listen_port, timeout=10)
        try:
            for _ in range(6):
                conn.request("GET", "/users/x", headers={"x-api-key": f"probe-{n}"})
                r = conn.getresponse()
                body = r.read()
            # (a capacity refusal, which names no version, sends the probe to another key)
            match = re.fullmatch(r"config v(\d+)", json.loads(body).get("message", "")) if r.status == 429 else None
            if match:
                seen = int(match.group(1))
                if seen == version:
                    return seen
        finally:
            conn.close()
        time.sleep(0.2)
    return seen


def wait_flushed(path: Path, at_least: int, timeout: float = 15) -> None:
    """Until the access log holds `at_least` lines and has stopped growing (Envoy flushes it every
    100 ms)."""
    deadline, last = time.monotonic() + timeout, -1
    while time.monotonic() < deadline:
        lines = path.read_bytes().count(b"\n") if path.exists() else 0
        if lines >= at_least and lines == last:
            return
        last = lines
        time.sleep(0.5)


def drive(envoy: LdsEnvoy, args) -> dict:
    """Runs the traffic, the reloads and the memory samples for the run's length; returns what
    the clients and Envoy said (Envoy still running)."""
    load_before = os.getloadavg()
    clock = Clock(args.seconds)
    clients = traffic(envoy.listen_port, clock)
    rss = RssSampler(envoy.proc.pid, clock)
    rss.sample()
    reloader = Reloader(envoy, clock, args.reload_seconds, args.fresh_counters)
    for thread in [*clients, rss, reloader]:
        thread.start()
    try:
        while time.time() < clock.t0 + args.seconds:
            if envoy.proc.poll() is not None:
                raise RuntimeError(f"Envoy exited with {envoy.proc.returncode} during the run")
            time.sleep(0.5)
    finally:
        clock.stopped.set()
        for thread in [*clients, rss, reloader]:
            thread.join()
    rss.sample()
    statuses, versions, errors = Counter(), Counter(), Counter()
    for c in clients:
        statuses.update(c.statuses)
        versions.update(c.versions)
        errors.update(c.errors)
    last = reloader.version
    return {"clock": clock, "rss": rss, "statuses": statuses, "versions": versions, "errors": errors,
            "published": last, "final_version": final_version(envoy, last),
            "lds_success": envoy.stat("listener_manager.lds.update_success"),
            "lds_rejected": envoy.stat("listener_manager.lds.update_rejected"),
            "filter_stats": prometheus(envoy), "load": (load_before, os.getloadavg())}


def analyse(run: dict, rows: list[tuple], args) -> dict:
    clock = run["clock"]
    found, odd = admissions(rows)
    windows = {k: w for k, (w, _) in LIMITS.items()}
    breaches, checked = check(found, windows)
    log_statuses = Counter(r[2] for r in rows)
    seen = Counter()
    for (_, status, _), n in run["statuses"].items():
        seen[status] += n
    missing = {s: n - log_statuses[s] for s, n in seen.items() if log_statuses[s] < n}
    t0 = clock.t0
    memory = run["rss"].growth(t0 + clock.seconds * PHASES[0][2], t0 + clock.seconds / 2)
    fivexx = sum(n for s, n in log_statuses.items() if 500 <= s < 600)
    return {
        "host": args.host, "seconds": args.seconds, "requests": len(rows), "log_statuses": dict(log_statuses),
        "client_statuses": {f"{k} {s} {e or ''}".strip(): n for (k, s, e), n in sorted(run["statuses"].items(), key=str)},
        "client_errors": dict(run["errors"]), "admissions_checked": checked,
        "keys_checked": len({(r, k) for r, k, _ in found}), "breaches": [str(b) for b in breaches[:20]],
        "breach_count": len(breaches), "keys_breached": len({(b.rule, b.key) for b in breaches}), "odd_lines": odd[:10], "fivexx": fivexx, "missing_in_log": missing,
        "reloads": run["published"], "lds_success": run["lds_success"], "lds_rejected": run["lds_rejected"],
        "versions_in_refusals": len(run["versions"]), "final_version": run["final_version"],
        "hot_admitted_per_2s": hot_rate(found, clock), "memory": memory,
        "phases": phase_report(rows, clock), "filter_stats": run["filter_stats"],
        "load_before": run["load"][0], "load_after": run["load"][1], "cpus": os.cpu_count(),
    }


def verdict(r: dict, args) -> list[str]:
    """Every breach of the soak's promises, in words (empty: passed)."""
    failures = []
    if r["breach_count"]:
        failures.append(f"{r['breach_count']} windows over a limit, e.g. {r['breaches'][0]}")
    if r["odd_lines"]:
        failures.append(f"responses without the limit they were judged by: {r['odd_lines'][:3]}")
    crashed = [e for e in r["client_errors"] if e.startswith("crashed")]
    if crashed:
        failures.append(f"traffic sources crashed: {crashed}")
    if r["fivexx"]:
        failures.append(f"{r['fivexx']} 5xx responses")
    if r["missing_in_log"]:
        failures.append(f"the access log misses responses the clients saw: {r['missing_in_log']}")
    if r["lds_rejected"] or r["lds_success"] < r["reloads"] + 1:
        failures.append(f"reloads: {r['reloads']} published, {r['lds_success']} applied, {r['lds_rejected']} rejected")
    if r["final_version"] != r["reloads"]:
        failures.append(f"the last configuration (v{r['reloads']}) never answered (v{r['final_version']})")
    if r["memory"]["growth_pct"] > args.rss_growth_pct:
        failures.append(f"RSS grew {r['memory']['growth_pct']:.1f}% after warm-up (> {args.rss_growth_pct}%)")
    if r["hot_admitted_per_2s"] < min(HOT_LIMITS) / 2:
        failures.append(f"hot keys admitted {r['hot_admitted_per_2s']:.1f} per 2 s: the limiter over-refuses")
    return failures


def fmt_load(load) -> str:
    return "/".join(f"{x:.1f}" for x in load)


def summary(r: dict, failures: list[str], command: str) -> str:
    m = r["memory"]
    lines = [
        f"soak: {command}",
        f"host {r['host']}, {r['seconds']:.0f} s, {r['requests']:,} requests in the access log, "
        f"{r['reloads']} reloads (LDS: {r['lds_success']} applied, {r['lds_rejected']} rejected; "
        f"{r['versions_in_refusals']} versions named by refusals, the last v{r['final_version']})",
        f"oracle: {r['admissions_checked']:,} admissions checked (per limit) over {r['keys_checked']:,} keys: "
        f"{r['breach_count']} windows over a limit ({r['keys_breached']} keys)",
        f"5xx: {r['fivexx']}; statuses in the log {dict(sorted(r['log_statuses'].items()))}; "
        f"client errors {r['client_errors'] or 0}",
        f"answers the clients read: {r['client_statuses']}",
        f"hot keys: {r['hot_admitted_per_2s']:.1f} admitted per 2 s after warm-up (limit 40 or 60)",
        f"machine: {r['cpus']} CPUs, load average (1, 5, 15 min) before {fmt_load(r['load_before'])}, "
        f"after {fmt_load(r['load_after'])}",
        f"RSS: {m['first_kib']:,} KiB at start, {m['warmup_end_kib']:,} KiB at the end of warm-up, "
        f"{m['second_half_max_kib']:,} KiB the highest of the second half ({m['growth_kib']:+,} KiB, "
        f"{m['growth_pct']:+.2f}%), {m['last_kib']:,} KiB at the end ({m['samples']} samples)",
        "phase      requests   req/s  statuses per class",
    ]
    for p in r["phases"]:
        if p["requests"]:
            rps = f"{p['rps']:7.0f}" if p["rps"] else "      -"
            classes = "; ".join(f"{cls} {st}" for cls, st in p["statuses"].items())
            lines.append(f"{p['phase']:<10} {p['requests']:>8,} {rps}  {classes}")
    stats = {k: v for k, v in r["filter_stats"].items() if v}
    lines.append(f"filter stats: {stats}")
    lines += [f"BREACH: {f}" for f in failures] or ["soak passed"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="wasm", help="wasm or native")
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--reload-seconds", type=float, default=3)
    parser.add_argument("--concurrency", type=int, default=2, help="Envoy's worker threads")
    parser.add_argument("--drain-seconds", type=int, default=10,
                        help="Envoy's --drain-time-s: how long a replaced filter chain serves its connections")
    parser.add_argument("--rss-growth-pct", type=float, default=5.0)
    parser.add_argument("--fresh-counters", action="store_true",
                        help="a broken setup (a new store key prefix at each reload): the oracle must fail")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.host not in ("wasm", "native"):
        parser.error(f"--host (HOST) is wasm or native, not {args.host!r}")
    command = " ".join(["bench/soak.py", *sys.argv[1:]])
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    access_log = workdir / "access.log"
    envoy = LdsEnvoy(free_port(), workdir, filter_config(0, args.fresh_counters), args.host,
                     concurrency=args.concurrency, hcm_overrides=hcm_overrides(access_log),
                     extra_args=("--drain-time-s", str(args.drain_seconds)))
    print(f"soak: {args.host}, {args.seconds:.0f} s, Envoy's files in {workdir}", flush=True)
    with envoy:
        run = drive(envoy, args)
        wait_flushed(access_log, sum(run["statuses"].values()))
    result = analyse(run, parse_log(access_log), args)
    failures = verdict(result, args)
    print(summary(result, failures, command))
    if failures:
        print(f"Envoy's config, logs and access log kept in {workdir}")
    else:
        shutil.rmtree(workdir)  # the access log of 10 minutes is ~100 MB
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**result, "command": command, "failures": failures}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
