//! The event hooks Envoy requires of every HTTP filter module that this filter has no use for:
//! bodies and trailers pass, and it starts no HTTP stream or scheduled event of its own (its
//! callouts' answers arrive in `mod.rs`).

use std::ffi::c_void;

use super::abi::{self, EnvoyBuffer, FilterPtr};

macro_rules! passing {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[no_mangle]
        pub extern "C" fn $name(_filter: FilterPtr, _module: *const c_void $(, $arg: $ty)*) -> u32 {
            $(let _ = $arg;)*
            abi::CONTINUE
        }
    )*};
}

passing! {
    envoy_dynamic_module_on_http_filter_request_body(end_of_stream: bool);
    envoy_dynamic_module_on_http_filter_request_trailers();
    envoy_dynamic_module_on_http_filter_response_body(end_of_stream: bool);
    envoy_dynamic_module_on_http_filter_response_trailers();
}

macro_rules! ignored {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[no_mangle]
        pub extern "C" fn $name(_filter: FilterPtr, _module: *const c_void $(, $arg: $ty)*) {
            $(let _ = $arg;)*
        }
    )*};
}

ignored! {
    envoy_dynamic_module_on_http_filter_http_stream_headers(
        id: u64, headers: *mut c_void, headers_size: usize, end_stream: bool
    );
    envoy_dynamic_module_on_http_filter_http_stream_data(
        id: u64, data: *const EnvoyBuffer, data_count: usize, end_stream: bool
    );
    envoy_dynamic_module_on_http_filter_http_stream_trailers(
        id: u64, trailers: *mut c_void, trailers_size: usize
    );
    envoy_dynamic_module_on_http_filter_http_stream_complete(id: u64);
    envoy_dynamic_module_on_http_filter_http_stream_reset(id: u64, reason: u32);
    envoy_dynamic_module_on_http_filter_scheduled(event_id: u64);
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark();
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark();
}
