//! The stream as the engine reads it, through Envoy's callbacks: the request when its headers
//! arrive, the response when its stream completes. Each read copies only the bytes asked for.

use std::borrow::Cow;
use std::cell::OnceCell;

use smallvec::SmallVec;

use super::abi::{self, Callbacks, EnvoyBuffer, EnvoyHeader, FilterPtr, ModuleBuffer};
use crate::engine::{Computed, MetadataPath, RequestView, ResponseView};

/// Request headers Envoy lists without a heap allocation here.
const INLINE_HEADERS: usize = 24;

/// One stream of Envoy's, during one of its event hooks.
#[derive(Clone, Copy)]
pub struct Stream {
    pub filter: FilterPtr,
    pub envoy: &'static Callbacks,
}

impl Stream {
    /// The first value of a header of `kind` (request or response headers).
    pub fn header(&self, kind: u32, name: &str) -> Option<Vec<u8>> {
        let mut out = EnvoyBuffer::EMPTY;
        let key = ModuleBuffer::of(name.as_bytes());
        let null = std::ptr::null_mut();
        // SAFETY: `filter` is the stream of the running hook; `out` is written by Envoy.
        let found =
            unsafe { (self.envoy.http_get_header)(self.filter, kind, key, &mut out, 0, null) };
        // SAFETY: Envoy wrote `out` in this hook.
        (found && !out.ptr.is_null()).then(|| unsafe { out.bytes() }.to_vec())
    }

    fn attribute_string(&self, id: u32) -> Option<Vec<u8>> {
        let mut out = EnvoyBuffer::EMPTY;
        // SAFETY: as in `header`.
        let found =
            unsafe { (self.envoy.http_filter_get_attribute_string)(self.filter, id, &mut out) };
        // SAFETY: Envoy wrote `out` in this hook.
        found.then(|| unsafe { out.bytes() }.to_vec())
    }

    fn attribute_int(&self, id: u32) -> Option<u64> {
        let mut out = 0u64;
        // SAFETY: as in `header`.
        let found =
            unsafe { (self.envoy.http_filter_get_attribute_int)(self.filter, id, &mut out) };
        found.then_some(out)
    }

    /// A value in the stream's dynamic metadata: a string, a number or a boolean under
    /// `namespace` and `key`. The ABI reads top-level keys only; a path into a structured value
    /// is not readable here (see docs/src/deploying/native.md).
    fn metadata(&self, at: &MetadataPath) -> Option<Computed> {
        if !at.path.is_empty() {
            return None;
        }
        let (ns, key) = (
            ModuleBuffer::of(at.namespace.as_bytes()),
            ModuleBuffer::of(at.key.as_bytes()),
        );
        let (e, f, source) = (self.envoy, self.filter, abi::METADATA_DYNAMIC);
        let mut text = EnvoyBuffer::EMPTY;
        // SAFETY (the three reads): as in `header`; Envoy writes the out-parameter.
        if unsafe { (e.http_get_metadata_string)(f, source, ns, key, &mut text) } {
            // SAFETY: Envoy wrote `text` in this hook.
            return Some(Computed::Text(unsafe { text.bytes() }.to_vec()));
        }
        let mut number = 0f64;
        if unsafe { (e.http_get_metadata_number)(f, source, ns, key, &mut number) } {
            return Some(Computed::Number(number));
        }
        let mut flag = false;
        if unsafe { (e.http_get_metadata_bool)(f, source, ns, key, &mut flag) } {
            return Some(Computed::Bool(flag));
        }
        None
    }
}

/// Every header of `kind` (request or response), listed by one call.
fn list(stream: Stream, kind: u32) -> SmallVec<[EnvoyHeader; INLINE_HEADERS]> {
    let Stream { filter, envoy } = stream;
    // SAFETY: the stream of the running hook; Envoy fills `count` entries.
    let count = unsafe { (envoy.http_get_headers_size)(filter, kind) };
    let mut headers = SmallVec::from_elem(EnvoyHeader::EMPTY, count);
    // SAFETY: `headers` has room for the `count` entries Envoy writes.
    if !unsafe { (envoy.http_get_headers)(filter, kind, headers.as_mut_ptr()) } {
        headers.clear();
    }
    headers
}

/// The (name, value) pairs of a list Envoy made in the running hook.
fn pairs(headers: &[EnvoyHeader]) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers.iter().map(|h| {
        let key = EnvoyBuffer {
            ptr: h.key_ptr,
            length: h.key_length,
        };
        let value = EnvoyBuffer {
            ptr: h.value_ptr,
            length: h.value_length,
        };
        // SAFETY: Envoy listed these in this hook; nothing has changed the headers since.
        unsafe { (key.bytes(), value.bytes()) }
    })
}

/// The value of header `name` in a list Envoy made in the running hook.
fn find<'a>(headers: &'a [EnvoyHeader], name: &[u8]) -> Option<&'a [u8]> {
    pairs(headers).find_map(|(k, v)| (k == name).then_some(v))
}

/// Whether the response already has any of `names` (listed by one call).
pub fn response_has_any<'a>(stream: Stream, mut names: impl Iterator<Item = &'a str>) -> bool {
    let headers = list(stream, abi::RESPONSE_HEADER);
    names.any(|name| find(&headers, name.as_bytes()).is_some())
}

/// The request of a stream, during its request-headers hook: every header listed by one call on
/// the first read, then found here. Envoy's lookup of one header by name (`get_header`) costs
/// ~1,900 instructions a call (BENCHMARKS.md, "Issue 21"); the list, one call whatever the
/// number of headers read.
pub struct RequestRead {
    pub stream: Stream,
    headers: OnceCell<SmallVec<[EnvoyHeader; INLINE_HEADERS]>>,
}

impl RequestRead {
    pub fn new(stream: Stream) -> Self {
        RequestRead {
            stream,
            headers: OnceCell::new(),
        }
    }

    fn headers(&self) -> &[EnvoyHeader] {
        self.headers
            .get_or_init(|| list(self.stream, abi::REQUEST_HEADER))
    }
}

impl RequestView for RequestRead {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        find(self.headers(), name.as_bytes()).map(<[u8]>::to_vec)
    }
    fn header_lines(&self, name: &str) -> Vec<Vec<u8>> {
        let lines = self.header_lines_in_place(name).into_iter();
        lines.map(Cow::into_owned).collect()
    }
    /// In Envoy's header map, which outlives the hook's reads: no copy.
    fn header_in_place(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        find(self.headers(), name.as_bytes()).map(Cow::Borrowed)
    }
    fn header_lines_in_place(&self, name: &str) -> SmallVec<[Cow<'_, [u8]>; 2]> {
        let name = name.as_bytes();
        pairs(self.headers())
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| Cow::Borrowed(v))
            .collect()
    }
    fn source_address(&self) -> Option<Vec<u8>> {
        self.stream.attribute_string(abi::ATTRIBUTE_SOURCE_ADDRESS)
    }
    fn route_name(&self) -> Option<Vec<u8>> {
        self.stream.attribute_string(abi::ATTRIBUTE_XDS_ROUTE_NAME)
    }
    fn metadata(&self, at: &MetadataPath) -> Option<Computed> {
        self.stream.metadata(at)
    }
    fn filter_state(&self, key: &str) -> Option<Vec<u8>> {
        self.stream.filter_state(key)
    }
}

impl Stream {
    fn filter_state(&self, key: &str) -> Option<Vec<u8>> {
        let mut out = EnvoyBuffer::EMPTY;
        let key = ModuleBuffer::of(key.as_bytes());
        // SAFETY: as in `header`.
        let found = unsafe { (self.envoy.http_get_filter_state_bytes)(self.filter, key, &mut out) };
        // SAFETY: Envoy wrote `out` in this hook.
        found.then(|| unsafe { out.bytes() }.to_vec())
    }
}

impl ResponseView for Stream {
    fn status(&self) -> Option<u32> {
        let code = self.attribute_int(abi::ATTRIBUTE_RESPONSE_CODE)?;
        u32::try_from(code).ok().filter(|&s| s > 0)
    }
    fn local_reply(&self) -> bool {
        // Envoy says `via_upstream` of a response the upstream sent; anything else was made in
        // Envoy (a filter's reply, a timeout, a reset before the response).
        self.attribute_string(abi::ATTRIBUTE_RESPONSE_CODE_DETAILS)
            .is_some_and(|d| d != b"via_upstream")
    }
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        Stream::header(self, abi::RESPONSE_HEADER, name)
    }
    fn metadata(&self, at: &MetadataPath) -> Option<Computed> {
        Stream::metadata(self, at)
    }
}
