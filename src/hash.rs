//! Client keys are never stored or logged in clear: they are reduced to a 64-bit keyed hash,
//! which picks the client's page, identifies it inside the page, and appears in logs.

use std::hash::{DefaultHasher, Hasher};

/// What kind of value a key came from, so that an API key equal to an IP address text (or a
/// query value equal to a header value of another rule) never shares a counter with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Header,
    Query,
    Bearer,
    ClientIp,
    /// The one counter shared by requests without a key.
    Missing,
    Metadata,
    FilterState,
    RouteName,
    Method,
    /// Several sources' values together (`"key": {"all": [...]}`).
    Composite,
    /// The one counter of a rule keyed `"shared"`.
    Shared,
    /// No key: a source held several different values and the rule's `on_ambiguous_key` is
    /// `deny` (the value names the source). Never hashed into a counter.
    Ambiguous,
}

/// SipHash-1-3 of the seed, the kind and the key bytes.
pub fn client_hash(seed: u64, kind: KeyKind, key: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write_u64(seed);
    hasher.write_u8(kind as u8);
    hasher.write(key);
    hasher.finish()
}

/// FNV-1a (64-bit) of some bytes: fingerprints of layouts and configuration, never of client
/// keys (those get the keyed [`client_hash`]).
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A log-safe rendering of a client: the hash, never the key.
pub fn display_hash(hash: u64) -> String {
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_seeds_separate_equal_bytes() {
        let ip = client_hash(1, KeyKind::ClientIp, b"10.0.0.1");
        assert_ne!(ip, client_hash(1, KeyKind::Header, b"10.0.0.1"));
        assert_ne!(ip, client_hash(2, KeyKind::ClientIp, b"10.0.0.1"));
        assert_eq!(
            ip,
            client_hash(1, KeyKind::ClientIp, b"10.0.0.1"),
            "stable across calls and workers"
        );
    }

    #[test]
    fn the_display_form_does_not_contain_the_key() {
        let shown = display_hash(client_hash(0, KeyKind::Header, b"sk_live_secret"));
        assert_eq!(shown.len(), 16);
        assert!(!shown.contains("secret"));
    }
}
