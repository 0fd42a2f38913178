//! The filter's JSON configuration, exactly as an operator writes it.
//!
//! These types are the product's public API. They only describe the shape of the JSON; every
//! semantic check (ranges, names, templates) happens where each part is compiled into the form
//! the request path uses.

mod rule;
mod sections;
mod select;
mod shapes;

use serde::Deserialize;

pub use rule::*;
pub use sections::*;
pub use select::*;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Off: every request passes untouched, no headers are written.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `enforce` refuses over-limit requests; `shadow` counts, logs and writes headers but never refuses.
    #[serde(default)]
    pub mode: Mode,
    /// Level of the log line written for each refusal (`off`, `info`, `debug`).
    #[serde(default)]
    pub refusal_log: RefusalLog,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub response: ResponseConfig,
    /// Client tiers; limits can differ per plan.
    #[serde(default)]
    pub plans: Option<PlansConfig>,
    /// The rate limit service that counts the fleet-wide limits (those marked `"fleet": true`).
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
    pub rules: Vec<RuleConfig>,
}

fn yes() -> bool {
    true
}
