//! The native configuration tool's logic (`ratelimit-config check | explain | schema`): the same
//! validation and the same engine the filter runs, on a config file and a described request.

use std::collections::HashMap;

use crate::client_hash::{client_hash, display_hash, KeyKind};
use crate::client_key::{extract, Request, RequestView};
use crate::duration::format_window;
use crate::engine::{self, Action};
use crate::policy::{self, CompiledConfig, RuleAction};
use crate::store::MemoryStore;

/// `check`: "ok" with a summary, or every error with its JSON path.
pub fn check(bytes: &[u8]) -> Result<String, Vec<String>> {
    match policy::load(bytes) {
        Ok(config) => {
            let limited = config
                .rules
                .iter()
                .filter(|r| matches!(r.action, RuleAction::Limit(_)))
                .count();
            Ok(format!(
                "ok: {} rules ({} limited, {} exempt), plans: {}",
                config.rules.len(),
                limited,
                config.rules.len() - limited,
                config.plans.names.join(", ")
            ))
        }
        Err(errors) => Err(errors.0.iter().map(|e| e.to_string()).collect()),
    }
}

/// A request described on the command line.
#[derive(Debug, Clone, Default)]
pub struct DescribedRequest {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub client_ip: String,
    pub route_name: Option<String>,
}

impl RequestView for DescribedRequest {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        match name {
            ":path" => Some(self.path.clone().into_bytes()),
            ":method" => Some(self.method.clone().into_bytes()),
            ":authority" => self.host.clone().map(String::into_bytes),
            _ => self.headers.get(name).map(|v| v.clone().into_bytes()),
        }
    }
    fn source_address(&self) -> Option<Vec<u8>> {
        Some(format!("{}:40000", self.client_ip).into_bytes())
    }
    fn route_name(&self) -> Option<Vec<u8>> {
        self.route_name.clone().map(String::into_bytes)
    }
}

/// Requests `explain` sends to show the refusal before giving up.
const SIMULATION_CAP: u64 = 100_000;

/// `explain`: which rule, key, plan and limits apply, and what the filter would write.
pub fn explain(config: &CompiledConfig, request: &DescribedRequest, now_ms: u64) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("request: {} {}", request.method, request.path));
    if !config.enabled {
        line("filter: disabled (enabled: false): the request passes untouched".into());
        return out;
    }
    let view = Request::new(request);
    let Some((index, rule)) = engine::select_rule(config, &view) else {
        line("rule: none matches: the request passes untouched".into());
        return out;
    };
    line(format!("rule: {} (rules[{index}])", rule.name));
    let RuleAction::Limit(limited) = &rule.action else {
        line("exempt: the request passes untouched".into());
        return out;
    };
    let key = extract(&limited.key, &view);
    match &key {
        Some((kind, value)) => line(format!(
            "key: {kind:?} {:?} (client {} with the config's seed; Envoy hashes with a random per-process seed)",
            String::from_utf8_lossy(value),
            display_hash(client_hash(config.hash_seed, *kind, value))
        )),
        None => line(format!(
            "key: none found; on_missing_key: {:?}",
            limited.on_missing_key
        )),
    }
    let plan_header = config
        .plans
        .header
        .as_deref()
        .and_then(|h| request.header(h));
    let plan = config.plans.resolve(
        key.as_ref().map(|(_, k)| k.as_slice()),
        plan_header.as_deref(),
    );
    if config.has_plans {
        line(format!("plan: {}", config.plans.names[plan]));
    }
    let mut rules = vec![(rule.name.as_str(), limited)];
    for &i in &limited.also {
        if let RuleAction::Limit(other) = &config.rules[i].action {
            rules.push((config.rules[i].name.as_str(), other));
        }
    }
    for (name, limited) in &rules {
        line(format!("limits of rule {name} (cost {:?}):", limited.cost));
        for limit in &limited.limits {
            match limit.requests[plan] {
                0 => line(format!("  {}: no limit for this plan", limit.name)),
                n => line(format!(
                    "  {}: {n} per {}",
                    limit.name,
                    format_window(limit.window_ms)
                )),
            }
        }
    }
    let store = MemoryStore::new();
    let first = engine::handle(config, &store, request, now_ms);
    match &first.action {
        Action::Pass => line("first request: passes, no headers".into()),
        Action::Allow(headers) => {
            line("first request: allowed, response headers:".into());
            for (k, v) in headers {
                line(format!("  {k}: {v}"));
            }
        }
        Action::Refuse(reply) => line(format!(
            "first request: refused with {}: {}",
            reply.status, reply.body
        )),
    }
    if matches!(first.action, Action::Allow(_)) {
        for n in 2..=SIMULATION_CAP {
            if let Action::Refuse(reply) = engine::handle(config, &store, request, now_ms).action {
                line(format!(
                    "request {n} within the window: refused with status {}, headers:",
                    reply.status
                ));
                for (k, v) in &reply.headers {
                    line(format!("  {k}: {v}"));
                }
                line(format!("  body: {}", reply.body));
                break;
            }
            if n == SIMULATION_CAP {
                line(format!(
                    "no refusal within {SIMULATION_CAP} requests (not simulated further)"
                ));
            }
        }
    }
    if key.as_ref().is_some_and(|(k, _)| *k == KeyKind::Missing) {
        line("note: all requests without a key share one counter".into());
    }
    out
}

/// The JSON Schema of the filter configuration, from the same types the filter parses.
#[cfg(feature = "cli")]
pub fn schema() -> String {
    let schema = schemars::schema_for!(crate::config::FilterConfig);
    serde_json::to_string_pretty(&schema).expect("a schema serialises") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_reports_ok_or_every_error() {
        let ok = check(br#"{"rules": [{"name": "a", "limits": [{"requests": 1, "window": 1}]}]}"#)
            .unwrap();
        assert_eq!(ok, "ok: 1 rules (1 limited, 0 exempt), plans: default");
        let errors = check(
            br#"{"rules": [{"name": "a b", "limits": [{"requests": 1, "window": "500d"}]}]}"#,
        )
        .unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("$.rules[0].name: "), "{errors:?}");
        assert!(
            errors[1].starts_with("$.rules[0].limits[0].window: "),
            "{errors:?}"
        );
        let shape =
            check(br#"{"rules": [{"name": "a", "limits": [{"requests": 1, "window": "1y"}]}]}"#)
                .unwrap_err();
        assert!(
            shape[0].starts_with("$.rules[0].limits[0].window: window \"1y\" has unit"),
            "{shape:?}"
        );
    }

    #[test]
    fn explain_walks_through_a_request() {
        let config = policy::load(
            br#"{"plans": {"names": ["free", "pro"], "default": "free", "header": "x-plan"},
                 "rules": [{"name": "api", "match": {"path": {"prefix": "/api"}}, "key": [{"header": "x-api-key"}],
                            "limits": [{"name": "minute", "requests": {"free": 2, "pro": 0}, "window": "1m"}]}]}"#,
        )
        .unwrap();
        let mut request = DescribedRequest {
            method: "GET".into(),
            path: "/api/links".into(),
            client_ip: "192.0.2.1".into(),
            ..Default::default()
        };
        request.headers.insert("x-api-key".into(), "k1".into());
        let text = explain(&config, &request, 1_700_000_000_000);
        assert!(text.contains("rule: api (rules[0])"), "{text}");
        assert!(text.contains("key: Header \"k1\" (client "), "{text}");
        assert!(text.contains("plan: free"), "{text}");
        assert!(text.contains("  minute: 2 per 1m"), "{text}");
        assert!(text.contains("  x-ratelimit-remaining: 1"), "{text}");
        assert!(
            text.contains("request 3 within the window: refused with status 429"),
            "{text}"
        );
        request.headers.insert("x-plan".into(), "pro".into());
        let text = explain(&config, &request, 1_700_000_000_000);
        assert!(text.contains("minute: no limit for this plan"), "{text}");
        request.path = "/other".into();
        assert!(explain(&config, &request, 0).contains("rule: none matches"));
    }
}
