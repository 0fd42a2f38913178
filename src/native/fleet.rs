//! The fleet tier in the native module: not carried out yet. Envoy 1.40's ABI has what it needs
//! (a filter's or a configuration's HTTP callout and HTTP streams, `continue_decoding` to resume
//! a request that waited), but the module does not call the rate limit service yet: a
//! configuration with fleet-wide limits is rejected at load, with its JSON path, rather than
//! run with its fleet limits silently counted per process. Kept in its own file for the fleet
//! tier's coming changes (leases refilled ahead of need, batched reports).

use crate::engine::Filter;

/// Whether the module can run `filter`: `Err` names what it cannot, with the JSON path.
pub fn supported(filter: &Filter) -> Result<(), String> {
    match filter.fleet_service() {
        None => Ok(()),
        Some(_) => Err(
            "$.fleet: the native module does not call the rate limit service yet; \
             run fleet-wide limits with the Wasm filter (docs/src/deploying/native.md)"
                .to_string(),
        ),
    }
}
