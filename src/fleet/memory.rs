//! What one worker remembers of the service, per rule and client: the lease (hits reserved by
//! earlier calls, used until the sub-window they were counted in ends), a call in flight (later
//! requests join it rather than call again), a refusal (true until its sub-window ends), the
//! hits used in this and the previous sub-window (what the next lease is sized from), and, for
//! batched counting, the hits admitted locally and not yet reported.
//!
//! Leases are refilled ahead: when a lease falls under half of its last grant, the request that
//! took the hit also asks for the next one (a call no request waits for), so a client within its
//! quota never waits for the service. A new client's first call asks for the cap; a client's
//! first call of a sub-window asks for what it used in the previous one; a refill asks for twice
//! the last grant; always within `[cost, cap]`. Unused hits at a sub-window's end are lost (only
//! under-admission): at most half a grant plus one refill, so under 1.5 × cap per client and
//! worker, and under 3 × what the client used in the sub-window once it has used a grant.
//!
//! Bounded: when full, entries with nothing to report and nothing in flight go first (losing a
//! lease only under-admits; losing a refusal only costs one more call).

use std::collections::HashMap;

/// What the worker remembers for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recall {
    /// A lease covered the request; `refill`: hits to ask for now, ahead of need.
    Leased { refill: Option<u64> },
    /// The service refused this client in the current sub-window.
    Refused,
    /// A call for this client is in flight: wait for its answer.
    Join,
    /// Nothing usable: ask the service for `hits` (the request's cost and a lease).
    Ask { hits: u64 },
    /// Batched counting: admitted on the local tier's word, to be reported.
    Batched,
}

/// The clock of one recall: now, and the current sub-window's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub now: u64,
    pub sub_start: u64,
    pub sub_end: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Entry {
    /// Hits left in the lease, valid until `lease_until`.
    lease: u64,
    lease_until: u64,
    /// The size of the latest grant (0: none yet, or refills refused this sub-window).
    granted: u64,
    refused_until: u64,
    /// A call in flight for this client, until its timeout (0: none).
    asking_until: u64,
    /// The end of the sub-window `used` counts in, and the hits used in it and the one before.
    sub_end: u64,
    used: u64,
    used_before: u64,
    /// Batched counting: hits admitted and not yet reported, since when, under which plan; a
    /// report in flight; per-request calls until `probing_until` after a refused report.
    pending: u64,
    pending_since: u64,
    plan: usize,
    reporting: bool,
    probing_until: u64,
}

impl Entry {
    fn busy(&self, now: u64) -> bool {
        self.pending > 0 || self.reporting || self.asking_until > now
    }

    fn live(&self, now: u64) -> bool {
        self.busy(now)
            || self.lease_until > now
            || self.refused_until > now
            || self.probing_until > now
            || self.sub_end >= now
    }

    /// Moves `used` to the sub-window of `clock`.
    fn roll(&mut self, clock: Clock) {
        if clock.sub_end > self.sub_end {
            self.used_before = if self.sub_end == clock.sub_start {
                self.used
            } else {
                0
            };
            self.used = 0;
            self.sub_end = clock.sub_end;
        }
    }
}

/// One client's unreported hits, handed out for a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub rule: usize,
    pub client: u64,
    pub plan: usize,
    pub hits: u64,
}

#[derive(Debug, Clone)]
pub struct FleetMemory {
    entries: HashMap<(usize, u64), Entry>,
    capacity: usize,
}

impl Default for FleetMemory {
    fn default() -> Self {
        Self::with_capacity(10_000)
    }
}

impl FleetMemory {
    pub fn with_capacity(capacity: usize) -> Self {
        FleetMemory {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Uses what is remembered for `client` of `rule` for a request of `cost`, leases of at
    /// most `cap`; a call it asks for is in flight until `timeout_until`.
    pub fn recall(
        &mut self,
        (rule, client): (usize, u64),
        cost: u64,
        cap: u64,
        clock: Clock,
        timeout_until: u64,
    ) -> Recall {
        let now = clock.now;
        let entry = self.entry((rule, client), now);
        entry.roll(clock);
        if entry.refused_until > now {
            return Recall::Refused;
        }
        if entry.lease_until > now && entry.lease >= cost {
            entry.lease -= cost;
            entry.used += cost;
            let low = entry.lease.saturating_mul(2) < entry.granted;
            let refill = (low && entry.asking_until <= now).then(|| {
                entry.asking_until = timeout_until;
                entry.granted.saturating_mul(2).clamp(1, cap.max(1))
            });
            return Recall::Leased { refill };
        }
        if entry.asking_until > now {
            return Recall::Join;
        }
        let new = entry.granted == 0 && entry.lease_until == 0 && entry.used_before == 0;
        let hits = if new && entry.used == 0 {
            cap
        } else if entry.used == 0 {
            entry.used_before
        } else {
            entry.granted.saturating_mul(2)
        };
        entry.asking_until = timeout_until;
        Recall::Ask {
            hits: hits.clamp(cost, cap.max(cost)),
        }
    }

    /// The service admitted, at `now`, a request's call of `hits` for its `cost` sent at
    /// `sent` (counted in that sub-window): the rest is lease.
    pub fn leased(&mut self, key: (usize, u64), (hits, cost): (u64, u64), sent: Clock, now: u64) {
        let entry = self.entry(key, now);
        entry.asking_until = 0;
        entry.roll(sent);
        if entry.sub_end == sent.sub_end {
            entry.used += cost;
        }
        entry.add_lease(hits - cost.min(hits), sent.sub_end, now);
        entry.granted = hits;
    }

    /// The service answered, at `now`, a refill of `hits` sent at `sent`: admitted, the hits
    /// join the lease; refused (`None`), refills stop until the sub-window ends (requests then
    /// ask for their own cost).
    pub fn refilled(&mut self, key: (usize, u64), hits: Option<u64>, sent: Clock, now: u64) {
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        entry.asking_until = 0;
        match hits {
            Some(hits) => {
                entry.add_lease(hits, sent.sub_end, now);
                entry.granted = hits;
            }
            None => entry.granted = 0,
        }
    }

    /// A call for `client` is in flight again, until `until`.
    pub fn asking(&mut self, key: (usize, u64), until: u64) {
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.asking_until = until;
        }
    }

    /// A call failed: nothing is remembered of it.
    pub fn failed(&mut self, rule: usize, client: u64) {
        if let Some(entry) = self.entries.get_mut(&(rule, client)) {
            entry.asking_until = 0;
        }
    }

    /// The service refused: true until `until`.
    pub fn refused(&mut self, (rule, client): (usize, u64), until: u64, now: u64) {
        let entry = self.entry((rule, client), now);
        entry.asking_until = 0;
        entry.refused_until = until;
        entry.lease = 0;
    }
}

impl Entry {
    fn add_lease(&mut self, hits: u64, until: u64, now: u64) {
        if until <= now {
            return; // counted in a sub-window that has ended: of no use now
        }
        self.lease = if self.lease_until == until {
            self.lease + hits
        } else {
            hits
        };
        self.lease_until = until;
    }
}

/// Batched counting.
impl FleetMemory {
    /// A request of `cost` for `client` the local tier admitted: reported later, unless the
    /// client was refused (`Refused`) or is being probed after a refusal (per-request calls).
    pub fn batched(
        &mut self,
        (rule, client): (usize, u64),
        (cost, plan): (u64, usize),
        clock: Clock,
        timeout_until: u64,
    ) -> Recall {
        let now = clock.now;
        let entry = self.entry((rule, client), now);
        if entry.refused_until > now {
            return Recall::Refused;
        }
        if entry.probing_until > now {
            if entry.asking_until > now {
                return Recall::Join;
            }
            entry.asking_until = timeout_until;
            return Recall::Ask { hits: cost };
        }
        if entry.pending == 0 {
            entry.pending_since = now;
        }
        entry.pending = entry.pending.saturating_add(cost);
        entry.plan = plan;
        Recall::Batched
    }

    /// Up to `max` clients whose oldest unreported hit is at least `interval` old, their hits
    /// handed out (the report in flight until answered).
    pub fn due(&mut self, now: u64, interval: u64, max: usize) -> Vec<Report> {
        let mut reports = Vec::new();
        for (&(rule, client), entry) in &mut self.entries {
            if reports.len() >= max {
                break;
            }
            if entry.pending == 0 || entry.reporting || now < entry.pending_since + interval {
                continue;
            }
            reports.push(Report {
                rule,
                client,
                plan: entry.plan,
                hits: std::mem::take(&mut entry.pending),
            });
            entry.reporting = true;
        }
        reports
    }

    /// A report was answered: `refused` with the sub-window's end and the time until which the
    /// client's requests ask the service one by one (its count is then unknown).
    pub fn reported(&mut self, (rule, client): (usize, u64), refused: Option<(u64, u64)>) {
        if let Some(entry) = self.entries.get_mut(&(rule, client)) {
            entry.reporting = false;
            if let Some((until, probing_until)) = refused {
                entry.refused_until = until;
                entry.probing_until = probing_until;
            }
        }
    }

    /// A client being probed was refused again: it stays probed until `until`.
    pub fn keep_probing(&mut self, key: (usize, u64), until: u64) {
        if let Some(entry) = self.entries.get_mut(&key) {
            if entry.probing_until > 0 {
                entry.probing_until = entry.probing_until.max(until);
            }
        }
    }

    /// Entries held (bounded by the capacity).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.entries.len()
    }
}

impl FleetMemory {
    fn entry(&mut self, key: (usize, u64), now: u64) -> &mut Entry {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.make_room(now);
        }
        self.entries.entry(key).or_default()
    }

    /// Drops what is no longer true; if nothing is, any entry with nothing in flight or to
    /// report; if none, any.
    fn make_room(&mut self, now: u64) {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.live(now));
        if self.entries.len() < before {
            return;
        }
        let victim = self
            .entries
            .iter()
            .find(|(_, e)| !e.busy(now))
            .or_else(|| self.entries.iter().next())
            .map(|(&k, _)| k);
        if let Some(victim) = victim {
            self.entries.remove(&victim);
        }
    }
}
