//! A rule's limit levels: per plan, fixed at load; or, for a limit with `requests_from`, per
//! request from a trusted source (a header a trusted filter sets, or dynamic metadata), bounded
//! by its `max`, the plan's level when the source has no usable value.

use std::borrow::Cow;

use crate::config::{valid_header_name, Errors, Report, RequestsFrom, MAX_REQUESTS};
use crate::request::{Computed, MetadataPath, Request};

/// Where a per-request level comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum From {
    Header(String),
    Metadata(MetadataPath),
}

/// A per-request level's source and bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelSource {
    from: From,
    pub max: u64,
}

impl LevelSource {
    /// Exactly one of `header` or `metadata`, and a `max` from 1 to the largest count.
    pub fn compile(config: &RequestsFrom, at: &str, errors: &mut Errors) -> Option<Self> {
        if !(1..=MAX_REQUESTS).contains(&config.max) {
            let message = format!("must be between 1 and {MAX_REQUESTS}, got {}", config.max);
            errors.add(format!("{at}.max"), message);
        }
        let from = match (&config.header, &config.metadata) {
            (Some(header), None) => {
                if !valid_header_name(header) {
                    let message = format!("{header:?} is not a header name");
                    errors.add(format!("{at}.header"), message);
                }
                From::Header(header.to_ascii_lowercase())
            }
            (None, Some(m)) => {
                let at = format!("{at}.metadata");
                From::Metadata(MetadataPath::compile(
                    (&m.namespace, &m.key, &m.path),
                    &at,
                    errors,
                )?)
            }
            _ => {
                errors.add(at, "give exactly one of \"header\" or \"metadata\"");
                return None;
            }
        };
        let max = config.max.clamp(1, MAX_REQUESTS);
        Some(LevelSource { from, max })
    }

    /// The level the request's source gives: a whole number from 1, at most `max`; `None` when
    /// the value is missing, not a whole number, or 0.
    fn read(&self, request: &Request) -> Option<u64> {
        let value = match &self.from {
            From::Header(name) => Computed::Text(request.header(name)?).whole_number(),
            From::Metadata(at) => request.metadata(at)?.whole_number(),
        };
        value.filter(|&n| n > 0).map(|n| n.min(self.max))
    }

    /// How `explain` names the source.
    #[cfg(feature = "cli")]
    pub fn describe(&self) -> String {
        match &self.from {
            From::Header(name) => format!("header {name} (at most {})", self.max),
            From::Metadata(at) => format!(
                "metadata {}/{}{} (at most {})",
                at.namespace,
                at.key,
                at.path.iter().map(|p| format!(".{p}")).collect::<String>(),
                self.max
            ),
        }
    }
}

/// Every limit's level: `by_plan[plan][limit]`, and the limits' per-request sources.
#[derive(Debug, Clone)]
pub struct Levels {
    by_plan: Vec<Vec<u64>>,
    /// Per limit; empty when no limit of the rule takes its level from the request.
    sources: Vec<Option<LevelSource>>,
}

impl Levels {
    pub fn new(by_plan: Vec<Vec<u64>>, sources: Vec<Option<LevelSource>>) -> Self {
        let sources = if sources.iter().any(Option::is_some) {
            sources
        } else {
            Vec::new()
        };
        Levels { by_plan, sources }
    }

    /// The levels fixed for `plan` (0: not enforced).
    pub fn of(&self, plan: usize) -> &[u64] {
        &self.by_plan[plan]
    }

    /// Whether some level comes from the request (so a client's levels may change between its
    /// requests).
    pub fn per_request(&self) -> bool {
        !self.sources.is_empty()
    }

    /// The levels of one request of `plan`: the plan's, with each per-request source's value
    /// where it gives one.
    pub fn for_request(&self, plan: usize, request: &Request) -> Cow<'_, [u64]> {
        let fixed = self.of(plan);
        if self.sources.is_empty() {
            return Cow::Borrowed(fixed);
        }
        let levels = fixed.iter().zip(&self.sources).map(|(&level, source)| {
            source
                .as_ref()
                .and_then(|s| s.read(request))
                .unwrap_or(level)
        });
        Cow::Owned(levels.collect())
    }

    /// The request headers the levels may read.
    pub fn headers_read(&self, out: &mut Vec<String>) {
        for source in self.sources.iter().flatten() {
            if let From::Header(name) = &source.from {
                out.push(name.clone());
            }
        }
    }

    /// The per-request source of limit `limit`, if it has one.
    #[cfg(feature = "cli")]
    pub fn source(&self, limit: usize) -> Option<&LevelSource> {
        self.sources.get(limit)?.as_ref()
    }
}
