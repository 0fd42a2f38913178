//! Window lengths: `60` (seconds), `"500ms"`, `"30s"`, `"1m"`, `"1h"`, `"1d"`.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A window length in milliseconds, as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub millis: u64,
}

const UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Parses `"<integer><unit>"` with unit one of ms, s, m, h, d.
pub fn parse_window(text: &str) -> Result<WindowSpec, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return Err(format!(
            "window {text:?} must start with a whole number, e.g. \"30s\", \"1m\", \"1d\""
        ));
    }
    let scale = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, scale)| *scale)
        .ok_or_else(|| format!("window {text:?} has unit {unit:?}; use one of ms, s, m, h, d"))?;
    let value: u64 = number
        .parse()
        .map_err(|_| format!("window {text:?} is too large"))?;
    let millis = value
        .checked_mul(scale)
        .ok_or_else(|| format!("window {text:?} is too large"))?;
    Ok(WindowSpec { millis })
}

/// Renders a window the way people write it: `60s` → `"1m"`, `90s` → `"90s"`.
pub fn format_window(millis: u64) -> String {
    for (name, scale) in UNITS.iter().rev() {
        if millis >= *scale && millis.is_multiple_of(*scale) {
            return format!("{}{}", millis / scale, name);
        }
    }
    format!("{millis}ms")
}

impl<'de> Deserialize<'de> for WindowSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WindowVisitor;
        impl Visitor<'_> for WindowVisitor {
            type Value = WindowSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of seconds or a string like \"30s\", \"1m\", \"1h\", \"1d\"")
            }
            fn visit_u64<E: de::Error>(self, seconds: u64) -> Result<WindowSpec, E> {
                seconds
                    .checked_mul(1_000)
                    .map(|millis| WindowSpec { millis })
                    .ok_or_else(|| E::custom("window is too large"))
            }
            fn visit_i64<E: de::Error>(self, seconds: i64) -> Result<WindowSpec, E> {
                u64::try_from(seconds)
                    .map_err(|_| E::custom(format!("window must be positive, got {seconds}")))
                    .and_then(|s| self.visit_u64(s))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<WindowSpec, E> {
                parse_window(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(WindowVisitor)
    }
}

#[cfg(feature = "cli")]
impl schemars::JsonSchema for WindowSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Window".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A window: a number of seconds, or a whole number with a unit: \"500ms\", \"30s\", \"1m\", \"1h\", \"1d\" (100 ms to 366 days).",
            "oneOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": "^\\s*[0-9]+(ms|s|m|h|d)\\s*$"}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_window("500ms").unwrap().millis, 500);
        assert_eq!(parse_window("30s").unwrap().millis, 30_000);
        assert_eq!(parse_window("1m").unwrap().millis, 60_000);
        assert_eq!(parse_window("2h").unwrap().millis, 7_200_000);
        assert_eq!(parse_window("1d").unwrap().millis, 86_400_000);
    }

    #[test]
    fn rejects_odd_text_with_a_reason() {
        assert!(parse_window("m").unwrap_err().contains("whole number"));
        assert!(parse_window("10 minutes").unwrap_err().contains("unit"));
        assert!(parse_window("1.5s").unwrap_err().contains("unit"));
        assert!(parse_window("99999999999999999999d")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_window("9999999999999999d")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn numbers_are_seconds() {
        let w: WindowSpec = serde_json::from_str("60").unwrap();
        assert_eq!(w.millis, 60_000);
        assert!(serde_json::from_str::<WindowSpec>("-1").is_err());
        assert!(serde_json::from_str::<WindowSpec>("1.5").is_err());
    }

    #[test]
    fn formats_like_people_write() {
        assert_eq!(format_window(60_000), "1m");
        assert_eq!(format_window(90_000), "90s");
        assert_eq!(format_window(86_400_000), "1d");
        assert_eq!(format_window(1_500), "1500ms");
    }
}
