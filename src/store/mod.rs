//! The shared key-value store the limiter counts in, behind a trait that owns the one update
//! loop every writer goes through (compare-and-swap by default; in place where a store can).
//!
//! In Envoy it is proxy-wasm shared data (see `host/io.rs`); in tests, [`MemoryStore`], which
//! reproduces the host's semantics exactly: every write stamps a fresh global cas, a write with a
//! non-zero cas must match, and a write to a missing key succeeds whatever cas it carries. Every
//! key name the filter writes is made in [`keys`].

mod keys;
mod memory;
mod seed;
mod settings;
mod shared;

pub use keys::{seed_key, PageKey, PageKeys};
pub use memory::MemoryStore;
pub use seed::shared_seed;
pub use settings::StoreSettings;
#[cfg(test)]
pub use shared::assert_shared_data_semantics;
pub use shared::{update, CasMismatch, Contended, SharedStore, Updated};
