//! The filter's Envoy stats, from one list: each stat's name, kind and the event that feeds it.
//! Names follow Envoy's dotted convention, are fixed at load from the config (rule and limit
//! names, never a client key), and appear as `wasmcustom.<name>` in Envoy (`<name>` with `_` for
//! `.` in `/stats/prometheus`).

use super::filter::Filter;
use super::rule::RuleAction;

/// Counter or gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatKind {
    Counter,
    Gauge,
}

macro_rules! stats {
    ($($(#[doc = $doc:literal])* $stat:ident => $name:literal, $kind:ident;)*) => {
        /// What happened to a request in one rule: one per-rule stat each.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Stat {
            $($(#[doc = $doc])* $stat,)*
        }

        /// Every per-rule stat, in slot order.
        const STATS: &[(Stat, &str, StatKind)] = &[$((Stat::$stat, $name, StatKind::$kind),)*];
    };
}

stats! {
    /// Admitted and counted.
    Allowed => "allowed", Counter;
    /// Refused (in enforce mode).
    Refused => "refused", Counter;
    /// Would have been refused; shadow mode let it through.
    ShadowRefused => "shadow_refused", Counter;
    /// No key source yielded a key.
    MissingKey => "missing_key", Counter;
    /// A key source held several different values (`on_ambiguous_key: deny` applied).
    AmbiguousKey => "ambiguous_key", Counter;
    /// Over quota only through counts inherited from the page summary, not the client's own
    /// (`store.on_full` applied: refused with the capacity reply, or admitted).
    CapacityRefused => "capacity_refused", Counter;
    /// Compare-and-swap attempts exhausted (`store.on_contention` applied).
    Contention => "store_contention", Counter;
    /// A never-used slot was taken: one more client counted exactly.
    ClientTracked => "clients_tracked", Gauge;
    /// A client with counts lost its slot to another; its counts went into the page summary.
    ClientEvicted => "clients_evicted", Counter;
    /// A call to the rate limit service ended (answered, failed or timed out).
    FleetCalls => "fleet_calls", Counter;
    /// The rate limit service admitted a call.
    FleetAdmitted => "fleet_admitted", Counter;
    /// The service refused (or a refusal it gave in this sub-window was remembered).
    FleetRefused => "fleet_refused", Counter;
    /// A call failed, timed out or got an unreadable answer (`fleet.on_error` applied).
    FleetFailed => "fleet_failed", Counter;
    /// A request covered by a lease: no call.
    FleetLeased => "fleet_leased", Counter;
    /// A lease refill, asked ahead of need (no request waits for it), ended.
    FleetRefills => "fleet_refills", Counter;
    /// Batched counting: a request admitted on the local tier's word, to be reported.
    FleetBatched => "fleet_batched", Counter;
    /// Batched counting: a report of one client's hits ended.
    FleetReports => "fleet_reports", Counter;
    /// Batched counting: the service refused a report (the client is refused, then asked for
    /// request by request, until its counts have left every span).
    FleetReportRefused => "fleet_report_refused", Counter;
    /// A new client's first request admitted without a slot, recorded in the page summary.
    DoorAdmitted => "door_admitted", Counter;
    /// Refused from this worker's memory of an earlier refusal still true: no store access.
    RefusalRecalled => "refused_from_memory", Counter;
    /// A response some limit does not count (`counted`, `given_back`): its charge went back.
    GivenBack => "given_back", Counter;
}

/// One thing that happened while deciding a request, for the stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `stat` of rule `rule` (index in the config).
    Rule { rule: usize, stat: Stat },
    /// Limit `limit` of rule `rule` refused the request.
    Limit { rule: usize, limit: usize },
    /// Limit `limit` of rule `rule` would have refused the request, and let it through: a
    /// candidate limit (`shadow`), or a rule in shadow mode.
    ShadowLimit { rule: usize, limit: usize },
    /// A request's charge in limit `limit` of rule `rule` settled at `units` when its stream
    /// ended (what its response cost, or 0 for one the limit does not count).
    Settled {
        rule: usize,
        limit: usize,
        units: u64,
    },
    /// ... of which `units` were counted beyond what the request held (its response said it cost
    /// more than the estimate).
    Overspent {
        rule: usize,
        limit: usize,
        units: u64,
    },
}

/// What happened while deciding one request: a few events, kept without a heap allocation.
pub type Events = smallvec::SmallVec<[Event; 2]>;

impl Event {
    /// The rule, and the slot of the event in that rule's stats (see [`stat_names`]).
    pub fn slot(self) -> (usize, usize) {
        match self {
            Event::Rule { rule, stat } => (rule, stat as usize),
            Event::Limit { rule, limit } => (rule, STATS.len() + PER_LIMIT * limit),
            Event::ShadowLimit { rule, limit } => (rule, STATS.len() + PER_LIMIT * limit + 1),
            Event::Settled { rule, limit, .. } => (rule, STATS.len() + PER_LIMIT * limit + 2),
            Event::Overspent { rule, limit, .. } => (rule, STATS.len() + PER_LIMIT * limit + 3),
        }
    }

    /// How much the event adds to its stat.
    pub fn amount(self) -> u64 {
        match self {
            Event::Settled { units, .. } | Event::Overspent { units, .. } => units,
            _ => 1,
        }
    }
}

/// The stats of each limit, by slot after the rule's own.
const PER_LIMIT_STATS: [&str; 4] = ["refused", "shadow_refused", "settled", "overspent"];
const PER_LIMIT: usize = PER_LIMIT_STATS.len();

/// For each rule (exempt rules: none), its stats' names and kinds, by slot:
/// `<key_prefix>.<rule>.<stat>`, then per limit `<key_prefix>.<rule>.<limit>.refused`,
/// `.shadow_refused`, `.settled` (units: what settled requests cost) and `.overspent` (units
/// counted beyond what requests held).
pub fn stat_names(filter: &Filter) -> Vec<Vec<(String, StatKind)>> {
    filter
        .rules
        .iter()
        .map(|rule| match &rule.action {
            RuleAction::Exempt => Vec::new(),
            RuleAction::Limit(limited) => {
                let base = format!("{}.{}", filter.store.key_prefix, rule.name);
                let per_rule = STATS
                    .iter()
                    .map(|(_, stat, kind)| (format!("{base}.{stat}"), *kind));
                let per_limit = limited.texts.iter().flat_map(|l| {
                    PER_LIMIT_STATS
                        .map(|what| (format!("{base}.{}.{what}", l.name), StatKind::Counter))
                });
                per_rule.chain(per_limit).collect()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_config_only() {
        let filter = Filter::load(
            br#"{"store": {"key_prefix": "edge"}, "rules": [
                {"name": "health", "exempt": true},
                {"name": "api", "limits": [{"name": "minute", "requests": 1, "window": "1m"}, {"requests": 9, "window": "1d"}]}
            ]}"#,
        )
        .unwrap();
        let names = stat_names(&filter);
        assert!(names[0].is_empty());
        let api: Vec<&str> = names[1].iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            api,
            vec![
                "edge.api.allowed",
                "edge.api.refused",
                "edge.api.shadow_refused",
                "edge.api.missing_key",
                "edge.api.ambiguous_key",
                "edge.api.capacity_refused",
                "edge.api.store_contention",
                "edge.api.clients_tracked",
                "edge.api.clients_evicted",
                "edge.api.fleet_calls",
                "edge.api.fleet_admitted",
                "edge.api.fleet_refused",
                "edge.api.fleet_failed",
                "edge.api.fleet_leased",
                "edge.api.fleet_refills",
                "edge.api.fleet_batched",
                "edge.api.fleet_reports",
                "edge.api.fleet_report_refused",
                "edge.api.door_admitted",
                "edge.api.refused_from_memory",
                "edge.api.given_back",
                "edge.api.minute.refused",
                "edge.api.minute.shadow_refused",
                "edge.api.minute.settled",
                "edge.api.minute.overspent",
                "edge.api.1d.refused",
                "edge.api.1d.shadow_refused",
                "edge.api.1d.settled",
                "edge.api.1d.overspent",
            ]
        );
        let tracked = Event::Rule {
            rule: 1,
            stat: Stat::ClientTracked,
        }
        .slot();
        assert_eq!(tracked, (1, 7));
        assert_eq!(names[1][tracked.1].1, StatKind::Gauge);
        let by_day = Event::Limit { rule: 1, limit: 1 }.slot();
        assert_eq!(names[1][by_day.1].0, "edge.api.1d.refused");
        let shadow = Event::ShadowLimit { rule: 1, limit: 0 }.slot();
        assert_eq!(names[1][shadow.1].0, "edge.api.minute.shadow_refused");
        for (i, (stat, _, _)) in STATS.iter().enumerate() {
            assert_eq!(*stat as usize, i, "the list is in slot order");
        }
    }
}
