//! Finding the client key of a request: one source (a header, a query parameter, a bearer token,
//! the client IP, a value another filter computed, the route or the method), the first of an
//! ordered chain of them that yields a usable value, every one of them together (one counter per
//! combination), or one key for every request.

use super::address::{client_ip, ip_key};
use super::values::{bearer_token, query_value, usable};
use super::view::{MetadataPath, Request};
use crate::config::{self, valid_header_name, Errors, KeyConfig, Report};
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
    Metadata(MetadataPath),
    FilterState(String),
    RouteName,
    Method,
}

/// A rule's key, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// The first source that yields a value.
    First(Vec<KeySource>),
    /// Every source's value, together.
    All(Vec<KeySource>),
    /// One key for every request.
    Shared,
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

    /// This source's value in the request, if it yields a usable one (empty or whitespace-only
    /// values and values over `MAX_KEY_BYTES` yield none).
    pub fn read(&self, request: &Request) -> Option<(KeyKind, Vec<u8>)> {
        let (kind, value) = match self {
            KeySource::Header(name) => (KeyKind::Header, request.header(name).and_then(usable)),
            KeySource::Query(name) => {
                let value = request.path().and_then(|p| query_value(p, name));
                (KeyKind::Query, value.and_then(usable))
            }
            KeySource::Bearer => {
                let authorization = request.header("authorization");
                (KeyKind::Bearer, authorization.and_then(bearer_token))
            }
            KeySource::ClientIp {
                trusted_hops,
                ipv4_prefix,
                ipv6_prefix,
            } => {
                let ip = client_ip(request, *trusted_hops);
                let key = ip.map(|ip| ip_key(ip, *ipv4_prefix, *ipv6_prefix));
                (KeyKind::ClientIp, key)
            }
            KeySource::Metadata(at) => {
                let value = request.metadata(at).map(|v| v.text().into_owned());
                (KeyKind::Metadata, value.and_then(usable))
            }
            KeySource::FilterState(key) => (
                KeyKind::FilterState,
                request.filter_state(key).and_then(usable),
            ),
            KeySource::RouteName => (KeyKind::RouteName, request.route_name().and_then(usable)),
            KeySource::Method => (KeyKind::Method, request.header(":method").and_then(usable)),
        };
        value.map(|v| (kind, v))
    }

    /// The request headers this source reads.
    pub fn headers_read(&self, out: &mut Vec<String>) {
        match self {
            KeySource::Header(name) => out.push(name.clone()),
            KeySource::Query(_) => out.push(":path".into()),
            KeySource::Bearer => out.push("authorization".into()),
            KeySource::ClientIp { trusted_hops, .. } if *trusted_hops > 0 => {
                out.push("x-forwarded-for".into())
            }
            KeySource::Method => out.push(":method".into()),
            _ => {}
        }
    }

    /// How `explain` names the source.
    #[cfg(feature = "cli")]
    pub fn describe(&self) -> String {
        match self {
            KeySource::Header(name) => format!("header {name}"),
            KeySource::Query(name) => format!("query {}", String::from_utf8_lossy(name)),
            KeySource::Bearer => "bearer token".into(),
            KeySource::ClientIp { trusted_hops, .. } => {
                format!("client_ip (trusted_hops {trusted_hops})")
            }
            KeySource::Metadata(at) => {
                let path: String = at.path.iter().map(|p| format!(".{p}")).collect();
                format!("metadata {}/{}{path}", at.namespace, at.key)
            }
            KeySource::FilterState(key) => format!("filter state {key}"),
            KeySource::RouteName => "route name".into(),
            KeySource::Method => "method".into(),
        }
    }
}

impl Key {
    /// A rule's key; a chain of no sources means the client IP.
    pub fn compile(key: &KeyConfig, at: &str, errors: &mut Errors) -> Self {
        let sources = |list: &[config::KeySource], at: &str, errors: &mut Errors| -> Vec<_> {
            list.iter()
                .enumerate()
                .filter_map(|(k, s)| KeySource::compile(s, &format!("{at}[{k}]"), errors))
                .collect()
        };
        match key {
            KeyConfig::First(list) if list.is_empty() => Key::First(vec![KeySource::client_ip(0)]),
            KeyConfig::First(list) => Key::First(sources(list, at, errors)),
            KeyConfig::All(list) => {
                if list.is_empty() {
                    errors.add(format!("{at}.all"), "needs at least one source");
                }
                Key::All(sources(list, &format!("{at}.all"), errors))
            }
            KeyConfig::Shared => Key::Shared,
        }
    }

    /// The request headers the key may read.
    pub fn headers_read(&self, out: &mut Vec<String>) {
        if let Key::First(sources) | Key::All(sources) = self {
            sources.iter().for_each(|s| s.headers_read(out));
        }
    }

    /// The request's key, and what kind of value it is: the first source's that yields one, all
    /// of them together (`None` when any is missing), or the one shared key.
    pub fn extract(&self, request: &Request) -> Option<(KeyKind, Vec<u8>)> {
        match self {
            Key::First(sources) => sources.iter().find_map(|s| s.read(request)),
            Key::All(sources) => {
                let mut key = Vec::new();
                for source in sources {
                    let (kind, value) = source.read(request)?;
                    // Each part with its kind and length: no two combinations read alike.
                    key.push(kind as u8);
                    key.extend_from_slice(&(value.len() as u32).to_le_bytes());
                    key.extend_from_slice(&value);
                }
                Some((KeyKind::Composite, key))
            }
            Key::Shared => Some((KeyKind::Shared, Vec::new())),
        }
    }

    /// Each source and what it read (`explain`).
    #[cfg(feature = "cli")]
    pub fn describe(&self, request: &Request) -> Vec<String> {
        let sources = match self {
            Key::First(sources) | Key::All(sources) => sources,
            Key::Shared => return vec!["shared: one counter for every request".into()],
        };
        sources
            .iter()
            .map(|s| {
                let value = s.read(request).map_or("none".to_string(), |(_, v)| {
                    format!("{:?}", String::from_utf8_lossy(&v))
                });
                format!("{}: {value}", s.describe())
            })
            .collect()
    }
}

impl KeySource {
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
            config::KeySource::Metadata(m) => {
                let at = format!("{at}.metadata");
                MetadataPath::compile((&m.namespace, &m.key, &m.path), &at, errors)
                    .map(KeySource::Metadata)
            }
            config::KeySource::FilterState(key) => {
                if key.is_empty() {
                    errors.add(
                        format!("{at}.filter_state"),
                        "a filter state key may not be empty",
                    );
                    return None;
                }
                Some(KeySource::FilterState(key.clone()))
            }
            config::KeySource::RouteName {} => Some(KeySource::RouteName),
            config::KeySource::Method {} => Some(KeySource::Method),
            config::KeySource::ClientIp(ip) => Self::compile_client_ip(ip, at, errors),
        }
    }

    fn compile_client_ip(
        ip: &config::ClientIpConfig,
        at: &str,
        errors: &mut Errors,
    ) -> Option<Self> {
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

#[cfg(test)]
mod tests {
    use super::super::values::{bearer_token, query_value, MAX_KEY_BYTES};
    use super::*;
    use crate::testing::FakeRequest;

    fn key(sources: &[KeySource], request: &FakeRequest) -> Option<(KeyKind, String)> {
        let key = Key::First(sources.to_vec());
        key.extract(&Request::new(request))
            .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
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
