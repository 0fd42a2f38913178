//! What the host offers the engine: shared data as the store, and the request being decided.
//! Both go through the host calls of the *effective* context, so the root can decide on behalf
//! of a request it resumes.

use std::time::UNIX_EPOCH;

use proxy_wasm::traits::Context;
use proxy_wasm::types::{MapType, Status};

use crate::engine::{CasMismatch, Computed, MetadataPath, RequestView, ResponseView, SharedStore};

/// proxy-wasm shared data: one map per VM id, shared by every worker thread.
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        proxy_wasm::hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasMismatch> {
        proxy_wasm::hostcalls::set_shared_data(key, Some(value), cas).map_err(|_| CasMismatch)
    }
}

/// The request of the effective context, read on demand (the engine reads each attribute at
/// most once).
pub struct HostRequest;

impl RequestView for HostRequest {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        proxy_wasm::hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }
    fn source_address(&self) -> Option<Vec<u8>> {
        property(&["source", "address"])
    }
    fn route_name(&self) -> Option<Vec<u8>> {
        property(&["xds", "route_name"])
    }
    fn metadata(&self, at: &MetadataPath) -> Option<Computed> {
        metadata(at)
    }
    fn filter_state(&self, key: &str) -> Option<Vec<u8>> {
        property(&["filter_state", key])
    }
    fn header_map(&self) -> Option<Vec<u8>> {
        request_header_map()
    }
}

/// The response of the effective context as its stream ends (read in `on_log`, where Envoy
/// still holds the response headers and the stream's metadata).
pub struct HostResponse;

impl ResponseView for HostResponse {
    fn status(&self) -> Option<u32> {
        response_status()
    }
    fn local_reply(&self) -> bool {
        // Envoy says `via_upstream` of a response the upstream sent; anything else (a filter's
        // reply, a timeout, a reset before the response) was made in Envoy.
        property(&["response", "code_details"]).is_some_and(|d| d != b"via_upstream")
    }
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        proxy_wasm::hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
            .ok()
            .flatten()
    }
    fn metadata(&self, at: &MetadataPath) -> Option<Computed> {
        metadata(at)
    }
}

/// A value in the stream's dynamic metadata.
fn metadata(at: &MetadataPath) -> Option<Computed> {
    let mut path = vec!["metadata", "filter_metadata", &at.namespace, &at.key];
    path.extend(at.path.iter().map(String::as_str));
    property(&path).map(Computed::from_proxy_wasm)
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
}

/// Every request header, as the host serializes them: one host call, the bytes left as they
/// come (the SDK's reader would copy each name and value into a string of its own).
fn request_header_map() -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a buffer it allocated through this module's allocator
    // (`proxy_on_memory_allocate`, the SDK's: a `Vec<u8>` of `size` bytes), which is ours to free.
    let status =
        unsafe { proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size) };
    if status != Status::Ok || data.is_null() {
        return None;
    }
    // SAFETY: as above: `data` holds `size` bytes allocated as a `Vec<u8>` of that capacity.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// A property of the effective context (`get_property`).
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    proxy_wasm::hostcalls::get_property(path.to_vec())
        .ok()
        .flatten()
}

/// The status of the response, when there is one (`response.code`, an i64 little-endian).
fn response_status() -> Option<u32> {
    let bytes: [u8; 8] = property(&["response", "code"])?.try_into().ok()?;
    u32::try_from(i64::from_le_bytes(bytes))
        .ok()
        .filter(|&s| s > 0)
}

/// The wall clock in milliseconds.
pub fn now_ms(context: &dyn Context) -> u64 {
    context
        .get_current_time()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A random number per call (a per-process hash seed, a queue name).
pub fn random(context: &dyn Context) -> u64 {
    let state = std::collections::hash_map::RandomState::new();
    std::hash::BuildHasher::hash_one(&state, context.get_current_time())
}
