//! Charging one rule for a request: the limiter's pure page transform run inside the store's
//! compare-and-swap loop, and the undo that gives back what a charge took when a later rule
//! refuses the same request.

use super::rule::LimitedRule;
use super::stats::Stat;
use crate::limiter::{SlotUse, Statuses, Verdict};
use crate::store::{self, SharedStore};

/// What one rule took for a request, and how to give it back.
#[derive(Debug, Clone)]
pub struct Charge {
    /// The rule's index in the config.
    pub rule: usize,
    client: u64,
    cost: u64,
    /// The clock the charge counted at.
    pub at_ms: u64,
    /// The rule's enforced limits after the charge.
    pub statuses: Statuses,
    /// Whether the count was given back already.
    undone: bool,
}

/// How charging one rule came out.
#[derive(Debug, Clone)]
pub enum Charging {
    Admitted(Charge),
    /// Over a limit by the client's own counts: nothing taken; every enforced limit's status at
    /// `now_ms`.
    Refused {
        statuses: Statuses,
        now_ms: u64,
        /// Refused by the client's own counts alone (nothing inherited from other clients).
        own_counts_only: bool,
    },
    /// Over only through counts the store inherited for lack of room (a capacity refusal):
    /// nothing taken; a request is admitted again from `retry_at_ms`.
    Capacity {
        retry_at_ms: u64,
        now_ms: u64,
    },
    /// Every compare-and-swap attempt lost its race: the store could not decide.
    Contended,
}

/// Charges `cost` to `client` in rule `rule`, at the given levels (see [`LimitedRule::levels`]);
/// also gives the rule's stats of how the store placed the client.
pub fn charge(
    store: &dyn SharedStore,
    attempts: u32,
    (rule, limited): (usize, &LimitedRule),
    client: u64,
    cost: u64,
    levels: &[u64],
    now_ms: u64,
) -> (Charging, [Option<Stat>; 2]) {
    let key = limited.pages.page(limited.limiter.page_of(client));
    let updated = store::update(store, &key, attempts, |page| {
        limited.limiter.charge(page, client, cost, levels, now_ms)
    });
    let Ok(store::Updated { result, .. }) = updated else {
        return (Charging::Contended, [None, None]);
    };
    let placed = match result.slot {
        SlotUse::Claimed => Some(Stat::ClientTracked),
        SlotUse::Evicted => Some(Stat::ClientEvicted),
        SlotUse::Door => Some(Stat::DoorAdmitted),
        SlotUse::Own | SlotUse::Reused | SlotUse::None => None,
    };
    let stats = [
        placed,
        result.over_capacity.then_some(Stat::CapacityRefused),
    ];
    let charging = match result.verdict {
        Verdict::Admitted => Charging::Admitted(Charge {
            rule,
            client,
            cost,
            at_ms: result.now_ms,
            statuses: result.statuses,
            undone: false,
        }),
        Verdict::Refused => Charging::Refused {
            statuses: result.statuses,
            now_ms: result.now_ms,
            own_counts_only: result.own_counts_only,
        },
        Verdict::Capacity => Charging::Capacity {
            retry_at_ms: result
                .statuses
                .iter()
                .filter(|s| !s.fits)
                .map(|s| s.retry_at_ms.unwrap_or(result.now_ms + s.window_ms))
                .max()
                .unwrap_or(result.now_ms),
            now_ms: result.now_ms,
        },
    };
    (charging, stats)
}

impl Charge {
    /// Gives back what this charge took (best effort within `attempts`; once); its statuses then
    /// report the quota as it stands.
    pub fn undo(&mut self, limited: &LimitedRule, store: &dyn SharedStore, attempts: u32) {
        if std::mem::replace(&mut self.undone, true) {
            return;
        }
        let key = limited.pages.page(limited.limiter.page_of(self.client));
        let _ = store::update(store, &key, attempts, |page| {
            limited
                .limiter
                .refund(page, self.client, self.cost, self.at_ms)
        });
        for status in &mut self.statuses {
            status.remaining = (status.remaining + self.cost).min(status.requests);
        }
    }
}
