"""The soak's oracle (bench/soak_oracle.py), on made-up admissions: it flags what breaks the
guarantee, only when certain, and nothing a correct sliding window does. No Envoy: milliseconds."""
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from soak_oracle import SUB_WINDOWS, Admission, check, decision_interval, sub_window, sub_window_breaches, window_breaches  # noqa: E402,E501

W = 2000  # ms; sub-windows of 100 ms


def at(t, limit=3, cost=1, spread=0):
    return Admission(t, t + spread, cost, limit)


def test_the_limit_within_a_window_passes_one_more_is_caught():
    three = [at(0), at(500), at(1999)]
    assert window_breaches(three, W) == [] and sub_window_breaches(three, W) == []
    four = three + [at(1999.5)]
    assert window_breaches(four, W) == [(0, 4, 3)]
    assert sub_window_breaches(four, W)


def test_the_window_is_closed_and_no_longer_than_w():
    # The 4th admission exactly W after the first shares a closed interval of length W with it.
    assert window_breaches([at(0), at(10), at(20), at(W)], W)
    # One millisecond later it does not (and lies in a sub-window 21 after the first's).
    assert window_breaches([at(0), at(10), at(20), at(W + 100)], W) == []
    assert sub_window_breaches([at(0), at(10), at(20), at(W + 100)], W) == []


def test_costs_count():
    assert window_breaches([at(0, cost=2), at(100, cost=2)], W) == [(0, 4, 3)]
    assert window_breaches([at(0, cost=2), at(100, cost=1)], W) == []


def test_only_certain_breaches():
    # The 4th request may have been decided after the window of the first ended.
    maybe = [at(0), at(10), at(20), Admission(W - 2, W + 3, 1, 3)]
    assert window_breaches(maybe, W) == []
    # Its whole interval inside the window: certain.
    assert window_breaches([at(0), at(10), at(20), Admission(W - 5, W, 1, 3)], W)


def test_a_reload_raising_the_limit_bounds_a_window_by_its_largest_limit():
    old = [at(t, limit=3) for t in (0, 10, 20)]
    assert window_breaches(old + [at(30, limit=4)], W) == []
    assert window_breaches(old + [at(30, limit=4), at(40, limit=4)], W) == [(0, 5, 4)]
    # A lowered limit: three admitted under 3, then one under 2 is over both.
    assert window_breaches(old + [at(30, limit=2)], W) == [(0, 4, 3)]


def test_the_aligned_sub_windows_are_stricter_than_any_w():
    # 3 in sub-window 0, one in sub-window 20: 2,010 ms apart (no interval of W holds them) but
    # the filter counts sub-windows 0..20 at the last one, so it would have refused it.
    four = [at(50), at(60), at(70), at(2060)]
    assert sub_window(2060, W) == SUB_WINDOWS
    assert window_breaches(four, W) == []
    assert sub_window_breaches(four, W) == [(0, 4, 3)]


def test_decision_interval_bounds_the_filters_millisecond():
    assert decision_interval(1.0004567, 3) == (1000, 1000.4567 + 3 + 1)


def simulate(limiter, seed=7, keys=5, seconds=60, limit=10):
    """Random arrivals (bursts and gaps) of `keys` keys through `limiter(key, t) -> bool`, as the
    oracle's input; each decision time known to a few ms."""
    rng, found, t = random.Random(seed), {}, 0.0
    while t < seconds * 1000:
        t += rng.expovariate(1 / 15)
        key = f"k{rng.randrange(keys)}"
        if limiter(key, int(t)):
            found.setdefault(("r", key, "l"), []).append(Admission(int(t), t + rng.uniform(0, 3), 1, limit))
    return check(found, {("r", "l"): W})


def sliding(limit=10):
    """The filter's rule: a ring of the sub-windows c-20..c, admitted while sum + 1 <= limit."""
    rings = {}

    def decide(key, t):
        c = sub_window(t, W)
        ring = {b: n for b, n in rings.get(key, {}).items() if b >= c - SUB_WINDOWS}
        if sum(ring.values()) + 1 > limit:
            return False
        ring[c] = ring.get(c, 0) + 1
        rings[key] = ring
        return True
    return decide


def fixed(limit=10):
    """A fixed window that resets every W: up to twice the limit across a boundary."""
    counts = {}

    def decide(key, t):
        slot = (key, t // W)
        if counts.get(slot, 0) >= limit:
            return False
        counts[slot] = counts.get(slot, 0) + 1
        return True
    return decide


def test_a_correct_sliding_window_passes_and_a_fixed_window_fails():
    breaches, checked = simulate(sliding())
    assert checked > 1000 and breaches == []
    breaches, _ = simulate(fixed())
    assert {b.check for b in breaches} == {"window", "sub_windows"}
