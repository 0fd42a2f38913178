//! A client key given twice with different values: refused as ambiguous by default (a 400 that
//! says so, not a rate-limit refusal, nothing counted), or counted under the value the rule names.

use super::*;

const AMBIGUOUS: &str = r#"{"rules": [
    {"name": "api", "match": {"path": {"prefix": "/api"}},
     "key": [{"header": "x-api-key"}], "limits": [{"requests": 2, "window": "1m"}]},
    {"name": "last", "match": {"path": {"prefix": "/last"}},
     "key": [{"header": "x-api-key"}], "on_ambiguous_key": "last",
     "limits": [{"requests": 2, "window": "1m"}]}
]}"#;

fn twice(path: &str, first: &str, second: &str) -> FakeRequest {
    get(path, &[("x-api-key", first)]).again("x-api-key", second)
}

#[test]
fn a_key_given_twice_cannot_escape_an_exhausted_limit() {
    let filter = load(AMBIGUOUS.as_bytes()).unwrap();
    assert!(filter.read_all_headers, "every line of x-api-key is read");
    let store = MemoryStore::new();
    let exhausted = get("/api/x", &[("x-api-key", "exhausted")]);
    for _ in 0..2 {
        assert!(matches!(
            handle(&filter, &store, &exhausted, T0).action,
            Action::Allow(_)
        ));
    }
    let pages = store.keys();
    let decided = handle(&filter, &store, &twice("/api/x", "junk", "exhausted"), T0);
    assert!(has(&decided, Stat::AmbiguousKey));
    assert!(!has(&decided, Stat::Refused), "not a rate-limit refusal");
    let Action::Refuse(reply) = decided.action else {
        panic!("{:?}", decided.action)
    };
    assert_eq!(reply.status, 400);
    assert!(
        reply.body.contains("\"error\":\"ambiguous_client_key\""),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("header x-api-key"), "{}", reply.body);
    let names: Vec<_> = reply.headers.iter().map(|(k, _)| k.to_string()).collect();
    assert!(
        !names
            .iter()
            .any(|n| n == "retry-after" || n.starts_with("x-ratelimit")),
        "{names:?}"
    );
    assert_eq!(store.keys(), pages, "nothing counted, no page written");
    // The key alone, once more: still refused by its own limit.
    let refused = handle(&filter, &store, &exhausted, T0);
    assert!(matches!(refused.action, Action::Refuse(ref r) if r.status == 429));
}

#[test]
fn a_rule_told_which_value_counts_that_one() {
    let filter = load(AMBIGUOUS.as_bytes()).unwrap();
    let store = MemoryStore::new();
    for _ in 0..2 {
        let decided = handle(&filter, &store, &twice("/last/x", "junk", "k"), T0);
        assert!(matches!(decided.action, Action::Allow(_)));
    }
    // Counted under the last value: the key alone is now refused, the first value is untouched.
    let alone = handle(&filter, &store, &get("/last/x", &[("x-api-key", "k")]), T0);
    assert!(matches!(alone.action, Action::Refuse(ref r) if r.status == 429));
    let junk = handle(
        &filter,
        &store,
        &get("/last/x", &[("x-api-key", "junk")]),
        T0,
    );
    assert!(matches!(junk.action, Action::Allow(_)));
}

#[test]
fn a_rule_in_shadow_mode_lets_an_ambiguous_key_through() {
    let filter = load(
        br#"{"mode": "shadow", "rules": [{"name": "api", "key": [{"header": "x-api-key"}],
            "limits": [{"requests": 2, "window": "1m"}]}]}"#,
    )
    .unwrap();
    let store = MemoryStore::new();
    let decided = handle(&filter, &store, &twice("/x", "a", "b"), T0);
    assert_eq!(decided.action, Action::Pass);
    assert!(has(&decided, Stat::AmbiguousKey));
}

#[test]
fn a_wrong_policy_is_named_at_load() {
    let errors = load(
        br#"{"rules": [{"name": "api", "on_ambiguous_key": "count_each",
            "limits": [{"requests": 2, "window": "1m"}]}]}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(errors.contains("$.rules[0].on_ambiguous_key"), "{errors}");
    assert!(errors.contains("deny"), "{errors}");
    // A key read once per request under `first` keeps single header reads.
    let first = load(
        br#"{"rules": [{"name": "api", "key": [{"header": "x-api-key"}], "on_ambiguous_key": "first",
            "limits": [{"requests": 2, "window": "1m"}]}]}"#,
    )
    .unwrap();
    assert!(!first.read_all_headers);
}
