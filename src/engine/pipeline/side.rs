//! Calls to the rate limit service that no request waits for: a lease refilled ahead of need
//! (made by the request that took the lease under half its grant), and batched counting's
//! reports (made on the host's timer). The host sends them and hands the answer back
//! ([`side_answered`]); requests that ran out of lease while a refill was in flight wait for it.

use crate::config::FleetCounting;
use crate::engine::filter::Filter;
use crate::engine::memory::Memory;
use crate::engine::stats::{Event, Events, Stat};
use crate::fleet::{Clock, FleetCall, Verdict};

/// What a side call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// More hits for a client's lease: requests of the client that run out wait for it.
    Refill,
    /// A client's admitted hits, counted after the fact: nobody waits for it.
    Report,
}

/// A call to send with no request waiting for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideCall {
    rule: usize,
    client: u64,
    call: FleetCall,
    sent: Clock,
    kind: Side,
}

impl SideCall {
    pub(super) fn refill(key: (usize, u64), call: FleetCall, sent: Clock) -> Self {
        SideCall {
            rule: key.0,
            client: key.1,
            call,
            sent,
            kind: Side::Refill,
        }
    }

    /// Whose call it is: (rule, client as the service knows it).
    pub fn client(&self) -> (usize, u64) {
        (self.rule, self.client)
    }

    pub fn kind(&self) -> Side {
        self.kind
    }

    /// The protobuf `RateLimitRequest`.
    pub fn encode(&self) -> Vec<u8> {
        self.call.encode()
    }

    /// The call, as the service will read it.
    #[cfg(test)]
    pub(crate) fn call(&self) -> &FleetCall {
        &self.call
    }

    /// Hits the call asks for.
    pub fn hits(&self) -> u64 {
        self.call.hits
    }
}

/// The service's `verdict` on side call `side`, at `now`: what the worker remembers changes
/// (a lease grows, refills stop, a client is refused); the events to record.
pub fn side_answered(
    filter: &Filter,
    memory: &mut Memory,
    side: &SideCall,
    verdict: Verdict,
    now: u64,
) -> Events {
    let (rule, key) = (side.rule, side.client());
    let mut events = Events::new();
    let mut event = |stat| events.push(Event::Rule { rule, stat });
    event(Stat::FleetCalls);
    let fleet = &mut memory.fleet;
    match (side.kind, verdict) {
        (Side::Refill, Verdict::Admitted) => {
            event(Stat::FleetRefills);
            fleet.refilled(key, Some(side.call.hits), side.sent, now);
        }
        (Side::Refill, Verdict::OverLimit) => {
            event(Stat::FleetRefills);
            fleet.refilled(key, None, side.sent, now);
        }
        (Side::Report, Verdict::OverLimit) => {
            event(Stat::FleetReports);
            event(Stat::FleetReportRefused);
            let (settings, limited) = (filter.fleet.as_ref(), filter.limited(rule));
            if let Some((s, f)) = settings.zip(limited.and_then(|l| l.fleet.as_ref())) {
                let until = f.clock(s, now).sub_end;
                fleet.reported(key, Some((until, f.retry_at(s, now))));
            }
        }
        (Side::Report, _) => {
            event(Stat::FleetReports);
            fleet.reported(key, None);
        }
        (Side::Refill, Verdict::Failed) => fleet.failed(rule, side.client),
    }
    if verdict == Verdict::Failed {
        event(Stat::FleetFailed);
    }
    events
}

/// Batched counting: the reports due at `now` (clients whose oldest unreported hit is a batch
/// interval old), at most `max`.
pub fn reports(filter: &Filter, memory: &mut Memory, now: u64, max: usize) -> Vec<SideCall> {
    let Some(settings) = filter.fleet.as_ref() else {
        return Vec::new();
    };
    if settings.counting != FleetCounting::Batched || max == 0 {
        return Vec::new();
    }
    let due = memory.fleet.due(now, settings.batch_interval_ms, max);
    due.into_iter()
        .filter_map(|report| {
            let fleet = filter.limited(report.rule)?.fleet.as_ref()?;
            let plan = filter.plans.shown(report.plan);
            let call = FleetCall {
                domain: fleet.domain.clone(),
                descriptors: fleet.descriptors(settings, report.client, plan, now),
                hits: report.hits,
            };
            Some(SideCall {
                rule: report.rule,
                client: report.client,
                call,
                sent: fleet.clock(settings, now),
                kind: Side::Report,
            })
        })
        .collect()
}
