//! The `fleet` part of the configuration, and each rule's fleet limits.

use crate::config::{
    name_rule, valid_name, Errors, FleetConfig, FleetCounting, OnFleetError, Report, RuleConfig,
};
use crate::hash::fnv1a;

const MAX_TIMEOUT_MS: u64 = 60_000;
const MAX_SUB_WINDOWS: u32 = 20;
const MAX_LEASE: u64 = 100_000;
const BATCH_INTERVAL_MS: std::ops::RangeInclusive<u64> = 10..=60_000;

/// The rate limit service and how the filter talks to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSettings {
    pub cluster: String,
    pub domain: String,
    pub timeout_ms: u64,
    pub on_error: OnFleetError,
    pub counting: FleetCounting,
    pub sub_windows: u32,
    pub lease: u64,
    /// Batched counting: how long admitted hits may wait to be reported (0: not batched).
    pub batch_interval_ms: u64,
    /// Seeds the hash the service knows clients by: the same in every Envoy of the fleet.
    pub seed: u64,
}

impl FleetSettings {
    /// `key_prefix` is the default domain.
    pub fn compile(fleet: &FleetConfig, key_prefix: &str, errors: &mut Errors) -> Self {
        if fleet.cluster.is_empty() {
            errors.add(
                "$.fleet.cluster",
                "needs the name of the service's Envoy cluster",
            );
        }
        let domain = fleet
            .domain
            .clone()
            .unwrap_or_else(|| key_prefix.to_string());
        if !valid_name(&domain) {
            errors.add("$.fleet.domain", name_rule(&domain));
        }
        let timeout_ms = fleet.timeout.millis;
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
            let message = format!("must be between 1ms and 60s, got {timeout_ms}ms");
            errors.add("$.fleet.timeout", message);
        }
        if !(1..=MAX_SUB_WINDOWS).contains(&fleet.sub_windows) {
            let message = format!(
                "must be between 1 and {MAX_SUB_WINDOWS}, got {}",
                fleet.sub_windows
            );
            errors.add("$.fleet.sub_windows", message);
        }
        if !(1..=MAX_LEASE).contains(&fleet.lease) {
            let message = format!("must be between 1 and {MAX_LEASE}, got {}", fleet.lease);
            errors.add("$.fleet.lease", message);
        } else if fleet.lease > 1 && fleet.counting == FleetCounting::Fixed {
            let message = "leases need \"counting\": \"sliding\" (a fixed window's end is the engine's, unknown to the filter)";
            errors.add("$.fleet.lease", message);
        }
        let batch_interval_ms = batch_interval(fleet, errors);
        FleetSettings {
            batch_interval_ms,
            cluster: fleet.cluster.clone(),
            domain: domain.clone(),
            timeout_ms: timeout_ms.clamp(1, MAX_TIMEOUT_MS),
            on_error: fleet.on_error,
            counting: fleet.counting,
            sub_windows: fleet.sub_windows.clamp(1, MAX_SUB_WINDOWS),
            lease: fleet.lease.clamp(1, MAX_LEASE),
            seed: fnv1a(
                fleet
                    .key_secret
                    .as_deref()
                    .map_or_else(|| format!("fleet:{domain}"), |s| format!("secret:{s}"))
                    .bytes(),
            ),
        }
    }
}

/// Batched counting's interval, and what it needs: no lease (hits are reported, not reserved)
/// and `on_error: local` (the local tier has decided already).
fn batch_interval(fleet: &FleetConfig, errors: &mut Errors) -> u64 {
    if fleet.counting != FleetCounting::Batched {
        return 0;
    }
    let millis = fleet.batch_interval.millis;
    if !BATCH_INTERVAL_MS.contains(&millis) {
        let message = format!("must be between 10ms and 60s, got {millis}ms");
        errors.add("$.fleet.batch_interval", message);
    }
    if fleet.lease > 1 {
        let message =
            "batched counting reports hits after the fact: no lease (set 1 or leave it out)";
        errors.add("$.fleet.lease", message);
    }
    if fleet.on_error != OnFleetError::Local {
        let message =
            "batched counting admits on the local tier's word first: only \"local\" applies";
        errors.add("$.fleet.on_error", message);
    }
    millis.clamp(*BATCH_INTERVAL_MS.start(), *BATCH_INTERVAL_MS.end())
}

/// One fleet-wide limit of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetLimit {
    /// The limit's index in its rule.
    pub limit: usize,
    /// `<rule>.<limit>`: how the service's configuration names it.
    pub id: String,
    pub window_ms: u64,
}

/// A rule's fleet limits and the domain its calls use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetRule {
    /// `<fleet domain>.<rule>`: each rule's calls carry the same number of descriptors.
    pub domain: String,
    pub limits: Vec<FleetLimit>,
}

impl FleetRule {
    /// The rule's fleet limits (`names[i]` is limit `i`'s settled name), or `None` when it has
    /// none. A limit marked fleet-wide without a service is an error at `at`.
    pub fn compile(
        rule: &RuleConfig,
        names: &[String],
        fleet: Option<&FleetSettings>,
        at: &str,
        errors: &mut Errors,
    ) -> Option<Self> {
        let marked: Vec<usize> = (0..rule.limits.len())
            .filter(|&i| rule.fleet || rule.limits[i].fleet)
            .collect();
        if marked.is_empty() {
            return None;
        }
        let Some(fleet) = fleet else {
            let path = if rule.fleet {
                format!("{at}.fleet")
            } else {
                format!("{at}.limits[{}].fleet", marked[0])
            };
            errors.add(
                path,
                "fleet-wide limits need \"fleet\" at the top level (the rate limit service)",
            );
            return None;
        };
        let limits = marked
            .into_iter()
            .map(|i| FleetLimit {
                limit: i,
                id: format!("{}.{}", rule.name, names[i]),
                window_ms: rule.limits[i].window.millis.max(1),
            })
            .collect();
        Some(FleetRule {
            domain: format!("{}.{}", fleet.domain, rule.name),
            limits,
        })
    }
}
