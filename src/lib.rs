//! A rate-limiting filter for Envoy and Istio, compiled to WebAssembly (proxy-wasm ABI).
//!
//! A request's way through the code: `route` picks the rule → `request` finds the client key
//! and its plan → `costs` says what the request holds in each limit → `limiter` decides against
//! the rule's limits, as a pure function of the client's page → `store` holds the pages (shared
//! data) behind one update loop the store owns → `engine` runs that pipeline for every rule that
//! applies, gives back what a refused request took, and, when the stream ends, settles what an
//! admitted one holds with what its response says (`costs` again: whether it counts, what it
//! cost) → `response` renders headers and replies. `config` is the JSON model and its reader;
//! `hash` the keyed client hash. All of it is plain Rust, tested natively; `host` is the thin
//! proxy-wasm layer (wasm32 only), which uses the engine's face alone, and `tool` the native
//! command-line tool.

mod config;
mod costs;
mod decimal;
mod engine;
mod fleet;
mod hash;
mod limiter;
mod protobuf;
mod request;
mod response;
mod route;
mod store;

#[cfg(target_arch = "wasm32")]
mod host;
#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
mod native;
#[cfg(test)]
mod testing;
#[cfg(feature = "cli")]
pub mod tool;

#[cfg(feature = "cli")]
pub use config::{parse as parse_config, parse_with_serde, FilterConfig};
pub use config::{ConfigError, ConfigErrors};
pub use engine::{
    begin, decide, settle, stat_names, Action, Call, CallHost, CasMismatch, Client, Contended,
    Decision, Event, Events, Filter, FleetSettings, FleetVerdict, HeaderName, HeaderValue, Headers,
    Memory, Progress, RefusalLog, RefusalNote, Reply, RequestStatus, RequestView, ResponseFacts,
    ResponseView, SharedStore, StatKind, Ticket, Waiting, Waitlist, FLEET_METHOD, FLEET_SERVICE,
    PAGE_LAYOUT_VERSION,
};
pub use engine::{reports, side_answered, Side, SideCall};
pub use engine::{Computed, MetadataPath};
pub use store::MemoryStore;

/// The core's inner pieces, for the accuracy simulator (`tests/accuracy.rs`) and the native
/// micro-benchmarks (`bench/micro`): not a stable API, and not in the filter's build.
#[cfg(feature = "internals")]
pub mod internals {
    pub use crate::hash::{client_hash, KeyKind};
    pub use crate::limiter::{
        Charged, Limit, LimitStatus, Limiter, Mutant, PageLayout, SlotUse, Verdict, RING,
    };
    pub use crate::request::serialize_headers;
    pub use crate::store::{update, PageKeys, Updated};

    /// What the fuzz targets (`fuzz/`) drive besides the public face.
    pub use crate::config::OnAmbiguousKey;
    pub use crate::fleet::protocol::{decode_response, Answer, Code, Malformed, Status};
    pub use crate::request::{Key, KeySource, Request};
    pub use crate::route::{canonical_segments, canonical_text, Canonical};
}
