//! Envoy's dynamic-module ABI, as far as this module uses it, declared here from Envoy's public
//! `source/extensions/dynamic_modules/abi/abi.h` (no SDK crate): the types, the enum values, and
//! the callbacks Envoy exports.
//!
//! The callbacks are looked up by name in the process (`dlsym`) once, when Envoy loads the module
//! ([`resolve`]): a missing one fails the load with its name, instead of a dynamic linker error
//! (or a crash) later, and the crate's native tests link without Envoy.
//!
//! On x86-64 and aarch64 a `{pointer, length}` pair passed by value travels in two registers,
//! exactly like a pointer and a length passed separately: both spellings of the ABI's buffers
//! found across Envoy versions are the same call.

use std::ffi::{c_char, c_void};
use std::sync::OnceLock;

/// The ABI version this module is built against (Envoy 1.40: "Dynamic module ABI version v0.2.0
/// matched"). Envoy compares it at load; see docs/src/deploying/native.md for other versions.
pub const ABI_VERSION: &str = "v0.2.0";
/// The same, as Envoy reads it (a C string that lives as long as the module).
pub static ABI_VERSION_C: &[u8] = b"v0.2.0\0";

/// Bytes owned by Envoy (valid until the end of the current event hook).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl EnvoyBuffer {
    pub const EMPTY: EnvoyBuffer = EnvoyBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    /// The bytes, borrowed for the current event hook.
    ///
    /// # Safety
    /// Envoy wrote this buffer in the current event hook and has not invalidated it since.
    pub unsafe fn bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() {
            return &[];
        }
        // SAFETY: per the caller's promise, `ptr` points at `length` bytes Envoy keeps alive.
        unsafe { std::slice::from_raw_parts(self.ptr, self.length) }
    }
}

/// Bytes owned by the module, lent to Envoy for one call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl ModuleBuffer {
    pub fn of(bytes: &[u8]) -> Self {
        ModuleBuffer {
            ptr: bytes.as_ptr(),
            length: bytes.len(),
        }
    }
}

/// A header owned by the module (a local reply's).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleHeader {
    pub key_ptr: *const u8,
    pub key_length: usize,
    pub value_ptr: *const u8,
    pub value_length: usize,
}

/// A header owned by Envoy (valid until the end of the current event hook).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyHeader {
    pub key_ptr: *const u8,
    pub key_length: usize,
    pub value_ptr: *const u8,
    pub value_length: usize,
}

impl EnvoyHeader {
    pub const EMPTY: EnvoyHeader = EnvoyHeader {
        key_ptr: std::ptr::null(),
        key_length: 0,
        value_ptr: std::ptr::null(),
        value_length: 0,
    };
}

/// Envoy's filter of one stream (`envoy_dynamic_module_type_http_filter_envoy_ptr`).
pub type FilterPtr = *mut c_void;
/// Envoy's filter configuration (`envoy_dynamic_module_type_http_filter_config_envoy_ptr`).
pub type ConfigPtr = *mut c_void;

// `envoy_dynamic_module_type_http_header_type`.
pub const REQUEST_HEADER: u32 = 0;
pub const RESPONSE_HEADER: u32 = 2;
// `envoy_dynamic_module_type_metadata_source`.
pub const METADATA_DYNAMIC: u32 = 0;
// `envoy_dynamic_module_type_attribute_id` (the enum's positions).
pub const ATTRIBUTE_RESPONSE_CODE: u32 = 15;
pub const ATTRIBUTE_RESPONSE_CODE_DETAILS: u32 = 16;
pub const ATTRIBUTE_SOURCE_ADDRESS: u32 = 24;
pub const ATTRIBUTE_XDS_ROUTE_NAME: u32 = 61;
// `envoy_dynamic_module_type_on_http_filter_*_status`: Continue and StopIteration, the same
// values for every phase.
pub const CONTINUE: u32 = 0;
pub const STOP_ITERATION: u32 = 1;
// `envoy_dynamic_module_type_http_callout_init_result` and `_http_callout_result`: success.
pub const CALLOUT_SUCCESS: u32 = 0;
// `envoy_dynamic_module_type_metrics_result`.
pub const METRICS_SUCCESS: u32 = 0;

/// `envoy_dynamic_module_type_log_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
}

extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

/// `RTLD_DEFAULT`: the global symbols of the process (Envoy's exported callbacks).
const RTLD_DEFAULT: *mut c_void = std::ptr::null_mut();

macro_rules! callbacks {
    ($($field:ident: fn($($arg:ty),*) $(-> $ret:ty)?;)*) => {
        /// The callbacks of Envoy this module calls, resolved by name at load.
        pub struct Callbacks {
            $(pub $field: unsafe extern "C" fn($($arg),*) $(-> $ret)?,)*
        }

        impl Callbacks {
            /// Every callback, or the name of the first one Envoy does not export.
            fn resolve() -> Result<Callbacks, &'static str> {
                Ok(Callbacks {
                    $($field: {
                        let name = concat!("envoy_dynamic_module_callback_", stringify!($field), "\0");
                        // SAFETY: `name` is a NUL-terminated symbol name.
                        let found = unsafe { dlsym(RTLD_DEFAULT, name.as_ptr().cast()) };
                        if found.is_null() {
                            return Err(&name[..name.len() - 1]);
                        }
                        // SAFETY: Envoy exports this symbol as a function of this signature
                        // (abi.h); a data pointer and a function pointer have one size here.
                        unsafe {
                            std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($arg),*) $(-> $ret)?>(found)
                        }
                    },)*
                })
            }
        }
    };
}

callbacks! {
    log: fn(u32, ModuleBuffer);
    log_enabled: fn(u32) -> bool;
    http_get_header: fn(FilterPtr, u32, ModuleBuffer, *mut EnvoyBuffer, usize, *mut usize) -> bool;
    http_get_headers_size: fn(FilterPtr, u32) -> usize;
    http_get_headers: fn(FilterPtr, u32, *mut EnvoyHeader) -> bool;
    http_set_header: fn(FilterPtr, u32, ModuleBuffer, ModuleBuffer) -> bool;
    http_add_header: fn(FilterPtr, u32, ModuleBuffer, ModuleBuffer) -> bool;
    http_send_response: fn(FilterPtr, u32, *mut ModuleHeader, usize, ModuleBuffer, ModuleBuffer);
    http_filter_get_attribute_string: fn(FilterPtr, u32, *mut EnvoyBuffer) -> bool;
    http_filter_get_attribute_int: fn(FilterPtr, u32, *mut u64) -> bool;
    http_get_metadata_string: fn(FilterPtr, u32, ModuleBuffer, ModuleBuffer, *mut EnvoyBuffer) -> bool;
    http_get_metadata_number: fn(FilterPtr, u32, ModuleBuffer, ModuleBuffer, *mut f64) -> bool;
    http_get_metadata_bool: fn(FilterPtr, u32, ModuleBuffer, ModuleBuffer, *mut bool) -> bool;
    http_get_filter_state_bytes: fn(FilterPtr, ModuleBuffer, *mut EnvoyBuffer) -> bool;
    http_set_filter_state_bytes: fn(FilterPtr, ModuleBuffer, ModuleBuffer) -> bool;
    http_filter_config_define_counter: fn(ConfigPtr, ModuleBuffer, *mut ModuleBuffer, usize, *mut usize) -> u32;
    http_filter_config_define_gauge: fn(ConfigPtr, ModuleBuffer, *mut ModuleBuffer, usize, *mut usize) -> u32;
    http_filter_increment_counter: fn(FilterPtr, usize, *mut ModuleBuffer, usize, u64) -> u32;
    http_filter_increment_gauge: fn(FilterPtr, usize, *mut ModuleBuffer, usize, u64) -> u32;
    http_filter_http_callout: fn(FilterPtr, *mut u64, ModuleBuffer, *mut ModuleHeader, usize, ModuleBuffer, u64) -> u32;
    http_filter_continue_decoding: fn(FilterPtr);
}

static CALLBACKS: OnceLock<Callbacks> = OnceLock::new();

/// Looks every callback up (once per process); the name of a missing one on failure.
pub fn resolve() -> Result<(), &'static str> {
    if CALLBACKS.get().is_none() {
        let _ = CALLBACKS.set(Callbacks::resolve()?);
    }
    Ok(())
}

/// Envoy's callbacks. Every event hook runs after a successful [`resolve`] (Envoy unloads a
/// module whose init fails), so `None` only happens outside Envoy.
pub fn envoy() -> Option<&'static Callbacks> {
    CALLBACKS.get()
}
