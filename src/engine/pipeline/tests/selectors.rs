//! Choosing requests and keying them like a gateway: header, query, address-range, metadata and
//! filter-state selectors; composite, shared and computed keys; plans and levels from values
//! other filters computed.

use super::*;
use crate::request::Computed;

/// The statuses of `n` requests through `filter`: 200 for let through, else the reply's status.
fn statuses(filter: &Filter, store: &MemoryStore, request: &FakeRequest, n: usize) -> Vec<u32> {
    (0..n)
        .map(|_| match handle(filter, store, request, T0).action {
            Action::Refuse(reply) => reply.status,
            _ => 200,
        })
        .collect()
}

fn header_value(decision: &Decision, name: &str) -> Option<String> {
    let headers = match &decision.action {
        Action::Allow(h) => h,
        Action::Refuse(r) => &r.headers,
        Action::Pass => return None,
    };
    headers
        .iter()
        .find(|(k, _)| &**k == name)
        .map(|(_, v)| v.to_string())
}

fn errors_of(json: &str) -> Vec<String> {
    match load(json.as_bytes()) {
        Ok(_) => vec![],
        Err(ConfigErrors(list)) => list.iter().map(|e| e.to_string()).collect(),
    }
}

/// Envoy Gateway's header cases: every header must match (exact, regular expression, prefix,
/// presence, each with `invert`).
#[test]
fn header_selectors_are_anded_and_invertible() {
    let filter = load(
        br#"{"rules": [{"name": "org", "key": "shared",
            "match": {"headers": [{"name": "X-User-Id", "exact": "one"},
                                  {"name": "x-user-org", "regex": "acme|umbrella"},
                                  {"name": "x-debug", "present": false},
                                  {"name": "x-org-id", "prefix": "test", "invert": true}]},
            "limits": [{"requests": 3, "window": "1h"}]}]}"#,
    )
    .unwrap();
    let store = MemoryStore::new();
    let both = get("/get", &[("x-user-id", "one"), ("x-user-org", "acme")]);
    assert_eq!(statuses(&filter, &store, &both, 4), [200, 200, 200, 429]);
    let cases: [&[(&str, &str)]; 6] = [
        &[("x-user-id", "one")],
        &[("x-user-id", "one"), ("x-user-org", "acmex")],
        &[("x-user-id", "One"), ("x-user-org", "acme")],
        &[
            ("x-user-id", "one"),
            ("x-user-org", "acme"),
            ("x-debug", "1"),
        ],
        &[
            ("x-user-id", "one"),
            ("x-user-org", "acme"),
            ("x-org-id", "test-1"),
        ],
        &[("x-user-org", "umbrella")],
    ];
    for headers in cases {
        let other = get("/get", headers);
        assert_eq!(
            handle(&filter, &store, &other, T0).action,
            Action::Pass,
            "{headers:?}"
        );
    }
    // The inverted prefix matches another value, and no value at all.
    let other_org = get(
        "/get",
        &[
            ("x-user-id", "one"),
            ("x-user-org", "umbrella"),
            ("x-org-id", "prod"),
        ],
    );
    assert_eq!(
        statuses(&filter, &store, &other_org, 1),
        [429],
        "the same shared bucket"
    );
}

#[test]
fn query_parameter_selectors() {
    let filter = load(
        br#"{"rules": [{"name": "alice", "key": "shared",
            "match": {"query_params": [{"name": "user", "exact": "alice"}, {"name": "debug", "present": false}]},
            "limits": [{"requests": 3, "window": "1h"}]}]}"#,
    )
    .unwrap();
    let store = MemoryStore::new();
    let alice = get("/get?user=alice&x=1", &[]);
    assert_eq!(statuses(&filter, &store, &alice, 4), [200, 200, 200, 429]);
    for path in [
        "/get?name=bob",
        "/get?user=bob",
        "/get?user=alice&debug",
        "/get",
    ] {
        assert_eq!(
            handle(&filter, &store, &get(path, &[]), T0).action,
            Action::Pass,
            "{path}"
        );
    }
    let encoded = get("/get?us%65r=al%69ce", &[]);
    assert_eq!(
        statuses(&filter, &store, &encoded, 1),
        [429],
        "percent-decoded"
    );
}

/// One bucket for a whole range (Envoy Gateway's `Exact`) or one per address (`Distinct`); a
/// range can also exempt (`invert`); IPv4 and IPv6; the address trusted hops in.
#[test]
fn source_ranges_select_and_key() {
    let filter = load(
        br#"{"rules": [
            {"name": "office", "match": {"source_cidr": {"cidrs": ["10.0.0.0/8", "2001:db8::/32"]}},
             "key": "shared", "limits": [{"requests": 2, "window": "1m"}]},
            {"name": "proxied", "match": {"source_cidr": {"cidrs": ["203.0.113.0/24"], "trusted_hops": 1}},
             "key": [{"client_ip": {"trusted_hops": 1}}], "limits": [{"requests": 1, "window": "1m"}]},
            {"name": "others", "match": {"source_cidr": {"cidrs": ["192.168.0.0/16"], "invert": true}},
             "limits": [{"requests": 5, "window": "1m"}]}
        ]}"#,
    )
    .unwrap();
    let store = MemoryStore::new();
    let from = |source: &str, xff: Option<&str>| {
        let mut r = get(
            "/x",
            &xff.map(|x| [("x-forwarded-for", x)]).unwrap_or_default(),
        );
        r.source = Some(source.as_bytes().to_vec());
        r
    };
    let rule_of = |r: &FakeRequest| Selection::of(&filter, &Request::new(r)).map(|s| s.rule);
    assert_eq!(rule_of(&from("10.1.2.3:5000", None)), Some(0));
    assert_eq!(rule_of(&from("[2001:db8::7]:5000", None)), Some(0));
    assert_eq!(
        rule_of(&from("192.168.1.1:5000", None)),
        None,
        "exempt by invert"
    );
    assert_eq!(rule_of(&from("192.0.2.1:5000", None)), Some(2));
    assert_eq!(
        rule_of(&from("192.168.1.1:5000", Some("203.0.113.5"))),
        Some(1)
    );
    // One bucket for the whole office range.
    assert_eq!(
        statuses(&filter, &store, &from("10.1.2.3:1", None), 1),
        [200]
    );
    assert_eq!(
        statuses(&filter, &store, &from("[2001:db8::9]:1", None), 2),
        [200, 429]
    );
    // One bucket per address behind the trusted proxy.
    let a = from("192.168.1.1:1", Some("203.0.113.5"));
    let b = from("192.168.1.1:1", Some("203.0.113.6"));
    assert_eq!(statuses(&filter, &store, &a, 2), [200, 429]);
    assert_eq!(statuses(&filter, &store, &b, 1), [200]);
}

/// Values other filters computed, as selectors, key sources and plan sources: a JWT claim from
/// `jwt_authn`'s metadata, a tool name, a tenant in filter state.
#[test]
fn metadata_and_filter_state_select_key_and_plan() {
    let filter = load(
        br#"{"plans": {"names": ["free", "gold"], "default": "free",
                       "metadata": {"namespace": "envoy.filters.http.jwt_authn", "key": "jwt_payload", "path": ["org", "tier"]}},
             "rules": [{"name": "tools", "match": {
                    "metadata": [{"namespace": "mcp", "key": "method", "exact": "tools/call"}],
                    "filter_state": [{"key": "tenant.id", "present": true}]},
                 "key": {"all": [{"metadata": {"namespace": "envoy.filters.http.jwt_authn", "key": "jwt_payload", "path": ["sub"]}},
                                 {"metadata": {"namespace": "mcp", "key": "tool"}}]},
                 "limits": [{"requests": {"free": 1, "gold": 3}, "window": "1m"}]}]}"#,
    )
    .unwrap();
    let store = MemoryStore::new();
    let call = |sub: &str, tier: &str, tool: &str| {
        let mut r = get("/mcp", &[])
            .metadata("mcp/method", Computed::Text(b"tools/call".to_vec()))
            .metadata("mcp/tool", Computed::Text(tool.as_bytes().to_vec()))
            .metadata(
                "envoy.filters.http.jwt_authn/jwt_payload.sub",
                Computed::Text(sub.into()),
            )
            .metadata(
                "envoy.filters.http.jwt_authn/jwt_payload.org.tier",
                Computed::Text(tier.into()),
            );
        r.filter_state.insert("tenant.id".into(), b"t-1".to_vec());
        r
    };
    assert_eq!(
        statuses(&filter, &store, &call("ann", "free", "search"), 2),
        [200, 429]
    );
    assert_eq!(
        statuses(&filter, &store, &call("ann", "free", "fetch"), 1),
        [200],
        "another tool"
    );
    assert_eq!(
        statuses(&filter, &store, &call("bob", "gold", "search"), 4),
        [200, 200, 200, 429]
    );
    let mut no_tenant = call("cat", "free", "search");
    no_tenant.filter_state.clear();
    assert_eq!(handle(&filter, &store, &no_tenant, T0).action, Action::Pass);
    let listing = call("cat", "free", "search")
        .metadata("mcp/method", Computed::Text(b"tools/list".to_vec()));
    assert_eq!(handle(&filter, &store, &listing, T0).action, Action::Pass);
    // A number compares by its decimal text.
    let numeric = load(
        br#"{"rules": [{"name": "n", "key": "shared", "match": {"metadata": [{"namespace": "a", "key": "b", "exact": "5"}]},
             "limits": [{"requests": 1, "window": "1m"}]}]}"#,
    )
    .unwrap();
    let five = get("/", &[]).metadata("a/b", Computed::Number(5.0));
    assert_eq!(statuses(&numeric, &store, &five, 2), [200, 429]);
}

/// One counter per combination; a part missing is a missing key.
#[test]
fn composite_keys_count_each_combination() {
    let filter = load(
        br#"{"rules": [{"name": "per_tenant_model",
            "key": {"all": [{"header": "x-tenant"}, {"header": "x-model"}]}, "on_missing_key": "allow",
            "limits": [{"requests": 2, "window": "1m"}]}]}"#,
    )
    .unwrap();
    let store = MemoryStore::new();
    let pair = |t: &str, m: &str| get("/", &[("x-tenant", t), ("x-model", m)]);
    assert_eq!(
        statuses(&filter, &store, &pair("a", "gpt"), 3),
        [200, 200, 429]
    );
    assert_eq!(statuses(&filter, &store, &pair("a", "claude"), 1), [200]);
    assert_eq!(statuses(&filter, &store, &pair("b", "gpt"), 1), [200]);
    // "ab" + "c" is not "a" + "bc".
    assert_eq!(statuses(&filter, &store, &pair("ab", "c"), 2), [200, 200]);
    assert_eq!(statuses(&filter, &store, &pair("a", "bc"), 2), [200, 200]);
    let half = get("/", &[("x-tenant", "a")]);
    let missing = handle(&filter, &store, &half, T0);
    assert!(has(&missing, Stat::MissingKey));
    assert_eq!(missing.action, Action::Pass, "on_missing_key: allow");
}

/// One bucket for every request of a rule, and per-route counters from the route name.
#[test]
fn shared_and_per_route_buckets() {
    let filter = load(
        br#"{"rules": [
            {"name": "all", "match": {"path": {"prefix": "/all"}}, "key": "shared", "limits": [{"requests": 2, "window": "1m"}]},
            {"name": "routes", "key": {"all": [{"header": "x-user"}, {"route_name": {}}]}, "limits": [{"requests": 1, "window": "1m"}]}
        ]}"#,
    )
    .unwrap();
    let store = MemoryStore::new();
    assert_eq!(
        statuses(&filter, &store, &get("/all", &[("x-api-key", "a")]), 1),
        [200]
    );
    assert_eq!(
        statuses(&filter, &store, &get("/all", &[("x-api-key", "b")]), 2),
        [200, 429]
    );
    let on_route = |route: &str| {
        let mut r = get("/x", &[("x-user", "u")]);
        r.route = Some(route.as_bytes().to_vec());
        r
    };
    assert_eq!(statuses(&filter, &store, &on_route("foo"), 2), [200, 429]);
    assert_eq!(
        statuses(&filter, &store, &on_route("bar"), 1),
        [200],
        "each route counts alone"
    );
}

/// A per-tenant limit from a trusted source, bounded by its maximum, the plan's level otherwise;
/// the headers and the body tell the level that applied.
#[test]
fn levels_from_a_trusted_source() {
    let filter = load(
        br#"{"rules": [{"name": "t", "key": [{"header": "x-tenant"}],
            "limits": [{"requests": 2, "window": "1m", "requests_from": {"header": "x-tenant-limit", "max": 5}}]}]}"#,
    )
    .unwrap();
    assert!(
        !filter.limited(0).unwrap().refusals_last,
        "levels may change between requests"
    );
    let store = MemoryStore::new();
    let tenant = |t: &str, limit: Option<&str>| {
        let mut headers = vec![("x-tenant", t)];
        headers.extend(limit.map(|l| ("x-tenant-limit", l)));
        get("/", &headers)
    };
    assert_eq!(
        statuses(&filter, &store, &tenant("a", Some("4")), 5),
        [200, 200, 200, 200, 429]
    );
    assert_eq!(
        statuses(&filter, &store, &tenant("b", Some("1000")), 6),
        [200, 200, 200, 200, 200, 429]
    );
    assert_eq!(
        statuses(&filter, &store, &tenant("c", None), 3),
        [200, 200, 429],
        "the default"
    );
    assert_eq!(
        statuses(&filter, &store, &tenant("d", Some("zero")), 3),
        [200, 200, 429]
    );
    let refused = handle(&filter, &store, &tenant("a", Some("4")), T0);
    assert_eq!(
        header_value(&refused, "x-ratelimit-limit").as_deref(),
        Some("4")
    );
    let Action::Refuse(reply) = refused.action else {
        panic!()
    };
    assert!(reply.body.contains("\"limit\":4"), "{}", reply.body);
    // From metadata too.
    let from_metadata = load(
        br#"{"rules": [{"name": "t", "key": "shared",
            "limits": [{"requests": 1, "window": "1m", "requests_from": {"metadata": {"namespace": "ext_authz", "key": "limit"}, "max": 100}}]}]}"#,
    )
    .unwrap();
    let request = get("/", &[]).metadata("ext_authz/limit", Computed::Number(3.0));
    assert_eq!(
        statuses(&from_metadata, &MemoryStore::new(), &request, 4),
        [200, 200, 200, 429]
    );
}

#[test]
fn every_bad_selector_is_named_by_its_path() {
    let e = errors_of(
        r#"{"response": {"status_header": "bad header"},
            "plans": {"names": ["a"], "default": "a", "metadata": {"namespace": "", "key": "k"}},
            "rules": [{"name": "r",
            "match": {"headers": [{"name": "x", "regex": "(unclosed"}, {"name": "y", "exact": "1", "prefix": "2"}, {"name": "bad name", "present": true}],
                      "query_params": [{"name": "", "exact": "1"}],
                      "source_cidr": {"cidrs": ["10.0.0.0/33", "10.1.0.0/8"], "trusted_hops": 99},
                      "metadata": [{"namespace": "n", "key": "k", "path": [""], "exact": "v"}],
                      "filter_state": [{"key": "", "present": true}]},
            "key": {"all": []},
            "limits": [{"requests": 1, "window": "1m", "requests_from": {"max": 0}},
                       {"requests": 1, "window": "1h", "fleet": true, "requests_from": {"header": "x-l", "max": 5}}]}]}"#,
    );
    let expected = [
        "$.response.status_header: ",
        "$.plans.metadata.namespace: ",
        "$.rules[0].match.headers[0].regex: not a regular expression",
        "$.rules[0].match.headers[1]: give exactly one of",
        "$.rules[0].match.headers[2].name: ",
        "$.rules[0].match.query_params[0].name: ",
        "$.rules[0].match.source_cidr.trusted_hops: ",
        "$.rules[0].match.source_cidr.cidrs[0]: ",
        "$.rules[0].match.source_cidr.cidrs[1]: ",
        "$.rules[0].match.metadata[0].path[0]: ",
        "$.rules[0].match.filter_state[0].key: ",
        "$.rules[0].key.all: needs at least one source",
        "$.rules[0].limits[0].requests_from.max: ",
        "$.rules[0].limits[0].requests_from: give exactly one of",
        "$.rules[0].limits[1].requests_from: a level from the request cannot be fleet-wide",
        "$.rules[0].limits[1].fleet: ",
    ];
    crate::testing::assert_each_error_once(&e, &expected);
    let shapes = errors_of(
        r#"{"rules": [{"name": "r", "key": "everyone", "limits": [{"requests": 1, "window": 1}]}]}"#,
    );
    assert!(
        shapes[0].starts_with("$.rules[0].key: unknown variant `everyone`"),
        "{shapes:?}"
    );
}

/// Reading every header at once decides as reading them one by one: the same requests, with
/// selectors, composite keys, costs and plans from headers, through both.
#[test]
fn all_headers_at_once_decide_as_one_by_one() {
    let json = r#"{"plans": {"names": ["free", "pro"], "default": "free", "header": "x-plan"},
        "rules": [{"name": "r", "match": {"headers": [{"name": "x-tier", "exact": "gold", "invert": true}]},
                   "key": {"all": [{"header": "x-api-key"}, {"header": "x-model"}]},
                   "cost": {"header": "x-cost", "max": 3},
                   "limits": [{"requests": {"free": 4, "pro": 6}, "window": "10s"}]}]}"#;
    let all = load(json.as_bytes()).unwrap();
    assert!(all.read_all_headers, "six headers read");
    let mut one = all.clone();
    one.read_all_headers = false;
    let (a, b) = (MemoryStore::new(), MemoryStore::new());
    let mut rng = crate::testing::Xorshift(0x5851_f42d_4c95_7f2d_u64);
    let mut next = |n: u64| rng.below(n);
    let mut now = T0;
    for _ in 0..3_000 {
        now += next(50);
        let key = format!("k{}", next(3));
        let model = ["gpt", "claude"][next(2) as usize];
        let tier = ["gold", "silver"][next(2) as usize];
        let plan = ["free", "pro"][next(2) as usize];
        let cost = (1 + next(3)).to_string();
        let headers = [
            ("x-api-key", key.as_str()),
            ("x-model", model),
            ("x-tier", tier),
            ("x-plan", plan),
            ("x-cost", &cost),
        ];
        let request = get("/x", &headers);
        let (x, y) = (
            handle(&all, &a, &request, now),
            handle(&one, &b, &request, now),
        );
        assert_eq!(x.action, y.action, "{headers:?} at {now}");
    }
}
