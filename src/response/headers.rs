//! The rate-limit headers: which names each style uses (overridable per header), and their values
//! for an outcome.

use super::time::seconds_until;
use super::{HeaderName, HeaderValue, Headers, Outcome, ResponseFormat};
use crate::config::{valid_header_name, Errors, HeaderStyle, HeadersConfig, Report, ResetFormat};

/// The headers a style can send, by the names the configuration uses for them.
const SLOTS: [&str; 5] = ["limit", "remaining", "reset", "policy", "ratelimit"];
const LIMIT: usize = 0;
const REMAINING: usize = 1;
const RESET: usize = 2;
const POLICY: usize = 3;
const RATELIMIT: usize = 4;

/// The header name in use for each slot; `None` for a header not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderNames([Option<HeaderName>; 5]);

impl HeaderNames {
    fn for_style(style: HeaderStyle) -> Self {
        let names: [Option<&str>; 5] = match style {
            HeaderStyle::XRateLimit => [
                Some("x-ratelimit-limit"),
                Some("x-ratelimit-remaining"),
                Some("x-ratelimit-reset"),
                None,
                None,
            ],
            HeaderStyle::Draft03 => [
                Some("ratelimit-limit"),
                Some("ratelimit-remaining"),
                Some("ratelimit-reset"),
                None,
                None,
            ],
            HeaderStyle::DraftIetf => [
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

    /// Whether a header reports every limit's remaining quota (the IETF draft's `RateLimit`).
    pub fn lists_every_remaining(&self) -> bool {
        self.0[RATELIMIT].is_some()
    }

    /// The style's names with the configured renames and hidden headers applied.
    pub fn compile(headers: &HeadersConfig, errors: &mut Errors) -> Self {
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

/// The rate-limit headers of the configured style, for an outcome; `refusal` adds `Retry-After`
/// and reports the retry moment as the reset.
pub fn rate_limit_headers(format: &ResponseFormat, outcome: &Outcome, refusal: bool) -> Headers {
    let Some(headline) = outcome.headline() else {
        return Headers::new();
    };
    let status = &headline.status;
    let names = &format.names.0;
    // Room for a refusal's `Retry-After` and `Content-Type` too: one allocation, no regrowth.
    let sent = names.iter().flatten().count();
    let mut headers = Headers::with_capacity(sent + if refusal { 2 } else { 0 });
    let mut add = |slot: usize, value: HeaderValue| {
        if let Some(name) = &names[slot] {
            headers.push((name.clone(), value));
        }
    };
    add(
        LIMIT,
        headline.limit.level_text(outcome.plan_id, status.requests),
    );
    add(REMAINING, HeaderValue::number(status.remaining));
    if names[RESET].is_some() {
        add(RESET, HeaderValue::number(reset(format, outcome, refusal)));
    }
    if names[POLICY].is_some() {
        add(POLICY, policy_items(outcome).into());
    }
    if names[RATELIMIT].is_some() {
        add(RATELIMIT, ratelimit_items(outcome, refusal).into());
    }
    if refusal {
        let retry_after = HeaderValue::number(outcome.retry_after_seconds());
        headers.push((HeaderName::from("retry-after"), retry_after));
    }
    headers
}

/// The reset header's value: when the headline's quota returns (on a refusal, when the retry is
/// admitted), in epoch seconds or seconds from now.
fn reset(format: &ResponseFormat, outcome: &Outcome, refusal: bool) -> u64 {
    let Some(headline) = outcome.headline() else {
        return 0;
    };
    let reset_at = if refusal {
        outcome.retry_at_ms()
    } else {
        headline.status.reset_at_ms
    };
    let delta = format.style == HeaderStyle::Draft03 || format.reset == ResetFormat::DeltaSeconds;
    if delta {
        seconds_until(outcome.now_ms, reset_at)
    } else {
        reset_at.div_ceil(1000)
    }
}

/// `RateLimit-Policy`: one item per limit checked.
fn policy_items(outcome: &Outcome) -> String {
    let items: Vec<String> = outcome
        .checked
        .iter()
        .map(|c| {
            let (q, w) = (c.status.requests, c.status.window_ms.div_ceil(1000));
            format!("\"{}\";q={q};w={w}", c.limit.name)
        })
        .collect();
    items.join(", ")
}

/// `RateLimit`: each limit's remaining quota and when it returns.
fn ratelimit_items(outcome: &Outcome, refusal: bool) -> String {
    let now = outcome.now_ms;
    let items: Vec<String> = outcome
        .checked
        .iter()
        .map(|c| {
            let at = if refusal && !c.status.fits {
                c.status.retry_at(now)
            } else {
                c.status.reset_at_ms
            };
            let (r, t) = (c.status.remaining, seconds_until(now, at));
            format!("\"{}\";r={r};t={t}", c.limit.name)
        })
        .collect();
    items.join(", ")
}
