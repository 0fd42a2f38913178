//! Reserving at the request and settling at the response, through `decide` and `settle` on the
//! in-memory store with a fake clock.

use super::*;
use crate::costs::ResponseFacts;
use crate::engine::{decide, Action, Decision, Filter};
use crate::request::Computed;
use crate::store::MemoryStore;
use crate::testing::FakeRequest;

const T0: u64 = 1_700_000_000_000;

/// One rule, with every limit's remaining quota in the `RateLimit` header.
fn load(rule: &str) -> Filter {
    let headers = r#""response": {"headers": {"style": "ietf_draft11"}}"#;
    let json = format!(r#"{{{headers}, "rules": [{rule}]}}"#);
    Filter::load(json.as_bytes()).unwrap()
}

fn errors(rule: &str) -> Vec<String> {
    let json = format!(r#"{{"rules": [{rule}]}}"#);
    let e = Filter::load(json.as_bytes()).unwrap_err();
    e.0.iter().map(|e| e.to_string()).collect()
}

fn request(key: &str) -> FakeRequest {
    FakeRequest::with(&[(":path", "/x"), ("x-api-key", key)])
}

/// Each limit's `remaining` in the response headers of an admitted request, by limit name.
fn remaining(decision: &Decision, limit: &str) -> u64 {
    let Action::Allow(headers) = &decision.action else {
        panic!("refused: {:?}", decision.action)
    };
    let policy = headers.iter().find(|(n, _)| &**n == "ratelimit").unwrap();
    let part = policy
        .1
        .split(", ")
        .find(|p| p.starts_with(&format!("\"{limit}\"")))
        .unwrap();
    let r = part
        .split(';')
        .find_map(|kv| kv.strip_prefix("r="))
        .unwrap();
    r.parse().unwrap()
}

fn status(status: u32) -> ResponseFacts {
    ResponseFacts {
        status: Some(status),
        ..ResponseFacts::default()
    }
}

/// A 200 whose `x-cost` header says `cost`.
fn costing(cost: u64) -> ResponseFacts {
    ResponseFacts {
        headers: vec![("x-cost".into(), cost.to_string())],
        ..status(200)
    }
}

/// A 200 whose metadata says `tokens` were used.
fn tokens(tokens: u64) -> ResponseFacts {
    ResponseFacts {
        metadata: vec![("llm/total_tokens".into(), Computed::Number(tokens as f64))],
        ..status(200)
    }
}

fn refused(decision: &Decision) -> bool {
    matches!(decision.action, Action::Refuse(_))
}

const ONLY_2XX: &str = r#"{"name": "api", "key": [{"header": "x-api-key"}], "counted": ["2xx"],
    "limits": [{"name": "minute", "requests": 10, "window": "1m"}]}"#;

#[test]
fn a_rule_without_settling_gives_an_empty_ticket_and_remembers_refusals() {
    let filter = load(
        r#"{"name": "api", "key": [{"header": "x-api-key"}],
        "limits": [{"requests": 10, "window": "1m"}]}"#,
    );
    let decision = decide(&filter, &MemoryStore::new(), &request("k"), T0);
    assert!(decision.ticket.is_empty());
    assert!(filter.limited(0).unwrap().refusals_last);
}

#[test]
fn a_response_that_does_not_count_gives_its_charge_back() {
    let (filter, store) = (load(ONLY_2XX), MemoryStore::new());
    assert!(
        !filter.limited(0).unwrap().refusals_last,
        "a settling rule remembers nothing"
    );
    let first = decide(&filter, &store, &request("k"), T0);
    assert_eq!(remaining(&first, "minute"), 9);
    let events = settle(&filter, &store, &first.ticket, &status(503), T0 + 10);
    assert!(events.contains(&Event::Rule {
        rule: 0,
        stat: Stat::GivenBack
    }));
    let second = decide(&filter, &store, &request("k"), T0 + 20);
    assert_eq!(remaining(&second, "minute"), 9, "the 503 cost nothing");
    let events = settle(&filter, &store, &second.ticket, &status(201), T0 + 30);
    assert_eq!(
        events.as_slice(),
        &[Event::Settled {
            rule: 0,
            limit: 0,
            units: 1
        }]
    );
    let third = decide(&filter, &store, &request("k"), T0 + 40);
    assert_eq!(remaining(&third, "minute"), 8);
    // No response at all (the client went away) does not count either.
    settle(
        &filter,
        &store,
        &third.ticket,
        &ResponseFacts::default(),
        T0 + 50,
    );
    assert_eq!(
        remaining(&decide(&filter, &store, &request("k"), T0 + 60), "minute"),
        8
    );
}

#[test]
fn given_back_names_what_does_not_count() {
    let filter = load(
        r#"{"name": "api", "key": [{"header": "x-api-key"}],
        "given_back": ["5xx", "no_response", "local_reply"],
        "limits": [{"name": "minute", "requests": 10, "window": "1m"}]}"#,
    );
    let store = MemoryStore::new();
    let cases = [
        (status(404), true),
        (status(502), false),
        (
            ResponseFacts {
                local_reply: true,
                ..status(403)
            },
            false,
        ),
        (ResponseFacts::default(), false),
        (status(200), true),
    ];
    let mut counted = 0;
    for (i, (response, kept)) in cases.iter().enumerate() {
        let now = T0 + 10 * i as u64;
        let d = decide(&filter, &store, &request("k"), now);
        assert_eq!(remaining(&d, "minute"), 9 - counted, "case {i}");
        settle(&filter, &store, &d.ticket, response, now + 5);
        counted += u64::from(*kept);
    }
    assert_eq!(counted, 2);
}

#[test]
fn a_token_budget_holds_the_estimate_then_counts_what_the_response_used() {
    let filter = load(
        r#"{"name": "llm", "key": [{"header": "x-api-key"}], "counted": ["2xx"],
        "limits": [
            {"name": "tokens", "requests": 1000, "window": "1m",
             "cost": {"request": 100, "response": {"metadata": {"namespace": "llm", "key": "total_tokens"}, "max": 4000}}},
            {"name": "requests", "requests": 20, "window": "1m"}]}"#,
    );
    let store = MemoryStore::new();
    let a = decide(&filter, &store, &request("k"), T0);
    assert_eq!(remaining(&a, "tokens"), 900, "the hold counts");
    assert_eq!(remaining(&a, "requests"), 19);
    let b = decide(&filter, &store, &request("k"), T0 + 1);
    assert_eq!(remaining(&b, "tokens"), 800, "two holds outstanding");
    let events = settle(&filter, &store, &a.ticket, &tokens(30), T0 + 2);
    assert!(events.contains(&Event::Settled {
        rule: 0,
        limit: 0,
        units: 30
    }));
    let c = decide(&filter, &store, &request("k"), T0 + 3);
    assert_eq!(remaining(&c, "tokens"), 770, "30 used, 200 held");
    // Over the estimate: the excess is counted (and reported), capped at `max`.
    let events = settle(&filter, &store, &b.ticket, &tokens(250), T0 + 4);
    assert!(events.contains(&Event::Overspent {
        rule: 0,
        limit: 0,
        units: 150
    }));
    settle(&filter, &store, &c.ticket, &tokens(99_999), T0 + 5);
    let d = decide(&filter, &store, &request("k"), T0 + 6);
    assert!(refused(&d), "30 + 250 + 4000 > 1000");
    // Failed calls cost nothing in either limit; a response without usage keeps the hold.
    let other = decide(&filter, &store, &request("o"), T0);
    settle(&filter, &store, &other.ticket, &status(500), T0 + 1);
    let next = decide(&filter, &store, &request("o"), T0 + 2);
    assert_eq!(
        (remaining(&next, "tokens"), remaining(&next, "requests")),
        (900, 19)
    );
    settle(&filter, &store, &next.ticket, &status(200), T0 + 3);
    let last = decide(&filter, &store, &request("o"), T0 + 4);
    assert_eq!(
        remaining(&last, "tokens"),
        800,
        "no usage said: the 100 held stays"
    );
}

/// Envoy Gateway's `UsageRateLimit` conformance case: a limit of 21, a request cost of 0 and a
/// response cost of 10 answer 200, 200, 200, 429.
#[test]
fn envoy_gateways_usage_rate_limit_case() {
    let filter = load(
        r#"{"name": "usage", "key": [{"header": "x-api-key"}],
        "limits": [{"requests": 21, "window": "1h",
                    "cost": {"request": 0, "response": {"header": "x-cost", "max": 100}}}]}"#,
    );
    let store = MemoryStore::new();
    let mut answers = Vec::new();
    for i in 0..4 {
        let now = T0 + 100 * i;
        let d = decide(&filter, &store, &request("k"), now);
        answers.push(if refused(&d) { 429 } else { 200 });
        settle(&filter, &store, &d.ticket, &costing(10), now + 50);
    }
    assert_eq!(answers, [200, 200, 200, 429]);
}

#[test]
fn a_limit_counts_its_own_responses() {
    // Every request counts against the request limit; only 401/403 against the failures'.
    let filter = load(
        r#"{"name": "login", "key": [{"header": "x-api-key"}], "limits": [
        {"name": "requests", "requests": 100, "window": "1m"},
        {"name": "failures", "requests": 3, "window": "10m", "counted": [401, 403]}]}"#,
    );
    let store = MemoryStore::new();
    let mut last = None;
    for (i, code) in [200, 401, 200, 403, 401].into_iter().enumerate() {
        let d = decide(&filter, &store, &request("k"), T0 + i as u64);
        settle(&filter, &store, &d.ticket, &status(code), T0 + i as u64);
        last = Some(d);
    }
    assert_eq!(remaining(last.as_ref().unwrap(), "requests"), 95);
    let after = decide(&filter, &store, &request("k"), T0 + 10);
    assert!(refused(&after), "three failures: locked for ten minutes");
}

#[test]
fn a_refused_request_holds_nothing() {
    let (filter, store) = (load(ONLY_2XX), MemoryStore::new());
    for _ in 0..10 {
        decide(&filter, &store, &request("k"), T0);
    }
    let refused = decide(&filter, &store, &request("k"), T0);
    assert!(matches!(refused.action, Action::Refuse(_)));
    assert!(refused.ticket.is_empty());
}

#[test]
fn what_cannot_settle_is_rejected_at_load() {
    let e = errors(
        r#"{"name": "a", "fleet": true, "counted": ["2xx"],
        "limits": [{"requests": 5, "window": "1m", "cost": 2}]}"#,
    );
    assert!(
        e.iter()
            .any(|l| l.starts_with("$.rules[0].counted: a fleet-wide limit counts every response")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|l| l
            .starts_with("$.rules[0].limits[0].cost: a fleet-wide limit takes the rule's cost")),
        "{e:?}"
    );
    let e = errors(
        r#"{"name": "a", "limits": [
        {"requests": 5, "window": "1m", "cost": {"request": 0}},
        {"requests": 5, "window": "1h", "cost": {"response": {"header": "x", "metadata": {"namespace": "n", "key": "k"}, "max": 5}}},
        {"requests": 5, "window": "1d", "cost": {"response": {"header": "x", "max": 0}}, "given_back": ["2xy"]}]}"#,
    );
    crate::testing::assert_each_error_once(
        &e,
        &[
            "$.rules[0].limits[0].cost.request: must be between 1 and",
            "$.rules[0].limits[1].cost.response: give exactly one of \"header\" or \"metadata\"",
            "$.rules[0].limits[2].cost.response.max: must be between 1 and",
            "$.rules[0].limits[2].given_back[0]: \"2xy\" is not a status class",
        ],
    );
}
