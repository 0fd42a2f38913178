//! The filter's hand-written config reader agrees with serde's derived deserializers (which the
//! JSON Schema is generated from) on every shipped config and on random config-shaped JSON. The
//! intended differences: serde accepts a sequence in place of a struct (`"store": []`), the
//! reader does not; the reader refuses a key given twice in any object, serde only a struct's
//! field given twice (in a map, such as a plan's levels, it keeps the last).

use std::fs;
use std::path::Path;

use envoy_ratelimit_wasm::{parse_config as parse, parse_with_serde};
use proptest::prelude::*;

mod common;
use serde_json::{json, Value};

fn agree(bytes: &[u8]) -> Result<(), String> {
    match (parse(bytes), parse_with_serde(bytes)) {
        (Ok(ours), Ok(reference)) if ours == reference => Ok(()),
        (Ok(ours), Ok(reference)) => Err(format!("different results:\n{ours:?}\n{reference:?}")),
        (Err(_), Err(_)) => Ok(()),
        (Err(errors), Ok(_))
            if errors.0.iter().any(|e| {
                e.message
                    .starts_with("invalid type: sequence, expected a map")
                    || e.message.starts_with("given twice in one object")
            }) =>
        {
            Ok(())
        }
        (Err(errors), Ok(_)) => Err(format!("the reader refused what serde accepts: {errors:?}")),
        (Ok(_), Err(e)) => Err(format!("the reader accepted what serde refuses: {e}")),
    }
}

#[test]
fn shipped_configs_read_the_same() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/examples");
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue; // a folder of its own (envoy/examples/llm/)
        }
        let bytes = fs::read(&path).unwrap();
        assert!(parse(&bytes).is_ok(), "{}", path.display());
        agree(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_configs_read_the_same(rules in prop::collection::vec(common::config_shaped_json(), 0..3), top in common::config_shaped_json()) {
        let mut config = match top {
            Value::Object(map) => Value::Object(map),
            _ => json!({}),
        };
        config["rules"] = Value::Array(rules);
        let bytes = serde_json::to_vec(&config).unwrap();
        if let Err(e) = agree(&bytes) {
            prop_assert!(false, "{}\n{}", e, config);
        }
    }
}

/// Every JSON pointer inside a value.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{at}/{k}");
                out.push(p.clone());
                pointers(v, p, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(v, p, out);
            }
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Shipped examples with one node replaced: mostly valid or nearly valid configs.
    #[test]
    fn mutated_examples_read_the_same(example in 0usize..5, pick in any::<prop::sample::Index>(), replacement in common::config_shaped_json(), remove in any::<bool>()) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/examples");
        let mut files: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
        files.sort();
        let mut config: Value = serde_json::from_slice(&fs::read(&files[example % files.len()]).unwrap()).unwrap();
        let mut all = Vec::new();
        pointers(&config, String::new(), &mut all);
        let target = pick.get(&all).clone();
        let (parent, last) = target.rsplit_once('/').unwrap();
        match config.pointer_mut(parent).unwrap() {
            Value::Object(map) if remove => { map.remove(last); }
            Value::Array(items) if remove => { items.remove(last.parse::<usize>().unwrap()); }
            _ => *config.pointer_mut(&target).unwrap() = replacement,
        }
        let bytes = serde_json::to_vec(&config).unwrap();
        if let Err(e) = agree(&bytes) {
            prop_assert!(false, "{}\n{}", e, config);
        }
    }
}
