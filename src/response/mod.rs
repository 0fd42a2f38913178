//! Everything the client sees of a decision: the rate-limit headers and the local replies. All
//! rendering lives here; the configuration's `response` part and each limit's code and message
//! are compiled here too.

mod body;
mod headers;
mod template;
mod time;

use std::sync::Arc;

use body::{default_body, problem_json_body, FixedValues, RefusalValues, DEFAULT_MESSAGE};
pub use headers::rate_limit_headers;
use headers::HeaderNames;
use template::{BodyTemplate, Placeholder, PreparedBody, TextTemplate};
pub use time::seconds_until;

use crate::config::{
    BodyPreset, Errors, HeaderStyle, LimitConfig, Report, ResetFormat, ResponseConfig,
};
use crate::decimal;
use crate::limiter::{headline_index, LimitStatus};
use smallvec::SmallVec;

/// Header names are shared with the compiled config (no copy per request), across workers.
pub type HeaderName = Arc<str>;
/// The headers of a decision: names shared with the config, values inline when short (every
/// number the headers carry): one allocation for the list. (An inline list would be moved by
/// value from the engine to the host, each move a call out of V8 for `memory.copy`.)
pub type Headers = Vec<(HeaderName, HeaderValue)>;

/// A header value: UTF-8, on the stack up to 22 bytes, on the heap beyond.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HeaderValue(SmallVec<[u8; INLINE_VALUE]>);

/// Bytes of a header value kept inline: every whole number (20 digits at most).
const INLINE_VALUE: usize = 22;

/// A whole number's digits, in a buffer the size of a header value's inline one: copied whole
/// (a fixed-size copy, no `memory.copy` call out of V8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digits {
    buffer: [u8; INLINE_VALUE],
    len: usize,
}

impl Digits {
    pub fn of(n: u64) -> Self {
        let mut buffer = [0; INLINE_VALUE];
        let len = decimal::write(n, &mut buffer);
        Digits { buffer, len }
    }
}

impl From<Digits> for HeaderValue {
    fn from(digits: Digits) -> Self {
        HeaderValue(SmallVec::from_buf_and_len(digits.buffer, digits.len))
    }
}

impl HeaderValue {
    /// A whole number, written without a heap allocation.
    pub fn number(n: u64) -> Self {
        Digits::of(n).into()
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from `str`s.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl std::ops::Deref for HeaderValue {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for HeaderValue {
    fn from(s: &str) -> Self {
        HeaderValue(SmallVec::from_slice(s.as_bytes()))
    }
}

impl From<String> for HeaderValue {
    fn from(s: String) -> Self {
        HeaderValue(SmallVec::from_vec(s.into_bytes()))
    }
}

impl PartialEq<&str> for HeaderValue {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for HeaderValue {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<String> for HeaderValue {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl std::fmt::Debug for HeaderValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for HeaderValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How refusals and rate-limit headers look: the configuration's `response` part, compiled.
#[derive(Debug, Clone)]
pub struct ResponseFormat {
    pub status: u32,
    style: HeaderStyle,
    reset: ResetFormat,
    names: HeaderNames,
    body: BodyTemplate,
    content_type: String,
    default_message: TextTemplate,
}

impl ResponseFormat {
    pub fn compile(response: &ResponseConfig, errors: &mut Errors) -> Option<Self> {
        if !(400..=599).contains(&response.status) {
            let message = format!(
                "a refusal status must be 4xx or 5xx, got {}",
                response.status
            );
            errors.add("$.response.status", message);
        }
        let names = HeaderNames::compile(&response.headers, errors);
        let (preset_body, preset_type) = match response.preset {
            BodyPreset::Default => (default_body(), "application/json"),
            BodyPreset::ProblemJson => (problem_json_body(), "application/problem+json"),
        };
        let content_type = response
            .content_type
            .clone()
            .unwrap_or_else(|| preset_type.to_string());
        if content_type.is_empty() || content_type.bytes().any(|b| b.is_ascii_control()) {
            let message = format!("{content_type:?} is not a content type");
            errors.add("$.response.content_type", message);
        }
        let body = BodyTemplate::compile(response.body.as_ref().unwrap_or(&preset_body))
            .map_err(|e| errors.add(format!("$.response.body{}", e.path), e.message))
            .ok()?;
        Some(ResponseFormat {
            status: response.status,
            style: response.headers.style,
            reset: response.headers.reset,
            names,
            body,
            content_type,
            default_message: TextTemplate::compile(DEFAULT_MESSAGE, &[]).expect("a valid template"),
        })
    }

    /// Whether the headers report the remaining quota of every limit, not only the headline's.
    pub fn lists_every_remaining(&self) -> bool {
        self.names.lists_every_remaining()
    }

    /// Whether rendering a refusal needs the request id (so the host reads it only then).
    pub fn uses_request_id(&self) -> bool {
        self.body.uses_request_id()
    }
}

/// A limit as refusals name it: its name, error code and message, and its refusal body and
/// limit header value for each plan, rendered at load (see [`LimitText::prepare`]).
#[derive(Debug, Clone)]
pub struct LimitText {
    pub name: String,
    pub code: String,
    pub message: Option<TextTemplate>,
    bodies: Vec<PreparedBody>,
    /// Per plan: the level, and its digits for the limit header.
    levels: Vec<(u64, Digits)>,
}

impl LimitText {
    /// `name` is the limit's name as the rule settled it (given, or its window).
    pub fn compile(limit: &LimitConfig, name: &str, at: &str, errors: &mut Errors) -> Self {
        let code = limit.code.clone().unwrap_or_else(|| name.to_string());
        if code.is_empty() || code.len() > 128 {
            errors.add(format!("{at}.code"), "must be 1 to 128 characters");
        }
        let message = limit.message.as_ref().and_then(|text| {
            TextTemplate::compile(text, &[Placeholder::Message])
                .map_err(|m| errors.add(format!("{at}.message"), m))
                .ok()
        });
        LimitText {
            name: name.to_string(),
            code,
            message,
            bodies: Vec::new(),
            levels: Vec::new(),
        }
    }

    /// Renders this limit's refusal body for each plan at load: `levels[plan]` (0: the plan does
    /// not enforce this limit), `plans[plan]` the plan as the body shows it.
    pub fn prepare(
        &mut self,
        format: &ResponseFormat,
        rule: &str,
        (levels, window_ms): (&[u64], u64),
        plans: &[Option<&str>],
    ) {
        let message = self.message.as_ref().unwrap_or(&format.default_message);
        self.bodies = levels
            .iter()
            .zip(plans)
            .map(|(&requests, &plan)| {
                let fixed = FixedValues {
                    status: format.status,
                    limit: self,
                    requests,
                    window_ms,
                    rule,
                    plan,
                };
                format.body.prepare(&|p| fixed.fill(p), message)
            })
            .collect();
        self.levels = levels
            .iter()
            .map(|&level| (level, Digits::of(level)))
            .collect();
    }

    /// `requests` as the limit header shows it: written at load for the plan's level.
    pub fn level_text(&self, plan: usize, requests: u64) -> HeaderValue {
        match self.levels.get(plan) {
            Some((level, digits)) if *level == requests => HeaderValue::from(*digits),
            _ => HeaderValue::number(requests),
        }
    }
}

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

/// A complete local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Headers,
    pub body: String,
}

/// `Retry-After` for a retry admitted at `retry_at_ms`: whole seconds, rounded up, at least 1.
fn retry_after(now_ms: u64, retry_at_ms: u64) -> u64 {
    seconds_until(now_ms, retry_at_ms).max(1)
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
            match headline.limit.bodies.get(outcome.plan_id) {
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
    // Fixed text and a number: JSON as written.
    let body = format!(
        "{{\"error\":\"rate_limit_capacity\",\"message\":\"Too many clients for the rate limiter \
         to tell this client's requests from others'. Retry in {retry_after} seconds.\",\
         \"retry_after\":{retry_after}}}"
    );
    json_reply(format.status, Some(retry_after), body)
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

/// The reply to a request without a client key under `on_missing_key: deny`.
pub fn missing_key(rule: &str) -> Reply {
    let body = serde_json::json!({
        "error": "missing_client_key",
        "message": format!("This endpoint needs a client key (rule {rule})."),
    });
    json_reply(401, None, body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    const NOW: u64 = 1_700_000_000_250;

    fn limit(name: &str, _window_ms: u64, message: Option<&str>) -> LimitText {
        LimitText {
            name: name.into(),
            code: format!("rate_limit_{name}"),
            message: message.map(|m| TextTemplate::compile(m, &[]).unwrap()),
            bodies: Vec::new(),
            levels: Vec::new(),
        }
    }

    fn status(
        requests: u64,
        window_ms: u64,
        remaining: u64,
        reset: u64,
        retry: Option<u64>,
    ) -> LimitStatus {
        LimitStatus {
            limit: 0,
            requests,
            window_ms,
            fits: retry.is_none(),
            remaining,
            reset_at_ms: reset,
            retry_at_ms: retry,
        }
    }

    fn response_format(response: &str) -> ResponseFormat {
        let json = format!(r#"{{"response": {response}, "rules": []}}"#);
        let parsed = config::parse(json.as_bytes()).unwrap();
        let mut errors = Errors::new();
        let format = ResponseFormat::compile(&parsed.response, &mut errors).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        format
    }

    fn names(headers: &Headers) -> Vec<(&str, &str)> {
        headers.iter().map(|(k, v)| (&**k, v.as_str())).collect()
    }

    #[test]
    fn capacity_and_unavailable_replies_are_json_and_say_what_happened() {
        let format =
            ResponseFormat::compile(&config::ResponseConfig::default(), &mut Errors::default())
                .unwrap();
        let reply = capacity(&format, NOW, NOW + 40_001);
        assert_eq!(reply.status, 429);
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["error"], "rate_limit_capacity");
        assert_eq!(body["retry_after"], 41);
        assert!(body["message"]
            .as_str()
            .unwrap()
            .ends_with("Retry in 41 seconds."));
        assert_eq!(
            reply.headers[0],
            (HeaderName::from("retry-after"), "41".into())
        );
        let reply = unavailable();
        assert_eq!(reply.status, 503);
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(
            (body["error"].as_str(), body["retry_after"].as_u64()),
            (Some("rate_limit_unavailable"), Some(1))
        );
    }

    #[test]
    fn allowed_headers_report_the_tightest_limit() {
        let (minute, day) = (
            limit("minute", 60_000, None),
            limit("day", 86_400_000, None),
        );
        let outcome = Outcome {
            now_ms: NOW,
            checked: vec![
                Checked {
                    limit: &minute,
                    status: status(100, 60_000, 40, NOW + 3_000, None),
                },
                Checked {
                    limit: &day,
                    status: status(5000, 86_400_000, 7, NOW + 999_000, None),
                },
            ],
            plan: None,
            plan_id: 0,
        };
        let h = rate_limit_headers(&response_format("{}"), &outcome, false);
        assert_eq!(
            names(&h),
            vec![
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-remaining", "7"),
                ("x-ratelimit-reset", "1700001000")
            ]
        );
        let h = rate_limit_headers(
            &response_format(r#"{"headers": {"reset": "delta_seconds"}}"#),
            &outcome,
            false,
        );
        assert_eq!(h[2].1, "999");
        let h = rate_limit_headers(
            &response_format(r#"{"headers": {"style": "draft03"}}"#),
            &outcome,
            false,
        );
        assert_eq!(
            names(&h),
            vec![
                ("ratelimit-limit", "5000"),
                ("ratelimit-remaining", "7"),
                ("ratelimit-reset", "999")
            ]
        );
        let h = rate_limit_headers(
            &response_format(r#"{"headers": {"style": "draft_ietf"}}"#),
            &outcome,
            false,
        );
        assert_eq!(
            names(&h),
            vec![
                (
                    "ratelimit-policy",
                    r#""minute";q=100;w=60, "day";q=5000;w=86400"#
                ),
                ("ratelimit", r#""minute";r=40;t=3, "day";r=7;t=999"#),
            ]
        );
        assert!(rate_limit_headers(
            &response_format(r#"{"headers": {"style": "none"}}"#),
            &outcome,
            false
        )
        .is_empty());
        let custom =
            r#"{"headers": {"names": {"limit": "X-Rate-Limit-Limit"}, "hide": ["reset"]}}"#;
        let h = rate_limit_headers(&response_format(custom), &outcome, false);
        assert_eq!(
            names(&h),
            vec![
                ("x-rate-limit-limit", "5000"),
                ("x-ratelimit-remaining", "7")
            ]
        );
    }

    #[test]
    fn a_refusal_carries_honest_retry_after_and_a_json_body() {
        let (minute, day) = (
            limit("per_minute", 60_000, None),
            limit("per_day", 86_400_000, None),
        );
        let outcome = Outcome {
            now_ms: NOW,
            checked: vec![
                Checked {
                    limit: &minute,
                    status: status(100, 60_000, 0, NOW + 41_100, Some(NOW + 41_100)),
                },
                Checked {
                    limit: &day,
                    status: status(5000, 86_400_000, 10, NOW + 999_000, None),
                },
            ],
            plan: None,
            plan_id: 0,
        };
        let reply = refusal(&response_format("{}"), &outcome, "api", None);
        assert_eq!(reply.status, 429);
        assert_eq!(
            names(&reply.headers),
            vec![
                ("x-ratelimit-limit", "100"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1700000042"),
                ("retry-after", "42"),
                ("content-type", "application/json"),
            ]
        );
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "error": "too_many_requests",
                "message": "Rate limit exceeded: 100 requests per 1m. Retry in 42 seconds.",
                "policy": "per_minute",
                "limit": 100,
                "window_seconds": 60,
                "retry_after": 42,
                "reset": 1700000042
            })
        );
    }

    #[test]
    fn problem_json_lists_the_violated_policies() {
        let (a, b) = (limit("a", 1_000, None), limit("b", 2_000, None));
        let outcome = Outcome {
            now_ms: NOW,
            checked: vec![
                Checked {
                    limit: &a,
                    status: status(1, 1_000, 0, NOW + 500, Some(NOW + 500)),
                },
                Checked {
                    limit: &b,
                    status: status(2, 2_000, 0, NOW + 1_500, Some(NOW + 1_500)),
                },
            ],
            plan: None,
            plan_id: 0,
        };
        let reply = refusal(
            &response_format(r#"{"preset": "problem_json", "status": 503}"#),
            &outcome,
            "r",
            None,
        );
        assert_eq!(reply.status, 503);
        assert!(reply
            .headers
            .contains(&("content-type".into(), "application/problem+json".into())));
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["status"], 503);
        assert_eq!(body["violated-policies"], serde_json::json!(["a", "b"]));
        assert_eq!(
            body["type"],
            "https://iana.org/assignments/http-problem-types#quota-exceeded"
        );
        assert_eq!(
            body["detail"],
            "Rate limit exceeded: 2 requests per 2s. Retry in 2 seconds."
        );
    }

    #[test]
    fn per_limit_codes_messages_plan_and_request_id() {
        let day = limit(
            "day",
            86_400_000,
            Some("Daily API quota of {{limit}} exceeded; retry after {{reset_iso}}."),
        );
        let outcome = Outcome {
            now_ms: NOW,
            checked: vec![Checked {
                limit: &day,
                status: status(5, 86_400_000, 0, NOW + 3_600_000, Some(NOW + 3_600_000)),
            }],
            plan: Some("free"),
            plan_id: 0,
        };
        let policy = response_format(
            r#"{"body": {"ok": false, "version": "2025-11-14-v1", "request_id": "{{request_id}}", "code": "{{code}}", "message": "{{message}}", "plan": "{{plan}}"}}"#,
        );
        let reply = refusal(&policy, &outcome, "r", Some("e5e9cfa0".into()));
        assert_eq!(
            reply.body,
            r#"{"ok":false,"version":"2025-11-14-v1","request_id":"e5e9cfa0","code":"rate_limit_day","message":"Daily API quota of 5 exceeded; retry after 2023-11-14T23:13:20.250Z.","plan":"free"}"#
        );
    }

    #[test]
    fn retry_after_is_never_zero() {
        let a = limit("a", 1_000, None);
        let outcome = Outcome {
            now_ms: NOW,
            checked: vec![Checked {
                limit: &a,
                status: status(1, 1_000, 0, NOW + 10, Some(NOW + 10)),
            }],
            plan: None,
            plan_id: 0,
        };
        let h = rate_limit_headers(
            &response_format(r#"{"headers": {"style": "none"}}"#),
            &outcome,
            true,
        );
        assert_eq!(names(&h), vec![("retry-after", "1")]);
    }
}
