//! The reader's tools: an object read field by field (each taken once, the rest unknown), and
//! readers of JSON scalars, lists, maps and enums that report serde's messages with the path.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::config::{parse_window, ConfigError, Errors, WindowSpec};

/// What a JSON value is, in serde's words.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) if n.is_f64() => format!("floating point `{n}`"),
        Value::Number(n) => format!("integer `{n}`"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "sequence".into(),
        Value::Object(_) => "map".into(),
    }
}

pub fn invalid(errors: &mut Errors, path: &str, value: &Value, expected: &str) {
    errors.push(ConfigError::new(
        path,
        format!("invalid type: {}, expected {expected}", describe(value)),
    ));
}

/// An object being read: each field is taken once; what is left over is unknown.
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: &'a str,
    known: &'static [&'static str],
}

impl<'a> Fields<'a> {
    pub fn open(
        value: &'a Value,
        path: &'a str,
        known: &'static [&'static str],
        errors: &mut Errors,
    ) -> Option<Self> {
        match value {
            Value::Object(map) => {
                for key in map.keys() {
                    if !known.contains(&key.as_str()) {
                        let expected = known
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ");
                        errors.push(ConfigError::new(
                            format!("{path}.{key}"),
                            format!("unknown field `{key}`, expected one of {expected}"),
                        ));
                    }
                }
                Some(Fields { map, path, known })
            }
            other => {
                invalid(errors, path, other, "a map");
                None
            }
        }
    }

    pub fn path(&self, key: &str) -> String {
        debug_assert!(self.known.contains(&key));
        format!("{}.{key}", self.path)
    }

    /// A present, non-null field.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn required(&self, key: &str, errors: &mut Errors) -> Option<&'a Value> {
        let value = self.map.get(key);
        if value.is_none() {
            errors.push(ConfigError::new(
                self.path,
                format!("missing field `{key}`"),
            ));
        }
        value
    }

    pub fn optional<T>(
        &self,
        key: &str,
        errors: &mut Errors,
        read: impl FnOnce(&Value, &str, &mut Errors) -> Option<T>,
    ) -> Option<T> {
        self.get(key).and_then(|v| read(v, &self.path(key), errors))
    }

    /// A field with a default: absent gives the default, null is a type error (as in serde).
    pub fn or<T>(
        &self,
        key: &str,
        default: T,
        errors: &mut Errors,
        read: impl FnOnce(&Value, &str, &mut Errors) -> Option<T>,
    ) -> T {
        match self.map.get(key) {
            Some(v) => read(v, &self.path(key), errors).unwrap_or(default),
            None => default,
        }
    }
}

pub fn boolean(value: &Value, path: &str, errors: &mut Errors) -> Option<bool> {
    value.as_bool().or_else(|| {
        invalid(errors, path, value, "a boolean");
        None
    })
}

pub fn whole(value: &Value, path: &str, errors: &mut Errors) -> Option<u64> {
    value.as_u64().or_else(|| {
        invalid(errors, path, value, "a whole number");
        None
    })
}

pub fn whole32(value: &Value, path: &str, errors: &mut Errors) -> Option<u32> {
    let n = whole(value, path, errors)?;
    u32::try_from(n).ok().or_else(|| {
        errors.push(ConfigError::new(
            path,
            format!(
                "invalid value: integer `{n}`, expected at most {}",
                u32::MAX
            ),
        ));
        None
    })
}

pub fn text(value: &Value, path: &str, errors: &mut Errors) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        other => {
            invalid(errors, path, other, "a string");
            None
        }
    }
}

pub fn list<T>(
    value: &Value,
    path: &str,
    errors: &mut Errors,
    mut item: impl FnMut(&Value, &str, &mut Errors) -> Option<T>,
) -> Option<Vec<T>> {
    let Value::Array(items) = value else {
        invalid(errors, path, value, "a sequence");
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut complete = true;
    for (i, v) in items.iter().enumerate() {
        match item(v, &format!("{path}[{i}]"), errors) {
            Some(x) => out.push(x),
            None => complete = false,
        }
    }
    complete.then_some(out)
}

pub fn texts(value: &Value, path: &str, errors: &mut Errors) -> Option<Vec<String>> {
    list(value, path, errors, text)
}

pub fn map_of<T>(
    value: &Value,
    path: &str,
    errors: &mut Errors,
    mut item: impl FnMut(&Value, &str, &mut Errors) -> Option<T>,
) -> Option<BTreeMap<String, T>> {
    let Value::Object(map) = value else {
        invalid(errors, path, value, "a map");
        return None;
    };
    let mut out = BTreeMap::new();
    let mut complete = true;
    for (k, v) in map {
        match item(v, &format!("{path}.{k}"), errors) {
            Some(x) => {
                out.insert(k.clone(), x);
            }
            None => complete = false,
        }
    }
    complete.then_some(out)
}

/// A unit-variant enum written as a string.
pub fn variant<T: Copy>(
    value: &Value,
    path: &str,
    errors: &mut Errors,
    variants: &[(&str, T)],
) -> Option<T> {
    let Value::String(s) = value else {
        invalid(errors, path, value, "a string");
        return None;
    };
    variants
        .iter()
        .find(|(name, _)| name == s)
        .map(|(_, v)| *v)
        .or_else(|| {
            let expected = variants
                .iter()
                .map(|(n, _)| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ");
            errors.push(ConfigError::new(
                path,
                format!("unknown variant `{s}`, expected one of {expected}"),
            ));
            None
        })
}

/// An externally tagged enum: an object with exactly one key naming the variant.
pub fn tagged<'v>(
    value: &'v Value,
    path: &str,
    errors: &mut Errors,
    variants: &[&str],
) -> Option<(&'v str, &'v Value)> {
    let expected = variants
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match value {
        Value::Object(map) if map.len() == 1 => {
            let (tag, inner) = map.iter().next().expect("one entry");
            if variants.contains(&tag.as_str()) {
                Some((tag.as_str(), inner))
            } else {
                errors.push(ConfigError::new(
                    path,
                    format!("unknown variant `{tag}`, expected one of {expected}"),
                ));
                None
            }
        }
        Value::Object(_) => {
            errors.push(ConfigError::new(
                path,
                format!("expected an object with exactly one of {expected}"),
            ));
            None
        }
        other => {
            invalid(
                errors,
                path,
                other,
                &format!("an object with one of {expected}"),
            );
            None
        }
    }
}

pub fn window(value: &Value, path: &str, errors: &mut Errors) -> Option<WindowSpec> {
    let result = match value {
        Value::String(s) => parse_window(s),
        Value::Number(n) => match n.as_u64() {
            Some(seconds) => seconds.checked_mul(1_000).map(|millis| WindowSpec { millis }).ok_or_else(|| "window is too large".to_string()),
            None if n.is_i64() => Err(format!("window must be positive, got {n}")),
            None => Err(format!("invalid type: {}, expected a number of seconds or a string like \"30s\", \"1m\", \"1h\", \"1d\"", describe(value))),
        },
        other => Err(format!(
            "invalid type: {}, expected a number of seconds or a string like \"30s\", \"1m\", \"1h\", \"1d\"",
            describe(other)
        )),
    };
    result
        .map_err(|message| errors.push(ConfigError::new(path, message)))
        .ok()
}
