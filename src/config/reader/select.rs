//! A rule's `match`: path, methods, hosts, route names, and the selectors — headers, query
//! parameters, the client's address range, dynamic metadata and filter state.

use serde_json::Value;

use super::json::{boolean, list, tagged, text, texts, whole32, Fields};
use crate::config::model::*;
use crate::config::Errors;

pub fn matcher(value: &Value, path: &str, errors: &mut Errors) -> Option<MatchConfig> {
    const KNOWN: &[&str] = &[
        "path",
        "methods",
        "hosts",
        "route_names",
        "headers",
        "query_params",
        "source_cidr",
        "metadata",
        "filter_state",
    ];
    let f = Fields::open(value, path, KNOWN, errors)?;
    Some(MatchConfig {
        path: f.optional("path", errors, path_match),
        methods: f.or("methods", Vec::new(), errors, texts),
        hosts: f.or("hosts", Vec::new(), errors, texts),
        route_names: f.or("route_names", Vec::new(), errors, texts),
        headers: f.or("headers", Vec::new(), errors, |v, p, e| {
            list(v, p, e, named)
        }),
        query_params: f.or("query_params", Vec::new(), errors, |v, p, e| {
            list(v, p, e, named)
        }),
        source_cidr: f.optional("source_cidr", errors, source_cidr),
        metadata: f.or("metadata", Vec::new(), errors, |v, p, e| {
            list(v, p, e, metadata_match)
        }),
        filter_state: f.or("filter_state", Vec::new(), errors, |v, p, e| {
            list(v, p, e, filter_state_match)
        }),
    })
}

fn path_match(value: &Value, path: &str, errors: &mut Errors) -> Option<PathMatch> {
    let (tag, inner) = tagged(value, path, errors, &["exact", "prefix", "template"])?;
    let s = text(inner, &format!("{path}.{tag}"), errors)?;
    Some(match tag {
        "exact" => PathMatch::Exact(s),
        "prefix" => PathMatch::Prefix(s),
        _ => PathMatch::Template(s),
    })
}

/// The value tests every selector shares: `exact`, `prefix`, `regex`, `present`, `invert`.
const TESTS: [&str; 5] = ["exact", "prefix", "regex", "present", "invert"];

/// (exact, prefix, regex, present, invert) of an opened selector.
type Tests = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<bool>,
    bool,
);

fn tests(f: &Fields, errors: &mut Errors) -> Tests {
    (
        f.optional("exact", errors, text),
        f.optional("prefix", errors, text),
        f.optional("regex", errors, text),
        f.optional("present", errors, boolean),
        f.or("invert", false, errors, boolean),
    )
}

fn named(value: &Value, path: &str, errors: &mut Errors) -> Option<NamedMatch> {
    const KNOWN: &[&str] = &["name", "exact", "prefix", "regex", "present", "invert"];
    debug_assert_eq!(&KNOWN[1..], &TESTS);
    let f = Fields::open(value, path, KNOWN, errors)?;
    let name = f
        .required("name", errors)
        .and_then(|v| text(v, &f.path("name"), errors));
    let (exact, prefix, regex, present, invert) = tests(&f, errors);
    Some(NamedMatch {
        name: name?,
        exact,
        prefix,
        regex,
        present,
        invert,
    })
}

fn metadata_match(value: &Value, path: &str, errors: &mut Errors) -> Option<MetadataMatch> {
    const KNOWN: &[&str] = &[
        "namespace",
        "key",
        "path",
        "exact",
        "prefix",
        "regex",
        "present",
        "invert",
    ];
    let f = Fields::open(value, path, KNOWN, errors)?;
    let (namespace, key) = namespace_and_key(&f, errors);
    let (exact, prefix, regex, present, invert) = tests(&f, errors);
    Some(MetadataMatch {
        path: f.or("path", Vec::new(), errors, texts),
        namespace: namespace?,
        key: key?,
        exact,
        prefix,
        regex,
        present,
        invert,
    })
}

fn filter_state_match(value: &Value, path: &str, errors: &mut Errors) -> Option<FilterStateMatch> {
    const KNOWN: &[&str] = &["key", "exact", "prefix", "regex", "present", "invert"];
    let f = Fields::open(value, path, KNOWN, errors)?;
    let key = f
        .required("key", errors)
        .and_then(|v| text(v, &f.path("key"), errors));
    let (exact, prefix, regex, present, invert) = tests(&f, errors);
    Some(FilterStateMatch {
        key: key?,
        exact,
        prefix,
        regex,
        present,
        invert,
    })
}

fn source_cidr(value: &Value, path: &str, errors: &mut Errors) -> Option<SourceCidrMatch> {
    let f = Fields::open(value, path, &["cidrs", "trusted_hops", "invert"], errors)?;
    let cidrs = f
        .required("cidrs", errors)
        .and_then(|v| texts(v, &f.path("cidrs"), errors));
    Some(SourceCidrMatch {
        trusted_hops: f.or("trusted_hops", 0, errors, whole32),
        invert: f.or("invert", false, errors, boolean),
        cidrs: cidrs?,
    })
}

fn namespace_and_key(f: &Fields, errors: &mut Errors) -> (Option<String>, Option<String>) {
    let namespace = f
        .required("namespace", errors)
        .and_then(|v| text(v, &f.path("namespace"), errors));
    let key = f
        .required("key", errors)
        .and_then(|v| text(v, &f.path("key"), errors));
    (namespace, key)
}

/// Where a value lies in dynamic metadata: `namespace`, `key` and an optional `path`.
pub fn metadata_path(value: &Value, path: &str, errors: &mut Errors) -> Option<MetadataPath> {
    let f = Fields::open(value, path, &["namespace", "key", "path"], errors)?;
    let (namespace, key) = namespace_and_key(&f, errors);
    Some(MetadataPath {
        path: f.or("path", Vec::new(), errors, texts),
        namespace: namespace?,
        key: key?,
    })
}
