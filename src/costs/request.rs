//! What one request costs against a rule's limits: a fixed number, or a whole number the request
//! carries in a header, a query parameter, or dynamic metadata another filter wrote (bulk and
//! batch endpoints, an LLM request's `max_tokens`).

use crate::config::{valid_header_name, CostConfig, Errors, Report, MAX_REQUESTS};
use crate::request::{query_value, Computed, MetadataPath, Request};

/// Where a request carries its cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CostSource {
    Header(String),
    Query(Vec<u8>),
    Metadata(MetadataPath),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cost {
    Fixed(u64),
    FromRequest {
        from: CostSource,
        default: u64,
        max: u64,
    },
}

impl Cost {
    /// A rule's cost: from 1.
    pub fn compile(cost: Option<&CostConfig>, at: &str, errors: &mut Errors) -> Self {
        Self::compile_from(cost, 1, at, errors)
    }

    /// A cost whose fixed value and default are at least `min` (0 for what a request holds while
    /// its response will say what it cost).
    pub fn compile_from(
        cost: Option<&CostConfig>,
        min: u64,
        at: &str,
        errors: &mut Errors,
    ) -> Self {
        let in_range = |n: u64| (min..=MAX_REQUESTS).contains(&n);
        match cost {
            None => Cost::Fixed(1),
            Some(CostConfig::Fixed(n)) => {
                if !in_range(*n) {
                    let message = format!("must be between {min} and {MAX_REQUESTS}, got {n}");
                    errors.add(at, message);
                }
                Cost::Fixed(*n)
            }
            Some(CostConfig::FromRequest(c)) => {
                let from = source(c, at, errors);
                if !(1..=MAX_REQUESTS).contains(&c.max) {
                    let message = format!("must be between 1 and {MAX_REQUESTS}, got {}", c.max);
                    errors.add(format!("{at}.max"), message);
                }
                if c.default < min || c.default > c.max {
                    let (max, default) = (c.max, c.default);
                    let message = format!("must be between {min} and max ({max}), got {default}");
                    errors.add(format!("{at}.default"), message);
                }
                let (default, max) = (c.default, c.max);
                from.map_or(Cost::Fixed(default), |from| Cost::FromRequest {
                    from,
                    default,
                    max,
                })
            }
        }
    }

    /// The request headers the cost may read.
    pub fn headers_read(&self, out: &mut Vec<String>) {
        match self {
            Cost::FromRequest {
                from: CostSource::Header(name),
                ..
            } => out.push(name.clone()),
            Cost::FromRequest {
                from: CostSource::Query(_),
                ..
            } => out.push(":path".into()),
            _ => {}
        }
    }

    /// The cost of `request`: fixed, or the whole number it carries (missing, malformed or 0: the
    /// default; above the maximum: the maximum).
    pub fn of(&self, request: &Request) -> u64 {
        match self {
            Cost::Fixed(n) => *n,
            Cost::FromRequest { from, default, max } => {
                let carried = match from {
                    CostSource::Header(h) => request
                        .header(h)
                        .and_then(|v| Computed::Text(v).whole_number()),
                    CostSource::Query(q) => request
                        .path()
                        .and_then(|p| query_value(p, q))
                        .and_then(|v| Computed::Text(v).whole_number()),
                    CostSource::Metadata(at) => request.metadata(at).and_then(|v| v.whole_number()),
                };
                carried.filter(|&n| n > 0).map_or(*default, |n| n.min(*max))
            }
        }
    }
}

#[cfg(feature = "cli")]
impl Cost {
    /// In words, for `explain`.
    pub fn describe(&self) -> String {
        match self {
            Cost::Fixed(n) => n.to_string(),
            Cost::FromRequest { from, default, max } => {
                let from = match from {
                    CostSource::Header(h) => format!("header {h}"),
                    CostSource::Query(q) => format!("query {}", String::from_utf8_lossy(q)),
                    CostSource::Metadata(m) => format!("metadata {}/{}", m.namespace, m.key),
                };
                format!("what the request's {from} says (default {default}, max {max})")
            }
        }
    }
}

/// Exactly one of `header`, `query` or `metadata`, each valid.
fn source(c: &crate::config::CostFromRequest, at: &str, errors: &mut Errors) -> Option<CostSource> {
    let given = [c.header.is_some(), c.query.is_some(), c.metadata.is_some()];
    if given.iter().filter(|&&g| g).count() != 1 {
        errors.add(
            at,
            "give exactly one of \"header\", \"query\" or \"metadata\"",
        );
        return None;
    }
    if let Some(h) = &c.header {
        if !valid_header_name(h) {
            errors.add(
                format!("{at}.header"),
                format!("{h:?} is not a header name"),
            );
        }
        return Some(CostSource::Header(h.to_ascii_lowercase()));
    }
    if let Some(q) = &c.query {
        if q.is_empty() {
            errors.add(
                format!("{at}.query"),
                "a query parameter name may not be empty",
            );
        }
        return Some(CostSource::Query(q.clone().into_bytes()));
    }
    let m = c.metadata.as_ref()?;
    let at = format!("{at}.metadata");
    MetadataPath::compile((&m.namespace, &m.key, &m.path), &at, errors).map(CostSource::Metadata)
}
