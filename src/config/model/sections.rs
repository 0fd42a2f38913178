//! The top-level sections besides the rules: `fleet`, `plans`, `store`, `response` and the
//! filter-wide enums.

use serde::Deserialize;

use super::select::MetadataPath;
use crate::config::duration::WindowSpec;

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
    /// Batched counting: how long a client's admitted hits may wait before they are reported.
    #[serde(default = "default_batch_interval")]
    pub batch_interval: WindowSpec,
    /// A secret every Envoy of the fleet shares, keying the hash the service knows clients by
    /// (keys never leave Envoy in clear). Without it the hash is keyed by the domain: still not
    /// the key, but a guessable key (an IP address) can be tried against it.
    #[serde(default)]
    pub key_secret: Option<String>,
}

fn default_fleet_timeout() -> WindowSpec {
    WindowSpec { millis: 20 }
}

fn default_batch_interval() -> WindowSpec {
    WindowSpec { millis: 1_000 }
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
    /// Admit on the local tier's word and report hits to the service in batches, taking back
    /// refusals: for many keys, with an over-admission bound (see the book).
    Batched,
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
    /// Dynamic metadata carrying the plan, set by another filter (a JWT claim from `jwt_authn`,
    /// a tenant's tier from `ext_authz`); it wins over the header.
    #[serde(default)]
    pub metadata: Option<MetadataPath>,
    /// A static client key → plan map, for small deployments; it wins over the header and the
    /// metadata.
    #[serde(default)]
    pub keys: std::collections::BTreeMap<String, String>,
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
    /// A response header saying what the filter made of the request: `passed`, `refused` or
    /// `shadow_refused` (a refusal that shadow mode or a candidate limit let through), on every
    /// response of a limited rule. Off unless named.
    #[serde(default)]
    pub status_header: Option<String>,
    /// Also write that status in the request's filter state, for the access log: in the
    /// proxy-wasm filter it is `wasm.ratelimit_status`, printed by
    /// `%FILTER_STATE(wasm.ratelimit_status:PLAIN)%`.
    #[serde(default)]
    pub status_filter_state: bool,
    /// How a refused gRPC request (`content-type: application/grpc...`, gRPC-Web too) is
    /// answered, unless its rule says otherwise: a gRPC status with this code (default
    /// `resource_exhausted`), or `http` for the same reply as any request's.
    #[serde(default)]
    pub grpc: Option<GrpcAnswer>,
}

impl Default for ResponseConfig {
    fn default() -> Self {
        ResponseConfig {
            status: default_status(),
            headers: HeadersConfig::default(),
            preset: BodyPreset::default(),
            body: None,
            content_type: None,
            status_header: None,
            status_filter_state: false,
            grpc: None,
        }
    }
}

/// How a refused gRPC request is answered: a trailers-only gRPC answer with one of gRPC's status
/// codes (by its name in snake case), or `http`, the reply any request gets (which Envoy turns
/// into a gRPC status of its own choosing: 429 becomes `UNAVAILABLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum GrpcAnswer {
    Http = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl GrpcAnswer {
    /// Every answer by its name in the configuration, in the order of gRPC's codes.
    pub const NAMES: [(&'static str, GrpcAnswer); 17] = [
        ("http", GrpcAnswer::Http),
        ("cancelled", GrpcAnswer::Cancelled),
        ("unknown", GrpcAnswer::Unknown),
        ("invalid_argument", GrpcAnswer::InvalidArgument),
        ("deadline_exceeded", GrpcAnswer::DeadlineExceeded),
        ("not_found", GrpcAnswer::NotFound),
        ("already_exists", GrpcAnswer::AlreadyExists),
        ("permission_denied", GrpcAnswer::PermissionDenied),
        ("resource_exhausted", GrpcAnswer::ResourceExhausted),
        ("failed_precondition", GrpcAnswer::FailedPrecondition),
        ("aborted", GrpcAnswer::Aborted),
        ("out_of_range", GrpcAnswer::OutOfRange),
        ("unimplemented", GrpcAnswer::Unimplemented),
        ("internal", GrpcAnswer::Internal),
        ("unavailable", GrpcAnswer::Unavailable),
        ("data_loss", GrpcAnswer::DataLoss),
        ("unauthenticated", GrpcAnswer::Unauthenticated),
    ];

    /// The gRPC status code (the variant's value), or `None` for `http`.
    pub fn code(self) -> Option<u32> {
        match self {
            GrpcAnswer::Http => None,
            other => Some(other as u32),
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

#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// Refusals also carry `retry-after-ms`: the wait to the millisecond (OpenAI's and
    /// Anthropic's clients read it before `Retry-After`, which is rounded up to whole seconds).
    #[serde(default)]
    pub retry_after_ms: bool,
    /// A refusal whose wait is longer than this carries `x-should-retry: false`, so that clients
    /// which obey it (OpenAI's, Anthropic's) hand the refusal to the application instead of
    /// sleeping that long inside a request. `null`: never sent.
    #[serde(default = "default_max_retry_wait")]
    pub max_retry_wait: Option<WindowSpec>,
}

impl Default for HeadersConfig {
    fn default() -> Self {
        HeadersConfig {
            style: HeaderStyle::default(),
            reset: ResetFormat::default(),
            names: Default::default(),
            hide: Vec::new(),
            retry_after_ms: false,
            max_retry_wait: default_max_retry_wait(),
        }
    }
}

/// Two minutes, the bound the `openai` client applies itself: a per-minute limit's wait (at most
/// a minute and a slot of the sliding window) stays under it and is retried, while an hourly or
/// daily refusal goes to the application at once instead of holding a request that long
/// (`anthropic` would sleep through any `Retry-After`).
pub fn default_max_retry_wait() -> Option<WindowSpec> {
    Some(WindowSpec { millis: 120_000 })
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum HeaderStyle {
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (GitHub's form).
    #[default]
    XRateLimit,
    /// Envoy's own `enable_x_ratelimit_headers: DRAFT_VERSION_03`: `X-RateLimit-Limit: 100,
    /// 100;w=60, 5000;w=86400`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (seconds from now).
    EnvoyDraft03,
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds from now), as in the
    /// IETF draft up to version 06 (`draft03` is its former name).
    #[serde(alias = "draft03")]
    IetfDraft06,
    /// IETF draft-08 to -11 structured fields: `RateLimit-Policy: "name";q=100;w=60` and
    /// `RateLimit: "name";r=50;t=30`, one item per limit, the binding one first (`draft_ietf` is
    /// its former name).
    #[serde(alias = "draft_ietf")]
    IetfDraft11,
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

pub(super) fn one() -> u64 {
    1
}
