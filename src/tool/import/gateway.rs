//! Envoy Gateway's `BackendTrafficPolicy` (`rateLimit.local` and `rateLimit.global` rules) as
//! this filter's rules. Every matching rule applies in Envoy Gateway; the rules are laid out for
//! first-match by `plan`. A policy targeting an `HTTPRoute` of the same file takes the route's
//! hosts and matches as conditions; a route's policy replaces the Gateway's for that route unless
//! it merges (`mergeType`).

use serde_json::{json, Map, Value};

use super::plan::{lay_out, Cond, Imported, Subject, Test};
use super::{name_from, window_of, Findings, Object, Options};

/// One target's conditions: `None` for a Gateway (every route), and whether it is a route.
struct Target {
    name: String,
    conds: Vec<Vec<Cond>>,
    route: bool,
    /// A route of the file (its requests known).
    found: bool,
}

pub fn import(docs: &[Value], options: &Options, findings: &mut Findings) -> Result<Value, String> {
    let at = |i: usize| match docs.len() {
        1 => "$".to_string(),
        _ => format!("document {}: $", i + 1),
    };
    let (routes, mut policies) = documents(docs, &at, findings);
    if policies.is_empty() {
        return Err("no BackendTrafficPolicy in the file".into());
    }
    // A route's policy comes before the Gateway's: it takes its route's requests first.
    let targets_route = |p: &Value| {
        targets(p, &at(0), &routes, &mut Findings::default())
            .iter()
            .any(|t| t.route)
    };
    policies.sort_by_key(|(_, p)| !targets_route(p));
    let mut rules = Vec::new();
    let mut fleet = false;
    for (group, (i, policy)) in policies.iter().enumerate() {
        fleet |= import_policy(
            policy,
            &at(*i),
            (&routes, 2 * group),
            (&mut rules, findings),
        );
    }
    let mut config = Map::new();
    if fleet {
        config.insert("fleet".into(), fleet_section(options, findings));
    }
    config.insert("rules".into(), Value::Array(lay_out(rules, findings)));
    // Envoy Gateway sends Envoy's own X-RateLimit-* headers: clients keep reading them.
    let headers = json!({"headers": {"style": "envoy_draft03"}});
    config.insert("response".into(), headers);
    Ok(Value::Object(config))
}

/// The file's HTTPRoutes and BackendTrafficPolicies (others are noted and left aside).
type Docs<'a> = Vec<(usize, &'a Value)>;
fn documents<'a>(
    docs: &'a [Value],
    at: &dyn Fn(usize) -> String,
    findings: &mut Findings,
) -> (Docs<'a>, Docs<'a>) {
    let (mut routes, mut policies) = (Vec::new(), Vec::new());
    for (i, doc) in docs.iter().enumerate() {
        match doc["kind"].as_str() {
            Some("BackendTrafficPolicy") => policies.push((i, doc)),
            Some("HTTPRoute") => routes.push((i, doc)),
            kind => findings.note(
                &at(i),
                format!(
                    "kind {}: not a rate limit policy, left aside",
                    kind.unwrap_or("(none)")
                ),
            ),
        }
    }
    (routes, policies)
}

/// The top-level `fleet` for global rules.
fn fleet_section(options: &Options, findings: &mut Findings) -> Value {
    let cluster = options
        .fleet_cluster
        .clone()
        .unwrap_or_else(|| "ratelimit".into());
    findings.note("$", format!(
        "global rules are fleet-wide: they count in the rate limit service behind the Envoy cluster {cluster:?} \
         (fixed windows, as envoyproxy/ratelimit's); print its configuration with \
         `ratelimit-config engine-config OUT.json --engine envoy-ratelimit`"
    ));
    json!({"cluster": cluster, "counting": "fixed"})
}

/// A policy's `spec.rateLimit`, and whether the policy merges with the Gateway's.
fn rate_limit_of<'a>(
    policy: &'a Value,
    at: &str,
    findings: &mut Findings,
) -> Option<(Object<'a>, bool)> {
    let known = ["apiVersion", "kind", "metadata", "spec"];
    let doc = Object::open(policy, at, &known, findings)?;
    let Some(spec) = doc.get("spec") else {
        findings.lost(at, "no spec");
        return None;
    };
    let known = [
        "targetRef",
        "targetRefs",
        "targetSelectors",
        "rateLimit",
        "mergeType",
    ];
    let spec = Object::open(spec, &doc.path("spec"), &known, findings)?;
    if spec.get("targetSelectors").is_some() {
        findings.lost(
            &spec.path("targetSelectors"),
            "targets chosen by label: name the routes in targetRefs",
        );
    }
    let Some(rate_limit) = spec.get("rateLimit") else {
        findings.lost(&spec.path("rateLimit"), "no rateLimit in this policy");
        return None;
    };
    let known = ["type", "global", "local"];
    let rl = Object::open(rate_limit, &spec.path("rateLimit"), &known, findings)?;
    Some((rl, spec.get("mergeType").is_some()))
}

/// The rest of a route's requests, after its own policy's rules: untouched by the Gateway's.
fn route_rest(name: &str, at: &str, target: &Target, group: usize, rules: &mut Vec<Imported>) {
    for (k, conds) in target.conds.iter().enumerate() {
        rules.push(Imported {
            name: name_from(&format!("{name}.{}.{k}.rest", target.name)),
            origin: format!("{at} (the rest of {}'s requests)", target.name),
            conds: conds.clone(),
            body: Map::new(),
            group: group + 1,
            merges: false,
            exempt: true,
        });
    }
}

/// A policy's rules, each once per target; whether any is fleet-wide.
fn import_policy(
    policy: &Value,
    at: &str,
    (routes, group): (&[(usize, &Value)], usize),
    (rules, findings): (&mut Vec<Imported>, &mut Findings),
) -> bool {
    let Some((rl, merges)) = rate_limit_of(policy, at, findings) else {
        return false;
    };
    let name = policy["metadata"]["name"].as_str().unwrap_or("policy");
    let targets = targets(policy, at, routes, findings);
    let mut fleet = false;
    for tier in ["local", "global"] {
        let tier_at = rl.path(tier);
        let Some(tier_value) = rl.get(tier) else {
            continue;
        };
        let Some(t) = Object::open(tier_value, &tier_at, &["rules"], findings) else {
            continue;
        };
        for (r, rule) in t.list("rules").iter().enumerate() {
            let rule_at = format!("{}[{r}]", t.path("rules"));
            let base = format!("{name}.{tier}.{r}");
            let cx = RuleCx {
                at: &rule_at,
                base: &base,
                global: tier == "global",
            };
            fleet |= import_rule(rule, &cx, &targets, (group, merges), (rules, findings));
        }
    }
    // A route's own policy replaces the Gateway's for its requests.
    for target in targets.iter().filter(|t| t.route && t.found && !merges) {
        route_rest(name, at, target, group, rules);
    }
    fleet
}

/// The policy's targets: for an HTTPRoute of the file, its conditions (one set per match).
fn targets(
    policy: &Value,
    at: &str,
    routes: &[(usize, &Value)],
    findings: &mut Findings,
) -> Vec<Target> {
    let spec = &policy["spec"];
    let refs: Vec<&Value> = match (&spec["targetRefs"], &spec["targetRef"]) {
        (Value::Array(refs), _) => refs.iter().collect(),
        (_, single @ Value::Object(_)) => vec![single],
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for (k, target) in refs.iter().enumerate() {
        let kind = target["kind"].as_str().unwrap_or("");
        let name = target["name"].as_str().unwrap_or("").to_string();
        let target_at = format!("{at}.spec.targetRefs[{k}]");
        if kind == "Gateway" {
            out.push(Target {
                name,
                conds: vec![Vec::new()],
                route: false,
                found: true,
            });
            continue;
        }
        match routes
            .iter()
            .find(|(_, r)| r["metadata"]["name"].as_str() == Some(&name))
        {
            Some((_, route)) => out.push(Target {
                conds: route_conds(route, &target_at, findings),
                name,
                route: true,
                found: true,
            }),
            None => {
                findings.lost(&target_at, format!(
                    "{kind} {name:?} is not in this file: its rules apply here to every request this \
                     filter sees; add the route's hosts or path to their match (or match.route_names)"
                ));
                out.push(Target {
                    name,
                    conds: vec![Vec::new()],
                    route: true,
                    found: false,
                });
            }
        }
    }
    if out.is_empty() {
        out.push(Target {
            name: "all".into(),
            conds: vec![Vec::new()],
            route: false,
            found: true,
        });
    }
    out
}

/// An HTTPRoute's requests: its hosts and, per match, its path, method, headers and query.
fn route_conds(route: &Value, at: &str, findings: &mut Findings) -> Vec<Vec<Cond>> {
    let hosts: Vec<String> = route["spec"]["hostnames"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter_map(|h| h.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut base = Vec::new();
    if !hosts.is_empty() {
        base.push(Cond::new(Subject::Host, Test::Exact(hosts)));
    }
    let mut out = Vec::new();
    let rules = route["spec"]["rules"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    for (r, rule) in rules.iter().enumerate() {
        let matches = rule["matches"].as_array().map_or(&[][..], Vec::as_slice);
        for (m, matched) in matches.iter().enumerate() {
            let match_at = format!("{at} (HTTPRoute rules[{r}].matches[{m}])");
            let mut conds = base.clone();
            if let Some(path) = matched.get("path") {
                conds.extend(path_cond(path, &match_at, findings));
            }
            if let Some(method) = matched["method"].as_str() {
                conds.push(Cond::exact(Subject::Method, method));
            }
            for h in matched["headers"].as_array().into_iter().flatten() {
                let name = h["name"].as_str().unwrap_or("").to_ascii_lowercase();
                conds.extend(value_cond(Subject::Header(name), h, &match_at, findings));
            }
            for q in matched["queryParams"].as_array().into_iter().flatten() {
                let name = q["name"].as_str().unwrap_or("").to_string();
                conds.extend(value_cond(Subject::Query(name), q, &match_at, findings));
            }
            out.push(conds);
        }
    }
    if out.is_empty() {
        out.push(base);
    }
    out
}

fn path_cond(path: &Value, at: &str, findings: &mut Findings) -> Option<Cond> {
    let value = path["value"].as_str().unwrap_or("/");
    let cond = match path["type"].as_str().unwrap_or("PathPrefix") {
        "PathPrefix" if value.trim_end_matches('/').is_empty() => return None,
        "PathPrefix" => Cond::new(Subject::Path, Test::Prefix(value.into())),
        "Exact" => Cond::exact(Subject::Path, value),
        other => {
            findings.lost(at, format!("a {other} path {value:?}: this filter matches paths exactly, by segment prefix or by template"));
            return None;
        }
    };
    if path["invert"].as_bool() == Some(true) {
        findings.lost(
            at,
            format!("an inverted path {value:?}: not expressible here"),
        );
        return None;
    }
    Some(cond)
}

/// An Exact or RegularExpression test of a header or query parameter.
fn value_cond(subject: Subject, spec: &Value, at: &str, findings: &mut Findings) -> Option<Cond> {
    let value = spec["value"].as_str().unwrap_or("").to_string();
    let test = match spec["type"].as_str().unwrap_or("Exact") {
        "Exact" => Test::Exact(vec![value]),
        "RegularExpression" => Test::Regex(value),
        other => {
            findings.lost(
                at,
                format!("a {other} test of {subject:?}: not expressible here"),
            );
            return None;
        }
    };
    Some(Cond::new(subject, test).inverted(spec["invert"].as_bool() == Some(true)))
}

/// What a rule's import needs to know of where it stands.
struct RuleCx<'a> {
    at: &'a str,
    base: &'a str,
    global: bool,
}

/// One rule, once per target's match; whether it is fleet-wide.
fn import_rule(
    rule: &Value,
    cx: &RuleCx,
    targets: &[Target],
    (group, merges): (usize, bool),
    (rules, findings): (&mut Vec<Imported>, &mut Findings),
) -> bool {
    let known = ["clientSelectors", "limit", "cost", "shared", "shadowMode"];
    let Some(r) = Object::open(rule, cx.at, &known, findings) else {
        return false;
    };
    let mut selected = Selected::default();
    for (k, selector) in r.list("clientSelectors").iter().enumerate() {
        selected.add(
            selector,
            &format!("{}[{k}]", r.path("clientSelectors")),
            findings,
        );
    }
    let Some(limit) = r
        .get("limit")
        .and_then(|l| limit(l, &r.path("limit"), findings))
    else {
        return false;
    };
    let shared = r.get("shared").and_then(Value::as_bool) == Some(true);
    if !shared && targets.iter().any(|t| !t.route) {
        findings.note(cx.at, "Envoy Gateway counts each route of a Gateway alone; here the rule counts every route it matches together (add {\"route_name\": {}} to the key for one counter per Envoy route)");
    }
    let (body, fleet) = rule_body(&r, cx, (&selected, limit), findings);
    for target in targets {
        for (m, conds) in target.conds.iter().enumerate() {
            let suffix = match (targets.len(), target.conds.len()) {
                (1, 1) => String::new(),
                _ => format!(".{}.{m}", target.name),
            };
            let mut all = conds.clone();
            all.extend(selected.conds.iter().cloned());
            rules.push(Imported {
                name: name_from(&format!("{}{suffix}", cx.base)),
                origin: cx.at.to_string(),
                conds: all,
                body: body.clone(),
                group,
                merges,
                exempt: false,
            });
        }
    }
    fleet
}

/// Every field of an imported rule but its name, match and `also`; whether it is fleet-wide.
fn rule_body(
    r: &Object,
    cx: &RuleCx,
    (selected, mut limit): (&Selected, Value),
    findings: &mut Findings,
) -> (Map<String, Value>, bool) {
    let costs = cost(r.get("cost"), &r.path("cost"), &limit, findings);
    let fleet = cx.global && costs.settles_response.is_none();
    if cx.global && !fleet {
        findings.note(cx.at, "a response cost settles in each Envoy: this rule counts locally, not fleet-wide (a fleet-wide limit cannot settle)");
    }
    let mut body = Map::new();
    body.insert("key".into(), selected.key());
    body.insert("on_missing_key".into(), json!("allow"));
    if let Some(cost) = costs.rule_cost {
        body.insert("cost".into(), cost);
    }
    if r.get("shadowMode").and_then(Value::as_bool) == Some(true) {
        body.insert("mode".into(), json!("shadow"));
    }
    if let Some(response) = costs.settles_response {
        limit["cost"] = response;
    }
    body.insert("limits".into(), json!([limit]));
    if fleet {
        body.insert("fleet".into(), json!(true));
    }
    (body, fleet)
}

/// What a rule's `clientSelectors` (all must hold) select, and the key parts of its `Distinct`
/// ones.
#[derive(Default)]
struct Selected {
    conds: Vec<Cond>,
    key: Vec<Value>,
}

impl Selected {
    fn add(&mut self, selector: &Value, at: &str, findings: &mut Findings) {
        let known = ["headers", "methods", "path", "sourceCIDR", "queryParams"];
        let Some(s) = Object::open(selector, at, &known, findings) else {
            return;
        };
        for (k, h) in s.list("headers").iter().enumerate() {
            let name = h["name"].as_str().unwrap_or("").to_ascii_lowercase();
            self.distinct_or_value(
                Subject::Header(name),
                h,
                &format!("{}[{k}]", s.path("headers")),
                findings,
            );
        }
        for (k, q) in s.list("queryParams").iter().enumerate() {
            let name = q["name"].as_str().unwrap_or("").to_string();
            self.distinct_or_value(
                Subject::Query(name),
                q,
                &format!("{}[{k}]", s.path("queryParams")),
                findings,
            );
        }
        let methods: Vec<String> = s
            .list("methods")
            .iter()
            .filter_map(|m| m["value"].as_str().map(String::from))
            .collect();
        if s.list("methods")
            .iter()
            .any(|m| m["invert"].as_bool() == Some(true))
        {
            findings.lost(
                &s.path("methods"),
                "an inverted method: not expressible here (list the methods to limit)",
            );
        } else if !methods.is_empty() {
            self.conds
                .push(Cond::new(Subject::Method, Test::Exact(methods)));
        }
        if let Some(path) = s.get("path") {
            self.conds
                .extend(path_cond(path, &s.path("path"), findings));
        }
        if let Some(cidr) = s.get("sourceCIDR") {
            self.source(cidr, &s.path("sourceCIDR"), findings);
        }
    }

    fn distinct_or_value(
        &mut self,
        subject: Subject,
        spec: &Value,
        at: &str,
        findings: &mut Findings,
    ) {
        if spec["type"] != "Distinct" {
            self.conds.extend(value_cond(subject, spec, at, findings));
            return;
        }
        // One counter per value; a request without it is not limited by this rule.
        self.key.push(match &subject {
            Subject::Header(name) => json!({"header": name}),
            Subject::Query(name) => json!({"query": name}),
            _ => unreachable!("only headers and query parameters are Distinct here"),
        });
        self.conds.push(Cond::new(subject, Test::Present));
    }

    fn source(&mut self, cidr: &Value, at: &str, findings: &mut Findings) {
        let value = cidr["value"].as_str().unwrap_or("0.0.0.0/0").to_string();
        let invert = cidr["invert"].as_bool() == Some(true);
        if !invert && (value == "0.0.0.0/0" || value == "::/0") {
            findings.note(at, format!("{value}: every client (IPv4 and IPv6) here"));
        } else {
            let cond = Cond::new(Subject::ClientIp, Test::Cidrs(vec![value]));
            self.conds.push(cond.inverted(invert));
        }
        if cidr["type"] == "Distinct" {
            self.key.push(json!({"client_ip": {}}));
        }
    }

    /// The rule's key: its Distinct parts, or one counter.
    fn key(&self) -> Value {
        match self.key.is_empty() {
            true => json!("shared"),
            false => json!({"all": self.key}),
        }
    }
}

/// A rule's `limit` as this filter's.
fn limit(limit: &Value, at: &str, findings: &mut Findings) -> Option<Value> {
    let l = Object::open(limit, at, &["requests", "unit", "fromMetadata"], findings)?;
    let requests = l.get("requests").and_then(Value::as_u64).unwrap_or(0);
    let unit = l.text("unit").unwrap_or("");
    let Some((window, approx)) = window_of(unit) else {
        findings.lost(&l.path("unit"), format!("unit {unit:?} is not a unit"));
        return None;
    };
    if let Some(why) = approx {
        findings.note(&l.path("unit"), why);
    }
    if requests == 0 {
        findings.lost(&l.path("requests"), "0 requests (refuse everything): a limit of 0 here means no limit; the rule is left out");
        return None;
    }
    if l.get("fromMetadata").is_some() {
        findings.lost(&l.path("fromMetadata"), "a level from metadata needs a bound here: add \"requests_from\": {\"metadata\": ..., \"max\": N} to the limit");
    }
    Some(json!({"requests": requests, "window": window}))
}

/// A rule's `cost`: the rule's own (at the request), and a limit's response part.
struct Costs {
    rule_cost: Option<Value>,
    settles_response: Option<Value>,
}

fn cost(cost: Option<&Value>, at: &str, limit: &Value, findings: &mut Findings) -> Costs {
    let mut out = Costs {
        rule_cost: None,
        settles_response: None,
    };
    let Some(c) = cost.and_then(|c| Object::open(c, at, &["request", "response"], findings)) else {
        return out;
    };
    let max = limit["requests"].clone();
    let metadata = |spec: &Value| json!({"namespace": spec["metadata"]["namespace"], "key": spec["metadata"]["key"]});
    if let Some(request) = c.get("request") {
        out.rule_cost = Some(match request["from"].as_str() {
            Some("Metadata") => {
                findings.note(
                    &c.path("request"),
                    format!("a cost from metadata is bounded here: at most {max} (the limit)"),
                );
                json!({"metadata": metadata(request), "max": max})
            }
            _ => json!(request["number"].as_u64().unwrap_or(1)),
        });
    }
    if let Some(response) = c.get("response") {
        if out.rule_cost.as_ref().is_some_and(|c| c != &json!(0)) {
            findings.note(
                &c.path("response"),
                "the response's cost replaces the request's here (Envoy Gateway adds them)",
            );
        }
        let request = out.rule_cost.take().unwrap_or(json!(0));
        findings.note(
            &c.path("response"),
            format!("a response cost is bounded here: at most {max} (the limit)"),
        );
        out.settles_response = Some(
            json!({"request": request, "response": {"metadata": metadata(response), "max": max}}),
        );
    }
    out
}
