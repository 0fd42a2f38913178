//! Reserving at the request and settling at the response, against the exact definition.
//!
//! Calls (an LLM's, say) arrive on a fake clock, each with an estimate it holds, the tokens it
//! will really use, how long it stays in flight, and how it ends: answered (counted), failed
//! (given back) or lost (never settled: the process died; the hold expires with the window).
//! Each is replayed through the filter's engine (`decide` at the request, `settle` when the
//! stream ends, on the in-memory store with Envoy's shared-data semantics, optionally with lost
//! compare-and-swap races on every write) and kept in an exact log: the hold at the request's
//! time, made the actual (or 0) when it settles, and any excess over the hold at the settling
//! time. Checked on every trace:
//!
//! - **no admission over the limit**: a call is admitted only if the exact count of the window
//!   ending then, plus its estimate, fits the limit;
//! - **the over-spend bound**: what a window counts exceeds the limit by at most the excesses
//!   (actual − estimate, where positive) settled within it; with estimates that cover the
//!   actuals, never;
//! - **nobody locked out**: a window and a sub-window after the last event, lost holds included,
//!   the client is admitted again;
//! - **races change nothing**: the same trace with lost races on the store gives the same
//!   admissions.
//!
//! The table of post-pay against reservations (printed with
//! `cargo test --release --test settle_accuracy -- --nocapture`) is quoted in the book's
//! "Counting responses" chapter and in BENCHMARKS.md.

use std::cell::Cell;
use std::collections::HashMap;

use envoy_ratelimit_wasm::{
    decide, settle, Action, CasMismatch, Filter, MemoryStore, RequestView, ResponseFacts,
    SharedStore,
};

const T0: u64 = 1_700_000_000_000;
const WINDOW: u64 = 60_000;
const LIMIT: u64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Answered,
    Failed,
    Lost,
}

#[derive(Debug, Clone, Copy)]
struct Call {
    at: u64,
    actual: u64,
    duration: u64,
    end: End,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// `calls` calls over `minutes`, each using 1 to 2 x `mean` - 1 tokens, in flight for up to
/// `max_duration_ms` (what each holds is the replay's choice).
fn trace(seed: u64, calls: u64, minutes: u64, mean: u64, max_duration_ms: u64) -> Vec<Call> {
    let mut rng = Rng(seed);
    let mut out: Vec<Call> = (0..calls)
        .map(|_| {
            let end = match rng.below(20) {
                0 => End::Failed,
                1 => End::Lost,
                _ => End::Answered,
            };
            Call {
                at: T0 + rng.below(minutes * WINDOW),
                actual: 1 + rng.below(2 * mean - 1),
                duration: 1 + rng.below(max_duration_ms),
                end,
            }
        })
        .collect();
    out.sort_by_key(|c| c.at);
    out
}

fn filter() -> Filter {
    let config = format!(
        r#"{{"rules": [{{"name": "llm", "key": [{{"header": "x-key"}}], "counted": ["2xx"],
            "limits": [{{"name": "tokens", "requests": {LIMIT}, "window": "{}s", "unit": "tokens",
              "cost": {{"request": {{"header": "x-estimate", "default": 0, "max": 100000}},
                        "response": {{"header": "x-actual", "max": 100000}}}}}}]}}]}}"#,
        WINDOW / 1000
    );
    Filter::load(config.as_bytes()).expect("the simulator's config loads")
}

/// A request with an estimate.
struct Asking(u64);

impl RequestView for Asking {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        match name {
            ":path" => Some(b"/v1/chat/completions".to_vec()),
            "x-key" => Some(b"client".to_vec()),
            "x-estimate" => Some(self.0.to_string().into_bytes()),
            _ => None,
        }
    }
    fn source_address(&self) -> Option<Vec<u8>> {
        None
    }
    fn route_name(&self) -> Option<Vec<u8>> {
        None
    }
}

/// The in-memory store, where the first write of every update (and, with `racing`, up to two
/// more in a row) loses its race to another worker that wrote the same page.
struct RacingStore {
    inner: MemoryStore,
    racing: bool,
    streak: Cell<u32>,
    lost: Cell<u64>,
}

impl SharedStore for RacingStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasMismatch> {
        if self.racing && self.streak.get() < 2 && cas.is_some() {
            if let (Some(current), Some(now)) = self.inner.get(key) {
                // Another worker rewrites the page first: this write's cas is stale.
                self.inner.set(key, &current, Some(now))?;
                self.streak.set(self.streak.get() + 1);
                self.lost.set(self.lost.get() + 1);
                return Err(CasMismatch);
            }
        }
        self.streak.set(0);
        self.inner.set(key, value, cas)
    }
}

/// What the exact log holds: (time, tokens) entries, the holds made what they settled at.
#[derive(Default)]
struct Exact {
    entries: Vec<(u64, u64)>,
    /// Excesses over holds, by the time they were counted.
    excesses: Vec<(u64, u64)>,
}

impl Exact {
    fn counted(&self, t: u64) -> u64 {
        let inside = |&&(at, _): &&(u64, u64)| at + WINDOW >= t && at <= t;
        self.entries.iter().filter(inside).map(|e| e.1).sum()
    }
    fn excess(&self, t: u64) -> u64 {
        let inside = |&&(at, _): &&(u64, u64)| at + WINDOW >= t && at <= t;
        self.excesses.iter().filter(inside).map(|e| e.1).sum()
    }
}

#[derive(Debug, Default, PartialEq)]
struct Outcome {
    admitted: Vec<bool>,
    /// The most a window counted, and the most it counted over the limit.
    peak: u64,
    over: u64,
    tokens_served: u64,
    lost_races: u64,
}

/// Replays `calls` with each holding `estimate(call)`; checks the invariants on the way.
fn replay(calls: &[Call], estimate: impl Fn(&Call) -> u64, racing: bool) -> Outcome {
    let filter = filter();
    let store = RacingStore {
        inner: MemoryStore::new(),
        racing,
        streak: Cell::new(0),
        lost: Cell::new(0),
    };
    // Arrivals and ends in time order (an end before an arrival at the same millisecond).
    let mut events: Vec<(u64, bool, usize)> = Vec::new();
    for (i, c) in calls.iter().enumerate() {
        events.push((c.at, true, i));
        events.push((c.at + c.duration, false, i));
    }
    events.sort();
    let mut exact = Exact::default();
    let mut tickets = HashMap::new();
    let mut out = Outcome::default();
    let mut slot = vec![usize::MAX; calls.len()];
    for (t, arriving, i) in events {
        let call = calls[i];
        let held = estimate(&call);
        if arriving {
            let decision = decide(&filter, &store, &Asking(held), t);
            let admitted = !matches!(decision.action, Action::Refuse(_));
            if admitted {
                let counted = exact.counted(t);
                assert!(
                    counted + held <= LIMIT,
                    "admitted at {t}: {counted} + {held} > {LIMIT}"
                );
                slot[i] = exact.entries.len();
                exact.entries.push((t, held));
                tickets.insert(i, decision.ticket);
            }
            out.admitted.push(admitted);
        } else if let Some(ticket) = tickets.remove(&i) {
            if call.end == End::Lost {
                continue;
            }
            let status = if call.end == End::Answered { 200 } else { 503 };
            let response = ResponseFacts {
                status: Some(status),
                headers: vec![("x-actual".into(), call.actual.to_string())],
                ..ResponseFacts::default()
            };
            let events = settle(&filter, &store, &ticket, &response, t);
            assert!(!events.is_empty(), "a settle reports what it did");
            let entry = &mut exact.entries[slot[i]];
            if call.end == End::Answered {
                entry.1 = held.min(call.actual);
                if call.actual > held {
                    exact.entries.push((t, call.actual - held));
                    exact.excesses.push((t, call.actual - held));
                }
                out.tokens_served += call.actual;
            } else {
                entry.1 = 0;
            }
        }
        let counted = exact.counted(t);
        let over = counted.saturating_sub(LIMIT);
        assert!(
            over <= exact.excess(t),
            "at {t}: {counted} counted, {over} over the limit, excesses {}",
            exact.excess(t)
        );
        out.peak = out.peak.max(counted);
        out.over = out.over.max(over);
    }
    let last = calls.iter().map(|c| c.at + c.duration).max().unwrap_or(T0);
    let later = last + WINDOW + WINDOW / 20 + 1;
    let again = decide(&filter, &store, &Asking(LIMIT / 2), later);
    assert!(
        !matches!(again.action, Action::Refuse(_)),
        "locked out after every hold expired"
    );
    out.lost_races = store.lost.get();
    out
}

#[test]
fn reservations_hold_the_budget_and_post_pay_does_not() {
    println!("\n{LIMIT} tokens per {} s; calls use 1-199 tokens (mean 100); 1 in 20 fails, 1 in 20 is lost;", WINDOW / 1000);
    println!(
        "the most a window counted / the most over the limit, worst of 5 traces of 10 minutes:"
    );
    println!("| calls/min | in flight up to | post-pay (hold 0) | hold 100 (the mean) | hold = the actual |");
    println!("|---|---|---|---|---|");
    let (mut worst_post, mut worst_mean) = (0, 0);
    for (per_min, max_duration_ms) in [(30, 2_000), (60, 10_000), (120, 30_000)] {
        let mut worst = [(0, 0); 3];
        for seed in 1..=5 {
            let calls = trace(seed, per_min * 10, 10, 100, max_duration_ms);
            let runs = [
                replay(&calls, |_| 0, false),
                replay(&calls, |_| 100, false),
                replay(&calls, |c| c.actual, false),
            ];
            assert_eq!(
                runs[2].over, 0,
                "an estimate that covers the actual never over-spends"
            );
            for (w, run) in worst.iter_mut().zip(&runs) {
                *w = (w.0.max(run.peak), w.1.max(run.over));
            }
        }
        let cells: Vec<String> = worst
            .iter()
            .map(|(peak, over)| format!("{peak} / {over}"))
            .collect();
        println!(
            "| {per_min} | {} s | {} |",
            max_duration_ms / 1000,
            cells.join(" | ")
        );
        (worst_post, worst_mean) = (worst_post.max(worst[0].1), worst_mean.max(worst[1].1));
    }
    assert!(
        worst_post > worst_mean,
        "post-pay over-spends more than a reservation"
    );
}

#[test]
fn lost_races_on_every_write_change_no_admission() {
    for seed in 1..=3 {
        let calls = trace(seed, 600, 10, 100, 10_000);
        let calm = replay(&calls, |_| 100, false);
        let racing = replay(&calls, |_| 100, true);
        assert!(racing.lost_races > 0);
        assert_eq!(calm.admitted, racing.admitted, "seed {seed}");
        assert_eq!((calm.peak, calm.over), (racing.peak, racing.over));
    }
}
