//! A configuration as this worker runs it: the compiled filter, this worker's memory, its stat
//! ids and the counts not yet handed to Envoy (stats are added up here and flushed once per
//! tick, not per request), and its sampling of the refusal log.

use std::cell::RefCell;

use proxy_wasm::types::MetricType;

use crate::engine::{
    stat_names, Action, Decision, Event, Filter, Headers, Memory, RefusalLog, StatKind, Ticket,
};

pub struct Loaded {
    pub filter: Filter,
    /// This worker's memory: the rate limit service's answers, its refusals still true.
    pub memory: RefCell<Memory>,
    /// The queue that wakes this root to send calls, when some limit is fleet-wide.
    pub queue: Option<u32>,
    /// Stat ids, by rule and by slot (see `stat_names`).
    stats: Vec<Vec<u32>>,
    pending: RefCell<Vec<Vec<i64>>>,
    refusal_log: RefCell<RefusalLog>,
}

/// How a decision was carried out.
pub enum Carried {
    /// The request goes on, with these headers for its response and what it holds to settle.
    Continue(Headers, Ticket),
    /// The filter answered it.
    Replied,
}

impl Loaded {
    /// `filter` with its stats defined in Envoy.
    pub fn new(filter: Filter, queue: Option<u32>) -> Self {
        let stats: Vec<Vec<u32>> = stat_names(&filter)
            .iter()
            .map(|rule| {
                rule.iter()
                    .map(|(name, kind)| define(name, *kind))
                    .collect()
            })
            .collect();
        let pending = stats.iter().map(|ids| vec![0; ids.len()]).collect();
        let memory = Memory::for_filter(&filter);
        Loaded {
            filter,
            memory: RefCell::new(memory),
            queue,
            stats,
            pending: RefCell::new(pending),
            refusal_log: RefCell::new(RefusalLog::default()),
        }
    }

    /// Carries out a decision for the effective request: records its events, logs its refusal
    /// (sampled), and answers the request or lets it go on.
    pub fn carry_out(&self, decision: Decision, now: u64) -> Carried {
        self.record(&decision.events);
        if let Some(note) = &decision.refusal {
            let line = self.refusal_log.borrow_mut().line(&self.filter, note, now);
            if let Some((level, line)) = line {
                log::log!(level, "{line}");
            }
        }
        if let Some(status) = decision.status.filter(|_| self.filter.records_status()) {
            let value = Some(status.as_str().as_bytes());
            let _ = proxy_wasm::hostcalls::set_property(vec!["ratelimit_status"], value);
        }
        match decision.action {
            Action::Pass => Carried::Continue(Headers::new(), decision.ticket),
            Action::Allow(headers) => Carried::Continue(headers, decision.ticket),
            Action::Refuse(reply) => {
                let headers: Vec<(&str, &str)> = reply
                    .headers
                    .iter()
                    .map(|(k, v)| (&**k, v.as_str()))
                    .collect();
                let body = Some(reply.body.as_bytes());
                let _ = proxy_wasm::hostcalls::send_http_response(reply.status, headers, body);
                Carried::Replied
            }
        }
    }

    /// Adds what happened to the stats not yet handed to Envoy.
    pub fn record(&self, events: &[Event]) {
        let mut pending = self.pending.borrow_mut();
        for event in events {
            let (rule, slot) = event.slot();
            if let Some(count) = pending.get_mut(rule).and_then(|s| s.get_mut(slot)) {
                *count = count.saturating_add(i64::try_from(event.amount()).unwrap_or(i64::MAX));
            }
        }
    }

    pub fn flush(&self) {
        let mut pending = self.pending.borrow_mut();
        for (ids, counts) in self.stats.iter().zip(pending.iter_mut()) {
            for (&id, count) in ids.iter().zip(counts.iter_mut()) {
                if *count != 0 {
                    let _ = proxy_wasm::hostcalls::increment_metric(id, *count);
                    *count = 0;
                }
            }
        }
    }
}

fn define(name: &str, kind: StatKind) -> u32 {
    let kind = match kind {
        StatKind::Counter => MetricType::Counter,
        StatKind::Gauge => MetricType::Gauge,
    };
    proxy_wasm::hostcalls::define_metric(kind, name).unwrap_or(u32::MAX)
}
