//! The filter's JSON configuration, exactly as an operator writes it.
//!
//! These types are the product's public API. They only describe the shape of the JSON; every
//! semantic check (ranges, names, templates) happens where each part is compiled into the form
//! the request path uses.

use serde::Deserialize;

use super::duration::WindowSpec;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Off: every request passes untouched, no headers are written.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `enforce` refuses over-limit requests; `shadow` counts, logs and writes headers but never refuses.
    #[serde(default)]
    pub mode: Mode,
    /// Level of the log line written for each refusal (`off`, `info`, `debug`).
    #[serde(default)]
    pub refusal_log: RefusalLog,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub response: ResponseConfig,
    /// Client tiers; limits can differ per plan.
    #[serde(default)]
    pub plans: Option<PlansConfig>,
    /// The rate limit service that counts the fleet-wide limits (those marked `"fleet": true`).
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
    pub rules: Vec<RuleConfig>,
}

/// A rate limit service speaking Envoy's protocol (Limitador, envoyproxy/ratelimit), for limits
/// counted across every Envoy of a fleet. The local tier still decides first.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// The Envoy cluster of the service (it must speak HTTP/2).
    pub cluster: String,
    /// The service's domain; each rule's calls use `<domain>.<rule>`. Default: `store.key_prefix`.
    #[serde(default)]
    pub domain: Option<String>,
    /// How long a request may wait for the service before `on_error` applies.
    #[serde(default = "default_fleet_timeout")]
    pub timeout: WindowSpec,
    /// When the service fails, is slow or answers oddly: `local` (the local tier's decision
    /// stands: each Envoy enforces the limit on its own), `allow` (let the request through and
    /// count it nowhere), `deny` (refuse it, saying why).
    #[serde(default)]
    pub on_error: OnFleetError,
    /// `sliding`: span counters that keep "at most N in any window" on an engine whose windows
    /// start at a counter's first hit (Limitador); `fixed`: one counter per limit and client, for
    /// any engine (clock-aligned windows, as envoyproxy/ratelimit's, allow up to 2x across a
    /// window's end).
    #[serde(default)]
    pub counting: FleetCounting,
    /// Sub-windows of the sliding counting: each call carries one more counter than this.
    #[serde(default = "default_fleet_sub_windows")]
    pub sub_windows: u32,
    /// Requests reserved per call (a lease, used until its sub-window ends); 1: every request
    /// the local tier admits asks the service.
    #[serde(default = "one")]
    pub lease: u64,
    /// A secret every Envoy of the fleet shares, keying the hash the service knows clients by
    /// (keys never leave Envoy in clear). Without it the hash is keyed by the domain: still not
    /// the key, but a guessable key (an IP address) can be tried against it.
    #[serde(default)]
    pub key_secret: Option<String>,
}

fn default_fleet_timeout() -> WindowSpec {
    WindowSpec { millis: 20 }
}

fn default_fleet_sub_windows() -> u32 {
    4
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnFleetError {
    #[default]
    Local,
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum FleetCounting {
    #[default]
    Sliding,
    Fixed,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PlansConfig {
    /// Every plan name limits may refer to.
    pub names: Vec<String>,
    /// The plan of a request whose plan is unknown or missing.
    pub default: String,
    /// A request header carrying the plan, set by a trusted filter (e.g. a JWT claim).
    #[serde(default)]
    pub header: Option<String>,
    /// A static client key → plan map, for small deployments; it wins over the header.
    #[serde(default)]
    pub keys: std::collections::BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum RefusalLog {
    Off,
    #[default]
    Info,
    Debug,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Prefix of every shared-data key this filter writes. Distinct filters (or Istio plugins,
    /// which share one namespace) must use distinct prefixes.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// Clients counted exactly per rule (others are kept in each page's fixed-size summary).
    /// Memory is bounded by this number whatever the traffic.
    #[serde(default = "default_max_clients")]
    pub max_clients: u32,
    /// Clients stored together in one shared-data value (one read and one write per request).
    #[serde(default = "default_slots_per_page")]
    pub slots_per_page: u32,
    /// What a capacity refusal does: a request over its quota only through the counts a page's
    /// summary holds for clients it had no room to count exactly (an over-estimate). `deny`
    /// answers with the capacity reply; `allow` admits and counts it, which can let a client
    /// through by up to that estimate beyond its limit.
    #[serde(default)]
    pub on_full: OnFailure,
    /// Compare-and-swap attempts before giving up on one request.
    #[serde(default = "default_cas_attempts")]
    pub cas_attempts: u32,
    /// What a request gets when all compare-and-swap attempts lost the race.
    #[serde(default = "allow")]
    pub on_contention: OnFailure,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            key_prefix: default_prefix(),
            max_clients: default_max_clients(),
            slots_per_page: default_slots_per_page(),
            on_full: OnFailure::default(),
            cas_attempts: default_cas_attempts(),
            on_contention: allow(),
        }
    }
}

fn default_prefix() -> String {
    "ratelimit".to_string()
}
fn default_max_clients() -> u32 {
    10_000
}
fn default_slots_per_page() -> u32 {
    16
}
fn default_cas_attempts() -> u32 {
    32
}
fn allow() -> OnFailure {
    OnFailure::Allow
}

/// `deny` refuses the request (fail closed), `allow` lets it through uncounted (fail open).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    #[default]
    Deny,
    Allow,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ResponseConfig {
    /// Status of the local reply to a refused request.
    #[serde(default = "default_status")]
    pub status: u32,
    #[serde(default)]
    pub headers: HeadersConfig,
    /// A ready-made body and content type; `body` and `content_type` override it.
    #[serde(default)]
    pub preset: BodyPreset,
    /// JSON template of the refusal body; `{{placeholder}}` strings are filled per request.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Content type of the refusal body.
    #[serde(default)]
    pub content_type: Option<String>,
}

impl Default for ResponseConfig {
    fn default() -> Self {
        ResponseConfig {
            status: default_status(),
            headers: HeadersConfig::default(),
            preset: BodyPreset::default(),
            body: None,
            content_type: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum BodyPreset {
    /// `{"error": "too_many_requests", "message": ..., "limit": ..., "retry_after": ...}`.
    #[default]
    Default,
    /// RFC 9457 `application/problem+json` with the violated policies.
    ProblemJson,
}

fn default_status() -> u32 {
    429
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    #[serde(default)]
    pub style: HeaderStyle,
    #[serde(default)]
    pub reset: ResetFormat,
    /// Header names replacing the style's own: keys `limit`, `remaining`, `reset`, `policy`,
    /// `ratelimit`.
    #[serde(default)]
    pub names: std::collections::BTreeMap<String, String>,
    /// Headers of the style not to send: `limit`, `remaining`, `reset`, `policy`, `ratelimit`.
    #[serde(default)]
    pub hide: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum HeaderStyle {
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`.
    #[default]
    XRateLimit,
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds from now), as in the
    /// IETF draft up to version 06. (Envoy's own `DRAFT_VERSION_03` sends these values under
    /// `x-ratelimit-*` names: rename them with `headers.names` to match it.)
    Draft03,
    /// IETF draft-11 structured fields: `RateLimit-Policy: "name";q=100;w=60` and
    /// `RateLimit: "name";r=50;t=30`, one item per limit.
    DraftIetf,
    /// No rate-limit headers (a 429 still carries `Retry-After`).
    None,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ResetFormat {
    /// Unix epoch seconds.
    #[default]
    EpochSeconds,
    /// Seconds from now.
    DeltaSeconds,
}

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
    /// Where the client key comes from: the first source that yields a key wins.
    #[serde(default)]
    pub key: Vec<KeySource>,
    #[serde(default)]
    pub on_missing_key: OnMissingKey,
    /// What one request costs against this rule's limits.
    #[serde(default)]
    pub cost: Option<CostConfig>,
    /// Other rules whose limits apply to the matching requests too (e.g. a general per-client
    /// limit beside an endpoint's own), each with its own key, cost and counters.
    #[serde(default)]
    pub also: Vec<String>,
    #[serde(default)]
    pub limits: Vec<LimitConfig>,
    /// Every limit of this rule is fleet-wide (see the top-level `fleet`).
    #[serde(default)]
    pub fleet: bool,
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
    /// Cost when the value is missing or not a whole number from 1 up.
    #[serde(default = "one")]
    pub default: u64,
    /// Values above are charged as `max`.
    pub max: u64,
}

fn one() -> u64 {
    1
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

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Names the limit in headers, bodies and logs; defaults to the window, e.g. `60s`.
    #[serde(default)]
    pub name: Option<String>,
    /// A number, or a number per plan; 0 or an absent plan means no limit at this level.
    pub requests: Requests,
    pub window: WindowSpec,
    /// Error code for bodies (`{{code}}`), e.g. `rate_limit_minute`.
    #[serde(default)]
    pub code: Option<String>,
    /// Message for bodies (`{{message}}`); may itself contain placeholders.
    #[serde(default)]
    pub message: Option<String>,
    /// Counted across the fleet by the rate limit service, as well as locally.
    #[serde(default)]
    pub fleet: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requests {
    All(u64),
    PerPlan(std::collections::BTreeMap<String, u64>),
}

/// "A number, or an object": the two shapes `requests` and `cost` take, with serde's own
/// messages for each shape (an untagged enum would only say "did not match any variant").
macro_rules! number_or_object {
    ($ty:ident, $number:ident, $object:ident, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<$ty, E> {
                        Ok($ty::$number(n))
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        map: A,
                    ) -> Result<$ty, A::Error> {
                        Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                            .map($ty::$object)
                    }
                }
                deserializer.deserialize_any(V)
            }
        }
    };
}

number_or_object!(
    Requests,
    All,
    PerPlan,
    "a whole number, or an object of whole numbers per plan"
);
number_or_object!(
    CostConfig,
    Fixed,
    FromRequest,
    "a whole number, or {\"header\" or \"query\", \"default\", \"max\"}"
);

#[cfg(feature = "cli")]
mod schema {
    use std::borrow::Cow;

    use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

    use super::{CostConfig, CostFromRequest, Requests};

    impl JsonSchema for Requests {
        fn schema_name() -> Cow<'static, str> {
            "Requests".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "description": "Requests per window: a number, or a number per plan. 0, or a plan left out, means no limit at this level.",
                "oneOf": [
                    {"type": "integer", "minimum": 0, "maximum": 4294967295u64},
                    {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 4294967295u64}}
                ]
            })
        }
    }

    impl JsonSchema for CostConfig {
        fn schema_name() -> Cow<'static, str> {
            "Cost".into()
        }
        fn json_schema(generator: &mut SchemaGenerator) -> Schema {
            let from_request = generator.subschema_for::<CostFromRequest>();
            json_schema!({
                "description": "What one request costs: a fixed number, or a whole number read from a header or query parameter.",
                "oneOf": [{"type": "integer", "minimum": 1}, from_request]
            })
        }
    }
}
