//! A rule: its `match`, its `key` sources, its `cost` and its `limits`.

use serde_json::Value;

use super::costs::{cost, limit_cost, responses};
use super::json::{
    boolean, invalid, list, map_of, tagged, text, texts, variant, whole, whole32, window, Fields,
};
use super::select::{matcher, metadata_path};
use crate::config::model::*;
use crate::config::Errors;

pub fn rule(value: &Value, path: &str, errors: &mut Errors) -> Option<RuleConfig> {
    const KNOWN: &[&str] = &[
        "name",
        "match",
        "exempt",
        "mode",
        "key",
        "on_missing_key",
        "on_ambiguous_key",
        "cost",
        "counted",
        "given_back",
        "also",
        "limits",
        "fleet",
        "grpc",
    ];
    let f = Fields::open(value, path, KNOWN, errors)?;
    let name = f
        .required("name", errors)
        .and_then(|v| text(v, &f.path("name"), errors));
    Some(RuleConfig {
        matcher: f.or("match", MatchConfig::default(), errors, matcher),
        exempt: f.or("exempt", false, errors, boolean),
        mode: f.optional("mode", errors, mode),
        key: f.or("key", KeyConfig::default(), errors, key),
        on_missing_key: f.or(
            "on_missing_key",
            OnMissingKey::Shared,
            errors,
            on_missing_key,
        ),
        on_ambiguous_key: f.or(
            "on_ambiguous_key",
            OnAmbiguousKey::Deny,
            errors,
            on_ambiguous,
        ),
        cost: f.optional("cost", errors, cost),
        counted: f.optional("counted", errors, responses),
        given_back: f.optional("given_back", errors, responses),
        also: f.or("also", Vec::new(), errors, texts),
        limits: f.or("limits", Vec::new(), errors, |v, p, e| list(v, p, e, limit)),
        fleet: f.or("fleet", false, errors, boolean),
        grpc: f.optional("grpc", errors, grpc_answer),
        name: name?,
    })
}

fn on_missing_key(value: &Value, path: &str, errors: &mut Errors) -> Option<OnMissingKey> {
    let options = [
        ("shared", OnMissingKey::Shared),
        ("allow", OnMissingKey::Allow),
        ("deny", OnMissingKey::Deny),
    ];
    variant(value, path, errors, &options)
}

fn on_ambiguous(value: &Value, path: &str, errors: &mut Errors) -> Option<OnAmbiguousKey> {
    let options = [
        ("deny", OnAmbiguousKey::Deny),
        ("first", OnAmbiguousKey::First),
        ("last", OnAmbiguousKey::Last),
    ];
    variant(value, path, errors, &options)
}

/// `key`: a list of sources, `{"first": [...]}`, `{"all": [...]}` or `"shared"`.
fn key(value: &Value, path: &str, errors: &mut Errors) -> Option<KeyConfig> {
    match value {
        Value::Array(_) => list(value, path, errors, key_source).map(KeyConfig::First),
        Value::String(s) if s == "shared" => Some(KeyConfig::Shared),
        Value::String(s) => {
            let message = format!("unknown variant `{s}`, expected `shared`");
            errors.push(crate::config::ConfigError::new(path, message));
            None
        }
        Value::Object(_) => {
            let (tag, inner) = tagged(value, path, errors, &["first", "all"])?;
            let sources = list(inner, &format!("{path}.{tag}"), errors, key_source)?;
            Some(match tag {
                "first" => KeyConfig::First(sources),
                _ => KeyConfig::All(sources),
            })
        }
        other => {
            let expected =
                "a list of key sources, {\"first\": [...]}, {\"all\": [...]} or \"shared\"";
            invalid(errors, path, other, expected);
            None
        }
    }
}

fn key_source(value: &Value, path: &str, errors: &mut Errors) -> Option<KeySource> {
    const SOURCES: &[&str] = &[
        "header",
        "query",
        "bearer",
        "client_ip",
        "metadata",
        "filter_state",
        "route_name",
        "method",
    ];
    let (tag, inner) = tagged(value, path, errors, SOURCES)?;
    let at = format!("{path}.{tag}");
    match tag {
        "header" => text(inner, &at, errors).map(KeySource::Header),
        "query" => text(inner, &at, errors).map(KeySource::Query),
        "bearer" => Fields::open(inner, &at, &[], errors).map(|_| KeySource::Bearer {}),
        "metadata" => metadata_path(inner, &at, errors).map(KeySource::Metadata),
        "filter_state" => text(inner, &at, errors).map(KeySource::FilterState),
        "route_name" => Fields::open(inner, &at, &[], errors).map(|_| KeySource::RouteName {}),
        "method" => Fields::open(inner, &at, &[], errors).map(|_| KeySource::Method {}),
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

fn limit(value: &Value, path: &str, errors: &mut Errors) -> Option<LimitConfig> {
    const KNOWN: &[&str] = &[
        "name",
        "requests",
        "requests_from",
        "window",
        "code",
        "unit",
        "message",
        "fleet",
        "shadow",
        "cost",
        "counted",
        "given_back",
    ];
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
        unit: f.optional("unit", errors, text),
        message: f.optional("message", errors, text),
        fleet: f.or("fleet", false, errors, boolean),
        shadow: f.or("shadow", false, errors, boolean),
        requests_from: f.optional("requests_from", errors, requests_from),
        cost: f.optional("cost", errors, limit_cost),
        counted: f.optional("counted", errors, responses),
        given_back: f.optional("given_back", errors, responses),
        requests: requests?,
        window: window?,
    })
}

fn requests_from(value: &Value, path: &str, errors: &mut Errors) -> Option<RequestsFrom> {
    let f = Fields::open(value, path, &["header", "metadata", "max"], errors)?;
    let max = f
        .required("max", errors)
        .and_then(|v| whole(v, &f.path("max"), errors));
    Some(RequestsFrom {
        header: f.optional("header", errors, text),
        metadata: f.optional("metadata", errors, metadata_path),
        max: max?,
    })
}

/// `enforce` or `shadow`.
/// `grpc`: `http` or a gRPC status code's name.
pub fn grpc_answer(value: &Value, path: &str, errors: &mut Errors) -> Option<GrpcAnswer> {
    variant(value, path, errors, &GrpcAnswer::NAMES)
}

pub fn mode(value: &Value, path: &str, errors: &mut Errors) -> Option<Mode> {
    let modes = [("enforce", Mode::Enforce), ("shadow", Mode::Shadow)];
    variant(value, path, errors, &modes)
}
