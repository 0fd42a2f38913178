//! What a rule's `match` may test beyond the path, method, host and route name: request headers,
//! query parameters, the client's address range, and values other Envoy filters computed
//! (dynamic metadata, filter state). The names follow Envoy Gateway's `clientSelectors`
//! (`headers`, `queryParams`, `sourceCIDR`, `invert`) in this configuration's spelling.

use serde::Deserialize;

/// A test of one request header or query parameter. Give exactly one of `exact`, `prefix`,
/// `regex` or `present`; `invert` turns the outcome around (an inverted value test also matches
/// a request without the value).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct NamedMatch {
    /// The header (any case) or query parameter (exact, after percent-decoding).
    pub name: String,
    /// The whole value equals this.
    #[serde(default)]
    pub exact: Option<String>,
    /// The value starts with this.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The whole value matches this regular expression (RE2-like syntax, no look-around or
    /// backreferences; matched in time linear in the value's length).
    #[serde(default)]
    pub regex: Option<String>,
    /// `true`: the value is there (whatever it is); `false`: it is not.
    #[serde(default)]
    pub present: Option<bool>,
    /// Match when the test fails.
    #[serde(default)]
    pub invert: bool,
}

/// Where another filter put a value in the request's dynamic metadata: `namespace` (the filter's
/// name, e.g. `envoy.filters.http.jwt_authn`), `key` within it, and `path` into a structured
/// value (e.g. `["org", "tier"]` of a JWT payload).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct MetadataPath {
    pub namespace: String,
    pub key: String,
    #[serde(default)]
    pub path: Vec<String>,
}

/// A test of a value another filter put in the request's dynamic metadata. Give exactly one of
/// `exact`, `prefix`, `regex` or `present`; a number compares by its decimal text
/// (`"exact": "5"`), `true`/`false` by those words.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct MetadataMatch {
    pub namespace: String,
    pub key: String,
    #[serde(default)]
    pub path: Vec<String>,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub present: Option<bool>,
    #[serde(default)]
    pub invert: bool,
}

/// A test of a value another filter put in the request's filter state, under `key`. Give exactly
/// one of `exact`, `prefix`, `regex` or `present`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FilterStateMatch {
    pub key: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub present: Option<bool>,
    #[serde(default)]
    pub invert: bool,
}

/// The client address is in one of these ranges (or, with `invert`, in none of them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SourceCidrMatch {
    /// IPv4 and IPv6 ranges: `10.0.0.0/8`, `2001:db8::/32`, or a single address.
    pub cidrs: Vec<String>,
    /// Which address is the client's, as for `client_ip` keys: 0 is the downstream address
    /// Envoy sees; N > 0 the N-th from the right of `x-forwarded-for`.
    #[serde(default)]
    pub trusted_hops: u32,
    #[serde(default)]
    pub invert: bool,
}
