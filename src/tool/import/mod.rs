//! `ratelimit-config import`: another system's rate-limit configuration as this filter's, with
//! everything that is not carried over reported with its path and why.
//!
//! - `envoy-gateway`: Envoy Gateway `BackendTrafficPolicy` documents (`rateLimit.local` and
//!   `.global` rules), with the `HTTPRoute`s of the same file for the routes they target.
//! - `envoy-ratelimit`: an envoyproxy/ratelimit descriptor configuration.

mod gateway;
mod plan;
mod ratelimit;

use serde_json::{Map, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// Which system a file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    EnvoyGateway,
    EnvoyRatelimit,
}

impl Source {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "envoy-gateway" => Some(Source::EnvoyGateway),
            "envoy-ratelimit" | "envoyproxy-ratelimit" => Some(Source::EnvoyRatelimit),
            _ => None,
        }
    }
}

/// What the import may be told.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Envoy Gateway's global rules, and envoyproxy/ratelimit's descriptors, become fleet-wide
    /// limits counted by the rate limit service behind this Envoy cluster (global rules default
    /// to the cluster `ratelimit`).
    pub fleet_cluster: Option<String>,
    /// envoyproxy/ratelimit: where each descriptor key comes from (`key` → `header:NAME`,
    /// `query:NAME`, `client_ip`, `method`, `route`), as the route's `rate_limits` actions say.
    pub keys: Vec<(String, String)>,
}

/// What an import found: what was not carried over (`lost`) and what was carried over only
/// approximately or by assumption (`notes`), each with the source path.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    pub lost: Vec<(String, String)>,
    pub notes: Vec<(String, String)>,
}

impl Findings {
    pub fn lost(&mut self, at: &str, why: impl Into<String>) {
        self.lost.push((at.to_string(), why.into()));
    }
    pub fn note(&mut self, at: &str, what: impl Into<String>) {
        self.notes.push((at.to_string(), what.into()));
    }
}

/// The configuration imported from `text`, and the findings.
pub fn import(source: Source, text: &str, options: &Options) -> Result<(Value, Findings), String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let docs: Vec<Value> = docs.iter().map(to_json).filter(|d| !d.is_null()).collect();
    let mut findings = Findings::default();
    let config = match source {
        Source::EnvoyGateway => gateway::import(&docs, options, &mut findings)?,
        Source::EnvoyRatelimit => ratelimit::import(&docs, options, &mut findings)?,
    };
    Ok((config, findings))
}

/// A YAML document as JSON (keys as text).
fn to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Real(r) => r.parse::<f64>().map_or(Value::Null, Value::from),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::from(s.as_str()),
        Yaml::Boolean(b) => Value::from(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    Yaml::Real(r) => r.clone(),
                    _ => continue,
                };
                out.insert(key, to_json(v));
            }
            Value::Object(out)
        }
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => Value::Null,
    }
}

/// An object's fields as the importer reads them: each known one taken, every other reported.
pub(crate) struct Object<'a> {
    pub map: &'a Map<String, Value>,
    pub at: String,
}

impl<'a> Object<'a> {
    /// `value` as an object whose fields other than `known` are reported as not carried over.
    pub fn open(
        value: &'a Value,
        at: &str,
        known: &[&str],
        findings: &mut Findings,
    ) -> Option<Self> {
        let Some(map) = value.as_object() else {
            findings.lost(at, "not a map");
            return None;
        };
        for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
            findings.lost(
                &format!("{at}.{key}"),
                "a field the import does not know: not carried over",
            );
        }
        Some(Object {
            map,
            at: at.to_string(),
        })
    }

    pub fn path(&self, key: &str) -> String {
        format!("{}.{key}", self.at)
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn text(&self, key: &str) -> Option<&'a str> {
        self.get(key).and_then(Value::as_str)
    }

    pub fn list(&self, key: &str) -> &'a [Value] {
        self.get(key)
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }
}

/// A rule or limit name this filter accepts (1–64 of `A-Z a-z 0-9 _ - .`), from any text.
pub(crate) fn name_from(text: &str) -> String {
    let mut name: String = text
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() || "_-.".contains(c) {
            true => c,
            false => '_',
        })
        .collect();
    name.truncate(64);
    if name.is_empty() {
        name.push('r');
    }
    name
}

/// A unit of the source as this filter's window (`None`: not a unit), and a note when the
/// window is an approximation (a calendar month or year).
pub(crate) fn window_of(unit: &str) -> Option<(&'static str, Option<&'static str>)> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "second" => ("1s", None),
        "minute" => ("1m", None),
        "hour" => ("1h", None),
        "day" => ("1d", None),
        "week" => ("7d", None),
        "month" => ("30d", Some("a month is 30 days here")),
        "year" => ("365d", Some("a year is 365 days here")),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
