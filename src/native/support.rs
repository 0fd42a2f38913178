//! What the module cannot read through Envoy 1.40's ABI, found in a configuration before it
//! loads, so that such a configuration is rejected with its JSON path rather than run with a
//! selector that never matches.
//!
//! The ABI reads a dynamic metadata value by namespace and key when it is a string, a number or
//! a boolean; it has no read of a path into a structured value (the Wasm filter's
//! `get_property(["metadata", "filter_metadata", ns, key, ...path])`). A metadata selector with a
//! `path` (e.g. a claim of `jwt_authn`'s `payload_in_metadata`) is therefore refused here.

use serde_json::Value;

use crate::engine::Filter;

/// Batched counting, which the module does not run: its reports are sent on a timer on each
/// worker, and dynamic-module ABI 0.2.0 gives a filter no such timer (a stream's scheduler ends
/// with its stream; the configuration's scheduler and callouts are not a worker's).
pub fn batched(filter: &Filter) -> Option<String> {
    filter.batch_interval_ms().map(|_| {
        "$.fleet.counting: \"batched\" is not supported by the native module (its reports \
         need a timer on each worker, which dynamic-module ABI 0.2.0 does not give a filter): \
         counting \"sliding\" or \"fixed\" runs here, batched counting in the Wasm filter (docs/src/deploying/native.md)"
            .to_string()
    })
}

/// The JSON path of every metadata selector with a non-empty `path`, and what to do instead.
pub fn unreadable(json: &[u8]) -> Vec<String> {
    let Ok(value) = serde_json::from_slice::<Value>(json) else {
        return Vec::new(); // the configuration reader reports what is wrong with it
    };
    let mut found = Vec::new();
    walk(&value, "$", &mut found);
    found
        .into_iter()
        .map(|at| {
            format!(
                "{at}: the native module reads dynamic metadata by namespace and key only (a \
                 string, number or boolean), not a path into a structured value; have the \
                 filter that sets it write the value under its own key (or into a header), or \
                 run this configuration with the Wasm filter"
            )
        })
        .collect()
}

fn walk(value: &Value, at: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let is_selector = map.contains_key("namespace") && map.contains_key("key");
            if is_selector
                && map
                    .get("path")
                    .is_some_and(|p| p.as_array().is_some_and(|a| !a.is_empty()))
            {
                found.push(format!("{at}.path"));
            }
            for (name, inner) in map {
                walk(inner, &format!("{at}.{name}"), found);
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                walk(inner, &format!("{at}[{i}]"), found);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metadata_path_is_named_and_a_plain_key_passes() {
        let json = br#"{"rules": [{"name": "w",
            "match": {"metadata": [{"namespace": "jwt", "key": "payload", "path": ["scope"], "regex": "w"}]},
            "key": [{"metadata": {"namespace": "auth", "key": "tenant"}}],
            "limits": [{"requests": 1, "window": "1m"}]}],
            "plans": {"names": ["a"], "metadata": {"namespace": "jwt", "key": "payload", "path": []}}}"#;
        let found = unreadable(json);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("$.rules[0].match.metadata[0].path: "));
        assert!(unreadable(b"not json").is_empty());
    }
}
