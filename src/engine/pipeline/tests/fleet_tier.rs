//! The fleet tier in the pipeline: asked only after the local tier admits, leases (refilled
//! ahead of need), refusals remembered, failures under `on_error`, calls in flight joined.

use super::*;

pub(super) const FLEET: &str = r#"{
    "fleet": {"cluster": "rls", "sub_windows": 4, "lease": 3},
    "rules": [
        {"name": "api", "match": {"path": {"prefix": "/api"}}, "key": [{"header": "x-api-key"}],
         "limits": [{"name": "minute", "requests": 10, "window": "1m", "fleet": true},
                    {"name": "second", "requests": 5, "window": "1s"}]}
    ]
}"#;

/// Decides a request, answering its calls to the service with `service`; returns the
/// decision and the calls made.
pub(super) fn serve(
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
