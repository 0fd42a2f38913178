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
        r.clock(&s, 500_250).sub_end,
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

fn clock(now: u64) -> Clock {
    // Sub-windows of 1,000 ms.
    Clock {
        now,
        sub_start: now - now % 1_000,
        sub_end: now - now % 1_000 + 1_000,
    }
}

#[test]
fn memory_keeps_leases_and_refusals_until_they_end() {
    let mut m = FleetMemory::with_capacity(2);
    let recall = |m: &mut FleetMemory, client, cost, now| {
        m.recall((0, client), cost, 3, clock(now), now + 1_000)
    };
    assert_eq!(
        recall(&mut m, 1, 1, 100),
        Recall::Ask { hits: 3 },
        "a new client asks for the cap"
    );
    assert_eq!(
        recall(&mut m, 1, 1, 101),
        Recall::Join,
        "one call in flight per client"
    );
    m.leased((0, 1), (3, 1), clock(100), 110);
    assert_eq!(
        recall(&mut m, 1, 1, 200),
        Recall::Leased { refill: Some(3) },
        "1 left of 3: refilled ahead"
    );
    assert_eq!(
        recall(&mut m, 1, 2, 200),
        Recall::Join,
        "1 hit left, 2 needed: the refill is in flight"
    );
    assert_eq!(
        recall(&mut m, 1, 1, 300),
        Recall::Leased { refill: None },
        "one refill at a time"
    );
    m.refilled((0, 1), Some(3), clock(200), 310);
    for _ in 0..3 {
        assert!(matches!(recall(&mut m, 1, 1, 400), Recall::Leased { .. }));
    }
    // A refused refill stops refills: the next request asks for its own cost.
    let mut m2 = FleetMemory::with_capacity(4);
    m2.recall((0, 1), 1, 3, clock(100), 120);
    m2.leased((0, 1), (3, 1), clock(100), 110);
    assert_eq!(
        m2.recall((0, 1), 1, 3, clock(150), 170),
        Recall::Leased { refill: Some(3) }
    );
    m2.refilled((0, 1), None, clock(150), 160);
    assert_eq!(
        m2.recall((0, 1), 1, 3, clock(170), 190),
        Recall::Leased { refill: None }
    );
    assert_eq!(
        m2.recall((0, 1), 1, 3, clock(180), 200),
        Recall::Ask { hits: 1 },
        "its own cost"
    );
    // A lease ends with its sub-window: the next one asks for what was used in this one.
    m2.failed(0, 1);
    assert_eq!(
        m2.recall((0, 1), 1, 3, clock(1_100), 1_120),
        Recall::Ask { hits: 3 }
    );
    m.refused((0, 2), 400, 300);
    assert_eq!(recall(&mut m, 2, 1, 399), Recall::Refused);
    assert!(
        matches!(recall(&mut m, 2, 1, 400), Recall::Ask { .. }),
        "the sub-window ended"
    );
    // Bounded: a third entry pushes out an expired one, or any one.
    m.refused((1, 1), 1_000, 500);
    m.refused((1, 2), 1_000, 500);
    m.refused((1, 3), 1_000, 500);
    assert!(m.held() <= 2);
}

/// A tiny deterministic generator (xorshift), for the property tests.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Hits reserved and never used in a sub-window stay under 1.5 × cap, and under the larger of
/// the sub-window's first grant and 5 × the hits used: whatever the rate, the cap, the refills'
/// latency, or a refill refused.
#[test]
fn unused_lease_hits_are_bounded() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..300 {
        let cap = 1 + rng.below(60);
        let mut m = FleetMemory::with_capacity(10);
        let mut in_flight: Option<(u64, Clock, u64, bool)> = None; // hits, sent, answer at, refill
        for sub in 0..12u64 {
            let (mut granted, mut used, mut first) = (0u64, 0u64, None);
            let requests = rng.below(4 * cap + 2);
            let start = sub * 1_000;
            for r in 0..requests {
                let now = start + r * 999 / requests.max(1);
                if let Some((hits, sent, _, refill)) = in_flight.filter(|f| f.2 <= now) {
                    in_flight = None;
                    let admitted = rng.below(5) > 0;
                    match (refill, admitted) {
                        (true, true) => m.refilled((0, 1), Some(hits), sent, now),
                        (true, false) => m.refilled((0, 1), None, sent, now),
                        (false, _) => m.leased((0, 1), (hits, 1), sent, now),
                    }
                    if sent.sub_end == clock(now).sub_end && (admitted || !refill) {
                        granted += hits;
                        first.get_or_insert(hits);
                        used += u64::from(!refill);
                    }
                }
                let latency = rng.below(30);
                match m.recall((0, 1), 1, cap, clock(now), now + 1_000) {
                    Recall::Leased { refill } => {
                        used += 1;
                        if let Some(hits) = refill {
                            in_flight = Some((hits, clock(now), now + latency, true));
                        }
                    }
                    Recall::Ask { hits } => {
                        in_flight = Some((hits, clock(now), now + latency, false))
                    }
                    Recall::Join => {}
                    other => panic!("{other:?}"),
                }
            }
            let unused = granted.saturating_sub(used);
            assert!(
                2 * unused <= 3 * cap,
                "cap {cap}: {unused} unused of {granted}"
            );
            let first = first.unwrap_or(0);
            assert!(
                unused <= first.max(5 * used),
                "cap {cap}: {unused} unused, first grant {first}, used {used}"
            );
            if in_flight.is_some_and(|f| f.1.sub_end <= start + 1_000) {
                in_flight = None; // answered after its sub-window: its hits count nowhere we use
                m.failed(0, 1);
            }
        }
    }
}
