//! The local replies: every one is built by [`reply`] — a refusal of the client's own limits, a
//! capacity refusal, an undecided store, a failed rate limit service, a missing key — or, to a
//! gRPC request, by [`grpc_reply`]: the same headers as metadata, and the same sentence as a
//! gRPC status.

use super::format::ResponseFormat;
use super::grpc::{GrpcStatus, Violation, INVALID_ARGUMENT, UNAUTHENTICATED, UNAVAILABLE};
use super::headers::{rate_limit_headers, refusal_extras};
use super::outcome::{retry_after, Outcome};
use super::refusal::RefusalValues;
use super::value::{HeaderName, HeaderValue, Headers};
use crate::config::format_window;

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

/// A gRPC request's trailers-only answer: `headers` as metadata, and `status`.
fn grpc_reply(headers: Headers, status: &GrpcStatus) -> Reply {
    let (status, headers) = status.trailers_only(headers);
    Reply {
        status,
        headers,
        body: String::new(),
    }
}

/// A JSON reply that says nothing of the client's limits, with `Retry-After` when given; to a
/// gRPC request (`grpc`: the code), `message` as its status instead of `body`.
fn json_reply(
    status: u32,
    retry_after: Option<u64>,
    body: impl FnOnce() -> String,
    grpc: Option<(u32, &str)>,
) -> Reply {
    let headers = match retry_after {
        Some(seconds) => vec![(
            HeaderName::from("retry-after"),
            HeaderValue::number(seconds),
        )],
        None => Headers::new(),
    };
    match grpc {
        Some((code, message)) => grpc_reply(
            headers,
            &GrpcStatus {
                code,
                message,
                retry_delay: retry_after,
                violations: Vec::new(),
            },
        ),
        None => reply(status, headers, "application/json", body()),
    }
}

/// The reply to a refused request; to a gRPC request (`grpc`: the code), the headline limit's
/// message as its status, with `RetryInfo` and a `QuotaFailure` naming each limit it is over.
pub fn refusal(
    format: &ResponseFormat,
    outcome: &Outcome,
    rule: &str,
    request_id: Option<String>,
    grpc: Option<u32>,
) -> Reply {
    let headers = rate_limit_headers(format, outcome, true);
    let Some(headline) = outcome.headline() else {
        return reply(format.status, headers, &format.content_type, String::new());
    };
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
    if let Some(code) = grpc {
        return grpc_refusal(headers, &values, code);
    }
    let level = headline.status.requests;
    let body = match headline.limit.prepared(outcome.plan_id, level) {
        Some(prepared) => prepared.render(&values),
        None => format.body.render(&values),
    };
    reply(format.status, headers, &format.content_type, body)
}

fn grpc_refusal(headers: Headers, values: &RefusalValues, code: u32) -> Reply {
    let violations = values.checked.iter().filter(|c| !c.status.fits);
    let violations = violations.map(|c| Violation {
        subject: format!("rule:{}", values.rule),
        description: format!(
            "{} {} per {}",
            c.status.requests,
            c.limit.unit,
            format_window(c.status.window_ms)
        ),
        quota_id: &c.limit.code,
        quota_value: c.status.requests,
    });
    let message = values.message();
    let status = GrpcStatus {
        code,
        message: &message,
        retry_delay: Some(values.retry_after),
        violations: violations.collect(),
    };
    grpc_reply(headers, &status)
}

/// The reply to a capacity refusal: the request is over quota only through counts the store
/// inherited for lack of room (an estimate that includes other clients' requests), so nothing is
/// said of the client's limits; `Retry-After` is when the request is admitted again if nothing
/// else changes. The configured status (429 by default): the client is to slow down; to a gRPC
/// request, the configured code (`RESOURCE_EXHAUSTED` by default) with `RetryInfo`.
pub fn capacity(
    format: &ResponseFormat,
    now_ms: u64,
    retry_at_ms: u64,
    grpc: Option<u32>,
) -> Reply {
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
    let message = format!(
        "Too many clients for the rate limiter to tell this client's requests from others'. \
         Retry in {retry_after} seconds."
    );
    if let Some(code) = grpc {
        let status = GrpcStatus {
            code,
            message: &message,
            retry_delay: Some(retry_after),
            violations: Vec::new(),
        };
        return grpc_reply(headers, &status);
    }
    // Fixed text and a number: JSON as written.
    let body = format!(
        "{{\"error\":\"rate_limit_capacity\",\"message\":\"{message}\",\"retry_after\":{retry_after}}}"
    );
    reply(format.status, headers, "application/json", body)
}

/// The reply when the store could not decide (every compare-and-swap attempt lost its race)
/// and `store.on_contention` says deny: 503 (`UNAVAILABLE` to a gRPC request), nothing said of
/// the client's quota, and a short `Retry-After` (the contention lasts as long as the burst that
/// caused it).
pub fn unavailable(grpc: bool) -> Reply {
    const MESSAGE: &str = "The rate limiter could not decide on this request. Retry in 1 second.";
    let body = || {
        format!(
            "{{\"error\":\"rate_limit_unavailable\",\"message\":\"{MESSAGE}\",\"retry_after\":1}}"
        )
    };
    json_reply(503, Some(1), body, grpc.then_some((UNAVAILABLE, MESSAGE)))
}

/// The reply when the rate limit service failed and `fleet.on_error` says deny: the service's
/// fault, not the client's limit (503; `UNAVAILABLE` to a gRPC request).
pub fn service_unavailable(grpc: bool) -> Reply {
    const MESSAGE: &str = "The rate limit service did not answer in time. Retry shortly.";
    let body = || serde_json::json!({"error": "rate_limit_unavailable", "message": MESSAGE});
    let grpc = grpc.then_some((UNAVAILABLE, MESSAGE));
    json_reply(503, Some(1), || body().to_string(), grpc)
}

/// The reply to a request whose client key source held several different values under
/// `on_ambiguous_key: deny`: the client's mistake (400; `INVALID_ARGUMENT` to a gRPC request),
/// not a rate limit (no `Retry-After`).
pub fn ambiguous_key(rule: &str, source: &str, grpc: bool) -> Reply {
    let message = format!(
        "The client key ({source}) was given more than once with different values; send it \
         once (rule {rule})."
    );
    let body = || serde_json::json!({"error": "ambiguous_client_key", "message": message});
    let grpc = grpc.then_some((INVALID_ARGUMENT, message.as_str()));
    json_reply(400, None, || body().to_string(), grpc)
}

/// The reply to a request without a client key under `on_missing_key: deny` (401;
/// `UNAUTHENTICATED` to a gRPC request).
pub fn missing_key(rule: &str, grpc: bool) -> Reply {
    let message = format!("This endpoint needs a client key (rule {rule}).");
    let body = || serde_json::json!({"error": "missing_client_key", "message": message});
    let grpc = grpc.then_some((UNAUTHENTICATED, message.as_str()));
    json_reply(401, None, || body().to_string(), grpc)
}
