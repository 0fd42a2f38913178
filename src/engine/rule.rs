//! A rule as the request path uses it: exempt, or limited with its key sources, cost, the other
//! rules it also applies, its limits (what the limiter counts, what refusals say) and its pages.

use std::collections::{HashMap, HashSet};

use super::levels::{LevelSource, Levels};
use crate::config::{
    format_window, name_rule, valid_name, Errors, GrpcAnswer, KeyConfig, Mode, OnAmbiguousKey,
    OnFailure, OnMissingKey, Report, RuleConfig,
};
use crate::costs::RuleCosts;
use crate::fleet::{FleetRule, FleetSettings};
use crate::hash::KeyKind;
use crate::limiter::{Limit, Limiter};
use crate::request::{Key, Plans, Request};
use crate::response::{LimitText, ResponseFormat};
use crate::route::RouteMatcher;
use crate::store::{PageKeys, StoreSettings};

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub action: RuleAction,
}

#[derive(Debug, Clone)]
pub enum RuleAction {
    /// Pass untouched.
    Exempt,
    Limit(Box<LimitedRule>),
}

#[derive(Debug, Clone)]
pub struct LimitedRule {
    pub key: Key,
    pub on_missing_key: OnMissingKey,
    pub on_ambiguous_key: OnAmbiguousKey,
    /// What a request costs in each limit, and what its response settles.
    pub costs: RuleCosts,
    /// Indices of the other rules whose limits apply too.
    pub also: Vec<usize>,
    /// As compiled (read by `explain`).
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub limits: Vec<Limit>,
    /// Each limit as refusals name it, in the same order.
    pub texts: Vec<LimitText>,
    /// Every limit's level per plan, and those a request brings.
    pub levels: Levels,
    /// Candidate limits (`shadow`), by limit: counted, never refusing, in no header.
    pub candidates: Vec<bool>,
    /// `enforce` or `shadow` for this rule alone; `None`: the filter's mode.
    pub mode: Option<Mode>,
    /// How this rule's refusals answer a gRPC request; `None`: the filter's `response.grpc`.
    pub grpc: Option<GrpcAnswer>,
    pub limiter: Limiter,
    pub pages: PageKeys,
    /// The limits also counted by the rate limit service, if any.
    pub fleet: Option<FleetRule>,
    /// Nothing is ever charged after this rule in a request (it names no other rule in `also`,
    /// comes last wherever it is named, and has no fleet-wide limit), nothing it counts is given
    /// back or charged more when a response settles (see `super::settle`), and a client's levels
    /// cannot change between its requests (no plan from the request, or the same levels for
    /// every plan, and no level from the request): its refusals stay true until their retry time
    /// (see `RefusalMemory`).
    pub refusals_last: bool,
}

impl LimitedRule {
    /// The client key: the first of the rule's sources that yields one (`KeyKind::Ambiguous`
    /// when one holds several different values and `on_ambiguous_key` says deny).
    pub fn key_of(&self, request: &Request) -> Option<(KeyKind, Vec<u8>)> {
        self.key.extract(request, self.on_ambiguous_key)
    }

    /// The level of every limit for `plan` (0: not enforced), as fixed at load.
    pub fn levels(&self, plan: usize) -> &[u64] {
        self.levels.of(plan)
    }

    /// Whether limit `limit` is a candidate (`shadow`).
    pub fn is_candidate(&self, limit: usize) -> bool {
        self.candidates.get(limit).copied().unwrap_or(false)
    }
}

/// What compiling a rule needs to know of the rest of the configuration.
pub struct Context<'a> {
    pub rules: &'a [RuleConfig],
    pub plans: &'a Plans,
    pub store: &'a StoreSettings,
    pub fleet: Option<&'a FleetSettings>,
    /// The compiled `response` part (`None` when it has errors).
    pub response: Option<&'a ResponseFormat>,
}

impl Rule {
    /// Rule `index` of the configuration, and its route matcher.
    pub fn compile(index: usize, cx: &Context, errors: &mut Errors) -> (Rule, RouteMatcher) {
        let rule = &cx.rules[index];
        let at = format!("$.rules[{index}]");
        let names = cx.rules[..index].iter().map(|r| r.name.as_str());
        if !valid_name(&rule.name) {
            errors.add(format!("{at}.name"), name_rule(&rule.name));
        } else if names.clone().any(|n| n == rule.name) {
            errors.add(
                format!("{at}.name"),
                format!("duplicate rule name {:?}", rule.name),
            );
        }
        let matcher = RouteMatcher::compile(&rule.matcher, &format!("{at}.match"), errors);
        let action = if rule.exempt {
            check_exempt(rule, &at, errors);
            RuleAction::Exempt
        } else {
            RuleAction::Limit(Box::new(LimitedRule::compile(index, cx, &at, errors)))
        };
        let compiled = Rule {
            name: rule.name.clone(),
            action,
        };
        (compiled, matcher)
    }
}

fn check_exempt(rule: &RuleConfig, at: &str, errors: &mut Errors) {
    let given = [
        ("limits", !rule.limits.is_empty()),
        ("key", rule.key != KeyConfig::default()),
        ("cost", rule.cost.is_some()),
        ("counted", rule.counted.is_some()),
        ("given_back", rule.given_back.is_some()),
        ("also", !rule.also.is_empty()),
    ];
    for (field, _) in given.iter().filter(|(_, given)| *given) {
        errors.add(
            format!("{at}.{field}"),
            format!("an exempt rule takes no {field}"),
        );
    }
}

impl LimitedRule {
    fn compile(index: usize, cx: &Context, at: &str, errors: &mut Errors) -> Self {
        let rule = &cx.rules[index];
        if rule.limits.is_empty() {
            let message = "needs at least one limit (or \"exempt\": true)";
            errors.add(format!("{at}.limits"), message);
        }
        let (limits, mut texts) = compile_limits(rule, cx.plans, at, errors);
        let names: Vec<String> = texts.iter().map(|t| t.name.clone()).collect();
        let fleet = FleetRule::compile(rule, &names, cx.fleet, at, errors);
        let levels_by_plan: Vec<Vec<u64>> = (0..cx.plans.names.len())
            .map(|p| limits.iter().map(|l| l.requests[p]).collect())
            .collect();
        let levels = Levels::new(levels_by_plan, level_sources(rule, at, errors));
        let candidates: Vec<bool> = rule.limits.iter().map(|l| l.shadow).collect();
        if let Some(format) = cx.response {
            prepare_bodies(&mut texts, (rule, &limits, &levels), cx.plans, format);
        }
        let costs = RuleCosts::compile(rule, at, errors);
        let refusals_last = !costs.settles()
            && !levels.per_request()
            && refusals_last(rule, cx, fleet.is_some(), &levels);
        let limiter = Limiter::new(&limits, cx.store.max_clients, cx.store.slots_per_page)
            .admitting_over_capacity(cx.store.on_full == OnFailure::Allow)
            .with_candidates(candidates.clone());
        LimitedRule {
            key: Key::compile(&rule.key, &format!("{at}.key"), errors),
            on_missing_key: rule.on_missing_key,
            on_ambiguous_key: rule.on_ambiguous_key,
            costs,
            also: compile_also(index, cx.rules, at, errors),
            pages: PageKeys::new(&cx.store.key_prefix, &rule.name, limiter.layout_id()),
            limiter,
            limits,
            texts,
            levels,
            candidates,
            mode: rule.mode,
            grpc: rule.grpc,
            fleet,
            refusals_last,
        }
    }
}

/// Each limit's refusal body for each plan, rendered at load.
fn prepare_bodies(
    texts: &mut [LimitText],
    (rule, limits, levels): (&RuleConfig, &[Limit], &Levels),
    plans: &Plans,
    format: &ResponseFormat,
) {
    let shown: Vec<Option<&str>> = (0..plans.names.len()).map(|p| plans.shown(p)).collect();
    for (i, (text, limit)) in texts.iter_mut().zip(limits).enumerate() {
        let levels: Vec<u64> = (0..plans.names.len()).map(|p| levels.of(p)[i]).collect();
        text.prepare(format, &rule.name, (&levels, limit.window_ms), &shown);
    }
}

/// Whether nothing is ever charged after `rule` (see [`LimitedRule::refusals_last`]).
fn refusals_last(rule: &RuleConfig, cx: &Context, fleet: bool, levels: &Levels) -> bool {
    let named_last = |other: &RuleConfig| {
        !other.also.contains(&rule.name) || other.also.last() == Some(&rule.name)
    };
    // A client whose plan can change from request to request (a plan header) could be
    // admitted under another plan's levels while refused under this one's.
    let plans = cx.plans.names.len();
    let one_plan_per_client =
        !cx.plans.per_request() || (1..plans).all(|p| levels.of(p) == levels.of(0));
    rule.also.is_empty() && !fleet && one_plan_per_client && cx.rules.iter().all(named_last)
}

fn compile_limits(
    rule: &RuleConfig,
    plans: &Plans,
    at: &str,
    errors: &mut Errors,
) -> (Vec<Limit>, Vec<LimitText>) {
    let mut names = HashSet::new();
    let mut limits = Vec::new();
    let mut texts = Vec::new();
    for (j, config) in rule.limits.iter().enumerate() {
        let at = format!("{at}.limits[{j}]");
        let limit = Limit::compile(config, (&plans.names, plans.declared), &at, errors);
        let name = config
            .name
            .clone()
            .unwrap_or_else(|| format_window(config.window.millis));
        if !valid_name(&name) {
            errors.add(format!("{at}.name"), name_rule(&name));
        } else if !names.insert(name.clone()) {
            let message = format!("duplicate limit name {name:?} in this rule");
            errors.add(format!("{at}.name"), message);
        }
        texts.push(LimitText::compile(config, &name, &at, errors));
        limits.push(limit);
    }
    (limits, texts)
}

/// Each limit's per-request level source (`requests_from`), if any; one that is fleet-wide is an
/// error: the rate limit service holds fixed limits.
fn level_sources(rule: &RuleConfig, at: &str, errors: &mut Errors) -> Vec<Option<LevelSource>> {
    let limits = rule.limits.iter().enumerate();
    limits
        .map(|(j, limit)| {
            let config = limit.requests_from.as_ref()?;
            let at = format!("{at}.limits[{j}].requests_from");
            if rule.fleet || limit.fleet {
                let message = "a level from the request cannot be fleet-wide: the rate limit service holds fixed limits";
                errors.add(&at, message);
            }
            LevelSource::compile(config, &at, errors)
        })
        .collect()
}

/// The rules named in `also`: limited, not the rule itself, without an `also` of their own.
fn compile_also(index: usize, rules: &[RuleConfig], at: &str, errors: &mut Errors) -> Vec<usize> {
    let by_name: HashMap<&str, usize> = rules
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    let mut also = Vec::new();
    for (k, other) in rules[index].also.iter().enumerate() {
        let at = format!("{at}.also[{k}]");
        match by_name.get(other.as_str()) {
            None => errors.add(at, format!("no rule is named {other:?}")),
            Some(&j) if j == index => errors.add(at, "a rule cannot include itself"),
            Some(&j) if rules[j].exempt => {
                errors.add(at, format!("rule {other:?} is exempt: it has no limits"))
            }
            Some(&j) if !rules[j].also.is_empty() => errors.add(
                at,
                format!("rule {other:?} has its own \"also\"; chains are not followed, list every rule here"),
            ),
            Some(&j) => also.push(j),
        }
    }
    also
}
