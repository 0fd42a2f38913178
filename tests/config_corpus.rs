//! Hostile configurations: a corpus of malformed configs, each rejected at load with the path
//! of the offending field, and property tests that no input makes the loader panic.

use envoy_ratelimit_wasm::Filter;

fn load(bytes: &[u8]) -> Result<Filter, envoy_ratelimit_wasm::ConfigErrors> {
    Filter::load(bytes)
}
use proptest::prelude::*;

mod common;
use serde_json::{json, Value};

/// (config, the path the first error must name).
fn corpus() -> Vec<(Vec<u8>, &'static str)> {
    let limit = |l: Value| json!({"rules": [{"name": "r", "limits": [l]}]});
    let cases: Vec<(Value, &str)> = vec![
        // wrong types
        (json!({"rules": {"name": "r"}}), "$.rules"),
        (json!({"enabled": "yes", "rules": []}), "$.enabled"),
        (limit(json!({"requests": "100", "window": "1m"})), "$.rules[0].limits[0].requests"),
        (limit(json!({"requests": 1.5, "window": "1m"})), "$.rules[0].limits[0].requests"),
        (limit(json!({"requests": 1, "window": true})), "$.rules[0].limits[0].window"),
        (json!({"rules": [{"name": 7, "limits": []}]}), "$.rules[0].name"),
        (json!({"store": "small", "rules": []}), "$.store"),
        (json!({"rules": [{"name": "r", "key": {"header": "x"}, "limits": []}]}), "$.rules[0].key"),
        // negative, zero, huge numbers
        (limit(json!({"requests": -1, "window": "1m"})), "$.rules[0].limits[0].requests"),
        (limit(json!({"requests": 4294967296u64, "window": "1m"})), "$.rules[0].limits[0].requests"),
        (limit(json!({"requests": 1, "window": 0})), "$.rules[0].limits[0].window"),
        (limit(json!({"requests": 1, "window": -5})), "$.rules[0].limits[0].window"),
        (limit(json!({"requests": 1, "window": "99ms"})), "$.rules[0].limits[0].window"),
        (limit(json!({"requests": 1, "window": "367d"})), "$.rules[0].limits[0].window"),
        (limit(json!({"requests": 1, "window": 18446744073709551615u64})), "$.rules[0].limits[0].window"),
        (json!({"store": {"max_clients": 0}, "rules": []}), "$.store.max_clients"),
        (json!({"store": {"max_clients": 4294967295u64}, "rules": []}), "$.store.max_clients"),
        (json!({"store": {"slots_per_page": 100000}, "rules": []}), "$.store.slots_per_page"),
        (json!({"store": {"cas_attempts": 0}, "rules": []}), "$.store.cas_attempts"),
        (json!({"response": {"status": 99999}, "rules": []}), "$.response.status"),
        (json!({"rules": [{"name": "r", "key": [{"client_ip": {"trusted_hops": 1000}}], "limits": [{"requests": 1, "window": 1}]}]}), "$.rules[0].key[0].client_ip.trusted_hops"),
        (json!({"rules": [{"name": "r", "key": [{"client_ip": {"ipv4_prefix": 0}}], "limits": [{"requests": 1, "window": 1}]}]}), "$.rules[0].key[0].client_ip.ipv4_prefix"),
        (json!({"rules": [{"name": "r", "key": [{"client_ip": {"ipv4_prefix": 33}}], "limits": [{"requests": 1, "window": 1}]}]}), "$.rules[0].key[0].client_ip.ipv4_prefix"),
        (json!({"rules": [{"name": "r", "key": [{"client_ip": {"ipv6_prefix": 129}}], "limits": [{"requests": 1, "window": 1}]}]}), "$.rules[0].key[0].client_ip.ipv6_prefix"),
        (json!({"rules": [{"name": "r", "key": [{"client_ip": {"ipv6_prefix": "64"}}], "limits": [{"requests": 1, "window": 1}]}]}), "$.rules[0].key[0].client_ip.ipv6_prefix"),
        // unknown fields and variants
        (json!({"rulez": []}), "$.rulez"),
        (json!({"rules": [], "store": {"prefix": "x"}}), "$.store.prefix"),
        (limit(json!({"requests": 1, "window": 1, "burst": 5})), "$.rules[0].limits[0].burst"),
        (json!({"rules": [{"name": "r", "match": {"path": {"regex": ".*"}}, "limits": []}]}), "$.rules[0].match.path"),
        (json!({"response": {"headers": {"style": "x-ratelimit"}}, "rules": []}), "$.response.headers.style"),
        // empty rules and names
        (json!({"rules": []}), "$.rules"),
        (json!({"rules": [{"name": "", "limits": [{"requests": 1, "window": 1}]}]}), "$.rules[0].name"),
        (json!({"rules": [{"name": "r"}]}), "$.rules[0].limits"),
        (json!({"rules": [{"name": "r", "key": [{"header": ""}], "limits": [{"requests": 1, "window": 1}]}]}), "$.rules[0].key[0].header"),
        // bad templates
        (json!({"response": {"body": {"m": "{{nope}}"}}, "rules": []}), "$.response.body.m"),
        (json!({"response": {"body": ["{{limit"]}, "rules": []}), "$.response.body[0]"),
        (limit(json!({"requests": 1, "window": 1, "message": "{{message}}"})), "$.rules[0].limits[0].message"),
        (json!({"rules": [{"name": "r", "match": {"path": {"template": "/a/**/b"}}, "limits": []}]}), "$.rules[0].match.path.template"),
        // duplicate names
        (json!({"rules": [{"name": "r", "exempt": true}, {"name": "r", "exempt": true}]}), "$.rules[1].name"),
        (limit(json!({"requests": 1, "window": 60})).pointer("/rules/0").map(|r| json!({"rules": [{"name": "r", "limits": [r["limits"][0], r["limits"][0]]}]})).unwrap(), "$.rules[0].limits[1].name"),
        (json!({"plans": {"names": ["a", "A"], "default": "a"}, "rules": []}), "$.plans.names[1]"),
    ];
    let mut all: Vec<(Vec<u8>, &str)> = cases
        .into_iter()
        .map(|(v, p)| (serde_json::to_vec(&v).unwrap(), p))
        .collect();
    all.push((
        br#"{"rules": [{"name": "r", "limits": [{"requests": 18446744073709551616, "window": "1m"}]}]}"#.to_vec(),
        "$.rules[0].limits[0].requests",
    ));
    // Bytes that are not JSON, or not UTF-8.
    all.push((b"\xff\xfe{\"rules\": []}".to_vec(), "$"));
    all.push((b"{\"rules\": [{\"name\": \"\xff\"}]}".to_vec(), "$"));
    all.push((b"".to_vec(), "$"));
    all.push((b"null".to_vec(), "$"));
    all.push((b"{\"rules\": []".to_vec(), "$"));
    all.push((
        [
            b"{\"rules\": [".repeat(100_000),
            b"]".repeat(100_000),
            b"}".to_vec(),
        ]
        .concat(),
        "$",
    ));
    all
}

#[test]
fn every_malformed_config_is_rejected_with_the_field_path() {
    for (bytes, path) in corpus() {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
        let errors = match load(&bytes) {
            Ok(_) => panic!("accepted: {shown}"),
            Err(errors) => errors.0,
        };
        let first = &errors[0];
        assert!(
            first.path == path
                || first.path.starts_with(&format!("{path}."))
                || first.path.starts_with(&format!("{path}[")),
            "{shown}\n  expected an error at {path}, got {first}"
        );
        assert!(!first.message.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_bytes_make_the_loader_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Err(errors) = load(&bytes) {
            prop_assert!(errors.0.iter().all(|e| e.path.starts_with('$')));
        }
    }

    #[test]
    fn no_config_shaped_json_makes_the_loader_panic(value in common::config_shaped_json()) {
        let wrapped = json!({"rules": [value.clone()]});
        for candidate in [value, wrapped] {
            if let Err(errors) = load(&serde_json::to_vec(&candidate).unwrap()) {
                prop_assert!(!errors.0.is_empty());
                prop_assert!(errors.0.iter().all(|e| e.path.starts_with('$') && !e.message.is_empty()));
            }
        }
    }
}
