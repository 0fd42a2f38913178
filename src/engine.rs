//! One request, start to finish, in plain Rust: pick the rule, find the key, ask the limiter,
//! and say what the host should do. The host layer only carries this out.

use crate::client_hash::{client_hash, display_hash, KeyKind};
use crate::client_key::{extract, RequestView};
use crate::config::MissingKeyPolicy;
use crate::limiter::{self, Decision, Verdict};
use crate::policy::{CompiledConfig, LimitedRule, Rule, RuleAction};
use crate::request_path::canonical_segments;
use crate::response::{self, Headers, LocalReply};
use crate::route_match::RouteFacts;
use crate::store::SharedStore;

/// What the host does with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Let it through and write nothing.
    Pass,
    /// Let it through and add these headers to the response.
    Allow(Headers),
    /// Answer locally.
    Refuse(LocalReply),
}

/// The action, and what led to it (for logs and metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    pub action: Action,
    pub rule: Option<String>,
    pub verdict: Option<Verdict>,
    /// The request would have been refused, but the filter is in shadow mode.
    pub shadow_refusal: bool,
    pub missing_key: bool,
}

impl Handled {
    fn pass(rule: Option<&Rule>) -> Self {
        Handled {
            action: Action::Pass,
            rule: rule.map(|r| r.name.clone()),
            verdict: None,
            shadow_refusal: false,
            missing_key: false,
        }
    }
}

/// The first rule whose match accepts the request.
pub fn select_rule<'a>(config: &'a CompiledConfig, request: &dyn RequestView) -> Option<&'a Rule> {
    let facts = RouteFacts {
        path: canonical_segments(&request.header(":path").unwrap_or_default()),
        method: if config.needs_method {
            request.header(":method")
        } else {
            None
        },
        authority: if config.needs_authority {
            request.header(":authority")
        } else {
            None
        },
        route_name: if config.needs_route_name {
            request.route_name()
        } else {
            None
        },
    };
    config
        .rules
        .iter()
        .find(|rule| rule.matcher.matches(&facts))
}

pub fn handle(
    config: &CompiledConfig,
    store: &dyn SharedStore,
    request: &dyn RequestView,
    now_ms: u64,
) -> Handled {
    if !config.enabled {
        return Handled::pass(None);
    }
    let Some(rule) = select_rule(config, request) else {
        return Handled::pass(None);
    };
    let RuleAction::Limit(limited) = &rule.action else {
        return Handled::pass(Some(rule));
    };
    let (kind, key) = match extract(&limited.key, request) {
        Some(found) => found,
        None => match limited.on_missing_key {
            MissingKeyPolicy::Shared => (KeyKind::Missing, Vec::new()),
            MissingKeyPolicy::Allow => {
                return Handled {
                    missing_key: true,
                    ..Handled::pass(Some(rule))
                };
            }
            MissingKeyPolicy::Deny => {
                let action = if config.shadow {
                    Action::Pass
                } else {
                    Action::Refuse(response::missing_key(&rule.name))
                };
                return Handled {
                    action,
                    missing_key: true,
                    ..Handled::pass(Some(rule))
                };
            }
        },
    };
    let client = client_hash(config.hash_seed, kind, &key);
    let decision = limiter::check(store, &limited.policy, &config.store, client, 1, now_ms);
    let mut handled = Handled {
        action: Action::Pass,
        rule: Some(rule.name.clone()),
        verdict: Some(decision.verdict),
        shadow_refusal: false,
        missing_key: kind == KeyKind::Missing,
    };
    handled.action = act(config, rule, limited, &decision, request);
    if !decision.allowed && config.shadow {
        handled.shadow_refusal = true;
    }
    if !decision.allowed || decision.verdict != Verdict::Admitted {
        log::info!(
            "ratelimit: rule={} client={} verdict={:?} allowed={} shadow={}",
            rule.name,
            display_hash(client),
            decision.verdict,
            decision.allowed,
            config.shadow
        );
    }
    handled
}

fn act(
    config: &CompiledConfig,
    rule: &Rule,
    limited: &LimitedRule,
    decision: &Decision,
    request: &dyn RequestView,
) -> Action {
    let response = &config.response;
    match (decision.verdict, decision.allowed) {
        (Verdict::Admitted, _) => {
            Action::Allow(response::rate_limit_headers(response, decision, false))
        }
        // Shadow mode reports the quota as it stands but never refuses.
        (Verdict::Refused, _) if config.shadow => {
            Action::Allow(response::rate_limit_headers(response, decision, false))
        }
        (Verdict::Refused, _) => {
            let request_id = if response.body.uses_request_id() {
                request
                    .header("x-request-id")
                    .map(|id| String::from_utf8_lossy(&id).into_owned())
            } else {
                None
            };
            Action::Refuse(response::refusal(
                response,
                decision,
                &limited.policy.limits,
                &rule.name,
                request_id,
            ))
        }
        // The store could not decide: the fail policy said allow, or shadow mode allows anyway.
        (_, true) => Action::Pass,
        (_, false) if config.shadow => Action::Pass,
        (_, false) => Action::Refuse(response::refusal_without_status(
            response,
            &limited.policy.limits,
            &rule.name,
            decision.now_ms,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_key::tests::FakeRequest;
    use crate::policy::load;
    use crate::store::MemoryStore;

    const T0: u64 = 1_700_000_000_000;

    const CONFIG: &str = r#"{
        "rules": [
            {"name": "health", "match": {"path": {"exact": "/healthz"}}, "exempt": true},
            {"name": "qr", "match": {"path": {"template": "/api/links/:id/qr"}},
             "key": [{"header": "x-api-key"}, {"client_ip": {}}],
             "limits": [{"name": "burst", "requests": 2, "window": "1s"}, {"name": "minute", "requests": 3, "window": "1m"}]},
            {"name": "api", "match": {"path": {"prefix": "/api"}},
             "key": [{"header": "x-api-key"}], "on_missing_key": "deny",
             "limits": [{"requests": 5, "window": "1m"}]}
        ]
    }"#;

    fn get(path: &str, headers: &[(&str, &str)]) -> FakeRequest {
        let mut all = vec![(":path", path), (":method", "GET")];
        all.extend_from_slice(headers);
        FakeRequest::with(&all)
    }

    #[test]
    fn exempt_and_unmatched_requests_pass_untouched() {
        let config = load(CONFIG.as_bytes()).unwrap();
        let store = MemoryStore::new();
        for _ in 0..100 {
            assert_eq!(
                handle(&config, &store, &get("/healthz", &[]), T0).action,
                Action::Pass
            );
            assert_eq!(
                handle(&config, &store, &get("/other", &[]), T0).action,
                Action::Pass
            );
        }
        assert!(store.keys().is_empty());
    }

    #[test]
    fn counts_down_then_refuses_with_the_documented_reply() {
        let config = load(CONFIG.as_bytes()).unwrap();
        let store = MemoryStore::new();
        let request = get("/api/links", &[("x-api-key", "k1")]);
        for left in (0..5).rev() {
            let Action::Allow(headers) = handle(&config, &store, &request, T0).action else {
                panic!()
            };
            assert_eq!(headers[0], ("x-ratelimit-limit", "5".to_string()));
            assert_eq!(headers[1], ("x-ratelimit-remaining", left.to_string()));
        }
        let Action::Refuse(reply) = handle(&config, &store, &request, T0 + 500).action else {
            panic!()
        };
        assert_eq!(reply.status, 429);
        // T0's 3 s sub-window began 2 s before T0; it leaves the window at T0 + 61 s.
        assert!(
            reply.headers.contains(&("retry-after", "61".to_string())),
            "{:?}",
            reply.headers
        );
        // Another key, and the same key on a path spelled differently, count separately/together.
        assert!(matches!(
            handle(
                &config,
                &store,
                &get("/api/links", &[("x-api-key", "k2")]),
                T0
            )
            .action,
            Action::Allow(_)
        ));
        assert!(matches!(
            handle(
                &config,
                &store,
                &get("//API/./links/", &[("x-api-key", "k1")]),
                T0
            )
            .action,
            Action::Refuse(_)
        ));
    }

    #[test]
    fn a_missing_key_gets_its_configured_behaviour() {
        let config = load(CONFIG.as_bytes()).unwrap();
        let store = MemoryStore::new();
        let handled = handle(&config, &store, &get("/api/links", &[]), T0);
        assert!(handled.missing_key);
        let Action::Refuse(reply) = handled.action else {
            panic!()
        };
        assert_eq!(reply.status, 401);
        // The template rule falls back to the client IP.
        let h = handle(&config, &store, &get("/api/links/abc/qr", &[]), T0);
        assert!(!h.missing_key);
        assert!(matches!(h.action, Action::Allow(_)));
    }

    #[test]
    fn several_limits_report_the_most_restrictive() {
        let config = load(CONFIG.as_bytes()).unwrap();
        let store = MemoryStore::new();
        let request = get("/api/links/abc/qr", &[("x-api-key", "k")]);
        let Action::Allow(h) = handle(&config, &store, &request, T0).action else {
            panic!()
        };
        assert_eq!(
            h[0].1, "2",
            "burst: 2 per second, 1 left; minute: 3, 2 left → burst is tighter"
        );
        assert_eq!(h[1].1, "1");
        let Action::Allow(h) = handle(&config, &store, &request, T0).action else {
            panic!()
        };
        assert_eq!((h[0].1.as_str(), h[1].1.as_str()), ("2", "0"));
        let Action::Refuse(r) = handle(&config, &store, &request, T0 + 10).action else {
            panic!()
        };
        assert!(r.body.contains("\"policy\":\"burst\""), "{}", r.body);
        let Action::Allow(h) = handle(&config, &store, &request, T0 + 2_000).action else {
            panic!()
        };
        assert_eq!(
            (h[0].1.as_str(), h[1].1.as_str()),
            ("3", "0"),
            "now the minute limit is the tightest"
        );
        let Action::Refuse(r) = handle(&config, &store, &request, T0 + 4_000).action else {
            panic!()
        };
        assert!(r.body.contains("\"policy\":\"minute\""), "{}", r.body);
    }

    #[test]
    fn shadow_mode_counts_and_reports_but_never_refuses() {
        let shadow = CONFIG.replacen('{', r#"{"mode": "shadow","#, 1);
        let config = load(shadow.as_bytes()).unwrap();
        let store = MemoryStore::new();
        let request = get("/api/x", &[("x-api-key", "k")]);
        for i in 0..10 {
            let handled = handle(&config, &store, &request, T0);
            let Action::Allow(h) = handled.action else {
                panic!("request {i} refused in shadow mode")
            };
            assert_eq!(handled.shadow_refusal, i >= 5);
            assert_eq!(
                h[1].1,
                if i < 5 {
                    (4 - i).to_string()
                } else {
                    "0".into()
                }
            );
        }
        assert_eq!(
            handle(&config, &store, &get("/api/x", &[]), T0).action,
            Action::Pass,
            "missing key: pass"
        );
    }

    #[test]
    fn a_disabled_filter_does_nothing() {
        let off = CONFIG.replacen('{', r#"{"enabled": false,"#, 1);
        let config = load(off.as_bytes()).unwrap();
        let store = MemoryStore::new();
        for _ in 0..10 {
            assert_eq!(
                handle(&config, &store, &get("/api/x", &[("x-api-key", "k")]), T0).action,
                Action::Pass
            );
        }
        assert!(store.keys().is_empty());
    }

    #[test]
    fn hostile_requests_have_defined_outcomes() {
        let config = load(CONFIG.as_bytes()).unwrap();
        let store = MemoryStore::new();
        let mut r = FakeRequest::with(&[]);
        r.headers
            .insert(":path".into(), b"/api/\xff\xfe?\x00".to_vec());
        r.headers.insert("x-api-key".into(), vec![0xff; 64 * 1024]);
        let h = handle(&config, &store, &r, T0);
        assert!(h.missing_key, "a 64 KiB key is no key");
        r.headers
            .insert("x-api-key".into(), b"\xff\xfe\x01".to_vec());
        assert!(matches!(
            handle(&config, &store, &r, T0).action,
            Action::Allow(_)
        ));
        r.headers.remove(":path");
        assert_eq!(
            handle(&config, &store, &r, T0).action,
            Action::Pass,
            "no path: no rule matches '/'"
        );
    }
}
