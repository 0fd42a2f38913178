//! Everything the client sees of a decision: the rate-limit headers and the refusal body.
//! All rendering lives here.

use crate::body_template::{Filled, Placeholder, Placeholders};
use crate::config::{HeaderStyle, ResetFormat};
use crate::duration::format_window;
use crate::limiter::{Decision, LimitSpec, LimitStatus};
use crate::policy::ResponsePolicy;
use crate::time_format::iso8601_utc;

pub type Headers = Vec<(&'static str, String)>;

/// Whole seconds from `now_ms` until `at_ms`, rounded up: waiting that long always suffices.
pub fn seconds_until(now_ms: u64, at_ms: u64) -> u64 {
    at_ms.saturating_sub(now_ms).div_ceil(1000)
}

/// The moment a refused request can be retried: the violated limits' latest retry time, or a
/// full window of the headline limit when its cost can never fit.
fn retry_at_ms(decision: &Decision, headline: &LimitStatus) -> u64 {
    decision
        .retry_at_ms()
        .unwrap_or(decision.now_ms + headline.window_ms)
}

/// Seconds for `Retry-After`: at least 1 (a 0 invites a retry storm, and the retry moment is
/// always in the future when a request is refused).
pub fn retry_after_seconds(decision: &Decision, headline: &LimitStatus) -> u64 {
    seconds_until(decision.now_ms, retry_at_ms(decision, headline)).max(1)
}

/// The rate-limit headers for a decision with limit statuses; `refused` adds `Retry-After`.
pub fn rate_limit_headers(policy: &ResponsePolicy, decision: &Decision, refused: bool) -> Headers {
    let mut headers = Headers::new();
    let Some(headline) = decision.headline() else {
        return headers;
    };
    let reset_at = if refused {
        retry_at_ms(decision, headline)
    } else {
        headline.reset_at_ms
    };
    if policy.style == HeaderStyle::XRateLimit {
        headers.push(("x-ratelimit-limit", headline.requests.to_string()));
        headers.push(("x-ratelimit-remaining", headline.remaining.to_string()));
        let reset = match policy.reset {
            ResetFormat::EpochSeconds => reset_at.div_ceil(1000),
            ResetFormat::DeltaSeconds => seconds_until(decision.now_ms, reset_at),
        };
        headers.push(("x-ratelimit-reset", reset.to_string()));
    }
    if refused {
        headers.push((
            "retry-after",
            retry_after_seconds(decision, headline).to_string(),
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

/// The reply to a request refused by `decision`.
pub fn refusal(
    policy: &ResponsePolicy,
    decision: &Decision,
    limits: &[LimitSpec],
    rule: &str,
    request_id: Option<String>,
) -> LocalReply {
    let mut headers = rate_limit_headers(policy, decision, true);
    headers.push(("content-type", "application/json".to_string()));
    let body = match decision.headline() {
        Some(headline) => {
            let retry_at = retry_at_ms(decision, headline);
            let values = RefusalValues {
                status: policy.status,
                limit: &limits[headline.limit_index],
                headline,
                retry_after: retry_after_seconds(decision, headline),
                retry_at_ms: retry_at,
                rule,
                request_id,
            };
            policy.body.render(&values)
        }
        None => String::new(),
    };
    LocalReply {
        status: policy.status,
        headers,
        body,
    }
}

/// The reply when the store could not decide (full or contended) and the policy is to deny:
/// nothing is known of the client's quota, so only `Retry-After` (the shortest window) is sent.
pub fn refusal_without_status(
    policy: &ResponsePolicy,
    limits: &[LimitSpec],
    rule: &str,
    now_ms: u64,
) -> LocalReply {
    let shortest = limits
        .iter()
        .min_by_key(|l| l.window.window_ms)
        .expect("a limited rule has limits");
    let retry_after = seconds_until(now_ms, now_ms + shortest.window.window_ms).max(1);
    let headline = LimitStatus {
        limit_index: limits
            .iter()
            .position(|l| std::ptr::eq(l, shortest))
            .unwrap_or(0),
        requests: shortest.requests,
        window_ms: shortest.window.window_ms,
        fits: false,
        remaining: 0,
        reset_at_ms: now_ms + shortest.window.window_ms,
        retry_at_ms: Some(now_ms + shortest.window.window_ms),
    };
    let values = RefusalValues {
        status: policy.status,
        limit: shortest,
        headline: &headline,
        retry_after,
        retry_at_ms: now_ms + retry_after * 1000,
        rule,
        request_id: None,
    };
    LocalReply {
        status: policy.status,
        headers: vec![
            ("retry-after", retry_after.to_string()),
            ("content-type", "application/json".to_string()),
        ],
        body: policy.body.render(&values),
    }
}

/// The reply to a request without a client key under `on_missing_key: deny`.
pub fn missing_key(rule: &str) -> LocalReply {
    let body = serde_json::json!({
        "error": "missing_client_key",
        "message": format!("This endpoint needs a client key (rule {rule})."),
    });
    LocalReply {
        status: 401,
        headers: vec![("content-type", "application/json".to_string())],
        body: body.to_string(),
    }
}

struct RefusalValues<'a> {
    status: u32,
    limit: &'a LimitSpec,
    headline: &'a LimitStatus,
    retry_after: u64,
    retry_at_ms: u64,
    rule: &'a str,
    request_id: Option<String>,
}

impl Placeholders for RefusalValues<'_> {
    fn fill(&self, placeholder: Placeholder) -> Filled {
        match placeholder {
            Placeholder::Limit => Filled::Number(self.headline.requests),
            Placeholder::Window => Filled::Text(format_window(self.headline.window_ms)),
            Placeholder::WindowSeconds => Filled::Number(self.headline.window_ms.div_ceil(1000)),
            Placeholder::Remaining => Filled::Number(self.headline.remaining),
            Placeholder::RetryAfter => Filled::Number(self.retry_after),
            Placeholder::Reset => Filled::Number(self.retry_at_ms.div_ceil(1000)),
            Placeholder::ResetIso => Filled::Text(iso8601_utc(self.retry_at_ms)),
            Placeholder::Policy => Filled::Text(self.limit.name.clone()),
            Placeholder::Rule => Filled::Text(self.rule.to_string()),
            Placeholder::RequestId => self.request_id.clone().map_or(Filled::Null, Filled::Text),
            Placeholder::Status => Filled::Number(self.status as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body_template::BodyTemplate;
    use crate::limiter::Verdict;
    use crate::policy::default_body;
    use crate::sliding_window::SlidingWindow;

    fn policy(style: HeaderStyle, reset: ResetFormat) -> ResponsePolicy {
        ResponsePolicy {
            status: 429,
            style,
            reset,
            body: BodyTemplate::compile(&default_body()).unwrap(),
        }
    }

    fn status(
        i: usize,
        requests: u64,
        window_ms: u64,
        remaining: u64,
        reset: u64,
        retry: Option<u64>,
    ) -> LimitStatus {
        LimitStatus {
            limit_index: i,
            requests,
            window_ms,
            fits: retry.is_none(),
            remaining,
            reset_at_ms: reset,
            retry_at_ms: retry,
        }
    }

    const NOW: u64 = 1_700_000_000_250;

    #[test]
    fn allowed_headers_report_the_tightest_limit() {
        let d = Decision {
            verdict: Verdict::Admitted,
            allowed: true,
            statuses: vec![
                status(0, 100, 60_000, 40, NOW + 3_000, None),
                status(1, 5000, 86_400_000, 7, NOW + 999_000, None),
            ],
            now_ms: NOW,
            cas_retries: 0,
        };
        let h = rate_limit_headers(
            &policy(HeaderStyle::XRateLimit, ResetFormat::EpochSeconds),
            &d,
            false,
        );
        assert_eq!(
            h,
            vec![
                ("x-ratelimit-limit", "5000".to_string()),
                ("x-ratelimit-remaining", "7".to_string()),
                ("x-ratelimit-reset", "1700001000".to_string()),
            ]
        );
        let h = rate_limit_headers(
            &policy(HeaderStyle::XRateLimit, ResetFormat::DeltaSeconds),
            &d,
            false,
        );
        assert_eq!(h[2], ("x-ratelimit-reset", "999".to_string()));
        assert!(rate_limit_headers(
            &policy(HeaderStyle::None, ResetFormat::EpochSeconds),
            &d,
            false
        )
        .is_empty());
    }

    #[test]
    fn a_refusal_carries_honest_retry_after_and_a_json_body() {
        let limits = vec![
            LimitSpec {
                name: "per_minute".into(),
                requests: 100,
                window: SlidingWindow::new(60_000),
            },
            LimitSpec {
                name: "per_day".into(),
                requests: 5000,
                window: SlidingWindow::new(86_400_000),
            },
        ];
        let d = Decision {
            verdict: Verdict::Refused,
            allowed: false,
            statuses: vec![
                status(0, 100, 60_000, 0, NOW + 41_100, Some(NOW + 41_100)),
                status(1, 5000, 86_400_000, 10, NOW + 999_000, None),
            ],
            now_ms: NOW,
            cas_retries: 0,
        };
        let reply = refusal(
            &policy(HeaderStyle::XRateLimit, ResetFormat::EpochSeconds),
            &d,
            &limits,
            "api",
            None,
        );
        assert_eq!(reply.status, 429);
        assert_eq!(
            reply.headers,
            vec![
                ("x-ratelimit-limit", "100".to_string()),
                ("x-ratelimit-remaining", "0".to_string()),
                ("x-ratelimit-reset", "1700000042".to_string()),
                ("retry-after", "42".to_string()),
                ("content-type", "application/json".to_string()),
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
    fn retry_after_is_never_zero() {
        let d = Decision {
            verdict: Verdict::Refused,
            allowed: false,
            statuses: vec![status(0, 1, 1_000, 0, NOW + 10, Some(NOW + 10))],
            now_ms: NOW,
            cas_retries: 0,
        };
        let h = rate_limit_headers(
            &policy(HeaderStyle::None, ResetFormat::EpochSeconds),
            &d,
            true,
        );
        assert_eq!(h, vec![("retry-after", "1".to_string())]);
    }
}
