//! The last step: the one place a decision becomes what the client sees, and where shadow mode
//! applies.

use super::decision::Action;
use super::stop::Stop;
use crate::engine::filter::Filter;
use crate::engine::ledger::Charge;
use crate::engine::stats::Stat;
use crate::limiter::LimitStatus;
use crate::request::Request;
use crate::response::{self, Checked, Outcome};

/// What was decided, ready to render.
pub struct Decided<'a> {
    /// The request's own rule (its name is the refusal's).
    pub rule: usize,
    pub plan: usize,
    pub stop: Option<Stop>,
    /// Every charge the request made, in rule order (given back already if it stopped).
    pub charges: &'a [Charge],
    /// The latest clock a charge used.
    pub clock: u64,
}

/// The action for the client, and the request's rule's stat of it.
pub fn render(filter: &Filter, decided: Decided, request: &Request) -> (Action, Option<Stat>) {
    let rule_name = &filter.rules[decided.rule].name;
    let outcome = |refused| outcome(filter, &decided, refused);
    match &decided.stop {
        None => {
            let stat = (!decided.charges.is_empty()).then_some(Stat::Allowed);
            (allow(filter, &outcome(None)), stat)
        }
        Some(Stop::Refused { rule, statuses }) if filter.shadow => (
            allow(filter, &outcome(Some((*rule, statuses)))),
            Some(Stat::ShadowRefused),
        ),
        Some(Stop::MissingKey) if filter.shadow => (Action::Pass, None),
        Some(_) if filter.shadow => (Action::Pass, Some(Stat::ShadowRefused)),
        Some(Stop::Refused { rule, statuses }) => {
            let request_id = filter
                .response
                .uses_request_id()
                .then(|| request.header("x-request-id"))
                .flatten()
                .map(|id| String::from_utf8_lossy(&id).into_owned());
            let outcome = outcome(Some((*rule, statuses)));
            let reply = response::refusal(&filter.response, &outcome, rule_name, request_id);
            (Action::Refuse(reply), Some(Stat::Refused))
        }
        Some(Stop::MissingKey) => (Action::Refuse(response::missing_key(rule_name)), None),
        Some(Stop::Capacity { retry_at_ms }) => {
            let reply = response::capacity(&filter.response, decided.clock, *retry_at_ms);
            (Action::Refuse(reply), Some(Stat::Refused))
        }
        Some(Stop::Unavailable) => (Action::Refuse(response::unavailable()), Some(Stat::Refused)),
        Some(Stop::FleetFailed) => (
            Action::Refuse(response::service_unavailable()),
            Some(Stat::Refused),
        ),
    }
}

/// Every limit checked, in rule order: the charged rules', then the refusing rule's.
fn outcome<'f>(
    filter: &'f Filter,
    decided: &Decided,
    refused: Option<(usize, &[LimitStatus])>,
) -> Outcome<'f> {
    let checked = decided
        .charges
        .iter()
        .map(|c| (c.rule, c.statuses.as_slice()))
        .chain(refused)
        .flat_map(|(rule, statuses)| {
            let texts = filter.limited(rule).map_or(&[][..], |l| &l.texts[..]);
            statuses.iter().map(move |status| Checked {
                limit: &texts[status.limit],
                status: *status,
            })
        })
        .collect();
    Outcome {
        now_ms: decided.clock,
        checked,
        plan: filter.plans.shown(decided.plan),
        plan_id: decided.plan,
    }
}

/// Headers for a request let through (none when no limit was enforced).
fn allow(filter: &Filter, outcome: &Outcome) -> Action {
    if outcome.checked.is_empty() {
        return Action::Pass;
    }
    Action::Allow(response::rate_limit_headers(
        &filter.response,
        outcome,
        false,
    ))
}
