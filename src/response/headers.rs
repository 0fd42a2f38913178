//! The rate-limit headers' values for an outcome, under the format's names and style.

use super::format::ResponseFormat;
use super::names::{LIMIT, POLICY, RATELIMIT, REMAINING, RESET};
use super::outcome::Outcome;
use super::time::seconds_until;
use super::value::{HeaderName, HeaderValue, Headers};
use crate::config::{HeaderStyle, ResetFormat};

/// The rate-limit headers of the configured style, for an outcome; `refusal` adds `Retry-After`
/// and reports the retry moment as the reset.
pub fn rate_limit_headers(format: &ResponseFormat, outcome: &Outcome, refusal: bool) -> Headers {
    let Some(headline) = outcome.headline() else {
        return Headers::new();
    };
    let status = &headline.status;
    let names = &format.headers.names.0;
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
    let set = &format.headers;
    let delta = set.style == HeaderStyle::Draft03 || set.reset == ResetFormat::DeltaSeconds;
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
            match c.limit.unit_given {
                true => format!("\"{}\";q={q};qu=\"{}\";w={w}", c.limit.name, c.limit.unit),
                false => format!("\"{}\";q={q};w={w}", c.limit.name),
            }
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
