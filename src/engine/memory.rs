//! What one worker remembers between requests: the rate limit service's answers, and the
//! refusals it gave that are still true. Per worker, bounded, dropped with its configuration.

use super::filter::Filter;
use super::refusals::RefusalMemory;
use crate::fleet::FleetMemory;

#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// Leases, refusals and calls in flight of the rate limit service.
    pub(crate) fleet: FleetMemory,
    /// Refusals of the local tier that stay true until their retry time.
    pub(crate) refusals: RefusalMemory,
}

/// The fewest and the most clients a worker remembers of the service's answers.
const FLEET_ENTRIES: (u64, u64) = (10_000, 100_000);

impl Memory {
    /// A worker's memory for `filter`: its fleet part holds as many clients as the store
    /// tracks (`store.max_clients`), within 10,000 to 100,000 (about 120 bytes each), so that
    /// leases and unreported hits of the clients the store counts are not pushed out.
    pub fn for_filter(filter: &Filter) -> Self {
        let (least, most) = FLEET_ENTRIES;
        let entries = filter.store.max_clients.clamp(least, most);
        Self::with_fleet_capacity(entries as usize)
    }

    /// A memory whose fleet part holds at most `fleet_entries` clients.
    pub fn with_fleet_capacity(fleet_entries: usize) -> Self {
        Memory {
            fleet: FleetMemory::with_capacity(fleet_entries),
            refusals: RefusalMemory::default(),
        }
    }
}
