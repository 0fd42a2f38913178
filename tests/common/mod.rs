//! Shared by the property tests: JSON documents shaped like filter configurations, with the
//! config's own field names and random values, nested a few levels.

use proptest::prelude::*;
use serde_json::{json, Value};

pub fn config_shaped_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..70_000).prop_map(|n| json!(n)),
        Just(json!(4294967296u64)),
        Just(json!(1.5)),
        prop::sample::select(vec![
            "1m",
            "30s",
            "x",
            "",
            "enforce",
            "shadow",
            "deny",
            "allow",
            "shared",
            "draft_ietf",
            "none",
            "problem_json",
            "{{limit}}",
            "/api",
            "free",
            "info",
        ])
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(5, 48, 5, |inner| {
        let keys = prop::sample::select(vec![
            "rules",
            "name",
            "limits",
            "requests",
            "window",
            "key",
            "header",
            "query",
            "bearer",
            "client_ip",
            "trusted_hops",
            "ipv4_prefix",
            "ipv6_prefix",
            "match",
            "path",
            "prefix",
            "exact",
            "template",
            "methods",
            "exempt",
            "plans",
            "names",
            "default",
            "keys",
            "store",
            "max_clients",
            "on_full",
            "response",
            "status",
            "body",
            "headers",
            "style",
            "hide",
            "cost",
            "max",
            "also",
            "mode",
            "enabled",
            "code",
            "message",
            "on_missing_key",
            "free",
            "burst",
            "typo",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..4).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}
