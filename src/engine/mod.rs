//! The engine: the configuration compiled as a whole ([`Filter`]), and the pipeline that decides
//! one request with it ([`decide`]). Plain Rust; the host layer only carries decisions out.

mod charge;
mod filter;
mod log;
mod pipeline;
mod rule;
mod stats;

pub use filter::Filter;
#[cfg(feature = "cli")]
pub use pipeline::Selection;
pub use pipeline::{begin, decide, Action, Decision, Progress, Waiting};
#[cfg(feature = "cli")]
pub use rule::{LimitedRule, RuleAction};
pub use stats::{stat_names, Event, StatKind};
