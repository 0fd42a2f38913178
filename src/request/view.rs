//! The request as the engine reads it: the host's attributes behind a trait, read on demand.

use std::borrow::Cow;
use std::cell::OnceCell;

use smallvec::SmallVec;

use super::headers::HeaderMap;
use crate::config::{Errors, Report};

/// The request attributes key extraction and routing read. The host implements it with one host
/// call per attribute, asked for only when a rule needs it; tests implement it with a map.
pub trait RequestView {
    /// The first value of a request header (name in lower case).
    fn header(&self, name: &str) -> Option<Vec<u8>>;
    /// `source.address`: the downstream address, `ip:port`.
    fn source_address(&self) -> Option<Vec<u8>>;
    /// `xds.route_name`.
    fn route_name(&self) -> Option<Vec<u8>>;
    /// A value in the request's dynamic metadata, set by another filter.
    fn metadata(&self, _at: &MetadataPath) -> Option<Computed> {
        None
    }
    /// A value in the request's filter state, set by another filter.
    fn filter_state(&self, _key: &str) -> Option<Vec<u8>> {
        None
    }
    /// Every value of a request header, in order (each line of a header sent several times); by
    /// default the first alone. A host that lists headers overrides it, so that a key given twice
    /// is seen (`on_ambiguous_key`).
    fn header_lines(&self, name: &str) -> Vec<Vec<u8>> {
        self.header(name).into_iter().collect()
    }
    /// The first value of a request header, lent where the host holds it (no copy); by default
    /// read with [`RequestView::header`].
    fn header_in_place(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        self.header(name).map(Cow::Owned)
    }
    /// Every value of a request header, lent where the host holds them; by default
    /// [`RequestView::header_lines`].
    fn header_lines_in_place(&self, name: &str) -> Lines<'_> {
        self.header_lines(name)
            .into_iter()
            .map(Cow::Owned)
            .collect()
    }
    /// Every request header at once, serialized as proxy-wasm's pairs (see [`HeaderMap`]); `None`
    /// where the host reads headers one by one as cheaply.
    fn header_map(&self) -> Option<Vec<u8>> {
        None
    }
}

/// The lines of a header, inline when few (the usual one).
pub type Lines<'a> = SmallVec<[Cow<'a, [u8]>; 2]>;

/// Where a value lies in dynamic metadata: the namespace (a filter's name), the key, and a path
/// into a structured value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataPath {
    pub namespace: String,
    pub key: String,
    pub path: Vec<String>,
}

impl MetadataPath {
    /// A metadata path with a namespace and key that are not empty, and no empty path step.
    pub fn compile(
        (namespace, key, path): (&str, &str, &[String]),
        at: &str,
        errors: &mut Errors,
    ) -> Option<MetadataPath> {
        let mut valid = true;
        for (field, value) in [("namespace", namespace), ("key", key)] {
            if value.is_empty() {
                errors.add(
                    format!("{at}.{field}"),
                    format!("a metadata {field} may not be empty"),
                );
                valid = false;
            }
        }
        if let Some(i) = path.iter().position(String::is_empty) {
            errors.add(format!("{at}.path[{i}]"), "a path step may not be empty");
            valid = false;
        }
        valid.then(|| MetadataPath {
            namespace: namespace.to_string(),
            key: key.to_string(),
            path: path.to_vec(),
        })
    }
}

/// A value another filter computed, as the host tells it.
#[derive(Debug, Clone, PartialEq)]
pub enum Computed {
    Text(Vec<u8>),
    Number(f64),
    Bool(bool),
}

impl Computed {
    /// The value as text: a number in decimal (whole numbers without a fraction), a boolean as
    /// `true`/`false`.
    pub fn text(&self) -> Cow<'_, [u8]> {
        match self {
            Computed::Text(bytes) => Cow::Borrowed(bytes),
            Computed::Number(n) => Cow::Owned(n.to_string().into_bytes()),
            Computed::Bool(b) => Cow::Borrowed(if *b { b"true" } else { b"false" }),
        }
    }

    /// The value as a whole number, if it is one (a number, or text of decimal digits).
    pub fn whole_number(&self) -> Option<u64> {
        match self {
            Computed::Number(n) if n.is_finite() && *n >= 0.0 && n.fract() == 0.0 => {
                (*n <= u64::MAX as f64).then_some(*n as u64)
            }
            Computed::Text(bytes) => std::str::from_utf8(bytes.trim_ascii()).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// A leaf value as proxy-wasm's `get_property` hands it: a string's raw bytes, a number's 8
    /// bytes (an f64, little-endian), a boolean's one byte. The encoding does not say which, so
    /// 8 bytes that are not all printable ASCII read as a number, 1 byte of 0 or 1 as a boolean,
    /// anything else as text.
    pub fn from_proxy_wasm(bytes: Vec<u8>) -> Computed {
        let printable = |b: &u8| b.is_ascii_graphic() || *b == b' ';
        match bytes.len() {
            8 if !bytes.iter().all(printable) => {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(&bytes);
                Computed::Number(f64::from_le_bytes(raw))
            }
            1 if bytes[0] <= 1 => Computed::Bool(bytes[0] == 1),
            _ => Computed::Text(bytes),
        }
    }
}

/// A request as the engine reads it: attributes on demand, `:path` at most once however many
/// rules, key sources and costs need it (every host read that returns data costs a call back
/// into the VM). When the configuration reads several headers, all of them are read at once on
/// the first header asked for (see [`Request::reading`]).
pub struct Request<'a> {
    view: &'a dyn RequestView,
    path: OnceCell<Option<Cow<'a, [u8]>>>,
    /// Every header, read once, when `all_headers`.
    map: OnceCell<Option<HeaderMap>>,
    all_headers: bool,
}

impl<'a> Request<'a> {
    /// A request whose headers are read one by one.
    #[cfg(any(test, feature = "cli"))]
    pub fn new(view: &'a dyn RequestView) -> Self {
        Self::reading(view, false)
    }

    /// A request whose headers are read all at once (`all_headers`, where the host can) or one
    /// by one.
    pub fn reading(view: &'a dyn RequestView, all_headers: bool) -> Self {
        Request {
            view,
            path: OnceCell::new(),
            map: OnceCell::new(),
            all_headers,
        }
    }

    /// Every header, read at once on the first call, when this request reads them so and the
    /// host can.
    fn map(&self) -> Option<&HeaderMap> {
        if !self.all_headers {
            return None;
        }
        self.whole_map()
    }

    /// Every header, read at once on the first call, however this request reads single ones.
    fn whole_map(&self) -> Option<&HeaderMap> {
        self.map
            .get_or_init(|| self.view.header_map().map(HeaderMap::new))
            .as_ref()
    }

    /// `:path`, query string included (where all headers were read at once, in place).
    pub fn path(&self) -> Option<&[u8]> {
        match self.map() {
            Some(map) => map.get(":path"),
            None => self
                .path
                .get_or_init(|| self.view.header_in_place(":path"))
                .as_deref(),
        }
    }

    pub fn header(&self, name: &str) -> Option<Vec<u8>> {
        match self.map() {
            Some(map) => map.get(name).map(<[u8]>::to_vec),
            None => self.view.header(name),
        }
    }

    /// Every value of a header, in the order the host gave them (each line of a header sent
    /// several times): from the whole map, or from the host's own list of lines.
    pub fn header_values<'r: 'n, 'n>(
        &'r self,
        name: &'n str,
    ) -> impl Iterator<Item = Cow<'r, [u8]>> + 'n {
        let map = self.whole_map();
        let listed = match map {
            Some(_) => Lines::new(),
            None => self.view.header_lines_in_place(name),
        };
        let lines = map.into_iter().flat_map(move |m| m.values(name));
        lines.map(Cow::Borrowed).chain(listed)
    }

    /// A header's value where it lies, when all headers were read at once (else read for it).
    pub fn header_ref(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        match self.map() {
            Some(map) => map.get(name).map(Cow::Borrowed),
            None => self.view.header_in_place(name),
        }
    }

    pub fn source_address(&self) -> Option<Vec<u8>> {
        self.view.source_address()
    }

    pub fn route_name(&self) -> Option<Vec<u8>> {
        self.view.route_name()
    }

    pub fn metadata(&self, at: &MetadataPath) -> Option<Computed> {
        self.view.metadata(at)
    }

    pub fn filter_state(&self, key: &str) -> Option<Vec<u8>> {
        self.view.filter_state(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_wasm_leaves_read_as_what_they_hold() {
        let read = |b: &[u8]| Computed::from_proxy_wasm(b.to_vec());
        assert_eq!(read(&123f64.to_le_bytes()), Computed::Number(123.0));
        assert_eq!(read(&123f64.to_le_bytes()).text().as_ref(), b"123");
        assert_eq!(read(&123f64.to_le_bytes()).whole_number(), Some(123));
        assert_eq!(read(&2.5f64.to_le_bytes()).whole_number(), None);
        assert_eq!(read(&(-4f64).to_le_bytes()).whole_number(), None);
        assert_eq!(read(b"gold"), Computed::Text(b"gold".to_vec()));
        // Eight printable characters are text, not a number.
        assert_eq!(read(b"10000000").whole_number(), Some(10_000_000));
        assert_eq!(read(b"tenant-a"), Computed::Text(b"tenant-a".to_vec()));
        assert_eq!(read(&[1]), Computed::Bool(true));
        assert_eq!(read(&[0]).text().as_ref(), b"false");
        assert_eq!(read(b"7"), Computed::Text(b"7".to_vec()));
        assert_eq!(read(b"").text().as_ref(), b"");
    }
}
