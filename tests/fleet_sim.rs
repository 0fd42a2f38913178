//! Batched counting across three Envoys, simulated to the millisecond: each Envoy runs the real
//! engine and waitlist (admitting on the local tier's word, reporting per client by age, taking
//! back refusals), against a stand-in of Limitador (span counters, windows from a counter's first
//! hit, a call admitted all or nothing), with a round trip per call.
//!
//! The bound the book states: in any window, at most `L + Σ_e A_e` admitted, where `A_e` is the
//! most Envoy `e` admits in any span of `batch_interval + batch_interval/4 + rtt` (a report is
//! sent at most a tick after its oldest hit is an interval old, and answered a round trip later;
//! after a refused report the Envoy refuses the client, then asks request by request, until its
//! counts have left every span).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use envoy_ratelimit_wasm::{
    begin, reports, side_answered, Action, Call, CallHost, Decision, Filter, FleetVerdict, Memory,
    MemoryStore, Progress, RequestView, SideCall, Waiting, Waitlist,
};

/// The one client's request.
struct Request;

impl RequestView for Request {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        match name {
            ":path" => Some(b"/api".to_vec()),
            ":method" => Some(b"GET".to_vec()),
            "x-api-key" => Some(b"k".to_vec()),
            _ => None,
        }
    }
    fn source_address(&self) -> Option<Vec<u8>> {
        None
    }
    fn route_name(&self) -> Option<Vec<u8>> {
        None
    }
}

/// Limitador as the filter uses it: every descriptor a counter of at most `max` hits whose
/// window starts at its first hit; a call counts in all of them or in none.
struct Engine {
    counters: HashMap<Vec<(String, String)>, (u64, u64)>,
    max: u64,
    ttl_ms: u64,
}

impl Engine {
    fn call(&mut self, message: &[u8], now: u64) -> FleetVerdict {
        let (descriptors, hits) = decode(message);
        let count = |c: Option<&(u64, u64)>| c.filter(|c| c.1 > now).map_or(0, |c| c.0);
        if descriptors
            .iter()
            .any(|d| count(self.counters.get(d)) + hits > self.max)
        {
            return FleetVerdict::OverLimit;
        }
        for d in descriptors {
            let c = self.counters.entry(d).or_insert((0, 0));
            if c.1 <= now {
                *c = (0, now + self.ttl_ms);
            }
            c.0 += hits;
        }
        FleetVerdict::Admitted
    }
}

/// A `RateLimitRequest`'s descriptors and hits (protobuf, by hand).
fn decode(message: &[u8]) -> (Vec<Vec<(String, String)>>, u64) {
    let (mut descriptors, mut hits) = (Vec::new(), 1);
    for (field, value) in fields(message) {
        match (field, value) {
            (2, Field::Bytes(d)) => {
                let entries = fields(d).into_iter().filter_map(|(f, v)| match (f, v) {
                    (1, Field::Bytes(e)) => {
                        let mut kv = fields(e).into_iter().map(|(_, v)| match v {
                            Field::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                            Field::Int(_) => String::new(),
                        });
                        Some((kv.next()?, kv.next()?))
                    }
                    _ => None,
                });
                descriptors.push(entries.collect());
            }
            (3, Field::Int(n)) => hits = n,
            _ => {}
        }
    }
    (descriptors, hits)
}

enum Field<'a> {
    Int(u64),
    Bytes(&'a [u8]),
}

fn fields(mut b: &[u8]) -> Vec<(u64, Field<'_>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let tag = varint(&mut b);
        match tag & 7 {
            0 => out.push((tag >> 3, Field::Int(varint(&mut b)))),
            2 => {
                let len = varint(&mut b) as usize;
                out.push((tag >> 3, Field::Bytes(&b[..len])));
                b = &b[len..];
            }
            wire => panic!("wire type {wire}"),
        }
    }
    out
}

fn varint(b: &mut &[u8]) -> u64 {
    let (mut value, mut shift) = (0u64, 0);
    loop {
        let byte = b[0];
        *b = &b[1..];
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return value;
        }
        shift += 7;
    }
}

struct Envoy {
    filter: Filter,
    store: MemoryStore,
    memory: RefCell<Memory>,
    waitlist: Waitlist<u64, ()>,
}

/// The network as one Envoy sees it at `now`: its calls reach the engine at once and are
/// answered a round trip later.
struct Net<'a> {
    envoy: &'a Envoy,
    e: usize,
    now: u64,
    sim: &'a Sim,
}

struct Sim {
    engine: RefCell<Engine>,
    rtt_ms: u64,
    /// Answers on their way: (arrives at, Envoy, token, verdict).
    answers: RefCell<Vec<(u64, usize, u64, FleetVerdict)>>,
    tokens: Cell<u64>,
    /// Admissions per Envoy, per millisecond since `t0`.
    admitted: RefCell<Vec<Vec<u64>>>,
    t0: u64,
}

impl CallHost<u64, ()> for Net<'_> {
    fn send(&mut self, call: &Call<()>) -> Option<u64> {
        let verdict = self.sim.engine.borrow_mut().call(&call.message, self.now);
        let token = self.sim.tokens.get() + 1;
        self.sim.tokens.set(token);
        let at = self.now + self.sim.rtt_ms;
        self.sim
            .answers
            .borrow_mut()
            .push((at, self.e, token, verdict));
        Some(token)
    }
    fn resume(
        &mut self,
        _: u64,
        _: &(),
        waiting: Waiting,
        verdict: FleetVerdict,
    ) -> Option<Progress> {
        let envoy = self.envoy;
        let memory = &mut envoy.memory.borrow_mut();
        let progress = waiting.resume(
            &envoy.filter,
            &envoy.store,
            memory,
            &Request,
            verdict,
            self.now,
        );
        Some(progress)
    }
    fn carry_out(&mut self, _: u64, _: &(), decision: Decision) {
        self.record(&decision);
    }
    fn side_answered(&mut self, _: &(), side: &SideCall, verdict: FleetVerdict) {
        let memory = &mut self.envoy.memory.borrow_mut();
        side_answered(&self.envoy.filter, memory, side, verdict, self.now);
    }
}

impl Net<'_> {
    fn record(&self, decision: &Decision) {
        assert!(
            decision.side_calls.is_empty(),
            "no lease to refill when batched"
        );
        if matches!(decision.action, Action::Allow(_)) {
            let ms = (self.now - self.sim.t0) as usize;
            self.sim.admitted.borrow_mut()[self.e][ms] += 1;
        }
    }

    fn request(&mut self, id: u64) {
        let envoy = self.envoy;
        let memory = &mut envoy.memory.borrow_mut();
        match begin(&envoy.filter, &envoy.store, memory, &Request, self.now) {
            Progress::Done(decision) => self.record(&decision),
            Progress::Waiting(waiting) => {
                envoy.waitlist.park(id, (), waiting);
            }
        }
    }
}

struct Case {
    rate_per_s: u64,
    interval_ms: u64,
    rtt_ms: u64,
}

const ENVOYS: usize = 3;
const LIMIT: u64 = 100;
const WINDOW_MS: u64 = 10_000;
const RUN_MS: u64 = 120_000;

/// Runs `case` and returns (the most admitted in any window, the bound, admitted per window).
fn run(case: &Case, seed: u64) -> (u64, u64, f64) {
    let config = format!(
        r#"{{"fleet": {{"cluster": "rls", "sub_windows": 4, "counting": "batched", "batch_interval": "{}ms"}},
            "rules": [{{"name": "api", "key": [{{"header": "x-api-key"}}],
                        "limits": [{{"requests": {LIMIT}, "window": "10s", "fleet": true}}]}}]}}"#,
        case.interval_ms
    );
    let envoys: Vec<Envoy> = (0..ENVOYS)
        .map(|_| Envoy {
            filter: Filter::load(config.as_bytes()).unwrap(),
            store: MemoryStore::new(),
            memory: RefCell::default(),
            waitlist: Waitlist::default(),
        })
        .collect();
    let t0 = 1_700_000_000_000u64 - 1_700_000_000_000 % WINDOW_MS;
    let sim = Sim {
        t0,
        // As `ratelimit-config engine-config` writes it: (N+1)/N of the window, in seconds.
        engine: RefCell::new(Engine {
            counters: HashMap::new(),
            max: LIMIT,
            ttl_ms: (5 * WINDOW_MS).div_ceil(4).div_ceil(1_000) * 1_000,
        }),
        rtt_ms: case.rtt_ms,
        answers: RefCell::default(),
        tokens: Cell::new(0),
        admitted: RefCell::new(vec![vec![0; RUN_MS as usize]; ENVOYS]),
    };
    let tick = (case.interval_ms / 4).max(5);
    let mut rng = seed;
    for ms in 0..RUN_MS {
        let now = t0 + ms;
        deliver(&sim, &envoys, now);
        for (e, envoy) in envoys.iter().enumerate() {
            let mut net = Net {
                envoy,
                e,
                now,
                sim: &sim,
            };
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            if rng % 1_000 < case.rate_per_s {
                net.request(ms * 8 + e as u64);
            }
            if (ms + 7 * e as u64).is_multiple_of(tick) {
                let memory = &mut envoy.memory.borrow_mut();
                for side in reports(&envoy.filter, memory, now, 256) {
                    envoy.waitlist.side(side, ());
                }
            }
            envoy.waitlist.send(&mut net);
        }
    }
    let admitted = sim.admitted.into_inner();
    let span = (case.interval_ms + tick + case.rtt_ms + 1) as usize;
    let bound = LIMIT + admitted.iter().map(|a| most_in(a, span)).sum::<u64>();
    let all: Vec<u64> = (0..RUN_MS as usize)
        .map(|ms| admitted.iter().map(|a| a[ms]).sum())
        .collect();
    let total: u64 = all.iter().sum();
    let per_window = total as f64 / (RUN_MS / WINDOW_MS) as f64;
    (most_in(&all, WINDOW_MS as usize), bound, per_window)
}

/// Answers that have arrived by `now`.
fn deliver(sim: &Sim, envoys: &[Envoy], now: u64) {
    let arrived: Vec<_> = {
        let mut answers = sim.answers.borrow_mut();
        let (due, rest) = answers.drain(..).partition(|a| a.0 <= now);
        *answers = rest;
        due
    };
    for (_, e, token, verdict) in arrived {
        let mut net = Net {
            envoy: &envoys[e],
            e,
            now,
            sim,
        };
        envoys[e].waitlist.answered(token, verdict, &mut net);
    }
}

/// The most in any `span` consecutive milliseconds.
fn most_in(counts: &[u64], span: usize) -> u64 {
    let mut sum: u64 = counts.iter().take(span).sum();
    let mut most = sum;
    for i in span..counts.len() {
        sum = sum + counts[i] - counts[i - span];
        most = most.max(sum);
    }
    most
}

#[test]
fn batched_counting_keeps_its_stated_bound() {
    let cases = [
        Case {
            rate_per_s: 5,
            interval_ms: 100,
            rtt_ms: 1,
        },
        Case {
            rate_per_s: 5,
            interval_ms: 1_000,
            rtt_ms: 1,
        },
        Case {
            rate_per_s: 50,
            interval_ms: 100,
            rtt_ms: 1,
        },
        Case {
            rate_per_s: 50,
            interval_ms: 1_000,
            rtt_ms: 1,
        },
        Case {
            rate_per_s: 50,
            interval_ms: 1_000,
            rtt_ms: 200,
        },
        Case {
            rate_per_s: 200,
            interval_ms: 250,
            rtt_ms: 5,
        },
    ];
    println!(
        "| rate per Envoy | interval | rtt | most in a window | bound | admitted per window |"
    );
    for (i, case) in cases.iter().enumerate() {
        let (most, bound, per_window) = run(case, 0x2545_f491_4f6c_dd1d + i as u64);
        println!(
            "| {}/s | {} ms | {} ms | {most} | {bound} | {per_window:.1} |",
            case.rate_per_s, case.interval_ms, case.rtt_ms
        );
        assert!(most <= bound, "{most} > {bound}");
        // Offered 3 × rate per second: nobody is starved by the refusals taken back.
        let offered = (ENVOYS as u64 * case.rate_per_s * WINDOW_MS / 1_000) as f64;
        assert!(
            per_window >= 0.8 * offered.min(LIMIT as f64),
            "{per_window} per window"
        );
    }
}
