//! The request as the engine reads it: the host's attributes behind a trait, read on demand.

use std::cell::OnceCell;

/// The request attributes key extraction and routing read. The host implements it with one host
/// call per attribute, asked for only when a rule needs it; tests implement it with a map.
pub trait RequestView {
    /// The first value of a request header (name in lower case).
    fn header(&self, name: &str) -> Option<Vec<u8>>;
    /// `source.address`: the downstream address, `ip:port`.
    fn source_address(&self) -> Option<Vec<u8>>;
    /// `xds.route_name`.
    fn route_name(&self) -> Option<Vec<u8>>;
}

/// A request as the engine reads it: attributes on demand, `:path` at most once however many
/// rules, key sources and costs need it (every host read that returns data costs a call back
/// into the VM).
pub struct Request<'a> {
    view: &'a dyn RequestView,
    path: OnceCell<Option<Vec<u8>>>,
}

impl<'a> Request<'a> {
    pub fn new(view: &'a dyn RequestView) -> Self {
        Request {
            view,
            path: OnceCell::new(),
        }
    }

    /// `:path`, query string included.
    pub fn path(&self) -> Option<&[u8]> {
        self.path
            .get_or_init(|| self.view.header(":path"))
            .as_deref()
    }

    pub fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.view.header(name)
    }

    pub fn source_address(&self) -> Option<Vec<u8>> {
        self.view.source_address()
    }

    pub fn route_name(&self) -> Option<Vec<u8>> {
        self.view.route_name()
    }
}
