//! The filter's Envoy stats: names and which event feeds which stat. Names follow Envoy's dotted
//! convention, are fixed at load from the config (rule and limit names, never a client key), and
//! appear as `wasmcustom.<name>` in Envoy (`<name>` with `_` for `.` in `/stats/prometheus`).

use crate::engine::EventKind;
use crate::policy::{CompiledConfig, RuleAction};

/// Counter or gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatKind {
    Counter,
    Gauge,
}

/// Per-rule stats, in slot order; `RefusedBy(i)` is slot `FIXED.len() + i`.
const FIXED: [(&str, StatKind); 8] = [
    ("allowed", StatKind::Counter),
    ("refused", StatKind::Counter),
    ("shadow_refused", StatKind::Counter),
    ("missing_key", StatKind::Counter),
    ("store_full", StatKind::Counter),
    ("store_contention", StatKind::Counter),
    ("clients_tracked", StatKind::Gauge),
    ("clients_evicted", StatKind::Counter),
];

/// The slot of an event in its rule's stats.
pub fn slot(kind: EventKind) -> usize {
    match kind {
        EventKind::Allowed => 0,
        EventKind::Refused => 1,
        EventKind::ShadowRefused => 2,
        EventKind::MissingKey => 3,
        EventKind::StoreFull => 4,
        EventKind::Contention => 5,
        EventKind::ClientTracked => 6,
        EventKind::ClientEvicted => 7,
        EventKind::RefusedBy(limit) => FIXED.len() + limit,
    }
}

/// For each rule (exempt rules: none), its stats' names and kinds, by slot:
/// `<key_prefix>.<rule>.<stat>` and `<key_prefix>.<rule>.<limit>.refused`.
pub fn stat_names(config: &CompiledConfig) -> Vec<Vec<(String, StatKind)>> {
    config
        .rules
        .iter()
        .map(|rule| match &rule.action {
            RuleAction::Exempt => Vec::new(),
            RuleAction::Limit(limited) => {
                let base = format!("{}.{}", config.key_prefix, rule.name);
                FIXED
                    .iter()
                    .map(|(stat, kind)| (format!("{base}.{stat}"), *kind))
                    .chain(
                        limited
                            .limits
                            .iter()
                            .map(|l| (format!("{base}.{}.refused", l.name), StatKind::Counter)),
                    )
                    .collect()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load;

    #[test]
    fn names_come_from_the_config_only() {
        let config = load(
            br#"{"store": {"key_prefix": "edge"}, "rules": [
                {"name": "health", "exempt": true},
                {"name": "api", "limits": [{"name": "minute", "requests": 1, "window": "1m"}, {"requests": 9, "window": "1d"}]}
            ]}"#,
        )
        .unwrap();
        let names = stat_names(&config);
        assert!(names[0].is_empty());
        let api: Vec<&str> = names[1].iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            api,
            vec![
                "edge.api.allowed",
                "edge.api.refused",
                "edge.api.shadow_refused",
                "edge.api.missing_key",
                "edge.api.store_full",
                "edge.api.store_contention",
                "edge.api.clients_tracked",
                "edge.api.clients_evicted",
                "edge.api.minute.refused",
                "edge.api.1d.refused",
            ]
        );
        assert_eq!(names[1][slot(EventKind::ClientTracked)].1, StatKind::Gauge);
        assert_eq!(
            names[1][slot(EventKind::RefusedBy(1))].0,
            "edge.api.1d.refused"
        );
    }
}
