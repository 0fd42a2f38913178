//! A rule: its `match`, its `key` sources, its `cost` and its `limits`.

use serde_json::Value;

use super::json::{
    boolean, invalid, list, map_of, tagged, text, texts, variant, whole, whole32, window, Fields,
};
use crate::config::model::*;
use crate::config::Errors;

pub fn rule(value: &Value, path: &str, errors: &mut Errors) -> Option<RuleConfig> {
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
