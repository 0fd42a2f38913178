//! Finding the client key of a request: header, query parameter, bearer token, client IP, or the
//! first of an ordered chain of these that yields a usable value.

use std::net::{IpAddr, SocketAddr};

use super::percent;
use super::view::Request;
use crate::config::{self, valid_header_name, Errors, Report};
use crate::hash::KeyKind;

/// At most this many proxies may be trusted in front of Envoy.
pub const MAX_TRUSTED_HOPS: u32 = 32;

/// A compiled key source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Header(String),
    Query(Vec<u8>),
    Bearer,
    ClientIp {
        trusted_hops: u32,
        /// Leading bits of the address that make the key.
        ipv4_prefix: u8,
        ipv6_prefix: u8,
    },
}

impl KeySource {
    /// The client address, whole, `trusted_hops` proxies in.
    pub fn client_ip(trusted_hops: u32) -> Self {
        KeySource::ClientIp {
            trusted_hops,
            ipv4_prefix: 32,
            ipv6_prefix: 128,
        }
    }
}

impl KeySource {
    /// The key sources of a rule; none given means the client IP.
    pub fn compile_chain(
        sources: &[config::KeySource],
        at: &str,
        errors: &mut Errors,
    ) -> Vec<Self> {
        if sources.is_empty() {
            return vec![KeySource::client_ip(0)];
        }
        sources
            .iter()
            .enumerate()
            .filter_map(|(k, s)| Self::compile(s, &format!("{at}[{k}]"), errors))
            .collect()
    }

    fn compile(source: &config::KeySource, at: &str, errors: &mut Errors) -> Option<Self> {
        match source {
            config::KeySource::Header(name) => {
                if !valid_header_name(name) {
                    errors.add(
                        format!("{at}.header"),
                        format!("{name:?} is not a header name"),
                    );
                    return None;
                }
                Some(KeySource::Header(name.to_ascii_lowercase()))
            }
            config::KeySource::Query(name) => {
                if name.is_empty() {
                    errors.add(
                        format!("{at}.query"),
                        "a query parameter name may not be empty",
                    );
                    return None;
                }
                Some(KeySource::Query(name.clone().into_bytes()))
            }
            config::KeySource::Bearer {} => Some(KeySource::Bearer),
            config::KeySource::ClientIp(ip) => {
                let mut valid = true;
                if ip.trusted_hops > MAX_TRUSTED_HOPS {
                    errors.add(
                        format!("{at}.client_ip.trusted_hops"),
                        format!(
                            "must be at most {MAX_TRUSTED_HOPS}, got {}",
                            ip.trusted_hops
                        ),
                    );
                    valid = false;
                }
                for (field, bits, max) in [
                    ("ipv4_prefix", ip.ipv4_prefix, 32),
                    ("ipv6_prefix", ip.ipv6_prefix, 128),
                ] {
                    if !(1..=max).contains(&bits) {
                        let message = format!("must be between 1 and {max} (bits), got {bits}");
                        errors.add(format!("{at}.client_ip.{field}"), message);
                        valid = false;
                    }
                }
                valid.then_some(KeySource::ClientIp {
                    trusted_hops: ip.trusted_hops,
                    ipv4_prefix: ip.ipv4_prefix as u8,
                    ipv6_prefix: ip.ipv6_prefix as u8,
                })
            }
        }
    }
}

/// A key value, bounded: longer values are hashed whole, so nothing is lost by the bound on what
/// the filter would keep; this is the cap on what it accepts at all.
pub const MAX_KEY_BYTES: usize = 8 * 1024;

/// The first key the chain yields. Empty or whitespace-only values, and values over
/// [`MAX_KEY_BYTES`], yield nothing and the chain moves on.
pub fn extract(sources: &[KeySource], request: &Request) -> Option<(KeyKind, Vec<u8>)> {
    sources.iter().find_map(|source| {
        let (kind, value) = match source {
            KeySource::Header(name) => (KeyKind::Header, request.header(name).and_then(usable)),
            KeySource::Query(name) => (
                KeyKind::Query,
                request
                    .path()
                    .and_then(|p| query_value(p, name))
                    .and_then(usable),
            ),
            KeySource::Bearer => (
                KeyKind::Bearer,
                request.header("authorization").and_then(bearer_token),
            ),
            KeySource::ClientIp {
                trusted_hops,
                ipv4_prefix,
                ipv6_prefix,
            } => {
                let ip = client_ip(request, *trusted_hops);
                let key = ip.map(|ip| ip_key(ip, *ipv4_prefix, *ipv6_prefix));
                (KeyKind::ClientIp, key)
            }
        };
        value.map(|v| (kind, v))
    })
}

fn usable(value: Vec<u8>) -> Option<Vec<u8>> {
    keep(value, |v| bounded(v.trim_ascii()))
}

/// A key value that is neither empty nor over [`MAX_KEY_BYTES`].
fn bounded(key: &[u8]) -> Option<&[u8]> {
    (!key.is_empty() && key.len() <= MAX_KEY_BYTES).then_some(key)
}

/// The part of `value` that `pick` finds, in the buffer `value` came in (no copy on the heap).
fn keep(mut value: Vec<u8>, pick: impl FnOnce(&[u8]) -> Option<&[u8]>) -> Option<Vec<u8>> {
    let part = pick(&value)?;
    let start = part.as_ptr() as usize - value.as_ptr() as usize;
    let end = start + part.len();
    value.truncate(end);
    value.drain(..start);
    Some(value)
}

/// The token of `Bearer <token>` (scheme case-insensitive, one token, no spaces inside), in the
/// buffer the header came in.
pub fn bearer_token(authorization: Vec<u8>) -> Option<Vec<u8>> {
    keep(authorization, |authorization| {
        let value = authorization.trim_ascii();
        if value.len() < 7
            || !value[..6].eq_ignore_ascii_case(b"bearer")
            || !value[6].is_ascii_whitespace()
        {
            return None;
        }
        let token = value[7..].trim_ascii();
        if token.iter().any(|b| b.is_ascii_whitespace() || *b == b',') {
            return None;
        }
        bounded(token)
    })
}

/// The first value of query parameter `name` in a `:path`, percent- and `+`-decoded.
pub fn query_value(path: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    let start = path.iter().position(|&b| b == b'?')? + 1;
    let end = path[start..]
        .iter()
        .position(|&b| b == b'#')
        .map_or(path.len(), |e| start + e);
    path[start..end].split(|&b| b == b'&').find_map(|pair| {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &b""[..]),
        };
        (percent::decode(key, true).as_ref() == name)
            .then(|| percent::decode(value, true).into_owned())
    })
}

/// The client IP: `source.address` with no trusted hops, else the address the outermost
/// trusted proxy saw, i.e. the `trusted_hops`-th entry from the right of `x-forwarded-for`.
/// A chain shorter than that falls back to `source.address` (as Envoy's own XFF handling does);
/// an entry that is not an IP address yields no key. IPv4-mapped IPv6 addresses are IPv4
/// (`::ffff:1.2.3.4` and `1.2.3.4` are one client).
pub fn client_ip(request: &Request, trusted_hops: u32) -> Option<IpAddr> {
    if trusted_hops > 0 {
        if let Some(xff) = request.header("x-forwarded-for") {
            let entries: Vec<&[u8]> = xff.split(|&b| b == b',').map(|e| e.trim_ascii()).collect();
            let hops = trusted_hops as usize;
            if entries.len() >= hops {
                return parse_ip(entries[entries.len() - hops]).map(canonical_ip);
            }
        }
    }
    request
        .source_address()
        .and_then(|a| parse_ip(&a))
        .map(canonical_ip)
}

/// The key of an address: its text, or with fewer prefix bits than the address has, the text of
/// its network (`203.0.113.0/24`, `2001:db8:1:2::/64`), so every address in it is one client.
fn ip_key(ip: IpAddr, ipv4_prefix: u8, ipv6_prefix: u8) -> Vec<u8> {
    let text = match ip {
        IpAddr::V4(v4) if ipv4_prefix < 32 => {
            let mask = u32::MAX << (32 - ipv4_prefix as u32);
            let network = std::net::Ipv4Addr::from(u32::from(v4) & mask);
            format!("{network}/{ipv4_prefix}")
        }
        IpAddr::V6(v6) if ipv6_prefix < 128 => {
            let mask = u128::MAX << (128 - ipv6_prefix as u32);
            let network = std::net::Ipv6Addr::from(u128::from(v6) & mask);
            format!("{network}/{ipv6_prefix}")
        }
        whole => whole.to_string(),
    };
    text.into_bytes()
}

/// Parses `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]:80`.
fn parse_ip(text: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(text).ok()?.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    text.parse::<SocketAddr>().ok().map(|s| s.ip())
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeRequest;

    fn key(sources: &[KeySource], request: &FakeRequest) -> Option<(KeyKind, String)> {
        extract(sources, &Request::new(request)).map(|(k, v)| (k, String::from_utf8(v).unwrap()))
    }

    #[test]
    fn a_header_key() {
        let sources = [KeySource::Header("x-api-key".into())];
        let r = FakeRequest::with(&[("x-api-key", "  key-1 ")]);
        assert_eq!(key(&sources, &r), Some((KeyKind::Header, "key-1".into())));
        assert_eq!(
            key(&sources, &FakeRequest::with(&[("x-api-key", "   ")])),
            None
        );
        assert_eq!(key(&sources, &FakeRequest::with(&[])), None);
        let huge = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(
            key(&sources, &FakeRequest::with(&[("x-api-key", &huge)])),
            None
        );
    }

    #[test]
    fn bearer_tokens_and_odd_authorization_forms() {
        assert_eq!(
            bearer_token(b"Bearer abc.def".to_vec()),
            Some(b"abc.def".to_vec())
        );
        assert_eq!(
            bearer_token(b"bearer   abc ".to_vec()),
            Some(b"abc".to_vec())
        );
        assert_eq!(bearer_token(b"BEARER\tabc".to_vec()), Some(b"abc".to_vec()));
        for odd in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Bearerabc",
            b"Basic dXNlcjpwYXNz",
            b"Bearer a b",
            b"Bearer a,b",
            b"",
            b"\xff\xfe",
        ] {
            assert_eq!(
                bearer_token(odd.to_vec()),
                None,
                "{:?}",
                String::from_utf8_lossy(odd)
            );
        }
    }

    #[test]
    fn query_parameters() {
        assert_eq!(
            query_value(b"/x?a=1&api_key=k%2B1+2&b", b"api_key"),
            Some(b"k+1 2".to_vec())
        );
        assert_eq!(
            query_value(b"/x?api%5Fkey=v", b"api_key"),
            Some(b"v".to_vec())
        );
        assert_eq!(
            query_value(b"/x?api_key=first&api_key=second", b"api_key"),
            Some(b"first".to_vec())
        );
        assert_eq!(
            query_value(b"/x?api_key=v#frag", b"api_key"),
            Some(b"v".to_vec())
        );
        assert_eq!(query_value(b"/x", b"api_key"), None);
        assert_eq!(query_value(b"/x?api_key", b"api_key"), Some(Vec::new()));
        let sources = [KeySource::Query(b"api_key".to_vec())];
        assert_eq!(
            key(&sources, &FakeRequest::with(&[(":path", "/x?api_key=")])),
            None,
            "empty is no key"
        );
        assert_eq!(query_value(b"/x?k=%", b"k"), Some(b"%".to_vec()));
        assert_eq!(query_value(b"/x?k=%4", b"k"), Some(b"%4".to_vec()));
    }

    #[test]
    fn client_ip_from_the_connection() {
        let sources = [KeySource::client_ip(0)];
        let r = FakeRequest::with(&[("x-forwarded-for", "6.6.6.6")]);
        assert_eq!(
            key(&sources, &r),
            Some((KeyKind::ClientIp, "192.0.2.7".into())),
            "XFF ignored without trusted hops"
        );
        let mut v6 = FakeRequest::with(&[]);
        v6.source = Some(b"[2001:db8::1]:443".to_vec());
        assert_eq!(key(&sources, &v6).unwrap().1, "2001:db8::1");
        let mut mapped = FakeRequest::with(&[]);
        mapped.source = Some(b"[::ffff:192.0.2.7]:443".to_vec());
        assert_eq!(key(&sources, &mapped).unwrap().1, "192.0.2.7");
    }

    #[test]
    fn client_ip_by_prefix() {
        let prefix = |v4: u8, v6: u8| {
            [KeySource::ClientIp {
                trusted_hops: 0,
                ipv4_prefix: v4,
                ipv6_prefix: v6,
            }]
        };
        let from = |source: &str| {
            let mut r = FakeRequest::with(&[]);
            r.source = Some(source.as_bytes().to_vec());
            r
        };
        let key_of = |sources: &[KeySource], source: &str| key(sources, &from(source)).unwrap().1;
        let (v4_24, v6_64) = (prefix(24, 64), prefix(24, 64));
        assert_eq!(key_of(&v4_24, "203.0.113.77:443"), "203.0.113.0/24");
        assert_eq!(key_of(&v4_24, "[::ffff:203.0.113.9]:443"), "203.0.113.0/24");
        // Every address of a /64 is one client; the next /64 is another.
        assert_eq!(
            key_of(&v6_64, "[2001:db8:1:2:aaaa::1]:443"),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            key_of(&v6_64, "[2001:db8:1:2:ffff:ffff:ffff:ffff]:1"),
            "2001:db8:1:2::/64"
        );
        assert_eq!(key_of(&v6_64, "[2001:db8:1:3::1]:1"), "2001:db8:1:3::/64");
        assert_eq!(key_of(&prefix(1, 1), "[ffff::1]:1"), "8000::/1");
        assert_eq!(key_of(&prefix(1, 1), "200.1.1.1:1"), "128.0.0.0/1");
        // The whole address (the default) is keyed as before, without a prefix length.
        let whole = [KeySource::client_ip(0)];
        assert_eq!(key_of(&whole, "203.0.113.77:443"), "203.0.113.77");
        assert_eq!(key_of(&prefix(32, 128), "[2001:db8::1]:443"), "2001:db8::1");
    }

    #[test]
    fn forwarded_for_with_trusted_hops_resists_spoofing() {
        let one_hop = [KeySource::client_ip(1)];
        let two_hops = [KeySource::client_ip(2)];
        // The client forged "6.6.6.6"; the trusted proxy appended the address it saw.
        let r = FakeRequest::with(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9")]);
        assert_eq!(key(&one_hop, &r).unwrap().1, "203.0.113.9");
        let r = FakeRequest::with(&[("x-forwarded-for", "6.6.6.6,203.0.113.9, 10.0.0.2")]);
        assert_eq!(key(&two_hops, &r).unwrap().1, "203.0.113.9");
        // Shorter than the trusted chain: the connection's address, never a forged entry.
        let r = FakeRequest::with(&[("x-forwarded-for", "10.0.0.2")]);
        assert_eq!(key(&two_hops, &r).unwrap().1, "192.0.2.7");
        assert_eq!(
            key(&one_hop, &FakeRequest::with(&[])).unwrap().1,
            "192.0.2.7"
        );
        // Garbage where the trusted proxy's entry should be: no key from this source.
        let r = FakeRequest::with(&[("x-forwarded-for", "1.1.1.1, not-an-ip")]);
        assert_eq!(key(&one_hop, &r), None);
    }

    #[test]
    fn the_chain_falls_back_in_order() {
        let chain = [
            KeySource::Header("x-api-key".into()),
            KeySource::Bearer,
            KeySource::client_ip(0),
        ];
        let r = FakeRequest::with(&[("x-api-key", "k"), ("authorization", "Bearer t")]);
        assert_eq!(key(&chain, &r), Some((KeyKind::Header, "k".into())));
        let r = FakeRequest::with(&[("authorization", "Bearer t")]);
        assert_eq!(key(&chain, &r), Some((KeyKind::Bearer, "t".into())));
        let r = FakeRequest::with(&[("authorization", "Basic x")]);
        assert_eq!(
            key(&chain, &r),
            Some((KeyKind::ClientIp, "192.0.2.7".into()))
        );
        let mut none = FakeRequest::with(&[]);
        none.source = None;
        assert_eq!(key(&chain, &none), None);
    }
}
