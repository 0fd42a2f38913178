//! A rule's counts in the store: what one request is charged, given back when a later rule of the
//! same request stops it, and settled at the end of its stream. Each is the limiter's pure page
//! transform run in the store's own update loop.

use super::rule::LimitedRule;
use super::stats::Stat;
use crate::costs::{Amounts, Settlement};
use crate::limiter::{Costs, SlotUse, Statuses, Verdict};
use crate::store::{self, SharedStore};

/// What one rule took for a request, and how to give it back.
#[derive(Debug, Clone)]
pub struct Charge {
    /// The rule's index in the config.
    pub rule: usize,
    pub client: u64,
    /// What was counted in each of the rule's limits.
    pub costs: Amounts,
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

/// The page key of `client` in `limited`'s pages.
fn page_key(limited: &LimitedRule, client: u64) -> store::PageKey {
    limited.pages.page(limited.limiter.page_of(client))
}

/// Charges `cost` to `client` in rule `rule`, at the given levels (see [`LimitedRule::levels`]);
/// also gives the rule's stats of how the store placed the client.
pub fn charge(
    store: &dyn SharedStore,
    attempts: u32,
    (rule, limited): (usize, &LimitedRule),
    (client, costs): (u64, Amounts),
    levels: &[u64],
    now_ms: u64,
) -> (Charging, [Option<Stat>; 2]) {
    let key = page_key(limited, client);
    let updated = store::update(store, &key, attempts, |page| {
        (limited.limiter).charge_each(page, client, costs.costs(), levels, now_ms)
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
    let now_ms = result.now_ms;
    let charging = match result.verdict {
        Verdict::Admitted => Charging::Admitted(Charge {
            rule,
            client,
            costs,
            at_ms: now_ms,
            statuses: result.statuses,
            undone: false,
        }),
        Verdict::Refused => Charging::Refused {
            statuses: result.statuses,
            now_ms,
            own_counts_only: result.own_counts_only,
        },
        Verdict::Capacity => Charging::Capacity {
            retry_at_ms: (result.statuses.iter())
                .filter(|s| !s.fits && !limited.is_candidate(s.limit))
                .map(|s| s.retry_at(now_ms))
                .max()
                .unwrap_or(now_ms),
            now_ms,
        },
    };
    (charging, stats)
}

impl Charge {
    /// A rule's statuses for a request it counted nothing for (a refusal shadow mode lets
    /// through): shown in the headers, nothing to give back or settle.
    pub fn nothing_taken(rule: usize, client: u64, statuses: Statuses, at_ms: u64) -> Self {
        Charge {
            rule,
            client,
            costs: Amounts::All(0),
            at_ms,
            statuses,
            undone: true,
        }
    }

    /// Gives back what this charge took (best effort within `attempts`; once); its statuses then
    /// report the quota as it stands.
    pub fn undo(&mut self, limited: &LimitedRule, store: &dyn SharedStore, attempts: u32) {
        if std::mem::replace(&mut self.undone, true) {
            return;
        }
        let key = page_key(limited, self.client);
        let (client, costs, at_ms) = (self.client, self.costs.costs(), self.at_ms);
        let _ = store::update(store, &key, attempts, |page| {
            (limited.limiter.refund_each(page, client, costs, at_ms), ())
        });
        for status in &mut self.statuses {
            let back = self.costs.of(status.limit);
            status.remaining = (status.remaining + back).min(status.requests);
        }
    }

    /// Whether the count stands (it was not given back).
    pub fn stands(&self) -> bool {
        !self.undone
    }
}

/// Settles what `client` held since `at_ms` in `limited`: gives back `settlement.back` where it
/// was counted, and counts `settlement.more` at `now_ms`, whatever the limits say (the response
/// has happened). One store update; best effort within `attempts` (a count that cannot be
/// proven the client's stays counted; see `Limiter::refund`). Returns false when every attempt
/// lost its race: nothing was settled.
pub fn settle(
    limited: &LimitedRule,
    store: &dyn SharedStore,
    attempts: u32,
    (client, at_ms): (u64, u64),
    settlement: &Settlement,
    now_ms: u64,
) -> bool {
    let key = page_key(limited, client);
    let (back, more) = (Costs::Each(&settlement.back), Costs::Each(&settlement.more));
    let updated = store::update(store, &key, attempts, |page| {
        let given = limited.limiter.refund_each(page, client, back, at_ms);
        let added = limited.limiter.add(page, client, more, now_ms);
        (given || added, ())
    });
    updated.is_ok()
}
