//! The configuration compiled once at load: validated, with every error named by its JSON path,
//! into the structures the request path uses without further checks.

use std::collections::HashSet;
use std::fmt;

use crate::body_template::BodyTemplate;
use crate::client_key::KeySource;
use crate::config::{self, FilterConfig, HeaderStyle, MissingKeyPolicy, Mode, ResetFormat};
use crate::duration::format_window;
use crate::limiter::{LimitSpec, StoreOptions, StoredPolicy};
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

#[derive(Debug, Clone)]
pub struct CompiledConfig {
    pub enabled: bool,
    pub shadow: bool,
    pub rules: Vec<Rule>,
    pub response: ResponsePolicy,
    pub store: StoreOptions,
    pub hash_seed: u64,
    /// Which request attributes routing reads (the others are never asked of the host).
    pub needs_method: bool,
    pub needs_authority: bool,
    pub needs_route_name: bool,
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
    pub policy: StoredPolicy,
}

#[derive(Debug, Clone)]
pub struct ResponsePolicy {
    pub status: u32,
    pub style: HeaderStyle,
    pub reset: ResetFormat,
    pub body: BodyTemplate,
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

/// Parses and compiles a configuration; `Err` lists every problem with its path.
pub fn load(bytes: &[u8]) -> Result<CompiledConfig, ConfigErrors> {
    let config = config::parse(bytes).map_err(|e| ConfigErrors(vec![e]))?;
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

    let response = &config.response;
    if !(400..=599).contains(&response.status) {
        err(
            "$.response.status".into(),
            format!(
                "a refusal status must be 4xx or 5xx, got {}",
                response.status
            ),
        );
    }
    let body = match BodyTemplate::compile(response.body.as_ref().unwrap_or(&default_body())) {
        Ok(body) => Some(body),
        Err(e) => {
            err(format!("$.response.body{}", e.path), e.message);
            None
        }
    };

    if config.rules.is_empty() {
        err("$.rules".into(), "needs at least one rule".into());
    }
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
            if !rule.limits.is_empty() {
                err(
                    format!("{at}.limits"),
                    "an exempt rule takes no limits".into(),
                );
            }
            if !rule.key.is_empty() {
                err(format!("{at}.key"), "an exempt rule takes no key".into());
            }
            RuleAction::Exempt
        } else {
            if rule.limits.is_empty() {
                err(
                    format!("{at}.limits"),
                    "needs at least one limit (or \"exempt\": true)".into(),
                );
            }
            let mut limits = Vec::new();
            let mut limit_names = HashSet::new();
            for (j, limit) in rule.limits.iter().enumerate() {
                let lat = format!("{at}.limits[{j}]");
                if limit.requests == 0 || limit.requests > MAX_REQUESTS {
                    err(
                        format!("{lat}.requests"),
                        format!(
                            "must be between 1 and {MAX_REQUESTS}, got {}",
                            limit.requests
                        ),
                    );
                }
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
                } else if !limit_names.insert(name.clone()) {
                    err(
                        format!("{lat}.name"),
                        format!("duplicate limit name {name:?} in this rule"),
                    );
                }
                limits.push(LimitSpec {
                    name,
                    requests: limit.requests,
                    window: SlidingWindow::new(window.max(1)),
                });
            }
            let key = if rule.key.is_empty() {
                vec![KeySource::ClientIp { trusted_hops: 0 }]
            } else {
                rule.key
                    .iter()
                    .enumerate()
                    .filter_map(|(k, s)| compile_key(s, &format!("{at}.key[{k}]"), &mut err))
                    .collect()
            };
            let policy = StoredPolicy::new(
                format!("{}/{STORE_VERSION}/{}/", store.key_prefix, rule.name),
                limits,
                store.max_clients.max(1) as u64,
                store.slots_per_page.clamp(1, MAX_SLOTS_PER_PAGE) as usize,
            );
            RuleAction::Limit(LimitedRule {
                key,
                on_missing_key: rule.on_missing_key,
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
    let needs_method = rules.iter().any(|r| !r.matcher.methods.is_empty());
    let needs_authority = rules.iter().any(|r| !r.matcher.hosts.is_empty());
    let needs_route_name = rules.iter().any(|r| !r.matcher.route_names.is_empty());
    Ok(CompiledConfig {
        enabled: config.enabled,
        shadow: config.mode == Mode::Shadow,
        rules,
        response: ResponsePolicy {
            status: response.status,
            style: response.headers.style,
            reset: response.headers.reset,
            body: body.expect("no errors"),
        },
        store: StoreOptions {
            cas_attempts: store.cas_attempts,
            on_full: store.on_full,
            on_contention: store.on_contention,
        },
        hash_seed: seed_of(&store.key_prefix),
        needs_method,
        needs_authority,
        needs_route_name,
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
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            {
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
mod tests {
    use super::*;
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
        assert_eq!(api.policy.limits[0].name, "1m");
        assert_eq!(api.policy.limits[1].name, "daily");
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
                {"name": "a", "limits": [{"requests": 0, "window": "0s"}]},
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
        for want in expected {
            assert!(
                e.iter().any(|line| line.starts_with(want)),
                "missing {want:?} in {e:#?}"
            );
        }
        assert_eq!(e.len(), expected.len(), "{e:#?}");
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
}
