//! Rolling a limit out: a rule in shadow mode, a candidate limit beside an enforced one, and the
//! status a request got (nginx's `$limit_req_status`), in a header and in the decision.

use super::*;
use crate::engine::pipeline::RequestStatus;

fn status_header(decision: &Decision) -> Option<String> {
    let headers = match &decision.action {
        Action::Allow(h) => h,
        Action::Refuse(r) => &r.headers,
        Action::Pass => return None,
    };
    headers
        .iter()
        .find(|(k, _)| &**k == "x-ratelimit-status")
        .map(|(_, v)| v.to_string())
}

fn limit_events(decision: &Decision) -> Vec<Event> {
    let limits = decision.events.iter();
    let limits = limits.filter(|e| matches!(e, Event::Limit { .. } | Event::ShadowLimit { .. }));
    limits.copied().collect()
}

/// A rule in shadow mode counts, logs and writes headers, and never refuses; another rule beside
/// it is enforced.
#[test]
fn a_rule_in_shadow_mode_lets_its_refusals_through() {
    let filter = load(
        br#"{"response": {"status_header": "x-ratelimit-status"},
             "rules": [
                {"name": "new_limit", "mode": "shadow", "match": {"path": {"prefix": "/new"}},
                 "key": [{"header": "x-api-key"}], "also": ["general"], "limits": [{"name": "minute", "requests": 2, "window": "1m"}]},
                {"name": "general", "key": [{"header": "x-api-key"}], "limits": [{"requests": 4, "window": "1m"}]}
             ]}"#,
    )
    .unwrap();
    let store = MemoryStore::new();
    let request = get("/new", &[("x-api-key", "k")]);
    let decisions: Vec<Decision> = (0..5)
        .map(|_| handle(&filter, &store, &request, T0))
        .collect();
    let words: Vec<Option<String>> = decisions.iter().map(status_header).collect();
    let expected = [
        "passed",
        "passed",
        "shadow_refused",
        "shadow_refused",
        "refused",
    ];
    assert_eq!(words, expected.map(|w| Some(w.to_string())));
    assert_eq!(decisions[2].status, Some(RequestStatus::ShadowRefused));
    assert!(has(&decisions[2], Stat::ShadowRefused) && has(&decisions[2], Stat::Allowed));
    assert_eq!(
        limit_events(&decisions[2]),
        [
            Event::Limit { rule: 0, limit: 0 },
            Event::ShadowLimit { rule: 0, limit: 0 }
        ]
    );
    let note = decisions[2].refusal.expect("a shadow refusal is logged");
    assert!(note.shadow && note.limit == Some(0));
    // The shadow rule's refusals consumed nothing of its own; the general limit (4) refuses the
    // fifth request for real, saying so.
    let Action::Refuse(reply) = &decisions[4].action else {
        panic!("{:?}", decisions[4].action)
    };
    assert!(reply.body.contains("\"policy\":\"1m\""), "{}", reply.body);
    // An enforce rule under a filter in shadow mode is enforced.
    let json = r#"{"mode": "shadow", "rules": [{"name": "strict", "mode": "enforce", "key": [{"header": "x-api-key"}], "limits": [{"requests": 1, "window": "1m"}]}]}"#;
    let strict = load(json.as_bytes()).unwrap();
    let store = MemoryStore::new();
    let request = get("/", &[("x-api-key", "k")]);
    assert!(matches!(
        handle(&strict, &store, &request, T0).action,
        Action::Allow(_)
    ));
    assert!(matches!(
        handle(&strict, &store, &request, T0).action,
        Action::Refuse(_)
    ));
}

/// A candidate limit is counted and its would-be refusals logged and counted, but it refuses
/// nothing and shows in no header.
#[test]
fn a_candidate_limit_is_logged_beside_the_enforced_one() {
    let filter = load(
        br#"{"response": {"status_header": "X-RateLimit-Status"},
             "rules": [{"name": "api", "key": [{"header": "x-api-key"}], "limits": [
                {"name": "enforced", "requests": 5, "window": "1m"},
                {"name": "candidate", "requests": 2, "window": "1m", "shadow": true}]}]}"#,
    )
    .unwrap();
    let store = MemoryStore::new();
    let request = get("/", &[("x-api-key", "k")]);
    let decisions: Vec<Decision> = (0..6)
        .map(|_| handle(&filter, &store, &request, T0))
        .collect();
    let words: Vec<String> = decisions.iter().filter_map(status_header).collect();
    let mut expected = vec!["passed"; 2];
    expected.extend(["shadow_refused"; 3]);
    expected.push("refused");
    assert_eq!(words, expected);
    for (i, decision) in decisions.iter().enumerate().take(5) {
        let Action::Allow(headers) = &decision.action else {
            panic!("request {i} refused: {:?}", decision.action)
        };
        assert!(
            headers.contains(&("x-ratelimit-limit".into(), "5".into())),
            "{headers:?}"
        );
        let remaining = (4 - i).to_string();
        assert!(headers.contains(&("x-ratelimit-remaining".into(), remaining.as_str().into())));
    }
    assert_eq!(
        limit_events(&decisions[2]),
        [Event::ShadowLimit { rule: 0, limit: 1 }]
    );
    assert_eq!(
        decisions[2].refusal.map(|n| (n.limit, n.shadow)),
        Some((Some(1), true))
    );
    // The enforced limit refuses the sixth, and names itself.
    let Action::Refuse(reply) = &decisions[5].action else {
        panic!()
    };
    assert!(
        reply.body.contains("\"policy\":\"enforced\""),
        "{}",
        reply.body
    );
    assert_eq!(
        limit_events(&decisions[5]),
        [Event::Limit { rule: 0, limit: 0 }]
    );
}

/// The status is there only when a limit applied, and only in the header when one is named.
#[test]
fn the_status_goes_where_it_is_asked_for() {
    let json = r#"{"rules": [
        {"name": "health", "match": {"path": {"exact": "/healthz"}}, "exempt": true},
        {"name": "api", "key": [{"header": "x-api-key"}], "limits": [{"requests": 1, "window": "1m"}]}]}"#;
    let quiet = load(json.as_bytes()).unwrap();
    let store = MemoryStore::new();
    let first = handle(&quiet, &store, &get("/", &[("x-api-key", "k")]), T0);
    assert_eq!(first.status, Some(RequestStatus::Passed));
    assert_eq!(status_header(&first), None, "no header unless named");
    let second = handle(&quiet, &store, &get("/", &[("x-api-key", "k")]), T0);
    assert_eq!(second.status, Some(RequestStatus::Refused));
    assert_eq!(
        handle(&quiet, &store, &get("/healthz", &[]), T0).status,
        None
    );
    assert!(!quiet.records_status());
    let logged = json.replacen('{', r#"{"response": {"status_filter_state": true},"#, 1);
    assert!(load(logged.as_bytes()).unwrap().records_status());
}
