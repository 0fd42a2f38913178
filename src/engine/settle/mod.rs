//! The second phase of a request: when its stream ends, what its response says (its status, and
//! what it cost) settles what the request holds in the store. A rule that counts only some
//! responses gives back the charge of one it does not count; a rule that charges what the
//! response cost counts the difference, more or back. Both go through the same store loop as the
//! charge itself.
//!
//! **The refusal memory's invariant** (see `super::refusals`): a refusal is remembered only while
//! nothing can give quota back or change the client's counts but the client's own new requests.
//! Settling does both, so a rule that settles never remembers refusals
//! (`LimitedRule::refusals_last` is false for it, decided at load); [`settle`] relies on that and
//! asserts it.

use smallvec::SmallVec;

use super::filter::Filter;
use super::ledger;
use super::stats::{Event, Events, Stat};
use crate::costs::{Amounts, Response, ResponseView};
use crate::store::SharedStore;

/// What one rule holds for a request until it settles: `amounts` counted in the rule's limits
/// for `client` at `at_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    rule: usize,
    client: u64,
    amounts: Amounts,
    at_ms: u64,
}

/// What an admitted request holds in the store, to settle at the end of its stream: one entry
/// per charged rule that settles (empty when none does, which the host can skip).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ticket {
    held: SmallVec<[Held; 1]>,
}

impl Ticket {
    /// Holds `amounts` of `rule` for `client`, counted at `at_ms`.
    pub(super) fn hold(&mut self, rule: usize, client: u64, amounts: Amounts, at_ms: u64) {
        self.held.push(Held {
            rule,
            client,
            amounts,
            at_ms,
        });
    }

    /// Nothing to settle.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// Settles `ticket` with what the response says, at `now_ms`: in each limit, gives back what a
/// response that does not count held, or counts the difference between what the response says
/// it cost and what was held (the difference is counted at `now_ms`, whatever the limits say:
/// the response has happened). Returns what happened, for the stats.
pub fn settle(
    filter: &Filter,
    store: &dyn SharedStore,
    ticket: &Ticket,
    response: &dyn ResponseView,
    now_ms: u64,
) -> Events {
    let response = Response::new(response);
    let mut events = Events::new();
    let attempts = filter.store.cas_attempts;
    for held in &ticket.held {
        let Some(limited) = filter.limited(held.rule) else {
            continue;
        };
        debug_assert!(!limited.refusals_last, "a settling rule remembers refusals");
        let settlement = limited.costs.settle(&held.amounts, &response);
        let rule = held.rule;
        for (limit, (&back, &more)) in settlement.back.iter().zip(&settlement.more).enumerate() {
            let settled = held.amounts.of(limit) + more - back;
            events.push(Event::Settled {
                rule,
                limit,
                units: settled,
            });
            if more > 0 {
                events.push(Event::Overspent {
                    rule,
                    limit,
                    units: more,
                });
            }
        }
        if settlement.uncounted {
            events.push(Event::Rule {
                rule,
                stat: Stat::GivenBack,
            });
        }
        let at = (held.client, held.at_ms);
        if !settlement.is_empty()
            && !ledger::settle(limited, store, attempts, at, &settlement, now_ms)
        {
            // Every attempt lost its race: what went back stays counted, what was more is lost.
            events.push(Event::Rule {
                rule,
                stat: Stat::Contention,
            });
        }
    }
    events
}

#[cfg(test)]
mod tests;
