//! The local replies: every one is built by [`reply`] — a refusal of the client's own limits, a
//! capacity refusal, an undecided store, a failed rate limit service, a missing key.

use super::format::ResponseFormat;
use super::headers::{rate_limit_headers, refusal_extras};
use super::outcome::{retry_after, Outcome};
use super::refusal::RefusalValues;
use super::value::{HeaderName, HeaderValue, Headers};

/// A complete local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Headers,
    pub body: String,
}

/// Every local reply is built here: `headers` (the rate-limit headers and `Retry-After` of a
/// reply about the client's limits, else `Retry-After` alone when there is a time to give),
/// then the content type, and the body.
fn reply(status: u32, mut headers: Headers, content_type: &str, body: String) -> Reply {
    headers.push((HeaderName::from("content-type"), content_type.into()));
    Reply {
        status,
        headers,
        body,
    }
}

/// A JSON reply that says nothing of the client's limits, with `Retry-After` when given.
fn json_reply(status: u32, retry_after: Option<u64>, body: String) -> Reply {
    let headers = match retry_after {
        Some(seconds) => vec![(
            HeaderName::from("retry-after"),
            HeaderValue::number(seconds),
        )],
        None => Headers::new(),
    };
    reply(status, headers, "application/json", body)
}

/// The reply to a refused request.
pub fn refusal(
    format: &ResponseFormat,
    outcome: &Outcome,
    rule: &str,
    request_id: Option<String>,
) -> Reply {
    let headers = rate_limit_headers(format, outcome, true);
    let body = match outcome.headline() {
        Some(headline) => {
            let values = RefusalValues {
                status: format.status,
                headline: *headline,
                checked: &outcome.checked,
                retry_after: outcome.retry_after_seconds(),
                retry_at_ms: outcome.retry_at_ms(),
                rule,
                plan: outcome.plan,
                request_id,
                default_message: &format.default_message,
            };
            let level = headline.status.requests;
            match headline.limit.prepared(outcome.plan_id, level) {
                Some(prepared) => prepared.render(&values),
                None => format.body.render(&values),
            }
        }
        None => String::new(),
    };
    reply(format.status, headers, &format.content_type, body)
}

/// The reply to a capacity refusal: the request is over quota only through counts the store
/// inherited for lack of room (an estimate that includes other clients' requests), so nothing is
/// said of the client's limits; `Retry-After` is when the request is admitted again if nothing
/// else changes. The configured status (429 by default): the client is to slow down.
pub fn capacity(format: &ResponseFormat, now_ms: u64, retry_at_ms: u64) -> Reply {
    let retry_after = retry_after(now_ms, retry_at_ms);
    let mut headers = vec![(
        HeaderName::from("retry-after"),
        HeaderValue::number(retry_after),
    )];
    refusal_extras(
        &format.headers,
        retry_at_ms.saturating_sub(now_ms),
        &mut headers,
    );
    // Fixed text and a number: JSON as written.
    let body = format!(
        "{{\"error\":\"rate_limit_capacity\",\"message\":\"Too many clients for the rate limiter \
         to tell this client's requests from others'. Retry in {retry_after} seconds.\",\
         \"retry_after\":{retry_after}}}"
    );
    reply(format.status, headers, "application/json", body)
}

/// The reply when the store could not decide (every compare-and-swap attempt lost its race)
/// and `store.on_contention` says deny: 503, nothing said of the client's quota, and a short
/// `Retry-After` (the contention lasts as long as the burst that caused it).
pub fn unavailable() -> Reply {
    let body = "{\"error\":\"rate_limit_unavailable\",\"message\":\"The rate limiter could not \
                decide on this request. Retry in 1 second.\",\"retry_after\":1}";
    json_reply(503, Some(1), body.to_string())
}

/// The reply when the rate limit service failed and `fleet.on_error` says deny: the service's
/// fault, not the client's limit.
pub fn service_unavailable() -> Reply {
    let body = serde_json::json!({
        "error": "rate_limit_unavailable",
        "message": "The rate limit service did not answer in time. Retry shortly.",
    });
    json_reply(503, Some(1), body.to_string())
}

/// The reply to a request whose client key source held several different values under
/// `on_ambiguous_key: deny`: the client's mistake (400), not a rate limit (no `Retry-After`).
pub fn ambiguous_key(rule: &str, source: &str) -> Reply {
    let body = serde_json::json!({
        "error": "ambiguous_client_key",
        "message": format!(
            "The client key ({source}) was given more than once with different values; \
             send it once (rule {rule})."
        ),
    });
    json_reply(400, None, body.to_string())
}

/// The reply to a request without a client key under `on_missing_key: deny`.
pub fn missing_key(rule: &str) -> Reply {
    let body = serde_json::json!({
        "error": "missing_client_key",
        "message": format!("This endpoint needs a client key (rule {rule})."),
    });
    json_reply(401, None, body.to_string())
}
