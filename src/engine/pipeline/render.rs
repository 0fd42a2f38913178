//! The last step: the one place a decision becomes what the client sees, and where shadow mode
//! applies.

use super::decision::{Action, RequestStatus};
use super::stop::Stop;
use crate::engine::filter::Filter;
use crate::engine::ledger::Charge;
use crate::engine::stats::Stat;
use crate::limiter::LimitStatus;
use crate::request::Request;
use crate::response::{self, Checked, HeaderValue, Outcome};

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
    /// A refusal was let through on the way (a rule in shadow mode, a candidate limit).
    pub shadowed: bool,
}

/// The action for the client, the request's rule's stat of it, and what the filter made of it.
pub fn render(
    filter: &Filter,
    decided: Decided,
    request: &Request,
) -> (Action, Option<Stat>, Option<RequestStatus>) {
    let (action, stat, status) = decide(filter, &decided, request);
    (with_status_header(filter, action, status), stat, status)
}

fn decide(
    filter: &Filter,
    decided: &Decided,
    request: &Request,
) -> (Action, Option<Stat>, Option<RequestStatus>) {
    let outcome = |refused| outcome(filter, decided, refused);
    let shadow = |rule| filter.shadow_for(rule);
    let let_through = Some(RequestStatus::ShadowRefused);
    match &decided.stop {
        None => {
            let action = allow(filter, &outcome(None));
            let stat = (!decided.charges.is_empty()).then_some(Stat::Allowed);
            let status = match &action {
                Action::Pass => None,
                _ if decided.shadowed => let_through,
                _ => Some(RequestStatus::Passed),
            };
            (action, stat, status)
        }
        Some(Stop::Refused { rule, statuses }) if shadow(*rule) => {
            let action = allow(filter, &outcome(Some((*rule, statuses))));
            (action, Some(Stat::ShadowRefused), let_through)
        }
        Some(Stop::MissingKey | Stop::AmbiguousKey(_)) if shadow(decided.rule) => {
            (Action::Pass, None, let_through)
        }
        Some(Stop::Refused { .. }) => refuse(filter, decided, request),
        Some(_) if shadow(decided.rule) => (Action::Pass, Some(Stat::ShadowRefused), let_through),
        Some(stop) => (
            Action::Refuse(local_reply(filter, decided, stop, request)),
            stop_stat(stop),
            Some(RequestStatus::Refused),
        ),
    }
}

/// A refusal by the client's own limits: the configured reply.
fn refuse(
    filter: &Filter,
    decided: &Decided,
    request: &Request,
) -> (Action, Option<Stat>, Option<RequestStatus>) {
    let Some(Stop::Refused { rule, statuses }) = &decided.stop else {
        return (Action::Pass, None, None);
    };
    let request_id = filter
        .response
        .uses_request_id()
        .then(|| request.header("x-request-id"))
        .flatten()
        .map(|id| String::from_utf8_lossy(&id).into_owned());
    let outcome = outcome(filter, decided, Some((*rule, statuses)));
    let rule_name = &filter.rules[decided.rule].name;
    let grpc = grpc_code(filter, decided.rule, request);
    let reply = response::refusal(&filter.response, &outcome, rule_name, request_id, grpc);
    let refused = Some(RequestStatus::Refused);
    (Action::Refuse(reply), Some(Stat::Refused), refused)
}

/// The gRPC code a refusal by `rule` answers a gRPC request with, `None` for an HTTP reply (a
/// request that is not gRPC, or a rule that keeps HTTP replies). The content type is read only
/// here, on the way to a refusal.
fn grpc_code(filter: &Filter, rule: usize, request: &Request) -> Option<u32> {
    let code = filter.grpc_code(rule)?;
    let content_type = request.header_ref("content-type")?;
    response::is_grpc(&content_type).then_some(code)
}

/// The reply to a stop that is not the client's own limit.
fn local_reply(
    filter: &Filter,
    decided: &Decided,
    stop: &Stop,
    request: &Request,
) -> response::Reply {
    let grpc = grpc_code(filter, decided.rule, request);
    match stop {
        Stop::MissingKey => response::missing_key(&filter.rules[decided.rule].name, grpc.is_some()),
        Stop::AmbiguousKey(source) => {
            response::ambiguous_key(&filter.rules[decided.rule].name, source, grpc.is_some())
        }
        Stop::Capacity { retry_at_ms } => {
            response::capacity(&filter.response, decided.clock, *retry_at_ms, grpc)
        }
        Stop::Unavailable => response::unavailable(grpc.is_some()),
        Stop::FleetFailed | Stop::Refused { .. } => response::service_unavailable(grpc.is_some()),
    }
}

fn stop_stat(stop: &Stop) -> Option<Stat> {
    match stop {
        Stop::MissingKey | Stop::AmbiguousKey(_) => None,
        _ => Some(Stat::Refused),
    }
}

/// The status header, when the configuration names one and a limit applied.
fn with_status_header(filter: &Filter, action: Action, status: Option<RequestStatus>) -> Action {
    let (Some(name), Some(status)) = (filter.response.status_header(), status) else {
        return action;
    };
    let header = (name.clone(), HeaderValue::from(status.as_str()));
    match action {
        Action::Allow(mut headers) => {
            headers.push(header);
            Action::Allow(headers)
        }
        Action::Refuse(mut reply) => {
            reply.headers.push(header);
            Action::Refuse(reply)
        }
        Action::Pass => Action::Allow(vec![header]),
    }
}

/// Every limit checked, in rule order: the charged rules', then the refusing rule's (candidate
/// limits are not shown).
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
            let limited = filter.limited(rule);
            let texts = limited.map_or(&[][..], |l| &l.texts[..]);
            let shown = move |s: &&LimitStatus| !limited.is_some_and(|l| l.is_candidate(s.limit));
            statuses.iter().filter(shown).map(move |status| Checked {
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
