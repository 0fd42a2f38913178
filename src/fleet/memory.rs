//! What one worker remembers of the service's answers, per rule and client: a call in flight
//! (later requests join it rather than call again), a lease (hits reserved by one call) or a
//! refusal, each until its sub-window ends. Bounded: when full, the expired entries go first,
//! then any (losing a lease only under-admits; losing a refusal or a call in flight only costs
//! one more call).

use std::collections::HashMap;

/// What the worker remembers for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recall {
    /// A lease covered the request (its hits were taken from the lease).
    Leased,
    /// The service refused this client in the current sub-window.
    Refused,
    /// A call for this client is in flight: wait for its answer.
    Join,
    /// Nothing usable: ask the service.
    Ask,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Memo {
    Lease {
        hits: u64,
        until_ms: u64,
    },
    Refused {
        until_ms: u64,
    },
    /// Until its timeout.
    Asking {
        until_ms: u64,
    },
}

impl Memo {
    fn until_ms(self) -> u64 {
        match self {
            Memo::Lease { until_ms, .. }
            | Memo::Refused { until_ms }
            | Memo::Asking { until_ms } => until_ms,
        }
    }
}

#[derive(Debug, Clone)]
pub struct FleetMemory {
    entries: HashMap<(usize, u64), Memo>,
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

    /// Uses what is remembered for `client` of `rule` for a request of `cost` at `now_ms`.
    pub fn recall(&mut self, rule: usize, client: u64, cost: u64, now_ms: u64) -> Recall {
        let key = (rule, client);
        match self.entries.get_mut(&key) {
            Some(memo) if memo.until_ms() <= now_ms => {
                self.entries.remove(&key);
                Recall::Ask
            }
            Some(Memo::Refused { .. }) => Recall::Refused,
            Some(Memo::Asking { .. }) => Recall::Join,
            Some(Memo::Lease { hits, .. }) if *hits >= cost => {
                *hits -= cost;
                Recall::Leased
            }
            _ => Recall::Ask,
        }
    }

    /// A call for `client` of `rule` is in flight until `until_ms` (its timeout).
    pub fn asking(&mut self, rule: usize, client: u64, until_ms: u64, now_ms: u64) {
        self.insert((rule, client), Memo::Asking { until_ms }, now_ms);
    }

    /// The service admitted a call of `hits` for a request of `cost`: keep the rest as a lease
    /// (added to one of the same sub-window, when calls overlapped).
    pub fn leased(&mut self, rule: usize, client: u64, spare: u64, until_ms: u64, now_ms: u64) {
        let key = (rule, client);
        let held = match self.entries.get(&key) {
            Some(Memo::Lease { hits, until_ms: u }) if *u == until_ms => *hits,
            _ => 0,
        };
        if spare + held > 0 {
            let memo = Memo::Lease {
                hits: spare + held,
                until_ms,
            };
            self.insert(key, memo, now_ms);
        } else {
            self.entries.remove(&key);
        }
    }

    /// A call failed: nothing is remembered of it.
    pub fn failed(&mut self, rule: usize, client: u64) {
        if let Some(Memo::Asking { .. }) = self.entries.get(&(rule, client)) {
            self.entries.remove(&(rule, client));
        }
    }

    /// The service refused: true until `until_ms`.
    pub fn refused(&mut self, rule: usize, client: u64, until_ms: u64, now_ms: u64) {
        self.insert((rule, client), Memo::Refused { until_ms }, now_ms);
    }

    fn insert(&mut self, key: (usize, u64), memo: Memo, now_ms: u64) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let before = self.entries.len();
            self.entries.retain(|_, m| m.until_ms() > now_ms);
            if self.entries.len() == before {
                if let Some(&victim) = self.entries.keys().next() {
                    self.entries.remove(&victim);
                }
            }
        }
        self.entries.insert(key, memo);
    }

    /// Entries held (bounded by the capacity).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.entries.len()
    }
}
