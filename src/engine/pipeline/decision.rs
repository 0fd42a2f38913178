//! What the pipeline gives the host for one request.

use super::side::SideCall;
use crate::engine::log::RefusalNote;
use crate::engine::settle::Ticket;
use crate::engine::stats::Events;
use crate::response::{Headers, Reply};

/// What the host does with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Let it through and write nothing.
    Pass,
    /// Let it through and add these headers to the response.
    Allow(Headers),
    /// Answer locally.
    Refuse(Reply),
}

/// The action, what happened on the way (for the stats), what the request holds in the store
/// until it settles, and the refusal to note in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub events: Events,
    /// What an admitted request holds, to settle when its stream ends (`super::settle`); empty
    /// when nothing is to be settled (refused, or no rule that settles).
    pub ticket: Ticket,
    /// A refusal for the refusal log (the host samples these: `RefusalLog`).
    pub refusal: Option<RefusalNote>,
    /// What the filter made of the request, when a limit applied to it (for the access log).
    pub status: Option<RequestStatus>,
    /// Calls to the rate limit service no request waits for (a lease refilled ahead of need):
    /// the host sends them.
    pub side_calls: Vec<SideCall>,
}

/// What the filter made of a request a limit applied to (nginx's `$limit_req_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestStatus {
    Passed,
    Refused,
    /// A refusal that shadow mode (the filter's or a rule's) or a candidate limit let through.
    ShadowRefused,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Passed => "passed",
            RequestStatus::Refused => "refused",
            RequestStatus::ShadowRefused => "shadow_refused",
        }
    }
}

impl Decision {
    /// A request the filter leaves alone.
    pub fn pass() -> Self {
        Decision {
            action: Action::Pass,
            events: Events::new(),
            ticket: Ticket::default(),
            refusal: None,
            status: None,
            side_calls: Vec::new(),
        }
    }
}
