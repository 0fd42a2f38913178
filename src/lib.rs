//! A rate-limiting filter for Envoy and Istio, compiled to WebAssembly (proxy-wasm ABI).
//!
//! A request's way through the code: `route` picks the rule → `request` finds the client key,
//! its plan and the cost → `limiter` decides against the rule's limits, as a pure function of
//! the client's page → `store` holds the pages (shared data) behind one compare-and-swap loop →
//! `engine` runs that pipeline for every rule that applies and gives back what a refused request
//! took → `response` renders headers and replies. `config` is the JSON model and its reader.
//! All of it is plain Rust, tested natively; `host` is the thin proxy-wasm layer (wasm32 only)
//! and `tool` the native command-line tool.

mod config;
mod decimal;
mod engine;
mod fleet;
mod limiter;
mod request;
mod response;
mod route;
mod store;

#[cfg(target_arch = "wasm32")]
mod host;
#[cfg(test)]
mod testing;
#[cfg(feature = "cli")]
pub mod tool;

#[cfg(feature = "cli")]
pub use config::{parse as parse_config, parse_with_serde, FilterConfig};
pub use config::{ConfigError, ConfigErrors};
pub use engine::{
    begin, decide, stat_names, Action, Decision, Event, Events, Filter, Memory, Progress, StatKind,
    Waiting,
};
pub use fleet::{FleetSettings, Verdict as FleetVerdict};
pub use request::RequestView;
pub use response::{HeaderName, HeaderValue, Headers, Reply};
pub use store::{CasMismatch, MemoryStore, SharedStore};

/// The core's inner pieces, for the accuracy simulator (`tests/accuracy.rs`) and the native
/// micro-benchmarks (`bench/micro`): not a stable API, and not in the filter's build.
#[cfg(feature = "internals")]
pub mod internals {
    pub use crate::limiter::{
        Charged, Limit, LimitStatus, Limiter, Mutant, PageLayout, SlotUse, Verdict, RING,
    };
    pub use crate::request::{client_hash, KeyKind};
    pub use crate::store::{update, Contended, PageKeys, Updated};
}
