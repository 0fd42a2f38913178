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

#[test]
fn client_keys_never_appear_in_shared_data() {
    let config = load(CONFIG.as_bytes()).unwrap();
    let store = MemoryStore::new();
    for key in ["sk_live_SECRET1", "sk_live_SECRET2"] {
        handle(&config, &store, &get("/api/x", &[("x-api-key", key)]), T0);
    }
    for name in store.keys() {
        assert!(!name.contains("SECRET"), "{name}");
        let (value, _) = store.get(&name);
        let value = value.unwrap();
        assert!(
            !value.windows(6).any(|w| w == b"SECRET"),
            "a value holds the key in clear"
        );
    }
    assert_eq!(
        store.keys(),
        vec![
            "ratelimit/v1/api/".to_string() + &(client_page(&config, "sk_live_SECRET1")),
            "ratelimit/v1/api/".to_string() + &(client_page(&config, "sk_live_SECRET2"))
        ]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
}

fn client_page(config: &Filter, key: &str) -> String {
    let RuleAction::Limit(rule) = &config.rules[2].action else {
        panic!()
    };
    let hash = client_hash(config.hash_seed, KeyKind::Header, key.as_bytes());
    rule.limiter.page_of(hash).to_string()
}

/// A store where every compare-and-swap loses.
struct AlwaysLoses(MemoryStore);

impl SharedStore for AlwaysLoses {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        let (v, cas) = self.0.get(key);
        (v, cas.or(Some(1)))
    }
    fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), crate::store::CasMismatch> {
        Err(crate::store::CasMismatch)
    }
}

#[test]
fn exhausted_retries_follow_the_contention_policy() {
    let store = AlwaysLoses(MemoryStore::new());
    let request = get("/api/x", &[("x-api-key", "k")]);
    let open = load(CONFIG.as_bytes()).unwrap();
    let decision = decide(&open, &store, &request, T0);
    assert!(has(&decision, Stat::Contention));
    assert_eq!(
        decision.action,
        Action::Pass,
        "on_contention: allow (the default)"
    );
    let closed = CONFIG.replacen(
        '{',
        r#"{"store": {"on_contention": "deny", "cas_attempts": 8},"#,
        1,
    );
    let closed = load(closed.as_bytes()).unwrap();
    let decision = decide(&closed, &store, &request, T0);
    assert!(has(&decision, Stat::Contention) && has(&decision, Stat::Refused));
    let Action::Refuse(reply) = decision.action else {
        panic!("on_contention: deny refuses")
    };
    // Honest: the store could not decide, so nothing is said of the client's limits.
    assert_eq!(reply.status, 503);
    assert!(
        reply.body.contains("\"error\":\"rate_limit_unavailable\""),
        "{}",
        reply.body
    );
    let names: Vec<&str> = reply.headers.iter().map(|(n, _)| &**n).collect();
    assert_eq!(names, ["retry-after", "content-type"]);
    assert_eq!(reply.headers[0].1, "1");
}

#[test]
fn a_capacity_refusal_says_so_and_follows_the_full_policy() {
    let tiny = |extra: &str| {
        let json = CONFIG.replacen(
            '{',
            &format!(r#"{{"store": {{"max_clients": 1, "slots_per_page": 1{extra}}},"#),
            1,
        );
        load(json.as_bytes()).unwrap()
    };
    let (closed, open) = (tiny(""), tiny(r#", "on_full": "allow""#));
    let store = MemoryStore::new();
    let first = get("/api/x", &[("x-api-key", "first")]);
    for _ in 0..5 {
        assert!(matches!(
            decide(&closed, &store, &first, T0).action,
            Action::Allow(_)
        ));
    }
    // "second" takes the only slot on its second request; "first"'s counts go into the
    // page's summary.
    let second = get("/api/x", &[("x-api-key", "second")]);
    let placed: Vec<Decision> = (0..2)
        .map(|_| decide(&closed, &store, &second, T0 + 1))
        .collect();
    assert!(has(&placed[0], Stat::DoorAdmitted));
    assert!(has(&placed[1], Stat::ClientEvicted));
    // "first" is still refused, through what the summary holds: a capacity refusal.
    let denied = decide(&closed, &store, &first, T0 + 2_000);
    assert!(has(&denied, Stat::CapacityRefused) && has(&denied, Stat::Refused));
    assert!(!denied
        .events
        .iter()
        .any(|e| matches!(e, Event::Limit { .. })));
    let Action::Refuse(reply) = denied.action else {
        panic!("on_full: deny refuses")
    };
    assert_eq!(reply.status, 429);
    assert!(
        reply.body.contains("\"error\":\"rate_limit_capacity\""),
        "{}",
        reply.body
    );
    let names: Vec<&str> = reply.headers.iter().map(|(n, _)| &**n).collect();
    let retry_after: u64 = reply.headers[0].1.parse().unwrap();
    assert!((58..=62).contains(&retry_after), "{retry_after}");
    assert_eq!(names, ["retry-after", "content-type"], "no limit headers");
    // on_full: allow lets it through, counted.
    let allowed = decide(&open, &store, &first, T0 + 2_000);
    assert!(has(&allowed, Stat::CapacityRefused) && has(&allowed, Stat::Allowed));
    assert!(matches!(allowed.action, Action::Allow(_)));
}

const FLEET: &str = r#"{
    "fleet": {"cluster": "rls", "sub_windows": 4, "lease": 3},
    "rules": [
        {"name": "api", "match": {"path": {"prefix": "/api"}}, "key": [{"header": "x-api-key"}],
         "limits": [{"name": "minute", "requests": 10, "window": "1m", "fleet": true},
                    {"name": "second", "requests": 5, "window": "1s"}]}
    ]
}"#;

/// Decides a request, answering its calls to the service with `service`; returns the
/// decision and the calls made.
fn serve(
    filter: &Filter,
    store: &MemoryStore,
    memory: &mut Memory,
    request: &FakeRequest,
    now: u64,
    service: &mut dyn FnMut(&FleetCall) -> fleet::Verdict,
) -> (Decision, Vec<FleetCall>) {
    let mut calls = Vec::new();
    let mut progress = begin(filter, store, memory, request, now);
    loop {
        match progress {
            Progress::Done(decision) => {
                // Side calls (lease refills) answered at once.
                for side in &decision.side_calls {
                    let verdict = service(side.call());
                    calls.push(side.call().clone());
                    side_answered(filter, memory, side, verdict, now);
                }
                return (decision, calls);
            }
            Progress::Waiting(waiting) => {
                let call = waiting.call.clone().expect("nothing else in flight");
                let verdict = service(&call);
                calls.push(call);
                progress = waiting.resume(filter, store, memory, request, verdict, now);
            }
        }
    }
}

#[test]
fn the_fleet_is_asked_only_after_the_local_tier_admits_and_leases_save_calls() {
    let filter = load(FLEET.as_bytes()).unwrap();
    let store = MemoryStore::new();
    let mut memory = Memory::default();
    let request = get("/api/x", &[("x-api-key", "k")]);
    let mut ok = |_: &FleetCall| fleet::Verdict::Admitted;
    let (first, calls) = serve(&filter, &store, &mut memory, &request, T0, &mut ok);
    assert!(matches!(first.action, Action::Allow(_)));
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].hits, 3, "a lease of 3");
    assert_eq!(calls[0].domain, "ratelimit.api");
    assert_eq!(
        calls[0].descriptors.len(),
        5,
        "N+1 spans of the one fleet limit"
    );
    assert!(has(&first, Stat::FleetAdmitted));
    // 1 hit left of the 3 granted, under half: the lease is refilled ahead, by a side call the
    // request does not wait for.
    let (d, calls) = serve(&filter, &store, &mut memory, &request, T0 + 1, &mut ok);
    assert!(has(&d, Stat::FleetLeased) && matches!(d.action, Action::Allow(_)));
    assert_eq!(d.side_calls.len(), 1, "refilled ahead");
    assert_eq!(calls.iter().map(|c| c.hits).collect::<Vec<_>>(), [3]);
    for t in [2, 3] {
        let (d, calls) = serve(&filter, &store, &mut memory, &request, T0 + t, &mut ok);
        assert!(
            calls.is_empty() && has(&d, Stat::FleetLeased),
            "the lease covers it"
        );
    }
    let (d, calls) = serve(&filter, &store, &mut memory, &request, T0 + 4, &mut ok);
    assert!(
        has(&d, Stat::FleetLeased) && calls.len() == 1,
        "refilled again"
    );
    // The local per-second limit (5) refuses before the fleet is asked.
    let (local, calls) = serve(&filter, &store, &mut memory, &request, T0 + 5, &mut ok);
    assert!(calls.is_empty() && matches!(local.action, Action::Refuse(_)));
}

#[test]
fn a_fleet_refusal_is_a_refusal_with_the_same_contract_and_is_remembered() {
    let filter = load(FLEET.as_bytes()).unwrap();
    let store = MemoryStore::new();
    let mut memory = Memory::default();
    let request = get("/api/x", &[("x-api-key", "k")]);
    let mut over = |_: &FleetCall| fleet::Verdict::OverLimit;
    let (refused, calls) = serve(&filter, &store, &mut memory, &request, T0, &mut over);
    assert_eq!(
        calls.iter().map(|c| c.hits).collect::<Vec<_>>(),
        [3, 1],
        "a lease, then the request alone"
    );
    let Action::Refuse(reply) = &refused.action else {
        panic!("{:?}", refused.action)
    };
    assert_eq!(reply.status, 429);
    assert!(
        reply.body.contains("\"policy\":\"minute\""),
        "{}",
        reply.body
    );
    let header = |name: &str| {
        reply
            .headers
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("x-ratelimit-remaining").as_deref(), Some("0"));
    // Conservative: everything counted up to now has left every span (1m in 4: 15 s spans).
    let retry: u64 = header("retry-after").unwrap().parse().unwrap();
    assert!((60..=76).contains(&retry), "{retry}");
    assert!(has(&refused, Stat::FleetRefused) && has(&refused, Stat::Refused));
    // Nothing was taken locally: the local tier still has its whole quota.
    let mut ok = |_: &FleetCall| fleet::Verdict::Admitted;
    let other = get("/api/x", &[("x-api-key", "k")]);
    // Remembered until the sub-window ends: no call.
    let (again, calls) = serve(&filter, &store, &mut memory, &other, T0 + 10, &mut ok);
    assert!(calls.is_empty() && matches!(again.action, Action::Refuse(_)));
    // The next 15 s sub-window asks again; the local second-limit is untouched (5 left).
    let later = T0 - T0 % 15_000 + 15_000;
    let (d, calls) = serve(&filter, &store, &mut memory, &other, later, &mut ok);
    assert_eq!(calls.len(), 1);
    let Action::Allow(h) = d.action else { panic!() };
    assert!(
        h.iter()
            .any(|(k, v)| &**k == "x-ratelimit-remaining" && v == "4"),
        "{h:?}"
    );
}

#[test]
fn a_failing_service_follows_on_error() {
    let request = get("/api/x", &[("x-api-key", "k")]);
    let mut fail = |_: &FleetCall| fleet::Verdict::Failed;
    for (policy, expect_status, counts_locally) in [
        ("local", None, true),
        ("allow", None, false),
        ("deny", Some(503), false),
    ] {
        let json = FLEET.replace(
            r#""lease": 3"#,
            &format!(r#""lease": 1, "on_error": "{policy}""#),
        );
        let filter = load(json.as_bytes()).unwrap();
        let store = MemoryStore::new();
        let mut memory = Memory::default();
        let (d, _) = serve(&filter, &store, &mut memory, &request, T0, &mut fail);
        assert!(has(&d, Stat::FleetFailed));
        match (&d.action, expect_status) {
            (Action::Refuse(reply), Some(status)) => {
                assert_eq!(reply.status, status, "{policy}");
                assert!(reply.body.contains("rate_limit_unavailable"));
            }
            (Action::Allow(_), None) => {}
            (other, _) => panic!("{policy}: {other:?}"),
        }
        // What the local tier counted: a second request sees 3 or 4 of 5 left per second.
        let mut ok = |_: &FleetCall| fleet::Verdict::Admitted;
        let (d, _) = serve(&filter, &store, &mut memory, &request, T0, &mut ok);
        let Action::Allow(h) = d.action else { panic!() };
        let left = if counts_locally { "3" } else { "4" };
        assert!(
            h.iter()
                .any(|(k, v)| &**k == "x-ratelimit-remaining" && v == left),
            "{policy}: {h:?}"
        );
    }
}

#[test]
fn fleet_limits_need_a_service() {
    let json = FLEET.replace(
        r#""fleet": {"cluster": "rls", "sub_windows": 4, "lease": 3},"#,
        "",
    );
    let Err(errors) = load(json.as_bytes()) else {
        panic!()
    };
    assert_eq!(errors.0[0].path, "$.rules[0].limits[0].fleet");
    let fixed = FLEET.replace(r#""lease": 3"#, r#""lease": 3, "counting": "fixed""#);
    let Err(errors) = load(fixed.as_bytes()) else {
        panic!()
    };
    assert_eq!(errors.0[0].path, "$.fleet.lease");
}

#[test]
fn requests_of_a_client_whose_call_is_in_flight_wait_for_it() {
    let filter = load(FLEET.as_bytes()).unwrap();
    let store = MemoryStore::new();
    let mut memory = Memory::default();
    let request = get("/api/x", &[("x-api-key", "k")]);
    let Progress::Waiting(first) = begin(&filter, &store, &mut memory, &request, T0) else {
        panic!("the first request calls")
    };
    assert!(first.call.is_some());
    let mut joiners = Vec::new();
    for _ in 0..3 {
        let Progress::Waiting(w) = begin(&filter, &store, &mut memory, &request, T0) else {
            panic!()
        };
        assert!(w.call.is_none(), "one call in flight per client");
        assert_eq!(w.client(), first.client());
        joiners.push(w);
    }
    assert_eq!(first.call.as_ref().unwrap().hits, 3, "the lease");
    let admitted = fleet::Verdict::Admitted;
    let Progress::Done(d) = first.resume(&filter, &store, &mut memory, &request, admitted, T0)
    else {
        panic!()
    };
    assert!(matches!(d.action, Action::Allow(_)));
    let mut joiners = joiners.into_iter();
    let mut refills = Vec::new();
    for w in joiners.by_ref().take(2) {
        let Progress::Done(d) = w.resume(&filter, &store, &mut memory, &request, admitted, T0)
        else {
            panic!("the lease's two spare hits cover two waiting requests")
        };
        assert!(matches!(d.action, Action::Allow(_)) && has(&d, Stat::FleetLeased));
        refills.extend(d.side_calls);
    }
    assert_eq!(
        refills.len(),
        1,
        "the first one under half a grant refills it, once"
    );
    let third = joiners.next().unwrap();
    let Progress::Waiting(next) =
        third.resume(&filter, &store, &mut memory, &request, admitted, T0)
    else {
        panic!("the lease is spent")
    };
    assert!(
        next.call.is_none(),
        "the refill the first joiner asked for is in flight: it waits for that"
    );
    side_answered(&filter, &mut memory, &refills[0], admitted, T0);
    let Progress::Done(d) = next.resume(&filter, &store, &mut memory, &request, admitted, T0)
    else {
        panic!("the refill covers it")
    };
    assert!(matches!(d.action, Action::Allow(_)) && has(&d, Stat::FleetLeased));
    // A refusal answers every waiting request too.
    let other = get("/api/x", &[("x-api-key", "k2")]);
    let Progress::Waiting(lead) = begin(&filter, &store, &mut memory, &other, T0) else {
        panic!()
    };
    let Progress::Waiting(join) = begin(&filter, &store, &mut memory, &other, T0) else {
        panic!()
    };
    let over = fleet::Verdict::OverLimit;
    let Progress::Waiting(retry) = lead.resume(&filter, &store, &mut memory, &other, over, T0)
    else {
        panic!("a lease that did not fit is asked again for the request alone")
    };
    assert_eq!(retry.call.as_ref().unwrap().hits, 1);
    assert!(matches!(
        retry.resume(&filter, &store, &mut memory, &other, over, T0),
        Progress::Done(_)
    ));

    let Progress::Done(d) = join.resume(&filter, &store, &mut memory, &other, over, T0) else {
        panic!()
    };
    assert!(matches!(d.action, Action::Refuse(_)));
}

/// The memory of refusals changes no reply: the same traffic decided with one worker's
/// memory and without any (a fresh memory per request, each against its own store) gets the
/// same action every time, in every header style, with plans, costs and `also` rules.
#[test]
fn remembered_refusals_change_no_reply() {
    const MEMORY_CONFIG: &str = r#"{
        "plans": {"names": ["free", "pro"], "default": "free", PLAN_SOURCE},
        "response": {"headers": {"style": "STYLE"}, "body": {"m": "{{message}}", "r": "{{remaining}}", "v": "{{violated_policies}}", "at": "{{reset_iso}}"}},
        "rules": [
            {"name": "a", "match": {"path": {"prefix": "/a"}}, "key": [{"header": "x-api-key"}],
             "also": ["c"], "limits": [{"requests": 3, "window": "10s"}]},
            {"name": "b", "match": {"path": {"prefix": "/b"}}, "key": [{"header": "x-api-key"}],
             "cost": {"header": "x-cost", "max": 3},
             "limits": [{"requests": {"free": 4, "pro": 8}, "window": "5s"},
                        {"requests": {"free": 10, "pro": 0}, "window": "30s"}]},
            {"name": "c", "match": {"path": {"prefix": "/c"}}, "key": [{"header": "x-api-key"}],
             "limits": [{"requests": 5, "window": "20s"}, {"requests": 9, "window": "1m"}]}
        ]}"#;
    let mut recalled = 0;
    let plan_sources = [
        // A client's plan from a header may change between its requests: rule b's levels
        // differ by plan, so b remembers nothing.
        (r#""header": "x-plan""#, [false, false, true]),
        (r#""keys": {"k1": "pro", "k3": "pro"}"#, [false, true, true]),
    ];
    let styles = [
        "x_rate_limit",
        "ietf_draft06",
        "ietf_draft11",
        "envoy_draft03",
    ];
    for (style, (source, flags)) in styles.iter().flat_map(|s| plan_sources.map(|p| (s, p))) {
        let json = MEMORY_CONFIG.replace("STYLE", style);
        let filter = load(json.replace("PLAN_SOURCE", source).as_bytes()).unwrap();
        let lasting: Vec<bool> = (0..3)
            .map(|r| filter.limited(r).unwrap().refusals_last)
            .collect();
        assert_eq!(lasting, flags, "a names c, so only c comes last");
        let (remembering, fresh) = (MemoryStore::new(), MemoryStore::new());
        let mut memory = Memory::default();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut now = T0;
        for _ in 0..6_000 {
            now += next(700);
            let path = ["/a", "/b", "/c"][next(3) as usize];
            let key = format!("k{}", next(4));
            let plan = ["free", "pro"][next(2) as usize];
            let cost = (1 + next(4) / 3).to_string(); // mostly 1, sometimes 2
            let headers = [
                ("x-api-key", key.as_str()),
                ("x-plan", plan),
                ("x-cost", &cost),
            ];
            let request = get(path, &headers);
            let with = match begin(&filter, &remembering, &mut memory, &request, now) {
                Progress::Done(decision) => decision,
                Progress::Waiting(_) => panic!("no fleet-wide limit"),
            };
            let without = decide(&filter, &fresh, &request, now);
            assert_eq!(
                with.action, without.action,
                "{style} {path} {headers:?} at {now}"
            );
            recalled += usize::from(has(&with, Stat::RefusalRecalled));
        }
    }
    assert!(recalled > 1_000, "the memory answered {recalled} refusals");
}

/// A store that changes pages in place (a native store's way) decides every request as the
/// compare-and-swap store does: the same traffic through both, with eviction, the summary,
/// `also` rules and costs, gets the same action every time.
#[test]
fn an_in_place_store_decides_alike() {
    let json = r#"{
        "store": {"max_clients": 8, "slots_per_page": 2},
        "rules": [
            {"name": "a", "match": {"path": {"prefix": "/a"}}, "key": [{"header": "x-api-key"}],
             "also": ["c"], "cost": {"header": "x-cost", "max": 3},
             "limits": [{"requests": 3, "window": "10s"}]},
            {"name": "c", "match": {"path": {"prefix": "/c"}}, "key": [{"header": "x-api-key"}],
             "limits": [{"requests": 5, "window": "20s"}, {"requests": 9, "window": "1m"}]}
        ]}"#;
    let filter = load(json.as_bytes()).unwrap();
    let (cas, in_place) = (MemoryStore::new(), InPlaceStore::default());
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let (mut now, mut refused) = (T0, 0);
    for _ in 0..20_000 {
        now += next(300);
        let path = ["/a", "/c"][next(2) as usize];
        let key = format!("k{}", next(40));
        let cost = (1 + next(5) / 4).to_string();
        let request = get(path, &[("x-api-key", &key), ("x-cost", &cost)]);
        let (a, b) = (
            decide(&filter, &cas, &request, now),
            decide(&filter, &in_place, &request, now),
        );
        assert_eq!(a.action, b.action, "{path} {key} at {now}");
        assert_eq!(a.events, b.events, "{path} {key} at {now}");
        refused += usize::from(matches!(a.action, Action::Refuse(_)));
    }
    assert!(
        refused > 1_000,
        "the traffic is refused often enough to compare: {refused}"
    );
}

/// The compiled configuration is shared by every worker thread of a native host.
#[test]
fn the_filter_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Filter>();
}

mod ambiguous;
mod batched;
mod grpc;
mod rollout;
mod selectors;
