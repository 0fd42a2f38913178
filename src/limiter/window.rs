//! The sliding window: a conservative sub-window counter with a hard guarantee.
//!
//! A window of length `W` is cut into `SUB_WINDOWS` (N) sub-windows of length `W/N`. Sub-window `b`
//! covers the milliseconds `[b·W/N, (b+1)·W/N)`. A client's counts live in a ring of `N + 1`
//! slots, one per sub-window from `c − N` to `c`, where `c` is the sub-window of "now".
//!
//! A request of cost `k` is admitted when `sum(ring) + k ≤ limit`. The ring covers every
//! millisecond of `[now − W, now]` (and up to `W/N` more), so at the moment of each admission
//! every earlier admission of the last `W` is counted: **in any closed interval of length `W`,
//! at most `limit` requests are admitted** (proof in the README). The price is that the oldest
//! sub-window is counted whole: the filter behaves like an exact sliding log whose window lies
//! between `W` and `W·(1 + 1/N)`, so a client sending at twice its limit gets `N/(N+1)` ≈ 95.2%
//! of what the exact log would grant, and nobody is refused below the exact-log count of the
//! last `W·(1 + 1/N)`.

/// Sub-windows per window (N).
pub const SUB_WINDOWS: u64 = 20;
/// Ring length: the sub-windows `c − N ..= c`.
pub const RING: usize = SUB_WINDOWS as usize + 1;

/// The counts of one limit of one client, indexed by `sub_window % RING`.
pub type Ring = [u32; RING];

/// The geometry of one window length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindow {
    pub window_ms: u64,
}

/// Counts of a client kept outside its own ring, each counted whole until `expires_ms`: what it
/// inherited from its page's summary, or (`own`) its first request recorded in the summary's
/// doorkeeper.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Part {
    pub count: u64,
    pub expires_ms: u64,
    /// The client's own request (it took no slot), not an estimate inherited from others.
    pub own: bool,
}

/// What one limit says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    /// The request fits under the limit.
    pub fits: bool,
    /// It would fit if only the client's own counts were counted (its ring and own parts): a
    /// request that fits this way but not the other is refused only through inherited counts.
    pub own_fits: bool,
    /// Units of quota left after this request (if it is admitted) or now (if it is refused).
    pub remaining: u64,
    /// Epoch ms at which the quota grows again (the oldest counted request leaves the window);
    /// `now` when nothing is counted.
    pub reset_at_ms: u64,
    /// Epoch ms from which a request of the same cost fits, if it does not fit now; `None` when
    /// the cost exceeds the limit itself.
    pub retry_at_ms: Option<u64>,
    /// Counts inherited from others (estimates) were counted, not only the client's own.
    pub inherited: bool,
}

impl SlidingWindow {
    pub fn new(window_ms: u64) -> Self {
        assert!(window_ms > 0, "window must be positive");
        SlidingWindow { window_ms }
    }

    /// The sub-window holding the millisecond `t`.
    pub fn sub_window(&self, t_ms: u64) -> u64 {
        // 64-bit arithmetic whenever it cannot overflow (any clock of this era), else 128-bit.
        match t_ms.checked_mul(SUB_WINDOWS) {
            Some(scaled) => scaled / self.window_ms,
            None => ((t_ms as u128 * SUB_WINDOWS as u128) / self.window_ms as u128) as u64,
        }
    }

    /// The first millisecond of sub-window `b`.
    pub fn sub_window_start(&self, b: u64) -> u64 {
        match b.checked_mul(self.window_ms) {
            Some(scaled) => scaled.div_ceil(SUB_WINDOWS),
            None => {
                let scaled = b as u128 * self.window_ms as u128;
                scaled.div_ceil(SUB_WINDOWS as u128).min(u64::MAX as u128) as u64
            }
        }
    }

    /// Moves a ring last written at `last_ms` forward to `now_ms`, clearing the sub-windows that
    /// have left the window. `now_ms` must not be before `last_ms` (callers clamp the clock).
    pub fn advance(&self, ring: &mut Ring, last_ms: u64, now_ms: u64) {
        let last = self.sub_window(last_ms);
        let now = self.sub_window(now_ms);
        if now <= last {
            return;
        }
        if now - last >= RING as u64 {
            *ring = [0; RING];
            return;
        }
        for b in last + 1..=now {
            ring[(b % RING as u64) as usize] = 0;
        }
    }

    /// Adds `cost` to the sub-window of `now_ms` (saturating: a count never wraps).
    pub fn record(&self, ring: &mut Ring, now_ms: u64, cost: u32) {
        let slot = &mut ring[(self.sub_window(now_ms) % RING as u64) as usize];
        *slot = slot.saturating_add(cost);
    }

    /// The generation of `t_ms`: blocks of RING sub-windows (a span of W(1 + 1/N)).
    pub fn generation(&self, t_ms: u64) -> u64 {
        self.sub_window(t_ms) / RING as u64
    }

    /// When whatever was recorded during generation `g` has left the window: a count in its
    /// last sub-window leaves when the sub-window RING later begins, which is where generation
    /// `g + 2` begins. A generation's summary is cleared then.
    pub fn generation_end(&self, g: u64) -> u64 {
        self.sub_window_start((g + 2) * RING as u64)
    }

    /// When a count recorded at `t_ms` leaves the window (and any recorded earlier has).
    pub fn ring_end(&self, t_ms: u64) -> u64 {
        self.sub_window_start(self.sub_window(t_ms) + RING as u64)
    }

    /// Judges a request of `cost` against `limit` on an advanced ring and the client's parts. A
    /// request of cost 0 (charged only when its response says what it cost) needs one unit of
    /// quota left to be admitted, and takes none.
    pub fn evaluate(
        &self,
        ring: &Ring,
        parts: &[Part],
        now_ms: u64,
        limit: u64,
        cost: u64,
    ) -> Evaluation {
        let alive = alive_parts(parts, now_ms);
        let ring_used: u64 = ring.iter().map(|&c| c as u64).sum();
        let parts_used: u64 = alive.iter().map(|p| p.count).sum();
        let own_used: u64 =
            ring_used + alive.iter().filter(|p| p.own).map(|p| p.count).sum::<u64>();
        let used = ring_used + parts_used;
        let needed = cost.max(1);
        let fits = used + needed <= limit;
        let used_after = if fits { used + cost } else { used };
        let pending = if fits { cost } else { 0 };
        let reset_at_ms = if used_after == 0 {
            now_ms
        } else {
            // The quota grows as soon as the oldest counted unit leaves; the unit this request
            // adds sits in the newest sub-window, so it never comes first unless it is alone.
            self.release_time(ring, &alive, now_ms, used_after - 1, pending)
                .unwrap_or(now_ms)
        };
        let retry_at_ms = if fits || needed > limit {
            None
        } else {
            self.release_time(ring, &alive, now_ms, limit - needed, 0)
        };
        Evaluation {
            fits,
            inherited: own_used < used,
            own_fits: own_used + needed <= limit,
            remaining: limit.saturating_sub(used_after),
            reset_at_ms,
            retry_at_ms,
        }
    }

    /// The first millisecond at which the counted total drops to `target` or below, as the
    /// sub-windows leave the window oldest first and the parts expire. `pending` is added to the
    /// current sub-window (a request being admitted). `None` if it never does.
    fn release_time(
        &self,
        ring: &Ring,
        alive: &Alive,
        now_ms: u64,
        target: u64,
        pending: u64,
    ) -> Option<u64> {
        let now = self.sub_window(now_ms);
        let oldest = now.saturating_sub(SUB_WINDOWS);
        let parts = alive.as_slice();
        let mut total: u64 = ring.iter().map(|&c| c as u64).sum::<u64>()
            + pending
            + parts.iter().map(|p| p.count).sum::<u64>();
        if total <= target {
            return Some(now_ms);
        }
        let mut next_part = 0;
        for b in oldest..=now {
            // Sub-window `b` leaves when sub-window `b + RING` begins; parts expiring no later
            // leave first.
            let leaves = || self.sub_window_start(b + RING as u64);
            if next_part < parts.len() {
                let leaves = leaves();
                while let Some(part) = parts.get(next_part).filter(|p| p.expires_ms <= leaves) {
                    total -= part.count;
                    next_part += 1;
                    if total <= target {
                        return Some(part.expires_ms);
                    }
                }
            }
            total -= ring[(b % RING as u64) as usize] as u64;
            if b == now {
                total -= pending;
            }
            if total <= target {
                return Some(leaves());
            }
        }
        parts[next_part..].iter().find_map(|part| {
            total -= part.count;
            (total <= target).then_some(part.expires_ms)
        })
    }
}

/// The parts still counted at `now_ms`, soonest to expire first.
struct Alive {
    parts: [Part; MAX_PARTS],
    len: usize,
}

/// At most this many parts per limit (two inherited generations, two own doorkeeper units).
pub const MAX_PARTS: usize = 4;

impl Alive {
    fn as_slice(&self) -> &[Part] {
        &self.parts[..self.len]
    }
    fn iter(&self) -> std::slice::Iter<'_, Part> {
        self.as_slice().iter()
    }
}

fn alive_parts(parts: &[Part], now_ms: u64) -> Alive {
    let mut alive = Alive {
        parts: [Part::default(); MAX_PARTS],
        len: 0,
    };
    for part in parts
        .iter()
        .filter(|p| p.count > 0 && p.expires_ms > now_ms)
    {
        alive.parts[alive.len] = *part;
        alive.len += 1;
    }
    alive.parts[..alive.len].sort_unstable_by_key(|p| p.expires_ms);
    alive
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = 60_000;

    fn admit(w: &SlidingWindow, ring: &mut Ring, last: &mut u64, now: u64, limit: u64) -> bool {
        w.advance(ring, *last, now);
        let e = w.evaluate(ring, &[], now, limit, 1);
        if e.fits {
            w.record(ring, now, 1);
            *last = now;
        }
        e.fits
    }

    #[test]
    fn the_fast_arithmetic_agrees_with_the_wide_one() {
        for window_ms in [100, 1_000, 1_234, 60_000, 86_400_000, 366 * 86_400_000] {
            let w = SlidingWindow::new(window_ms);
            for t in [
                0,
                1,
                49,
                1_700_000_000_123,
                u64::MAX / 40,
                u64::MAX / 20,
                u64::MAX / 19,
                u64::MAX,
            ] {
                let wide = ((t as u128 * SUB_WINDOWS as u128) / window_ms as u128) as u64;
                assert_eq!(w.sub_window(t), wide, "{window_ms} {t}");
                let b = wide;
                let start = (b as u128 * window_ms as u128)
                    .div_ceil(SUB_WINDOWS as u128)
                    .min(u64::MAX as u128) as u64;
                assert_eq!(w.sub_window_start(b), start, "{window_ms} {b}");
            }
        }
    }

    #[test]
    fn sub_windows_tile_the_timeline() {
        let w = SlidingWindow::new(1_000);
        assert_eq!(w.sub_window(0), 0);
        assert_eq!(w.sub_window(49), 0);
        assert_eq!(w.sub_window(50), 1);
        assert_eq!(w.sub_window_start(1), 50);
        // Windows that do not divide evenly: starts are the first millisecond inside.
        let w = SlidingWindow::new(1_234);
        for b in 0..100 {
            let start = w.sub_window_start(b);
            assert_eq!(w.sub_window(start), b);
            if start > 0 {
                assert!(w.sub_window(start - 1) < b);
            }
        }
    }

    #[test]
    fn admits_exactly_the_limit_then_refuses() {
        let w = SlidingWindow::new(W);
        let (mut ring, mut last) = ([0; RING], 0);
        let t0 = 1_700_000_000_000;
        for i in 0..10 {
            assert!(admit(&w, &mut ring, &mut last, t0 + i, 10), "request {i}");
        }
        assert!(!admit(&w, &mut ring, &mut last, t0 + 10, 10));
        assert!(!admit(&w, &mut ring, &mut last, t0 + W - 1, 10));
    }

    #[test]
    fn the_window_slides_instead_of_resetting() {
        let w = SlidingWindow::new(W);
        let (mut ring, mut last) = ([0; RING], 0);
        let t0 = 1_700_000_000_000 - (1_700_000_000_000 % W); // aligned, for readable times
                                                              // 5 requests at 0s, 5 at 30s: limit 10 reached.
        for _ in 0..5 {
            assert!(admit(&w, &mut ring, &mut last, t0, 10));
        }
        for _ in 0..5 {
            assert!(admit(&w, &mut ring, &mut last, t0 + 30_000, 10));
        }
        assert!(!admit(&w, &mut ring, &mut last, t0 + 59_000, 10));
        // A fixed window would reset at 60s: the sliding window still counts the 30s requests.
        // The first five leave once their sub-window is a full window old (63s here).
        assert!(!admit(&w, &mut ring, &mut last, t0 + 60_000, 10));
        assert!(admit(&w, &mut ring, &mut last, t0 + 63_000, 10));
        for _ in 0..4 {
            assert!(admit(&w, &mut ring, &mut last, t0 + 63_000, 10));
        }
        assert!(!admit(&w, &mut ring, &mut last, t0 + 63_000, 10));
    }

    #[test]
    fn retry_time_is_honest_and_tight() {
        let w = SlidingWindow::new(W);
        let (mut ring, mut last) = ([0; RING], 0);
        let t0 = 1_700_000_013_337;
        for _ in 0..3 {
            assert!(admit(&w, &mut ring, &mut last, t0, 3));
        }
        w.advance(&mut ring, last, t0 + 1_000);
        let e = w.evaluate(&ring, &[], t0 + 1_000, 3, 1);
        assert!(!e.fits);
        let retry = e.retry_at_ms.unwrap();
        assert!(
            retry > t0 + W - 1,
            "the guarantee forbids a 4th request within W of the first"
        );
        assert!(
            retry <= t0 + W + W / SUB_WINDOWS,
            "at most one sub-window late"
        );
        // One millisecond earlier is refused, at the retry time it is admitted.
        let mut probe = ring;
        w.advance(&mut probe, t0 + 1_000, retry - 1);
        assert!(!w.evaluate(&probe, &[], retry - 1, 3, 1).fits);
        let mut probe = ring;
        w.advance(&mut probe, t0 + 1_000, retry);
        assert!(w.evaluate(&probe, &[], retry, 3, 1).fits);
        assert_eq!(
            e.reset_at_ms, retry,
            "with one unit missing, reset and retry agree"
        );
    }

    #[test]
    fn reset_is_when_the_oldest_unit_leaves() {
        let w = SlidingWindow::new(1_000);
        let mut ring = [0; RING];
        w.record(&mut ring, 10_000, 1);
        w.advance(&mut ring, 10_000, 10_500);
        let e = w.evaluate(&ring, &[], 10_500, 5, 1);
        assert!(e.fits);
        assert_eq!(e.remaining, 3);
        assert_eq!(
            e.reset_at_ms, 11_050,
            "the 10.000 s sub-window leaves at 11.050 s"
        );
        let fresh = w.evaluate(&[0; RING], &[], 10_500, 5, 1);
        assert_eq!(fresh.remaining, 4);
        assert_eq!(
            fresh.reset_at_ms, 11_550,
            "a lone request returns one window and one sub-window later"
        );
    }

    #[test]
    fn refusal_reports_no_quota_and_consumes_none() {
        let w = SlidingWindow::new(1_000);
        let mut ring = [0; RING];
        w.record(&mut ring, 0, 2);
        let e = w.evaluate(&ring, &[], 10, 2, 1);
        assert!(!e.fits);
        assert_eq!(e.remaining, 0);
        assert_eq!(ring.iter().sum::<u32>(), 2);
    }

    #[test]
    fn cost_above_the_limit_never_fits() {
        let w = SlidingWindow::new(1_000);
        let e = w.evaluate(&[0; RING], &[], 0, 2, 3);
        assert!(!e.fits);
        assert_eq!(e.retry_at_ms, None);
    }

    #[test]
    fn a_long_pause_clears_everything() {
        let w = SlidingWindow::new(1_000);
        let mut ring = [7; RING];
        w.advance(&mut ring, 0, 5_000);
        assert_eq!(ring, [0; RING]);
    }

    /// The hard guarantee, checked against every interval of a dense, bursty trace.
    #[test]
    fn never_more_than_the_limit_in_any_window() {
        let window = 1_000;
        let limit = 7;
        let w = SlidingWindow::new(window);
        let (mut ring, mut last) = ([0; RING], 0);
        let mut admitted = Vec::new();
        let mut rng = crate::testing::Xorshift(0x2545_f491_4f6c_dd1d);
        let mut t = 1_000_000;
        for _ in 0..20_000 {
            t += rng.below(97); // gaps from 0 to 96 ms: bursts and lulls
            if admit(&w, &mut ring, &mut last, t, limit) {
                admitted.push(t);
            }
        }
        for (i, &start) in admitted.iter().enumerate() {
            let within = admitted[i..]
                .iter()
                .take_while(|&&x| x <= start + window)
                .count();
            assert!(
                within as u64 <= limit,
                "{within} admitted in [{start}, {}]",
                start + window
            );
        }
        // And it is not trivially strict: a client at ~2x its limit gets most of the exact share.
        let span = admitted.last().unwrap() - admitted.first().unwrap();
        let exact_share = span as f64 / window as f64 * limit as f64;
        assert!(
            admitted.len() as f64 > 0.9 * exact_share,
            "{} of {exact_share}",
            admitted.len()
        );
    }
}
