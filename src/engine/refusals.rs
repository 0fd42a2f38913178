//! What one worker remembers of the refusals it gave, so that a client that keeps sending while
//! refused costs no store read and no compare-and-swap.
//!
//! Why a remembered refusal is the truth: the limiter refused a request of cost 1 by the client's
//! own counts (nothing inherited from other clients) and said when it fits again, `retry_at` (the
//! first moment the oldest counted sub-window leaves the window, exactly). Until then the client's
//! counts can only grow (other workers admit nothing for it: they see the same counts), and the
//! window only drops whole sub-windows at the times `retry_at` already accounts for. Remembered
//! until the first violated limit's `retry_at`, every status the reply shows stays as it is. The one way
//! the counts could shrink earlier is a count given back, which happens only when something is
//! charged after the rule in the same request; the engine remembers refusals only for rules where
//! nothing ever is (see `LimitedRule::refusals_last`). So every request the memory refuses, the
//! store would have refused too, with the same statuses: the hard guarantee is untouched (the
//! memory only refuses) and so is the lower bound (it never refuses what the store would admit).
//!
//! Bounded: a fixed table of [`SLOTS`] entries per worker, each a client's latest refusal;
//! a newer refusal that lands on a taken slot replaces it (the client behind the old one goes
//! back to the store, which is always right).

use crate::limiter::{LimitStatus, Statuses};

/// Entries per worker (a power of two). An entry is 64 bytes plus 64 per status (one per limit):
/// ~150 KB per worker for rules of one limit.
pub const SLOTS: usize = 1024;

#[derive(Debug, Clone)]
struct Remembered {
    rule: usize,
    plan: usize,
    client: u64,
    /// The clock of the refusal (the page's clock: never before the client's last admission).
    at_ms: u64,
    /// Until when every status stays as it is: the earliest retry time of the violated limits
    /// (the request fits again at the latest; the reply names the violated limits).
    until_ms: u64,
    statuses: Statuses,
}

/// This worker's refusals still true.
#[derive(Debug, Clone, Default)]
pub struct RefusalMemory {
    slots: Vec<Option<Remembered>>,
}

fn index(rule: usize, plan: usize, client: u64) -> usize {
    let mixed = client ^ (rule as u64).rotate_left(32) ^ (plan as u64).rotate_left(48);
    (mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOTS.trailing_zeros())) as usize
}

impl RefusalMemory {
    /// The statuses of the client's refusal in `rule` for `plan`, if it is still true at `now`,
    /// and the clock to report them at.
    pub fn recall(
        &self,
        rule: usize,
        plan: usize,
        client: u64,
        now: u64,
    ) -> Option<(Statuses, u64)> {
        let entry = self.slots.get(index(rule, plan, client))?.as_ref()?;
        let same = entry.rule == rule && entry.plan == plan && entry.client == client;
        let now = now.max(entry.at_ms);
        (same && now < entry.until_ms).then(|| (entry.statuses.clone(), now))
    }

    /// Remembers a refusal of a request of cost 1 by the client's own counts, given at `at_ms`;
    /// one without a retry time (a limit of 0 for the plan) is not remembered.
    pub fn remember(
        &mut self,
        (rule, plan, client): (usize, usize, u64),
        statuses: &[LimitStatus],
        at_ms: u64,
    ) {
        let violated = statuses.iter().filter(|s| !s.fits);
        let Some(until_ms) = violated
            .map(|s| s.retry_at_ms)
            .try_fold(u64::MAX, |earliest, at| at.map(|at| at.min(earliest)))
        else {
            return;
        };
        if until_ms == u64::MAX {
            return; // nothing violated
        }
        if until_ms <= at_ms {
            return;
        }
        if self.slots.is_empty() {
            self.slots = vec![None; SLOTS];
        }
        self.slots[index(rule, plan, client)] = Some(Remembered {
            rule,
            plan,
            client,
            at_ms,
            until_ms,
            statuses: statuses.to_vec(),
        });
    }

    /// How many refusals are remembered (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(limit: usize, fits: bool, retry_at_ms: Option<u64>) -> LimitStatus {
        LimitStatus {
            limit,
            requests: 10,
            window_ms: 60_000,
            fits,
            remaining: 0,
            reset_at_ms: retry_at_ms.unwrap_or(0),
            retry_at_ms,
        }
    }

    #[test]
    fn a_refusal_holds_until_the_first_violated_limit_frees_up() {
        let mut memory = RefusalMemory::default();
        let statuses = [
            status(0, false, Some(5_000)),
            status(1, true, None),
            status(2, false, Some(9_000)),
        ];
        memory.remember((1, 0, 42), &statuses, 1_000);
        let (recalled, at) = memory.recall(1, 0, 42, 2_000).unwrap();
        assert_eq!((recalled.as_slice(), at), (&statuses[..], 2_000));
        assert!(memory.recall(1, 0, 42, 4_999).is_some());
        // Limit 0 fits again at 5,000: the reply would no longer name it.
        assert!(memory.recall(1, 0, 42, 5_000).is_none());
        // Another rule, plan or client is not this refusal.
        assert!(memory.recall(0, 0, 42, 2_000).is_none());
        assert!(memory.recall(1, 1, 42, 2_000).is_none());
        assert!(memory.recall(1, 0, 43, 2_000).is_none());
        // A clock behind the refusal's reports at the refusal's.
        assert_eq!(memory.recall(1, 0, 42, 500).unwrap().1, 1_000);
    }

    #[test]
    fn refusals_without_a_retry_time_are_not_remembered() {
        let mut memory = RefusalMemory::default();
        memory.remember((0, 0, 7), &[status(0, false, None)], 1_000);
        memory.remember((0, 0, 8), &[status(0, true, None)], 1_000);
        assert!(memory.recall(0, 0, 7, 1_000).is_none());
        assert!(memory.recall(0, 0, 8, 1_000).is_none());
        assert_eq!(memory.len(), 0);
    }

    #[test]
    fn memory_is_bounded_whatever_the_number_of_clients() {
        let mut memory = RefusalMemory::default();
        for client in 0..100_000u64 {
            let hash = client.wrapping_mul(0x2545_f491_4f6c_dd1d);
            memory.remember((0, 0, hash), &[status(0, false, Some(60_000))], 1_000);
        }
        assert!(memory.len() <= SLOTS);
        assert!(
            memory.len() > SLOTS / 2,
            "the table is used: {}",
            memory.len()
        );
        // The latest refusal is always there.
        let last = 99_999u64.wrapping_mul(0x2545_f491_4f6c_dd1d);
        assert!(memory.recall(0, 0, last, 2_000).is_some());
    }
}
