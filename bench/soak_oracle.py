"""The soak's oracle: what Envoy's access log proves about every admission.

The guarantee checked (docs/src/decides/sliding-window.md): for every key and every limit of
`requests` per window W, **in any closed interval of length W of the filter's clock, the admitted
requests' costs sum to at most `requests`**. When a reload changes `requests`, each admission is
judged against the limit of the configuration that decided it (its response's X-RateLimit-Limit),
so the bound for an interval is the limit its last admission was judged by, of which the oracle
takes the largest among the admissions that may lie in the interval (never tighter than the
truth).

The filter decides a request at some millisecond of its clock (the wall clock in whole
milliseconds, the clock Envoy's %START_TIME% reads) between the request's start and the end of its
response: `[floor(start), start + duration + 1 ms]` with the access log's %START_TIME% (µs) and
%DURATION% (whole ms). The oracle reports a breach only when it is certain: requests whose whole
interval lies inside one window and whose costs exceed the largest limit any admission that may
lie in that window was judged by. No timing luck: a slow machine widens the intervals (fewer
breaches provable), it never invents one.

A second, stronger check follows the implementation: a request admitted in sub-window c (W/20
long, aligned on the Unix epoch) counted every admission of the sub-windows c-20 .. c (a span
of 1.05 W), so the admissions certainly inside any such aligned span are within the limit too.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

SUB_WINDOWS = 20  # src/limiter/window.rs


@dataclass(frozen=True)
class Admission:
    """One admitted request as one limit counts it: when it may have been decided (epoch ms,
    inclusive bounds), its cost and the `requests` of the limit it was judged by."""

    lo_ms: float
    hi_ms: float
    cost: int
    limit: int


@dataclass(frozen=True)
class Breach:
    rule: str
    key: str
    limit_name: str
    check: str  # "window" (any interval of W) or "sub_windows" (aligned c-N..c)
    start_ms: float
    admitted: int  # costs certainly inside
    limit: int

    def __str__(self) -> str:
        return (f"{self.check} breach: rule {self.rule} key {self.key} limit {self.limit_name}: "
                f"{self.admitted} > {self.limit} from epoch ms {self.start_ms:.3f}")


def decision_interval(start_s: float, duration_ms: int) -> tuple[float, float]:
    """The filter's decision time in epoch ms, bounded: it truncates the clock to whole
    milliseconds (so as early as floor(start)) and decides before the response ends (Envoy's
    %DURATION% is truncated, hence + 1)."""
    start_ms = start_s * 1000.0
    return math.floor(start_ms), start_ms + duration_ms + 1


def window_breaches(adms: list[Admission], window_ms: int) -> list[tuple[float, int, int]]:
    """(interval start, costs certainly inside, bound) for every interval [a, a + W], a the
    earliest possible decision time of an admission, whose certain costs exceed the largest limit
    of the admissions that may lie in it. `adms` sorted by lo_ms."""
    los = [a.lo_ms for a in adms]
    span = max((a.hi_ms - a.lo_ms for a in adms), default=0)
    found = []
    for a in adms:
        start, end = a.lo_ms, a.lo_ms + window_ms
        surely, bound = 0, 0
        for j in range(bisect.bisect_left(los, start - span), len(adms)):
            b = adms[j]
            if b.lo_ms > end:
                break
            if b.hi_ms >= start:
                bound = max(bound, b.limit)
                if b.lo_ms >= start and b.hi_ms <= end:
                    surely += b.cost
        if surely > bound:
            found.append((start, surely, bound))
    return found


def sub_window(t_ms: float, window_ms: int) -> int:
    """The filter's sub-window of the millisecond t (src/limiter/window.rs)."""
    return math.floor(t_ms) * SUB_WINDOWS // window_ms


def sub_window_breaches(adms: list[Admission], window_ms: int) -> list[tuple[float, int, int]]:
    """The same for the aligned spans of sub-windows c-N .. c, c each admission's latest
    possible sub-window: (span start ms, costs certainly inside, bound)."""
    spans = [(sub_window(a.lo_ms, window_ms), sub_window(a.hi_ms, window_ms)) for a in adms]
    firsts = [s[0] for s in spans]  # sorted, as adms are
    width = max((hi - lo for lo, hi in spans), default=0)
    found = []
    for c in sorted({hi for _, hi in spans}):
        surely, bound = 0, 0
        for j in range(bisect.bisect_left(firsts, c - SUB_WINDOWS - width), len(adms)):
            lo, hi = spans[j]
            if lo > c:
                break
            if hi >= c - SUB_WINDOWS:
                bound = max(bound, adms[j].limit)
                if lo >= c - SUB_WINDOWS and hi <= c:
                    surely += adms[j].cost
        if surely > bound:
            found.append(((c - SUB_WINDOWS) * window_ms / SUB_WINDOWS, surely, bound))
    return found


def check(admissions: dict[tuple[str, str, str], list[Admission]], windows: dict[tuple[str, str], int]
          ) -> tuple[list[Breach], int]:
    """Every (rule, key, limit name) -> its admissions, checked by both rules; `windows` gives
    each (rule, limit name)'s W in ms. Returns the breaches and how many admissions were checked
    (one per admission and limit)."""
    breaches, checked = [], 0
    for (rule, key, name), adms in admissions.items():
        adms = sorted(adms, key=lambda a: a.lo_ms)
        checked += len(adms)
        window_ms = windows[(rule, name)]
        for kind, finder in (("window", window_breaches), ("sub_windows", sub_window_breaches)):
            breaches += [Breach(rule, key, name, kind, start, surely, bound)
                         for start, surely, bound in finder(adms, window_ms)]
    return breaches, checked
