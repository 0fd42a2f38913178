//! Client plans (tiers): their names, and how a request's plan is found.

use std::collections::{HashMap, HashSet};

use crate::config::{name_rule, valid_header_name, valid_name, Errors, PlansConfig, Report};

/// The plan of every request when the config declares no plans.
const IMPLICIT_PLAN: &str = "default";

#[derive(Debug, Clone)]
pub struct Plans {
    /// Index = plan id. Without plans in the config: `["default"]`.
    pub names: Vec<String>,
    /// Whether the config declares plans (else every request has the implicit one).
    pub declared: bool,
    pub default: usize,
    pub header: Option<String>,
    /// Client key value → plan id.
    pub keys: HashMap<Vec<u8>, usize>,
}

impl Plans {
    pub fn compile(plans: Option<&PlansConfig>, errors: &mut Errors) -> Self {
        let Some(plans) = plans else {
            return Plans {
                names: vec![IMPLICIT_PLAN.to_string()],
                declared: false,
                default: 0,
                header: None,
                keys: HashMap::new(),
            };
        };
        if plans.names.is_empty() {
            errors.add("$.plans.names", "needs at least one plan");
        }
        let mut seen = HashSet::new();
        for (i, name) in plans.names.iter().enumerate() {
            if !valid_name(name) {
                errors.add(format!("$.plans.names[{i}]"), name_rule(name));
            } else if !seen.insert(name.to_ascii_lowercase()) {
                errors.add(
                    format!("$.plans.names[{i}]"),
                    format!("duplicate plan {name:?}"),
                );
            }
        }
        let find = |name: &str| plans.names.iter().position(|n| n == name);
        let default = find(&plans.default).unwrap_or_else(|| {
            let message = format!("{:?} is not one of plans.names", plans.default);
            errors.add("$.plans.default", message);
            0
        });
        let header = plans.header.as_ref().and_then(|h| {
            if valid_header_name(h) {
                return Some(h.to_ascii_lowercase());
            }
            errors.add("$.plans.header", format!("{h:?} is not a header name"));
            None
        });
        let mut keys = HashMap::new();
        for (key, plan) in &plans.keys {
            match find(plan) {
                Some(p) if !key.trim().is_empty() => {
                    keys.insert(key.trim().as_bytes().to_vec(), p);
                }
                Some(_) => errors.add("$.plans.keys", "a client key may not be empty"),
                None => errors.add(
                    format!("$.plans.keys.{key}"),
                    format!("{plan:?} is not one of plans.names"),
                ),
            }
        }
        Plans {
            names: plans.names.clone(),
            declared: true,
            default,
            header,
            keys,
        }
    }

    /// The plan of a client: its key in the static map, else the plan header (a known name), else
    /// the default.
    pub fn resolve(&self, key: Option<&[u8]>, header: Option<&[u8]>) -> usize {
        if let Some(plan) = key.and_then(|k| self.keys.get(k)) {
            return *plan;
        }
        if let Some(value) = header {
            let value = value.trim_ascii();
            if let Some(plan) = self
                .names
                .iter()
                .position(|n| n.as_bytes().eq_ignore_ascii_case(value))
            {
                return plan;
            }
        }
        self.default
    }

    /// The name to show (headers, bodies, logs): `None` when the config declares no plans.
    pub fn shown(&self, plan: usize) -> Option<&str> {
        self.declared.then(|| self.names[plan].as_str())
    }
}
