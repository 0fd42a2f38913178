//! Everything the client sees of a decision: the rate-limit headers and the local replies. All
//! rendering lives here; the configuration's `response` part and each limit's code and message
//! are compiled here too.
//!
//! From the bottom: header values (`value`), times, templates and the fixed body values
//! (`body`), the header names a style sends (`names`) → the compiled format and limit texts
//! (`format`) → what a decision checked (`outcome`) → the rate-limit headers (`headers`) and a
//! refusal's values (`refusal`) → the replies (`reply`), to a gRPC request as a gRPC status
//! (`grpc`).

mod body;
mod format;
mod grpc;
mod headers;
mod names;
mod outcome;
mod refusal;
mod reply;
mod template;
mod time;
mod value;

pub use format::{LimitText, ResponseFormat};
pub use grpc::is_grpc;
pub use headers::rate_limit_headers;
pub use outcome::{Checked, Outcome};
pub use reply::{
    ambiguous_key, capacity, missing_key, refusal, service_unavailable, unavailable, Reply,
};
pub use value::{HeaderName, HeaderValue, Headers};

#[cfg(test)]
mod tests {
    use super::template::TextTemplate;
    use super::*;
    use crate::config::{self, Errors};
    use crate::limiter::LimitStatus;

    const NOW: u64 = 1_700_000_000_250;

    fn limit(name: &str, _window_ms: u64, message: Option<&str>) -> LimitText {
        LimitText {
            name: name.into(),
            name_given: true,
            code: format!("rate_limit_{name}"),
            unit: "requests".into(),
            unit_given: false,
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
        let reply = capacity(&format, NOW, NOW + 40_001, None);
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
        let reply = unavailable(false);
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
            &response_format(r#"{"headers": {"style": "ietf_draft06"}}"#),
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
        // The binding limit (the day's: 7 left) first in every list.
        let h = rate_limit_headers(
            &response_format(r#"{"headers": {"style": "ietf_draft11"}}"#),
            &outcome,
            false,
        );
        assert_eq!(
            names(&h),
            vec![
                (
                    "ratelimit-policy",
                    r#""day";q=5000;w=86400, "minute";q=100;w=60"#
                ),
                ("ratelimit", r#""day";r=7;t=999, "minute";r=40;t=3"#),
            ]
        );
        // Envoy's own DRAFT_VERSION_03: the binding level, then every quota policy.
        let h = rate_limit_headers(
            &response_format(r#"{"headers": {"style": "envoy_draft03"}}"#),
            &outcome,
            false,
        );
        assert_eq!(
            names(&h),
            vec![
                (
                    "x-ratelimit-limit",
                    r#"5000, 5000;w=86400;name="day", 100;w=60;name="minute""#
                ),
                ("x-ratelimit-remaining", "7"),
                ("x-ratelimit-reset", "999")
            ]
        );
        // The former names still load, as the styles they were renamed to.
        for (old, new) in [("draft03", "ietf_draft06"), ("draft_ietf", "ietf_draft11")] {
            let style = |s: &str| format!(r#"{{"headers": {{"style": "{s}"}}}}"#);
            assert_eq!(
                response_format(&style(old)).headers,
                response_format(&style(new)).headers
            );
        }
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
        let reply = refusal(&response_format("{}"), &outcome, "api", None, None);
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
        let reply = refusal(&policy, &outcome, "r", Some("e5e9cfa0".into()), None);
        assert_eq!(
            reply.body,
            r#"{"ok":false,"version":"2025-11-14-v1","request_id":"e5e9cfa0","code":"rate_limit_day","message":"Daily API quota of 5 exceeded; retry after 2023-11-14T23:13:20.250Z.","plan":"free"}"#
        );
    }

    #[test]
    fn envoy_form_names_only_the_limits_named_in_the_config() {
        let mut hour = limit("1h", 3_600_000, None);
        hour.name_given = false;
        let outcome = Outcome {
            now_ms: NOW,
            checked: vec![Checked {
                limit: &hour,
                status: status(3, 3_600_000, 0, NOW + 1_800_000, Some(NOW + 1_800_000)),
            }],
            plan: None,
            plan_id: 0,
        };
        let format = response_format(r#"{"headers": {"style": "envoy_draft03"}}"#);
        let reply = refusal(&format, &outcome, "r", None, None);
        assert_eq!(
            names(&reply.headers)[..4],
            [
                ("x-ratelimit-limit", "3, 3;w=3600"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1800"),
                ("retry-after", "1800"),
            ]
        );
    }

    #[test]
    fn refusals_say_the_wait_in_milliseconds_and_when_not_to_retry() {
        let a = limit("a", 1_000, None);
        let refused_for = |wait_ms: u64| Outcome {
            now_ms: NOW,
            checked: vec![Checked {
                limit: &a,
                status: status(1, 1_000, 0, NOW + wait_ms, Some(NOW + wait_ms)),
            }],
            plan: None,
            plan_id: 0,
        };
        let extras = |format: &ResponseFormat, wait_ms: u64| -> Vec<(String, String)> {
            let reply = refusal(format, &refused_for(wait_ms), "r", None, None);
            let after = reply
                .headers
                .iter()
                .skip_while(|(k, _)| &**k != "retry-after");
            after.map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        // By default: `Retry-After` alone up to two minutes' wait, then `x-should-retry: false`.
        let default = response_format("{}");
        let ct = pair("content-type", "application/json");
        assert_eq!(
            extras(&default, 1_050),
            [pair("retry-after", "2"), ct.clone()]
        );
        assert_eq!(
            extras(&default, 120_000),
            [pair("retry-after", "120"), ct.clone()]
        );
        assert_eq!(
            extras(&default, 120_001),
            [
                pair("retry-after", "121"),
                pair("x-should-retry", "false"),
                ct.clone()
            ]
        );
        let ms =
            response_format(r#"{"headers": {"retry_after_ms": true, "max_retry_wait": "5s"}}"#);
        assert_eq!(
            extras(&ms, 1_050),
            [
                pair("retry-after", "2"),
                pair("retry-after-ms", "1050"),
                ct.clone()
            ]
        );
        assert_eq!(
            extras(&ms, 5_001)[1..3],
            [
                pair("retry-after-ms", "5001"),
                pair("x-should-retry", "false")
            ]
        );
        let never = response_format(r#"{"headers": {"max_retry_wait": null}}"#);
        assert_eq!(
            extras(&never, 86_400_000),
            [pair("retry-after", "86400"), ct.clone()]
        );
        // A capacity refusal tells the same.
        let reply = capacity(&ms, NOW, NOW + 9_000, None);
        let headers: Vec<_> = names(&reply.headers).into_iter().take(3).collect();
        assert_eq!(
            headers,
            [
                ("retry-after", "9"),
                ("retry-after-ms", "9000"),
                ("x-should-retry", "false")
            ]
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
