//! What each placeholder of a refusal body is filled with for one refused request.

use super::body::FixedValues;
use super::outcome::Checked;
use super::template::{Filled, Placeholder, Placeholders, TextTemplate};
use super::time::iso8601_utc;

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

impl RefusalValues<'_> {
    /// The headline limit's message (its own, else the default one), as the body says it.
    pub fn message(&self) -> String {
        let template = self.headline.limit.message.as_ref();
        template.unwrap_or(self.default_message).render(self)
    }
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
            Placeholder::Message => Filled::Text(self.message()),
            Placeholder::ViolatedPolicies => Filled::List(
                self.checked
                    .iter()
                    .filter(|c| !c.status.fits)
                    .map(|c| c.limit.name.clone())
                    .collect(),
            ),
            other => FixedValues {
                status: self.status,
                name: &self.headline.limit.name,
                code: &self.headline.limit.code,
                unit: &self.headline.limit.unit,
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
