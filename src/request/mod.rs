//! What the filter reads of a request (`view.rs`), and what it derives from it: the client key
//! and the client's plan (what it costs is `crate::costs`).

mod address;
mod headers;
mod key;
pub(crate) mod percent;
mod plan;
mod values;
mod view;

pub use address::client_ip;
#[cfg(any(test, feature = "internals"))]
pub use headers::serialize as serialize_headers;
#[cfg(any(test, feature = "internals"))]
pub use key::KeySource;
pub use key::{Key, MAX_TRUSTED_HOPS};
pub use plan::Plans;
pub use values::query_value;
pub use view::{Computed, MetadataPath, Request, RequestView};
