//! A fault for tests, compiled only with the cargo feature `trap-on-demand` (never in a shipped
//! build: `make build` and `make build-native` leave it out; `make build-trap` builds the test
//! copies into `target/filter/test/`). A request carrying the header [`TRAP_HEADER`] panics
//! inside the filter once its decision is made and its hits counted, as a bug there would. In
//! the Wasm build a panic aborts, V8 traps and Envoy's failure policy takes over; the native
//! module catches it at the C boundary (`src/native/guard.rs`).

use crate::request::RequestView;

/// The request header that makes the test build panic.
pub const TRAP_HEADER: &str = "x-ratelimit-test-trap";

/// Panics when the request carries [`TRAP_HEADER`].
pub fn on_demand(view: &dyn RequestView) {
    if view.header(TRAP_HEADER).is_some() {
        panic!("ratelimit: trap on demand ({TRAP_HEADER}), a test build");
    }
}

/// Said once per configuration loaded, so that a test build cannot pass unnoticed.
pub fn warn_loaded() {
    log::warn!(
        "ratelimit: this is a TEST build (feature trap-on-demand): a request with the header \
         {TRAP_HEADER} crashes the filter; never ship it"
    );
}
