//! The refusal body: the presets, the one default message, and what each placeholder is filled
//! with for a refused request.

use serde_json::{json, Value};

use super::template::{Filled, Placeholder, Placeholders, TextTemplate};
use super::time::iso8601_utc;
use super::{Checked, LimitText};
use crate::config::format_window;

/// The message of a limit that has none of its own, and of both presets.
pub const DEFAULT_MESSAGE: &str =
    "Rate limit exceeded: {{limit}} requests per {{window}}. Retry in {{retry_after}} seconds.";

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

/// What the placeholders of a refusal are filled with.
pub struct RefusalValues<'a> {
    pub status: u32,
    pub headline: Checked<'a>,
    /// Every limit checked (the violated ones are named by `{{violated_policies}}`).
    pub checked: &'a [Checked<'a>],
    pub retry_after: u64,
    pub retry_at_ms: u64,
    pub rule: &'a str,
    pub plan: Option<&'a str>,
    pub request_id: Option<String>,
    pub default_message: &'a TextTemplate,
}

impl Placeholders for RefusalValues<'_> {
    fn fill(&self, placeholder: Placeholder) -> Filled {
        let status = &self.headline.status;
        match placeholder {
            Placeholder::Remaining => Filled::Number(status.remaining),
            Placeholder::RetryAfter => Filled::Number(self.retry_after),
            Placeholder::Reset => Filled::Number(self.retry_at_ms.div_ceil(1000)),
            Placeholder::ResetIso => Filled::Text(iso8601_utc(self.retry_at_ms)),
            Placeholder::RequestId => self.request_id.clone().map_or(Filled::Null, Filled::Text),
            Placeholder::Message => Filled::Text(
                self.headline
                    .limit
                    .message
                    .as_ref()
                    .unwrap_or(self.default_message)
                    .render(self),
            ),
            Placeholder::ViolatedPolicies => Filled::List(
                self.checked
                    .iter()
                    .filter(|c| !c.status.fits)
                    .map(|c| c.limit.name.clone())
                    .collect(),
            ),
            other => FixedValues {
                status: self.status,
                limit: self.headline.limit,
                requests: status.requests,
                window_ms: status.window_ms,
                rule: self.rule,
                plan: self.plan,
            }
            .fill(other)
            .unwrap_or(Filled::Null),
        }
    }
}

/// What every refusal by one limit, for one plan, says alike (rendered at load); the rest
/// (`None`) changes from request to request.
pub struct FixedValues<'a> {
    pub status: u32,
    pub limit: &'a LimitText,
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
            Placeholder::WindowSeconds => Filled::Number(self.window_ms.div_ceil(1000)),
            Placeholder::Policy => Filled::Text(self.limit.name.clone()),
            Placeholder::Rule => Filled::Text(self.rule.to_string()),
            Placeholder::Status => Filled::Number(self.status as u64),
            Placeholder::Code => Filled::Text(self.limit.code.clone()),
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
