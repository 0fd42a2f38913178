//! What a decision checked: every enforced limit's status with the limit it belongs to, at one
//! instant, and the times a refusal tells (the headline limit, the retry time, `Retry-After`).

use super::format::LimitText;
use super::time::seconds_until;
use crate::limiter::{headline_index, LimitStatus};

/// One enforced limit's status, with the limit it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Checked<'a> {
    pub limit: &'a LimitText,
    pub status: LimitStatus,
}

/// Every limit a request was checked against (all applied rules), at one instant.
#[derive(Debug, Clone)]
pub struct Outcome<'a> {
    pub now_ms: u64,
    pub checked: Vec<Checked<'a>>,
    /// The client's plan, when the config has plans.
    pub plan: Option<&'a str>,
    /// The plan's index (which of the bodies rendered at load is this refusal's).
    pub plan_id: usize,
}

impl<'a> Outcome<'a> {
    /// The most restrictive limit: the violated one that frees up last, else the one with the
    /// least quota left.
    pub fn headline(&self) -> Option<&Checked<'a>> {
        headline_index(self.checked.iter().map(|c| &c.status)).map(|i| &self.checked[i])
    }

    /// Every limit checked, the headline (binding) one first, then the others in the
    /// configuration's order.
    pub fn binding_first(&self) -> impl Iterator<Item = &Checked<'a>> {
        let first = headline_index(self.checked.iter().map(|c| &c.status));
        let rest = self.checked.iter().enumerate();
        let rest = rest.filter(move |(i, _)| Some(*i) != first).map(|(_, c)| c);
        first.map(|i| &self.checked[i]).into_iter().chain(rest)
    }

    /// When a refused request can be retried: the latest retry time of the violated limits.
    pub fn retry_at_ms(&self) -> u64 {
        self.checked
            .iter()
            .filter(|c| !c.status.fits)
            .map(|c| c.status.retry_at(self.now_ms))
            .max()
            .unwrap_or(self.now_ms)
    }

    /// Seconds for `Retry-After`: rounded up, at least 1.
    pub fn retry_after_seconds(&self) -> u64 {
        retry_after(self.now_ms, self.retry_at_ms())
    }
}

/// `Retry-After` for a retry admitted at `retry_at_ms`: whole seconds, rounded up, at least 1.
pub fn retry_after(now_ms: u64, retry_at_ms: u64) -> u64 {
    seconds_until(now_ms, retry_at_ms).max(1)
}
