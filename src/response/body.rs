//! The refusal body's presets, the one default message, and the placeholders' values that every
//! refusal by one limit, for one plan, shares (rendered at load).

use serde_json::{json, Value};

use super::template::{Filled, Placeholder};
use crate::config::format_window;

/// The message of a limit that has none of its own, and of both presets.
pub const DEFAULT_MESSAGE: &str =
    "Rate limit exceeded: {{limit}} {{unit}} per {{window}}. Retry in {{retry_after}} seconds.";

/// The body of a refusal when the config names none.
pub fn default_body() -> Value {
    json!({
        "error": "too_many_requests",
        "message": DEFAULT_MESSAGE,
        "policy": "{{policy}}",
        "limit": "{{limit}}",
        "window_seconds": "{{window_seconds}}",
        "retry_after": "{{retry_after}}",
        "reset": "{{reset}}"
    })
}

/// RFC 9457 problem details, with the quota-exceeded problem type of the IETF rate-limit draft.
pub fn problem_json_body() -> Value {
    json!({
        "type": "https://iana.org/assignments/http-problem-types#quota-exceeded",
        "title": "Request cannot be satisfied as assigned quota has been exceeded",
        "status": "{{status}}",
        "detail": DEFAULT_MESSAGE,
        "violated-policies": "{{violated_policies}}"
    })
}

/// What every refusal by one limit, for one plan, says alike (rendered at load); the rest
/// (`None`) changes from request to request.
pub struct FixedValues<'a> {
    pub status: u32,
    /// The limit's name, error code and unit.
    pub name: &'a str,
    pub code: &'a str,
    pub unit: &'a str,
    /// The limit's level for the plan.
    pub requests: u64,
    pub window_ms: u64,
    pub rule: &'a str,
    pub plan: Option<&'a str>,
}

impl FixedValues<'_> {
    pub fn fill(&self, placeholder: Placeholder) -> Option<Filled> {
        Some(match placeholder {
            Placeholder::Limit => Filled::Number(self.requests),
            Placeholder::Window => Filled::Text(format_window(self.window_ms)),
            Placeholder::Unit => Filled::Text(self.unit.to_string()),
            Placeholder::WindowSeconds => Filled::Number(self.window_ms.div_ceil(1000)),
            Placeholder::Policy => Filled::Text(self.name.to_string()),
            Placeholder::Rule => Filled::Text(self.rule.to_string()),
            Placeholder::Status => Filled::Number(self.status as u64),
            Placeholder::Code => Filled::Text(self.code.to_string()),
            Placeholder::Plan => self
                .plan
                .map_or(Filled::Null, |p| Filled::Text(p.to_string())),
            Placeholder::Remaining
            | Placeholder::RetryAfter
            | Placeholder::Reset
            | Placeholder::ResetIso
            | Placeholder::RequestId
            | Placeholder::Message
            | Placeholder::ViolatedPolicies => return None,
        })
    }
}
