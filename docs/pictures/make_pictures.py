#!/usr/bin/env python3
"""The book's pictures, from real data: `make pictures` (not part of `make test`; the PNGs are
committed under docs/src/images/ and tests/e2e/test_docs.py checks that they are there).

    python3 docs/pictures/make_pictures.py PICTURE_DATA.json OUT_DIR

- window-burst.png: one client sending 10 requests a second for two minutes against 100 per
  minute. The sliding window is **the filter's own core** (`decide` in bench/micro's
  picture_data example); the fixed window and the token bucket are **simple models** computed
  here, for comparison, on the same requests.
- key-spray.png: 100,000 keys sprayed at a rule with `max_clients` 1,000, through the filter's core
  (picture_data): the store's bytes, and the share of newcomers' requests admitted.
- benchmark-ratios.png, instructions.png: BENCHMARKS.md's figures (copied into benchmarks.json
  beside this script, each with the words of BENCHMARKS.md it comes from).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
COLOURS = {"sliding": "#1f77b4", "fixed": "#d62728", "bucket": "#ff7f0e", "grey": "#7f7f7f"}


def save(fig, path: Path) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    print(f"wrote {path}")


def fixed_window(times_ms: list[int], limit: int, window_ms: int) -> list[bool]:
    """Model: a counter per clock-aligned window, reset at each boundary."""
    counts: dict[int, int] = {}
    out = []
    for t in times_ms:
        w = t // window_ms
        ok = counts.get(w, 0) < limit
        counts[w] = counts.get(w, 0) + ok
        out.append(ok)
    return out


def token_bucket(times_ms: list[int], limit: int, window_ms: int) -> list[bool]:
    """Model: a bucket of `limit` tokens, refilled at limit per window, full at the start."""
    tokens, last, out = float(limit), times_ms[0], []
    for t in times_ms:
        tokens = min(limit, tokens + (t - last) * limit / window_ms)
        last = t
        ok = tokens >= 1
        tokens -= ok
        out.append(ok)
    return out


def trailing(times_ms: list[int], admitted: list[bool], window_ms: int) -> list[int]:
    """Admitted in the window ending at each request (the quantity the limit is about)."""
    kept, out, start = [t for t, a in zip(times_ms, admitted) if a], [], 0
    j = 0
    for t in times_ms:
        while j < len(kept) and kept[j] <= t:
            j += 1
        while start < j and kept[start] <= t - window_ms:
            start += 1
        out.append(j - start)
    return out


def window_burst(data: dict, out: Path) -> None:
    times, limit, window = data["t_ms"], data["limit"], data["window_ms"]
    runs = {
        "sliding window: this filter (its core, 20 sub-windows)": ([bool(a) for a in data["admitted"]], COLOURS["sliding"], "-"),
        "fixed window (a model: reset every clock minute)": (fixed_window(times, limit, window), COLOURS["fixed"], "--"),
        "token bucket (a model: 100 tokens, 100 a minute)": (token_bucket(times, limit, window), COLOURS["bucket"], ":"),
    }
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.4), sharex=True)
    seconds = [t / 1000 for t in times]
    for label, (admitted, colour, style) in runs.items():
        total, cumulative = 0, []
        for a in admitted:
            total += a
            cumulative.append(total)
        top.plot(seconds, cumulative, style, color=colour, label=label, linewidth=2)
        bottom.plot(seconds, trailing(times, admitted, window), style, color=colour, linewidth=2)
    top.plot(seconds, [i + 1 for i in range(len(times))], color=COLOURS["grey"], linewidth=1, label="requests sent")
    top.set_ylim(0, 420)
    top.set_ylabel("admitted so far")
    top.set_title("One client sends 10 requests a second for two minutes; the limit is 100 per minute")
    top.legend(loc="upper left", fontsize=8)
    bottom.axhline(limit, color="black", linewidth=1)
    bottom.text(151, limit + 4, "the limit", fontsize=8, ha="right")
    bottom.set_ylabel("admitted in the last 60 s")
    bottom.set_xlabel("time (s); dotted lines: clock minutes")
    bottom.set_ylim(0, 220)
    for ax in (top, bottom):
        for m in (60, 120):
            ax.axvline(m, color=COLOURS["grey"], linewidth=0.6, linestyle=":")
        ax.grid(alpha=0.3)
    save(fig, out / "window-burst.png")


def key_spray(data: dict, out: Path) -> None:
    cols = data["columns"]
    rows = [dict(zip(cols, r)) for r in data["rows"]]
    seconds = [r["second"] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.4), sharex=True)
    sprayed = [r["keys_sprayed"] / 1000 for r in rows]
    top.plot(seconds, [r["store_bytes"] / 1024 for r in rows], color=COLOURS["sliding"], linewidth=2,
             label="this filter's store (its core): shared-data bytes of the rule")
    ax2 = top.twinx()
    ax2.plot(seconds, sprayed, color=COLOURS["grey"], linewidth=1, linestyle="--", label="keys sprayed so far (thousands)")
    ax2.set_ylabel("keys sprayed (thousands)")
    top.set_ylabel("store (KiB)")
    top.set_ylim(0, max(r["store_bytes"] for r in rows) / 1024 * 1.3)
    top.set_title(f"100,000 keys of one request each, 1,000 a second; max_clients {data['max_clients']:,}; "
                  "10/min and 1,000/day", fontsize=10)
    lines = top.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = top.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    top.legend(lines, labels, loc="lower right", fontsize=8)
    share = [100 * r["newcomer_admitted"] / r["newcomer_requests"] if r["newcomer_requests"] else None for r in rows]
    capacity = [100 * r["newcomer_capacity_refused"] / r["newcomer_requests"] if r["newcomer_requests"] else None
                for r in rows]
    bottom.plot(seconds, share, color=COLOURS["sliding"], linewidth=2, label="newcomers' requests admitted")
    bottom.plot(seconds, capacity, color=COLOURS["fixed"], linewidth=1, label="refused for capacity (told as such)")
    bottom.set_ylabel("% of newcomers' requests")
    bottom.set_ylim(-3, 105)
    bottom.set_xlabel("time (s); the spray runs from 30 s to 130 s (shaded)")
    bottom.legend(loc="center right", fontsize=8)
    for ax in (top, bottom):
        ax.axvspan(30, 130, color=COLOURS["grey"], alpha=0.1)
        ax.grid(alpha=0.3)
    bottom.text(2, 8, "a new client every 0.5 s, 3 requests 2 s apart (far under its 10 per minute)", fontsize=8)
    save(fig, out / "key-spray.png")


def benchmark_ratios(bench: dict, out: Path) -> None:
    rows = bench["ratios"]["rows"]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["wall_clock"] for r in rows], width=0.4, color=COLOURS["sliding"],
           label="wall clock (make bench, requests per second)")
    ax.bar([x + 0.2 for x in xs], [r["instructions"] or 0 for r in rows], width=0.4, color=COLOURS["bucket"],
           label="instructions (make bench-instructions)")
    for x, r in zip(xs, rows):
        ax.plot([x - 0.42, x + 0.42], [r["goal"]] * 2, color="black", linewidth=2)
        ax.text(x - 0.2, r["wall_clock"] + 0.02, f"{r['wall_clock']:.3f}", ha="center", fontsize=8)
        if r["instructions"]:
            ax.text(x + 0.2, r["instructions"] + 0.02, f"{r['instructions']:.3f}", ha="center", fontsize=8)
    ax.plot([], [], color="black", linewidth=2, label="goal")
    ax.set_xticks(list(xs), [f"{r['ratio']}\n" + r["what"].replace(" ÷ ", "\n÷ ") for r in rows], fontsize=8)
    ax.set_ylim(0, 1.35)
    ax.set_ylabel("ratio (higher is better)")
    ax.set_title("Throughput ratios, 2-core machine, Envoy 1.40 (V8), 2026-11-24", fontsize=10)
    ax.legend(loc="upper left", fontsize=8, ncol=3)
    ax.grid(axis="y", alpha=0.3)
    save(fig, out / "benchmark-ratios.png")


def instructions(bench: dict, out: Path) -> None:
    part = bench["instructions"]
    rows, parts = part["rows"], part["parts"]
    colours = ["#9ecae1", "#c7e9c0", COLOURS["fixed"], "#dadaeb"]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for i, row in enumerate(rows):
        left = 0
        for value, colour, name in zip(row["values"], colours, parts):
            ax.barh(i, value, left=left, color=colour, edgecolor="white", label=name if i == 0 else None)
            if value > 6000:
                ax.text(left + value / 2, i, f"{value / 1000:.1f}k", ha="center", va="center", fontsize=8)
            left += value
        ax.text(left + 1500, i, f"{left:,}", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [r["configuration"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 190_000)
    ax.set_xlabel("instructions Envoy executes per request (callgrind); at the right, the sum of the four parts")
    ax.set_title("Where the instructions go (2026-11-24; later rounds cut the allow path's V8 code to 10,233)",
                 fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncol=2)
    save(fig, out / "instructions.png")


def main() -> int:
    data = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    bench = json.loads((HERE / "benchmarks.json").read_text())
    window_burst(data["burst"], out)
    key_spray(data["spray"], out)
    benchmark_ratios(bench, out)
    instructions(bench, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
