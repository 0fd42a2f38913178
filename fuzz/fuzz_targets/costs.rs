//! A request's cost read from a header or a query parameter, through the whole decision: what is
//! charged is the documented cost (a whole number from 1, at most `max`; anything else costs
//! `default`), as the remaining count shows; never a panic, never more than `max`.
//!
//! Input: `<header value>\n<query value>` (either may be any bytes).
#![no_main]

use std::sync::OnceLock;

use envoy_ratelimit_wasm::{decide, Action, Filter, MemoryStore, RequestView};
use libfuzzer_sys::fuzz_target;

const LIMIT: u64 = 1_000_000;
const CONFIG: &str = r#"{"rules": [
    {"name": "header", "match": {"path": {"prefix": "/h"}}, "key": "shared",
     "cost": {"header": "x-cost", "default": 7, "max": 1000},
     "limits": [{"requests": 1000000, "window": "1m"}]},
    {"name": "query", "key": "shared",
     "cost": {"query": "n", "default": 7, "max": 1000},
     "limits": [{"requests": 1000000, "window": "1m"}]}
]}"#;

struct Req {
    path: Vec<u8>,
    cost: Vec<u8>,
}

impl RequestView for Req {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        match name {
            ":path" => Some(self.path.clone()),
            ":method" => Some(b"POST".to_vec()),
            "x-cost" => Some(self.cost.clone()),
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

/// The documented cost of a carried value, computed apart from the filter's code: ASCII spaces
/// around it aside, an optional `+` and decimal digits that fit 64 bits; 0 or anything else costs
/// the default.
fn documented(value: &[u8]) -> u64 {
    let text = value.trim_ascii();
    let digits = text.strip_prefix(b"+").unwrap_or(text);
    let mut n: u64 = 0;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return 7;
    }
    for d in digits {
        match n
            .checked_mul(10)
            .and_then(|n| n.checked_add((d - b'0') as u64))
        {
            Some(next) => n = next,
            None => return 7,
        }
    }
    if n == 0 {
        7
    } else {
        n.min(1000)
    }
}

fn percent_encoded(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .flat_map(|b| format!("%{b:02X}").into_bytes())
        .collect()
}

fn charged(filter: &Filter, request: &Req) -> u64 {
    let store = MemoryStore::new();
    let Action::Allow(headers) = decide(filter, &store, request, 1_700_000_000_000).action else {
        panic!("refused with a fresh store")
    };
    let remaining = headers
        .iter()
        .find(|(k, _)| &**k == "x-ratelimit-remaining")
        .unwrap();
    let remaining: u64 = remaining.1.to_string().parse().unwrap();
    LIMIT - remaining
}

fuzz_target!(|bytes: &[u8]| {
    static FILTER: OnceLock<Filter> = OnceLock::new();
    let filter = FILTER.get_or_init(|| Filter::load(CONFIG.as_bytes()).unwrap());
    let mut parts = bytes.splitn(2, |&b| b == b'\n');
    let header = parts.next().unwrap_or_default().to_vec();
    let query = parts.next().unwrap_or_default();
    let by_header = Req {
        path: b"/h".to_vec(),
        cost: header.clone(),
    };
    assert_eq!(
        charged(filter, &by_header),
        documented(&header),
        "header {header:?}"
    );
    let mut path = b"/q?n=".to_vec();
    path.extend(percent_encoded(query));
    let by_query = Req {
        path,
        cost: Vec::new(),
    };
    assert_eq!(
        charged(filter, &by_query),
        documented(query),
        "query {query:?}"
    );
});
