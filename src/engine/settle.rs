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
use super::rule::{LimitedRule, Settling};
use crate::store::SharedStore;

/// What the response says, as far as settling needs it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseFacts {
    /// The status the client got; `None` when the stream ended without a response (reset).
    pub status: Option<u32>,
    /// What the response says the request cost, when it says.
    pub cost: Option<u64>,
}

/// What one rule holds for a request until it settles: `cost` counted in each of the rule's
/// limits for `client` at `at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    rule: usize,
    client: u64,
    cost: u64,
    at_ms: u64,
}

/// What an admitted request holds in the store, to settle at the end of its stream: one entry
/// per charged rule that settles (empty when none does, which the host can skip).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ticket {
    held: SmallVec<[Held; 1]>,
}

impl Ticket {
    /// Holds `cost` of `rule` for `client`, counted at `at_ms`.
    pub(super) fn hold(&mut self, rule: usize, client: u64, cost: u64, at_ms: u64) {
        self.held.push(Held {
            rule,
            client,
            cost,
            at_ms,
        });
    }

    /// Nothing to settle.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// Settles `ticket` with what the response says, at `now_ms`: gives back what a rule does not
/// count, or charges the difference between what the response cost and what was held (the
/// difference is counted at `now_ms`, whatever the limits say: the response has happened).
pub fn settle(
    filter: &Filter,
    store: &dyn SharedStore,
    ticket: &Ticket,
    facts: &ResponseFacts,
    now_ms: u64,
) {
    let attempts = filter.store.cas_attempts;
    for held in &ticket.held {
        let Some(limited) = filter.limited(held.rule) else {
            continue;
        };
        debug_assert!(!limited.refusals_last, "a settling rule remembers refusals");
        settle_rule(limited, store, attempts, held, facts, now_ms);
    }
}

/// What a request that held `held` finally costs under `settling`, given its response.
fn final_cost(settling: &Settling, held: u64, facts: &ResponseFacts) -> u64 {
    let counted = match (&settling.counted, facts.status) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(ranges), Some(status)) => ranges.iter().any(|&(a, b)| (a..=b).contains(&status)),
    };
    match (counted, settling.actual_cost) {
        (false, _) => 0,
        (true, true) => facts.cost.unwrap_or(held),
        (true, false) => held,
    }
}

fn settle_rule(
    limited: &LimitedRule,
    store: &dyn SharedStore,
    attempts: u32,
    held: &Held,
    facts: &ResponseFacts,
    now_ms: u64,
) {
    let cost = final_cost(&limited.settling, held.cost, facts);
    if cost < held.cost {
        let back = held.cost - cost;
        ledger::give_back(limited, store, attempts, (held.client, back, held.at_ms));
    } else if cost > held.cost {
        let more = (held.client, cost - held.cost);
        ledger::charge_more(limited, store, attempts, more, now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{decide, Action, Decision, Filter};
    use crate::store::MemoryStore;
    use crate::testing::FakeRequest;

    const T0: u64 = 1_700_000_000_000;
    const CONFIG: &str = r#"{"rules": [
        {"name": "api", "key": [{"header": "x-api-key"}],
         "limits": [{"requests": 10, "window": "1m"}, {"requests": 100, "window": "1h"}]}
    ]}"#;

    fn filter(settling: Option<Settling>) -> Filter {
        let mut filter = Filter::load(CONFIG.as_bytes()).unwrap();
        if let Some(settling) = settling {
            filter.limited_mut(0).unwrap().settle_with(settling);
        }
        filter
    }

    fn request(key: &str) -> FakeRequest {
        FakeRequest::with(&[(":path", "/x"), ("x-api-key", key)])
    }

    /// The `x-ratelimit-remaining` of a decision (the tighter limit's).
    fn remaining(decision: &Decision) -> u64 {
        let Action::Allow(headers) = &decision.action else {
            panic!("refused: {:?}", decision.action)
        };
        headers[1].1.parse().unwrap()
    }

    fn only_2xx() -> Settling {
        Settling {
            counted: Some(vec![(200, 299)]),
            actual_cost: false,
        }
    }

    #[test]
    fn a_rule_without_settling_gives_an_empty_ticket() {
        let (filter, store) = (filter(None), MemoryStore::new());
        let decision = decide(&filter, &store, &request("k"), T0);
        assert!(decision.ticket.is_empty());
        assert!(filter.limited(0).unwrap().refusals_last);
    }

    #[test]
    fn a_response_that_does_not_count_gives_its_charge_back() {
        let (filter, store) = (filter(Some(only_2xx())), MemoryStore::new());
        assert!(
            !filter.limited(0).unwrap().refusals_last,
            "a settling rule remembers nothing"
        );
        let first = decide(&filter, &store, &request("k"), T0);
        assert_eq!(remaining(&first), 9);
        assert!(!first.ticket.is_empty());
        let failed = ResponseFacts {
            status: Some(503),
            cost: None,
        };
        settle(&filter, &store, &first.ticket, &failed, T0 + 10);
        let second = decide(&filter, &store, &request("k"), T0 + 20);
        assert_eq!(remaining(&second), 9, "the 503 cost nothing");
        let ok = ResponseFacts {
            status: Some(201),
            cost: None,
        };
        settle(&filter, &store, &second.ticket, &ok, T0 + 30);
        assert_eq!(
            remaining(&decide(&filter, &store, &request("k"), T0 + 40)),
            8
        );
        // No response at all (a reset stream) does not count either.
        let third = decide(&filter, &store, &request("k"), T0 + 50);
        settle(
            &filter,
            &store,
            &third.ticket,
            &ResponseFacts::default(),
            T0 + 60,
        );
        assert_eq!(
            remaining(&decide(&filter, &store, &request("k"), T0 + 70)),
            7
        );
    }

    #[test]
    fn the_actual_cost_replaces_what_was_held() {
        let actual = Settling {
            counted: None,
            actual_cost: true,
        };
        let (filter, store) = (filter(Some(actual)), MemoryStore::new());
        let held = decide(&filter, &store, &request("k"), T0);
        assert_eq!(remaining(&held), 9);
        let costly = ResponseFacts {
            status: Some(200),
            cost: Some(6),
        };
        settle(&filter, &store, &held.ticket, &costly, T0 + 100);
        // 6 counted in all: the next request (1) leaves 3 of the minute's 10.
        assert_eq!(
            remaining(&decide(&filter, &store, &request("k"), T0 + 200)),
            3
        );
        // More than the limit is counted too (the response has happened): then refused.
        let next = decide(&filter, &store, &request("k"), T0 + 300);
        let huge = ResponseFacts {
            status: Some(200),
            cost: Some(50),
        };
        settle(&filter, &store, &next.ticket, &huge, T0 + 400);
        let refused = decide(&filter, &store, &request("k"), T0 + 500);
        assert!(matches!(refused.action, Action::Refuse(_)));
        // A response that says it cost nothing gives the hold back; another client is untouched.
        let other = decide(&filter, &store, &request("o"), T0 + 600);
        let free = ResponseFacts {
            status: Some(200),
            cost: Some(0),
        };
        settle(&filter, &store, &other.ticket, &free, T0 + 700);
        assert_eq!(
            remaining(&decide(&filter, &store, &request("o"), T0 + 800)),
            9
        );
    }

    #[test]
    fn a_refused_request_holds_nothing() {
        let (filter, store) = (filter(Some(only_2xx())), MemoryStore::new());
        for _ in 0..10 {
            decide(&filter, &store, &request("k"), T0);
        }
        let refused = decide(&filter, &store, &request("k"), T0);
        assert!(matches!(refused.action, Action::Refuse(_)));
        assert!(refused.ticket.is_empty());
    }
}
