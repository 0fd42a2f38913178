//! The filter's JSON configuration as operators write it: the model, the reader that names the
//! JSON path of every problem, and the error types every compile step reports with.
//!
//! Nothing here knows what the configuration means; each concept compiles its own part next to
//! its definition (routes, keys, limits, responses), and `engine::Filter` orchestrates.

mod duration;
mod error;
mod model;
mod reader;

pub use duration::format_window;
pub(crate) use duration::{parse_window, WindowSpec};
pub(crate) use error::{name_rule, valid_header_name, valid_name, Errors, Report};
pub use error::{ConfigError, ConfigErrors};
pub use model::*;

/// The largest cost, limit level or count the configuration accepts (counts are 32-bit).
pub const MAX_REQUESTS: u64 = u32::MAX as u64;

/// Parses the configuration; `Err` names the JSON path of every shape problem.
pub fn parse(bytes: &[u8]) -> Result<FilterConfig, ConfigErrors> {
    reader::read(bytes).map_err(ConfigErrors)
}

/// The same with serde's derived deserializers: the reference the reader is tested against, and
/// the types the JSON Schema is generated from.
#[cfg(feature = "cli")]
pub fn parse_with_serde(bytes: &[u8]) -> Result<FilterConfig, serde_json::Error> {
    serde_json::from_slice(bytes)
}
