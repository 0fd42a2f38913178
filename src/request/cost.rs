//! What one request costs against a rule's limits: a fixed number, or a whole number read from a
//! header or query parameter (bulk and batch endpoints).

use super::values::query_value;
use super::view::Request;
use crate::config::{valid_header_name, CostConfig, Errors, Report, MAX_REQUESTS};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cost {
    Fixed(u64),
    FromRequest {
        header: Option<String>,
        query: Option<Vec<u8>>,
        default: u64,
        max: u64,
    },
}

impl Cost {
    pub fn compile(cost: Option<&CostConfig>, at: &str, errors: &mut Errors) -> Self {
        let in_range = |n: u64| (1..=MAX_REQUESTS).contains(&n);
        match cost {
            None => Cost::Fixed(1),
            Some(CostConfig::Fixed(n)) => {
                if !in_range(*n) {
                    errors.add(at, format!("must be between 1 and {MAX_REQUESTS}, got {n}"));
                }
                Cost::Fixed(*n)
            }
            Some(CostConfig::FromRequest(c)) => {
                if c.header.is_some() == c.query.is_some() {
                    errors.add(at, "give exactly one of \"header\" or \"query\"");
                }
                if let Some(h) = c.header.as_ref().filter(|h| !valid_header_name(h)) {
                    errors.add(
                        format!("{at}.header"),
                        format!("{h:?} is not a header name"),
                    );
                }
                if c.query.as_ref().is_some_and(|q| q.is_empty()) {
                    errors.add(
                        format!("{at}.query"),
                        "a query parameter name may not be empty",
                    );
                }
                if !in_range(c.max) {
                    let message = format!("must be between 1 and {MAX_REQUESTS}, got {}", c.max);
                    errors.add(format!("{at}.max"), message);
                }
                if c.default == 0 || c.default > c.max {
                    let message =
                        format!("must be between 1 and max ({}), got {}", c.max, c.default);
                    errors.add(format!("{at}.default"), message);
                }
                Cost::FromRequest {
                    header: c.header.as_ref().map(|h| h.to_ascii_lowercase()),
                    query: c.query.as_ref().map(|q| q.clone().into_bytes()),
                    default: c.default,
                    max: c.max,
                }
            }
        }
    }

    /// The request headers the cost may read.
    pub fn headers_read(&self, out: &mut Vec<String>) {
        if let Cost::FromRequest { header, query, .. } = self {
            out.extend(header.clone());
            if query.is_some() {
                out.push(":path".into());
            }
        }
    }

    /// The cost of `request`: fixed, or the whole number it carries (missing, malformed or 0: the
    /// default; above the maximum: the maximum).
    pub fn of(&self, request: &Request) -> u64 {
        match self {
            Cost::Fixed(n) => *n,
            Cost::FromRequest {
                header,
                query,
                default,
                max,
            } => {
                let raw = match (header, query) {
                    (Some(h), _) => request.header(h),
                    (None, Some(q)) => request.path().and_then(|p| query_value(p, q)),
                    (None, None) => None,
                };
                raw.and_then(|v| {
                    std::str::from_utf8(v.trim_ascii())
                        .ok()?
                        .parse::<u64>()
                        .ok()
                })
                .filter(|&n| n > 0)
                .map_or(*default, |n| n.min(*max))
            }
        }
    }
}
