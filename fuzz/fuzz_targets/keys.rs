//! Key extraction on any header lines (a name may come several times): never a panic; a key is
//! never empty, never over 8 KiB, never with spaces around it; `deny` either refuses as ambiguous
//! or counts the one value an upstream reading the first or the last would read (or none
//! yields a key); a request with each header and parameter once is never ambiguous.
//!
//! Input: lines `<selector byte><value>` separated by `\n`; the selector picks the header name
//! (so that names repeat), the value is any bytes.
#![no_main]

use envoy_ratelimit_wasm::internals::{
    serialize_headers, Key, KeyKind, KeySource, OnAmbiguousKey, Request,
};
use envoy_ratelimit_wasm::{Computed, MetadataPath, RequestView};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 5] = [
    "x-api-key",
    "authorization",
    ":path",
    "x-forwarded-for",
    "x-other",
];

struct Lines(Vec<(&'static str, Vec<u8>)>);

impl RequestView for Lines {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }
    fn source_address(&self) -> Option<Vec<u8>> {
        Some(b"192.0.2.7:4711".to_vec())
    }
    fn route_name(&self) -> Option<Vec<u8>> {
        None
    }
    fn metadata(&self, _at: &MetadataPath) -> Option<Computed> {
        None
    }
    fn header_map(&self) -> Option<Vec<u8>> {
        let pairs: Vec<(&str, &[u8])> = self.0.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        Some(serialize_headers(&pairs))
    }
}

fn sources() -> Vec<Vec<KeySource>> {
    vec![
        vec![KeySource::Header("x-api-key".into())],
        vec![KeySource::Query(b"api_key".to_vec())],
        vec![KeySource::Bearer],
        vec![KeySource::client_ip(1)],
        vec![KeySource::ClientIp {
            trusted_hops: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 48,
        }],
        vec![
            KeySource::Header("x-api-key".into()),
            KeySource::Bearer,
            KeySource::Query(b"api_key".to_vec()),
        ],
    ]
}

fuzz_target!(|bytes: &[u8]| {
    let lines: Vec<(&'static str, Vec<u8>)> = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| (NAMES[l[0] as usize % NAMES.len()], l[1..].to_vec()))
        .collect();
    let view = Lines(lines);
    let once = {
        let mut names: Vec<&str> = view.0.iter().map(|(n, _)| *n).collect();
        names.sort();
        let unique = names.windows(2).all(|w| w[0] != w[1]);
        let path = view.header(":path").unwrap_or_default();
        let query = path
            .iter()
            .position(|&b| b == b'?')
            .map_or(&b""[..], |q| &path[q + 1..]);
        let params = query.split(|&b| b == b'&').count();
        let authorization = view.header("authorization").unwrap_or_default();
        unique && params <= 1 && !authorization.contains(&b',')
    };
    for chain in sources() {
        for key in [Key::First(chain.clone()), Key::All(chain.clone())] {
            let read =
                |policy, all_at_once| key.extract(&Request::reading(&view, all_at_once), policy);
            let first = read(OnAmbiguousKey::First, false);
            for all_at_once in [false, true] {
                assert_eq!(
                    read(OnAmbiguousKey::First, all_at_once),
                    first,
                    "one read or all at once"
                );
                let deny = read(OnAmbiguousKey::Deny, all_at_once);
                let last = read(OnAmbiguousKey::Last, all_at_once);
                match &deny {
                    Some((KeyKind::Ambiguous, _)) => {
                        assert!(!once, "ambiguous with each value once: {key:?}")
                    }
                    // One source: what `deny` counts is what an upstream reading any one of the
                    // values reads, or that value yields no key at all.
                    Some(counted) if chain.len() == 1 => {
                        for told in [&first, &last] {
                            assert!(
                                told.as_ref().is_none_or(|t| t == counted),
                                "{key:?}: {told:?} vs {counted:?}"
                            );
                        }
                    }
                    None if chain.len() == 1 => {
                        assert_eq!((&first, &last), (&None, &None), "{key:?}")
                    }
                    _ => {}
                }
                for (kind, value) in [&first, &deny, &last].into_iter().flatten() {
                    if matches!(kind, KeyKind::Header | KeyKind::Query | KeyKind::Bearer) {
                        assert!(!value.is_empty() && value.len() <= 8 * 1024);
                        assert_eq!(
                            value.trim_ascii(),
                            value.as_slice(),
                            "a key with spaces around it"
                        );
                    }
                }
                for told in [&first, &last] {
                    assert!(told.as_ref().is_none_or(|(k, _)| *k != KeyKind::Ambiguous));
                }
            }
        }
    }
});
