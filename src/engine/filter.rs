//! The whole configuration compiled once at load, validated with every error named by its JSON
//! path. Each part compiles itself next to its definition; this only puts them together.

use crate::config::{self, ConfigErrors, Errors, FilterConfig, Mode, RefusalLog, Report};
use crate::fleet::FleetSettings;
use crate::hash::fnv1a;
use crate::request::{Plans, Request, RequestView};
use crate::response::ResponseFormat;
use crate::route::RouteTable;
use crate::store::{seed_key, shared_seed, SharedStore, StoreSettings};

use super::rule::{Context, LimitedRule, Rule, RuleAction};

#[derive(Debug, Clone)]
pub struct Filter {
    pub(crate) enabled: bool,
    pub(crate) shadow: bool,
    pub(crate) refusal_log: RefusalLog,
    pub(crate) plans: Plans,
    pub(crate) rules: Vec<Rule>,
    /// Each rule's matcher, in the same order.
    pub(crate) routes: RouteTable,
    pub(crate) response: ResponseFormat,
    pub(crate) store: StoreSettings,
    /// The rate limit service, when some limit is fleet-wide.
    pub(crate) fleet: Option<FleetSettings>,
    /// Seeds the client-key hash. The host replaces it with a random per-process seed; this one,
    /// derived from the key prefix, serves the native tools.
    pub(crate) hash_seed: u64,
    /// Read every request header at once rather than one by one (see [`ALL_HEADERS_FROM`]).
    pub(crate) read_all_headers: bool,
}

/// From this many distinct request headers the configuration may read, a request's headers are
/// read all at once: in Envoy's V8 one read of every header (one call out of the VM, one back
/// in to allocate the map) costs less than three single reads (each one call out, one back in).
/// Measured in BENCHMARKS.md, "Issue 20".
pub const ALL_HEADERS_FROM: usize = 2;

impl Filter {
    /// Parses and compiles a configuration; `Err` lists every problem with its path.
    pub fn load(bytes: &[u8]) -> Result<Filter, ConfigErrors> {
        #[cfg(feature = "trap-on-demand")]
        super::trap::warn_loaded();
        Self::compile(&config::parse(bytes)?)
    }

    pub(crate) fn compile(config: &FilterConfig) -> Result<Filter, ConfigErrors> {
        let mut errors = Errors::new();
        let store = StoreSettings::compile(&config.store, &mut errors);
        let plans = Plans::compile(config.plans.as_ref(), &mut errors);
        let fleet = config
            .fleet
            .as_ref()
            .map(|f| FleetSettings::compile(f, &store.key_prefix, &mut errors));
        let response = ResponseFormat::compile(&config.response, &mut errors);
        if config.rules.is_empty() {
            errors.add("$.rules", "needs at least one rule");
        }
        let cx = Context {
            rules: &config.rules,
            plans: &plans,
            store: &store,
            fleet: fleet.as_ref(),
            response: response.as_ref(),
        };
        let (rules, matchers): (Vec<Rule>, Vec<_>) = (0..config.rules.len())
            .map(|i| Rule::compile(i, &cx, &mut errors))
            .unzip();
        let routes = RouteTable::new(matchers);
        match response {
            Some(response) if errors.is_empty() => Ok(Filter {
                read_all_headers: headers_read(&rules, &routes, &plans) >= ALL_HEADERS_FROM
                    || reads_every_line(&rules),
                enabled: config.enabled,
                shadow: config.mode == Mode::Shadow,
                refusal_log: config.refusal_log,
                hash_seed: fnv1a(store.key_prefix.bytes()),
                plans,
                rules,
                routes,
                response,
                store,
                fleet,
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }

    /// A request as this configuration reads it: every header at once when it reads several.
    pub(crate) fn request<'a>(&self, view: &'a dyn RequestView) -> Request<'a> {
        Request::reading(view, self.read_all_headers)
    }

    /// Hashes client keys with the seed every worker of this process agreed on in `store` (the
    /// first to configure stores its random `candidate`); keeps the config's seed if the store
    /// could not settle on one.
    pub fn adopt_shared_seed(&mut self, store: &dyn SharedStore, candidate: u64) {
        if let Some(seed) = shared_seed(store, &seed_key(&self.store.key_prefix), candidate) {
            self.hash_seed = seed;
        }
    }

    /// The rate limit service of the fleet-wide limits, if any.
    pub fn fleet_service(&self) -> Option<&FleetSettings> {
        self.fleet.as_ref()
    }

    /// Batched counting's interval: how often the host asks for the reports due
    /// ([`super::reports`]); `None` without batched counting.
    pub fn batch_interval_ms(&self) -> Option<u64> {
        let fleet = self.fleet.as_ref()?;
        (fleet.batch_interval_ms > 0).then_some(fleet.batch_interval_ms)
    }

    /// Whether rule `rule` is in shadow mode: its own `mode`, else the filter's.
    pub(crate) fn shadow_for(&self, rule: usize) -> bool {
        match self.limited(rule).and_then(|l| l.mode) {
            Some(mode) => mode == Mode::Shadow,
            None => self.shadow,
        }
    }

    /// The gRPC status code rule `rule`'s refusals answer a gRPC request with (its own `grpc`,
    /// else the filter's `response.grpc`); `None`: an HTTP reply, as to any request.
    pub(crate) fn grpc_code(&self, rule: usize) -> Option<u32> {
        let own = self.limited(rule).and_then(|l| l.grpc);
        own.unwrap_or(self.response.grpc).code()
    }

    /// Whether the host writes each request's status in its filter state (`response.
    /// status_filter_state`), for the access log.
    pub fn records_status(&self) -> bool {
        self.response.status_filter_state
    }

    /// The prefix of the store's keys and of the stats' names (`store.key_prefix`).
    pub fn key_prefix(&self) -> &str {
        &self.store.key_prefix
    }

    /// How many rules the configuration has.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Whether refusals are logged at the debug level (the host lowers its log level for them).
    pub fn logs_refusals_at_debug(&self) -> bool {
        self.refusal_log == RefusalLog::Debug
    }

    /// Rule `rule`, if it limits (not exempt).
    pub(crate) fn limited(&self, rule: usize) -> Option<&LimitedRule> {
        match &self.rules.get(rule)?.action {
            RuleAction::Limit(limited) => Some(limited),
            RuleAction::Exempt => None,
        }
    }
}
/// Whether some rule's key needs every line of a header (to find one given several times, see
/// `on_ambiguous_key`): then every header is read at once, in one host call.
fn reads_every_line(rules: &[Rule]) -> bool {
    rules.iter().any(|rule| match &rule.action {
        RuleAction::Limit(limited) => limited.key.reads_every_line(limited.on_ambiguous_key),
        _ => false,
    })
}

/// How many distinct request headers the configuration may read on a request: choosing the
/// rule, its keys, costs and levels, the plan.
fn headers_read(rules: &[Rule], routes: &RouteTable, plans: &Plans) -> usize {
    let mut names = Vec::new();
    routes.headers_read(&mut names);
    for rule in rules {
        if let RuleAction::Limit(limited) = &rule.action {
            limited.key.headers_read(&mut names);
            limited.costs.headers_read(&mut names);
            limited.levels.headers_read(&mut names);
        }
    }
    names.extend(plans.header.clone());
    names.sort();
    names.dedup();
    names.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OnFailure, OnMissingKey};
    use crate::request::{Key, KeySource};
    use crate::testing::assert_each_error_once;

    fn load(json: &[u8]) -> Result<Filter, ConfigErrors> {
        Filter::load(json)
    }

    fn errors(json: &str) -> Vec<String> {
        match load(json.as_bytes()) {
            Ok(_) => vec![],
            Err(ConfigErrors(list)) => list.iter().map(|e| e.to_string()).collect(),
        }
    }

    const GOOD: &str = r#"{
        "rules": [
            {"name": "health", "match": {"path": {"exact": "/healthz"}}, "exempt": true},
            {"name": "api", "match": {"path": {"prefix": "/api"}, "methods": ["get", "POST"], "hosts": ["*.example.com"]},
             "key": [{"header": "X-Api-Key"}, {"client_ip": {"trusted_hops": 1}}],
             "limits": [{"requests": 100, "window": "1m"}, {"name": "daily", "requests": 5000, "window": "1d"}]}
        ]
    }"#;

    #[test]
    fn a_good_config_compiles_with_defaults() {
        let c = load(GOOD.as_bytes()).unwrap();
        assert!(c.enabled && !c.shadow);
        assert_eq!(c.response.status, 429);
        let RuleAction::Limit(api) = &c.rules[1].action else {
            panic!()
        };
        assert_eq!(
            api.key,
            Key::First(vec![
                KeySource::Header("x-api-key".into()),
                KeySource::client_ip(1)
            ])
        );
        assert_eq!(api.texts[0].name, "1m");
        assert_eq!(api.texts[1].name, "daily");
        assert_eq!(api.levels(0), [100, 5000]);
        let layout = format!("{:08x}", api.limiter.layout_id());
        assert_eq!(
            api.pages.page(3),
            format!("ratelimit/v1/api/{layout}/3").as_str()
        );
        assert_eq!(api.limiter.capacity(), 10_000);
    }

    #[test]
    fn shape_errors_name_the_path() {
        let e = errors(
            r#"{"rules": [{"name": "a", "limits": [{"requests": 1, "window": "1 minute"}]}]}"#,
        );
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("$.rules[0].limits[0].window: "), "{e:?}");
        assert!(e[0].contains("unit"), "{e:?}");
        let e = errors(r#"{"rules": [{"name": "a", "limitz": []}]}"#);
        assert!(
            e[0].starts_with("$.rules[0].limitz: unknown field `limitz`"),
            "{e:?}"
        );
        let e = errors(r#"{"rules": [{"name": "a", "limits": [{"requests": -5, "window": 1}]}]}"#);
        assert!(e[0].starts_with("$.rules[0].limits[0].requests: "), "{e:?}");
        let e = errors(r#"{"rules": [{"name": "a", "key": [{"cookie": "x"}], "limits": []}]}"#);
        assert!(
            e[0].starts_with("$.rules[0].key[0]: unknown variant `cookie`"),
            "{e:?}"
        );
        let e = errors(r#"{"mode": "dry", "rules": []}"#);
        assert!(e[0].starts_with("$.mode: unknown variant `dry`"), "{e:?}");
        assert!(errors("{}")[0].contains("missing field `rules`"));
        let root = errors("[1]");
        assert_eq!(
            root,
            vec!["$: the configuration must be a JSON object".to_string()]
        );
        assert!(errors("{\"rules\": []} trailing")[0].starts_with("$: trailing"));
        assert!(!errors("\u{0}\u{ff}").is_empty());
        assert!(!errors("").is_empty());
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let e = errors(
            r#"{
            "store": {"max_clients": 0, "key_prefix": "bad prefix"},
            "response": {"status": 200, "body": {"m": "{{nope}}"}},
            "rules": [
                {"name": "a", "limits": [{"requests": 5000000000, "window": "0s"}]},
                {"name": "a", "match": {"path": {"template": "/x/:/y"}, "hosts": ["a.*"]}, "limits": [{"requests": 1, "window": "400d"}]},
                {"name": "e", "exempt": true, "limits": [{"requests": 1, "window": 1}]},
                {"name": "k", "key": [{"header": "bad header"}, {"client_ip": {"trusted_hops": 99}}], "limits": [
                    {"name": "x", "requests": 1, "window": 1}, {"name": "x", "requests": 2, "window": 2}]},
                {"name": "p", "match": {"path": {"prefix": "api"}}, "limits": []}
            ]}"#,
        );
        let expected = [
            "$.store.key_prefix: ",
            "$.store.max_clients: ",
            "$.response.status: ",
            "$.response.body.m: unknown placeholder",
            "$.rules[0].limits[0].requests: ",
            "$.rules[0].limits[0].window: ",
            "$.rules[1].name: duplicate rule name",
            "$.rules[1].match.path.template: ",
            "$.rules[1].match.hosts[0]: ",
            "$.rules[1].limits[0].window: ",
            "$.rules[2].limits: an exempt rule takes no limits",
            "$.rules[3].limits[1].name: duplicate limit name",
            "$.rules[3].key[0].header: ",
            "$.rules[3].key[1].client_ip.trusted_hops: ",
            "$.rules[4].match.path: ",
            "$.rules[4].limits: needs at least one limit",
        ];
        assert_each_error_once(&e, &expected);
        assert_eq!(
            errors(r#"{"rules": []}"#),
            vec!["$.rules: needs at least one rule".to_string()]
        );
    }

    #[test]
    fn key_defaults_to_the_client_ip() {
        let c = load(br#"{"rules": [{"name": "a", "limits": [{"requests": 1, "window": 1}]}]}"#)
            .unwrap();
        let RuleAction::Limit(rule) = &c.rules[0].action else {
            panic!()
        };
        assert_eq!(rule.key, Key::First(vec![KeySource::client_ip(0)]));
        assert_eq!(rule.on_missing_key, OnMissingKey::Shared);
        assert_eq!(c.store.on_full, OnFailure::Deny);
        assert_eq!(c.store.on_contention, OnFailure::Allow);
    }

    #[test]
    fn plans_and_their_errors() {
        let e = errors(
            r#"{
            "plans": {"names": ["free", "pro", "free"], "default": "gold", "header": "x plan", "keys": {"k": "silver"}},
            "response": {"headers": {"names": {"limit": "X-Limit", "ratelimit": "RL"}, "hide": ["resets"]}, "content_type": ""},
            "rules": [
                {"name": "a", "also": ["b", "nope", "a", "h"], "cost": {"header": "x-n", "query": "n", "default": 5, "max": 2},
                 "limits": [{"requests": {"free": 1, "platinum": 2}, "window": "1m", "message": "{{message}}!"}]},
                {"name": "b", "also": ["a"], "cost": 0, "limits": [{"requests": 1, "window": "1m"}]},
                {"name": "h", "exempt": true, "cost": 1}
            ]}"#,
        );
        let expected = [
            "$.plans.names[2]: duplicate plan",
            "$.plans.default: \"gold\" is not one of plans.names",
            "$.plans.header: ",
            "$.plans.keys.k: \"silver\" is not one of plans.names",
            "$.response.headers.names.ratelimit: the XRateLimit style has no",
            "$.response.headers.hide[0]: unknown header \"resets\"",
            "$.response.content_type: ",
            "$.rules[0].limits[0].requests.platinum: ",
            "$.rules[0].limits[0].message: ",
            "$.rules[0].cost: give exactly one",
            "$.rules[0].cost.default: ",
            "$.rules[0].also[0]: rule \"b\" has its own \"also\"",
            "$.rules[0].also[1]: no rule is named \"nope\"",
            "$.rules[0].also[2]: a rule cannot include itself",
            "$.rules[0].also[3]: rule \"h\" is exempt",
            "$.rules[1].cost: must be between 1",
            "$.rules[1].also[0]: rule \"a\" has its own \"also\"",
            "$.rules[2].cost: an exempt rule takes no cost",
        ];
        assert_each_error_once(&e, &expected);
        let e = errors(
            r#"{"rules": [{"name": "a", "limits": [{"requests": {"free": 1}, "window": 1}]}]}"#,
        );
        assert!(e[0].contains("requests per plan need \"plans\""), "{e:?}");
        let e =
            errors(r#"{"rules": [{"name": "a", "limits": [{"requests": "many", "window": 1}]}]}"#);
        assert!(e[0].starts_with("$.rules[0].limits[0].requests: invalid type: string \"many\", expected a whole number"), "{e:?}");
        let e = errors(
            r#"{"rules": [{"name": "a", "cost": {"header": "x", "max": 5, "typo": 1}, "limits": [{"requests": 1, "window": 1}]}]}"#,
        );
        assert!(
            e[0].starts_with("$.rules[0].cost.typo: unknown field"),
            "{e:?}"
        );
    }

    #[test]
    fn plan_resolution_order() {
        let c = load(
            br#"{"plans": {"names": ["free", "pro"], "default": "free", "header": "x-plan", "keys": {"vip": "pro"}},
                 "rules": [{"name": "a", "limits": [{"requests": {"free": 1, "pro": 0}, "window": 1}]}]}"#,
        )
        .unwrap();
        assert!(c.plans.declared);
        assert_eq!(c.plans.resolve(Some(b"vip"), Some(b"free")), 1);
        assert_eq!(c.plans.resolve(Some(b"other"), Some(b" Pro ")), 1);
        assert_eq!(c.plans.resolve(None, Some(b"\xff")), 0);
        assert_eq!(c.plans.resolve(None, None), 0);
        let RuleAction::Limit(rule) = &c.rules[0].action else {
            panic!()
        };
        assert_eq!(rule.levels(0), [1]);
        assert_eq!(rule.levels(1), [0], "0 means no limit at this level");
    }
}
