//! The configuration compiled once at load: validated, with every error named by its JSON path,
//! into the structures the request path uses without further checks.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::body_template::{BodyTemplate, Placeholder, TextTemplate};
use crate::client_key::KeySource;
use crate::config::{
    self, BodyPreset, CostConfig, FilterConfig, HeaderStyle, MissingKeyPolicy, Mode, Requests,
    ResetFormat,
};
use crate::duration::format_window;
use crate::limiter::{StoreOptions, StoredPolicy};
use crate::response::HeaderName;
use crate::route_match::{HostPattern, PathPattern, RouteMatcher};
use crate::sliding_window::SlidingWindow;

/// One problem in the configuration: where (`$.rules[1].limits[0].window`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(|e| e.to_string()).collect();
        f.write_str(&lines.join("; "))
    }
}

pub const MIN_WINDOW_MS: u64 = 100;
pub const MAX_WINDOW_MS: u64 = 366 * 86_400_000;
pub const MAX_REQUESTS: u64 = u32::MAX as u64;
pub const MAX_CLIENTS: u32 = 10_000_000;
pub const MAX_SLOTS_PER_PAGE: u32 = 256;
pub const MAX_TRUSTED_HOPS: u32 = 32;
/// Shared-data layout version, part of every key name.
pub const STORE_VERSION: &str = "v1";
/// The plan of every request when the config declares no plans.
pub const IMPLICIT_PLAN: &str = "default";

#[derive(Debug, Clone)]
pub struct CompiledConfig {
    pub enabled: bool,
    pub shadow: bool,
    pub refusal_log: crate::config::RefusalLog,
    /// Whether the config declares plans (else every request has the implicit one).
    pub has_plans: bool,
    pub plans: Plans,
    pub rules: Vec<Rule>,
    pub response: ResponsePolicy,
    pub store: StoreOptions,
    /// `store.key_prefix`: shared-data keys and stat names start with it.
    pub key_prefix: String,
    pub hash_seed: u64,
    /// Which request attributes routing reads (the others are never asked of the host).
    pub needs_path: bool,
    pub needs_method: bool,
    pub needs_authority: bool,
    pub needs_route_name: bool,
}

/// Plan names, and how a request's plan is found.
#[derive(Debug, Clone)]
pub struct Plans {
    /// Index = plan id. Without plans in the config: `["default"]`.
    pub names: Vec<String>,
    pub default: usize,
    pub header: Option<String>,
    /// Client key value → plan id.
    pub keys: HashMap<Vec<u8>, usize>,
}

impl Plans {
    /// The plan of a client: its key in the static map, else the plan header (a known name), else
    /// the default.
    pub fn resolve(&self, key: Option<&[u8]>, header: Option<&[u8]>) -> usize {
        if let Some(plan) = key.and_then(|k| self.keys.get(k)) {
            return *plan;
        }
        if let Some(value) = header {
            let value = value.trim_ascii();
            if let Some(plan) = self
                .names
                .iter()
                .position(|n| n.as_bytes().eq_ignore_ascii_case(value))
            {
                return plan;
            }
        }
        self.default
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub matcher: RouteMatcher,
    pub action: RuleAction,
}

#[derive(Debug, Clone)]
pub enum RuleAction {
    /// Pass untouched.
    Exempt,
    Limit(LimitedRule),
}

#[derive(Debug, Clone)]
pub struct LimitedRule {
    pub key: Vec<KeySource>,
    pub on_missing_key: MissingKeyPolicy,
    pub cost: Cost,
    /// Indices of the other rules whose limits apply too.
    pub also: Vec<usize>,
    pub limits: Vec<Limit>,
    /// `requests_by_plan[plan][limit]`.
    pub requests_by_plan: Vec<Vec<u64>>,
    pub policy: StoredPolicy,
}

impl LimitedRule {
    /// The level of every limit for `plan` (0: not enforced), computed at load.
    pub fn requests_for(&self, plan: usize) -> &[u64] {
        &self.requests_by_plan[plan]
    }
}

/// One limit as clients see it.
#[derive(Debug, Clone)]
pub struct Limit {
    pub name: String,
    pub window_ms: u64,
    /// Requests per window for each plan id; 0: no limit at this level for that plan.
    pub requests: Vec<u64>,
    pub code: String,
    pub message: Option<TextTemplate>,
}

/// What one request costs against a rule's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cost {
    Fixed(u64),
    FromRequest {
        header: Option<String>,
        query: Option<Vec<u8>>,
        default: u64,
        max: u64,
    },
}

#[derive(Debug, Clone)]
pub struct ResponsePolicy {
    pub status: u32,
    pub style: HeaderStyle,
    pub reset: ResetFormat,
    pub names: HeaderNames,
    pub body: BodyTemplate,
    pub content_type: String,
}

/// The header names in use; `None` for a hidden header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderNames {
    pub limit: Option<HeaderName>,
    pub remaining: Option<HeaderName>,
    pub reset: Option<HeaderName>,
    pub policy: Option<HeaderName>,
    pub ratelimit: Option<HeaderName>,
}

const HEADER_SLOTS: [&str; 5] = ["limit", "remaining", "reset", "policy", "ratelimit"];

impl HeaderNames {
    fn for_style(style: HeaderStyle) -> Self {
        let (limit, remaining, reset, policy, ratelimit) = match style {
            HeaderStyle::XRateLimit => (
                Some("x-ratelimit-limit"),
                Some("x-ratelimit-remaining"),
                Some("x-ratelimit-reset"),
                None,
                None,
            ),
            HeaderStyle::Draft03 => (
                Some("ratelimit-limit"),
                Some("ratelimit-remaining"),
                Some("ratelimit-reset"),
                None,
                None,
            ),
            HeaderStyle::DraftIetf => (
                None,
                None,
                None,
                Some("ratelimit-policy"),
                Some("ratelimit"),
            ),
            HeaderStyle::None => (None, None, None, None, None),
        };
        let own = |s: Option<&str>| s.map(HeaderName::from);
        HeaderNames {
            limit: own(limit),
            remaining: own(remaining),
            reset: own(reset),
            policy: own(policy),
            ratelimit: own(ratelimit),
        }
    }

    fn slot(&mut self, name: &str) -> Option<&mut Option<HeaderName>> {
        match name {
            "limit" => Some(&mut self.limit),
            "remaining" => Some(&mut self.remaining),
            "reset" => Some(&mut self.reset),
            "policy" => Some(&mut self.policy),
            "ratelimit" => Some(&mut self.ratelimit),
            _ => None,
        }
    }
}

/// The body of a refusal when the config names none.
pub fn default_body() -> serde_json::Value {
    serde_json::json!({
        "error": "too_many_requests",
        "message": "Rate limit exceeded: {{limit}} requests per {{window}}. Retry in {{retry_after}} seconds.",
        "policy": "{{policy}}",
        "limit": "{{limit}}",
        "window_seconds": "{{window_seconds}}",
        "retry_after": "{{retry_after}}",
        "reset": "{{reset}}"
    })
}

/// RFC 9457 problem details, with the quota-exceeded problem type of the IETF rate-limit draft.
pub fn problem_json_body() -> serde_json::Value {
    serde_json::json!({
        "type": "https://iana.org/assignments/http-problem-types#quota-exceeded",
        "title": "Request cannot be satisfied as assigned quota has been exceeded",
        "status": "{{status}}",
        "detail": "Rate limit exceeded: {{limit}} requests per {{window}}. Retry in {{retry_after}} seconds.",
        "violated-policies": "{{violated_policies}}"
    })
}

/// Parses and compiles a configuration; `Err` lists every problem with its path.
pub fn load(bytes: &[u8]) -> Result<CompiledConfig, ConfigErrors> {
    let config = config::parse(bytes).map_err(ConfigErrors)?;
    compile(&config)
}

pub fn compile(config: &FilterConfig) -> Result<CompiledConfig, ConfigErrors> {
    let mut errors = Vec::new();
    let mut err = |path: String, message: String| errors.push(ConfigError { path, message });

    let store = &config.store;
    if !valid_name(&store.key_prefix) {
        err("$.store.key_prefix".into(), name_rule(&store.key_prefix));
    }
    if store.max_clients == 0 || store.max_clients > MAX_CLIENTS {
        err(
            "$.store.max_clients".into(),
            format!(
                "must be between 1 and {MAX_CLIENTS}, got {}",
                store.max_clients
            ),
        );
    }
    if store.slots_per_page == 0 || store.slots_per_page > MAX_SLOTS_PER_PAGE {
        err(
            "$.store.slots_per_page".into(),
            format!(
                "must be between 1 and {MAX_SLOTS_PER_PAGE}, got {}",
                store.slots_per_page
            ),
        );
    }
    if store.cas_attempts == 0 || store.cas_attempts > 1_000 {
        err(
            "$.store.cas_attempts".into(),
            format!("must be between 1 and 1000, got {}", store.cas_attempts),
        );
    }

    let plans = compile_plans(config.plans.as_ref(), &mut err);
    let response = compile_response(&config.response, &mut err);

    if config.rules.is_empty() {
        err("$.rules".into(), "needs at least one rule".into());
    }
    let rule_index: HashMap<&str, usize> = config
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    let mut names = HashSet::new();
    let mut rules = Vec::new();
    for (i, rule) in config.rules.iter().enumerate() {
        let at = format!("$.rules[{i}]");
        if !valid_name(&rule.name) {
            err(format!("{at}.name"), name_rule(&rule.name));
        } else if !names.insert(rule.name.as_str()) {
            err(
                format!("{at}.name"),
                format!("duplicate rule name {:?}", rule.name),
            );
        }
        let matcher = compile_match(&rule.matcher, &format!("{at}.match"), &mut err);
        let action = if rule.exempt {
            for (field, given) in [
                ("limits", !rule.limits.is_empty()),
                ("key", !rule.key.is_empty()),
                ("cost", rule.cost.is_some()),
                ("also", !rule.also.is_empty()),
            ] {
                if given {
                    err(
                        format!("{at}.{field}"),
                        format!("an exempt rule takes no {field}"),
                    );
                }
            }
            RuleAction::Exempt
        } else {
            if rule.limits.is_empty() {
                err(
                    format!("{at}.limits"),
                    "needs at least one limit (or \"exempt\": true)".into(),
                );
            }
            let limits = compile_limits(&rule.limits, &plans, &at, &mut err);
            let key = if rule.key.is_empty() {
                vec![KeySource::ClientIp { trusted_hops: 0 }]
            } else {
                rule.key
                    .iter()
                    .enumerate()
                    .filter_map(|(k, s)| compile_key(s, &format!("{at}.key[{k}]"), &mut err))
                    .collect()
            };
            let cost = compile_cost(rule.cost.as_ref(), &format!("{at}.cost"), &mut err);
            let mut also = Vec::new();
            for (k, other) in rule.also.iter().enumerate() {
                match rule_index.get(other.as_str()) {
                    None => err(format!("{at}.also[{k}]"), format!("no rule is named {other:?}")),
                    Some(&j) if j == i => err(format!("{at}.also[{k}]"), "a rule cannot include itself".into()),
                    Some(&j) if config.rules[j].exempt => {
                        err(format!("{at}.also[{k}]"), format!("rule {other:?} is exempt: it has no limits"))
                    }
                    Some(&j) if !config.rules[j].also.is_empty() => err(
                        format!("{at}.also[{k}]"),
                        format!("rule {other:?} has its own \"also\"; chains are not followed, list every rule here"),
                    ),
                    Some(&j) => also.push(j),
                }
            }
            let windows: Vec<SlidingWindow> = limits
                .iter()
                .map(|l| SlidingWindow::new(l.window_ms.max(1)))
                .collect();
            let max_requests: Vec<u64> = limits
                .iter()
                .map(|l| l.requests.iter().copied().max().unwrap_or(0))
                .collect();
            let policy = StoredPolicy::new(
                format!("{}/{STORE_VERSION}/{}/", store.key_prefix, rule.name),
                windows,
                &max_requests,
                store.max_clients.max(1) as u64,
                store.slots_per_page.clamp(1, MAX_SLOTS_PER_PAGE) as usize,
            );
            let requests_by_plan = (0..plans.names.len())
                .map(|p| limits.iter().map(|l| l.requests[p]).collect())
                .collect();
            RuleAction::Limit(LimitedRule {
                key,
                on_missing_key: rule.on_missing_key,
                cost,
                also,
                limits,
                requests_by_plan,
                policy,
            })
        };
        rules.push(Rule {
            name: rule.name.clone(),
            matcher,
            action,
        });
    }

    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let needs_path = rules.iter().any(|r| r.matcher.path.is_some());
    let needs_method = rules.iter().any(|r| !r.matcher.methods.is_empty());
    let needs_authority = rules.iter().any(|r| !r.matcher.hosts.is_empty());
    let needs_route_name = rules.iter().any(|r| !r.matcher.route_names.is_empty());
    Ok(CompiledConfig {
        enabled: config.enabled,
        shadow: config.mode == Mode::Shadow,
        refusal_log: config.refusal_log,
        has_plans: config.plans.is_some(),
        plans,
        rules,
        response: response.expect("no errors"),
        store: StoreOptions {
            cas_attempts: store.cas_attempts,
            on_full: store.on_full,
            on_contention: store.on_contention,
        },
        key_prefix: store.key_prefix.clone(),
        hash_seed: seed_of(&store.key_prefix),
        needs_path,
        needs_method,
        needs_authority,
        needs_route_name,
    })
}

fn compile_plans(
    plans: Option<&config::PlansConfig>,
    err: &mut impl FnMut(String, String),
) -> Plans {
    let Some(plans) = plans else {
        return Plans {
            names: vec![IMPLICIT_PLAN.to_string()],
            default: 0,
            header: None,
            keys: HashMap::new(),
        };
    };
    if plans.names.is_empty() {
        err("$.plans.names".into(), "needs at least one plan".into());
    }
    let mut seen = HashSet::new();
    for (i, name) in plans.names.iter().enumerate() {
        if !valid_name(name) {
            err(format!("$.plans.names[{i}]"), name_rule(name));
        } else if !seen.insert(name.to_ascii_lowercase()) {
            err(
                format!("$.plans.names[{i}]"),
                format!("duplicate plan {name:?}"),
            );
        }
    }
    let find = |name: &str| plans.names.iter().position(|n| n == name);
    let default = find(&plans.default).unwrap_or_else(|| {
        err(
            "$.plans.default".into(),
            format!("{:?} is not one of plans.names", plans.default),
        );
        0
    });
    let header = plans.header.as_ref().and_then(|h| {
        valid_header_name(h)
            .then(|| h.to_ascii_lowercase())
            .or_else(|| {
                err(
                    "$.plans.header".into(),
                    format!("{h:?} is not a header name"),
                );
                None
            })
    });
    let mut keys = HashMap::new();
    for (key, plan) in &plans.keys {
        match find(plan) {
            Some(p) if !key.trim().is_empty() => {
                keys.insert(key.trim().as_bytes().to_vec(), p);
            }
            Some(_) => err(
                "$.plans.keys".into(),
                "a client key may not be empty".into(),
            ),
            None => err(
                format!("$.plans.keys.{key}"),
                format!("{plan:?} is not one of plans.names"),
            ),
        }
    }
    Plans {
        names: plans.names.clone(),
        default,
        header,
        keys,
    }
}

fn compile_limits(
    limits: &[config::LimitConfig],
    plans: &Plans,
    at: &str,
    err: &mut impl FnMut(String, String),
) -> Vec<Limit> {
    let mut names = HashSet::new();
    let mut compiled = Vec::new();
    for (j, limit) in limits.iter().enumerate() {
        let lat = format!("{at}.limits[{j}]");
        let check_level = |err: &mut dyn FnMut(String, String), path: String, n: u64| {
            if n > MAX_REQUESTS {
                err(
                    path,
                    format!("must be between 0 (no limit) and {MAX_REQUESTS}, got {n}"),
                );
            }
        };
        let requests = match &limit.requests {
            Requests::All(n) => {
                check_level(err, format!("{lat}.requests"), *n);
                vec![*n; plans.names.len()]
            }
            Requests::PerPlan(levels) => {
                let mut per_plan = vec![0; plans.names.len()];
                for (plan, &n) in levels {
                    check_level(err, format!("{lat}.requests.{plan}"), n);
                    match plans.names.iter().position(|p| p == plan) {
                        Some(p) => per_plan[p] = n,
                        None if plans.names == [IMPLICIT_PLAN] => err(
                            format!("{lat}.requests.{plan}"),
                            "requests per plan need \"plans\" at the top level".into(),
                        ),
                        None => err(
                            format!("{lat}.requests.{plan}"),
                            format!("{plan:?} is not one of plans.names"),
                        ),
                    }
                }
                per_plan
            }
        };
        let window = limit.window.millis;
        if !(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&window) {
            err(
                format!("{lat}.window"),
                format!(
                    "must be between 100ms and 366d, got {}",
                    format_window(window)
                ),
            );
        }
        let name = limit.name.clone().unwrap_or_else(|| format_window(window));
        if !valid_name(&name) {
            err(format!("{lat}.name"), name_rule(&name));
        } else if !names.insert(name.clone()) {
            err(
                format!("{lat}.name"),
                format!("duplicate limit name {name:?} in this rule"),
            );
        }
        let code = limit.code.clone().unwrap_or_else(|| name.clone());
        if code.is_empty() || code.len() > 128 {
            err(format!("{lat}.code"), "must be 1 to 128 characters".into());
        }
        let message = limit.message.as_ref().and_then(|text| {
            TextTemplate::compile(text, &[Placeholder::Message])
                .map_err(|m| err(format!("{lat}.message"), m))
                .ok()
        });
        compiled.push(Limit {
            name,
            window_ms: window,
            requests,
            code,
            message,
        });
    }
    compiled
}

fn compile_cost(cost: Option<&CostConfig>, at: &str, err: &mut impl FnMut(String, String)) -> Cost {
    match cost {
        None => Cost::Fixed(1),
        Some(CostConfig::Fixed(n)) => {
            if *n == 0 || *n > MAX_REQUESTS {
                err(
                    at.into(),
                    format!("must be between 1 and {MAX_REQUESTS}, got {n}"),
                );
            }
            Cost::Fixed(*n)
        }
        Some(CostConfig::FromRequest(c)) => {
            if c.header.is_some() == c.query.is_some() {
                err(
                    at.into(),
                    "give exactly one of \"header\" or \"query\"".into(),
                );
            }
            if let Some(h) = &c.header {
                if !valid_header_name(h) {
                    err(
                        format!("{at}.header"),
                        format!("{h:?} is not a header name"),
                    );
                }
            }
            if c.query.as_ref().is_some_and(|q| q.is_empty()) {
                err(
                    format!("{at}.query"),
                    "a query parameter name may not be empty".into(),
                );
            }
            if c.max == 0 || c.max > MAX_REQUESTS {
                err(
                    format!("{at}.max"),
                    format!("must be between 1 and {MAX_REQUESTS}, got {}", c.max),
                );
            }
            if c.default == 0 || c.default > c.max {
                err(
                    format!("{at}.default"),
                    format!("must be between 1 and max ({}), got {}", c.max, c.default),
                );
            }
            Cost::FromRequest {
                header: c.header.as_ref().map(|h| h.to_ascii_lowercase()),
                query: c.query.as_ref().map(|q| q.clone().into_bytes()),
                default: c.default,
                max: c.max,
            }
        }
    }
}

fn compile_response(
    response: &config::ResponseConfig,
    err: &mut impl FnMut(String, String),
) -> Option<ResponsePolicy> {
    if !(400..=599).contains(&response.status) {
        err(
            "$.response.status".into(),
            format!(
                "a refusal status must be 4xx or 5xx, got {}",
                response.status
            ),
        );
    }
    let headers = &response.headers;
    let mut names = HeaderNames::for_style(headers.style);
    for (slot, name) in &headers.names {
        if !valid_header_name(name) {
            err(
                format!("$.response.headers.names.{slot}"),
                format!("{name:?} is not a header name"),
            );
        }
        match names.slot(slot) {
            Some(target) if target.is_some() => {
                *target = Some(HeaderName::from(name.to_ascii_lowercase()))
            }
            Some(_) => err(
                format!("$.response.headers.names.{slot}"),
                format!("the {:?} style has no {slot:?} header", headers.style),
            ),
            None => err(
                format!("$.response.headers.names.{slot}"),
                format!(
                    "unknown header {slot:?}; known: {}",
                    HEADER_SLOTS.join(", ")
                ),
            ),
        }
    }
    for (i, slot) in headers.hide.iter().enumerate() {
        match names.slot(slot) {
            Some(target) => *target = None,
            None => err(
                format!("$.response.headers.hide[{i}]"),
                format!(
                    "unknown header {slot:?}; known: {}",
                    HEADER_SLOTS.join(", ")
                ),
            ),
        }
    }
    let (preset_body, preset_type) = match response.preset {
        BodyPreset::Default => (default_body(), "application/json"),
        BodyPreset::ProblemJson => (problem_json_body(), "application/problem+json"),
    };
    let content_type = response
        .content_type
        .clone()
        .unwrap_or_else(|| preset_type.to_string());
    if content_type.is_empty() || content_type.bytes().any(|b| b.is_ascii_control()) {
        err(
            "$.response.content_type".into(),
            format!("{content_type:?} is not a content type"),
        );
    }
    let body = match BodyTemplate::compile(response.body.as_ref().unwrap_or(&preset_body)) {
        Ok(body) => Some(body),
        Err(e) => {
            err(format!("$.response.body{}", e.path), e.message);
            None
        }
    };
    Some(ResponsePolicy {
        status: response.status,
        style: headers.style,
        reset: headers.reset,
        names,
        body: body?,
        content_type,
    })
}

fn compile_match(
    m: &config::MatchConfig,
    at: &str,
    err: &mut impl FnMut(String, String),
) -> RouteMatcher {
    let path = match &m.path {
        None => None,
        Some(config::PathMatch::Exact(p)) | Some(config::PathMatch::Prefix(p))
            if !p.starts_with('/') =>
        {
            err(
                format!("{at}.path"),
                format!("a path must start with '/', got {p:?}"),
            );
            None
        }
        Some(config::PathMatch::Exact(p)) => Some(PathPattern::exact(p)),
        Some(config::PathMatch::Prefix(p)) => Some(PathPattern::prefix(p)),
        Some(config::PathMatch::Template(t)) => match PathPattern::template(t) {
            Ok(p) => Some(p),
            Err(message) => {
                err(format!("{at}.path.template"), message);
                None
            }
        },
    };
    let mut methods = Vec::new();
    for (i, method) in m.methods.iter().enumerate() {
        if method.is_empty()
            || !method
                .bytes()
                .all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_')
        {
            err(
                format!("{at}.methods[{i}]"),
                format!("{method:?} is not an HTTP method"),
            );
        }
        methods.push(method.to_ascii_uppercase().into_bytes());
    }
    let mut hosts = Vec::new();
    for (i, host) in m.hosts.iter().enumerate() {
        match HostPattern::parse(host) {
            Ok(h) => hosts.push(h),
            Err(message) => err(format!("{at}.hosts[{i}]"), message),
        }
    }
    let mut route_names = Vec::new();
    for (i, name) in m.route_names.iter().enumerate() {
        if name.is_empty() {
            err(
                format!("{at}.route_names[{i}]"),
                "a route name may not be empty".into(),
            );
        }
        route_names.push(name.clone().into_bytes());
    }
    RouteMatcher {
        path,
        methods,
        hosts,
        route_names,
    }
}

fn compile_key(
    source: &config::KeySource,
    at: &str,
    err: &mut impl FnMut(String, String),
) -> Option<KeySource> {
    match source {
        config::KeySource::Header(name) => {
            if !valid_header_name(name) {
                err(
                    format!("{at}.header"),
                    format!("{name:?} is not a header name"),
                );
                return None;
            }
            Some(KeySource::Header(name.to_ascii_lowercase()))
        }
        config::KeySource::Query(name) => {
            if name.is_empty() {
                err(
                    format!("{at}.query"),
                    "a query parameter name may not be empty".into(),
                );
                return None;
            }
            Some(KeySource::Query(name.clone().into_bytes()))
        }
        config::KeySource::Bearer {} => Some(KeySource::Bearer),
        config::KeySource::ClientIp(ip) => {
            if ip.trusted_hops > MAX_TRUSTED_HOPS {
                err(
                    format!("{at}.client_ip.trusted_hops"),
                    format!(
                        "must be at most {MAX_TRUSTED_HOPS}, got {}",
                        ip.trusted_hops
                    ),
                );
                return None;
            }
            Some(KeySource::ClientIp {
                trusted_hops: ip.trusted_hops,
            })
        }
    }
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
}

/// Names end up in shared-data keys, logs and metric names.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

fn name_rule(name: &str) -> String {
    format!("{name:?} must be 1 to 64 characters of letters, digits, '_', '-' or '.'")
}

fn seed_of(prefix: &str) -> u64 {
    let mut seed: u64 = 0xcbf2_9ce4_8422_2325;
    for b in prefix.bytes() {
        seed ^= b as u64;
        seed = seed.wrapping_mul(0x0000_0100_0000_01b3);
    }
    seed
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every expected error (by its start) is reported, and nothing else.
    pub(crate) fn assert_each_error_once(errors: &[String], expected: &[&str]) {
        for want in expected {
            assert!(
                errors.iter().any(|line| line.starts_with(want)),
                "missing {want:?} in {errors:#?}"
            );
        }
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    }
    use crate::config::FailPolicy;

    fn errors(json: &str) -> Vec<String> {
        match load(json.as_bytes()) {
            Ok(_) => vec![],
            Err(ConfigErrors(list)) => list.iter().map(|e| e.to_string()).collect(),
        }
    }

    const GOOD: &str = r#"{
        "rules": [
            {"name": "health", "match": {"path": {"exact": "/healthz"}}, "exempt": true},
            {"name": "api", "match": {"path": {"prefix": "/api"}, "methods": ["get", "POST"], "hosts": ["*.example.com"]},
             "key": [{"header": "X-Api-Key"}, {"client_ip": {"trusted_hops": 1}}],
             "limits": [{"requests": 100, "window": "1m"}, {"name": "daily", "requests": 5000, "window": "1d"}]}
        ]
    }"#;

    #[test]
    fn a_good_config_compiles_with_defaults() {
        let c = load(GOOD.as_bytes()).unwrap();
        assert!(c.enabled && !c.shadow);
        assert_eq!(c.response.status, 429);
        assert!(c.needs_method && c.needs_authority && !c.needs_route_name);
        let RuleAction::Limit(api) = &c.rules[1].action else {
            panic!()
        };
        assert_eq!(
            api.key,
            vec![
                KeySource::Header("x-api-key".into()),
                KeySource::ClientIp { trusted_hops: 1 }
            ]
        );
        assert_eq!(api.limits[0].name, "1m");
        assert_eq!(api.limits[1].name, "daily");
        assert_eq!(api.requests_for(0), [100, 5000]);
        assert_eq!(api.policy.key_prefix, "ratelimit/v1/api/");
        assert_eq!(api.policy.capacity(), 10_000);
        assert_eq!(
            c.rules[1].matcher.methods,
            vec![b"GET".to_vec(), b"POST".to_vec()]
        );
    }

    #[test]
    fn shape_errors_name_the_path() {
        let e = errors(
            r#"{"rules": [{"name": "a", "limits": [{"requests": 1, "window": "1 minute"}]}]}"#,
        );
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("$.rules[0].limits[0].window: "), "{e:?}");
        assert!(e[0].contains("unit"), "{e:?}");
        let e = errors(r#"{"rules": [{"name": "a", "limitz": []}]}"#);
        assert!(
            e[0].starts_with("$.rules[0].limitz: unknown field `limitz`"),
            "{e:?}"
        );
        let e = errors(r#"{"rules": [{"name": "a", "limits": [{"requests": -5, "window": 1}]}]}"#);
        assert!(e[0].starts_with("$.rules[0].limits[0].requests: "), "{e:?}");
        let e = errors(r#"{"rules": [{"name": "a", "key": [{"cookie": "x"}], "limits": []}]}"#);
        assert!(
            e[0].starts_with("$.rules[0].key[0]: unknown variant `cookie`"),
            "{e:?}"
        );
        let e = errors(r#"{"mode": "dry", "rules": []}"#);
        assert!(e[0].starts_with("$.mode: unknown variant `dry`"), "{e:?}");
        assert!(errors("{}")[0].contains("missing field `rules`"));
        let root = errors("[1]");
        assert_eq!(
            root,
            vec!["$: the configuration must be a JSON object".to_string()]
        );
        assert!(errors("{\"rules\": []} trailing")[0].starts_with("$: trailing"));
        assert!(!errors("\u{0}\u{ff}").is_empty());
        assert!(!errors("").is_empty());
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let e = errors(
            r#"{
            "store": {"max_clients": 0, "key_prefix": "bad prefix"},
            "response": {"status": 200, "body": {"m": "{{nope}}"}},
            "rules": [
                {"name": "a", "limits": [{"requests": 5000000000, "window": "0s"}]},
                {"name": "a", "match": {"path": {"template": "/x/:/y"}, "hosts": ["a.*"]}, "limits": [{"requests": 1, "window": "400d"}]},
                {"name": "e", "exempt": true, "limits": [{"requests": 1, "window": 1}]},
                {"name": "k", "key": [{"header": "bad header"}, {"client_ip": {"trusted_hops": 99}}], "limits": [
                    {"name": "x", "requests": 1, "window": 1}, {"name": "x", "requests": 2, "window": 2}]},
                {"name": "p", "match": {"path": {"prefix": "api"}}, "limits": []}
            ]}"#,
        );
        let expected = [
            "$.store.key_prefix: ",
            "$.store.max_clients: ",
            "$.response.status: ",
            "$.response.body.m: unknown placeholder",
            "$.rules[0].limits[0].requests: ",
            "$.rules[0].limits[0].window: ",
            "$.rules[1].name: duplicate rule name",
            "$.rules[1].match.path.template: ",
            "$.rules[1].match.hosts[0]: ",
            "$.rules[1].limits[0].window: ",
            "$.rules[2].limits: an exempt rule takes no limits",
            "$.rules[3].limits[1].name: duplicate limit name",
            "$.rules[3].key[0].header: ",
            "$.rules[3].key[1].client_ip.trusted_hops: ",
            "$.rules[4].match.path: ",
            "$.rules[4].limits: needs at least one limit",
        ];
        assert_each_error_once(&e, &expected);
        assert_eq!(
            errors(r#"{"rules": []}"#),
            vec!["$.rules: needs at least one rule".to_string()]
        );
    }

    #[test]
    fn key_defaults_to_the_client_ip() {
        let c = load(br#"{"rules": [{"name": "a", "limits": [{"requests": 1, "window": 1}]}]}"#)
            .unwrap();
        let RuleAction::Limit(rule) = &c.rules[0].action else {
            panic!()
        };
        assert_eq!(rule.key, vec![KeySource::ClientIp { trusted_hops: 0 }]);
        assert_eq!(rule.on_missing_key, MissingKeyPolicy::Shared);
        assert_eq!(c.store.on_full, FailPolicy::Deny);
        assert_eq!(c.store.on_contention, FailPolicy::Allow);
    }

    #[test]
    fn plans_and_their_errors() {
        let e = errors(
            r#"{
            "plans": {"names": ["free", "pro", "free"], "default": "gold", "header": "x plan", "keys": {"k": "silver"}},
            "response": {"headers": {"names": {"limit": "X-Limit", "ratelimit": "RL"}, "hide": ["resets"]}, "content_type": ""},
            "rules": [
                {"name": "a", "also": ["b", "nope", "a", "h"], "cost": {"header": "x-n", "query": "n", "default": 5, "max": 2},
                 "limits": [{"requests": {"free": 1, "platinum": 2}, "window": "1m", "message": "{{message}}!"}]},
                {"name": "b", "also": ["a"], "cost": 0, "limits": [{"requests": 1, "window": "1m"}]},
                {"name": "h", "exempt": true, "cost": 1}
            ]}"#,
        );
        let expected = [
            "$.plans.names[2]: duplicate plan",
            "$.plans.default: \"gold\" is not one of plans.names",
            "$.plans.header: ",
            "$.plans.keys.k: \"silver\" is not one of plans.names",
            "$.response.headers.names.ratelimit: the XRateLimit style has no",
            "$.response.headers.hide[0]: unknown header \"resets\"",
            "$.response.content_type: ",
            "$.rules[0].limits[0].requests.platinum: ",
            "$.rules[0].limits[0].message: ",
            "$.rules[0].cost: give exactly one",
            "$.rules[0].cost.default: ",
            "$.rules[0].also[0]: rule \"b\" has its own \"also\"",
            "$.rules[0].also[1]: no rule is named \"nope\"",
            "$.rules[0].also[2]: a rule cannot include itself",
            "$.rules[0].also[3]: rule \"h\" is exempt",
            "$.rules[1].cost: must be between 1",
            "$.rules[1].also[0]: rule \"a\" has its own \"also\"",
            "$.rules[2].cost: an exempt rule takes no cost",
        ];
        assert_each_error_once(&e, &expected);
        let e = errors(
            r#"{"rules": [{"name": "a", "limits": [{"requests": {"free": 1}, "window": 1}]}]}"#,
        );
        assert!(e[0].contains("requests per plan need \"plans\""), "{e:?}");
        let e =
            errors(r#"{"rules": [{"name": "a", "limits": [{"requests": "many", "window": 1}]}]}"#);
        assert!(e[0].starts_with("$.rules[0].limits[0].requests: invalid type: string \"many\", expected a whole number"), "{e:?}");
        let e = errors(
            r#"{"rules": [{"name": "a", "cost": {"header": "x", "max": 5, "typo": 1}, "limits": [{"requests": 1, "window": 1}]}]}"#,
        );
        assert!(
            e[0].starts_with("$.rules[0].cost.typo: unknown field"),
            "{e:?}"
        );
    }

    #[test]
    fn plan_resolution_order() {
        let c = load(
            br#"{"plans": {"names": ["free", "pro"], "default": "free", "header": "x-plan", "keys": {"vip": "pro"}},
                 "rules": [{"name": "a", "limits": [{"requests": {"free": 1, "pro": 0}, "window": 1}]}]}"#,
        )
        .unwrap();
        assert!(c.has_plans);
        assert_eq!(c.plans.resolve(Some(b"vip"), Some(b"free")), 1);
        assert_eq!(c.plans.resolve(Some(b"other"), Some(b" Pro ")), 1);
        assert_eq!(c.plans.resolve(None, Some(b"\xff")), 0);
        assert_eq!(c.plans.resolve(None, None), 0);
        let RuleAction::Limit(rule) = &c.rules[0].action else {
            panic!()
        };
        assert_eq!(rule.requests_for(0), [1]);
        assert_eq!(rule.requests_for(1), [0], "0 means no limit at this level");
    }
}
