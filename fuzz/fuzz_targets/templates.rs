//! Refusal body templates (any JSON value, placeholders anywhere) and limit messages (any text):
//! either refused at load with the path named, or every refusal they render is valid JSON whose
//! fixed parts are kept; never a panic.
//!
//! Input: `<body template JSON>\n<message text>`.
#![no_main]

use envoy_ratelimit_wasm::{decide, Action, Filter, MemoryStore, RequestView};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

struct Req;

impl RequestView for Req {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        match name {
            ":path" => Some(b"/api".to_vec()),
            ":method" => Some(b"GET".to_vec()),
            "x-request-id" => Some(b"req-\"1\"\\\x01".to_vec()),
            _ => None,
        }
    }
    fn source_address(&self) -> Option<Vec<u8>> {
        Some(b"192.0.2.7:4711".to_vec())
    }
    fn route_name(&self) -> Option<Vec<u8>> {
        None
    }
}

/// Every text and key in a JSON value with no `{{` in it (a fixed part of the template).
fn fixed_texts(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) if !s.contains("{{") => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| fixed_texts(v, out)),
        Value::Object(map) => {
            for (k, v) in map {
                if !k.contains("{{") {
                    out.push(k.clone());
                }
                fixed_texts(v, out);
            }
        }
        _ => {}
    }
}

fuzz_target!(|bytes: &[u8]| {
    let mut parts = bytes.splitn(2, |&b| b == b'\n');
    let Ok(body) = serde_json::from_slice::<Value>(parts.next().unwrap_or_default()) else {
        return;
    };
    let message = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let config = json!({
        "response": {"body": body},
        "rules": [{"name": "api", "key": "shared",
                   "limits": [{"name": "minute", "requests": 1, "window": "1m", "message": message}]}]
    });
    let filter = match Filter::load(config.to_string().as_bytes()) {
        Ok(filter) => filter,
        Err(errors) => {
            assert!(
                errors.0.iter().all(|e| e.path.starts_with("$.")),
                "{errors}"
            );
            return;
        }
    };
    let store = MemoryStore::new();
    let now = 1_700_000_000_000;
    assert!(matches!(
        decide(&filter, &store, &Req, now).action,
        Action::Allow(_)
    ));
    let Action::Refuse(reply) = decide(&filter, &store, &Req, now).action else {
        panic!("the second request was not refused")
    };
    let rendered: Value = serde_json::from_str(&reply.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", reply.body));
    let mut expected = Vec::new();
    fixed_texts(&body, &mut expected);
    let mut got = Vec::new();
    fixed_texts(&rendered, &mut got);
    for text in expected {
        assert!(
            got.contains(&text),
            "the fixed text {text:?} is lost: {}",
            reply.body
        );
    }
});
