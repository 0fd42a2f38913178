//! Reads the configuration JSON into the [`super::model`] types by hand, naming the JSON path of
//! every problem and reporting all of them, not only the first.
//!
//! The types also derive serde's `Deserialize` (for the JSON Schema and as a reference): a test
//! checks that this reader and serde agree on every shipped config and on random ones. The filter
//! uses this reader because serde's generic deserializers, instantiated for every type, were most
//! of the `.wasm`.

mod costs;
mod duplicates;
mod json;
mod rules;
mod sections;
mod select;

use serde_json::Value;

use super::error::{ConfigError, Errors};
use super::model::FilterConfig;

/// Parses the configuration bytes; `Err` lists every shape problem with its path.
pub fn read(bytes: &[u8]) -> Result<FilterConfig, Errors> {
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(vec![ConfigError::new(
            "$",
            "the configuration must be a JSON object",
        )]);
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| vec![ConfigError::new("$", e.to_string())])?;
    if let Some(path) = duplicates::first_duplicate(bytes) {
        let message = "given twice in one object: only one can apply, keep the one you mean";
        return Err(vec![ConfigError::new(path, message)]);
    }
    let mut errors = Errors::new();
    let config = sections::filter_config(&value, "$", &mut errors);
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(json: &str) -> Vec<String> {
        read(json.as_bytes())
            .err()
            .unwrap_or_default()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn every_shape_error_is_reported_with_its_path() {
        let e = errors(
            r#"{"mode": "dry", "enabled": 1, "store": {"max_clients": "many", "typo": 1},
                "rules": [{"name": "a", "limits": [{"requests": -1, "window": "1y"}], "key": [{"cookie": "x"}, {"header": 5}]},
                          {"limits": [{"window": 1}]}]}"#,
        );
        let expected = [
            "$.store.typo: unknown field `typo`",
            "$.rules[0].limits[0].requests: invalid type: integer `-1`, expected a whole number",
            "$.rules[0].limits[0].window: window \"1y\" has unit",
            "$.rules[0].key[0]: unknown variant `cookie`",
            "$.rules[0].key[1].header: invalid type: integer `5`, expected a string",
            "$.rules[1]: missing field `name`",
            "$.rules[1].limits[0]: missing field `requests`",
            "$.enabled: invalid type: integer `1`, expected a boolean",
            "$.mode: unknown variant `dry`, expected one of `enforce`, `shadow`",
            "$.store.max_clients: invalid type: string \"many\", expected a whole number",
        ];
        crate::testing::assert_each_error_once(&e, &expected);
    }

    #[test]
    fn null_means_absent_like_serde_options() {
        let c = read(br#"{"plans": null, "rules": [{"name": "a", "cost": null, "limits": [{"requests": 1, "window": 1, "name": null}]}]}"#).unwrap();
        assert!(c.plans.is_none());
        assert!(c.rules[0].cost.is_none());
    }
}
