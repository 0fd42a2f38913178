//! A rule as operators write it: its `match`, `key`, `cost` and `limits`.

use serde::Deserialize;

use super::sections::{one, GrpcAnswer, Mode};
use super::select::{FilterStateMatch, MetadataMatch, MetadataPath, NamedMatch, SourceCidrMatch};
use crate::config::duration::WindowSpec;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique; used in shared-data key names, logs and (later) metrics.
    pub name: String,
    #[serde(default, rename = "match")]
    pub matcher: MatchConfig,
    /// Matching requests pass untouched: no key, no counting, no headers.
    #[serde(default)]
    pub exempt: bool,
    /// `enforce` or `shadow` for this rule alone (default: the filter's `mode`).
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Whose counter a request counts in: a list of sources, the first that yields a value wins
    /// (`{"first": [...]}` says the same); `{"all": [...]}`, one counter per combination of the
    /// values of every source; `"shared"`, one counter for every request of the rule.
    #[serde(default)]
    pub key: KeyConfig,
    #[serde(default)]
    pub on_missing_key: OnMissingKey,
    /// A key header, query parameter or bearer credential given more than once with different
    /// values: refused as ambiguous (`deny`, the default), or counted under the `first` or the
    /// `last` value (for an upstream known to read that one).
    #[serde(default)]
    pub on_ambiguous_key: OnAmbiguousKey,
    /// What one request costs against this rule's limits.
    #[serde(default)]
    pub cost: Option<CostConfig>,
    /// Which responses keep what their request was charged (statuses like `200`, classes like
    /// `"2xx"`, and `"no_response"` for a stream that ended without one); the others give it back
    /// when the stream ends. Default: every request stays counted.
    #[serde(default)]
    pub counted: Option<Vec<ResponseMatch>>,
    /// Which responses give back what their request was charged (e.g. `["5xx", "no_response",
    /// "local_reply"]`); the others keep it. With `counted`, a response keeps its charge when
    /// `counted` lists it and `given_back` does not.
    #[serde(default)]
    pub given_back: Option<Vec<ResponseMatch>>,
    /// Other rules whose limits apply to the matching requests too (e.g. a general per-client
    /// limit beside an endpoint's own), each with its own key, cost and counters.
    #[serde(default)]
    pub also: Vec<String>,
    #[serde(default)]
    pub limits: Vec<LimitConfig>,
    /// Every limit of this rule is fleet-wide (see the top-level `fleet`).
    #[serde(default)]
    pub fleet: bool,
    /// How this rule's refusals answer a gRPC request (default: `response.grpc`).
    #[serde(default)]
    pub grpc: Option<GrpcAnswer>,
}

/// Where a rule's client key comes from (see [`RuleConfig::key`]).
#[derive(Debug, Clone, PartialEq)]
pub enum KeyConfig {
    /// The first source that yields a value (none given: the client IP).
    First(Vec<KeySource>),
    /// Every source's value, together: one counter per combination.
    All(Vec<KeySource>),
    /// One counter for every request of the rule.
    Shared,
}

impl Default for KeyConfig {
    fn default() -> Self {
        KeyConfig::First(Vec::new())
    }
}

/// A fixed cost, or one read from the request (bulk and batch endpoints).
#[derive(Debug, Clone, PartialEq)]
pub enum CostConfig {
    Fixed(u64),
    FromRequest(CostFromRequest),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CostFromRequest {
    /// Request header holding a whole number.
    #[serde(default)]
    pub header: Option<String>,
    /// Query parameter holding a whole number.
    #[serde(default)]
    pub query: Option<String>,
    /// Dynamic metadata holding a whole number, set by another filter before this one (e.g. an
    /// LLM request's `max_tokens`, lifted by `json_to_metadata`).
    #[serde(default)]
    pub metadata: Option<MetadataPath>,
    /// Cost when the value is missing or not a whole number from 1 up.
    #[serde(default = "one")]
    pub default: u64,
    /// Values above are charged as `max`.
    pub max: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    #[serde(default)]
    pub path: Option<PathMatch>,
    /// Upper-case HTTP methods; empty means any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Host names (`api.example.com`, `*.example.com`); the port is ignored; empty means any.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Envoy route names (`xds.route_name`); empty means any.
    #[serde(default)]
    pub route_names: Vec<String>,
    /// Request headers, every one of which must match.
    #[serde(default)]
    pub headers: Vec<NamedMatch>,
    /// Query parameters, every one of which must match.
    #[serde(default)]
    pub query_params: Vec<NamedMatch>,
    /// The client's address range.
    #[serde(default)]
    pub source_cidr: Option<SourceCidrMatch>,
    /// Values in dynamic metadata (set by another filter: a JWT claim, a tenant), every one of
    /// which must match.
    #[serde(default)]
    pub metadata: Vec<MetadataMatch>,
    /// Values in filter state (set by another filter), every one of which must match.
    #[serde(default)]
    pub filter_state: Vec<FilterStateMatch>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PathMatch {
    Exact(String),
    /// Segment-wise prefix: `/api` matches `/api` and `/api/x`, not `/apix`.
    Prefix(String),
    /// Segments with parameters: `/api/links/:id/qr`; `*` matches any one segment.
    Template(String),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeySource {
    /// The value of a request header, e.g. `x-api-key`.
    Header(String),
    /// The value of a query parameter, e.g. `api_key`.
    Query(String),
    /// The token of `Authorization: Bearer <token>`.
    Bearer {},
    /// The client IP address.
    ClientIp(ClientIpConfig),
    /// A value another filter put in dynamic metadata (a JWT claim from `jwt_authn`, a tenant
    /// from `ext_authz`).
    Metadata(MetadataPath),
    /// A value another filter put in filter state, under this key.
    FilterState(String),
    /// The Envoy route's name (`xds.route_name`): per-route counters.
    RouteName {},
    /// The request's method.
    Method {},
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ClientIpConfig {
    /// 0: the downstream address Envoy sees (`source.address`). N > 0: the N-th address from the
    /// right of `x-forwarded-for`, written by the N trusted proxies in front of Envoy; a shorter
    /// chain falls back to `source.address`.
    #[serde(default)]
    pub trusted_hops: u32,
    /// Leading bits of an IPv4 address that make the key (1 to 32): 24 keys every address of a
    /// /24 network as one client.
    #[serde(default = "default_ipv4_prefix")]
    pub ipv4_prefix: u32,
    /// Leading bits of an IPv6 address that make the key (1 to 128): 64 keys a /64 (a host's or a
    /// subscriber's usual allocation) as one client, so that rotating addresses inside it neither
    /// escapes the limit nor fills the store.
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u32,
}

impl Default for ClientIpConfig {
    fn default() -> Self {
        ClientIpConfig {
            trusted_hops: 0,
            ipv4_prefix: default_ipv4_prefix(),
            ipv6_prefix: default_ipv6_prefix(),
        }
    }
}

fn default_ipv4_prefix() -> u32 {
    32
}
fn default_ipv6_prefix() -> u32 {
    128
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnMissingKey {
    /// All requests without a key share one counter.
    #[default]
    Shared,
    /// Requests without a key pass uncounted.
    Allow,
    /// Requests without a key are refused with 401.
    Deny,
}

/// What a request whose key source holds several different values gets (see
/// [`RuleConfig::on_ambiguous_key`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnAmbiguousKey {
    /// Refused with 400 `ambiguous_client_key`: nothing is counted, nothing reaches the upstream.
    #[default]
    Deny,
    /// Counted under the first value (the first header line, parameter or credential).
    First,
    /// Counted under the last value.
    Last,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Names the limit in headers, bodies and logs; defaults to the window, e.g. `60s`.
    #[serde(default)]
    pub name: Option<String>,
    /// A number, or a number per plan; 0 or an absent plan means no limit at this level.
    pub requests: Requests,
    /// A per-request level from a trusted source (a header a trusted filter sets, or dynamic
    /// metadata), bounded by its `max`; `requests` applies when the source has no usable value.
    #[serde(default)]
    pub requests_from: Option<RequestsFrom>,
    pub window: WindowSpec,
    /// Error code for bodies (`{{code}}`), e.g. `rate_limit_minute`.
    #[serde(default)]
    pub code: Option<String>,
    /// Message for bodies (`{{message}}`); may itself contain placeholders.
    #[serde(default)]
    pub message: Option<String>,
    /// What the limit counts, when not requests (`tokens` for a token budget): said in the
    /// default message (`{{unit}}`) and as the quota unit (`qu`) of `RateLimit-Policy`.
    #[serde(default)]
    pub unit: Option<String>,
    /// Counted across the fleet by the rate limit service, as well as locally.
    #[serde(default)]
    pub fleet: bool,
    /// A candidate limit: counted, and a request over it is logged and counted as a shadow
    /// refusal of the limit, but never refused by it; it shows in no header or body.
    #[serde(default)]
    pub shadow: bool,
    /// What a request costs in this limit, when not the rule's `cost`: a number, or what is held
    /// at the request (`request`) and what the response says it cost (`response`).
    #[serde(default)]
    pub cost: Option<LimitCostConfig>,
    /// Which responses keep this limit's charge, when not the rule's `counted`.
    #[serde(default)]
    pub counted: Option<Vec<ResponseMatch>>,
    /// Which responses give this limit's charge back, when not the rule's `given_back`.
    #[serde(default)]
    pub given_back: Option<Vec<ResponseMatch>>,
}

/// One limit's cost: a number, or its parts.
#[derive(Debug, Clone, PartialEq)]
pub enum LimitCostConfig {
    Fixed(u64),
    Parts(Box<LimitCostParts>),
}

/// What a request holds in a limit while it is in flight (`request`: a number, or a whole number
/// the request carries), and what its response says it cost (`response`), which replaces it
/// when the stream ends. Without `response`, what was held stays.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct LimitCostParts {
    #[serde(default)]
    pub request: Option<CostConfig>,
    #[serde(default)]
    pub response: Option<ResponseCostConfig>,
}

/// Where the response says what the request cost: a response header, or dynamic metadata
/// another filter wrote from the response (`json_to_metadata`, `sse_to_metadata`: an LLM's
/// `usage.total_tokens`). A value above `max` counts as `max`; no value: what was held stays.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ResponseCostConfig {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub metadata: Option<MetadataPath>,
    pub max: u64,
}

/// A response a count applies to: a status (`429`), a class (`"2xx"`), `"no_response"` or
/// `"local_reply"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseMatch {
    Status(u64),
    Named(String),
}

/// Where a per-request limit level comes from: one of `header` or `metadata`, holding a whole
/// number; values above `max` count as `max`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestsFrom {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub metadata: Option<MetadataPath>,
    pub max: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requests {
    All(u64),
    PerPlan(std::collections::BTreeMap<String, u64>),
}
