use super::*;
use crate::config::{self, Errors};

fn settings(json: &str) -> FleetSettings {
    let parsed = config::parse(format!(r#"{{"fleet": {json}, "rules": []}}"#).as_bytes()).unwrap();
    let mut errors = Errors::new();
    let settings = FleetSettings::compile(parsed.fleet.as_ref().unwrap(), "rl", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    settings
}

fn rule(windows_ms: &[u64]) -> FleetRule {
    FleetRule {
        domain: "rl.api".into(),
        limits: windows_ms
            .iter()
            .enumerate()
            .map(|(i, &w)| FleetLimit {
                limit: i,
                id: format!("api.l{i}"),
                window_ms: w,
            })
            .collect(),
    }
}

fn value<'a>(descriptor: &'a Descriptor, key: &str) -> Option<&'a str> {
    descriptor
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn sliding_descriptors_put_span_j_at_position_j_mod_n_plus_1() {
    let s = settings(r#"{"cluster": "rls", "sub_windows": 4}"#);
    let r = rule(&[2_000, 60_000]);
    // 2 s in 4 sub-windows of 500 ms: t = 500,250 ms is sub-window 1000.
    let d = r.descriptors(&s, 0xabc, Some("pro"), 500_250);
    assert_eq!(d.len(), 10, "(N+1) per fleet limit");
    for (position, descriptor) in d[..5].iter().enumerate() {
        let span: u64 = value(descriptor, "span").unwrap().parse().unwrap();
        assert!((996..=1000).contains(&span));
        assert_eq!(span % 5, position as u64);
        assert_eq!(value(descriptor, "limit"), Some("api.l0"));
        assert_eq!(value(descriptor, "plan"), Some("pro"));
        assert_eq!(value(descriptor, "client"), Some("0000000000000abc"));
    }
    assert_eq!(value(&d[5], "limit"), Some("api.l1"));
    // Entry order is fixed: limit, plan, client, span.
    let keys: Vec<&str> = d[0].iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["limit", "plan", "client", "span"]);
    // Early in the clock, spans never go negative.
    let early = r.descriptors(&s, 1, None, 0);
    assert!(early[..5].iter().all(|d| value(d, "plan").is_none()));
}

#[test]
fn fixed_counting_sends_one_descriptor_per_limit() {
    let s = settings(r#"{"cluster": "rls", "counting": "fixed"}"#);
    let d = rule(&[60_000, 86_400_000]).descriptors(&s, 7, None, 123_456);
    assert_eq!(d.len(), 2);
    assert!(d.iter().all(|d| value(d, "span").is_none()));
}

#[test]
fn answers_are_valid_until_the_sub_window_ends_and_retries_are_conservative() {
    let s = settings(r#"{"cluster": "rls", "sub_windows": 4}"#);
    let r = rule(&[2_000, 60_000]);
    assert_eq!(
        r.valid_until(&s, 500_250),
        500_500,
        "the 500 ms sub-window ends first"
    );
    // Everything counted up to now leaves every span when sub-window m+N+1 begins.
    // 60 s in 4: sub-window 33 (495 s to 510 s); sub-window 38 begins at 570 s.
    assert_eq!(r.retry_at(&s, 500_250), 570_000, "the latest of the limits");
    assert_eq!(rule(&[2_000]).retry_at(&s, 500_250), 502_500);
}

#[test]
fn a_call_encodes_its_hits() {
    let call = FleetCall {
        domain: "d".into(),
        descriptors: vec![],
        hits: 5,
    };
    assert_eq!(call.encode(), vec![0x0a, 1, b'd', 0x18, 5]);
}

#[test]
fn verdicts_from_the_wire() {
    assert_eq!(Verdict::of(0, Some(&[0x08, 1])), Verdict::Admitted);
    assert_eq!(Verdict::of(0, Some(&[0x08, 2])), Verdict::OverLimit);
    assert_eq!(
        Verdict::of(0, Some(&[])),
        Verdict::Failed,
        "UNKNOWN is no verdict"
    );
    assert_eq!(Verdict::of(0, None), Verdict::Failed);
    assert_eq!(
        Verdict::of(14, Some(&[0x08, 1])),
        Verdict::Failed,
        "UNAVAILABLE"
    );
    assert_eq!(
        Verdict::of(0, Some(&[0x12, 9])),
        Verdict::Failed,
        "malformed"
    );
}

#[test]
fn memory_keeps_leases_and_refusals_until_they_end() {
    let mut m = FleetMemory::with_capacity(2);
    assert_eq!(m.recall(0, 1, 1, 100), Recall::Ask);
    m.leased(0, 1, 2, 500, 100);
    assert_eq!(m.recall(0, 1, 1, 200), Recall::Leased);
    assert_eq!(m.recall(0, 1, 2, 200), Recall::Ask, "1 hit left, 2 needed");
    assert_eq!(m.recall(0, 1, 1, 300), Recall::Leased);
    assert_eq!(m.recall(0, 1, 1, 300), Recall::Ask, "used up");
    m.refused(0, 2, 400, 300);
    assert_eq!(m.recall(0, 2, 1, 399), Recall::Refused);
    assert_eq!(m.recall(0, 2, 1, 400), Recall::Ask, "the sub-window ended");
    // Bounded: a third entry pushes out an expired one, or any one.
    m.refused(1, 1, 1_000, 500);
    m.refused(1, 2, 1_000, 500);
    m.refused(1, 3, 1_000, 500);
    assert!(m.held() <= 2);
}
