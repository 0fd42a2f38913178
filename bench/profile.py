#!/usr/bin/env python3
"""Where an Envoy's CPU goes per request, by binary: `perf record` (software cpu-clock samples,
so it works in VMs without hardware counters) on one loaded Envoy per configuration.

  python3 bench/profile.py 1 2 4 p1 p2 p3 5        # config ids of bench/envoy_bench.py

For each configuration: one Envoy (`--concurrency 1`, pinned like the benchmark), 2 s of warm-up,
then wrk load during which perf samples the Envoy process for a few seconds while Envoy's own
request counter is read before and after. The CPU time per request is split into:

  kernel   the loopback TCP work, the same for every configuration: the yardstick
  envoy    Envoy's binary: HTTP codec, filter chain, the proxy-wasm host functions and V8's
           runtime (the binary is stripped, so no finer names)
  wasm     code V8 compiled from the .wasm (perf shows it as [JIT])
  libs     libc (malloc, memcpy, mutexes), vdso (clock reads), the rest

"per request" is samples / sampling rate / requests (Envoy's own counter over the sampling
window). On a shared machine repeat with --rounds: medians are printed, with the difference of each
configuration's total from the first one's. Needs `perf` (Debian: linux-perf). Standard library
only.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import envoy_bench as eb  # noqa: E402

FREQ = 2000


def requests_total(e: eb.Envoy) -> int:
    text = eb.admin_get(e.admin_port, "/stats?filter=^http.bench.downstream_rq_total$")
    m = re.search(r"downstream_rq_total: (\d+)", text)
    return int(m.group(1)) if m else 0


def dso_samples(data: Path) -> dict[str, int]:
    out = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--sort", "dso", "-g", "none",
                          "--show-nr-samples", "--no-children"],
                         capture_output=True, text=True, check=True).stdout
    samples: dict[str, int] = {}
    for line in out.splitlines():
        m = re.match(r"\s+[\d.]+%\s+(\d+)\s+(.+?)\s*$", line)
        if not m:
            continue
        n, dso = int(m.group(1)), m.group(2)
        if dso.startswith("[kernel"):
            group = "kernel"
        elif dso == "envoy":
            group = "envoy"
        elif dso.startswith("[JIT]"):
            group = "wasm"
        else:
            group = "libs"
        samples[group] = samples.get(group, 0) + n
    return samples


def profile(cfg: eb.Config, binary: str, workdir: Path, seconds: int, keys: int) -> dict:
    e = eb.Envoy(cfg, binary, workdir, "warn")
    data = workdir / f"perf-{cfg.id}.data"
    wrk = None
    try:
        e.start()
        e.wait_ready()
        if cfg.prime:
            e.request()
        eb.run_wrk(e, 2, 16, keys)
        wrk = subprocess.Popen(eb.wrk_command(e, seconds + 3, 16, 0), stdout=subprocess.DEVNULL,
                               env=dict(eb.os.environ, BENCH_KEYS=str(keys), BENCH_PATH=eb.PATH))
        time.sleep(1)
        before = requests_total(e)
        subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(FREQ), "-p", str(e.proc.pid),
                        "-o", str(data), "--", "sleep", str(seconds)], check=True, capture_output=True)
        after = requests_total(e)
    finally:
        if wrk is not None:
            eb.stop(wrk)
        e.close()
    samples = dso_samples(data)
    requests = max(1, after - before)
    us = {k: v / FREQ * 1e6 / requests for k, v in samples.items()}
    return {"id": cfg.id, "title": cfg.title, "rps": requests / seconds, "us": us,
            "total": sum(us.values())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="+")
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--alt-wasm", type=Path, help="another build of the filter: configs 4a, 5a, 6a")
    ap.add_argument("--rounds", type=int, default=1, help="profile every config this many times (medians)")
    args = ap.parse_args()
    if not shutil.which("perf"):
        print("perf is not installed (Debian: apt-get install linux-perf)", file=sys.stderr)
        return 2
    every = eb.every_config(args.alt_wasm)
    binary = eb.envoy_binary(None)
    workdir = Path(tempfile.mkdtemp(prefix="envoy-profile-"))
    runs: dict[str, list[dict]] = {c: [] for c in args.configs}
    try:
        for _ in range(args.rounds):
            for cid in args.configs:
                r = profile(every[cid], binary, workdir, args.seconds, args.keys)
                runs[cid].append(r)
                print(f"  {cid}: {r['rps']:,.0f} req/s, {r['total']:.2f} µs/req "
                      + " ".join(f"{k} {v:.2f}" for k, v in sorted(r["us"].items())), flush=True)
    except KeyboardInterrupt:
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def med(cid: str, key: str) -> float:
        return eb.statistics.median(r["us"].get(key, 0.0) for r in runs[cid])

    first = sum(med(args.configs[0], k) for k in ("kernel", "envoy", "wasm", "libs"))
    print("\nµs of Envoy CPU per request, by where the samples fell (median of rounds)\n")
    print("| # | configuration | total | Δ vs " + args.configs[0] + " | kernel | envoy | wasm (JIT) | libs |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for cid in args.configs:
        parts = {k: med(cid, k) for k in ("kernel", "envoy", "wasm", "libs")}
        total = sum(parts.values())
        print(f"| {cid} | {every[cid].title} | {total:.2f} | {total - first:+.2f} | {parts['kernel']:.2f} | "
              f"{parts['envoy']:.2f} | {parts['wasm']:.2f} | {parts['libs']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
