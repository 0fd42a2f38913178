//! What the filter reads of a request (`view.rs`), and what it derives from it: the client key,
//! the client's plan and the request's cost.

mod cost;
mod key;
pub(crate) mod percent;
mod plan;
mod view;

pub use cost::Cost;
pub use key::{extract as extract_key, KeySource};
pub use plan::Plans;
pub use view::{Request, RequestView};
