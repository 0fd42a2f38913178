//! The top-level sections of the configuration: the filter as a whole, `fleet`, `store`,
//! `plans` and `response`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::json::{boolean, list, map_of, text, texts, variant, whole, whole32, window, Fields};
use super::rules::{grpc_answer, mode, rule};
use super::select::metadata_path;
use crate::config::model::*;
use crate::config::{Errors, WindowSpec};

pub fn filter_config(value: &Value, path: &str, errors: &mut Errors) -> Option<FilterConfig> {
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
        mode: f.or("mode", Mode::Enforce, errors, mode),
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
        "batch_interval",
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
        ("batched", FleetCounting::Batched),
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
        batch_interval: f.or(
            "batch_interval",
            WindowSpec { millis: 1_000 },
            errors,
            window,
        ),
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
    const KNOWN: &[&str] = &["names", "default", "header", "metadata", "keys"];
    let f = Fields::open(value, path, KNOWN, errors)?;
    let names = f
        .required("names", errors)
        .and_then(|v| texts(v, &f.path("names"), errors));
    let default = f
        .required("default", errors)
        .and_then(|v| text(v, &f.path("default"), errors));
    Some(PlansConfig {
        header: f.optional("header", errors, text),
        metadata: f.optional("metadata", errors, metadata_path),
        keys: f.or("keys", BTreeMap::new(), errors, |v, p, e| {
            map_of(v, p, e, text)
        }),
        names: names?,
        default: default?,
    })
}

fn response(value: &Value, path: &str, errors: &mut Errors) -> Option<ResponseConfig> {
    const KNOWN: &[&str] = &[
        "status",
        "headers",
        "preset",
        "body",
        "content_type",
        "status_header",
        "status_filter_state",
        "grpc",
    ];
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
        status_header: f.optional("status_header", errors, text),
        status_filter_state: f.or("status_filter_state", false, errors, boolean),
        grpc: f.optional("grpc", errors, grpc_answer),
    })
}

fn headers(value: &Value, path: &str, errors: &mut Errors) -> Option<HeadersConfig> {
    const KNOWN: &[&str] = &[
        "style",
        "reset",
        "names",
        "hide",
        "retry_after_ms",
        "max_retry_wait",
    ];
    let f = Fields::open(value, path, KNOWN, errors)?;
    // Absent: the default bound; null: never sent.
    let max_retry_wait = match value.get("max_retry_wait") {
        None => default_max_retry_wait(),
        Some(Value::Null) => None,
        Some(v) => window(v, &f.path("max_retry_wait"), errors),
    };
    Some(HeadersConfig {
        style: f.or("style", HeaderStyle::XRateLimit, errors, |v, p, e| {
            variant(
                v,
                p,
                e,
                &[
                    ("x_rate_limit", HeaderStyle::XRateLimit),
                    ("envoy_draft03", HeaderStyle::EnvoyDraft03),
                    ("ietf_draft06", HeaderStyle::IetfDraft06),
                    ("ietf_draft11", HeaderStyle::IetfDraft11),
                    ("none", HeaderStyle::None),
                    // Former names, still accepted (`check` says which is current).
                    ("draft03", HeaderStyle::IetfDraft06),
                    ("draft_ietf", HeaderStyle::IetfDraft11),
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
        retry_after_ms: f.or("retry_after_ms", false, errors, boolean),
        max_retry_wait,
    })
}
