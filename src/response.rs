//! Everything the client sees of a decision: the rate-limit headers and the refusal body.
//! All rendering lives here.

use crate::body_template::{Filled, Placeholder, Placeholders};
use crate::config::{HeaderStyle, ResetFormat};
use crate::duration::format_window;
use crate::limiter::{headline_index, LimitStatus};
use crate::policy::{Limit, ResponsePolicy};
use crate::time_format::iso8601_utc;

/// Header names are shared with the compiled config (no copy per request).
pub type HeaderName = std::rc::Rc<str>;
pub type Headers = Vec<(HeaderName, String)>;

/// One enforced limit's status, with the limit it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Checked<'a> {
    pub limit: &'a Limit,
    pub status: LimitStatus,
}

/// Every limit a request was checked against (all applied rules), at one instant.
#[derive(Debug, Clone)]
pub struct Outcome<'a> {
    pub now_ms: u64,
    pub checked: Vec<Checked<'a>>,
    /// The client's plan, when the config has plans.
    pub plan: Option<&'a str>,
}

impl<'a> Outcome<'a> {
    /// The most restrictive limit: the violated one that frees up last, else the one with the
    /// least quota left.
    pub fn headline(&self) -> Option<&Checked<'a>> {
        headline_index(self.checked.iter().map(|c| &c.status)).map(|i| &self.checked[i])
    }

    pub fn refused(&self) -> bool {
        self.checked.iter().any(|c| !c.status.fits)
    }

    /// When a refused request can be retried: the latest retry time of the violated limits (a
    /// cost that can never fit counts as one full window).
    pub fn retry_at_ms(&self) -> u64 {
        self.checked
            .iter()
            .filter(|c| !c.status.fits)
            .map(|c| {
                c.status
                    .retry_at_ms
                    .unwrap_or(self.now_ms + c.status.window_ms)
            })
            .max()
            .unwrap_or(self.now_ms)
    }

    /// Seconds for `Retry-After`: rounded up, at least 1.
    pub fn retry_after_seconds(&self) -> u64 {
        seconds_until(self.now_ms, self.retry_at_ms()).max(1)
    }
}

/// Whole seconds from `now_ms` until `at_ms`, rounded up: waiting that long always suffices.
pub fn seconds_until(now_ms: u64, at_ms: u64) -> u64 {
    at_ms.saturating_sub(now_ms).div_ceil(1000)
}

/// The rate-limit headers of the configured style, for an outcome; `refusal` adds
/// `Retry-After` and reports the retry moment as the reset.
pub fn rate_limit_headers(policy: &ResponsePolicy, outcome: &Outcome, refusal: bool) -> Headers {
    let mut headers = Headers::new();
    let Some(headline) = outcome.headline() else {
        return headers;
    };
    let now = outcome.now_ms;
    let status = &headline.status;
    let reset_at = if refusal {
        outcome.retry_at_ms()
    } else {
        status.reset_at_ms
    };
    let names = &policy.names;
    if let Some(name) = &names.limit {
        headers.push((name.clone(), status.requests.to_string()));
    }
    if let Some(name) = &names.remaining {
        headers.push((name.clone(), status.remaining.to_string()));
    }
    if let Some(name) = &names.reset {
        let delta =
            policy.style == HeaderStyle::Draft03 || policy.reset == ResetFormat::DeltaSeconds;
        let value = if delta {
            seconds_until(now, reset_at)
        } else {
            reset_at.div_ceil(1000)
        };
        headers.push((name.clone(), value.to_string()));
    }
    if let Some(name) = &names.policy {
        let items: Vec<String> = outcome
            .checked
            .iter()
            .map(|c| {
                format!(
                    "\"{}\";q={};w={}",
                    c.limit.name,
                    c.status.requests,
                    c.status.window_ms.div_ceil(1000)
                )
            })
            .collect();
        headers.push((name.clone(), items.join(", ")));
    }
    if let Some(name) = &names.ratelimit {
        let items: Vec<String> = outcome
            .checked
            .iter()
            .map(|c| {
                let at = if refusal && !c.status.fits {
                    c.status.retry_at_ms.unwrap_or(now + c.status.window_ms)
                } else {
                    c.status.reset_at_ms
                };
                format!(
                    "\"{}\";r={};t={}",
                    c.limit.name,
                    c.status.remaining,
                    seconds_until(now, at)
                )
            })
            .collect();
        headers.push((name.clone(), items.join(", ")));
    }
    if refusal {
        headers.push((
            HeaderName::from("retry-after"),
            outcome.retry_after_seconds().to_string(),
        ));
    }
    headers
}

/// A complete local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub headers: Headers,
    pub body: String,
}

/// The reply to a refused request.
pub fn refusal(
    policy: &ResponsePolicy,
    outcome: &Outcome,
    rule: &str,
    request_id: Option<String>,
) -> LocalReply {
    let mut headers = rate_limit_headers(policy, outcome, true);
    headers.push((
        HeaderName::from("content-type"),
        policy.content_type.clone(),
    ));
    let body = match outcome.headline() {
        Some(headline) => policy.body.render(&RefusalValues {
            status: policy.status,
            headline: *headline,
            violated: outcome
                .checked
                .iter()
                .filter(|c| !c.status.fits)
                .map(|c| c.limit.name.clone())
                .collect(),
            retry_after: outcome.retry_after_seconds(),
            retry_at_ms: outcome.retry_at_ms(),
            rule,
            plan: outcome.plan,
            request_id,
        }),
        None => String::new(),
    };
    LocalReply {
        status: policy.status,
        headers,
        body,
    }
}

/// The reply when the store could not decide (full or contended) and the policy is to deny:
/// nothing is known of the client's quota, so the body speaks of `limit` as if just exhausted
/// and `Retry-After` is its window.
pub fn refusal_without_status(
    policy: &ResponsePolicy,
    limit: &Limit,
    requests: u64,
    rule: &str,
    now_ms: u64,
) -> LocalReply {
    let status = LimitStatus {
        limit_index: 0,
        requests,
        window_ms: limit.window_ms,
        fits: false,
        remaining: 0,
        reset_at_ms: now_ms + limit.window_ms,
        retry_at_ms: Some(now_ms + limit.window_ms),
    };
    let outcome = Outcome {
        now_ms,
        checked: vec![Checked { limit, status }],
        plan: None,
    };
    refusal(policy, &outcome, rule, None)
}

/// The reply to a request without a client key under `on_missing_key: deny`.
pub fn missing_key(rule: &str) -> LocalReply {
    let body = serde_json::json!({
        "error": "missing_client_key",
        "message": format!("This endpoint needs a client key (rule {rule})."),
    });
    LocalReply {
        status: 401,
        headers: vec![(HeaderName::from("content-type"), "application/json".into())],
        body: body.to_string(),
    }
}

struct RefusalValues<'a> {
    status: u32,
    headline: Checked<'a>,
    violated: Vec<String>,
    retry_after: u64,
    retry_at_ms: u64,
    rule: &'a str,
    plan: Option<&'a str>,
    request_id: Option<String>,
}

impl Placeholders for RefusalValues<'_> {
    fn fill(&self, placeholder: Placeholder) -> Filled {
        let status = &self.headline.status;
        let limit = self.headline.limit;
        match placeholder {
            Placeholder::Limit => Filled::Number(status.requests),
            Placeholder::Window => Filled::Text(format_window(status.window_ms)),
            Placeholder::WindowSeconds => Filled::Number(status.window_ms.div_ceil(1000)),
            Placeholder::Remaining => Filled::Number(status.remaining),
            Placeholder::RetryAfter => Filled::Number(self.retry_after),
            Placeholder::Reset => Filled::Number(self.retry_at_ms.div_ceil(1000)),
            Placeholder::ResetIso => Filled::Text(iso8601_utc(self.retry_at_ms)),
            Placeholder::Policy => Filled::Text(limit.name.clone()),
            Placeholder::Rule => Filled::Text(self.rule.to_string()),
            Placeholder::RequestId => self.request_id.clone().map_or(Filled::Null, Filled::Text),
            Placeholder::Status => Filled::Number(self.status as u64),
            Placeholder::Code => Filled::Text(limit.code.clone()),
            Placeholder::Message => Filled::Text(match &limit.message {
                Some(template) => template.render(self),
                None => format!(
                    "Rate limit exceeded: {} requests per {}. Retry in {} seconds.",
                    status.requests,
                    format_window(status.window_ms),
                    self.retry_after
                ),
            }),
            Placeholder::Plan => self
                .plan
                .map_or(Filled::Null, |p| Filled::Text(p.to_string())),
            Placeholder::ViolatedPolicies => Filled::List(self.violated.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load;

    const NOW: u64 = 1_700_000_000_250;

    fn limit(name: &str, window_ms: u64, message: Option<&str>) -> Limit {
        Limit {
            name: name.into(),
            window_ms,
            requests: vec![],
            code: format!("rate_limit_{name}"),
            message: message.map(|m| crate::body_template::TextTemplate::compile(m, &[]).unwrap()),
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
            limit_index: 0,
            requests,
            window_ms,
            fits: retry.is_none(),
            remaining,
            reset_at_ms: reset,
            retry_at_ms: retry,
        }
    }

    fn response_policy(response: &str) -> ResponsePolicy {
        let json = format!(
            r#"{{"response": {response}, "rules": [{{"name": "r", "limits": [{{"requests": 1, "window": 1}}]}}]}}"#
        );
        load(json.as_bytes()).unwrap().response
    }

    fn names(headers: &Headers) -> Vec<(&str, &str)> {
        headers.iter().map(|(k, v)| (&**k, v.as_str())).collect()
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
        };
        let h = rate_limit_headers(&response_policy("{}"), &outcome, false);
        assert_eq!(
            names(&h),
            vec![
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-remaining", "7"),
                ("x-ratelimit-reset", "1700001000")
            ]
        );
        let h = rate_limit_headers(
            &response_policy(r#"{"headers": {"reset": "delta_seconds"}}"#),
            &outcome,
            false,
        );
        assert_eq!(h[2].1, "999");
        let h = rate_limit_headers(
            &response_policy(r#"{"headers": {"style": "draft03"}}"#),
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
            &response_policy(r#"{"headers": {"style": "draft_ietf"}}"#),
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
            &response_policy(r#"{"headers": {"style": "none"}}"#),
            &outcome,
            false
        )
        .is_empty());
        let custom =
            r#"{"headers": {"names": {"limit": "X-Rate-Limit-Limit"}, "hide": ["reset"]}}"#;
        let h = rate_limit_headers(&response_policy(custom), &outcome, false);
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
        };
        let reply = refusal(&response_policy("{}"), &outcome, "api", None);
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
        };
        let reply = refusal(
            &response_policy(r#"{"preset": "problem_json", "status": 503}"#),
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
        };
        let policy = response_policy(
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
        };
        let h = rate_limit_headers(
            &response_policy(r#"{"headers": {"style": "none"}}"#),
            &outcome,
            true,
        );
        assert_eq!(names(&h), vec![("retry-after", "1")]);
    }
}
