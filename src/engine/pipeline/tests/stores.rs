//! The pipeline against its stores: client keys never in clear, lost compare-and-swaps, full
//! pages, the memory of refusals, and a store that changes pages in place.

use super::*;

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
            client_page(&config, "sk_live_SECRET1"),
            client_page(&config, "sk_live_SECRET2")
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
    rule.pages.page(rule.limiter.page_of(hash)).to_string()
}

/// A store where every compare-and-swap loses.
pub(super) struct AlwaysLoses(pub(super) MemoryStore);

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
        let mut rng = crate::testing::Xorshift(0x2545_f491_4f6c_dd1d_u64);
        let mut next = |n: u64| rng.below(n);
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
    let mut rng = crate::testing::Xorshift(0x9e37_79b9_7f4a_7c15_u64);
    let mut next = |n: u64| rng.below(n);
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
