//! Every shipped example configuration loads.

use std::fs;
use std::path::Path;

#[test]
fn every_example_config_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/examples");
    let mut seen = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let bytes = fs::read(&path).unwrap();
            if let Err(errors) = envoy_ratelimit_wasm::Filter::load(&bytes) {
                panic!("{}: {errors}", path.display());
            }
            seen += 1;
        }
    }
    assert!(
        seen >= 8,
        "expected the five reference examples and three ready-made refusals, found {seen}"
    );
}

/// A request as the examples' clients send it.
struct Sent {
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
}

impl envoy_ratelimit_wasm::RequestView for Sent {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        match name {
            ":method" => Some(self.method.into()),
            ":path" => Some(self.path.into()),
            _ => self
                .headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_bytes().to_vec()),
        }
    }
    fn source_address(&self) -> Option<Vec<u8>> {
        Some(b"192.0.2.7:40000".to_vec())
    }
    fn route_name(&self) -> Option<Vec<u8>> {
        None
    }
}

const NOW: u64 = 1_700_000_000_250;

/// The first refusal an example gives `request` at one instant: its status, headers and body.
fn first_refusal(example: &str, request: &Sent) -> (u32, Vec<(String, String)>, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("envoy/examples")
        .join(example);
    let filter = envoy_ratelimit_wasm::Filter::load(&fs::read(path).unwrap()).unwrap();
    let store = envoy_ratelimit_wasm::MemoryStore::new();
    for _ in 0..2_000 {
        let decision = envoy_ratelimit_wasm::decide(&filter, &store, request, NOW);
        if let envoy_ratelimit_wasm::Action::Refuse(reply) = decision.action {
            let headers = reply
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()));
            return (reply.status, headers.collect(), reply.body);
        }
    }
    panic!("{example}: no refusal");
}

/// Every shipped refusal body, byte for byte (the shapes clients parse: a changed byte is a
/// changed contract), with its content type and the headers that carry the wait.
#[test]
fn every_example_refusal_body_byte_for_byte() {
    let bearer = &[("authorization", "Bearer k-1"), ("x-request-id", "req-7")];
    let cases: [(&str, Sent, u32, &str, &str); 8] = [
        (
            "000-codeqr.json",
            Sent {
                method: "GET",
                path: "/api/links",
                headers: bearer,
            },
            429,
            "application/json",
            r#"{"error":"too_many_requests","message":"Rate limit exceeded: 60 requests per 1m. Retry in 61 seconds.","policy":"per_minute","limit":60,"window_seconds":60,"retry_after":61,"reset":1700000061}"#,
        ),
        (
            "001-qrforge.json",
            Sent {
                method: "GET",
                path: "/v1/qr",
                headers: &[("x-user-id", "u-1"), ("x-request-id", "req-7")],
            },
            429,
            "application/json",
            r#"{"ok":false,"version":"2025-11-14-v1","request_id":"req-7","code":"rate_limit_minute","message":"Too many requests this minute."}"#,
        ),
        (
            "002-linkforty.json",
            Sent {
                method: "POST",
                path: "/api/links/bulk",
                headers: bearer,
            },
            429,
            "application/json",
            r#"{"error":"Too Many Requests","message":"Rate limit exceeded. Try again in 61 seconds.","statusCode":429,"retryAfter":61}"#,
        ),
        (
            "003-prolifi.json",
            Sent {
                method: "GET",
                path: "/v2/leads",
                headers: bearer,
            },
            429,
            "application/json",
            r#"{"error":{"type":"rate_limit_error","message":"Too many requests. Please retry after the rate limit resets."}}"#,
        ),
        (
            "004-barcodegen.json",
            Sent {
                method: "GET",
                path: "/api/barcode/ean13",
                headers: bearer,
            },
            429,
            "application/json",
            r#"{"error":"Rate limit exceeded (10 req/min). Retry after 2023-11-14T22:14:21.000Z."}"#,
        ),
        (
            "005-openai.json",
            Sent {
                method: "POST",
                path: "/v1/chat/completions",
                headers: bearer,
            },
            429,
            "application/json",
            r#"{"error":{"message":"Rate limit reached on requests_per_min: limit 60 requests per 1m. Please try again in 61s.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        ),
        (
            "006-anthropic.json",
            Sent {
                method: "POST",
                path: "/v1/messages",
                headers: &[("x-api-key", "sk-ant-1"), ("x-request-id", "req-7")],
            },
            429,
            "application/json",
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your rate limit of 50 requests per 1m (requests_per_minute). Please retry in 61 seconds."},"request_id":"req-7"}"#,
        ),
        (
            "007-problem-json.json",
            Sent {
                method: "GET",
                path: "/api/orders",
                headers: bearer,
            },
            429,
            "application/problem+json",
            r#"{"type":"https://iana.org/assignments/http-problem-types#quota-exceeded","title":"Request cannot be satisfied as assigned quota has been exceeded","status":429,"detail":"Rate limit exceeded: 100 requests per 1m. Retry in 61 seconds.","violated-policies":["per_minute"]}"#,
        ),
    ];
    let mut failures = Vec::new();
    for (example, request, status, content_type, body) in cases {
        let (got_status, headers, got_body) = first_refusal(example, &request);
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if (got_status, got_body.as_str(), header("content-type"))
            != (status, body, Some(content_type))
        {
            failures.push(format!(
                "{example}: {got_status} {:?}\n  {got_body}",
                header("content-type")
            ));
        }
        assert_eq!(header("retry-after"), Some("61"), "{example}: {headers:?}");
        assert_eq!(
            header("x-should-retry"),
            None,
            "{example}: a minute's wait is retried"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The LLM providers' shapes also carry the wait to the millisecond, as their clients read it.
#[test]
fn the_llm_examples_give_the_wait_in_milliseconds() {
    for (example, path, headers) in [
        (
            "005-openai.json",
            "/v1/chat/completions",
            &[("authorization", "Bearer k-1")][..],
        ),
        (
            "006-anthropic.json",
            "/v1/messages",
            &[("x-api-key", "sk-ant-1")][..],
        ),
    ] {
        let (_, got, _) = first_refusal(
            example,
            &Sent {
                method: "POST",
                path,
                headers,
            },
        );
        let ms = got
            .iter()
            .find(|(k, _)| k == "retry-after-ms")
            .map(|(_, v)| v.as_str());
        assert_eq!(ms, Some("60750"), "{example}: {got:?}");
    }
}
