//! The fleet tier of one charge: after the local tier admitted a rule with fleet-wide limits, a
//! lease or a remembered refusal answers at once, else the rate limit service is asked (or the
//! call in flight for the same client is waited for); its verdict, or its failure under
//! `on_error`, says how the request goes on.

use super::side::SideCall;
use super::stop::Stop;
use crate::config::FleetCounting;
use crate::config::OnFleetError;
use crate::engine::filter::Filter;
use crate::engine::ledger::Charge;
use crate::engine::rule::LimitedRule;
use crate::engine::stats::{Event, Events, Stat};
use crate::fleet::{Clock, FleetCall, FleetMemory, Recall, Verdict};

/// A call to the service for a request's last charge: the request's own (`call`), or one in
/// flight for the same client that it waits for (`None`).
pub struct Asking {
    pub rule: usize,
    pub client: u64,
    pub cost: u64,
    pub call: Option<FleetCall>,
    /// When the call was made: its counts are in that sub-window.
    pub sent: Clock,
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

/// After the local tier admitted `cost` for `client` (as the service knows it); a lease refill
/// asked ahead of need goes to `side` (sent without any request waiting for it).
pub fn ask(
    filter: &Filter,
    memory: &mut FleetMemory,
    (rule, limited, plan): Charged,
    (client, cost): (u64, u64),
    now: u64,
    (events, side): (&mut Events, &mut Vec<SideCall>),
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
    let clock = fleet.clock(settings, now);
    let (key, timeout) = ((rule, client), now + settings.timeout_ms);
    let recall = match settings.counting {
        FleetCounting::Batched => memory.batched(key, (cost, plan), clock, timeout),
        _ => memory.recall(key, cost, settings.lease, clock, timeout),
    };
    let event = |events: &mut Events, stat| events.push(Event::Rule { rule, stat });
    let call = |hits| FleetCall {
        domain: fleet.domain.clone(),
        descriptors: fleet.descriptors(settings, client, filter.plans.shown(plan), now),
        hits,
    };
    let asking = |call| Asking {
        rule,
        client,
        cost,
        call,
        sent: clock,
    };
    match recall {
        Recall::Leased { refill } => {
            event(events, Stat::FleetLeased);
            if let Some(hits) = refill {
                side.push(SideCall::refill(key, call(hits), clock));
            }
            Step::Done
        }
        Recall::Batched => {
            event(events, Stat::FleetBatched);
            Step::Done
        }
        Recall::Refused => refused(filter, (rule, limited), now, events),
        Recall::Join => Step::Ask(asking(None)),
        Recall::Ask { hits } => Step::Ask(asking(Some(call(hits)))),
    }
}

/// The service's verdict on the request's call, or on the call it waited for.
pub fn answered(
    filter: &Filter,
    memory: &mut FleetMemory,
    asking: Asking,
    (verdict, plan): (Verdict, usize),
    now: u64,
    (events, side): (&mut Events, &mut Vec<SideCall>),
) -> Step {
    let rule = asking.rule;
    let Some(limited) = filter.limited(rule).filter(|l| l.fleet.is_some()) else {
        return Step::Done;
    };
    let (client, cost) = (asking.client, asking.cost);
    let Some(call) = asking.call else {
        // Another call for the client answered: its lease or refusal is in memory now.
        return match verdict {
            Verdict::Failed => failed(filter, rule, events),
            _ => ask(
                filter,
                memory,
                (rule, limited, plan),
                (client, cost),
                now,
                (events, side),
            ),
        };
    };
    let event = |events: &mut Events, stat| events.push(Event::Rule { rule, stat });
    event(events, Stat::FleetCalls);
    let key = (rule, client);
    match verdict {
        Verdict::Admitted => {
            event(events, Stat::FleetAdmitted);
            memory.leased(key, (call.hits, cost), asking.sent, now);
            Step::Done
        }
        Verdict::OverLimit if call.hits > cost => {
            let asking = Asking {
                call: Some(call),
                ..asking
            };
            retry_alone(filter, memory, asking, plan, now)
        }
        Verdict::OverLimit => {
            event(events, Stat::FleetRefused);
            memory.refused(key, asking.sent.sub_end, now);
            let step = refused(filter, (rule, limited), now, events);
            if let Step::Refused { retry_at_ms, .. } = step {
                memory.keep_probing(key, retry_at_ms); // batched: still over, still exact
            }
            step
        }
        Verdict::Failed => {
            memory.failed(rule, client);
            failed(filter, rule, events)
        }
    }
}

/// A lease did not fit: ask again, now, for the request alone.
fn retry_alone(
    filter: &Filter,
    memory: &mut FleetMemory,
    mut asking: Asking,
    plan: usize,
    now: u64,
) -> Step {
    let rule = filter.limited(asking.rule);
    let (Some(settings), Some(fleet)) = (&filter.fleet, rule.and_then(|l| l.fleet.as_ref())) else {
        return Step::Done;
    };
    if let Some(call) = asking.call.as_mut() {
        call.hits = asking.cost;
        let plan = filter.plans.shown(plan);
        call.descriptors = fleet.descriptors(settings, asking.client, plan, now);
    }
    memory.asking((asking.rule, asking.client), now + settings.timeout_ms);
    asking.sent = fleet.clock(settings, now);
    Step::Ask(asking)
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
