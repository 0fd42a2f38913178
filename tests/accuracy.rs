//! The limiter against the exact definition, on a fake clock.
//!
//! Every trace is replayed through the real core (the limiter in the store's update loop, on the in-memory store with
//! Envoy's shared-data semantics) and through an exact sliding log (admit when fewer than L
//! requests were admitted in the closed interval [t - W, t]). Printed with
//! `cargo test --features internals --test accuracy -- --nocapture`; the README's Guarantees quote
//! these tables. The store under key sprays, churn and the hard-guarantee fuzz (with mutants that
//! must fail it) is simulated in `store_sim`; the sizing table is
//! `cargo test --release --features internals --test accuracy -- --ignored sizing --nocapture`.

mod store_sim;

use std::collections::{HashMap, VecDeque};

use envoy_ratelimit_wasm::internals::{update, Limit, Limiter, Mutant, PageKeys, Verdict};
use envoy_ratelimit_wasm::MemoryStore;
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;

/// One request: when, whose, what cost.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    at_ms: u64,
    key: u64,
    cost: u64,
}

struct Run {
    /// Admission times per key, in order.
    admitted: HashMap<u64, Vec<(u64, u64)>>,
    refused: usize,
    /// Every refused arrival.
    refusals: Vec<Arrival>,
}

/// Replays through the filter's core.
fn run_limiter(trace: &[Arrival], limit: u64, window_ms: u64, clients: u64) -> Run {
    let store = MemoryStore::new();
    let limits = [Limit {
        window_ms,
        requests: vec![limit],
        ..Limit::default()
    }];
    let limiter = Limiter::new(&limits, clients * 2, 16);
    let pages = PageKeys::new("sim", "r", limiter.layout_id());
    let mut run = Run {
        admitted: HashMap::new(),
        refused: 0,
        refusals: Vec::new(),
    };
    for a in trace {
        let client = a.key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let key = pages.page(limiter.page_of(client));
        let d = update(&store, &key, 8, |page| {
            limiter.charge(page, client, a.cost, &[limit], a.at_ms)
        })
        .expect("one writer: no lost race")
        .result;
        assert_ne!(
            d.verdict,
            Verdict::Capacity,
            "the simulator sizes the store for its clients"
        );
        if d.verdict == Verdict::Admitted {
            run.admitted
                .entry(a.key)
                .or_default()
                .push((d.now_ms, a.cost));
        } else {
            run.refused += 1;
            run.refusals.push(*a);
        }
    }
    run
}

/// Replays through the exact sliding log.
fn run_exact(trace: &[Arrival], limit: u64, window_ms: u64) -> Run {
    let mut logs: HashMap<u64, VecDeque<(u64, u64)>> = HashMap::new();
    let mut run = Run {
        admitted: HashMap::new(),
        refused: 0,
        refusals: Vec::new(),
    };
    for a in trace {
        let log = logs.entry(a.key).or_default();
        while log.front().is_some_and(|&(t, _)| t + window_ms < a.at_ms) {
            log.pop_front();
        }
        let used: u64 = log.iter().map(|&(_, c)| c).sum();
        if used + a.cost <= limit {
            log.push_back((a.at_ms, a.cost));
            run.admitted
                .entry(a.key)
                .or_default()
                .push((a.at_ms, a.cost));
        } else {
            run.refused += 1;
        }
    }
    run
}

/// The most admitted (by cost) in any closed interval of length `window_ms`, over all keys.
fn max_in_any_window(run: &Run, window_ms: u64) -> u64 {
    let mut worst = 0;
    for times in run.admitted.values() {
        let (mut start, mut sum) = (0, 0);
        for (end, &(t, c)) in times.iter().enumerate() {
            sum += c;
            while times[start].0 + window_ms < t {
                sum -= times[start].1;
                start += 1;
            }
            let _ = end;
            worst = worst.max(sum);
        }
    }
    worst
}

fn total(run: &Run) -> u64 {
    run.admitted.values().flatten().map(|&(_, c)| c).sum()
}

/// A client sending `factor` x its limit, evenly spaced, for `windows` windows.
fn uniform(factor: f64, limit: u64, window_ms: u64, windows: u64, key: u64) -> Vec<Arrival> {
    let spacing = window_ms as f64 / (factor * limit as f64);
    let n = (windows as f64 * window_ms as f64 / spacing) as u64;
    (0..n)
        .map(|i| Arrival {
            at_ms: T0 + (i as f64 * spacing) as u64,
            key,
            cost: 1,
        })
        .collect()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

struct Row {
    name: &'static str,
    over_admission: i64,
    ours: u64,
    exact: u64,
    refused_ours: usize,
    refused_exact: usize,
}

fn evaluate(
    name: &'static str,
    trace: &[Arrival],
    limit: u64,
    window_ms: u64,
    clients: u64,
) -> Row {
    let ours = run_limiter(trace, limit, window_ms, clients);
    let exact = run_exact(trace, limit, window_ms);
    Row {
        name,
        over_admission: max_in_any_window(&ours, window_ms) as i64 - limit as i64,
        ours: total(&ours),
        exact: total(&exact),
        refused_ours: ours.refused,
        refused_exact: exact.refused,
    }
}

#[test]
fn accuracy_against_the_exact_sliding_log() {
    let (limit, window) = (100, 60_000);
    let mut rows = Vec::new();
    for (name, factor) in [
        ("uniform 0.5x", 0.5),
        ("uniform 0.95x", 0.95),
        ("uniform 1x", 1.0),
        ("uniform 2x", 2.0),
    ] {
        rows.push(evaluate(
            name,
            &uniform(factor, limit, window, 20, 1),
            limit,
            window,
            1,
        ));
    }
    // Bursts: 60 requests at once every 40 s.
    let bursts: Vec<Arrival> = (0..30u64)
        .flat_map(|b| {
            (0..60).map(move |i| Arrival {
                at_ms: T0 + b * 40_000 + i,
                key: 1,
                cost: 1,
            })
        })
        .collect();
    rows.push(evaluate(
        "bursts of 60 every 40s",
        &bursts,
        limit,
        window,
        1,
    ));
    // The boundary attack: a full burst just before a clock-minute boundary and again after.
    let boundary_start = T0 - T0 % window + 10 * window;
    let boundary: Vec<Arrival> = (0..limit)
        .map(|i| Arrival {
            at_ms: boundary_start - 1 - i % 5,
            key: 1,
            cost: 1,
        })
        .chain((0..limit).map(|i| Arrival {
            at_ms: boundary_start + 1 + i % 5,
            key: 1,
            cost: 1,
        }))
        .collect();
    rows.push(evaluate("boundary attack", &boundary, limit, window, 1));
    // Many keys: 500 clients, random gaps averaging 1.5x their limit, random costs 1-3.
    let mut rng = Rng(0x5eed);
    let mut at = T0;
    let mut many = Vec::new();
    for _ in 0..400_000 {
        at += rng.next() % 5;
        many.push(Arrival {
            at_ms: at,
            key: rng.next() % 500,
            cost: 1 + rng.next() % 3,
        });
    }
    rows.push(evaluate(
        "500 keys, random, costs 1-3",
        &many,
        limit,
        window,
        500,
    ));

    println!(
        "\nlimit {limit} per {} s; N = 20 sub-windows",
        window / 1000
    );
    println!(
        "{:<30} {:>15} {:>10} {:>10} {:>8} {:>12} {:>12}",
        "trace", "over-admission", "admitted", "exact", "share", "refused", "exact refused"
    );
    for r in &rows {
        println!(
            "{:<30} {:>15} {:>10} {:>10} {:>7.1}% {:>12} {:>12}",
            r.name,
            r.over_admission.max(0),
            r.ours,
            r.exact,
            100.0 * r.ours as f64 / r.exact as f64,
            r.refused_ours,
            r.refused_exact
        );
    }
    for r in &rows {
        assert!(
            r.over_admission <= 0,
            "{}: {} over the limit in some window",
            r.name,
            r.over_admission
        );
        assert!(
            r.ours <= r.exact,
            "{}: never more than the exact log in total",
            r.name
        );
    }
    let row = |n: &str| rows.iter().find(|r| r.name == n).unwrap();
    assert_eq!(row("uniform 0.5x").refused_ours, 0);
    assert_eq!(
        row("uniform 0.95x").refused_ours,
        0,
        "a client under 95% of its limit is never refused"
    );
    let share = row("uniform 2x").ours as f64 / row("uniform 2x").exact as f64;
    assert!(
        share >= 0.95,
        "a client at 2x gets {share:.3} of the exact log's admissions"
    );
    assert_eq!(
        row("boundary attack").ours,
        limit,
        "the second burst is refused entirely"
    );
}

/// A clock stepping back or forward by minutes never admits beyond the guarantee, measured on
/// the times the limiter used (it never lets a client's time run backwards).
#[test]
fn clock_steps_keep_the_guarantee() {
    let (limit, window) = (10, 60_000);
    let segment = |start: u64| -> Vec<Arrival> {
        uniform(3.0, limit, window, 2, 1)
            .iter()
            .map(|a| Arrival {
                at_ms: a.at_ms - T0 + start,
                ..*a
            })
            .collect()
    };
    let mut trace = segment(T0);
    // NTP steps the clock back 5 minutes, then forward 10.
    let back = trace.last().unwrap().at_ms - 300_000;
    trace.extend(segment(back));
    let forward = trace.last().unwrap().at_ms + 600_000;
    trace.extend(segment(forward));
    let ours = run_limiter(&trace, limit, window, 1);
    assert!(max_in_any_window(&ours, window) <= limit);
    assert!(
        total(&ours) >= 3 * limit,
        "it recovers: clients keep being admitted after each step"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random traces, limits, windows and costs: never more than the limit in any window, never
    /// more than the exact log, and everything within the exact log's count over W(1 + 1/N).
    #[test]
    fn the_guarantee_holds_on_random_traces(
        limit in 1u64..50,
        window_ms in 100u64..5_000,
        gaps in prop::collection::vec((0u64..400, 0u64..4, 1u64..4), 1..600),
    ) {
        let mut at = T0;
        let trace: Vec<Arrival> = gaps
            .iter()
            .map(|&(gap, key, cost)| {
                at += gap;
                Arrival { at_ms: at, key, cost }
            })
            .collect();
        let ours = run_limiter(&trace, limit, window_ms, 4);
        prop_assert!(max_in_any_window(&ours, window_ms) <= limit);
        // The lower bound: a request is refused only if what we admitted for its key in the
        // last W(1 + 1/N) (plus a millisecond of sub-window rounding) leaves no room for it.
        let reach = window_ms + window_ms.div_ceil(20) + 1;
        for r in &ours.refusals {
            let recent: u64 = ours.admitted.get(&r.key).map_or(0, |times| {
                times.iter().filter(|&&(t, _)| t + reach >= r.at_ms && t <= r.at_ms).map(|&(_, c)| c).sum()
            });
            prop_assert!(recent + r.cost > limit, "refused with {} used of {} in the last {} ms", recent, limit, reach);
        }
    }
}

/// Key sprays of 1x to 100x the store's capacity within 10 s (the harshest timing: everything in
/// one generation of the doorkeeper), on the demo rule (10 per minute, 1,000 per day).
#[test]
fn key_sprays_lock_nobody_out_and_lose_no_count() {
    use store_sim::*;
    let cap = 1_000;
    let columns = [
        "spray",
        "requests",
        "over",
        "lost",
        "1st during",
        "1st after",
        "1x 1W",
        "1x 5W",
        "2x 5W",
        "victims",
        "capacity",
        "own, not own",
        "bg false",
        "door",
        "evicted",
        "new key inherits",
    ];
    let mut table = format!(
        "\nkey sprays, capacity {cap} clients (16 per page), demo rule 10/min + 1000/day, all of the spray within 10 s\n| {} |\n|{}\n",
        columns.join(" | "),
        "---|".repeat(columns.len())
    );
    for x in [1.0, 10.0, 20.0, 100.0] {
        let trace = spray_trace(cap, x, 10, 42);
        let r = run(&trace, cap, 16, None);
        let inherits: Vec<String> = r
            .inherited
            .iter()
            .map(|(mean, max)| format!("{mean:.2}/{max}"))
            .collect();
        let row = [
            trace.name.clone(),
            r.requests.to_string(),
            r.over_keys.to_string(),
            r.under_counts.to_string(),
            r.first_during.to_string(),
            r.first_after.to_string(),
            r.share_1w_1x.to_string(),
            r.share_5w_1x.to_string(),
            r.share_5w_2x.to_string(),
            if r.victims_held == Some(true) {
                "held"
            } else {
                "LOST"
            }
            .to_string(),
            r.capacity.to_string(),
            r.false_own.to_string(),
            r.background_false.to_string(),
            r.door.to_string(),
            r.evicted.to_string(),
            inherits.join(", "),
        ];
        table += &format!("| {} |\n", row.join(" | "));
        assert_eq!(
            r.over_keys, 0,
            "{}: a key admitted over a limit",
            trace.name
        );
        assert_eq!(r.under_counts, 0, "{}: a count was lost", trace.name);
        assert_eq!(
            r.victims_held,
            Some(true),
            "{}: a victim was reset",
            trace.name
        );
        if x <= 20.0 {
            for (what, share, goal) in [
                ("first requests during", r.first_during, 0.99),
                ("first requests after", r.first_after, 0.99),
                ("1x clients' first window", r.share_1w_1x, 0.90),
                ("1x clients' five windows", r.share_5w_1x, 0.90),
                ("2x clients' five windows", r.share_5w_2x, 0.90),
            ] {
                assert!(
                    share.ratio() >= goal,
                    "{}: {what} {share}\n{table}",
                    trace.name
                );
            }
        }
    }
    print!("{table}");
    println!("(over: keys admitted over a limit in some window; lost: admissions the same window with unbounded memory refuses; 1st: new clients' first requests admitted; 1x/2x 1W/5W: new clients at 1x/2x their limit, admissions as a share of the exact log's in their first 1 or 5 windows; victims: at their day and minute limits when the spray starts, never admitted during it; capacity: capacity refusals; own, not own: refusals told as the client's own that the same window with unbounded memory would not make; bg false: existing clients' requests refused that the exact log admits; door: first requests admitted without a slot; evicted: clients moved into the summary; new key inherits: per limit, mean/max over 1,000 new keys at the end of the spray)");
}

/// Capacity sized by what is active: as many clients active at once as `max_clients`, each every
/// 20 s, pages filling unevenly: nobody is refused.
#[test]
fn clients_active_up_to_capacity_are_never_refused() {
    use store_sim::*;
    let n = 10_000;
    let trace = rotating_trace(n, 4, 7);
    let r = run(&trace, n, 16, None);
    println!(
        "\n{}, max_clients {n}: {} requests, {} refused ({} capacity), {} first requests without a slot, {} evictions",
        trace.name, r.requests, r.requests - r.admitted, r.capacity, r.door, r.evicted
    );
    assert_eq!(r.admitted, r.requests, "nobody refused");
    assert_eq!((r.over_keys, r.under_counts), (0, 0));
}

/// The hard guarantee through every path of the store (door, promotion, eviction, return,
/// generations rolling), on skewed bursts of a few keys against a store of 8 slots in pages of
/// 1, 2 and 4: no key is ever admitted over a limit, and no admission is one the same window with
/// unbounded memory would refuse. The check is shown able to fail: deliberately broken stores
/// (inheriting nothing, forgetting evicted counts, not recording first requests) must fail it.
#[test]
fn the_hard_guarantee_holds_on_every_path_and_mutants_break_it() {
    use store_sim::*;
    let traces: Vec<Trace> = (0..12).map(|seed| fuzz_trace(seed, 4_000)).collect();
    let mut table = format!(
        "\nfuzz: {} traces x pages of 1, 2, 4 slots (8 clients), 3/s and 12/10 s\n",
        traces.len()
    );
    table += &format!(
        "{:<20} {:>9} {:>9} {:>13} {:>12} {:>10} {:>9}\n",
        "store", "requests", "admitted", "over (keys)", "lost counts", "capacity", "evicted"
    );
    for mutant in [
        None,
        Some(Mutant::InheritsNothing),
        Some(Mutant::ForgetsEvicted),
        Some(Mutant::UnrecordedDoor),
    ] {
        let mut total = Report::default();
        for trace in &traces {
            for slots in [1, 2, 4] {
                let r = run(trace, 8, slots, mutant);
                total.requests += r.requests;
                total.admitted += r.admitted;
                total.over_keys += r.over_keys;
                total.under_counts += r.under_counts;
                total.capacity += r.capacity;
                total.evicted += r.evicted;
            }
        }
        let name = mutant.map_or("the filter's".to_string(), |m| format!("{m:?}"));
        table += &format!(
            "{:<20} {:>9} {:>9} {:>13} {:>12} {:>10} {:>9}\n",
            name,
            total.requests,
            total.admitted,
            total.over_keys,
            total.under_counts,
            total.capacity,
            total.evicted
        );
        match mutant {
            None => {
                assert_eq!(total.over_keys, 0, "over-admission");
                assert_eq!(total.under_counts, 0, "a lost count");
                assert!(
                    total.evicted > 1_000,
                    "the fuzz exercises eviction ({})",
                    total.evicted
                );
            }
            Some(m) => assert!(total.over_keys > 0, "the check cannot see {m:?}"),
        }
    }
    print!("{table}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random traces of up to 12 keys with random costs, two limits, and a store of 2 slots: every
    /// key stays within every limit in every window, however often it is evicted.
    #[test]
    fn the_guarantee_holds_under_eviction(
        limits in (1u64..20, 1u64..60),
        windows in (100u64..3_000, 1u64..10),
        gaps in prop::collection::vec((0u64..300, 0u64..12, 1u64..4), 1..800),
    ) {
        let (short, long) = (windows.0, windows.0 * windows.1);
        let rule = [Limit { window_ms: short, requests: vec![limits.0], ..Limit::default() }, Limit { window_ms: long, requests: vec![limits.1], ..Limit::default() }];
        let levels = [limits.0, limits.1];
        let limiter = Limiter::new(&rule, 2, 2);
        let store = MemoryStore::new();
        let pages = PageKeys::new("sim", "r", limiter.layout_id());
        let mut admitted: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
        let mut at = T0;
        for &(gap, key, cost) in &gaps {
            at += gap;
            let client = (key + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let d = update(&store, &pages.page(limiter.page_of(client)), 8, |page| {
                limiter.charge(page, client, cost, &levels, at)
            }).unwrap().result;
            if d.verdict == Verdict::Admitted {
                admitted.entry(key).or_default().push((d.now_ms, cost));
            }
        }
        let run = Run { admitted, refused: 0, refusals: Vec::new() };
        prop_assert!(max_in_any_window(&run, short) <= limits.0);
        prop_assert!(max_in_any_window(&run, long) <= limits.1);
    }
}

/// The sizing table of the README: false refusals against distinct keys per window / capacity.
/// Slow in a debug build: `cargo test --release --features internals --test accuracy -- --ignored sizing --nocapture`.
#[test]
#[ignore]
fn sizing() {
    use store_sim::*;
    let cap = 1_000;
    let rhos = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0];
    let single = Rule {
        windows_ms: vec![60_000],
        limits: vec![10],
    };
    for (what, rule) in [("10/min", single), ("10/min + 1000/day", demo_rule())] {
        println!("\nsizing, rule {what}, capacity {cap}: keys arriving at rho x capacity per minute, 3 requests each (0, 20, 40 s), 10 min; 200 clients at their limit for 5 min");
        println!(
            "{:>6} {:>28} {:>26} {:>30}",
            "rho",
            "distinct keys / window / cap",
            "requests falsely refused",
            "clients at 1x, first window"
        );
        for &rho in &rhos {
            let trace = sizing_trace(cap, rho, rule.clone(), 11);
            let r = run(&trace, cap, 16, None);
            assert_eq!((r.over_keys, r.under_counts), (0, 0));
            println!(
                "{rho:>6} {:>28.2} {:>26} {:>30}",
                distinct_per_window(&trace, cap),
                r.churn_false.to_string(),
                r.share_1w_1x.to_string()
            );
        }
    }
}
