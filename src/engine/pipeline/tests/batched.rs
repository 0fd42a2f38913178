//! Batched counting: requests admitted on the local tier's word, their hits reported per client
//! once the oldest is a batch interval old; a refused report refuses the client, then asks the
//! service request by request until its counts have left every span.

use super::fleet_tier::FLEET;
use super::*;

const BATCHED: &str = r#"{
    "fleet": {"cluster": "rls", "sub_windows": 4, "counting": "batched", "batch_interval": "200ms"},
    "rules": [
        {"name": "api", "match": {"path": {"prefix": "/api"}}, "key": [{"header": "x-api-key"}],
         "limits": [{"name": "minute", "requests": 100, "window": "1m", "fleet": true}]}
    ]
}"#;

fn allowed(decision: &Decision) -> bool {
    matches!(decision.action, Action::Allow(_))
}

#[test]
fn batched_requests_never_wait_and_are_reported_by_age() {
    let filter = load(BATCHED.as_bytes()).unwrap();
    let store = MemoryStore::new();
    let mut memory = Memory::default();
    let (a, b) = (
        get("/api", &[("x-api-key", "a")]),
        get("/api", &[("x-api-key", "b")]),
    );
    for t in 0..3 {
        let Progress::Done(d) = begin(&filter, &store, &mut memory, &a, T0 + t * 50) else {
            panic!("a batched request never waits")
        };
        assert!(allowed(&d) && has(&d, Stat::FleetBatched) && d.side_calls.is_empty());
    }
    let Progress::Done(_) = begin(&filter, &store, &mut memory, &b, T0 + 150) else {
        panic!()
    };
    assert!(
        reports(&filter, &mut memory, T0 + 199, 10).is_empty(),
        "not yet due"
    );
    let due = reports(&filter, &mut memory, T0 + 200, 10);
    assert_eq!(due.len(), 1, "a's first hit is 200 ms old, b's is not");
    assert_eq!((due[0].hits(), due[0].kind()), (3, Side::Report));
    assert_eq!(due[0].call().descriptors.len(), 5, "the sliding spans");
    assert!(
        reports(&filter, &mut memory, T0 + 349, 10).is_empty(),
        "a's in flight"
    );
    assert_eq!(reports(&filter, &mut memory, T0 + 350, 10).len(), 1, "b's");
    let events = side_answered(
        &filter,
        &mut memory,
        &due[0],
        fleet::Verdict::Admitted,
        T0 + 210,
    );
    assert!(events.contains(&Event::Rule {
        rule: 0,
        stat: Stat::FleetReports
    }));
    let Progress::Done(d) = begin(&filter, &store, &mut memory, &a, T0 + 400) else {
        panic!()
    };
    assert!(allowed(&d));
    assert_eq!(reports(&filter, &mut memory, T0 + 600, 10)[0].hits(), 1);
}

#[test]
fn a_refused_report_refuses_the_client_then_probes_it() {
    let filter = load(BATCHED.as_bytes()).unwrap();
    let store = MemoryStore::new();
    let mut memory = Memory::default();
    let a = get("/api", &[("x-api-key", "a")]);
    let at = T0 - T0 % 15_000 + 1_000; // early in a 15 s sub-window
    let Progress::Done(_) = begin(&filter, &store, &mut memory, &a, at) else {
        panic!()
    };
    let due = reports(&filter, &mut memory, at + 200, 10);
    let events = side_answered(
        &filter,
        &mut memory,
        &due[0],
        fleet::Verdict::OverLimit,
        at + 210,
    );
    assert!(events.contains(&Event::Rule {
        rule: 0,
        stat: Stat::FleetReportRefused
    }));
    let Progress::Done(refused) = begin(&filter, &store, &mut memory, &a, at + 300) else {
        panic!("refused from memory, no call")
    };
    let Action::Refuse(reply) = &refused.action else {
        panic!("{:?}", refused.action)
    };
    assert_eq!(reply.status, 429);
    // The next sub-window: the client is asked for request by request (its count is unknown).
    let next = at - at % 15_000 + 15_000;
    let Progress::Waiting(probe) = begin(&filter, &store, &mut memory, &a, next) else {
        panic!("probing: the request waits for its own call")
    };
    assert_eq!(probe.call.as_ref().map(|c| c.hits), Some(1));
    let ok = fleet::Verdict::Admitted;
    let Progress::Done(d) = probe.resume(&filter, &store, &mut memory, &a, ok, next) else {
        panic!()
    };
    assert!(allowed(&d) && !has(&d, Stat::FleetBatched));
    // Until every span has forgotten what was counted before the refusal: then batched again.
    let after = at - at % 15_000 + 5 * 15_000;
    let Progress::Done(d) = begin(&filter, &store, &mut memory, &a, after) else {
        panic!("batched again")
    };
    assert!(has(&d, Stat::FleetBatched));
}

#[test]
fn batched_counting_needs_no_lease_and_local_on_error() {
    let errors = |json: String| load(json.as_bytes()).err().map(|e| e.0[0].path.clone());
    let with = |extra: &str| BATCHED.replace(r#""batch_interval": "200ms""#, extra);
    assert_eq!(
        errors(with(r#""lease": 5"#)).as_deref(),
        Some("$.fleet.lease")
    );
    assert_eq!(
        errors(with(r#""on_error": "deny""#)).as_deref(),
        Some("$.fleet.on_error")
    );
    assert_eq!(
        errors(with(r#""batch_interval": "2m""#)).as_deref(),
        Some("$.fleet.batch_interval")
    );
    assert_eq!(
        filter_interval(&with(r#""lease": 1"#)),
        Some(1_000),
        "the default"
    );
    assert_eq!(filter_interval(FLEET), None);
}

fn filter_interval(json: &str) -> Option<u64> {
    load(json.as_bytes()).unwrap().batch_interval_ms()
}
