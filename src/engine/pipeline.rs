//! One request, start to finish, in plain Rust: select the rule → find the client's key and plan
//! → charge each rule that applies → give back what earlier rules took if a later one refuses →
//! render once (shadow mode is applied there and only there). The host carries out the decision.
//!
//! The evaluation owns its state (indices, not borrows), so a charge that must wait (a call to a
//! rate limit service) can stop it and resume it later.

use super::charge::{self, Charge, Charging};
use super::log::{log_refusal, Refusal};
use super::rule::LimitedRule;
use super::stats::{Event, Stat};
use super::Filter;
use crate::config::{OnFailure, OnMissingKey};
use crate::limiter::{headline_index, LimitStatus};
use crate::request::{client_hash, KeyKind, Request, RequestView};
use crate::response::{self, Checked, Headers, Outcome, Reply};
use crate::store::SharedStore;

/// What the host does with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Let it through and write nothing.
    Pass,
    /// Let it through and add these headers to the response.
    Allow(Headers),
    /// Answer locally.
    Refuse(Reply),
}

/// The action, and what happened on the way (for the stats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub events: Vec<Event>,
}

/// Decides one request.
pub fn decide(
    filter: &Filter,
    store: &dyn SharedStore,
    view: &dyn RequestView,
    now_ms: u64,
) -> Decision {
    let request = Request::new(view);
    match Evaluation::start(filter, &request) {
        None => Decision {
            action: Action::Pass,
            events: Vec::new(),
        },
        Some(mut evaluation) => {
            evaluation.charge_all(filter, store, &request, now_ms);
            evaluation.finish(filter, store, &request)
        }
    }
}

/// The request's limited rule, its client key (if any source yields one) and its plan: where
/// every evaluation starts, and what `explain` shows.
pub struct Selection {
    pub rule: usize,
    pub key: Option<(KeyKind, Vec<u8>)>,
    pub plan: usize,
}

impl Selection {
    /// `None` when the filter is off, no rule matches, or the rule is exempt.
    pub fn of(filter: &Filter, request: &Request) -> Option<Self> {
        if !filter.enabled {
            return None;
        }
        let rule = filter.routes.select(request)?;
        let limited = filter.limited(rule)?;
        let key = limited.key_of(request);
        let plans = &filter.plans;
        let plan_header = plans.header.as_deref().and_then(|h| request.header(h));
        let plan = plans.resolve(
            key.as_ref().map(|(_, k)| k.as_slice()),
            plan_header.as_deref(),
        );
        Some(Selection { rule, key, plan })
    }
}

/// Why charging stopped before the last rule.
enum Stop {
    /// A limit of `rule` refused; every enforced limit's status.
    Refused {
        rule: usize,
        statuses: Vec<LimitStatus>,
    },
    /// No key, and the rule says deny.
    MissingKey,
    /// Over only through counts inherited for lack of room, and `store.on_full` says deny.
    Capacity { retry_at_ms: u64 },
    /// The store could not decide, and `store.on_contention` says deny.
    Unavailable,
}

struct Evaluation {
    selection: Selection,
    /// Rules still to charge, last first: the request's rule, then those it names in `also`.
    queue: Vec<usize>,
    /// The request's rule's key, found with the plan, until its charge takes it.
    first_key: Option<Option<(KeyKind, Vec<u8>)>>,
    charges: Vec<Charge>,
    stop: Option<Stop>,
    /// The latest clock a charge used (never before a client's last admission).
    clock: u64,
    events: Vec<Event>,
}

impl Evaluation {
    fn start(filter: &Filter, request: &Request) -> Option<Self> {
        let mut selection = Selection::of(filter, request)?;
        let limited = filter.limited(selection.rule)?;
        let queue = std::iter::once(selection.rule)
            .chain(limited.also.iter().copied())
            .rev()
            .collect();
        Some(Evaluation {
            first_key: Some(selection.key.take()),
            selection,
            queue,
            charges: Vec::new(),
            stop: None,
            clock: 0,
            events: Vec::new(),
        })
    }

    fn event(&mut self, rule: usize, stat: Stat) {
        self.events.push(Event::Rule { rule, stat });
    }

    fn charge_all(
        &mut self,
        filter: &Filter,
        store: &dyn SharedStore,
        request: &Request,
        now: u64,
    ) {
        self.clock = self.clock.max(now);
        while self.stop.is_none() {
            let Some(rule) = self.queue.pop() else { break };
            if let Some(limited) = filter.limited(rule) {
                self.charge_rule(filter, store, request, (rule, limited), now);
            }
        }
    }

    /// Charges one rule: its key (or what its missing-key policy says), its levels for the
    /// client's plan, its cost; then records what came out.
    fn charge_rule(
        &mut self,
        filter: &Filter,
        store: &dyn SharedStore,
        request: &Request,
        (rule, limited): (usize, &LimitedRule),
        now: u64,
    ) {
        let Some((kind, key)) = self.key_for((rule, limited), request) else {
            return;
        };
        let levels = limited.levels(self.selection.plan);
        if levels.iter().all(|&level| level == 0) {
            return; // no limit at any level for this plan
        }
        let cost = limited.cost.of(request);
        let client = client_hash(filter.hash_seed, kind, &key);
        let attempts = filter.store.cas_attempts;
        let (charging, stats) =
            charge::charge(store, attempts, (rule, limited), client, cost, levels, now);
        for stat in stats.into_iter().flatten() {
            self.event(rule, stat);
        }
        self.record(filter, (rule, limited), client, charging, now);
    }

    /// The rule's client key; without one, what `on_missing_key` says (`None`: skip the rule,
    /// or stop when it says deny).
    fn key_for(
        &mut self,
        (rule, limited): (usize, &LimitedRule),
        request: &Request,
    ) -> Option<(KeyKind, Vec<u8>)> {
        let key = match self.first_key.take() {
            Some(key) => key,
            None => limited.key_of(request),
        };
        if key.is_some() {
            return key;
        }
        self.event(rule, Stat::MissingKey);
        match limited.on_missing_key {
            OnMissingKey::Shared => Some((KeyKind::Missing, Vec::new())),
            OnMissingKey::Allow => None,
            OnMissingKey::Deny => {
                self.stop = Some(Stop::MissingKey);
                None
            }
        }
    }

    /// Keeps an admitted charge, or stops on a refusal (or on a store that could not decide,
    /// when its policy is deny), logging it.
    fn record(
        &mut self,
        filter: &Filter,
        (rule, limited): (usize, &LimitedRule),
        client: u64,
        charging: Charging,
        now: u64,
    ) {
        let plan = filter.plans.shown(self.selection.plan);
        let refusal = |why, limit| Refusal {
            why,
            rule: &filter.rules[rule].name,
            limit,
            client,
            plan,
            shadow: filter.shadow,
        };
        match charging {
            Charging::Admitted(charge) => {
                self.clock = self.clock.max(charge.at_ms);
                self.charges.push(charge);
            }
            Charging::Refused { statuses, now_ms } => {
                let by = headline_index(statuses.iter()).map_or(0, |i| statuses[i].limit);
                let line = refusal("refused", &limited.texts[by].name);
                log_refusal(filter.refusal_log, &line, now);
                self.events.push(Event::Limit { rule, limit: by });
                self.clock = self.clock.max(now_ms);
                self.stop = Some(Stop::Refused { rule, statuses });
            }
            Charging::Capacity {
                retry_at_ms,
                now_ms,
            } => {
                log_refusal(filter.refusal_log, &refusal("capacity", "-"), now);
                self.clock = self.clock.max(now_ms);
                self.stop = Some(Stop::Capacity { retry_at_ms });
            }
            Charging::Contended => {
                self.event(rule, Stat::Contention);
                if filter.store.on_contention == OnFailure::Deny {
                    log_refusal(filter.refusal_log, &refusal("contention", "-"), now);
                    self.stop = Some(Stop::Unavailable);
                }
            }
        }
    }

    /// Gives back what was taken if charging stopped, and renders the decision.
    fn finish(mut self, filter: &Filter, store: &dyn SharedStore, request: &Request) -> Decision {
        if self.stop.is_some() {
            // A refused request consumes no quota.
            for charge in &mut self.charges {
                if let Some(limited) = filter.limited(charge.rule) {
                    charge.undo(limited, store, filter.store.cas_attempts);
                }
            }
        }
        let (action, stat) = self.render(filter, request);
        if let Some(stat) = stat {
            self.event(self.selection.rule, stat);
        }
        Decision {
            action,
            events: self.events,
        }
    }

    /// The one place the decision becomes what the client sees, and where shadow mode applies.
    fn render(&mut self, filter: &Filter, request: &Request) -> (Action, Option<Stat>) {
        let rule_name = &filter.rules[self.selection.rule].name;
        match self.stop.take() {
            None => {
                let stat = (!self.charges.is_empty()).then_some(Stat::Allowed);
                (allow(filter, &self.outcome(filter, None)), stat)
            }
            Some(Stop::Refused { rule, statuses }) if filter.shadow => {
                let outcome = self.outcome(filter, Some((rule, &statuses)));
                (allow(filter, &outcome), Some(Stat::ShadowRefused))
            }
            Some(Stop::Unavailable | Stop::Capacity { .. }) if filter.shadow => {
                (Action::Pass, Some(Stat::ShadowRefused))
            }
            Some(Stop::MissingKey) if filter.shadow => (Action::Pass, None),
            Some(Stop::Refused { rule, statuses }) => {
                let outcome = self.outcome(filter, Some((rule, &statuses)));
                let request_id = filter
                    .response
                    .uses_request_id()
                    .then(|| request.header("x-request-id"))
                    .flatten()
                    .map(|id| String::from_utf8_lossy(&id).into_owned());
                let reply = response::refusal(&filter.response, &outcome, rule_name, request_id);
                (Action::Refuse(reply), Some(Stat::Refused))
            }
            Some(Stop::MissingKey) => (Action::Refuse(response::missing_key(rule_name)), None),
            Some(Stop::Capacity { retry_at_ms }) => {
                let reply = response::capacity(&filter.response, self.clock, retry_at_ms);
                (Action::Refuse(reply), Some(Stat::Refused))
            }
            Some(Stop::Unavailable) => {
                (Action::Refuse(response::unavailable()), Some(Stat::Refused))
            }
        }
    }

    /// Every limit checked, in rule order: the charged rules', then the refusing rule's.
    fn outcome<'f>(
        &self,
        filter: &'f Filter,
        refused: Option<(usize, &[LimitStatus])>,
    ) -> Outcome<'f> {
        let checked = self
            .charges
            .iter()
            .map(|c| (c.rule, c.statuses.as_slice()))
            .chain(refused)
            .flat_map(|(rule, statuses)| {
                let texts = filter.limited(rule).map_or(&[][..], |l| &l.texts[..]);
                statuses.iter().map(move |status| Checked {
                    limit: &texts[status.limit],
                    status: *status,
                })
            })
            .collect();
        Outcome {
            now_ms: self.clock,
            checked,
            plan: filter.plans.shown(self.selection.plan),
        }
    }
}

/// Headers for a request let through (none when no limit was enforced).
fn allow(filter: &Filter, outcome: &Outcome) -> Action {
    if outcome.checked.is_empty() {
        return Action::Pass;
    }
    Action::Allow(response::rate_limit_headers(
        &filter.response,
        outcome,
        false,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigErrors;
    use crate::engine::RuleAction;
    use crate::store::MemoryStore;
    use crate::testing::FakeRequest;

    fn load(json: &[u8]) -> Result<Filter, ConfigErrors> {
        Filter::load(json)
    }

    fn handle(filter: &Filter, store: &MemoryStore, request: &FakeRequest, now: u64) -> Decision {
        decide(filter, store, request, now)
    }

    fn has(decision: &Decision, stat: Stat) -> bool {
        decision
            .events
            .iter()
            .any(|e| matches!(e, Event::Rule { stat: s, .. } if *s == stat))
    }

    const T0: u64 = 1_700_000_000_000;

    const CONFIG: &str = r#"{
        "rules": [
            {"name": "health", "match": {"path": {"exact": "/healthz"}}, "exempt": true},
            {"name": "qr", "match": {"path": {"template": "/api/links/:id/qr"}},
             "key": [{"header": "x-api-key"}, {"client_ip": {}}],
             "limits": [{"name": "burst", "requests": 2, "window": "1s"}, {"name": "minute", "requests": 3, "window": "1m"}]},
            {"name": "api", "match": {"path": {"prefix": "/api"}},
             "key": [{"header": "x-api-key"}], "on_missing_key": "deny",
             "limits": [{"requests": 5, "window": "1m"}]}
        ]
    }"#;

    fn get(path: &str, headers: &[(&str, &str)]) -> FakeRequest {
        let mut all = vec![(":path", path), (":method", "GET")];
        all.extend_from_slice(headers);
        FakeRequest::with(&all)
    }

    #[test]
    fn exempt_and_unmatched_requests_pass_untouched() {
        let config = load(CONFIG.as_bytes()).unwrap();
        let store = MemoryStore::new();
        for _ in 0..100 {
            assert_eq!(
                handle(&config, &store, &get("/healthz", &[]), T0).action,
                Action::Pass
            );
            assert_eq!(
                handle(&config, &store, &get("/other", &[]), T0).action,
                Action::Pass
            );
        }
        assert!(store.keys().is_empty());
    }

    #[test]
    fn counts_down_then_refuses_with_the_documented_reply() {
        let config = load(CONFIG.as_bytes()).unwrap();
        let store = MemoryStore::new();
        let request = get("/api/links", &[("x-api-key", "k1")]);
        for left in (0..5).rev() {
            let Action::Allow(headers) = handle(&config, &store, &request, T0).action else {
                panic!()
            };
            assert_eq!(headers[0], ("x-ratelimit-limit".into(), "5".to_string()));
            assert_eq!(
                headers[1],
                ("x-ratelimit-remaining".into(), left.to_string())
            );
        }
        let Action::Refuse(reply) = handle(&config, &store, &request, T0 + 500).action else {
            panic!()
        };
        assert_eq!(reply.status, 429);
        // T0's 3 s sub-window began 2 s before T0; it leaves the window at T0 + 61 s.
        assert!(
            reply
                .headers
                .contains(&("retry-after".into(), "61".to_string())),
            "{:?}",
            reply.headers
        );
        // Another key, and the same key on a path spelled differently, count separately/together.
        assert!(matches!(
            handle(
                &config,
                &store,
                &get("/api/links", &[("x-api-key", "k2")]),
                T0
            )
            .action,
            Action::Allow(_)
        ));
        assert!(matches!(
            handle(
                &config,
                &store,
                &get("//API/./links/", &[("x-api-key", "k1")]),
                T0
            )
            .action,
            Action::Refuse(_)
        ));
    }

    #[test]
    fn a_missing_key_gets_its_configured_behaviour() {
        let config = load(CONFIG.as_bytes()).unwrap();
        let store = MemoryStore::new();
        let handled = handle(&config, &store, &get("/api/links", &[]), T0);
        assert!(has(&handled, Stat::MissingKey));
        let Action::Refuse(reply) = handled.action else {
            panic!()
        };
        assert_eq!(reply.status, 401);
        // The template rule falls back to the client IP.
        let h = handle(&config, &store, &get("/api/links/abc/qr", &[]), T0);
        assert!(!has(&h, Stat::MissingKey));
        assert!(matches!(h.action, Action::Allow(_)));
    }

    #[test]
    fn several_limits_report_the_most_restrictive() {
        let config = load(CONFIG.as_bytes()).unwrap();
        let store = MemoryStore::new();
        let request = get("/api/links/abc/qr", &[("x-api-key", "k")]);
        let Action::Allow(h) = handle(&config, &store, &request, T0).action else {
            panic!()
        };
        assert_eq!(
            h[0].1, "2",
            "burst: 2 per second, 1 left; minute: 3, 2 left → burst is tighter"
        );
        assert_eq!(h[1].1, "1");
        let Action::Allow(h) = handle(&config, &store, &request, T0).action else {
            panic!()
        };
        assert_eq!((h[0].1.as_str(), h[1].1.as_str()), ("2", "0"));
        let Action::Refuse(r) = handle(&config, &store, &request, T0 + 10).action else {
            panic!()
        };
        assert!(r.body.contains("\"policy\":\"burst\""), "{}", r.body);
        let Action::Allow(h) = handle(&config, &store, &request, T0 + 2_000).action else {
            panic!()
        };
        assert_eq!(
            (h[0].1.as_str(), h[1].1.as_str()),
            ("3", "0"),
            "now the minute limit is the tightest"
        );
        let Action::Refuse(r) = handle(&config, &store, &request, T0 + 4_000).action else {
            panic!()
        };
        assert!(r.body.contains("\"policy\":\"minute\""), "{}", r.body);
    }

    #[test]
    fn shadow_mode_counts_and_reports_but_never_refuses() {
        let shadow = CONFIG.replacen('{', r#"{"mode": "shadow","#, 1);
        let config = load(shadow.as_bytes()).unwrap();
        let store = MemoryStore::new();
        let request = get("/api/x", &[("x-api-key", "k")]);
        for i in 0..10 {
            let handled = handle(&config, &store, &request, T0);
            assert_eq!(has(&handled, Stat::ShadowRefused), i >= 5);
            let Action::Allow(h) = handled.action else {
                panic!("request {i} refused in shadow mode")
            };
            assert_eq!(
                h[1].1,
                if i < 5 {
                    (4 - i).to_string()
                } else {
                    "0".into()
                }
            );
        }
        assert_eq!(
            handle(&config, &store, &get("/api/x", &[]), T0).action,
            Action::Pass,
            "missing key: pass"
        );
    }

    #[test]
    fn a_disabled_filter_does_nothing() {
        let off = CONFIG.replacen('{', r#"{"enabled": false,"#, 1);
        let config = load(off.as_bytes()).unwrap();
        let store = MemoryStore::new();
        for _ in 0..10 {
            assert_eq!(
                handle(&config, &store, &get("/api/x", &[("x-api-key", "k")]), T0).action,
                Action::Pass
            );
        }
        assert!(store.keys().is_empty());
    }

    #[test]
    fn hostile_requests_have_defined_outcomes() {
        let config = load(CONFIG.as_bytes()).unwrap();
        let store = MemoryStore::new();
        let mut r = FakeRequest::with(&[]);
        r.headers
            .insert(":path".into(), b"/api/\xff\xfe?\x00".to_vec());
        r.headers.insert("x-api-key".into(), vec![0xff; 64 * 1024]);
        let h = handle(&config, &store, &r, T0);
        assert!(has(&h, Stat::MissingKey), "a 64 KiB key is no key");
        r.headers
            .insert("x-api-key".into(), b"\xff\xfe\x01".to_vec());
        assert!(matches!(
            handle(&config, &store, &r, T0).action,
            Action::Allow(_)
        ));
        r.headers.remove(":path");
        assert_eq!(
            handle(&config, &store, &r, T0).action,
            Action::Pass,
            "no path: no rule matches '/'"
        );
    }

    const PLANS: &str = r#"{
        "plans": {"names": ["free", "pro", "business", "enterprise"], "default": "free",
                  "header": "x-plan", "keys": {"static-pro-key": "pro"}},
        "rules": [
            {"name": "bulk", "match": {"path": {"prefix": "/bulk"}}, "key": [{"header": "x-api-key"}],
             "cost": {"header": "x-batch-size", "default": 1, "max": 10}, "also": ["general"],
             "limits": [{"name": "bulk_minute", "requests": 20, "window": "1m"}]},
            {"name": "general", "match": {"path": {"prefix": "/"}}, "key": [{"header": "x-api-key"}],
             "limits": [
                {"name": "minute", "window": "1m", "requests": {"free": 3, "pro": 5}, "code": "rate_limit_minute"},
                {"name": "second", "window": "1s", "requests": {"business": 2}}
             ]}
        ]
    }"#;

    fn outcome_of(
        config: &Filter,
        store: &MemoryStore,
        request: &FakeRequest,
    ) -> (u16, Headers, String) {
        match handle(config, store, request, T0).action {
            Action::Allow(h) => (200, h, String::new()),
            Action::Refuse(r) => (r.status as u16, r.headers, r.body),
            Action::Pass => (200, vec![], String::new()),
        }
    }

    #[test]
    fn plans_pick_the_limits() {
        let config = load(PLANS.as_bytes()).unwrap();
        let store = MemoryStore::new();
        let admitted = |headers: &[(&str, &str)]| {
            (0..10)
                .filter(|_| outcome_of(&config, &store, &get("/x", headers)).0 == 200)
                .count()
        };
        assert_eq!(
            admitted(&[("x-api-key", "free-1")]),
            3,
            "no plan header: the default plan"
        );
        assert_eq!(admitted(&[("x-api-key", "pro-1"), ("x-plan", "PRO")]), 5);
        assert_eq!(
            admitted(&[("x-api-key", "odd"), ("x-plan", "platinum")]),
            3,
            "unknown plan: default"
        );
        assert_eq!(
            admitted(&[("x-api-key", "static-pro-key"), ("x-plan", "free")]),
            5,
            "the static map wins"
        );
        assert_eq!(
            admitted(&[("x-api-key", "biz"), ("x-plan", "business")]),
            2,
            "business: 2 per second only"
        );
        assert_eq!(
            admitted(&[("x-api-key", "ent"), ("x-plan", "enterprise")]),
            10,
            "no limit at any level"
        );
        let (_, headers, _) = outcome_of(
            &config,
            &store,
            &get("/x", &[("x-api-key", "ent2"), ("x-plan", "enterprise")]),
        );
        assert!(headers.is_empty(), "an unlimited plan gets no headers");
    }

    #[test]
    fn an_endpoint_rule_also_counts_against_the_general_limit() {
        let config = load(PLANS.as_bytes()).unwrap();
        let store = MemoryStore::new();
        let key = [("x-api-key", "k")];
        // Free plan: general 3/min. Two bulk requests, then one plain request: general exhausted.
        assert_eq!(outcome_of(&config, &store, &get("/bulk", &key)).0, 200);
        assert_eq!(outcome_of(&config, &store, &get("/bulk", &key)).0, 200);
        assert_eq!(outcome_of(&config, &store, &get("/x", &key)).0, 200);
        let (status, headers, body) = outcome_of(&config, &store, &get("/bulk", &key));
        assert_eq!(status, 429);
        assert!(body.contains("\"policy\":\"minute\""), "{body}");
        assert!(
            headers.contains(&("x-ratelimit-limit".into(), "3".into())),
            "{headers:?}"
        );
    }

    #[test]
    fn a_request_refused_by_a_later_rule_consumes_nothing_in_earlier_ones() {
        let config = load(PLANS.as_bytes()).unwrap();
        let store = MemoryStore::new();
        let key = [("x-api-key", "k"), ("x-plan", "pro")];
        for _ in 0..5 {
            assert_eq!(outcome_of(&config, &store, &get("/x", &key)).0, 200);
        }
        // The general limit is exhausted: bulk requests are refused and refunded from bulk.
        for _ in 0..30 {
            assert_eq!(
                outcome_of(
                    &config,
                    &store,
                    &get(
                        "/bulk",
                        &[
                            ("x-api-key", "k"),
                            ("x-plan", "pro"),
                            ("x-batch-size", "10")
                        ]
                    )
                )
                .0,
                429
            );
        }
        // Upgrade to business (no minute limit, 2 per second): two seconds later bulk still has
        // its whole quota of 20, i.e. two requests of cost 10, and not a third.
        let business = get(
            "/bulk",
            &[
                ("x-api-key", "k"),
                ("x-plan", "business"),
                ("x-batch-size", "10"),
            ],
        );
        let later = T0 + 2_000;
        assert!(matches!(
            handle(&config, &store, &business, later).action,
            Action::Allow(_)
        ));
        assert!(matches!(
            handle(&config, &store, &business, later).action,
            Action::Allow(_)
        ));
        let Action::Refuse(reply) = handle(&config, &store, &business, later + 1_000).action else {
            panic!()
        };
        assert!(
            reply.body.contains("\"policy\":\"bulk_minute\""),
            "{}",
            reply.body
        );
    }

    #[test]
    fn costs_come_from_the_request_within_bounds() {
        let config = load(PLANS.as_bytes()).unwrap();
        let RuleAction::Limit(bulk) = &config.rules[0].action else {
            panic!()
        };
        let cost = |v: &str| {
            bulk.cost
                .of(&Request::new(&get("/bulk", &[("x-batch-size", v)])))
        };
        assert_eq!(cost("4"), 4);
        assert_eq!(cost(" 7 "), 7);
        assert_eq!(cost("1000"), 10, "capped at max");
        for odd in ["0", "-3", "abc", "", "1e3", "99999999999999999999999"] {
            assert_eq!(cost(odd), 1, "{odd:?} falls back to the default");
        }
        assert_eq!(bulk.cost.of(&Request::new(&get("/bulk", &[]))), 1);
    }

    #[test]
    fn client_keys_never_appear_in_shared_data() {
        let config = load(CONFIG.as_bytes()).unwrap();
        let store = MemoryStore::new();
        for key in ["sk_live_SECRET1", "sk_live_SECRET2"] {
            handle(&config, &store, &get("/api/x", &[("x-api-key", key)]), T0);
        }
        for name in store.keys() {
            assert!(!name.contains("SECRET"), "{name}");
            let (value, _) = store.get(&name);
            let value = value.unwrap();
            assert!(
                !value.windows(6).any(|w| w == b"SECRET"),
                "a value holds the key in clear"
            );
        }
        assert_eq!(
            store.keys(),
            vec![
                "ratelimit/v1/api/".to_string() + &(client_page(&config, "sk_live_SECRET1")),
                "ratelimit/v1/api/".to_string() + &(client_page(&config, "sk_live_SECRET2"))
            ]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
        );
    }

    fn client_page(config: &Filter, key: &str) -> String {
        let RuleAction::Limit(rule) = &config.rules[2].action else {
            panic!()
        };
        let hash = client_hash(config.hash_seed, KeyKind::Header, key.as_bytes());
        rule.limiter.page_of(hash).to_string()
    }

    /// A store where every compare-and-swap loses.
    struct AlwaysLoses(MemoryStore);

    impl SharedStore for AlwaysLoses {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            let (v, cas) = self.0.get(key);
            (v, cas.or(Some(1)))
        }
        fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), crate::store::CasMismatch> {
            Err(crate::store::CasMismatch)
        }
    }

    #[test]
    fn exhausted_retries_follow_the_contention_policy() {
        let store = AlwaysLoses(MemoryStore::new());
        let request = get("/api/x", &[("x-api-key", "k")]);
        let open = load(CONFIG.as_bytes()).unwrap();
        let decision = decide(&open, &store, &request, T0);
        assert!(has(&decision, Stat::Contention));
        assert_eq!(
            decision.action,
            Action::Pass,
            "on_contention: allow (the default)"
        );
        let closed = CONFIG.replacen(
            '{',
            r#"{"store": {"on_contention": "deny", "cas_attempts": 8},"#,
            1,
        );
        let closed = load(closed.as_bytes()).unwrap();
        let decision = decide(&closed, &store, &request, T0);
        assert!(has(&decision, Stat::Contention) && has(&decision, Stat::Refused));
        let Action::Refuse(reply) = decision.action else {
            panic!("on_contention: deny refuses")
        };
        // Honest: the store could not decide, so nothing is said of the client's limits.
        assert_eq!(reply.status, 503);
        assert!(
            reply.body.contains("\"error\":\"rate_limit_unavailable\""),
            "{}",
            reply.body
        );
        let names: Vec<&str> = reply.headers.iter().map(|(n, _)| &**n).collect();
        assert_eq!(names, ["retry-after", "content-type"]);
        assert_eq!(reply.headers[0].1, "1");
    }

    #[test]
    fn a_capacity_refusal_says_so_and_follows_the_full_policy() {
        let tiny = |extra: &str| {
            let json = CONFIG.replacen(
                '{',
                &format!(r#"{{"store": {{"max_clients": 1, "slots_per_page": 1{extra}}},"#),
                1,
            );
            load(json.as_bytes()).unwrap()
        };
        let (closed, open) = (tiny(""), tiny(r#", "on_full": "allow""#));
        let store = MemoryStore::new();
        let first = get("/api/x", &[("x-api-key", "first")]);
        for _ in 0..5 {
            assert!(matches!(
                decide(&closed, &store, &first, T0).action,
                Action::Allow(_)
            ));
        }
        // "second" takes the only slot on its second request; "first"'s counts go into the
        // page's summary.
        let second = get("/api/x", &[("x-api-key", "second")]);
        let placed: Vec<Decision> = (0..2)
            .map(|_| decide(&closed, &store, &second, T0 + 1))
            .collect();
        assert!(has(&placed[0], Stat::DoorAdmitted));
        assert!(has(&placed[1], Stat::ClientEvicted));
        // "first" is still refused, through what the summary holds: a capacity refusal.
        let denied = decide(&closed, &store, &first, T0 + 2_000);
        assert!(has(&denied, Stat::CapacityRefused) && has(&denied, Stat::Refused));
        assert!(!denied
            .events
            .iter()
            .any(|e| matches!(e, Event::Limit { .. })));
        let Action::Refuse(reply) = denied.action else {
            panic!("on_full: deny refuses")
        };
        assert_eq!(reply.status, 429);
        assert!(
            reply.body.contains("\"error\":\"rate_limit_capacity\""),
            "{}",
            reply.body
        );
        let names: Vec<&str> = reply.headers.iter().map(|(n, _)| &**n).collect();
        assert_eq!(names, ["retry-after", "content-type"], "no limit headers");
        let retry_after: u64 = reply.headers[0].1.parse().unwrap();
        assert!((58..=62).contains(&retry_after), "{retry_after}");
        // on_full: allow lets it through, counted.
        let allowed = decide(&open, &store, &first, T0 + 2_000);
        assert!(has(&allowed, Stat::CapacityRefused) && has(&allowed, Stat::Allowed));
        assert!(matches!(allowed.action, Action::Allow(_)));
    }
}
