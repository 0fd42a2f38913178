//! The pipeline end to end, through `decide` and `begin` on the in-memory store.

use super::*;
use crate::config::ConfigErrors;
use crate::costs::Amounts;
use crate::engine::rule::RuleAction;
use crate::engine::stats::Stat;
use crate::fleet;
use crate::hash::client_hash;
use crate::response::Headers;
use crate::store::MemoryStore;
use crate::testing::{FakeRequest, InPlaceStore};

fn load(json: &[u8]) -> Result<Filter, ConfigErrors> {
    Filter::load(json)
}

fn handle(filter: &Filter, store: &MemoryStore, request: &FakeRequest, now: u64) -> Decision {
    decide(filter, store, request, now)
}

fn has(decision: &Decision, stat: Stat) -> bool {
    decision
        .events
        .iter()
        .any(|e| matches!(e, Event::Rule { stat: s, .. } if *s == stat))
}

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
        assert_eq!(headers[0], ("x-ratelimit-limit".into(), "5".into()));
        assert_eq!(
            headers[1],
            ("x-ratelimit-remaining".into(), left.to_string().into())
        );
    }
    let Action::Refuse(reply) = handle(&config, &store, &request, T0 + 500).action else {
        panic!()
    };
    assert_eq!(reply.status, 429);
    // T0's 3 s sub-window began 2 s before T0; it leaves the window at T0 + 61 s.
    assert!(
        reply.headers.contains(&("retry-after".into(), "61".into())),
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
    assert!(has(&handled, Stat::MissingKey));
    let Action::Refuse(reply) = handled.action else {
        panic!()
    };
    assert_eq!(reply.status, 401);
    // The template rule falls back to the client IP.
    let h = handle(&config, &store, &get("/api/links/abc/qr", &[]), T0);
    assert!(!has(&h, Stat::MissingKey));
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
        assert_eq!(has(&handled, Stat::ShadowRefused), i >= 5);
        let Action::Allow(h) = handled.action else {
            panic!("request {i} refused in shadow mode")
        };
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
    assert!(has(&h, Stat::MissingKey), "a 64 KiB key is no key");
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

const PLANS: &str = r#"{
    "plans": {"names": ["free", "pro", "business", "enterprise"], "default": "free",
              "header": "x-plan", "keys": {"static-pro-key": "pro"}},
    "rules": [
        {"name": "bulk", "match": {"path": {"prefix": "/bulk"}}, "key": [{"header": "x-api-key"}],
         "cost": {"header": "x-batch-size", "default": 1, "max": 10}, "also": ["general"],
         "limits": [{"name": "bulk_minute", "requests": 20, "window": "1m"}]},
        {"name": "general", "match": {"path": {"prefix": "/"}}, "key": [{"header": "x-api-key"}],
         "limits": [
            {"name": "minute", "window": "1m", "requests": {"free": 3, "pro": 5}, "code": "rate_limit_minute"},
            {"name": "second", "window": "1s", "requests": {"business": 2}}
         ]}
    ]
}"#;

fn outcome_of(
    config: &Filter,
    store: &MemoryStore,
    request: &FakeRequest,
) -> (u16, Headers, String) {
    match handle(config, store, request, T0).action {
        Action::Allow(h) => (200, h, String::new()),
        Action::Refuse(r) => (r.status as u16, r.headers, r.body),
        Action::Pass => (200, Headers::new(), String::new()),
    }
}

#[test]
fn plans_pick_the_limits() {
    let config = load(PLANS.as_bytes()).unwrap();
    let store = MemoryStore::new();
    let admitted = |headers: &[(&str, &str)]| {
        (0..10)
            .filter(|_| outcome_of(&config, &store, &get("/x", headers)).0 == 200)
            .count()
    };
    assert_eq!(
        admitted(&[("x-api-key", "free-1")]),
        3,
        "no plan header: the default plan"
    );
    assert_eq!(admitted(&[("x-api-key", "pro-1"), ("x-plan", "PRO")]), 5);
    assert_eq!(
        admitted(&[("x-api-key", "odd"), ("x-plan", "platinum")]),
        3,
        "unknown plan: default"
    );
    assert_eq!(
        admitted(&[("x-api-key", "static-pro-key"), ("x-plan", "free")]),
        5,
        "the static map wins"
    );
    assert_eq!(
        admitted(&[("x-api-key", "biz"), ("x-plan", "business")]),
        2,
        "business: 2 per second only"
    );
    assert_eq!(
        admitted(&[("x-api-key", "ent"), ("x-plan", "enterprise")]),
        10,
        "no limit at any level"
    );
    let (_, headers, _) = outcome_of(
        &config,
        &store,
        &get("/x", &[("x-api-key", "ent2"), ("x-plan", "enterprise")]),
    );
    assert!(headers.is_empty(), "an unlimited plan gets no headers");
}

#[test]
fn an_endpoint_rule_also_counts_against_the_general_limit() {
    let config = load(PLANS.as_bytes()).unwrap();
    let store = MemoryStore::new();
    let key = [("x-api-key", "k")];
    // Free plan: general 3/min. Two bulk requests, then one plain request: general exhausted.
    assert_eq!(outcome_of(&config, &store, &get("/bulk", &key)).0, 200);
    assert_eq!(outcome_of(&config, &store, &get("/bulk", &key)).0, 200);
    assert_eq!(outcome_of(&config, &store, &get("/x", &key)).0, 200);
    let (status, headers, body) = outcome_of(&config, &store, &get("/bulk", &key));
    assert_eq!(status, 429);
    assert!(body.contains("\"policy\":\"minute\""), "{body}");
    assert!(
        headers.contains(&("x-ratelimit-limit".into(), "3".into())),
        "{headers:?}"
    );
}

#[test]
fn a_request_refused_by_a_later_rule_consumes_nothing_in_earlier_ones() {
    let config = load(PLANS.as_bytes()).unwrap();
    let store = MemoryStore::new();
    let key = [("x-api-key", "k"), ("x-plan", "pro")];
    for _ in 0..5 {
        assert_eq!(outcome_of(&config, &store, &get("/x", &key)).0, 200);
    }
    // The general limit is exhausted: bulk requests are refused and refunded from bulk.
    for _ in 0..30 {
        assert_eq!(
            outcome_of(
                &config,
                &store,
                &get(
                    "/bulk",
                    &[
                        ("x-api-key", "k"),
                        ("x-plan", "pro"),
                        ("x-batch-size", "10")
                    ]
                )
            )
            .0,
            429
        );
    }
    // Upgrade to business (no minute limit, 2 per second): two seconds later bulk still has
    // its whole quota of 20, i.e. two requests of cost 10, and not a third.
    let business = get(
        "/bulk",
        &[
            ("x-api-key", "k"),
            ("x-plan", "business"),
            ("x-batch-size", "10"),
        ],
    );
    let later = T0 + 2_000;
    assert!(matches!(
        handle(&config, &store, &business, later).action,
        Action::Allow(_)
    ));
    assert!(matches!(
        handle(&config, &store, &business, later).action,
        Action::Allow(_)
    ));
    let Action::Refuse(reply) = handle(&config, &store, &business, later + 1_000).action else {
        panic!()
    };
    assert!(
        reply.body.contains("\"policy\":\"bulk_minute\""),
        "{}",
        reply.body
    );
}

#[test]
fn costs_come_from_the_request_within_bounds() {
    let config = load(PLANS.as_bytes()).unwrap();
    let RuleAction::Limit(bulk) = &config.rules[0].action else {
        panic!()
    };
    let cost = |v: &str| {
        let request = get("/bulk", &[("x-batch-size", v)]);
        bulk.costs.of(&Request::new(&request)).of(0)
    };
    assert_eq!(cost("4"), 4);
    assert_eq!(cost(" 7 "), 7);
    assert_eq!(cost("1000"), 10, "capped at max");
    for odd in ["0", "-3", "abc", "", "1e3", "99999999999999999999999"] {
        assert_eq!(cost(odd), 1, "{odd:?} falls back to the default");
    }
    let without = get("/bulk", &[]);
    assert_eq!(bulk.costs.of(&Request::new(&without)), Amounts::All(1));
}

/// The compiled configuration is shared by every worker thread of a native host.
#[test]
fn the_filter_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Filter>();
}

mod ambiguous;
mod batched;
mod fleet_tier;
mod grpc;
mod rollout;
mod selectors;
mod stores;
