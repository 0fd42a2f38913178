//! The engine: the configuration compiled as a whole ([`Filter`]), the pipeline that decides
//! one request with it ([`begin`]), the settling of what an admitted request holds when its
//! stream ends ([`settle`]), and the bookkeeping of requests that wait for the rate limit
//! service ([`Waitlist`]). Plain Rust, host-neutral.
//!
//! This module is the engine's face: everything a host (the proxy-wasm filter, the native
//! module) uses is here, and a host imports nothing else of the crate.

mod filter;
mod ledger;
mod levels;
mod log;
mod memory;
mod pipeline;
mod refusals;
mod rule;
mod settle;
mod stats;
#[cfg(feature = "trap-on-demand")]
mod trap;
mod waitlist;

pub use filter::Filter;
pub use log::{RefusalLog, RefusalNote};
pub use memory::Memory;
pub use pipeline::{
    begin, decide, reports, side_answered, Action, Decision, Progress, RequestStatus, Side,
    SideCall, Waiting,
};
pub use settle::{settle, Ticket};
pub use stats::{stat_names, Event, Events, StatKind};
pub use waitlist::{Call, CallHost, Client, Waitlist};

// What hosts hand the engine, and what they carry out, defined where it belongs.
pub use crate::costs::{ResponseFacts, ResponseView};
pub use crate::fleet::protocol::{METHOD as FLEET_METHOD, SERVICE as FLEET_SERVICE};
pub use crate::fleet::{FleetSettings, Verdict as FleetVerdict};
/// The shared-data page layout's version this build reads and writes (logged at load).
pub use crate::limiter::LAYOUT_VERSION as PAGE_LAYOUT_VERSION;
pub use crate::request::{Computed, MetadataPath, RequestView};
pub use crate::response::{HeaderName, HeaderValue, Headers, Reply};
/// The shared-data semantics a host's store keeps (for the native store's tests).
#[cfg(test)]
pub use crate::store::assert_shared_data_semantics;
pub use crate::store::{CasMismatch, Contended, SharedStore};

#[cfg(feature = "cli")]
pub use pipeline::Selection;
#[cfg(feature = "cli")]
pub use rule::{LimitedRule, RuleAction};
