"""Measurements behind tools/fleet-engine/README.md, against the real engine and a Redis of its own.

    .venv/bin/python tools/fleet-engine/measure.py concurrency [--rounds 10]
    .venv/bin/python tools/fleet-engine/measure.py latency [--calls 3000]
    .venv/bin/python tools/fleet-engine/measure.py spans [--seconds 12]

Every process is started on a free loopback port and stopped by pid (tests/e2e/fleet_harness.py).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "e2e"))

from fleet_harness import Engine, Redis, decode_response  # noqa: E402

DOMAIN = "measure"


def per_client(max_value: int, seconds: int, index: int = 0, limit_id: str = "a") -> str:
    return f"""
- namespace: {DOMAIN}
  max_value: {max_value}
  seconds: {seconds}
  conditions: ["descriptors[{index}]['limit'] == '{limit_id}'"]
  variables: ["descriptors[{index}]['client']"]
"""


def span_limits(namespace: str, limit_id: str, max_value: int, window: float, n: int) -> str:
    seconds = math.ceil((n + 1) * window / n)
    return "".join(
        f"""
- namespace: {namespace}
  max_value: {max_value}
  seconds: {seconds}
  conditions: ["descriptors[{k}]['limit'] == '{limit_id}'"]
  variables: ["descriptors[{k}]['client']", "descriptors[{k}]['span']"]
"""
        for k in range(n + 1)
    )


def span_descriptors(limit_id: str, client: str, now: float, window: float, n: int):
    m = math.floor(now / (window / n))
    slots = [None] * (n + 1)
    for j in range(m - n, m + 1):
        slots[j % (n + 1)] = [("limit", limit_id), ("client", client), ("span", str(j))]
    return slots


def max_in_any_window(times: list[float], window: float) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def concurrency(args) -> None:
    limit = 50
    with Redis() as redis, Engine(per_client(limit, 600), redis.url) as engine:
        print(f"limit {limit} per 600 s; a fresh client key each round")
        with engine.client() as rls:
            admitted = []
            for r in range(args.rounds):
                futures = [rls.future(DOMAIN, [[("limit", "a"), ("client", f"burst-{r}")]], 1) for _ in range(400)]
                admitted.append(sum(decode_response(f.result()).ok for f in futures))
            print(f"400 concurrent calls (one channel, grpcio futures), hits 1: admitted per round {admitted}")

        for clients, hits in ((1, 1), (3, 1), (8, 1), (3, 5), (8, 5)):
            admitted = []
            for r in range(args.rounds):
                key = f"seq-{clients}-{hits}-{r}"
                counts = [0] * clients

                def run(i: int) -> None:
                    with engine.client() as own:  # one channel per "Envoy", one call in flight
                        for _ in range(400 // clients):
                            counts[i] += hits * own.call(DOMAIN, [[("limit", "a"), ("client", key)]], hits).ok

                threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                admitted.append(sum(counts))
            print(f"{clients} clients x 1 call in flight, hits {hits}, {400 // clients * clients} calls: "
                  f"hits admitted per round {admitted}")


def latency(args) -> None:
    huge = 10**12
    limits = per_client(huge, 600)  # 1 counter
    for n in (4, 20):
        limits += span_limits(f"{DOMAIN}-{n}", "s", huge, 2.0, n)
    with Redis() as redis, Engine(limits, redis.url) as engine, engine.client() as rls:
        cases = [
            ("no limit applies (0 counters)", DOMAIN, lambda i: [[("limit", "none"), ("client", "x")]]),
            ("1 counter", DOMAIN, lambda i: [[("limit", "a"), ("client", "x")]]),
            ("5 counters (N = 4)", f"{DOMAIN}-4", lambda i: span_descriptors("s", "x", time.time(), 2.0, 4)),
            ("21 counters (N = 20)", f"{DOMAIN}-20", lambda i: span_descriptors("s", "x", time.time(), 2.0, 20)),
        ]
        print(f"sequential calls from one grpcio channel, {args.calls} per case after 200 warm-up calls, "
              "all admitted (limit 10^12)")
        for name, domain, descriptors in cases:
            for i in range(200):
                rls.call(domain, descriptors(i))
            took = []
            for i in range(args.calls):
                d = descriptors(i)
                t = time.perf_counter()
                answer = rls.call(domain, d)
                took.append(time.perf_counter() - t)
                assert answer.ok
            took.sort()
            p50, p99 = took[len(took) // 2], took[int(len(took) * 0.99)]
            print(f"  {name:32s} p50 {p50 * 1e6:7.0f} us   p99 {p99 * 1e6:7.0f} us   mean {statistics.mean(took) * 1e6:7.0f} us")


def spans(args) -> None:
    limit, window = 10, 2.0
    limits = per_client(limit, int(window))
    for n in (4, 20):
        limits += span_limits(f"{DOMAIN}-{n}", "s", limit, window, n)
    with Redis() as redis, Engine(limits, redis.url) as engine, engine.client() as rls:
        for rate in (20.0, 6.0):
            results = {}
            start = time.time()
            names = ["fixed first-hit window (1 limit)", "spans N = 4", "spans N = 20"]
            times = {k: [] for k in names}
            client = f"c{rate}"
            while time.time() < start + args.seconds:
                now = time.time()
                if rls.call(DOMAIN, [[("limit", "a"), ("client", client)]]).ok:
                    times[names[0]].append(now)
                for n, name in ((4, names[1]), (20, names[2])):
                    if rls.call(f"{DOMAIN}-{n}", span_descriptors("s", client, now, window, n)).ok:
                        times[name].append(now)
                time.sleep(max(0.0, now + 1 / rate - time.time()))
            print(f"one client at {rate:.0f}/s for {args.seconds:.0f} s against {limit} per {window:.0f} s:")
            for name in names:
                ts = times[name]
                steady = [t for t in ts if t >= start + window]  # after the first window
                per_w = len(steady) / ((args.seconds - window) / window)
                print(f"  {name:34s} admitted {len(ts):3d}, max in any {window:.0f} s: "
                      f"{max_in_any_window(ts, window):2d}, after the first {window:.0f} s: {per_w:.2f} per {window:.0f} s")
            results[rate] = times

        # the adversarial pattern: 1 at t0, 9 just before the first-hit window's end, 10 after it
        step = window / 4
        t0 = (math.floor(time.time() / step) + 1) * step
        admitted = {"fixed": [], "N=4": []}
        client = "adversary"
        for offset, count in [(0.05, 1), (1.9, 9), (2.2, 10), (2.6, 10), (4.3, 10)]:
            time.sleep(max(0.0, t0 + offset - time.time()))
            a = b = 0
            for _ in range(count):
                now = time.time()
                a += rls.call(DOMAIN, [[("limit", "a"), ("client", client)]]).ok
                b += rls.call(f"{DOMAIN}-4", span_descriptors("s", client, now, window, 4)).ok
            admitted["fixed"].append(a)
            admitted["N=4"].append(b)
        print("sends of 1, 9, 10, 10, 10 at t0 + 0.05, 1.9, 2.2, 2.6, 4.3 s (t0 on a sub-window boundary):")
        print(f"  fixed first-hit window admitted {admitted['fixed']}, spans N = 4 admitted {admitted['N=4']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("concurrency")
    c.add_argument("--rounds", type=int, default=10)
    lat = sub.add_parser("latency")
    lat.add_argument("--calls", type=int, default=3000)
    s = sub.add_parser("spans")
    s.add_argument("--seconds", type=float, default=12.0)
    args = parser.parse_args()
    {"concurrency": concurrency, "latency": latency, "spans": spans}[args.what](args)


if __name__ == "__main__":
    main()
