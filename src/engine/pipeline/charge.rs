//! Charging one rule of the request: its client key (or what its missing-key policy says), its
//! levels for the client's plan and its cost; then the store, unless this worker remembers a
//! refusal of the client that is still true. Returns how it came out; the pipeline records it.

use super::stop::Stop;
use crate::config::{Mode, OnFailure, OnMissingKey};
use crate::costs::Amounts;
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
    /// Counted; `fleet_client` is the client as the rate limit service knows it. `candidate`
    /// notes a candidate limit (`shadow`) the request went over.
    Admitted {
        charge: Charge,
        fleet_client: u64,
        candidate: Option<RefusalNote>,
    },
    /// Refused by a rule in shadow mode: nothing counted, and the request goes on; the rule's
    /// statuses, when a limit refused, for the headers.
    Shadowed {
        charge: Option<Charge>,
        note: RefusalNote,
    },
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
    let (kind, key) = match usable_key(rule, limited, target.key, events) {
        Ok(key) => key,
        Err(None) => return Step::Skipped,
        Err(Some(stop)) => return stopped(stop, 0, None),
    };
    let levels = limited.levels.for_request(target.plan, request);
    if levels.iter().all(|&level| level == 0) {
        return Step::Skipped; // no limit at any level for this plan
    }
    let costs = limited.costs.of(request);
    let client = client_hash(filter.hash_seed, kind, &key);
    let at = Placed {
        rule,
        plan: target.plan,
        client,
    };
    let charging = charge_or_recall(
        filter,
        store,
        refusals,
        (at, limited),
        (costs, &levels),
        now,
        events,
    );
    match record(filter, (at, limited), charging, events) {
        Step::Admitted {
            charge, candidate, ..
        } => {
            // The service knows a client by a hash every Envoy of the fleet computes alike.
            let fleet_client = filter
                .fleet
                .as_ref()
                .map_or(client, |f| client_hash(f.seed, kind, &key));
            Step::Admitted {
                charge,
                fleet_client,
                candidate,
            }
        }
        other => other,
    }
}

/// The key the request counts under (`Ok`), or why it is not counted: passed uncounted
/// (`Err(None)`) or stopped, for an ambiguous key or by `on_missing_key`.
fn usable_key(
    rule: usize,
    limited: &LimitedRule,
    key: Option<(KeyKind, Vec<u8>)>,
    events: &mut Events,
) -> Result<(KeyKind, Vec<u8>), Option<Stop>> {
    match key {
        Some((KeyKind::Ambiguous, source)) => {
            let stat = Stat::AmbiguousKey;
            events.push(Event::Rule { rule, stat });
            let source = String::from_utf8_lossy(&source).into_owned();
            Err(Some(Stop::AmbiguousKey(source)))
        }
        Some(found) => Ok(found),
        None => missing_key(rule, limited, events),
    }
}

/// No key: `on_missing_key` says whether the request counts in the one shared counter (`Ok`),
/// passes uncounted (`Err(None)`), or stops (`Err(Some(_))`).
fn missing_key(
    rule: usize,
    limited: &LimitedRule,
    events: &mut Events,
) -> Result<(KeyKind, Vec<u8>), Option<Stop>> {
    events.push(Event::Rule {
        rule,
        stat: Stat::MissingKey,
    });
    match limited.on_missing_key {
        OnMissingKey::Shared => Ok((KeyKind::Missing, Vec::new())),
        OnMissingKey::Allow => Err(None),
        OnMissingKey::Deny => Err(Some(Stop::MissingKey)),
    }
}

/// Whose charge it is: the rule, the client's plan and the client.
#[derive(Clone, Copy)]
struct Placed {
    rule: usize,
    plan: usize,
    client: u64,
}

impl Placed {
    fn note(self, filter: &Filter, why: Why, limit: Option<usize>) -> RefusalNote {
        RefusalNote {
            why,
            rule: self.rule,
            limit,
            client: self.client,
            plan: self.plan,
            shadow: filter.shadow_for(self.rule),
        }
    }
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
    (costs, levels): (Amounts, &[u64]),
    now: u64,
    events: &mut Events,
) -> Charging {
    let Placed { rule, plan, client } = at;
    let lasting = limited.refusals_last && costs.is_one();
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
    let (charging, stats) = ledger::charge(
        store,
        attempts,
        (rule, limited),
        (client, costs),
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

/// An admitted charge (noting a candidate limit it went over), a refusal by a rule in shadow
/// mode, or where the request stops (a refusal, or a store that could not decide when its policy
/// is deny), with its note for the refusal log.
fn record(
    filter: &Filter,
    (at, limited): (Placed, &LimitedRule),
    charging: Charging,
    events: &mut Events,
) -> Step {
    let rule = at.rule;
    let shadow_rule = limited.mode == Some(Mode::Shadow);
    match charging {
        Charging::Admitted(charge) => Step::Admitted {
            candidate: candidates_over(filter, (at, limited), &charge, events),
            charge,
            fleet_client: at.client,
        },
        Charging::Refused {
            statuses, now_ms, ..
        } => {
            let enforced = statuses.iter().filter(|s| !limited.is_candidate(s.limit));
            let by = headline_index(enforced.clone())
                .and_then(|i| enforced.clone().nth(i))
                .map_or(0, |s| s.limit);
            events.push(Event::Limit { rule, limit: by });
            let note = at.note(filter, Why::Refused, Some(by));
            if shadow_rule {
                events.push(Event::ShadowLimit { rule, limit: by });
                let charge = Charge::nothing_taken(rule, at.client, statuses, now_ms);
                return shadowed(rule, Some(charge), note, events);
            }
            stopped(Stop::Refused { rule, statuses }, now_ms, Some(note))
        }
        Charging::Capacity {
            retry_at_ms,
            now_ms,
        } => {
            let note = at.note(filter, Why::Capacity, None);
            if shadow_rule {
                return shadowed(rule, None, note, events);
            }
            stopped(Stop::Capacity { retry_at_ms }, now_ms, Some(note))
        }
        Charging::Contended => {
            events.push(Event::Rule {
                rule,
                stat: Stat::Contention,
            });
            if filter.store.on_contention == OnFailure::Allow {
                return Step::Skipped;
            }
            let note = at.note(filter, Why::Contention, None);
            if shadow_rule {
                return shadowed(rule, None, note, events);
            }
            stopped(Stop::Unavailable, 0, Some(note))
        }
    }
}

fn shadowed(rule: usize, charge: Option<Charge>, note: RefusalNote, events: &mut Events) -> Step {
    events.push(Event::Rule {
        rule,
        stat: Stat::ShadowRefused,
    });
    Step::Shadowed { charge, note }
}

/// The candidate limits (`shadow`) an admitted request went over: counted as their shadow
/// refusals; the first noted for the log.
fn candidates_over(
    filter: &Filter,
    (at, limited): (Placed, &LimitedRule),
    charge: &Charge,
    events: &mut Events,
) -> Option<RefusalNote> {
    let over = charge.statuses.iter();
    let mut over = over.filter(|s| !s.fits && limited.is_candidate(s.limit));
    let first = over.next()?;
    for status in std::iter::once(first).chain(over) {
        events.push(Event::ShadowLimit {
            rule: at.rule,
            limit: status.limit,
        });
    }
    let mut note = at.note(filter, Why::Refused, Some(first.limit));
    note.shadow = true;
    Some(note)
}
