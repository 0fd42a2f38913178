//! Path canonicalization and matching on any bytes: the canonical form is canonical (its own
//! canonical form, segment for segment), and a path selects the same rule as its canonical form,
//! so that no spelling dodges a rule.
#![no_main]

use std::sync::OnceLock;

use envoy_ratelimit_wasm::internals::{canonical_segments, canonical_text, Canonical};
use envoy_ratelimit_wasm::{decide, Event, Filter, MemoryStore, RequestView};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"{"rules": [
    {"name": "exact", "match": {"path": {"exact": "/api/v1/keys"}}, "key": "shared", "limits": [{"requests": 1000000000, "window": "1s"}]},
    {"name": "template", "match": {"path": {"template": "/api/:version/links/:id/qr"}}, "key": "shared", "limits": [{"requests": 1000000000, "window": "1s"}]},
    {"name": "prefix", "match": {"path": {"prefix": "/api/links"}}, "key": "shared", "limits": [{"requests": 1000000000, "window": "1s"}]},
    {"name": "other", "match": {"path": {"prefix": "/a"}}, "key": "shared", "limits": [{"requests": 1000000000, "window": "1s"}]}
]}"#;

struct Path(Vec<u8>);

impl RequestView for Path {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        match name {
            ":path" => Some(self.0.clone()),
            ":method" => Some(b"GET".to_vec()),
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

/// The rule a request with this path charges (`None`: no rule).
fn rule_of(filter: &Filter, path: &[u8]) -> Option<usize> {
    let store = MemoryStore::new();
    let decision = decide(filter, &store, &Path(path.to_vec()), 1_700_000_000_000);
    decision.events.iter().find_map(|e| match e {
        Event::Rule { rule, .. } => Some(*rule),
        _ => None,
    })
}

fuzz_target!(|raw: &[u8]| {
    static FILTER: OnceLock<Filter> = OnceLock::new();
    let filter = FILTER.get_or_init(|| Filter::load(CONFIG.as_bytes()).unwrap());
    let segments = canonical_segments(raw);
    let canonical = canonical_text(raw);
    // The borrowed fast path and the rewritten one agree.
    let of = Canonical::of(raw);
    let of: Vec<&[u8]> = of.segments().collect();
    assert_eq!(of, segments.iter().map(Vec::as_slice).collect::<Vec<_>>());
    // Idempotent: the canonical form's canonical form is itself. Escapes are decoded four times
    // at most (src/route/path.rs): a path still holding one after that (encoded five times over,
    // which no hop decodes) is matched as it stands, and its text would decode further (and
    // might select another rule: `/a%252525252F:` is not under `/a`, its text is).
    let still_escaped = segments.iter().any(|s| {
        s.windows(3)
            .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
    });
    if still_escaped {
        return;
    }
    assert_eq!(
        canonical_segments(&canonical),
        segments,
        "not idempotent: {canonical:?}"
    );
    assert_eq!(canonical_text(&canonical), canonical);
    for s in &segments {
        assert!(!s.is_empty() && s != b"." && s != b"..");
        assert!(!s
            .iter()
            .any(|b| b.is_ascii_uppercase() || *b == b'/' || *b == b'\\'));
    }
    // The same rule for a path and its canonical form.
    assert_eq!(
        rule_of(filter, raw),
        rule_of(filter, &canonical),
        "{raw:?} -> {canonical:?}"
    );
});
