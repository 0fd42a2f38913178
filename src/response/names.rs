//! Which rate-limit headers a style sends, by which names (each overridable, or hidden).

use super::value::HeaderName;
use crate::config::{valid_header_name, Errors, HeaderStyle, HeadersConfig, Report, ResetFormat};

/// The headers a style can send, by the names the configuration uses for them.
const SLOTS: [&str; 5] = ["limit", "remaining", "reset", "policy", "ratelimit"];
pub const LIMIT: usize = 0;
pub const REMAINING: usize = 1;
pub const RESET: usize = 2;
pub const POLICY: usize = 3;
pub const RATELIMIT: usize = 4;

/// The header name in use for each slot; `None` for a header not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderNames(pub [Option<HeaderName>; 5]);

/// The rate-limit headers a format sends: their names, the style and how resets are written,
/// and what refusals add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSet {
    pub names: HeaderNames,
    pub style: HeaderStyle,
    pub reset: ResetFormat,
    /// `retry-after-ms` on refusals.
    pub retry_after_ms: bool,
    /// Refusals asking a longer wait (milliseconds) say `x-should-retry: false`.
    pub max_retry_wait_ms: Option<u64>,
}

impl HeaderSet {
    pub fn compile(headers: &HeadersConfig, errors: &mut Errors) -> Self {
        HeaderSet {
            names: HeaderNames::compile(headers, errors),
            style: headers.style,
            reset: headers.reset,
            retry_after_ms: headers.retry_after_ms,
            max_retry_wait_ms: headers.max_retry_wait.map(|w| w.millis),
        }
    }

    /// Whether a header reports every limit's remaining quota (the IETF draft's `RateLimit`).
    pub fn lists_every_remaining(&self) -> bool {
        self.names.0[RATELIMIT].is_some()
    }

    /// Whether the reset header counts seconds from now (the drafts' own form), not epoch seconds.
    pub fn reset_in_seconds_from_now(&self) -> bool {
        matches!(
            self.style,
            HeaderStyle::IetfDraft06 | HeaderStyle::EnvoyDraft03
        ) || self.reset == ResetFormat::DeltaSeconds
    }

    /// The headers a refusal that waits `wait_ms` adds after `Retry-After`, if any.
    pub fn refusal_extras(&self, wait_ms: u64) -> (Option<u64>, bool) {
        let ms = self.retry_after_ms.then_some(wait_ms.max(1));
        let no_retry = self.max_retry_wait_ms.is_some_and(|bound| wait_ms > bound);
        (ms, no_retry)
    }
}

impl HeaderNames {
    fn for_style(style: HeaderStyle) -> Self {
        let names: [Option<&str>; 5] = match style {
            HeaderStyle::XRateLimit | HeaderStyle::EnvoyDraft03 => [
                Some("x-ratelimit-limit"),
                Some("x-ratelimit-remaining"),
                Some("x-ratelimit-reset"),
                None,
                None,
            ],
            HeaderStyle::IetfDraft06 => [
                Some("ratelimit-limit"),
                Some("ratelimit-remaining"),
                Some("ratelimit-reset"),
                None,
                None,
            ],
            HeaderStyle::IetfDraft11 => [
                None,
                None,
                None,
                Some("ratelimit-policy"),
                Some("ratelimit"),
            ],
            HeaderStyle::None => [None; 5],
        };
        HeaderNames(names.map(|n| n.map(HeaderName::from)))
    }

    /// The style's names with the configured renames and hidden headers applied.
    fn compile(headers: &HeadersConfig, errors: &mut Errors) -> Self {
        let mut names = Self::for_style(headers.style);
        let known = || format!("known: {}", SLOTS.join(", "));
        for (slot, name) in &headers.names {
            let at = format!("$.response.headers.names.{slot}");
            if !valid_header_name(name) {
                errors.add(&at, format!("{name:?} is not a header name"));
            }
            match SLOTS.iter().position(|s| s == slot) {
                Some(i) if names.0[i].is_some() => {
                    names.0[i] = Some(HeaderName::from(name.to_ascii_lowercase()))
                }
                Some(_) => errors.add(
                    at,
                    format!("the {:?} style has no {slot:?} header", headers.style),
                ),
                None => errors.add(at, format!("unknown header {slot:?}; {}", known())),
            }
        }
        for (i, slot) in headers.hide.iter().enumerate() {
            match SLOTS.iter().position(|s| s == slot) {
                Some(s) => names.0[s] = None,
                None => errors.add(
                    format!("$.response.headers.hide[{i}]"),
                    format!("unknown header {slot:?}; {}", known()),
                ),
            }
        }
        names
    }
}
