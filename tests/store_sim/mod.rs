//! A store simulator: traces of many clients on a fake clock, replayed through the real limiter
//! (its pure page transform in the store's compare-and-swap loop, on the in-memory store with
//! Envoy's shared-data semantics), and judged against an exact sliding log per key and against
//! the same sliding window with unbounded memory. Workloads and measures are those of the design
//! study of issue 10 (key sprays with a victim, background and legitimate new clients; honest
//! churn for sizing; skewed bursts for the hard-guarantee fuzz).

use std::collections::{HashMap, HashSet, VecDeque};

use envoy_ratelimit_wasm::internals::{
    update, Limit, Limiter, Mutant, PageKeys, SlotUse, Verdict, RING,
};
use envoy_ratelimit_wasm::{MemoryStore, SharedStore};

pub const T0: u64 = 1_700_000_000_000;
pub const MIN: u64 = 60_000;
const SUB_WINDOWS: u64 = RING as u64 - 1;

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    /// A client hash (never 0).
    pub fn key(&mut self) -> u64 {
        self.next() | 1
    }
}

/// Who sends a request.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Class {
    /// One request, never again.
    Junk,
    /// A sprayed key that comes back with a burst.
    Returner,
    /// A new client at its limit (1x) or at twice it (2x).
    Legit1,
    Legit2,
    /// Existing clients, well under their limits.
    Background,
    /// At the day limit, or at the minute limit, when the spray starts; retrying throughout.
    VictimDay,
    VictimMin,
    /// At the minute limit before the spray, back with bursts later.
    Sleeper,
    /// Honest clients coming and going.
    Churn,
    Fuzz,
}

#[derive(Clone, Copy)]
pub struct Ev {
    pub t: u64,
    pub key: u64,
    pub class: Class,
}

/// A rule: its limits' windows and levels.
#[derive(Clone, Debug)]
pub struct Rule {
    pub windows_ms: Vec<u64>,
    pub limits: Vec<u64>,
}

/// The demo rule of `make run`'s `api`: 10 per minute and 1,000 per day.
pub fn demo_rule() -> Rule {
    Rule {
        windows_ms: vec![MIN, 86_400_000],
        limits: vec![10, 1_000],
    }
}

pub struct Trace {
    pub name: String,
    pub rule: Rule,
    pub evs: Vec<Ev>,
    /// Start and end of the spray.
    pub spray: Option<(u64, u64)>,
    /// Legitimate new clients: first request time, and whether it came during the spray.
    pub legit: HashMap<u64, (u64, bool)>,
    /// Every key but junk: its events' indices.
    pub keyed: HashMap<u64, Vec<usize>>,
    /// The exact sliding log's verdict on every event (junk: always admitted).
    pub exact: Vec<bool>,
}

impl Trace {
    fn finish(name: String, rule: Rule, mut evs: Vec<Ev>, spray: Option<(u64, u64)>) -> Self {
        Self::finish_with(name, rule, &mut evs, spray, HashMap::new())
    }

    fn finish_with(
        name: String,
        rule: Rule,
        evs: &mut Vec<Ev>,
        spray: Option<(u64, u64)>,
        legit: HashMap<u64, (u64, bool)>,
    ) -> Self {
        evs.sort_by_key(|e| e.t);
        let mut keyed: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, e) in evs.iter().enumerate() {
            if e.class != Class::Junk {
                keyed.entry(e.key).or_default().push(i);
            }
        }
        let mut exact = vec![true; evs.len()];
        for idxs in keyed.values() {
            let mut logs: Vec<VecDeque<u64>> = vec![VecDeque::new(); rule.limits.len()];
            for &ix in idxs {
                let t = evs[ix].t;
                let mut ok = true;
                for (i, log) in logs.iter_mut().enumerate() {
                    while log.front().is_some_and(|&x| x + rule.windows_ms[i] < t) {
                        log.pop_front();
                    }
                    ok &= (log.len() as u64) < rule.limits[i];
                }
                if ok {
                    logs.iter_mut().for_each(|l| l.push_back(t));
                }
                exact[ix] = ok;
            }
        }
        Trace {
            name,
            rule,
            evs: std::mem::take(evs),
            spray,
            legit,
            keyed,
            exact,
        }
    }
}

fn periodic(evs: &mut Vec<Ev>, key: u64, class: Class, from: u64, to: u64, period: u64) {
    let mut t = from;
    while t < to {
        evs.push(Ev { t, key, class });
        t += period;
    }
}

/// A spray of `x` times `cap` one-request keys within `spray_s` seconds, on the demo rule, with
/// a victim at its day limit and one at its minute limit (retrying throughout), `cap / 4`
/// existing clients at 3 per minute, sleepers, sprayed keys of which 1% come back with a burst,
/// and `max(cap / 10, 400)` legitimate new clients, half starting during the spray and half in
/// the five minutes after, half at their limit and half at twice it, for five minutes each.
pub fn spray_trace(cap: u64, x: f64, spray_s: u64, seed: u64) -> Trace {
    let mut r = Rng(seed);
    let ts = T0 + 115 * MIN;
    let spray = spray_s * 1000;
    let te = ts + spray + 10 * MIN;
    let mut evs = Vec::new();
    let victim_day = r.key();
    periodic(&mut evs, victim_day, Class::VictimDay, T0, ts, 6_000);
    periodic(
        &mut evs,
        victim_day,
        Class::VictimDay,
        ts,
        ts + spray + 5 * MIN,
        5_000,
    );
    let victim_min = r.key();
    periodic(
        &mut evs,
        victim_min,
        Class::VictimMin,
        ts - 10_000,
        ts,
        1_000,
    );
    periodic(
        &mut evs,
        victim_min,
        Class::VictimMin,
        ts,
        ts + spray + MIN,
        1_000,
    );
    for _ in 0..cap / 4 {
        let k = r.key();
        let phase = r.below(20_000);
        periodic(
            &mut evs,
            k,
            Class::Background,
            ts - 5 * MIN + phase,
            te,
            20_000,
        );
    }
    for _ in 0..(cap / 100).max(20) {
        let k = r.key();
        periodic(&mut evs, k, Class::Sleeper, ts - 30_000, ts - 25_000, 500);
        let b1 = ts + r.below(spray);
        periodic(&mut evs, k, Class::Sleeper, b1, b1 + 1_500, 100);
        let b2 = ts + spray + r.below(2 * MIN);
        periodic(&mut evs, k, Class::Sleeper, b2, b2 + 1_500, 100);
    }
    for j in 0..(x * cap as f64) as u64 {
        let k = r.key();
        let t = ts + r.below(spray);
        if j % 100 == 0 {
            evs.push(Ev {
                t,
                key: k,
                class: Class::Returner,
            });
            let back = t + 1_000 + r.below(49_000);
            periodic(&mut evs, k, Class::Returner, back, back + 1_200, 100);
        } else {
            evs.push(Ev {
                t,
                key: k,
                class: Class::Junk,
            });
        }
    }
    let mut legit = HashMap::new();
    for j in 0..(cap / 10).max(400) {
        let k = r.key();
        let during = j % 2 == 0;
        let start = if during {
            ts + r.below(spray)
        } else {
            ts + spray + r.below(5 * MIN)
        };
        let (class, period) = if (j / 2) % 2 == 0 {
            (Class::Legit1, 6_000)
        } else {
            (Class::Legit2, 3_000)
        };
        periodic(&mut evs, k, class, start, start + 5 * MIN, period);
        legit.insert(k, (start, during));
    }
    let name = format!("{x}x capacity in {spray_s} s");
    Trace::finish_with(name, demo_rule(), &mut evs, Some((ts, ts + spray)), legit)
}

/// Honest churn for sizing: keys arrive at `rho` x `cap` per minute for 10 minutes, 3 requests
/// each (0, 20, 40 s); 200 probe clients at their limit for 5 minutes.
pub fn sizing_trace(cap: u64, rho: f64, rule: Rule, seed: u64) -> Trace {
    let mut r = Rng(seed);
    let run = 10 * MIN;
    let mut evs = Vec::new();
    for _ in 0..(rho * cap as f64) as u64 * 10 {
        let k = r.key();
        let s = T0 + r.below(run);
        for j in 0..3 {
            evs.push(Ev {
                t: s + j * 20_000,
                key: k,
                class: Class::Churn,
            });
        }
    }
    let mut legit = HashMap::new();
    for _ in 0..200 {
        let k = r.key();
        let s = T0 + 2 * MIN + r.below(3 * MIN);
        periodic(
            &mut evs,
            k,
            Class::Legit1,
            s,
            s + 5 * MIN,
            rule.windows_ms[0] / rule.limits[0],
        );
        legit.insert(k, (s, true));
    }
    Trace::finish_with(format!("churn rho={rho}"), rule, &mut evs, None, legit)
}

/// `n` clients active at once, each every 20 s for `minutes` (the rotating-keys case).
pub fn rotating_trace(n: u64, minutes: u64, seed: u64) -> Trace {
    let mut r = Rng(seed);
    let mut evs = Vec::new();
    for _ in 0..n {
        let k = r.key();
        periodic(
            &mut evs,
            k,
            Class::Churn,
            T0 + r.below(20_000),
            T0 + minutes * MIN,
            20_000,
        );
    }
    Trace::finish(
        format!("{n} clients active at once"),
        demo_rule(),
        evs,
        None,
    )
}

/// Skewed bursts of a few keys against 3 per second and 12 per 10 s: every eviction path, over
/// and over (the hard-guarantee fuzz).
pub fn fuzz_trace(seed: u64, events: usize) -> Trace {
    let mut r = Rng(seed);
    let rule = Rule {
        windows_ms: vec![1_000, 10_000],
        limits: vec![3, 12],
    };
    let nk = [6u64, 10, 16, 30][(seed % 4) as usize];
    let gap = [40u64, 200, 800][((seed / 4) % 3) as usize];
    let keys: Vec<u64> = (0..nk).map(|_| r.key()).collect();
    let mut evs = Vec::new();
    let mut t = T0;
    while evs.len() < events {
        t += r.below(gap);
        let k = keys[(r.below(nk) * r.below(nk) / nk) as usize];
        for _ in 0..1 + r.below(4) {
            evs.push(Ev {
                t,
                key: k,
                class: Class::Fuzz,
            });
            t += r.below(5);
        }
        if r.below(50) == 0 {
            t += r.below(3_000);
        }
    }
    Trace::finish(format!("fuzz {seed}"), rule, evs, None)
}

/// A fraction, as (hits, out of).
#[derive(Default, Clone, Copy, Debug)]
pub struct Share(pub u64, pub u64);

impl Share {
    pub fn add(&mut self, hit: bool) {
        self.0 += hit as u64;
        self.1 += 1;
    }
    pub fn ratio(self) -> f64 {
        if self.1 == 0 {
            1.0
        } else {
            self.0 as f64 / self.1 as f64
        }
    }
}

impl std::fmt::Display for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if self.1 == 0 {
            write!(f, "–")
        } else {
            write!(f, "{:.2}%", 100.0 * self.ratio())
        }
    }
}

/// What a replay measured.
#[derive(Default, Debug, Clone)]
pub struct Report {
    pub requests: u64,
    pub admitted: u64,
    /// Keys admitted beyond a limit in some window of it, and by how much in all.
    pub over_keys: u64,
    pub over_excess: u64,
    /// Admissions the same sliding window with unbounded memory (fed the same admissions) would
    /// have refused: the store lost a count.
    pub under_counts: u64,
    /// Refusals the unbounded window would have admitted, told as the client's own
    /// (`Refused`) or as capacity refusals.
    pub false_own: u64,
    pub false_capacity: u64,
    pub capacity: u64,
    pub first_during: Share,
    pub first_after: Share,
    /// Legitimate clients' admissions as a share of the exact log's: at 1x in their first
    /// window and their first five, at 2x in their first five.
    pub share_1w_1x: Share,
    pub share_5w_1x: Share,
    pub share_5w_2x: Share,
    pub victims_held: Option<bool>,
    /// Existing clients' and churning clients' requests the exact log admits but the store
    /// refused.
    pub background_false: Share,
    pub churn_false: Share,
    pub door: u64,
    pub evicted: u64,
    /// What a brand-new key would inherit per limit at the end of the spray: mean and max over
    /// 1,000 probe keys.
    pub inherited: Vec<(f64, u64)>,
}

/// The same sliding window as the filter's, with unbounded memory: one ring per key and limit.
struct Unbounded {
    windows_ms: Vec<u64>,
    rings: HashMap<u64, (Vec<[u64; RING]>, u64)>,
}

impl Unbounded {
    fn sub_window(w: u64, t: u64) -> u64 {
        ((t as u128 * SUB_WINDOWS as u128) / w as u128) as u64
    }

    /// Advances `key`'s rings to `t` and says whether `cost` fits under `limits`.
    fn fits(&mut self, key: u64, t: u64, limits: &[u64], cost: u64) -> bool {
        let n = self.windows_ms.len();
        let (rings, last) = self.rings.entry(key).or_insert((vec![[0; RING]; n], t));
        let t = t.max(*last);
        for (i, ring) in rings.iter_mut().enumerate() {
            let (old, new) = (
                Self::sub_window(self.windows_ms[i], *last),
                Self::sub_window(self.windows_ms[i], t),
            );
            for b in (old + 1..=new).take(RING) {
                ring[(b % RING as u64) as usize] = 0;
            }
        }
        *last = t;
        rings
            .iter()
            .zip(limits)
            .all(|(r, &l)| r.iter().sum::<u64>() + cost <= l)
    }

    fn record(&mut self, key: u64, t: u64, cost: u64) {
        let windows = self.windows_ms.clone();
        let (rings, last) = self.rings.get_mut(&key).expect("advanced first");
        let t = t.max(*last);
        for (i, ring) in rings.iter_mut().enumerate() {
            ring[(Self::sub_window(windows[i], t) % RING as u64) as usize] += cost;
        }
    }
}

/// Replays `trace` through a limiter of `cap` clients in pages of `slots`.
pub fn run(trace: &Trace, cap: u64, slots: usize, mutant: Option<Mutant>) -> Report {
    let rule = &trace.rule;
    let limits: Vec<Limit> = rule
        .windows_ms
        .iter()
        .zip(&rule.limits)
        .map(|(&window_ms, &l)| Limit {
            window_ms,
            requests: vec![l],
            ..Limit::default()
        })
        .collect();
    let mut limiter = Limiter::new(&limits, cap, slots);
    if let Some(m) = mutant {
        limiter = limiter.with_mutant(m);
    }
    let pages = PageKeys::new("sim", "r", limiter.layout_id());
    let store = MemoryStore::new();
    let mut unbounded = Unbounded {
        windows_ms: rule.windows_ms.clone(),
        rings: HashMap::new(),
    };
    let mut report = Report::default();
    let mut admitted = vec![false; trace.evs.len()];
    let mut probe_at = trace.spray.map(|(_, end)| end);
    for (ix, e) in trace.evs.iter().enumerate() {
        if let Some(end) = probe_at.filter(|&end| e.t >= end) {
            report.inherited = probe(&store, &limiter, &pages, rule, end);
            probe_at = None;
        }
        let key = pages.page(limiter.page_of(e.key));
        let d = update(&store, &key, 8, |page| {
            limiter.charge(page, e.key, 1, &rule.limits, e.t)
        })
        .expect("one writer: no lost race")
        .result;
        report.requests += 1;
        let ideal = e.class == Class::Junk || unbounded.fits(e.key, d.now_ms, &rule.limits, 1);
        match d.verdict {
            Verdict::Admitted => {
                admitted[ix] = true;
                report.admitted += 1;
                report.under_counts += !ideal as u64;
                if e.class != Class::Junk {
                    unbounded.record(e.key, d.now_ms, 1);
                }
            }
            Verdict::Refused => report.false_own += ideal as u64,
            Verdict::Capacity => {
                report.capacity += 1;
                report.false_capacity += ideal as u64;
            }
        }
        report.door += (d.slot == SlotUse::Door) as u64;
        report.evicted += (d.slot == SlotUse::Evicted) as u64;
    }
    measure(trace, &admitted, &mut report);
    report
}

/// What new keys would inherit at `t`: each probe's charge is run on its page as stored and
/// thrown away (the limiter is a pure function of the page), so nothing is written.
fn probe(
    store: &MemoryStore,
    limiter: &Limiter,
    pages: &PageKeys,
    rule: &Rule,
    t: u64,
) -> Vec<(f64, u64)> {
    let mut r = Rng(0xdead_beef);
    let n = 1_000;
    let mut sums = vec![(0u64, 0u64); rule.limits.len()];
    for _ in 0..n {
        let key = r.key();
        let mut page = store
            .get(&pages.page(limiter.page_of(key)))
            .0
            .unwrap_or_default();
        let (_, d) = limiter.charge(&mut page, key, 1, &rule.limits, t);
        for (status, sum) in d.statuses.iter().zip(&mut sums) {
            // remaining = level - inherited - 1 when admitted, level - inherited when refused.
            let used = status.requests - status.remaining - status.fits as u64;
            sum.0 += used;
            sum.1 = sum.1.max(used);
        }
    }
    sums.into_iter()
        .map(|(total, max)| (total as f64 / n as f64, max))
        .collect()
}

fn measure(trace: &Trace, admitted: &[bool], report: &mut Report) {
    let rule = &trace.rule;
    // Over-admission against the admissions log: every keyed client, every limit, every window.
    for idxs in trace.keyed.values() {
        let times: Vec<u64> = idxs
            .iter()
            .filter(|&&i| admitted[i])
            .map(|&i| trace.evs[i].t)
            .collect();
        let mut worst = 0u64;
        for (i, &w) in rule.windows_ms.iter().enumerate() {
            let mut lo = 0;
            for hi in 0..times.len() {
                while times[lo] + w < times[hi] {
                    lo += 1;
                }
                worst = worst.max(((hi - lo + 1) as u64).saturating_sub(rule.limits[i]));
            }
        }
        report.over_keys += (worst > 0) as u64;
        report.over_excess += worst;
    }
    let w1 = rule.windows_ms[0];
    for (key, &(start, during)) in &trace.legit {
        let idxs = &trace.keyed[key];
        let first = if during {
            &mut report.first_during
        } else {
            &mut report.first_after
        };
        first.add(admitted[idxs[0]]);
        let (mut a1, mut e1, mut a5, mut e5) = (0, 0, 0, 0);
        for &i in idxs {
            let t = trace.evs[i].t;
            if t < start + w1 {
                a1 += admitted[i] as u64;
                e1 += trace.exact[i] as u64;
            }
            if t < start + 5 * w1 {
                a5 += admitted[i] as u64;
                e5 += trace.exact[i] as u64;
            }
        }
        let five = if trace.evs[idxs[0]].class == Class::Legit1 {
            report.share_1w_1x.0 += a1;
            report.share_1w_1x.1 += e1;
            &mut report.share_5w_1x
        } else {
            &mut report.share_5w_2x
        };
        five.0 += a5;
        five.1 += e5;
    }
    if let Some((ts, _)) = trace.spray {
        let held = !trace.evs.iter().enumerate().any(|(ix, e)| {
            admitted[ix]
                && e.t >= ts
                && (e.class == Class::VictimDay
                    || (e.class == Class::VictimMin && e.t < ts + 45_000))
        });
        report.victims_held = Some(held);
    }
    for (ix, e) in trace.evs.iter().enumerate() {
        let share = match e.class {
            Class::Background => &mut report.background_false,
            Class::Churn => &mut report.churn_false,
            _ => continue,
        };
        share.add(trace.exact[ix] && !admitted[ix]);
    }
}

/// Distinct keys per window of the first limit, divided by `cap` (mean over the middle of the
/// trace).
pub fn distinct_per_window(trace: &Trace, cap: u64) -> f64 {
    let w = trace.rule.windows_ms[0];
    let counts: Vec<usize> = (3..9u64)
        .map(|m| {
            let (a, b) = (T0 + m * w, T0 + (m + 1) * w);
            trace
                .evs
                .iter()
                .filter(|e| e.t >= a && e.t < b)
                .map(|e| e.key)
                .collect::<HashSet<_>>()
                .len()
        })
        .collect();
    counts.iter().sum::<usize>() as f64 / counts.len() as f64 / cap as f64
}
