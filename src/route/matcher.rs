//! What a rule asks of a request: compiled path patterns, methods, hosts and route names.

use std::borrow::Cow;

use super::path::{canonical_segments, CanonicalPath};
use super::select::Selectors;
use crate::config::{Errors, MatchConfig, PathMatch, Report};

/// The request attributes routing needs, read once per request.
#[derive(Debug, Clone, Default)]
pub struct RouteFacts<'a> {
    pub path: CanonicalPath<'a>,
    pub method: Option<Cow<'a, [u8]>>,
    pub authority: Option<Cow<'a, [u8]>>,
    pub route_name: Option<Vec<u8>>,
}

/// A path pattern, compiled to canonical segments (see [`super::path`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Exact(Vec<Vec<u8>>),
    /// Segment-wise prefix.
    Prefix(Vec<Vec<u8>>),
    Template(Vec<TemplateSegment>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSegment {
    Literal(Vec<u8>),
    /// `:name` or `*`: exactly one segment.
    One,
    /// `**`, last only: any number of segments, none included.
    Rest,
}

impl PathPattern {
    pub fn exact(path: &str) -> Self {
        PathPattern::Exact(canonical_segments(path.as_bytes()))
    }

    pub fn prefix(path: &str) -> Self {
        PathPattern::Prefix(canonical_segments(path.as_bytes()))
    }

    /// Compiles `/api/links/:id/qr`; the error says what is wrong with the template.
    pub fn template(path: &str) -> Result<Self, String> {
        if !path.starts_with('/') {
            return Err("a template must start with '/'".into());
        }
        let raw: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut segments = Vec::with_capacity(raw.len());
        for (i, segment) in raw.iter().enumerate() {
            segments.push(match *segment {
                "**" if i + 1 == raw.len() => TemplateSegment::Rest,
                "**" => return Err("'**' may only be the last segment".into()),
                "*" => TemplateSegment::One,
                s if s.starts_with(':') => {
                    let name = &s[1..];
                    if name.is_empty()
                        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return Err(format!(
                            "parameter {s:?} needs a name of letters, digits or '_'"
                        ));
                    }
                    TemplateSegment::One
                }
                s if s.contains(['*', ':', '?', '#', '%']) => {
                    return Err(format!(
                        "segment {s:?} mixes text with '*', ':', '?', '#' or '%'"
                    ));
                }
                s => TemplateSegment::Literal(s.to_ascii_lowercase().into_bytes()),
            });
        }
        Ok(PathPattern::Template(segments))
    }

    pub fn matches(&self, path: &CanonicalPath) -> bool {
        let mut actual = path.segments();
        match self {
            PathPattern::Exact(want) => actual.eq(want.iter().map(Vec::as_slice)),
            PathPattern::Prefix(want) => want.iter().all(|w| actual.next() == Some(w.as_slice())),
            PathPattern::Template(segments) => {
                let rest = matches!(segments.last(), Some(TemplateSegment::Rest));
                let fixed = if rest {
                    &segments[..segments.len() - 1]
                } else {
                    &segments[..]
                };
                let all = fixed.iter().all(|segment| match (segment, actual.next()) {
                    (_, None) => false,
                    (TemplateSegment::Literal(text), Some(seen)) => text == seen,
                    (TemplateSegment::One, Some(_)) => true,
                    (TemplateSegment::Rest, Some(_)) => unreachable!("only last"),
                });
                all && (rest || actual.next().is_none())
            }
        }
    }
}

/// A host name pattern: `api.example.com` or `*.example.com` (one or more labels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(Vec<u8>),
    Suffix(Vec<u8>),
}

impl HostPattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let lower = pattern.trim_end_matches('.').to_ascii_lowercase();
        if lower.is_empty() {
            return Err("a host may not be empty".into());
        }
        if let Some(rest) = lower.strip_prefix("*.") {
            if rest.is_empty() || rest.contains('*') {
                return Err(format!(
                    "host pattern {pattern:?}: only a leading '*.' wildcard is allowed"
                ));
            }
            return Ok(HostPattern::Suffix(format!(".{rest}").into_bytes()));
        }
        if lower.contains('*') {
            return Err(format!(
                "host pattern {pattern:?}: only a leading '*.' wildcard is allowed"
            ));
        }
        Ok(HostPattern::Exact(lower.into_bytes()))
    }

    /// `authority` is the request's `:authority`, port included or not.
    pub fn matches(&self, authority: &[u8]) -> bool {
        let host = host_of(authority);
        match self {
            HostPattern::Exact(want) => host == *want,
            HostPattern::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }
}

/// The host of an authority, lower-cased, without port or trailing dot.
pub fn host_of(authority: &[u8]) -> Vec<u8> {
    let host = if authority.first() == Some(&b'[') {
        // [v6]:port
        match authority.iter().position(|&b| b == b']') {
            Some(end) => &authority[..=end],
            None => authority,
        }
    } else {
        match authority.iter().rposition(|&b| b == b':') {
            Some(colon) => &authority[..colon],
            None => authority,
        }
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    host.to_ascii_lowercase()
}

/// What a rule asks of a request; every part given must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteMatcher {
    pub path: Option<PathPattern>,
    /// Upper-case method names.
    pub methods: Vec<Vec<u8>>,
    pub hosts: Vec<HostPattern>,
    pub route_names: Vec<Vec<u8>>,
    /// Headers, query parameters, the client's range, values of other filters.
    pub selectors: Selectors,
}

impl RouteMatcher {
    pub fn compile(m: &MatchConfig, at: &str, errors: &mut Errors) -> Self {
        RouteMatcher {
            path: compile_path(m.path.as_ref(), at, errors),
            methods: compile_methods(&m.methods, at, errors),
            hosts: m
                .hosts
                .iter()
                .enumerate()
                .filter_map(|(i, host)| {
                    HostPattern::parse(host)
                        .map_err(|message| errors.add(format!("{at}.hosts[{i}]"), message))
                        .ok()
                })
                .collect(),
            route_names: m
                .route_names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    if name.is_empty() {
                        errors.add(
                            format!("{at}.route_names[{i}]"),
                            "a route name may not be empty",
                        );
                    }
                    name.clone().into_bytes()
                })
                .collect(),
            selectors: Selectors::compile(m, at, errors),
        }
    }

    /// The request headers this matcher may read.
    pub fn headers_read(&self, out: &mut Vec<String>) {
        if self.path.is_some() {
            out.push(":path".into());
        }
        if !self.methods.is_empty() {
            out.push(":method".into());
        }
        if !self.hosts.is_empty() {
            out.push(":authority".into());
        }
        self.selectors.headers_read(out);
    }

    pub fn matches(&self, facts: &RouteFacts) -> bool {
        if let Some(path) = &self.path {
            if !path.matches(&facts.path) {
                return false;
            }
        }
        if !self.methods.is_empty() {
            let Some(method) = &facts.method else {
                return false;
            };
            if !self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)) {
                return false;
            }
        }
        if !self.hosts.is_empty() {
            let Some(authority) = &facts.authority else {
                return false;
            };
            if !self.hosts.iter().any(|h| h.matches(authority)) {
                return false;
            }
        }
        if !self.route_names.is_empty() {
            let Some(route) = &facts.route_name else {
                return false;
            };
            if !self.route_names.iter().any(|r| r == route) {
                return false;
            }
        }
        true
    }
}

fn compile_path(path: Option<&PathMatch>, at: &str, errors: &mut Errors) -> Option<PathPattern> {
    match path? {
        PathMatch::Exact(p) | PathMatch::Prefix(p) if !p.starts_with('/') => {
            errors.add(
                format!("{at}.path"),
                format!("a path must start with '/', got {p:?}"),
            );
            None
        }
        PathMatch::Exact(p) => Some(PathPattern::exact(p)),
        PathMatch::Prefix(p) => Some(PathPattern::prefix(p)),
        PathMatch::Template(t) => PathPattern::template(t)
            .map_err(|message| errors.add(format!("{at}.path.template"), message))
            .ok(),
    }
}

fn compile_methods(methods: &[String], at: &str, errors: &mut Errors) -> Vec<Vec<u8>> {
    let is_method = |m: &str| {
        !m.is_empty()
            && m.bytes()
                .all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_')
    };
    methods
        .iter()
        .enumerate()
        .map(|(i, method)| {
            if !is_method(method) {
                let message = format!("{method:?} is not an HTTP method");
                errors.add(format!("{at}.methods[{i}]"), message);
            }
            method.to_ascii_uppercase().into_bytes()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> CanonicalPath<'_> {
        CanonicalPath::of(p.as_bytes())
    }

    #[test]
    fn exact_and_prefix_work_on_segments() {
        let exact = PathPattern::exact("/health");
        assert!(exact.matches(&path("/health")));
        assert!(exact.matches(&path("/health/")));
        assert!(exact.matches(&path("/Health?probe=1")));
        assert!(!exact.matches(&path("/health/deep")));
        let prefix = PathPattern::prefix("/api/");
        assert!(prefix.matches(&path("/api")));
        assert!(prefix.matches(&path("/api/links/1")));
        assert!(!prefix.matches(&path("/apix")));
        assert!(PathPattern::prefix("/").matches(&path("/anything/at/all")));
    }

    #[test]
    fn templates_bind_one_segment_per_parameter() {
        let qr = PathPattern::template("/api/links/:id/qr").unwrap();
        assert!(qr.matches(&path("/api/links/abc123/qr")));
        assert!(qr.matches(&path("/api/links/abc123/qr/")));
        assert!(
            qr.matches(&path("/API/links/a%2Fb/../qr")),
            "canonical form /api/links/a/qr"
        );
        assert!(!qr.matches(&path("/api/links/qr")));
        assert!(!qr.matches(&path("/api/links/a/b/qr")));
        let rest = PathPattern::template("/api/analytics/**").unwrap();
        assert!(rest.matches(&path("/api/analytics")));
        assert!(rest.matches(&path("/api/analytics/a/b/c")));
        assert!(!rest.matches(&path("/api/other")));
        let any = PathPattern::template("/*/status").unwrap();
        assert!(any.matches(&path("/v1/status")));
    }

    #[test]
    fn bad_templates_say_why() {
        assert!(PathPattern::template("api")
            .unwrap_err()
            .contains("start with '/'"));
        assert!(PathPattern::template("/a/**/b")
            .unwrap_err()
            .contains("last"));
        assert!(PathPattern::template("/a/:/b")
            .unwrap_err()
            .contains("name"));
        assert!(PathPattern::template("/a/x*y")
            .unwrap_err()
            .contains("mixes"));
    }

    #[test]
    fn hosts_ignore_port_case_and_trailing_dot() {
        let exact = HostPattern::parse("API.example.com").unwrap();
        assert!(exact.matches(b"api.example.com:8443"));
        assert!(exact.matches(b"Api.Example.Com."));
        assert!(!exact.matches(b"evil-api.example.com"));
        let wildcard = HostPattern::parse("*.example.com").unwrap();
        assert!(wildcard.matches(b"a.b.example.com"));
        assert!(!wildcard.matches(b"example.com"));
        assert!(!wildcard.matches(b"badexample.com"));
        assert_eq!(host_of(b"[::1]:10000"), b"[::1]".to_vec());
        assert!(HostPattern::parse("a.*.com").is_err());
        assert!(HostPattern::parse("").is_err());
    }

    #[test]
    fn every_given_part_must_match() {
        let matcher = RouteMatcher {
            path: Some(PathPattern::prefix("/api")),
            methods: vec![b"POST".to_vec()],
            hosts: vec![HostPattern::parse("api.example.com").unwrap()],
            route_names: vec![b"links".to_vec()],
            ..RouteMatcher::default()
        };
        let mut facts = RouteFacts {
            path: path("/api/links"),
            method: Some(Cow::Borrowed(b"post")),
            authority: Some(Cow::Borrowed(b"api.example.com")),
            route_name: Some(b"links".to_vec()),
        };
        assert!(matcher.matches(&facts));
        facts.route_name = None;
        assert!(!matcher.matches(&facts));
        facts.route_name = Some(b"links".to_vec());
        facts.method = Some(Cow::Borrowed(b"GET"));
        assert!(!matcher.matches(&facts));
        assert!(
            RouteMatcher::default().matches(&RouteFacts::default()),
            "an empty match matches everything"
        );
    }
}
