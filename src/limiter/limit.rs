//! What one limit is (its level, window and name), what a request costs in a rule's limits, and
//! what a charge came out as: the limiter's vocabulary, shared by the engine and the renderer.

use crate::config::MAX_REQUESTS;
use crate::config::{format_window, Errors, LimitConfig, Report, Requests};

pub const MIN_WINDOW_MS: u64 = 100;

/// Every enforced limit's status for one request. A `Vec`, not an inline list: statuses travel
/// by value from the limiter to the reply, and in V8 each move of a value over 64 bytes is a
/// call out of the VM (`memory.copy`), dearer than the one allocation (BENCHMARKS.md).
pub type Statuses = Vec<LimitStatus>;
pub const MAX_WINDOW_MS: u64 = 366 * 86_400_000;

/// One limit: a window and, per plan, the requests it admits (0: no limit for that plan).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limit {
    pub window_ms: u64,
    pub requests: Vec<u64>,
    /// The largest level a request may bring beyond its plan's (`requests_from.max`; 0: none):
    /// the page's counters are sized for it.
    pub ceiling: u64,
}

impl Limit {
    /// `plans` names the plans (index = plan id) and says whether the configuration declares
    /// them (else the one implicit plan).
    pub fn compile(
        limit: &LimitConfig,
        (plans, declared): (&[String], bool),
        at: &str,
        errors: &mut Errors,
    ) -> Self {
        let check_level = |errors: &mut Errors, path: String, n: u64| {
            if n > MAX_REQUESTS {
                let message = format!("must be between 0 (no limit) and {MAX_REQUESTS}, got {n}");
                errors.add(path, message);
            }
        };
        let requests = match &limit.requests {
            Requests::All(n) => {
                check_level(errors, format!("{at}.requests"), *n);
                vec![*n; plans.len()]
            }
            Requests::PerPlan(levels) => {
                let mut per_plan = vec![0; plans.len()];
                for (plan, &n) in levels {
                    let path = format!("{at}.requests.{plan}");
                    check_level(errors, path.clone(), n);
                    match plans.iter().position(|p| p == plan) {
                        Some(p) => per_plan[p] = n,
                        None if !declared => {
                            errors.add(path, "requests per plan need \"plans\" at the top level")
                        }
                        None => errors.add(path, format!("{plan:?} is not one of plans.names")),
                    }
                }
                per_plan
            }
        };
        let window_ms = limit.window.millis;
        if !(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&window_ms) {
            let message = format!(
                "must be between 100ms and 366d, got {}",
                format_window(window_ms)
            );
            errors.add(format!("{at}.window"), message);
        }
        Limit {
            window_ms: window_ms.max(1),
            requests,
            ceiling: limit
                .requests_from
                .as_ref()
                .map_or(0, |r| r.max.min(MAX_REQUESTS)),
        }
    }
}

/// What a request costs in each of a rule's limits: the same in every one, or one each (a token
/// limit beside a request limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Costs<'a> {
    All(u64),
    Each(&'a [u64]),
}

impl Costs<'_> {
    /// The cost in limit `limit`.
    pub fn of(&self, limit: usize) -> u64 {
        match self {
            Costs::All(cost) => *cost,
            Costs::Each(costs) => costs.get(limit).copied().unwrap_or(0),
        }
    }

    /// The cost in limit `limit` as a ring's counter adds it (saturating).
    pub(super) fn counted(&self, limit: usize) -> u32 {
        u32::try_from(self.of(limit)).unwrap_or(u32::MAX)
    }

    /// Whether it costs 1 in every limit (a first request the doorkeeper can hold).
    pub fn is_one(&self) -> bool {
        match self {
            Costs::All(cost) => *cost == 1,
            Costs::Each(costs) => costs.iter().all(|&c| c == 1),
        }
    }
}

/// How a charge came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Under every limit; counted.
    Admitted,
    /// Over at least one limit by the client's own counts; nothing counted.
    Refused,
    /// Over only through counts inherited from the page's summary (an estimate that includes
    /// other clients' requests, kept for lack of room): a capacity refusal; nothing counted.
    Capacity,
}

/// One limit's view of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStatus {
    /// The limit's index in its rule.
    pub limit: usize,
    pub requests: u64,
    pub window_ms: u64,
    pub fits: bool,
    pub remaining: u64,
    pub reset_at_ms: u64,
    /// When a request of the same cost fits again (refused limits only); `None` if it never can.
    pub retry_at_ms: Option<u64>,
}

impl LimitStatus {
    /// When a request refused by this limit fits again: its retry time, or for a cost that never
    /// fits, one window from `now_ms` (the one retry-time rule of every reply).
    pub fn retry_at(&self, now_ms: u64) -> u64 {
        self.retry_at_ms.unwrap_or(now_ms + self.window_ms)
    }
}

/// What one charge decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charged {
    pub verdict: Verdict,
    /// Every enforced limit's status (own and inherited counts together).
    pub statuses: Statuses,
    /// The clock the decision used: the page's clock, which never runs backwards.
    pub now_ms: u64,
    /// How an admitted request's client got its slot.
    pub slot: SlotUse,
    /// Over quota only through inherited counts: a capacity refusal, or (when the limiter admits
    /// those, `store.on_full: allow`) an admission counted beyond the estimate.
    pub over_capacity: bool,
    /// Every violated limit counted the client's own requests only (nothing inherited): such a
    /// refusal stays true until its retry time unless quota is given back.
    pub own_counts_only: bool,
}

/// How the client's slot was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotUse {
    /// Nothing was written (refused).
    None,
    /// The client's own slot.
    Own,
    /// A never-used slot: one more client tracked exactly.
    Claimed,
    /// The slot of a client without any count in its windows (nothing to keep).
    Reused,
    /// The slot of a client with counts, which went into the page's summary.
    Evicted,
    /// No slot: a first request, recorded in the summary's doorkeeper.
    Door,
}

/// The most restrictive of several limit statuses: when any is violated, the violated limit that
/// frees up last; else the one with the least quota left (on a tie, the one that resets last).
pub fn headline_index<'a>(
    statuses: impl Iterator<Item = &'a LimitStatus> + Clone,
) -> Option<usize> {
    let indexed = statuses.enumerate();
    if indexed.clone().any(|(_, s)| !s.fits) {
        indexed
            .filter(|(_, s)| !s.fits)
            .max_by_key(|(_, s)| s.retry_at_ms.unwrap_or(u64::MAX))
            .map(|(i, _)| i)
    } else {
        indexed
            .min_by(|(_, a), (_, b)| {
                a.remaining
                    .cmp(&b.remaining)
                    .then(b.reset_at_ms.cmp(&a.reset_at_ms))
            })
            .map(|(i, _)| i)
    }
}

/// Deliberately broken variants of the store, for tests that prove their checks can fail (only
/// the tests' builds can make one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutant {
    /// A client without a slot is judged as if the summary held nothing for it.
    InheritsNothing,
    /// An evicted client's counts are dropped instead of going into the summary.
    ForgetsEvicted,
    /// A first request admitted without a slot is not recorded.
    UnrecordedDoor,
}
