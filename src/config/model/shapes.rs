//! The two shapes `requests` and `cost` take ("a number, or an object"), for serde and the JSON
//! Schema.

use serde::Deserialize;

use super::rule::{CostConfig, KeyConfig, KeySource, LimitCostConfig, Requests, ResponseMatch};

/// "A number, or an object": the two shapes `requests` and `cost` take, with serde's own
/// messages for each shape (an untagged enum would only say "did not match any variant").
macro_rules! number_or_object {
    ($ty:ident, $number:ident, $object:ident, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<$ty, E> {
                        Ok($ty::$number(n))
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        map: A,
                    ) -> Result<$ty, A::Error> {
                        Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                            .map($ty::$object)
                    }
                }
                deserializer.deserialize_any(V)
            }
        }
    };
}

number_or_object!(
    Requests,
    All,
    PerPlan,
    "a whole number, or an object of whole numbers per plan"
);
number_or_object!(
    LimitCostConfig,
    Fixed,
    Parts,
    "a whole number, or {\"request\", \"response\"}"
);
number_or_object!(
    CostConfig,
    Fixed,
    FromRequest,
    "a whole number, or {\"header\", \"query\" or \"metadata\", \"default\", \"max\"}"
);

/// A status (a number) or a name (`"2xx"`, `"no_response"`).
impl<'de> Deserialize<'de> for ResponseMatch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ResponseMatch;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a status (200), a class (\"2xx\") or \"no_response\"")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ResponseMatch, E> {
                Ok(ResponseMatch::Status(n))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ResponseMatch, E> {
                Ok(ResponseMatch::Named(s.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `key`: a list (the first source that yields a value), `{"first": [...]}`, `{"all": [...]}`
/// or `"shared"`.
impl<'de> Deserialize<'de> for KeyConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case", deny_unknown_fields)]
        enum Tagged {
            First(Vec<KeySource>),
            All(Vec<KeySource>),
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = KeyConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a list of key sources, {\"first\": [...]}, {\"all\": [...]} or \"shared\"",
                )
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<KeyConfig, E> {
                match s {
                    "shared" => Ok(KeyConfig::Shared),
                    other => Err(E::unknown_variant(other, &["shared"])),
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<KeyConfig, A::Error> {
                Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(KeyConfig::First)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<KeyConfig, A::Error> {
                let tagged =
                    Tagged::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(match tagged {
                    Tagged::First(sources) => KeyConfig::First(sources),
                    Tagged::All(sources) => KeyConfig::All(sources),
                })
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(feature = "cli")]
mod schema {
    use std::borrow::Cow;

    use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

    use crate::config::model::rule::{
        CostConfig, CostFromRequest, KeyConfig, KeySource, LimitCostConfig, LimitCostParts,
        Requests, ResponseMatch,
    };

    impl JsonSchema for Requests {
        fn schema_name() -> Cow<'static, str> {
            "Requests".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "description": "Requests per window: a number, or a number per plan. 0, or a plan left out, means no limit at this level.",
                "oneOf": [
                    {"type": "integer", "minimum": 0, "maximum": 4294967295u64},
                    {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 4294967295u64}}
                ]
            })
        }
    }

    impl JsonSchema for CostConfig {
        fn schema_name() -> Cow<'static, str> {
            "Cost".into()
        }
        fn json_schema(generator: &mut SchemaGenerator) -> Schema {
            let from_request = generator.subschema_for::<CostFromRequest>();
            json_schema!({
                "description": "What one request costs: a fixed number, or a whole number read from a header or query parameter.",
                "oneOf": [{"type": "integer", "minimum": 1}, from_request]
            })
        }
    }

    impl JsonSchema for KeyConfig {
        fn schema_name() -> Cow<'static, str> {
            "Key".into()
        }
        fn json_schema(generator: &mut SchemaGenerator) -> Schema {
            let sources = generator.subschema_for::<Vec<KeySource>>();
            json_schema!({
                "description": "Whose counter a request counts in: a list of sources (the first that yields a value wins), {\"first\": [...]} (the same), {\"all\": [...]} (one counter per combination of every source's value) or \"shared\" (one counter for every request of the rule).",
                "oneOf": [
                    sources,
                    {"type": "object", "properties": {"first": sources}, "required": ["first"], "additionalProperties": false},
                    {"type": "object", "properties": {"all": sources}, "required": ["all"], "additionalProperties": false},
                    {"const": "shared"}
                ]
            })
        }
    }

    impl JsonSchema for LimitCostConfig {
        fn schema_name() -> Cow<'static, str> {
            "LimitCost".into()
        }
        fn json_schema(generator: &mut SchemaGenerator) -> Schema {
            let parts = generator.subschema_for::<LimitCostParts>();
            json_schema!({
                "description": "What a request costs in this limit: a number, or what it holds at the request and what its response says it cost.",
                "oneOf": [{"type": "integer", "minimum": 0}, parts]
            })
        }
    }

    impl JsonSchema for ResponseMatch {
        fn schema_name() -> Cow<'static, str> {
            "ResponseMatch".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "description": "A response status (200), a class (\"2xx\") or \"no_response\" (a stream that ended without one).",
                "oneOf": [
                    {"type": "integer", "minimum": 100, "maximum": 599},
                    {"type": "string", "pattern": "^([1-5]xx|no_response)$"}
                ]
            })
        }
    }
}
