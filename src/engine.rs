//! One request, start to finish, in plain Rust: pick the rule, find the key and plan, ask the
//! limiter for every rule that applies, and say what the host should do. The host layer only
//! carries this out.

use std::cell::Cell;

use crate::client_hash::{client_hash, display_hash, KeyKind};
use crate::client_key::{extract, query_value, Request, RequestView};
use crate::config::MissingKeyPolicy;
use crate::config::RefusalLog;
use crate::limiter::{self, SlotUse, Verdict};
use crate::policy::{CompiledConfig, Cost, LimitedRule, Rule, RuleAction};
use crate::request_path::canonical_segments;
use crate::response::{self, Checked, Headers, LocalReply, Outcome};
use crate::route_match::RouteFacts;
use crate::store::SharedStore;

/// What the host does with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Let it through and write nothing.
    Pass,
    /// Let it through and add these headers to the response.
    Allow(Headers),
    /// Answer locally.
    Refuse(LocalReply),
}

/// What happened, per rule, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Admitted and counted.
    Allowed,
    /// Refused (in enforce mode).
    Refused,
    /// Would have been refused; shadow mode let it through.
    ShadowRefused,
    /// No key source yielded a key.
    MissingKey,
    /// No slot free for a new client (`store.on_full` applied).
    StoreFull,
    /// Compare-and-swap attempts exhausted (`store.on_contention` applied).
    Contention,
    /// A never-used slot was taken: one more client tracked.
    ClientTracked,
    /// An idle client's slot (all windows empty) was reused.
    ClientEvicted,
    /// This limit (index in the rule) refused the request.
    RefusedBy(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Index of the rule in the config.
    pub rule: usize,
    pub kind: EventKind,
}

/// The action, and what led to it (for logs and metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    pub action: Action,
    /// Index of the matched rule in the config.
    pub rule: Option<usize>,
    /// The last limiter verdict (the refusing one when refused).
    pub verdict: Option<Verdict>,
    /// The request would have been refused, but the filter is in shadow mode.
    pub shadow_refusal: bool,
    pub missing_key: bool,
    pub events: Vec<Event>,
}

impl Handled {
    fn pass(rule: Option<usize>) -> Self {
        Handled {
            action: Action::Pass,
            rule,
            verdict: None,
            shadow_refusal: false,
            missing_key: false,
            events: Vec::new(),
        }
    }

    fn event(&mut self, rule: usize, kind: EventKind) {
        self.events.push(Event { rule, kind });
    }
}

/// The first rule whose match accepts the request.
pub fn select_rule<'a>(config: &'a CompiledConfig, request: &Request) -> Option<(usize, &'a Rule)> {
    let facts = RouteFacts {
        path: if config.needs_path {
            canonical_segments(request.path().unwrap_or_default())
        } else {
            Vec::new()
        },
        method: if config.needs_method {
            request.header(":method")
        } else {
            None
        },
        authority: if config.needs_authority {
            request.header(":authority")
        } else {
            None
        },
        route_name: if config.needs_route_name {
            request.route_name()
        } else {
            None
        },
    };
    config
        .rules
        .iter()
        .enumerate()
        .find(|(_, rule)| rule.matcher.matches(&facts))
}

/// The cost of a request against a rule: fixed, or a whole number from a header or query
/// parameter (missing, malformed or 0: the default; above the maximum: the maximum).
pub fn cost_of(cost: &Cost, request: &Request) -> u64 {
    match cost {
        Cost::Fixed(n) => *n,
        Cost::FromRequest {
            header,
            query,
            default,
            max,
        } => {
            let raw = match (header, query) {
                (Some(h), _) => request.header(h),
                (None, Some(q)) => request.path().and_then(|p| query_value(p, q)),
                (None, None) => None,
            };
            let parsed = raw
                .and_then(|v| {
                    std::str::from_utf8(v.trim_ascii())
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                })
                .filter(|&n| n > 0);
            parsed.map_or(*default, |n| n.min(*max))
        }
    }
}

/// A count taken in one rule's store, to give back if a later rule refuses the request.
struct Taken<'a> {
    rule: &'a LimitedRule,
    client: u64,
    cost: u64,
    at_ms: u64,
    first_checked: usize,
}

pub fn handle(
    config: &CompiledConfig,
    store: &dyn SharedStore,
    request: &dyn RequestView,
    now_ms: u64,
) -> Handled {
    if !config.enabled {
        return Handled::pass(None);
    }
    let request = &Request::new(request);
    let Some((rule_index, rule)) = select_rule(config, request) else {
        return Handled::pass(None);
    };
    let RuleAction::Limit(primary) = &rule.action else {
        return Handled::pass(Some(rule_index));
    };
    let mut primary_key = extract(&primary.key, request);
    let plans = &config.plans;
    let plan_header = plans.header.as_deref().and_then(|h| request.header(h));
    let plan = plans.resolve(
        primary_key.as_ref().map(|(_, k)| k.as_slice()),
        plan_header.as_deref(),
    );
    let plan_name = config.has_plans.then(|| plans.names[plan].as_str());

    let applied =
        std::iter::once((rule_index, primary)).chain(primary.also.iter().filter_map(|&i| {
            match &config.rules[i].action {
                RuleAction::Limit(other) => Some((i, other)),
                RuleAction::Exempt => None,
            }
        }));
    let mut handled = Handled::pass(Some(rule_index));
    let mut checked: Vec<Checked> = Vec::new();
    let mut taken: Vec<Taken> = Vec::new();
    let mut clock = now_ms;
    let mut refused = false;
    for (n, (index, limited)) in applied.enumerate() {
        let key = if n == 0 {
            primary_key.take()
        } else {
            extract(&limited.key, request)
        };
        let (kind, key) = match key {
            Some(found) => found,
            None => {
                handled.missing_key = true;
                handled.event(index, EventKind::MissingKey);
                match limited.on_missing_key {
                    MissingKeyPolicy::Shared => (KeyKind::Missing, Vec::new()),
                    MissingKeyPolicy::Allow => continue,
                    MissingKeyPolicy::Deny => {
                        give_back(config, store, &taken);
                        if config.shadow {
                            handled.shadow_refusal = true;
                        } else {
                            handled.action = Action::Refuse(response::missing_key(&rule.name));
                        }
                        return handled;
                    }
                }
            }
        };
        let requests = limited.requests_for(plan);
        if requests.iter().all(|&r| r == 0) {
            continue; // no limit at any level for this plan
        }
        let cost = cost_of(&limited.cost, request);
        let client = client_hash(config.hash_seed, kind, &key);
        let decision = limiter::check(
            store,
            &limited.policy,
            &config.store,
            client,
            cost,
            &requests,
            now_ms,
        );
        handled.verdict = Some(decision.verdict);
        clock = clock.max(decision.now_ms);
        match decision.slot {
            SlotUse::Claimed => handled.event(index, EventKind::ClientTracked),
            SlotUse::Evicted => handled.event(index, EventKind::ClientEvicted),
            SlotUse::Own | SlotUse::None => {}
        }
        let first_checked = checked.len();
        checked.extend(decision.statuses.iter().map(|s| Checked {
            limit: &limited.limits[s.limit_index],
            status: *s,
        }));
        match decision.verdict {
            Verdict::Admitted => taken.push(Taken {
                rule: limited,
                client,
                cost,
                at_ms: decision.now_ms,
                first_checked,
            }),
            Verdict::Refused => {
                refused = true;
                let by = decision.headline().map_or(0, |s| s.limit_index);
                handled.event(index, EventKind::RefusedBy(by));
                log_refusal(
                    config,
                    &config.rules[index].name,
                    &limited.limits[by].name,
                    client,
                    plan_name,
                    "refused",
                    now_ms,
                );
                break;
            }
            Verdict::StoreFull | Verdict::Contention => {
                let (kind, what) = if decision.verdict == Verdict::StoreFull {
                    (EventKind::StoreFull, "store_full")
                } else {
                    (EventKind::Contention, "contention")
                };
                handled.event(index, kind);
                if decision.allowed {
                    continue;
                }
                log_refusal(
                    config,
                    &config.rules[index].name,
                    "-",
                    client,
                    plan_name,
                    what,
                    now_ms,
                );
                give_back(config, store, &taken);
                if config.shadow {
                    handled.shadow_refusal = true;
                    handled.event(rule_index, EventKind::ShadowRefused);
                } else {
                    handled.event(rule_index, EventKind::Refused);
                    let reply = response::refusal_without_status(
                        &config.response,
                        &limited.limits[0],
                        requests[0],
                        &rule.name,
                        decision.now_ms,
                    );
                    handled.action = Action::Refuse(reply);
                }
                return handled;
            }
        }
    }
    if refused {
        // A refused request consumes no quota: give back what earlier rules counted, and report
        // their quota as it stands.
        give_back(config, store, &taken);
        for t in &taken {
            let end = taken_end(&taken, t, checked.len());
            for c in &mut checked[t.first_checked..end] {
                c.status.remaining = (c.status.remaining + t.cost).min(c.status.requests);
            }
        }
        let kind = if config.shadow {
            EventKind::ShadowRefused
        } else {
            EventKind::Refused
        };
        handled.event(rule_index, kind);
    } else if !taken.is_empty() {
        handled.event(rule_index, EventKind::Allowed);
    }
    if checked.is_empty() {
        return handled;
    }
    let outcome = Outcome {
        now_ms: clock,
        checked,
        plan: plan_name,
    };
    let response = &config.response;
    handled.action = if refused && !config.shadow {
        let request_id = if response.body.uses_request_id() {
            request
                .header("x-request-id")
                .map(|id| String::from_utf8_lossy(&id).into_owned())
        } else {
            None
        };
        Action::Refuse(response::refusal(
            response, &outcome, &rule.name, request_id,
        ))
    } else {
        Action::Allow(response::rate_limit_headers(response, &outcome, false))
    };
    handled.shadow_refusal = refused && config.shadow;
    handled
}

/// Where the statuses of `t` end in the checked list: where the next taken count's begin.
fn taken_end(taken: &[Taken], t: &Taken, total: usize) -> usize {
    taken
        .iter()
        .map(|o| o.first_checked)
        .filter(|&f| f > t.first_checked)
        .min()
        .unwrap_or(total)
}

fn give_back(config: &CompiledConfig, store: &dyn SharedStore, taken: &[Taken]) {
    for t in taken {
        limiter::refund(
            store,
            &t.rule.policy,
            &config.store,
            t.client,
            t.cost,
            t.at_ms,
        );
    }
}

thread_local! {
    /// The second of this worker's last refusal line, and the refusals not logged since.
    static REFUSAL_LOG_STATE: Cell<(u64, u64)> = const { Cell::new((u64::MAX, 0)) };
}

/// At most one line per second per worker, one per refusal: rule, limit, hashed client, plan —
/// never the key. The line says how many refusals went unlogged since the previous one, so a
/// flood of refused requests cannot become a flood of log lines.
#[allow(clippy::too_many_arguments)]
fn log_refusal(
    config: &CompiledConfig,
    rule: &str,
    limit: &str,
    client: u64,
    plan: Option<&str>,
    why: &str,
    now_ms: u64,
) {
    let level = match config.refusal_log {
        RefusalLog::Off => return,
        RefusalLog::Info => log::Level::Info,
        RefusalLog::Debug => log::Level::Debug,
    };
    if !log::log_enabled!(level) {
        return;
    }
    let second = now_ms / 1000;
    let (last, unlogged) = REFUSAL_LOG_STATE.get();
    if last == second {
        REFUSAL_LOG_STATE.set((last, unlogged + 1));
        return;
    }
    REFUSAL_LOG_STATE.set((second, 0));
    log::log!(
        level,
        "ratelimit: {why} rule={rule} limit={limit} client={} plan={} action={} shadow={} unlogged_since_last={unlogged}",
        display_hash(client),
        plan.unwrap_or("-"),
        if config.shadow { "pass" } else { "refuse" },
        config.shadow
    );
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_key::tests::FakeRequest;
    use crate::policy::load;
    use crate::store::MemoryStore;

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
        assert!(handled.missing_key);
        let Action::Refuse(reply) = handled.action else {
            panic!()
        };
        assert_eq!(reply.status, 401);
        // The template rule falls back to the client IP.
        let h = handle(&config, &store, &get("/api/links/abc/qr", &[]), T0);
        assert!(!h.missing_key);
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
            let Action::Allow(h) = handled.action else {
                panic!("request {i} refused in shadow mode")
            };
            assert_eq!(handled.shadow_refusal, i >= 5);
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
        assert!(h.missing_key, "a 64 KiB key is no key");
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
        config: &CompiledConfig,
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
            cost_of(
                &bulk.cost,
                &Request::new(&get("/bulk", &[("x-batch-size", v)])),
            )
        };
        assert_eq!(cost("4"), 4);
        assert_eq!(cost(" 7 "), 7);
        assert_eq!(cost("1000"), 10, "capped at max");
        for odd in ["0", "-3", "abc", "", "1e3", "99999999999999999999999"] {
            assert_eq!(cost(odd), 1, "{odd:?} falls back to the default");
        }
        assert_eq!(cost_of(&bulk.cost, &Request::new(&get("/bulk", &[]))), 1);
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

    fn client_page(config: &CompiledConfig, key: &str) -> String {
        let RuleAction::Limit(rule) = &config.rules[2].action else {
            panic!()
        };
        let hash = client_hash(config.hash_seed, KeyKind::Header, key.as_bytes());
        (hash % rule.policy.pages).to_string()
    }
}
