//! The fleet tier of one charge: after the local tier admitted a rule with fleet-wide limits, a
//! lease or a remembered refusal answers at once, else the rate limit service is asked (or the
//! call in flight for the same client is waited for); its verdict, or its failure under
//! `on_error`, says how the request goes on.

use super::stop::Stop;
use crate::config::OnFleetError;
use crate::engine::filter::Filter;
use crate::engine::ledger::Charge;
use crate::engine::rule::LimitedRule;
use crate::engine::stats::{Event, Events, Stat};
use crate::fleet::{FleetCall, FleetMemory, Recall, Verdict};

/// A call to the service for a request's last charge: the request's own (`call`), or one in
/// flight for the same client that it waits for (`None`).
pub struct Asking {
    pub rule: usize,
    pub client: u64,
    pub cost: u64,
    pub call: Option<FleetCall>,
}

/// What the fleet tier made of a charge the local tier admitted.
pub enum Step {
    /// Nothing more to do: no fleet-wide limit for the plan, a lease covered the request, or the
    /// service failed and `on_error: local` lets the local count decide.
    Done,
    /// Ask the service (or wait for the call in flight).
    Ask(Asking),
    /// The service failed and `on_error: allow` lets the request through counted nowhere: give
    /// back the local count.
    GiveBack,
    /// The service refused the rule's fleet-wide limits until `retry_at_ms`.
    Refused { rule: usize, retry_at_ms: u64 },
    /// The service failed and `on_error: deny` refuses the request.
    Failed,
}

/// One charge's rule and the client's plan.
pub type Charged<'a> = (usize, &'a LimitedRule, usize);

/// After the local tier admitted `cost` for `client` (as the service knows it).
pub fn ask(
    filter: &Filter,
    memory: &mut FleetMemory,
    (rule, limited, plan): Charged,
    (client, cost): (u64, u64),
    now: u64,
    events: &mut Events,
) -> Step {
    let (Some(settings), Some(fleet)) = (&filter.fleet, &limited.fleet) else {
        return Step::Done;
    };
    if fleet
        .limits
        .iter()
        .all(|l| limited.levels(plan)[l.limit] == 0)
    {
        return Step::Done; // no fleet-wide limit for this plan
    }
    let asking = |call| Asking {
        rule,
        client,
        cost,
        call,
    };
    match memory.recall(rule, client, cost, now) {
        Recall::Leased => {
            events.push(Event::Rule {
                rule,
                stat: Stat::FleetLeased,
            });
            Step::Done
        }
        Recall::Refused => refused(filter, (rule, limited), now, events),
        Recall::Join => Step::Ask(asking(None)),
        Recall::Ask => {
            let call = FleetCall {
                domain: fleet.domain.clone(),
                descriptors: fleet.descriptors(settings, client, filter.plans.shown(plan), now),
                hits: settings.lease.max(cost),
            };
            memory.asking(rule, client, now + settings.timeout_ms, now);
            Step::Ask(asking(Some(call)))
        }
    }
}

/// The service's verdict on the request's call, or on the call it waited for.
pub fn answered(
    filter: &Filter,
    memory: &mut FleetMemory,
    asking: Asking,
    (verdict, plan): (Verdict, usize),
    now: u64,
    events: &mut Events,
) -> Step {
    let rule = asking.rule;
    let (Some(settings), Some(limited)) = (&filter.fleet, filter.limited(rule)) else {
        return Step::Done;
    };
    let Some(fleet) = &limited.fleet else {
        return Step::Done;
    };
    let (client, cost) = (asking.client, asking.cost);
    let Some(mut call) = asking.call else {
        // Another request's call answered: its lease or refusal is in memory now.
        return match verdict {
            Verdict::Failed => failed(filter, rule, events),
            _ => ask(
                filter,
                memory,
                (rule, limited, plan),
                (client, cost),
                now,
                events,
            ),
        };
    };
    let event = |events: &mut Events, stat| events.push(Event::Rule { rule, stat });
    event(events, Stat::FleetCalls);
    let until = fleet.valid_until(settings, now);
    match verdict {
        Verdict::Admitted => {
            event(events, Stat::FleetAdmitted);
            memory.leased(rule, client, call.hits - cost, until, now);
            Step::Done
        }
        Verdict::OverLimit if call.hits > cost => {
            // A lease did not fit: ask again for this request alone.
            call.hits = cost;
            memory.asking(rule, client, now + settings.timeout_ms, now);
            Step::Ask(Asking {
                call: Some(call),
                ..asking
            })
        }
        Verdict::OverLimit => {
            event(events, Stat::FleetRefused);
            memory.refused(rule, client, until, now);
            refused(filter, (rule, limited), now, events)
        }
        Verdict::Failed => {
            memory.failed(rule, client);
            failed(filter, rule, events)
        }
    }
}

/// No usable answer from the service: `on_error` decides.
fn failed(filter: &Filter, rule: usize, events: &mut Events) -> Step {
    let Some(settings) = &filter.fleet else {
        return Step::Done;
    };
    events.push(Event::Rule {
        rule,
        stat: Stat::FleetFailed,
    });
    match settings.on_error {
        OnFleetError::Local => Step::Done,
        OnFleetError::Allow => Step::GiveBack,
        OnFleetError::Deny => Step::Failed,
    }
}

fn refused(
    filter: &Filter,
    (rule, limited): (usize, &LimitedRule),
    now: u64,
    events: &mut Events,
) -> Step {
    let (Some(settings), Some(fleet)) = (&filter.fleet, &limited.fleet) else {
        return Step::Done;
    };
    if let Some(limit) = fleet.limits.first() {
        events.push(Event::Limit {
            rule,
            limit: limit.limit,
        });
    }
    let retry_at_ms = fleet.retry_at(settings, now);
    Step::Refused { rule, retry_at_ms }
}

/// The refusal the service's verdict makes of `charge` (its local count given back already):
/// the rule's statuses as they stand, its fleet-wide limits exhausted until `retry_at_ms`.
pub fn refusal(filter: &Filter, charge: Charge, retry_at_ms: u64) -> Stop {
    let fleet_limits = filter.limited(charge.rule).and_then(|l| l.fleet.as_ref());
    let mut statuses = charge.statuses;
    for status in &mut statuses {
        if fleet_limits.is_some_and(|f| f.limits.iter().any(|l| l.limit == status.limit)) {
            status.fits = false;
            status.remaining = 0;
            status.reset_at_ms = retry_at_ms;
            status.retry_at_ms = Some(retry_at_ms);
        }
    }
    Stop::Refused {
        rule: charge.rule,
        statuses,
    }
}
