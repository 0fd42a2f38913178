//! What one worker remembers between requests: the rate limit service's answers, and the
//! refusals it gave that are still true. Per worker, bounded, dropped with its configuration.

use super::refusals::RefusalMemory;
use crate::fleet::FleetMemory;

#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// Leases, refusals and calls in flight of the rate limit service.
    pub(crate) fleet: FleetMemory,
    /// Refusals of the local tier that stay true until their retry time.
    pub(crate) refusals: RefusalMemory,
}

impl Memory {
    /// A memory whose fleet part holds at most `fleet_entries` clients.
    pub fn with_fleet_capacity(fleet_entries: usize) -> Self {
        Memory {
            fleet: FleetMemory::with_capacity(fleet_entries),
            refusals: RefusalMemory::default(),
        }
    }
}
