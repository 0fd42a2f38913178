//! A rate-limiting filter for Envoy and Istio, compiled to WebAssembly (proxy-wasm ABI).
//!
//! The core (config, routing, keys, the sliding window, the store, rendering) is plain Rust and
//! tested natively; `host` is the thin proxy-wasm layer, built only for `wasm32`.

pub mod body_template;
pub mod client_hash;
pub mod client_key;
pub mod config;
pub mod config_reader;
pub mod config_tool;
pub mod duration;
pub mod engine;
pub mod limiter;
pub mod metrics;
pub mod page_codec;
pub mod policy;
pub mod request_path;
pub mod response;
pub mod route_match;
pub mod sliding_window;
pub mod store;
pub mod time_format;

#[cfg(target_arch = "wasm32")]
mod host;
