//! The rate-limit headers' values for an outcome, under the format's names and style.

use std::fmt::Write;

use super::format::ResponseFormat;
use super::names::{HeaderSet, LIMIT, POLICY, RATELIMIT, REMAINING, RESET};
use super::outcome::{Checked, Outcome};
use super::time::seconds_until;
use super::value::{HeaderName, HeaderValue, Headers};
use crate::config::HeaderStyle;

/// The rate-limit headers of the configured style, for an outcome; `refusal` adds `Retry-After`
/// (and what the format adds to refusals) and reports the retry moment as the reset.
pub fn rate_limit_headers(format: &ResponseFormat, outcome: &Outcome, refusal: bool) -> Headers {
    let Some(headline) = outcome.headline() else {
        return Headers::new();
    };
    let status = &headline.status;
    let set = &format.headers;
    let names = &set.names.0;
    // Room for a refusal's `Retry-After`, its extras and `Content-Type` too: one allocation, no
    // regrowth.
    let sent = names.iter().flatten().count();
    let mut headers = Headers::with_capacity(sent + if refusal { 4 } else { 0 });
    let mut add = |slot: usize, value: HeaderValue| {
        if let Some(name) = &names[slot] {
            headers.push((name.clone(), value));
        }
    };
    if names[LIMIT].is_some() {
        add(LIMIT, limit_value(set, outcome, headline));
    }
    add(REMAINING, HeaderValue::number(status.remaining));
    if names[RESET].is_some() {
        add(RESET, HeaderValue::number(reset(set, outcome, refusal)));
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
        let wait_ms = outcome.retry_at_ms().saturating_sub(outcome.now_ms);
        refusal_extras(set, wait_ms, &mut headers);
    }
    headers
}

/// What a refusal adds after `Retry-After` (a wait of `wait_ms`): `retry-after-ms` when
/// configured, and `x-should-retry: false` when the wait is longer than the configured bound.
pub fn refusal_extras(set: &HeaderSet, wait_ms: u64, headers: &mut Headers) {
    let (ms, no_retry) = set.refusal_extras(wait_ms);
    if let Some(ms) = ms {
        headers.push((HeaderName::from("retry-after-ms"), HeaderValue::number(ms)));
    }
    if no_retry {
        headers.push((HeaderName::from("x-should-retry"), "false".into()));
    }
}

/// The limit header: the headline's level; in Envoy's form followed by every limit's quota
/// policy (`100, 100;w=60, 5000;w=86400`), the binding one first.
fn limit_value(set: &HeaderSet, outcome: &Outcome, headline: &Checked) -> HeaderValue {
    let level = headline
        .limit
        .level_text(outcome.plan_id, headline.status.requests);
    if set.style != HeaderStyle::EnvoyDraft03 {
        return level;
    }
    let mut text = level.as_str().to_string();
    for c in outcome.binding_first() {
        let (q, w) = (c.status.requests, c.status.window_ms.div_ceil(1000));
        let _ = write!(text, ", {q};w={w}");
        if c.limit.name_given {
            let _ = write!(text, ";name=\"{}\"", c.limit.name);
        }
    }
    text.into()
}

/// The reset header's value: when the headline's quota returns (on a refusal, when the retry is
/// admitted), in epoch seconds or seconds from now.
fn reset(set: &HeaderSet, outcome: &Outcome, refusal: bool) -> u64 {
    let Some(headline) = outcome.headline() else {
        return 0;
    };
    let reset_at = if refusal {
        outcome.retry_at_ms()
    } else {
        headline.status.reset_at_ms
    };
    if set.reset_in_seconds_from_now() {
        seconds_until(outcome.now_ms, reset_at)
    } else {
        reset_at.div_ceil(1000)
    }
}

/// `RateLimit-Policy`: one item per limit checked, the binding one first (a client that reads
/// one item reads the limit that decides).
fn policy_items(outcome: &Outcome) -> String {
    let items: Vec<String> = outcome
        .binding_first()
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

/// `RateLimit`: each limit's remaining quota and when it returns, the binding one first.
fn ratelimit_items(outcome: &Outcome, refusal: bool) -> String {
    let now = outcome.now_ms;
    let items: Vec<String> = outcome
        .binding_first()
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
