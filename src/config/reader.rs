//! Reads the configuration JSON into the [`super::model`] types by hand, naming the JSON path of
//! every problem and reporting all of them, not only the first.
//!
//! The types also derive serde's `Deserialize` (for the JSON Schema and as a reference): a test
//! checks that this reader and serde agree on every shipped config and on random ones. The filter
//! uses this reader because serde's generic deserializers, instantiated for every type, were most
//! of the `.wasm`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::model::*;
use super::{parse_window, ConfigError, Errors, WindowSpec};

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
    let mut errors = Errors::new();
    let config = filter_config(&value, "$", &mut errors);
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(errors),
    }
}

/// What a JSON value is, in serde's words.
fn describe(value: &Value) -> String {
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

fn invalid(errors: &mut Errors, path: &str, value: &Value, expected: &str) {
    errors.push(ConfigError::new(
        path,
        format!("invalid type: {}, expected {expected}", describe(value)),
    ));
}

/// An object being read: each field is taken once; what is left over is unknown.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: &'a str,
    known: &'static [&'static str],
}

impl<'a> Fields<'a> {
    fn open(
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

    fn path(&self, key: &str) -> String {
        debug_assert!(self.known.contains(&key));
        format!("{}.{key}", self.path)
    }

    /// A present, non-null field.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn required(&self, key: &str, errors: &mut Errors) -> Option<&'a Value> {
        let value = self.map.get(key);
        if value.is_none() {
            errors.push(ConfigError::new(
                self.path,
                format!("missing field `{key}`"),
            ));
        }
        value
    }

    fn optional<T>(
        &self,
        key: &str,
        errors: &mut Errors,
        read: impl FnOnce(&Value, &str, &mut Errors) -> Option<T>,
    ) -> Option<T> {
        self.get(key).and_then(|v| read(v, &self.path(key), errors))
    }

    /// A field with a default: absent gives the default, null is a type error (as in serde).
    fn or<T>(
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

fn boolean(value: &Value, path: &str, errors: &mut Errors) -> Option<bool> {
    value.as_bool().or_else(|| {
        invalid(errors, path, value, "a boolean");
        None
    })
}

fn whole(value: &Value, path: &str, errors: &mut Errors) -> Option<u64> {
    value.as_u64().or_else(|| {
        invalid(errors, path, value, "a whole number");
        None
    })
}

fn whole32(value: &Value, path: &str, errors: &mut Errors) -> Option<u32> {
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

fn text(value: &Value, path: &str, errors: &mut Errors) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        other => {
            invalid(errors, path, other, "a string");
            None
        }
    }
}

fn list<T>(
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

fn texts(value: &Value, path: &str, errors: &mut Errors) -> Option<Vec<String>> {
    list(value, path, errors, text)
}

fn map_of<T>(
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
fn variant<T: Copy>(
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
fn tagged<'v>(
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

fn filter_config(value: &Value, path: &str, errors: &mut Errors) -> Option<FilterConfig> {
    const KNOWN: &[&str] = &[
        "enabled",
        "mode",
        "refusal_log",
        "store",
        "response",
        "plans",
        "fleet",
        "rules",
    ];
    let f = Fields::open(value, path, KNOWN, errors)?;
    let rules = f
        .required("rules", errors)
        .and_then(|v| list(v, &f.path("rules"), errors, rule));
    Some(FilterConfig {
        enabled: f.or("enabled", true, errors, boolean),
        mode: f.or("mode", Mode::Enforce, errors, |v, p, e| {
            variant(
                v,
                p,
                e,
                &[("enforce", Mode::Enforce), ("shadow", Mode::Shadow)],
            )
        }),
        refusal_log: f.or("refusal_log", RefusalLog::Info, errors, |v, p, e| {
            variant(
                v,
                p,
                e,
                &[
                    ("off", RefusalLog::Off),
                    ("info", RefusalLog::Info),
                    ("debug", RefusalLog::Debug),
                ],
            )
        }),
        store: f.or("store", StoreConfig::default(), errors, store),
        response: f.or("response", ResponseConfig::default(), errors, response),
        plans: f.optional("plans", errors, plans),
        fleet: f.optional("fleet", errors, fleet),
        rules: rules?,
    })
}

fn fleet(value: &Value, path: &str, errors: &mut Errors) -> Option<FleetConfig> {
    const KNOWN: &[&str] = &[
        "cluster",
        "domain",
        "timeout",
        "on_error",
        "counting",
        "sub_windows",
        "lease",
        "key_secret",
    ];
    let f = Fields::open(value, path, KNOWN, errors)?;
    let cluster = f
        .required("cluster", errors)
        .and_then(|v| text(v, &f.path("cluster"), errors));
    let on_error = [
        ("local", OnFleetError::Local),
        ("allow", OnFleetError::Allow),
        ("deny", OnFleetError::Deny),
    ];
    let counting = [
        ("sliding", FleetCounting::Sliding),
        ("fixed", FleetCounting::Fixed),
    ];
    Some(FleetConfig {
        domain: f.optional("domain", errors, text),
        timeout: f.or("timeout", WindowSpec { millis: 20 }, errors, window),
        on_error: f.or("on_error", OnFleetError::Local, errors, |v, p, e| {
            variant(v, p, e, &on_error)
        }),
        counting: f.or("counting", FleetCounting::Sliding, errors, |v, p, e| {
            variant(v, p, e, &counting)
        }),
        sub_windows: f.or("sub_windows", 4, errors, whole32),
        lease: f.or("lease", 1, errors, whole),
        key_secret: f.optional("key_secret", errors, text),
        cluster: cluster?,
    })
}

fn on_failure(value: &Value, path: &str, errors: &mut Errors) -> Option<OnFailure> {
    variant(
        value,
        path,
        errors,
        &[("deny", OnFailure::Deny), ("allow", OnFailure::Allow)],
    )
}

fn store(value: &Value, path: &str, errors: &mut Errors) -> Option<StoreConfig> {
    const KNOWN: &[&str] = &[
        "key_prefix",
        "max_clients",
        "slots_per_page",
        "on_full",
        "cas_attempts",
        "on_contention",
    ];
    let f = Fields::open(value, path, KNOWN, errors)?;
    let d = StoreConfig::default();
    Some(StoreConfig {
        key_prefix: f.or("key_prefix", d.key_prefix, errors, text),
        max_clients: f.or("max_clients", d.max_clients, errors, whole32),
        slots_per_page: f.or("slots_per_page", d.slots_per_page, errors, whole32),
        on_full: f.or("on_full", d.on_full, errors, on_failure),
        cas_attempts: f.or("cas_attempts", d.cas_attempts, errors, whole32),
        on_contention: f.or("on_contention", d.on_contention, errors, on_failure),
    })
}

fn plans(value: &Value, path: &str, errors: &mut Errors) -> Option<PlansConfig> {
    const KNOWN: &[&str] = &["names", "default", "header", "keys"];
    let f = Fields::open(value, path, KNOWN, errors)?;
    let names = f
        .required("names", errors)
        .and_then(|v| texts(v, &f.path("names"), errors));
    let default = f
        .required("default", errors)
        .and_then(|v| text(v, &f.path("default"), errors));
    Some(PlansConfig {
        header: f.optional("header", errors, text),
        keys: f.or("keys", BTreeMap::new(), errors, |v, p, e| {
            map_of(v, p, e, text)
        }),
        names: names?,
        default: default?,
    })
}

fn response(value: &Value, path: &str, errors: &mut Errors) -> Option<ResponseConfig> {
    const KNOWN: &[&str] = &["status", "headers", "preset", "body", "content_type"];
    let f = Fields::open(value, path, KNOWN, errors)?;
    let d = ResponseConfig::default();
    Some(ResponseConfig {
        status: f.or("status", d.status, errors, whole32),
        headers: f.or("headers", HeadersConfig::default(), errors, headers),
        preset: f.or("preset", d.preset, errors, |v, p, e| {
            variant(
                v,
                p,
                e,
                &[
                    ("default", BodyPreset::Default),
                    ("problem_json", BodyPreset::ProblemJson),
                ],
            )
        }),
        body: f.get("body").cloned(),
        content_type: f.optional("content_type", errors, text),
    })
}

fn headers(value: &Value, path: &str, errors: &mut Errors) -> Option<HeadersConfig> {
    const KNOWN: &[&str] = &["style", "reset", "names", "hide"];
    let f = Fields::open(value, path, KNOWN, errors)?;
    Some(HeadersConfig {
        style: f.or("style", HeaderStyle::XRateLimit, errors, |v, p, e| {
            variant(
                v,
                p,
                e,
                &[
                    ("x_rate_limit", HeaderStyle::XRateLimit),
                    ("draft03", HeaderStyle::Draft03),
                    ("draft_ietf", HeaderStyle::DraftIetf),
                    ("none", HeaderStyle::None),
                ],
            )
        }),
        reset: f.or("reset", ResetFormat::EpochSeconds, errors, |v, p, e| {
            variant(
                v,
                p,
                e,
                &[
                    ("epoch_seconds", ResetFormat::EpochSeconds),
                    ("delta_seconds", ResetFormat::DeltaSeconds),
                ],
            )
        }),
        names: f.or("names", BTreeMap::new(), errors, |v, p, e| {
            map_of(v, p, e, text)
        }),
        hide: f.or("hide", Vec::new(), errors, texts),
    })
}

fn rule(value: &Value, path: &str, errors: &mut Errors) -> Option<RuleConfig> {
    const KNOWN: &[&str] = &[
        "name",
        "match",
        "exempt",
        "key",
        "on_missing_key",
        "cost",
        "also",
        "limits",
        "fleet",
    ];
    let f = Fields::open(value, path, KNOWN, errors)?;
    let name = f
        .required("name", errors)
        .and_then(|v| text(v, &f.path("name"), errors));
    Some(RuleConfig {
        matcher: f.or("match", MatchConfig::default(), errors, matcher),
        exempt: f.or("exempt", false, errors, boolean),
        key: f.or("key", Vec::new(), errors, |v, p, e| {
            list(v, p, e, key_source)
        }),
        on_missing_key: f.or("on_missing_key", OnMissingKey::Shared, errors, |v, p, e| {
            variant(
                v,
                p,
                e,
                &[
                    ("shared", OnMissingKey::Shared),
                    ("allow", OnMissingKey::Allow),
                    ("deny", OnMissingKey::Deny),
                ],
            )
        }),
        cost: f.optional("cost", errors, cost),
        also: f.or("also", Vec::new(), errors, texts),
        limits: f.or("limits", Vec::new(), errors, |v, p, e| list(v, p, e, limit)),
        fleet: f.or("fleet", false, errors, boolean),
        name: name?,
    })
}

fn matcher(value: &Value, path: &str, errors: &mut Errors) -> Option<MatchConfig> {
    const KNOWN: &[&str] = &["path", "methods", "hosts", "route_names"];
    let f = Fields::open(value, path, KNOWN, errors)?;
    Some(MatchConfig {
        path: f.optional("path", errors, |v, p, e| {
            let (tag, inner) = tagged(v, p, e, &["exact", "prefix", "template"])?;
            let s = text(inner, &format!("{p}.{tag}"), e)?;
            Some(match tag {
                "exact" => PathMatch::Exact(s),
                "prefix" => PathMatch::Prefix(s),
                _ => PathMatch::Template(s),
            })
        }),
        methods: f.or("methods", Vec::new(), errors, texts),
        hosts: f.or("hosts", Vec::new(), errors, texts),
        route_names: f.or("route_names", Vec::new(), errors, texts),
    })
}

fn key_source(value: &Value, path: &str, errors: &mut Errors) -> Option<KeySource> {
    let (tag, inner) = tagged(
        value,
        path,
        errors,
        &["header", "query", "bearer", "client_ip"],
    )?;
    let at = format!("{path}.{tag}");
    match tag {
        "header" => text(inner, &at, errors).map(KeySource::Header),
        "query" => text(inner, &at, errors).map(KeySource::Query),
        "bearer" => Fields::open(inner, &at, &[], errors).map(|_| KeySource::Bearer {}),
        _ => {
            let names = &["trusted_hops", "ipv4_prefix", "ipv6_prefix"];
            let f = Fields::open(inner, &at, names, errors)?;
            let d = ClientIpConfig::default();
            Some(KeySource::ClientIp(ClientIpConfig {
                trusted_hops: f.or("trusted_hops", d.trusted_hops, errors, whole32),
                ipv4_prefix: f.or("ipv4_prefix", d.ipv4_prefix, errors, whole32),
                ipv6_prefix: f.or("ipv6_prefix", d.ipv6_prefix, errors, whole32),
            }))
        }
    }
}

fn cost(value: &Value, path: &str, errors: &mut Errors) -> Option<CostConfig> {
    if value.is_object() {
        let f = Fields::open(value, path, &["header", "query", "default", "max"], errors)?;
        let max = f
            .required("max", errors)
            .and_then(|v| whole(v, &f.path("max"), errors));
        return Some(CostConfig::FromRequest(CostFromRequest {
            header: f.optional("header", errors, text),
            query: f.optional("query", errors, text),
            default: f.or("default", 1, errors, whole),
            max: max?,
        }));
    }
    match value.as_u64() {
        Some(n) => Some(CostConfig::Fixed(n)),
        None => {
            invalid(
                errors,
                path,
                value,
                "a whole number, or {\"header\" or \"query\", \"default\", \"max\"}",
            );
            None
        }
    }
}

fn limit(value: &Value, path: &str, errors: &mut Errors) -> Option<LimitConfig> {
    const KNOWN: &[&str] = &["name", "requests", "window", "code", "message", "fleet"];
    let f = Fields::open(value, path, KNOWN, errors)?;
    let requests = f.required("requests", errors).and_then(|v| {
        let p = f.path("requests");
        match v {
            Value::Object(_) => map_of(v, &p, errors, whole).map(Requests::PerPlan),
            _ => match v.as_u64() {
                Some(n) => Some(Requests::All(n)),
                None => {
                    invalid(
                        errors,
                        &p,
                        v,
                        "a whole number, or an object of whole numbers per plan",
                    );
                    None
                }
            },
        }
    });
    let window = f
        .required("window", errors)
        .and_then(|v| window(v, &f.path("window"), errors));
    Some(LimitConfig {
        name: f.optional("name", errors, text),
        code: f.optional("code", errors, text),
        message: f.optional("message", errors, text),
        fleet: f.or("fleet", false, errors, boolean),
        requests: requests?,
        window: window?,
    })
}

fn window(value: &Value, path: &str, errors: &mut Errors) -> Option<WindowSpec> {
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
