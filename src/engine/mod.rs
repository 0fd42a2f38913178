//! The engine: the configuration compiled as a whole ([`Filter`]), and the pipeline that decides
//! one request with it ([`decide`]). Plain Rust; the host layer only carries decisions out.

mod charge;
mod filter;
mod log;
mod memory;
mod pipeline;
mod refusals;
mod rule;
mod stats;

pub use filter::Filter;
pub use memory::Memory;
#[cfg(feature = "cli")]
pub use pipeline::Selection;
pub use pipeline::{begin, decide, Action, Decision, Progress, Waiting};
#[cfg(feature = "cli")]
pub use rule::{LimitedRule, RuleAction};
pub use stats::{stat_names, Event, Events, StatKind};
