//! envoyproxy/ratelimit's descriptor configuration as this filter's rules.
//!
//! A request sends descriptors (lists of key/value entries, one per `rate_limits` entry of its
//! Envoy route); the service walks each down the tree, at every level trying the key with the
//! request's value, then a wildcard value (`value*`), then the key alone (any value, one counter
//! per value), and applies the limit where the descriptor ends. Every descriptor that reaches a
//! limit applies. Here each limit of the tree is a rule whose match says which requests reach it
//! (a key with a value: that value; the key alone: present, and none of its valued siblings), its
//! key the values of its key-only entries; the import assumes a request sends every descriptor of
//! the tree whose entries it has, which is what the route's actions decide.

use serde_json::{json, Map, Value};

use super::plan::{lay_out, Cond, Imported, Subject, Test};
use super::{name_from, window_of, Findings, Object, Options};

/// Where a descriptor key's value comes from in a request.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Header(String),
    Query(String),
    ClientIp,
    Method,
    Route,
    /// `generic_key`: a constant the route's action sends.
    Constant,
}

impl Source {
    fn parse(text: &str) -> Option<Self> {
        Some(match text.split_once(':') {
            Some(("header", name)) => Source::Header(name.to_ascii_lowercase()),
            Some(("query", name)) => Source::Query(name.to_string()),
            None if text == "client_ip" => Source::ClientIp,
            None if text == "method" => Source::Method,
            None if text == "route" => Source::Route,
            _ => return None,
        })
    }

    fn subject(&self) -> Option<Subject> {
        Some(match self {
            Source::Header(n) => Subject::Header(n.clone()),
            Source::Query(n) => Subject::Query(n.clone()),
            Source::ClientIp => Subject::ClientIp,
            Source::Method => Subject::Method,
            Source::Route => Subject::Route,
            Source::Constant => return None,
        })
    }

    fn key_part(&self) -> Option<Value> {
        Some(match self {
            Source::Header(n) => json!({"header": n}),
            Source::Query(n) => json!({"query": n}),
            Source::ClientIp => json!({"client_ip": {}}),
            Source::Method => json!({"method": {}}),
            Source::Route => json!({"route_name": {}}),
            Source::Constant => return None,
        })
    }

    /// A condition that the value is `value` (`*` at the end: starts with it).
    fn is(&self, value: &str) -> Option<Cond> {
        let subject = self.subject()?;
        let test = match value.strip_suffix('*') {
            Some(prefix) => Test::Prefix(prefix.to_string()),
            None if *self == Source::ClientIp => Test::Cidrs(vec![value.to_string()]),
            None => Test::Exact(vec![value.to_string()]),
        };
        Some(Cond::new(subject, test))
    }
}

/// What walking down the tree has gathered.
#[derive(Clone, Default)]
struct Path {
    conds: Vec<Cond>,
    key: Vec<Value>,
    names: Vec<String>,
}

struct Cx<'a> {
    domain: &'a str,
    sources: Vec<(String, Source)>,
    rules: Vec<Imported>,
    findings: &'a mut Findings,
    fleet: bool,
}

pub fn import(docs: &[Value], options: &Options, findings: &mut Findings) -> Result<Value, String> {
    let [doc] = docs else {
        return Err(format!("expected one YAML document, found {}", docs.len()));
    };
    let Some(top) = Object::open(doc, "$", &["domain", "descriptors"], findings) else {
        return Err("the configuration is not a map".into());
    };
    let domain = top.text("domain").unwrap_or("ratelimit");
    let mut sources = Vec::new();
    for (key, text) in &options.keys {
        let source = Source::parse(text).ok_or(format!(
            "--key {key}={text}: the source is header:NAME, query:NAME, client_ip, method or route"
        ))?;
        sources.push((key.clone(), source));
    }
    let mut cx = Cx {
        domain,
        sources,
        rules: Vec::new(),
        findings,
        fleet: options.fleet_cluster.is_some(),
    };
    walk(
        top.list("descriptors"),
        &top.path("descriptors"),
        &Path::default(),
        &mut cx,
    );
    let Cx {
        rules, findings, ..
    } = cx;
    findings.note("$.domain", format!(
        "domain {domain:?}: this configuration is one filter's; the service's domain is the fleet's `domain` when fleet-wide"
    ));
    let mut config = Map::new();
    if let Some(cluster) = &options.fleet_cluster {
        config.insert(
            "fleet".into(),
            json!({"cluster": cluster, "domain": domain, "counting": "fixed"}),
        );
    } else {
        findings.note("$", "every limit counts in each Envoy (the local tier); --fleet-cluster NAME counts them across the fleet in a rate limit service");
    }
    config.insert("rules".into(), Value::Array(lay_out(rules, findings)));
    Ok(Value::Object(config))
}

/// The source of descriptor key `key`: given with --key, else Envoy's own name for an action
/// (`remote_address`, `generic_key`), else a request header of that name (noted).
fn source_of(key: &str, at: &str, cx: &mut Cx) -> Source {
    if let Some((_, source)) = cx.sources.iter().find(|(k, _)| k == key) {
        return source.clone();
    }
    let source = match key {
        "remote_address" => Source::ClientIp,
        "generic_key" => Source::Constant,
        _ => Source::Header(key.to_ascii_lowercase()),
    };
    let said = match &source {
        Source::ClientIp => "the client's address (Envoy's remote_address action)".to_string(),
        Source::Constant => "a constant of the routes whose actions send it: every request here (restrict the rule with match.route_names)".to_string(),
        _ => format!("assumed to be the request header {key:?}; say where it comes from with --key {key}=header:NAME (or query:NAME, client_ip, method, route)"),
    };
    cx.sources.push((key.to_string(), source.clone()));
    cx.findings
        .note(at, format!("descriptor key {key:?}: {said}"));
    source
}

/// One level of the tree: each descriptor, its limit if any, then the level below.
fn walk(level: &[Value], at: &str, above: &Path, cx: &mut Cx) {
    for (i, node) in level.iter().enumerate() {
        let node_at = format!("{at}[{i}]");
        let known = [
            "key",
            "value",
            "rate_limit",
            "descriptors",
            "shadow_mode",
            "detailed_metric",
        ];
        let Some(n) = Object::open(node, &node_at, &known, cx.findings) else {
            continue;
        };
        let Some(key) = n.text("key") else {
            cx.findings.lost(&node_at, "a descriptor without a key");
            continue;
        };
        let source = source_of(key, &n.path("key"), cx);
        let mut path = above.clone();
        match n.text("value") {
            Some(value) => {
                path.conds.extend(source.is(value));
                path.names
                    .push(format!("{key}_{}", value.trim_end_matches('*')));
            }
            None => {
                // Any value, one counter each; not one of the valued siblings' values.
                path.key.extend(source.key_part());
                if let Some(subject) = source.subject().filter(|_| {
                    !matches!(source, Source::ClientIp | Source::Method | Source::Route)
                }) {
                    path.conds.push(Cond::new(subject, Test::Present));
                }
                for sibling in level.iter().filter(|s| s["key"] == key) {
                    let value = sibling["value"].as_str();
                    path.conds
                        .extend(value.and_then(|v| source.is(v)).map(|c| c.inverted(true)));
                }
                path.names.push(key.to_string());
            }
        }
        if n.get("detailed_metric").is_some() {
            cx.findings.note(
                &n.path("detailed_metric"),
                "metrics per value: the filter's stats are per rule and limit",
            );
        }
        if let Some(limit) = n.get("rate_limit") {
            let shadow = n.get("shadow_mode").and_then(Value::as_bool) == Some(true);
            add_rule(limit, (&n.path("rate_limit"), shadow), &path, cx);
        }
        walk(n.list("descriptors"), &n.path("descriptors"), &path, cx);
    }
}

/// A `rate_limit` block as this filter's limit (`None`, noted or reported, when there is none).
fn limit_of(limit: &Value, at: &str, findings: &mut Findings) -> Option<Value> {
    let known = ["unit", "requests_per_unit", "unlimited", "name", "replaces"];
    let l = Object::open(limit, at, &known, findings)?;
    if l.get("replaces").is_some() {
        let why = "a limit replacing another: not expressible here (both apply)";
        findings.lost(&l.path("replaces"), why);
    }
    if l.get("unlimited").and_then(Value::as_bool) == Some(true) {
        let what = "unlimited: no rule (its requests are not limited by this descriptor)";
        findings.note(at, what);
        return None;
    }
    let unit = l.text("unit").unwrap_or("");
    let Some((window, approx)) = window_of(unit) else {
        let why = format!("unit {unit:?} is not a unit: the limit is left out");
        findings.lost(&l.path("unit"), why);
        return None;
    };
    if let Some(why) = approx {
        findings.note(&l.path("unit"), why);
    }
    let requests = l.get("requests_per_unit").and_then(Value::as_u64);
    if requests.unwrap_or(0) == 0 {
        findings.lost(&l.path("requests_per_unit"), "0 (refuse every request): a limit of 0 here means no limit, so these requests pass; block them with Envoy's RBAC filter");
        return None;
    }
    let mut entry = json!({"requests": requests, "window": window});
    if let Some(name) = l.text("name") {
        // Letters, digits and _ only: huggingface_hub skips other names in `RateLimit`.
        entry["name"] = json!(name_from(name).replace(['-', '.'], "_"));
    }
    Some(entry)
}

/// The rule for one limit of the tree.
fn add_rule(limit: &Value, (at, shadow): (&str, bool), path: &Path, cx: &mut Cx) {
    let Some(entry) = limit_of(limit, at, cx.findings) else {
        return;
    };
    let mut body = Map::new();
    body.insert(
        "key".into(),
        match path.key.is_empty() {
            true => json!("shared"),
            false => json!({"all": path.key}),
        },
    );
    body.insert("on_missing_key".into(), json!("allow"));
    if shadow {
        body.insert("mode".into(), json!("shadow"));
    }
    body.insert("limits".into(), json!([entry]));
    if cx.fleet {
        body.insert("fleet".into(), json!(true));
    }
    let base = name_from(&format!("{}.{}", cx.domain, path.names.join(".")));
    let mut name = base.clone();
    for n in 2.. {
        if !cx.rules.iter().any(|r| r.name == name) {
            break;
        }
        name = name_from(&format!("{base}.{n}"));
    }
    cx.rules.push(Imported {
        name,
        origin: at.trim_end_matches(".rate_limit").to_string(),
        conds: path.conds.clone(),
        body,
        group: 0,
        merges: false,
        exempt: false,
    });
}
