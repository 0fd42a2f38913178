//! Selectors: what a rule's `match` tests beyond path, method, host and route name — request
//! headers, query parameters, the client's address range, and values other filters computed
//! (dynamic metadata, filter state). Every selector of a rule must match. Compiled at load,
//! with every bad pattern or range named by its JSON path.

use std::borrow::Cow;

use super::cidr::Cidr;
use crate::config::{
    valid_header_name, Errors, FilterStateMatch, MatchConfig, MetadataMatch, NamedMatch, Report,
    SourceCidrMatch,
};
use crate::request::{client_ip, query_value, MetadataPath, Request, MAX_TRUSTED_HOPS};

/// Values longer than this never match a regular expression (the bound on a match's cost; the
/// other tests cost a comparison).
pub const MAX_REGEX_VALUE: usize = 8 * 1024;
/// The compiled size a pattern may take (regex-lite's own measure).
const MAX_PATTERN_SIZE: usize = 256 * 1024;

/// A regular expression the whole value must match, kept with its text.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    regex: regex_lite::Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Pattern {
    pub fn compile(text: &str) -> Result<Self, String> {
        let regex = regex_lite::RegexBuilder::new(&format!("^(?:{text})$"))
            .size_limit(MAX_PATTERN_SIZE)
            .build()
            .map_err(|e| format!("not a regular expression this filter takes: {e}"))?;
        Ok(Pattern {
            text: text.to_string(),
            regex,
        })
    }

    pub fn matches(&self, value: &[u8]) -> bool {
        value.len() <= MAX_REGEX_VALUE
            && std::str::from_utf8(value).is_ok_and(|v| self.regex.is_match(v))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Test {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
    Regex(Pattern),
    Present(bool),
}

/// One test of a value: exact, prefix, regular expression or presence, perhaps inverted.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueTest {
    test: Test,
    invert: bool,
}

/// The test fields every selector has: (exact, prefix, regex, present, invert).
pub type TestFields<'a> = (
    &'a Option<String>,
    &'a Option<String>,
    &'a Option<String>,
    Option<bool>,
    bool,
);

impl ValueTest {
    /// Exactly one of the tests must be given.
    pub fn compile(fields: TestFields, at: &str, errors: &mut Errors) -> Option<Self> {
        let (exact, prefix, regex, present, invert) = fields;
        let given = [
            exact.is_some(),
            prefix.is_some(),
            regex.is_some(),
            present.is_some(),
        ];
        if given.iter().filter(|&&g| g).count() != 1 {
            errors.add(
                at,
                "give exactly one of \"exact\", \"prefix\", \"regex\" or \"present\"",
            );
            return None;
        }
        let test = if let Some(e) = exact {
            Test::Exact(e.as_bytes().to_vec())
        } else if let Some(p) = prefix {
            Test::Prefix(p.as_bytes().to_vec())
        } else if let Some(r) = regex {
            let pattern = Pattern::compile(r).map_err(|m| errors.add(format!("{at}.regex"), m));
            Test::Regex(pattern.ok()?)
        } else {
            Test::Present(present.unwrap_or(true))
        };
        Some(ValueTest { test, invert })
    }

    /// Whether the value (`None`: not there) passes. A value test on a missing value fails, so
    /// its inverted form matches a request without the value.
    pub fn matches(&self, value: Option<&[u8]>) -> bool {
        let passed = match (&self.test, value) {
            (Test::Present(want), v) => v.is_some() == *want,
            (_, None) => false,
            (Test::Exact(e), Some(v)) => v == e.as_slice(),
            (Test::Prefix(p), Some(v)) => v.starts_with(p),
            (Test::Regex(r), Some(v)) => r.matches(v),
        };
        passed != self.invert
    }

    #[cfg(feature = "cli")]
    fn describe(&self) -> String {
        let test = match &self.test {
            Test::Exact(e) => format!("exact {:?}", String::from_utf8_lossy(e)),
            Test::Prefix(p) => format!("prefix {:?}", String::from_utf8_lossy(p)),
            Test::Regex(r) => format!("regex {:?}", r.text),
            Test::Present(true) => "present".to_string(),
            Test::Present(false) => "absent".to_string(),
        };
        if self.invert {
            format!("not {test}")
        } else {
            test
        }
    }
}

/// What a selector reads.
#[derive(Debug, Clone, PartialEq)]
enum Subject {
    Header(String),
    Query(Vec<u8>),
    Metadata(MetadataPath),
    FilterState(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Selector {
    subject: Subject,
    test: ValueTest,
}

impl Selector {
    fn value<'r>(&self, request: &'r Request) -> Option<Cow<'r, [u8]>> {
        match &self.subject {
            Subject::Header(name) => request.header_ref(name),
            Subject::Query(name) => request
                .path()
                .and_then(|p| query_value(p, name))
                .map(Cow::Owned),
            Subject::Metadata(at) => request
                .metadata(at)
                .map(|v| Cow::Owned(v.text().into_owned())),
            Subject::FilterState(key) => request.filter_state(key).map(Cow::Owned),
        }
    }

    #[cfg(feature = "cli")]
    fn describe(&self) -> String {
        let subject = match &self.subject {
            Subject::Header(name) => format!("header {name}"),
            Subject::Query(name) => format!("query {}", String::from_utf8_lossy(name)),
            Subject::Metadata(at) => {
                let path: String = at.path.iter().map(|p| format!(".{p}")).collect();
                format!("metadata {}/{}{path}", at.namespace, at.key)
            }
            Subject::FilterState(key) => format!("filter state {key}"),
        };
        format!("{subject} {}", self.test.describe())
    }
}

/// The client's address in (or, inverted, outside) a set of ranges.
#[derive(Debug, Clone, PartialEq)]
struct SourceRange {
    cidrs: Vec<Cidr>,
    trusted_hops: u32,
    invert: bool,
}

impl SourceRange {
    fn matches(&self, request: &Request) -> bool {
        let ip = client_ip(request, self.trusted_hops);
        let inside = ip.is_some_and(|ip| self.cidrs.iter().any(|c| c.contains(ip)));
        inside != self.invert
    }

    #[cfg(feature = "cli")]
    fn describe(&self) -> String {
        let cidrs: Vec<String> = self.cidrs.iter().map(Cidr::to_string).collect();
        let not = if self.invert { "not " } else { "" };
        format!("client address {not}in {}", cidrs.join(", "))
    }
}

/// A rule's selectors, all of which must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selectors {
    list: Vec<Selector>,
    source: Option<SourceRange>,
}

impl Selectors {
    pub fn compile(m: &MatchConfig, at: &str, errors: &mut Errors) -> Self {
        let mut list = Vec::new();
        for (i, h) in m.headers.iter().enumerate() {
            list.extend(header(h, &format!("{at}.headers[{i}]"), errors));
        }
        for (i, q) in m.query_params.iter().enumerate() {
            list.extend(query(q, &format!("{at}.query_params[{i}]"), errors));
        }
        for (i, md) in m.metadata.iter().enumerate() {
            list.extend(metadata(md, &format!("{at}.metadata[{i}]"), errors));
        }
        for (i, fs) in m.filter_state.iter().enumerate() {
            list.extend(filter_state(fs, &format!("{at}.filter_state[{i}]"), errors));
        }
        let source = m
            .source_cidr
            .as_ref()
            .and_then(|s| source_range(s, &format!("{at}.source_cidr"), errors));
        Selectors { list, source }
    }

    /// The request headers these selectors may read.
    pub fn headers_read(&self, out: &mut Vec<String>) {
        for selector in &self.list {
            match &selector.subject {
                Subject::Header(name) => out.push(name.clone()),
                Subject::Query(_) => out.push(":path".into()),
                Subject::Metadata(_) | Subject::FilterState(_) => {}
            }
        }
        if self.source.as_ref().is_some_and(|s| s.trusted_hops > 0) {
            out.push("x-forwarded-for".into());
        }
    }

    /// Whether every selector matches the request (cheapest reads first: they are in the order
    /// given, and the first that fails stops the others being read).
    pub fn matches(&self, request: &Request) -> bool {
        self.list
            .iter()
            .all(|s| s.test.matches(s.value(request).as_deref()))
            && self.source.as_ref().is_none_or(|s| s.matches(request))
    }

    /// Each selector, what it read and whether it matched (the `explain` tool).
    #[cfg(feature = "cli")]
    pub fn describe(&self, request: &Request) -> Vec<String> {
        let mut lines: Vec<String> = self
            .list
            .iter()
            .map(|s| {
                let value = s.value(request);
                let matched = s.test.matches(value.as_deref());
                let read = value.map_or("none".to_string(), |v| {
                    format!("{:?}", String::from_utf8_lossy(&v))
                });
                format!("{}: {} (value {read})", s.describe(), verdict(matched))
            })
            .collect();
        if let Some(source) = &self.source {
            let matched = source.matches(request);
            lines.push(format!("{}: {}", source.describe(), verdict(matched)));
        }
        lines
    }
}

#[cfg(feature = "cli")]
fn verdict(matched: bool) -> &'static str {
    if matched {
        "matched"
    } else {
        "did not match"
    }
}

fn tests_of(m: &NamedMatch) -> TestFields<'_> {
    (&m.exact, &m.prefix, &m.regex, m.present, m.invert)
}

fn header(m: &NamedMatch, at: &str, errors: &mut Errors) -> Option<Selector> {
    if !valid_header_name(&m.name) {
        errors.add(
            format!("{at}.name"),
            format!("{:?} is not a header name", m.name),
        );
    }
    let test = ValueTest::compile(tests_of(m), at, errors)?;
    let subject = Subject::Header(m.name.to_ascii_lowercase());
    Some(Selector { subject, test })
}

fn query(m: &NamedMatch, at: &str, errors: &mut Errors) -> Option<Selector> {
    if m.name.is_empty() {
        errors.add(
            format!("{at}.name"),
            "a query parameter name may not be empty",
        );
    }
    let test = ValueTest::compile(tests_of(m), at, errors)?;
    let subject = Subject::Query(m.name.as_bytes().to_vec());
    Some(Selector { subject, test })
}

fn metadata(m: &MetadataMatch, at: &str, errors: &mut Errors) -> Option<Selector> {
    let path = MetadataPath::compile((&m.namespace, &m.key, &m.path), at, errors);
    let fields = (&m.exact, &m.prefix, &m.regex, m.present, m.invert);
    let test = ValueTest::compile(fields, at, errors)?;
    Some(Selector {
        subject: Subject::Metadata(path?),
        test,
    })
}

fn filter_state(m: &FilterStateMatch, at: &str, errors: &mut Errors) -> Option<Selector> {
    if m.key.is_empty() {
        errors.add(format!("{at}.key"), "a filter state key may not be empty");
    }
    let fields = (&m.exact, &m.prefix, &m.regex, m.present, m.invert);
    let test = ValueTest::compile(fields, at, errors)?;
    let subject = Subject::FilterState(m.key.clone());
    Some(Selector { subject, test })
}

fn source_range(s: &SourceCidrMatch, at: &str, errors: &mut Errors) -> Option<SourceRange> {
    if s.cidrs.is_empty() {
        errors.add(format!("{at}.cidrs"), "needs at least one range");
    }
    if s.trusted_hops > MAX_TRUSTED_HOPS {
        let message = format!("must be at most {MAX_TRUSTED_HOPS}, got {}", s.trusted_hops);
        errors.add(format!("{at}.trusted_hops"), message);
    }
    let mut cidrs = Vec::with_capacity(s.cidrs.len());
    for (i, text) in s.cidrs.iter().enumerate() {
        match Cidr::parse(text) {
            Ok(cidr) => cidrs.push(cidr),
            Err(message) => errors.add(format!("{at}.cidrs[{i}]"), message),
        }
    }
    (cidrs.len() == s.cidrs.len() && !cidrs.is_empty()).then_some(SourceRange {
        cidrs,
        trusted_hops: s.trusted_hops.min(MAX_TRUSTED_HOPS),
        invert: s.invert,
    })
}
