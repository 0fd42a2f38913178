//! The canonical form of a request path, so that no spelling of a path dodges its rule.
//!
//! The query string and fragment are cut; percent-escapes are decoded (`%2F` becomes a slash,
//! as an upstream that decodes would see it); empty and `.` segments are dropped and `..` pops
//! one; ASCII letters are lower-cased. `/API//v1/./links/%2e%2e/keys/` becomes `/api/v1/keys`.
//! Matching works on the segments; a path of any bytes (even not UTF-8) has a canonical form.

use std::borrow::Cow;

use crate::request::percent;

/// A canonical path: its segments joined by `/` (a segment never holds `/` nor `\\`, and empty
/// ones are skipped, so the form is lossless). Borrowed from the request when its path is in
/// canonical form already, as nearly every path is: no allocation then.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CanonicalPath<'a>(Cow<'a, [u8]>);

impl<'a> CanonicalPath<'a> {
    pub fn of(raw: &'a [u8]) -> Self {
        let path = without_query(raw);
        if is_canonical(path) {
            return CanonicalPath(Cow::Borrowed(path));
        }
        let mut joined = Vec::with_capacity(path.len());
        for segment in canonical_segments(path) {
            joined.push(b'/');
            joined.extend_from_slice(&segment);
        }
        CanonicalPath(Cow::Owned(joined))
    }

    /// The segments, lower-cased bytes, in order.
    pub fn segments(&self) -> impl Iterator<Item = &[u8]> + Clone {
        self.0.split(|&b| b == b'/').filter(|s| !s.is_empty())
    }
}

/// The path without its query string and fragment.
fn without_query(raw: &[u8]) -> &[u8] {
    let end = raw
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(raw.len());
    &raw[..end]
}

/// Whether a path (query cut) reads the same in canonical form: nothing to decode, no backslash,
/// no upper case, no `.` or `..` segment (empty segments are skipped as the canonical form does).
fn is_canonical(path: &[u8]) -> bool {
    path.iter()
        .all(|&b| b != b'%' && b != b'\\' && !b.is_ascii_uppercase())
        && path.split(|&b| b == b'/').all(|s| s != b"." && s != b"..")
}

/// The canonical form as a path again: the segments joined with `/`, where the bytes a path
/// reads specially (`%`, `?`, `#`) that decoding put inside a segment are escaped again, so that
/// the text reads back to the same segments (`/a%3F/x` is the segments `a?` and `x`, written
/// `/a%3F/x`, not `/a?/x`, whose reading would cut the query). Matching works on the segments and
/// never re-reads a text; this is the form tools show, idempotent (`fuzz/fuzz_targets/paths.rs`)
/// for every path whose escapes decoding undoes within its four rounds.
#[cfg(any(test, feature = "internals"))]
pub fn canonical_text(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for segment in canonical_segments(raw) {
        out.push(b'/');
        for &b in &segment {
            match b {
                b'%' => out.extend_from_slice(b"%25"),
                b'?' => out.extend_from_slice(b"%3F"),
                b'#' => out.extend_from_slice(b"%23"),
                _ => out.push(b),
            }
        }
    }
    out
}

/// Segments of the canonical path, lower-cased bytes.
pub fn canonical_segments(raw: &[u8]) -> Vec<Vec<u8>> {
    let decoded = percent_decode(without_query(raw));
    let mut segments: Vec<Vec<u8>> = Vec::new();
    for segment in decoded.split(|&b| b == b'/' || b == b'\\') {
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            _ => segments.push(segment.to_ascii_lowercase()),
        }
    }
    segments
}

/// Decodes `%XX` escapes, repeatedly, until none is left (a double-encoded `%252F` must not
/// hide a slash from us if some hop decodes twice). Malformed escapes stay as they are.
fn percent_decode(input: &[u8]) -> Cow<'_, [u8]> {
    let mut current = percent::decode(input, false);
    for _ in 1..4 {
        if !current.contains(&b'%') {
            break;
        }
        match percent::decode(&current, false) {
            Cow::Borrowed(_) => break,
            Cow::Owned(next) if next == *current => break,
            Cow::Owned(next) => current = Cow::Owned(next),
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(raw: &str) -> String {
        let segments = canon_bytes(raw.as_bytes());
        let mut out = String::new();
        for s in segments {
            out.push('/');
            out.push_str(&String::from_utf8_lossy(&s));
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }

    /// Found by the paths fuzz target: `/s/a%2F..%3Fapi` has the segments `s`, `a`, `..?api`; joined
    /// plainly (`/s/a/..?api`) it reads back as `/s/a/..` with a query, i.e. `/s`.
    #[test]
    fn the_canonical_text_reads_back_to_its_segments() {
        for raw in [
            &b"/s/a%2F..%3Fapi"[..],
            b"/%2525/x",
            b"/a%23b/c",
            b"/API/./x%3f%3F",
        ] {
            let text = canonical_text(raw);
            assert_eq!(
                canonical_segments(&text),
                canonical_segments(raw),
                "{text:?}"
            );
            assert_eq!(canonical_text(&text), text);
        }
        assert_eq!(canonical_text(b"/s/a%2F..%3Fapi"), b"/s/a/..%3Fapi");
    }

    #[test]
    fn spellings_of_one_path_agree() {
        for raw in [
            "/api/links",
            "/api/links/",
            "//api//links",
            "/api/./links",
            "/api/x/../links",
            "/API/Links",
            "/api%2Flinks",
            "/api%252Flinks",
            "/api/links?x=1",
            "/api/links#frag",
            "/api\\links",
            "/%61pi/links",
        ] {
            assert_eq!(canon(raw), "/api/links", "{raw}");
        }
    }

    #[test]
    fn odd_input_is_defined() {
        assert_eq!(canon(""), "/");
        assert_eq!(canon("/"), "/");
        assert_eq!(canon("/../../etc"), "/etc");
        assert_eq!(canon("/a%"), "/a%");
        assert_eq!(canon("/a%zz"), "/a%zz");
        assert_eq!(canon("/a%2"), "/a%2");
        assert_eq!(
            canon_bytes(b"/\xff\xfe/x"),
            vec![vec![0xff, 0xfe], b"x".to_vec()]
        );
        let long = "/a".repeat(40_000);
        assert_eq!(canonical_segments(long.as_bytes()).len(), 40_000);
    }

    /// The segments, checked to be the same both ways: as matching sees them (borrowed when
    /// canonical already) and as patterns are compiled.
    fn canon_bytes(raw: &[u8]) -> Vec<Vec<u8>> {
        let segments = canonical_segments(raw);
        let path = CanonicalPath::of(raw);
        let seen: Vec<Vec<u8>> = path.segments().map(<[u8]>::to_vec).collect();
        assert_eq!(seen, segments, "{:?}", String::from_utf8_lossy(raw));
        segments
    }

    #[test]
    fn a_canonical_path_is_borrowed_not_copied() {
        for raw in ["/api/links", "/api//links/", "/a.b/..c/x-y_z", "/"] {
            let path = CanonicalPath::of(raw.as_bytes());
            assert!(matches!(path.0, Cow::Borrowed(_)), "{raw}");
            canon_bytes(raw.as_bytes());
        }
        for raw in ["/API", "/a/./b", "/a/../b", "/a%2fb", "/a\\b", "/a/.."] {
            assert!(
                matches!(CanonicalPath::of(raw.as_bytes()).0, Cow::Owned(_)),
                "{raw}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn both_forms_agree_on_any_path(raw in proptest::collection::vec(
            proptest::sample::select(b"/\\.%2fFaA?#\xff".to_vec()), 0..24)) {
            canon_bytes(&raw);
        }
    }
}
