//! Why charging stopped before the last rule: what a step of the pipeline returns to end it, and
//! what `render` turns into the reply.

use crate::limiter::Statuses;

#[derive(Debug, Clone)]
pub enum Stop {
    /// A limit of `rule` refused (locally, or the rate limit service for its fleet-wide limits);
    /// every enforced limit's status.
    Refused { rule: usize, statuses: Statuses },
    /// No key, and the rule says deny.
    MissingKey,
    /// A key source (named) held several different values, and the rule says deny.
    AmbiguousKey(String),
    /// Over only through counts inherited for lack of room, and `store.on_full` says deny.
    Capacity { retry_at_ms: u64 },
    /// The store could not decide, and `store.on_contention` says deny.
    Unavailable,
    /// The service failed and `on_error` says deny.
    FleetFailed,
}
