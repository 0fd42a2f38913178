//! The native configuration tool's logic (`ratelimit-config check | explain | schema`): the same
//! validation and the same pipeline the filter runs, on a config file and a described request.

mod engines;
mod import;
mod warnings;

use std::collections::HashMap;

pub use engines::{engine_config, Engine};
pub use import::{import, Findings, Options as ImportOptions, Source as ImportSource};

use crate::config::{format_window, OnMissingKey};
use crate::engine::{decide, Action, Filter, LimitedRule, RuleAction, Selection};
use crate::hash::{client_hash, display_hash, KeyKind};
use crate::request::{Computed, MetadataPath, Request, RequestView};
use crate::store::MemoryStore;

/// `check`: "ok" with a summary, or every error with its JSON path.
pub fn check(bytes: &[u8]) -> Result<String, Vec<String>> {
    match Filter::load(bytes) {
        Ok(filter) => {
            let limited = filter
                .rules
                .iter()
                .filter(|r| matches!(r.action, RuleAction::Limit(_)))
                .count();
            Ok(format!(
                "ok: {} rules ({} limited, {} exempt), plans: {}",
                filter.rules.len(),
                limited,
                filter.rules.len() - limited,
                filter.plans.names.join(", ")
            ))
        }
        Err(errors) => Err(errors.0.iter().map(|e| e.to_string()).collect()),
    }
}

/// `check`'s warnings for a configuration that loads: choices that break known clients, each
/// with its JSON path (none for one that does not load).
pub fn check_warnings(bytes: &[u8]) -> Vec<String> {
    let (Ok(config), Ok(raw)) = (crate::config::parse(bytes), serde_json::from_slice(bytes)) else {
        return Vec::new();
    };
    warnings::warnings(&config, &raw)
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
    /// `(namespace, key and path joined by dots)` → value, as another filter would set it.
    pub metadata: HashMap<(String, String), String>,
    pub filter_state: HashMap<String, String>,
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
    fn metadata(&self, at: &MetadataPath) -> Option<Computed> {
        let key = std::iter::once(at.key.as_str())
            .chain(at.path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(".");
        let value = self.metadata.get(&(at.namespace.clone(), key))?;
        Some(Computed::Text(value.clone().into_bytes()))
    }
    fn filter_state(&self, key: &str) -> Option<Vec<u8>> {
        self.filter_state.get(key).map(|v| v.clone().into_bytes())
    }
}

/// Requests `explain` sends to show the refusal before giving up.
const SIMULATION_CAP: u64 = 100_000;

/// `explain`: which rule, key, plan and limits apply, and what the filter would write.
pub fn explain(filter: &Filter, request: &DescribedRequest, now_ms: u64) -> String {
    let mut out = vec![format!("request: {} {}", request.method, request.path)];
    let view = Request::new(request);
    match Selection::of(filter, &view) {
        Some(selection) => {
            describe_selection(filter, (&selection, request), &mut out);
            simulate(filter, request, now_ms, &mut out);
            let shared = filter
                .limited(selection.rule)
                .is_some_and(|l| l.on_missing_key == OnMissingKey::Shared);
            if selection.key.is_none() && shared {
                out.push("note: all requests without a key share one counter".into());
            }
        }
        None => out.push(why_untouched(filter, &view)),
    }
    out.iter().map(|line| format!("{line}\n")).collect()
}

/// Why a request the pipeline does not start for passes untouched.
fn why_untouched(filter: &Filter, request: &Request) -> String {
    if !filter.enabled {
        return "filter: disabled (enabled: false): the request passes untouched".into();
    }
    match filter.routes.select(request) {
        None => {
            let mut lines = vec!["rule: none matches: the request passes untouched".to_string()];
            for (index, rule) in filter.rules.iter().enumerate() {
                let selectors = filter.routes.describe_selectors(index, request);
                if !selectors.is_empty() {
                    lines.push(format!("  selectors of rule {}:", rule.name));
                    lines.extend(selectors.iter().map(|s| format!("    {s}")));
                }
            }
            lines.join("\n")
        }
        Some(index) => format!(
            "rule: {} (rules[{index}])\nexempt: the request passes untouched",
            filter.rules[index].name
        ),
    }
}

fn describe_selection(
    filter: &Filter,
    (selection, view): (&Selection, &dyn RequestView),
    out: &mut Vec<String>,
) {
    let rule = &filter.rules[selection.rule];
    let Some(limited) = filter.limited(selection.rule) else {
        return;
    };
    out.push(format!("rule: {} (rules[{}])", rule.name, selection.rule));
    if let Some(mode) = limited.mode {
        out.push(format!("mode: {mode:?} (this rule's own)"));
    }
    let request = Request::new(view);
    let selectors = filter.routes.describe_selectors(selection.rule, &request);
    if !selectors.is_empty() {
        out.push("selectors:".into());
        out.extend(selectors.iter().map(|s| format!("  {s}")));
    }
    out.push("key sources:".into());
    out.extend(
        limited
            .key
            .describe(&request, limited.on_ambiguous_key)
            .iter()
            .map(|s| format!("  {s}")),
    );
    out.push(match &selection.key {
        Some((KeyKind::Ambiguous, source)) => format!(
            "key: ambiguous ({} given several different values); on_ambiguous_key: deny: refused with 400",
            String::from_utf8_lossy(source)
        ),
        Some((kind, value)) => format!(
            "key: {kind:?} {:?} (client {} with the config's seed; Envoy hashes with a random per-process seed)",
            String::from_utf8_lossy(value),
            display_hash(client_hash(filter.hash_seed, *kind, value))
        ),
        None => format!("key: none found; on_missing_key: {:?}", limited.on_missing_key),
    });
    if let Some(plan) = filter.plans.shown(selection.plan) {
        out.push(format!("plan: {plan}"));
    }
    let applied = std::iter::once(selection.rule).chain(limited.also.iter().copied());
    for index in applied {
        if let Some(limited) = filter.limited(index) {
            describe_limits(&filter.rules[index].name, limited, selection.plan, out);
        }
    }
}

fn describe_limits(name: &str, limited: &LimitedRule, plan: usize, out: &mut Vec<String>) {
    out.push(format!("limits of rule {name}:"));
    for (i, (limit, text)) in limited.limits.iter().zip(&limited.texts).enumerate() {
        let mut line = match limit.requests[plan] {
            0 => format!("  {}: no limit for this plan", text.name),
            n => format!(
                "  {}: {n} per {}",
                text.name,
                format_window(limit.window_ms)
            ),
        };
        if let Some(source) = limited.levels.source(i) {
            line += &format!("; the request may set it: {}", source.describe());
        }
        let costs = limited.costs.describe(i);
        if costs != "costs 1" {
            line += &format!("; {costs}");
        }
        if limited.is_candidate(i) {
            line += " (candidate: shadow, never refuses)";
        }
        out.push(line);
    }
}

/// The first request's headers, then requests within the same instant until one is refused.
fn simulate(filter: &Filter, request: &DescribedRequest, now_ms: u64, out: &mut Vec<String>) {
    let store = MemoryStore::new();
    match decide(filter, &store, request, now_ms).action {
        Action::Pass => return out.push("first request: passes, no headers".into()),
        Action::Refuse(reply) => {
            let line = format!(
                "first request: refused with {}: {}",
                reply.status, reply.body
            );
            return out.push(line);
        }
        Action::Allow(headers) => {
            out.push("first request: allowed, response headers:".into());
            out.extend(headers.iter().map(|(k, v)| format!("  {k}: {v}")));
        }
    }
    for n in 2..=SIMULATION_CAP {
        if let Action::Refuse(reply) = decide(filter, &store, request, now_ms).action {
            out.push(format!(
                "request {n} within the window: refused with status {}, headers:",
                reply.status
            ));
            out.extend(reply.headers.iter().map(|(k, v)| format!("  {k}: {v}")));
            out.push(format!("  body: {}", reply.body));
            return;
        }
    }
    out.push(format!(
        "no refusal within {SIMULATION_CAP} requests (not simulated further)"
    ));
}

/// The JSON Schema of the filter configuration, from the same types the filter parses.
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
        let config = Filter::load(
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

    #[test]
    fn explain_says_what_a_token_budget_holds_and_counts() {
        let config = Filter::load(
            br#"{"rules": [{"name": "llm", "counted": ["2xx"], "limits": [
                {"name": "tokens", "requests": 1000, "window": "1m", "unit": "tokens",
                 "cost": {"request": 100, "response": {"metadata": {"namespace": "llm", "key": "total_tokens"}, "max": 8000}}},
                {"name": "requests", "requests": 20, "window": "1m"}]}]}"#,
        )
        .unwrap();
        let text = explain(&config, &DescribedRequest::default(), 1_700_000_000_000);
        let tokens = "  tokens: 1000 per 1m; holds 100, then what the metadata llm/total_tokens says at the end of the stream (max 8000); counted only for 2xx";
        assert!(text.contains(tokens), "{text}");
        assert!(
            text.contains("  requests: 20 per 1m; costs 1; counted only for 2xx"),
            "{text}"
        );
    }

    #[test]
    fn explain_shows_which_selector_matched_and_the_key_parts() {
        let config = Filter::load(
            br#"{"rules": [{"name": "tools", "mode": "shadow",
                 "match": {"headers": [{"name": "x-model", "regex": "gpt-.*"}],
                           "metadata": [{"namespace": "mcp", "key": "method", "exact": "tools/call"}]},
                 "key": {"all": [{"header": "x-tenant"}, {"metadata": {"namespace": "mcp", "key": "tool"}}]},
                 "limits": [{"requests": 5, "window": "1m", "requests_from": {"header": "x-limit", "max": 9}},
                            {"name": "trial", "requests": 2, "window": "1m", "shadow": true}]}]}"#,
        )
        .unwrap();
        let mut request = DescribedRequest {
            method: "POST".into(),
            path: "/mcp".into(),
            client_ip: "192.0.2.1".into(),
            ..Default::default()
        };
        request.headers.insert("x-model".into(), "gpt-4o".into());
        request.headers.insert("x-tenant".into(), "acme".into());
        let at = ("mcp".to_string(), "method".to_string());
        request.metadata.insert(at, "tools/call".into());
        request
            .metadata
            .insert(("mcp".into(), "tool".into()), "search".into());
        let text = explain(&config, &request, 1_700_000_000_000);
        for line in [
            "mode: Shadow (this rule's own)",
            "  header x-model regex \"gpt-.*\": matched (value \"gpt-4o\")",
            "  metadata mcp/method exact \"tools/call\": matched (value \"tools/call\")",
            "  header x-tenant: \"acme\"",
            "  metadata mcp/tool: \"search\"",
            "key: Composite",
            "the request may set it: header x-limit (at most 9)",
            "trial: 2 per 1m (candidate: shadow, never refuses)",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        request.headers.insert("x-model".into(), "claude".into());
        let text = explain(&config, &request, 0);
        assert!(text.contains("rule: none matches"), "{text}");
        assert!(
            text.contains("header x-model regex \"gpt-.*\": did not match (value \"claude\")"),
            "{text}"
        );
    }
}
