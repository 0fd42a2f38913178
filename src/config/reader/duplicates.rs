//! A key given twice in one JSON object: `serde_json` keeps the last silently, so an operator
//! who wrote `"body"` twice would run with one of them unawares. The reader refuses such a
//! configuration and names the key's path (found by `fuzz/fuzz_targets/config.rs`: serde's
//! derived readers refused a repeated field, the reader took the last).

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The JSON path of the first key given twice in one object, if any (`None` too for bytes that
/// are not JSON: the reader reports those).
pub fn first_duplicate(bytes: &[u8]) -> Option<String> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    Walk("$".to_string()).deserialize(&mut json).ok().flatten()
}

/// Walks a JSON value at a path, looking for a repeated key.
struct Walk(String);

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut i = 0;
        while let Some(inner) = items.next_element_seed(Walk(format!("{}[{i}]", self.0)))? {
            found = found.or(inner);
            i += 1;
        }
        Ok(found)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = HashSet::new();
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            let path = format!("{}.{key}", self.0);
            if !seen.insert(key) && found.is_none() {
                found = Some(path.clone());
            }
            found = found.or(map.next_value_seed(Walk(path))?);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_repeated_key_is_named_by_its_path() {
        let find = |json: &str| first_duplicate(json.as_bytes());
        assert_eq!(
            find(r#"{"a": 1, "b": {"c": [1, {"d": 1, "d": 2}]}}"#),
            Some("$.b.c[1].d".into())
        );
        assert_eq!(
            find(r#"{"response": {"body": 1}, "response": {}}"#),
            Some("$.response".into())
        );
        assert_eq!(
            find(r#"{"a": {"x": 1}, "b": {"x": 1}}"#),
            None,
            "one key in each of two objects"
        );
        assert_eq!(find(r#"{"a": [1, 2, 1]}"#), None);
        assert_eq!(find("not json"), None);
    }
}
