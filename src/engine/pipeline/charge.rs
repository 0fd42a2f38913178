//! Charging one rule of the request: its client key (or what its missing-key policy says), its
//! levels for the client's plan and its cost; then the store, unless this worker remembers a
//! refusal of the client that is still true. Returns how it came out; the pipeline records it.

use super::stop::Stop;
use crate::config::{OnFailure, OnMissingKey};
use crate::engine::filter::Filter;
use crate::engine::ledger::{self, Charge, Charging};
use crate::engine::log::{RefusalNote, Why};
use crate::engine::refusals::RefusalMemory;
use crate::engine::rule::LimitedRule;
use crate::engine::stats::{Event, Events, Stat};
use crate::hash::{client_hash, KeyKind};
use crate::limiter::headline_index;
use crate::request::Request;
use crate::store::SharedStore;

/// One rule to charge: which, for which plan, and the client key found for it (if any).
pub struct Target<'a> {
    pub rule: usize,
    pub limited: &'a LimitedRule,
    pub plan: usize,
    pub key: Option<(KeyKind, Vec<u8>)>,
}

/// How charging one rule came out.
pub enum Step {
    /// Nothing counted, and the request goes on: no key and the rule lets such requests pass,
    /// no limit at any level for the plan, or the store could not decide and
    /// `store.on_contention` lets it pass.
    Skipped,
    /// Counted; `fleet_client` is the client as the rate limit service knows it.
    Admitted { charge: Charge, fleet_client: u64 },
    /// The request stops here, decided at the page clock `at_ms` (0: no clock read).
    Stopped {
        stop: Stop,
        at_ms: u64,
        note: Option<RefusalNote>,
    },
}

/// Charges `target` for the request at `now`; what happened on the way goes to `events`.
pub fn charge(
    filter: &Filter,
    store: &dyn SharedStore,
    refusals: &mut RefusalMemory,
    target: Target,
    request: &Request,
    now: u64,
    events: &mut Events,
) -> Step {
    let Target { rule, limited, .. } = target;
    let (kind, key) = match target.key {
        Some(found) => found,
        None => {
            events.push(Event::Rule {
                rule,
                stat: Stat::MissingKey,
            });
            match limited.on_missing_key {
                OnMissingKey::Shared => (KeyKind::Missing, Vec::new()),
                OnMissingKey::Allow => return Step::Skipped,
                OnMissingKey::Deny => return stopped(Stop::MissingKey, 0, None),
            }
        }
    };
    let levels = limited.levels(target.plan);
    if levels.iter().all(|&level| level == 0) {
        return Step::Skipped; // no limit at any level for this plan
    }
    let cost = limited.cost.of(request);
    let client = client_hash(filter.hash_seed, kind, &key);
    let at = Placed {
        rule,
        plan: target.plan,
        client,
    };
    let charging = charge_or_recall(filter, store, refusals, (at, limited), cost, now, events);
    let step = record(filter, at, charging, events);
    match step {
        Step::Admitted { charge, .. } => {
            // The service knows a client by a hash every Envoy of the fleet computes alike.
            let fleet_client = filter
                .fleet
                .as_ref()
                .map_or(client, |f| client_hash(f.seed, kind, &key));
            Step::Admitted {
                charge,
                fleet_client,
            }
        }
        other => other,
    }
}

/// Whose charge it is: the rule, the client's plan and the client.
#[derive(Clone, Copy)]
struct Placed {
    rule: usize,
    plan: usize,
    client: u64,
}

fn stopped(stop: Stop, at_ms: u64, note: Option<RefusalNote>) -> Step {
    Step::Stopped { stop, at_ms, note }
}

/// Charges the store, unless this worker remembers a refusal of the client that is still true
/// (see [`RefusalMemory`]); remembers a new refusal that will stay true.
fn charge_or_recall(
    filter: &Filter,
    store: &dyn SharedStore,
    refusals: &mut RefusalMemory,
    (at, limited): (Placed, &LimitedRule),
    cost: u64,
    now: u64,
    events: &mut Events,
) -> Charging {
    let Placed { rule, plan, client } = at;
    let lasting = limited.refusals_last && cost == 1;
    if lasting {
        if let Some((statuses, now_ms)) = refusals.recall(rule, plan, client, now) {
            events.push(Event::Rule {
                rule,
                stat: Stat::RefusalRecalled,
            });
            return Charging::Refused {
                statuses,
                now_ms,
                own_counts_only: true,
            };
        }
    }
    let attempts = filter.store.cas_attempts;
    let levels = limited.levels(plan);
    let (charging, stats) = ledger::charge(
        store,
        attempts,
        (rule, limited),
        (client, cost),
        levels,
        now,
    );
    for stat in stats.into_iter().flatten() {
        events.push(Event::Rule { rule, stat });
    }
    if let Charging::Refused {
        statuses,
        now_ms,
        own_counts_only: true,
    } = &charging
    {
        // A reply that lists every limit's remaining quota could change before the retry
        // time (a limit that still fits frees up): such refusals are not remembered.
        let fixed = !filter.response.lists_every_remaining() || statuses.iter().all(|s| !s.fits);
        if lasting && fixed {
            refusals.remember((rule, plan, client), statuses, *now_ms);
        }
    }
    charging
}

/// An admitted charge, or where the request stops (a refusal, or a store that could not decide
/// when its policy is deny), with its note for the refusal log.
fn record(filter: &Filter, at: Placed, charging: Charging, events: &mut Events) -> Step {
    let Placed { rule, plan, client } = at;
    let note = |why, limit| {
        Some(RefusalNote {
            why,
            rule,
            limit,
            client,
            plan,
        })
    };
    match charging {
        Charging::Admitted(charge) => Step::Admitted {
            charge,
            fleet_client: client,
        },
        Charging::Refused {
            statuses, now_ms, ..
        } => {
            let by = headline_index(statuses.iter()).map_or(0, |i| statuses[i].limit);
            events.push(Event::Limit { rule, limit: by });
            let stop = Stop::Refused { rule, statuses };
            stopped(stop, now_ms, note(Why::Refused, Some(by)))
        }
        Charging::Capacity {
            retry_at_ms,
            now_ms,
        } => stopped(
            Stop::Capacity { retry_at_ms },
            now_ms,
            note(Why::Capacity, None),
        ),
        Charging::Contended => {
            events.push(Event::Rule {
                rule,
                stat: Stat::Contention,
            });
            if filter.store.on_contention == OnFailure::Deny {
                return stopped(Stop::Unavailable, 0, note(Why::Contention, None));
            }
            Step::Skipped
        }
    }
}
