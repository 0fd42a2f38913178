//! The response as settling reads it when the stream ends: its status, whether Envoy or a filter
//! answered rather than the upstream, and what it says the request cost (a response header, or
//! dynamic metadata another filter wrote from the response).

use std::cell::OnceCell;

use crate::config::{valid_header_name, Errors, Report, ResponseCostConfig, MAX_REQUESTS};
use crate::request::{Computed, MetadataPath};

/// What the host tells of a response, read on demand (a rule that settles nothing reads nothing).
pub trait ResponseView {
    /// The status the client got; `None` when the stream ended without a response.
    fn status(&self) -> Option<u32>;
    /// Whether the response came from Envoy or a filter (a local reply), not the upstream.
    fn local_reply(&self) -> bool;
    /// The first value of a response header (name in lower case).
    fn header(&self, name: &str) -> Option<Vec<u8>>;
    /// A value in the stream's dynamic metadata.
    fn metadata(&self, at: &MetadataPath) -> Option<Computed>;
}

/// A response as settling reads it: the status and the local-reply flag at most once.
pub struct Response<'a> {
    view: &'a dyn ResponseView,
    status: OnceCell<Option<u32>>,
    local: OnceCell<bool>,
}

impl<'a> Response<'a> {
    pub fn new(view: &'a dyn ResponseView) -> Self {
        Response {
            view,
            status: OnceCell::new(),
            local: OnceCell::new(),
        }
    }

    pub fn status(&self) -> Option<u32> {
        *self.status.get_or_init(|| self.view.status())
    }

    pub fn local_reply(&self) -> bool {
        *self.local.get_or_init(|| self.view.local_reply())
    }

    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.view.header(name)
    }

    fn metadata(&self, at: &MetadataPath) -> Option<Computed> {
        self.view.metadata(at)
    }
}

/// A response's facts given outright: for tests, the `explain` tool and simulations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponseFacts {
    pub status: Option<u32>,
    pub local_reply: bool,
    /// Response headers (names in lower case).
    pub headers: Vec<(String, String)>,
    /// Dynamic metadata, by `namespace/key` (`namespace/key.path.steps` for a value inside a
    /// structure).
    pub metadata: Vec<(String, Computed)>,
}

impl ResponseView for ResponseFacts {
    fn status(&self) -> Option<u32> {
        self.status
    }
    fn local_reply(&self) -> bool {
        self.local_reply
    }
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        let found = self.headers.iter().find(|(n, _)| n == name);
        found.map(|(_, v)| v.clone().into_bytes())
    }
    fn metadata(&self, at: &MetadataPath) -> Option<Computed> {
        let steps: String = at.path.iter().map(|p| format!(".{p}")).collect();
        let name = format!("{}/{}{steps}", at.namespace, at.key);
        let found = self.metadata.iter().find(|(n, _)| *n == name);
        found.map(|(_, value)| value.clone())
    }
}

/// Where the response says what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseSource {
    Header(String),
    Metadata(MetadataPath),
}

/// What a response says its request cost, up to `max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseCost {
    pub from: ResponseSource,
    pub max: u64,
}

impl ResponseCost {
    /// Exactly one of `header` or `metadata`; `max` from 1.
    pub fn compile(config: &ResponseCostConfig, at: &str, errors: &mut Errors) -> Option<Self> {
        if !(1..=MAX_REQUESTS).contains(&config.max) {
            let message = format!("must be between 1 and {MAX_REQUESTS}, got {}", config.max);
            errors.add(format!("{at}.max"), message);
        }
        let from = match (&config.header, &config.metadata) {
            (Some(h), None) => {
                if !valid_header_name(h) {
                    errors.add(
                        format!("{at}.header"),
                        format!("{h:?} is not a header name"),
                    );
                }
                ResponseSource::Header(h.to_ascii_lowercase())
            }
            (None, Some(m)) => {
                let at = format!("{at}.metadata");
                let path = (&*m.namespace, &*m.key, &*m.path);
                ResponseSource::Metadata(MetadataPath::compile(path, &at, errors)?)
            }
            _ => {
                errors.add(at, "give exactly one of \"header\" or \"metadata\"");
                return None;
            }
        };
        Some(ResponseCost {
            from,
            max: config.max,
        })
    }

    /// In words, for `explain`.
    #[cfg(feature = "cli")]
    pub fn describe(&self) -> String {
        let from = match &self.from {
            ResponseSource::Header(h) => format!("response header {h}"),
            ResponseSource::Metadata(m) => format!("metadata {}/{}", m.namespace, m.key),
        };
        format!(
            "what the {from} says at the end of the stream (max {})",
            self.max
        )
    }

    /// What `response` says, capped at `max`; `None` when it says nothing readable as a whole
    /// number.
    pub fn of(&self, response: &Response) -> Option<u64> {
        let said = match &self.from {
            ResponseSource::Header(name) => Computed::Text(response.header(name)?).whole_number(),
            ResponseSource::Metadata(at) => response.metadata(at)?.whole_number(),
        };
        said.map(|n| n.min(self.max))
    }
}
