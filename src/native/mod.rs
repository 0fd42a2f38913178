//! The Envoy dynamic-module host (`envoy.filters.http.dynamic_modules`, ABI v0.2.0): the same
//! engine as the proxy-wasm filter, in a native shared library (`make build-native` →
//! `target/filter/libenvoy_ratelimit.so`, module `envoy_ratelimit`, filter `ratelimit`, the JSON
//! configuration as a `StringValue` in `filter_config`). Thin by design, like `src/host/`: it
//! translates Envoy's event hooks and callbacks for the engine ([`crate::engine`], its face and
//! nothing else of the crate), with its own store (`store`, in place and sharded) in place of
//! proxy-wasm shared data. No panic crosses the C boundary (`guard`).
//!
//! Every event hook Envoy requires is exported here; the ones this filter has no use for
//! continue at once.

mod abi;
mod carry;
mod config;
mod fleet;
mod guard;
mod store;
mod stream;
mod support;
mod unused;
mod view;

use std::ffi::c_void;
use std::sync::Arc;

use abi::{ConfigPtr, EnvoyBuffer, EnvoyHeader, FilterPtr};
use config::Config;
use guard::guarded;
use stream::RateLimitStream;
use view::Stream;

use crate::engine::{HeaderName, HeaderValue, Reply};

/// Envoy loads the module: the ABI version it was built for, or null (Envoy unloads it) when a
/// callback it needs is missing from this Envoy.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const u8 {
    guarded(
        "program init",
        || {
            guard::install_logger();
            match abi::resolve() {
                Ok(()) => abi::ABI_VERSION_C.as_ptr(),
                Err(missing) => {
                    eprintln!(
                        "ratelimit: this Envoy does not export {missing}: the module needs \
                         dynamic-module ABI {} (Envoy 1.40)",
                        abi::ABI_VERSION
                    );
                    std::ptr::null()
                }
            }
        },
        std::ptr::null,
    )
}

/// A filter configuration: compiled, or rejected (null) with every problem logged.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_ptr: ConfigPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    let load = || {
        let envoy = abi::envoy()?;
        // SAFETY: Envoy passes both buffers valid for this hook.
        let (name, json) = unsafe { (name.bytes(), config.bytes()) };
        if name != b"ratelimit" {
            let name = String::from_utf8_lossy(name);
            log::error!("ratelimit: unknown filter_name {name:?} (this module has \"ratelimit\")");
            return None;
        }
        Config::load(envoy, config_ptr, json).map(Arc::new)
    };
    match guarded("loading a configuration", load, || None) {
        Some(config) => Arc::into_raw(config).cast(),
        None => std::ptr::null(),
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    // SAFETY: `config` came from `Arc::into_raw` in `config_new`; Envoy destroys it once.
    drop(unsafe { Arc::from_raw(config.cast::<Config>()) });
}

/// Per-route configuration is not supported: rejected (the filter is configured per listener;
/// its rules select routes themselves).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: EnvoyBuffer,
    _config: EnvoyBuffer,
) -> *const c_void {
    log::error!("ratelimit: per-route configuration is not supported (rules select routes)");
    std::ptr::null()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(_: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    filter: FilterPtr,
) -> *const c_void {
    // SAFETY: `config` is alive (Envoy keeps a configuration while its filters live); the
    // count is raised for the stream's own reference.
    let config = unsafe {
        Arc::increment_strong_count(config.cast::<Config>());
        Arc::from_raw(config.cast::<Config>())
    };
    Box::into_raw(Box::new(RateLimitStream::new(config, filter as usize))).cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: *const c_void) {
    // SAFETY: `filter` came from `Box::into_raw` in `filter_new`; Envoy destroys it once.
    let ours = unsafe { Box::from_raw(filter.cast_mut().cast::<RateLimitStream>()) };
    // A request waiting for the rate limit service leaves this worker's list; its calls fail.
    guarded(
        "ending a stream",
        || fleet::gone(ours.id, &ours.config),
        || (),
    );
}

/// A callout (a call to the rate limit service) is over: every request that waited on it is
/// decided, on its behalf.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    envoy_ptr: FilterPtr,
    module: *const c_void,
    callout: u64,
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    body: *const EnvoyBuffer,
    body_size: usize,
) {
    // SAFETY: a stream's hook (see `parts`).
    let Some((stream, ours)) = (unsafe { parts(envoy_ptr, module) }) else {
        return;
    };
    let config = ours.config.clone();
    let answer = || {
        // SAFETY: Envoy's arrays for this hook.
        let verdict = unsafe { fleet::verdict_of(result, headers, headers_size, body, body_size) };
        fleet::answered(stream, &config, callout, verdict);
    };
    guarded("reading the rate limit service's answer", answer, || {
        config.record_panic(stream)
    });
}

/// The stream of a hook, and ours.
///
/// # Safety
/// `module` came from `filter_new` and is not destroyed; Envoy runs one hook of a stream at once.
unsafe fn parts<'a>(
    envoy_ptr: FilterPtr,
    module: *const c_void,
) -> Option<(Stream, &'a mut RateLimitStream)> {
    let envoy = abi::envoy()?;
    // SAFETY: per the caller's promise.
    let ours = unsafe { &mut *module.cast_mut().cast::<RateLimitStream>() };
    Some((
        Stream {
            filter: envoy_ptr,
            envoy,
        },
        ours,
    ))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy_ptr: FilterPtr,
    module: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: a stream's hook (see `parts`).
    let Some((stream, ours)) = (unsafe { parts(envoy_ptr, module) }) else {
        return abi::CONTINUE;
    };
    let config = ours.config.clone();
    guarded(
        "deciding a request",
        || ours.on_request_headers(stream),
        || {
            config.record_panic(stream);
            carry::send(stream, &failure_reply(), b"ratelimit_module_failure");
            abi::STOP_ITERATION
        },
    )
}

/// The reply to a request whose decision failed (a bug, caught): that request fails closed, as a
/// trapping Wasm filter's does under every failure policy but the legacy `fail_open: true`, and
/// says so truthfully; the module goes on with the next request (docs/src/operating/failures.md).
fn failure_reply() -> Reply {
    let body = "{\"error\":\"rate_limit_failure\",\"message\":\"The rate limiter failed on this \
                request.\"}";
    Reply {
        status: 500,
        headers: vec![(
            HeaderName::from("content-type"),
            HeaderValue::from("application/json"),
        )],
        body: body.to_string(),
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    envoy_ptr: FilterPtr,
    module: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: a stream's hook (see `parts`).
    let Some((stream, ours)) = (unsafe { parts(envoy_ptr, module) }) else {
        return abi::CONTINUE;
    };
    let config = ours.config.clone();
    let fail = || {
        config.record_panic(stream);
        abi::CONTINUE
    };
    guarded(
        "writing response headers",
        || ours.on_response_headers(stream),
        fail,
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    envoy_ptr: FilterPtr,
    module: *const c_void,
) {
    // SAFETY: a stream's hook (see `parts`).
    let Some((stream, ours)) = (unsafe { parts(envoy_ptr, module) }) else {
        return;
    };
    let config = ours.config.clone();
    let fail = || config.record_panic(stream);
    guarded(
        "settling a request",
        || ours.on_stream_complete(stream),
        fail,
    )
}
