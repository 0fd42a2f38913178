//! Header values as the engine hands them to the host: names shared with the compiled
//! configuration, values inline when short.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::decimal;

/// Header names are shared with the compiled config (no copy per request), across workers.
pub type HeaderName = Arc<str>;
/// The headers of a decision: names shared with the config, values inline when short (every
/// number the headers carry): one allocation for the list. (An inline list would be moved by
/// value from the engine to the host, each move a call out of V8 for `memory.copy`.)
pub type Headers = Vec<(HeaderName, HeaderValue)>;

/// A header value: UTF-8, on the stack up to 22 bytes, on the heap beyond.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HeaderValue(SmallVec<[u8; INLINE_VALUE]>);

/// Bytes of a header value kept inline: every whole number (20 digits at most).
const INLINE_VALUE: usize = 22;

/// A whole number's digits, in a buffer the size of a header value's inline one: copied whole
/// (a fixed-size copy, no `memory.copy` call out of V8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digits {
    buffer: [u8; INLINE_VALUE],
    len: usize,
}

impl Digits {
    pub fn of(n: u64) -> Self {
        let mut buffer = [0; INLINE_VALUE];
        let len = decimal::write(n, &mut buffer);
        Digits { buffer, len }
    }
}

impl From<Digits> for HeaderValue {
    fn from(digits: Digits) -> Self {
        HeaderValue(SmallVec::from_buf_and_len(digits.buffer, digits.len))
    }
}

impl HeaderValue {
    /// A whole number, written without a heap allocation.
    pub fn number(n: u64) -> Self {
        Digits::of(n).into()
    }

    /// The value's bytes, as a host hands them on (no UTF-8 check: they were made from text).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from `str`s.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl std::ops::Deref for HeaderValue {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for HeaderValue {
    fn from(s: &str) -> Self {
        HeaderValue(SmallVec::from_slice(s.as_bytes()))
    }
}

impl From<String> for HeaderValue {
    fn from(s: String) -> Self {
        HeaderValue(SmallVec::from_vec(s.into_bytes()))
    }
}

impl PartialEq<&str> for HeaderValue {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for HeaderValue {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<String> for HeaderValue {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl std::fmt::Debug for HeaderValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for HeaderValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
