//! Finding the client key of a request: one source (a header, a query parameter, a bearer token,
//! the client IP, a value another filter computed, the route or the method), the first of an
//! ordered chain of them that yields a usable value, every one of them together (one counter per
//! combination), or one key for every request.

use super::address::{client_ip, ip_key};
use std::borrow::Cow;

use smallvec::SmallVec;

use super::values::{bearer_token, is_bearer, query_values, usable};
use super::view::{MetadataPath, Request};
use crate::config::{self, valid_header_name, Errors, KeyConfig, OnAmbiguousKey, Report};
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
    /// values and values over `MAX_KEY_BYTES` yield none). A header, query parameter or bearer
    /// credential given several times with different values yields `KeyKind::Ambiguous` and the
    /// source's name under `OnAmbiguousKey::Deny`, else the first or last value.
    pub fn read(&self, request: &Request, policy: OnAmbiguousKey) -> Option<(KeyKind, Vec<u8>)> {
        let chosen = match self {
            KeySource::Header(name) => header_value(request, name, policy),
            KeySource::Query(name) => {
                let values = request.path().into_iter();
                let values = values.flat_map(|p| query_values(p, name));
                choose(values, policy).map(|v| v.and_then(usable))
            }
            KeySource::Bearer => bearer_value(request, policy),
            other => Ok(other.read_single(request)),
        };
        match chosen {
            Ok(value) => value.map(|v| (self.kind(), v)),
            Err(Ambiguous) => Some((KeyKind::Ambiguous, self.name().into_bytes())),
        }
    }

    /// The value of a source that has one value at most.
    fn read_single(&self, request: &Request) -> Option<Vec<u8>> {
        match self {
            KeySource::ClientIp {
                trusted_hops,
                ipv4_prefix,
                ipv6_prefix,
            } => {
                let ip = client_ip(request, *trusted_hops);
                ip.map(|ip| ip_key(ip, *ipv4_prefix, *ipv6_prefix))
            }
            KeySource::Metadata(at) => {
                let value = request.metadata(at).map(|v| v.text().into_owned());
                value.and_then(usable)
            }
            KeySource::FilterState(key) => request.filter_state(key).and_then(usable),
            KeySource::RouteName => request.route_name().and_then(usable),
            KeySource::Method => request.header(":method").and_then(usable),
            KeySource::Header(_) | KeySource::Query(_) | KeySource::Bearer => None,
        }
    }

    fn kind(&self) -> KeyKind {
        match self {
            KeySource::Header(_) => KeyKind::Header,
            KeySource::Query(_) => KeyKind::Query,
            KeySource::Bearer => KeyKind::Bearer,
            KeySource::ClientIp { .. } => KeyKind::ClientIp,
            KeySource::Metadata(_) => KeyKind::Metadata,
            KeySource::FilterState(_) => KeyKind::FilterState,
            KeySource::RouteName => KeyKind::RouteName,
            KeySource::Method => KeyKind::Method,
        }
    }

    /// How a reply names a source that may be given several times.
    pub fn name(&self) -> String {
        match self {
            KeySource::Header(name) => format!("header {name}"),
            KeySource::Query(name) => format!("query parameter {}", String::from_utf8_lossy(name)),
            KeySource::Bearer => "bearer token (authorization)".into(),
            _ => format!("{:?}", self.kind()),
        }
    }

    /// Whether reading this source under `policy` needs every header line at once.
    pub fn reads_every_line(&self, policy: OnAmbiguousKey) -> bool {
        policy != OnAmbiguousKey::First && matches!(self, KeySource::Header(_) | KeySource::Bearer)
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

/// A source held several different values and the policy is to deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ambiguous;

/// The value that counts of those a source was given, in order: `Ok(None)` when there is none.
fn choose<T: AsRef<[u8]>>(
    values: impl IntoIterator<Item = T>,
    policy: OnAmbiguousKey,
) -> Result<Option<T>, Ambiguous> {
    let mut values = values.into_iter();
    let first = values.next();
    match (policy, &first) {
        (_, None) | (OnAmbiguousKey::First, _) => Ok(first),
        (OnAmbiguousKey::Last, _) => Ok(values.last().or(first)),
        (OnAmbiguousKey::Deny, Some(one)) => {
            let one = one.as_ref().trim_ascii();
            match values.all(|v| v.as_ref().trim_ascii() == one) {
                true => Ok(first),
                false => Err(Ambiguous),
            }
        }
    }
}

/// A header key: its one value, or under `first` the first line (one single read).
fn header_value(
    request: &Request,
    name: &str,
    policy: OnAmbiguousKey,
) -> Result<Option<Vec<u8>>, Ambiguous> {
    if policy == OnAmbiguousKey::First {
        return Ok(request.header(name).and_then(usable));
    }
    let chosen = choose(request.header_values(name), policy)?;
    Ok(chosen.and_then(|v| usable(v.into_owned())))
}

/// The bearer token among the request's `Authorization` credentials (every line, each split at
/// its commas, as a comma-joined list of lines reads). Several different credentials with a
/// bearer one among them are ambiguous under `deny`: the upstream may read another one.
fn bearer_value(request: &Request, policy: OnAmbiguousKey) -> Result<Option<Vec<u8>>, Ambiguous> {
    let lines: SmallVec<[Cow<[u8]>; 2]> = match policy {
        OnAmbiguousKey::First => request
            .header("authorization")
            .map(Cow::Owned)
            .into_iter()
            .collect(),
        _ => request.header_values("authorization").collect(),
    };
    let credentials = || {
        lines
            .iter()
            .flat_map(|line| line.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|c| !c.is_empty())
    };
    if policy == OnAmbiguousKey::Deny && !credentials().any(is_bearer) {
        return Ok(None);
    }
    let chosen = choose(credentials(), policy)?;
    Ok(chosen.and_then(|c| bearer_token(c.to_vec())))
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

    /// Whether reading the key under `policy` needs every header line at once.
    pub fn reads_every_line(&self, policy: OnAmbiguousKey) -> bool {
        match self {
            Key::First(sources) | Key::All(sources) => {
                sources.iter().any(|s| s.reads_every_line(policy))
            }
            Key::Shared => false,
        }
    }

    /// The request's key, and what kind of value it is: the first source's that yields one, all
    /// of them together (`None` when any is missing), or the one shared key.
    /// A source given several different values ends the search: `KeyKind::Ambiguous` under
    /// `deny` (see [`KeySource::read`]).
    pub fn extract(&self, request: &Request, policy: OnAmbiguousKey) -> Option<(KeyKind, Vec<u8>)> {
        match self {
            Key::First(sources) => sources.iter().find_map(|s| s.read(request, policy)),
            Key::All(sources) => {
                let mut key = Vec::new();
                for source in sources {
                    let (kind, value) = source.read(request, policy)?;
                    if kind == KeyKind::Ambiguous {
                        return Some((kind, value));
                    }
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
    pub fn describe(&self, request: &Request, policy: OnAmbiguousKey) -> Vec<String> {
        let sources = match self {
            Key::First(sources) | Key::All(sources) => sources,
            Key::Shared => return vec!["shared: one counter for every request".into()],
        };
        sources
            .iter()
            .map(|s| {
                let value = match s.read(request, policy) {
                    None => "none".to_string(),
                    Some((KeyKind::Ambiguous, _)) => "given several different values".into(),
                    Some((_, v)) => format!("{:?}", String::from_utf8_lossy(&v)),
                };
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
        key.extract(&Request::new(request), OnAmbiguousKey::Deny)
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

    fn read_as(
        source: KeySource,
        policy: OnAmbiguousKey,
        request: &FakeRequest,
    ) -> Option<(KeyKind, String)> {
        let key = Key::First(vec![source, KeySource::client_ip(0)]);
        key.extract(&Request::new(request), policy)
            .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
    }

    fn ambiguous(name: &str) -> Option<(KeyKind, String)> {
        Some((KeyKind::Ambiguous, name.into()))
    }

    #[test]
    fn a_key_header_given_twice_is_ambiguous_unless_told_which() {
        let header = || KeySource::Header("x-api-key".into());
        let twice = FakeRequest::with(&[("x-api-key", "junk")]).again("x-api-key", "exhausted");
        // Denied, never counted under either, and never falling back to the next source.
        assert_eq!(
            read_as(header(), OnAmbiguousKey::Deny, &twice),
            ambiguous("header x-api-key")
        );
        let first = read_as(header(), OnAmbiguousKey::First, &twice);
        assert_eq!(first, Some((KeyKind::Header, "junk".into())));
        let last = read_as(header(), OnAmbiguousKey::Last, &twice);
        assert_eq!(last, Some((KeyKind::Header, "exhausted".into())));
        // The same value twice (spaces aside) says one thing: counted.
        let same = FakeRequest::with(&[("x-api-key", "k ")]).again("x-api-key", " k");
        let read = read_as(header(), OnAmbiguousKey::Deny, &same);
        assert_eq!(read, Some((KeyKind::Header, "k".into())));
        // An empty line before a real one: the upstream may read either.
        let empty_first = FakeRequest::with(&[("x-api-key", " ")]).again("x-api-key", "victim");
        assert_eq!(
            read_as(header(), OnAmbiguousKey::Deny, &empty_first),
            ambiguous("header x-api-key")
        );
        let once = FakeRequest::with(&[("x-api-key", "k")]);
        let read = read_as(header(), OnAmbiguousKey::Deny, &once);
        assert_eq!(read, Some((KeyKind::Header, "k".into())));
    }

    #[test]
    fn a_query_parameter_given_twice_is_ambiguous_unless_told_which() {
        let query = || KeySource::Query(b"api_key".to_vec());
        let path = |p: &str| FakeRequest::with(&[(":path", p)]);
        let twice = path("/x?api_key=junk&api_key=exhausted");
        assert_eq!(
            read_as(query(), OnAmbiguousKey::Deny, &twice),
            ambiguous("query parameter api_key")
        );
        let first = read_as(query(), OnAmbiguousKey::First, &twice);
        assert_eq!(first, Some((KeyKind::Query, "junk".into())));
        let last = read_as(query(), OnAmbiguousKey::Last, &twice);
        assert_eq!(last, Some((KeyKind::Query, "exhausted".into())));
        // Spelled differently, decoded alike: one value.
        let same = path("/x?api_key=a%2Bb&api%5Fkey=a%2bb");
        let read = read_as(query(), OnAmbiguousKey::Deny, &same);
        assert_eq!(read, Some((KeyKind::Query, "a+b".into())));
        let encoded_name = path("/x?api_key=a&api%5Fkey=b");
        assert_eq!(
            read_as(query(), OnAmbiguousKey::Deny, &encoded_name),
            ambiguous("query parameter api_key")
        );
        let none = read_as(query(), OnAmbiguousKey::Deny, &path("/x?other=1"));
        assert_eq!(
            none.unwrap().0,
            KeyKind::ClientIp,
            "absent: the next source"
        );
    }

    #[test]
    fn several_authorization_credentials_with_a_bearer_one_are_ambiguous() {
        let read = |policy, request: &FakeRequest| read_as(KeySource::Bearer, policy, request);
        let bearer = "bearer token (authorization)";
        let lines = FakeRequest::with(&[("authorization", "Bearer junk")])
            .again("authorization", "Bearer exhausted");
        // Envoy may join the lines with a comma: the same two credentials.
        let joined = FakeRequest::with(&[("authorization", "Bearer junk,Bearer exhausted")]);
        for request in [&lines, &joined] {
            assert_eq!(read(OnAmbiguousKey::Deny, request), ambiguous(bearer));
            let first = read(OnAmbiguousKey::First, &lines);
            assert_eq!(first, Some((KeyKind::Bearer, "junk".into())));
            let last = read(OnAmbiguousKey::Last, request);
            assert_eq!(last, Some((KeyKind::Bearer, "exhausted".into())));
        }
        // A bearer token beside another scheme's credential: the upstream may read either.
        let mixed = FakeRequest::with(&[("authorization", "Bearer t")])
            .again("authorization", "Basic dTpw");
        assert_eq!(read(OnAmbiguousKey::Deny, &mixed), ambiguous(bearer));
        // No bearer credential at all (Digest's parameters hold commas): no key, the next source.
        let digest = FakeRequest::with(&[("authorization", "Digest realm=\"a\", nonce=\"b\"")]);
        let next = read(OnAmbiguousKey::Deny, &digest).unwrap();
        assert_eq!(next.0, KeyKind::ClientIp);
        let same =
            FakeRequest::with(&[("authorization", "Bearer t")]).again("authorization", "bearer t");
        assert_eq!(
            read(OnAmbiguousKey::Deny, &same),
            ambiguous(bearer),
            "the scheme's case differs: two spellings, refused rather than guessed"
        );
        let once = FakeRequest::with(&[("authorization", "Bearer t")]);
        let read_once = read(OnAmbiguousKey::Deny, &once);
        assert_eq!(read_once, Some((KeyKind::Bearer, "t".into())));
    }

    #[test]
    fn an_ambiguous_part_makes_a_composite_key_ambiguous() {
        let key = Key::All(vec![
            KeySource::Header("x-tenant".into()),
            KeySource::Header("x-user".into()),
        ]);
        let request = FakeRequest::with(&[("x-tenant", "t"), ("x-user", "a")]).again("x-user", "b");
        let read = key.extract(&Request::new(&request), OnAmbiguousKey::Deny);
        assert_eq!(read, Some((KeyKind::Ambiguous, b"header x-user".to_vec())));
        let read = key.extract(&Request::new(&request), OnAmbiguousKey::Last);
        assert_eq!(read.unwrap().0, KeyKind::Composite);
        assert!(key.reads_every_line(OnAmbiguousKey::Deny));
        assert!(!key.reads_every_line(OnAmbiguousKey::First));
    }
}
