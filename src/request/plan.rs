//! Client plans (tiers): their names, and how a request's plan is found.

use std::collections::{HashMap, HashSet};

use super::view::{MetadataPath, Request};
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
    /// Dynamic metadata carrying the plan.
    pub metadata: Option<MetadataPath>,
    /// Client key value → plan id.
    pub keys: HashMap<Vec<u8>, usize>,
}

/// Plan names: at least one, valid, none twice (whatever the case).
fn check_names(names: &[String], errors: &mut Errors) {
    if names.is_empty() {
        errors.add("$.plans.names", "needs at least one plan");
    }
    let mut seen = HashSet::new();
    for (i, name) in names.iter().enumerate() {
        if !valid_name(name) {
            errors.add(format!("$.plans.names[{i}]"), name_rule(name));
        } else if !seen.insert(name.to_ascii_lowercase()) {
            let message = format!("duplicate plan {name:?}");
            errors.add(format!("$.plans.names[{i}]"), message);
        }
    }
}

/// The static client key → plan map.
fn keys(plans: &PlansConfig, errors: &mut Errors) -> HashMap<Vec<u8>, usize> {
    let mut keys = HashMap::new();
    for (key, plan) in &plans.keys {
        match plans.names.iter().position(|n| n == plan) {
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
    keys
}

impl Plans {
    pub fn compile(plans: Option<&PlansConfig>, errors: &mut Errors) -> Self {
        let Some(plans) = plans else {
            return Plans {
                names: vec![IMPLICIT_PLAN.to_string()],
                declared: false,
                default: 0,
                header: None,
                metadata: None,
                keys: HashMap::new(),
            };
        };
        check_names(&plans.names, errors);
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
        let metadata = plans.metadata.as_ref().and_then(|m| {
            MetadataPath::compile((&m.namespace, &m.key, &m.path), "$.plans.metadata", errors)
        });
        Plans {
            keys: keys(plans, errors),
            names: plans.names.clone(),
            declared: true,
            default,
            header,
            metadata,
        }
    }

    /// The plan of a client: its key in the static map, else the plan metadata, else the plan
    /// header (a known name), else the default.
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

    /// The plan `request` names, where the configuration says to look (metadata first, then the
    /// header), as text: what [`Plans::resolve`] takes beside the key.
    pub fn named_by(&self, request: &Request) -> Option<Vec<u8>> {
        let from_metadata = self.metadata.as_ref().and_then(|m| request.metadata(m));
        match from_metadata {
            Some(value) => Some(value.text().into_owned()),
            None => self.header.as_deref().and_then(|h| request.header(h)),
        }
    }

    /// Whether a client's plan can change from one request to the next (it comes from the request:
    /// a header or metadata).
    pub fn per_request(&self) -> bool {
        self.header.is_some() || self.metadata.is_some()
    }

    /// The name to show (headers, bodies, logs): `None` when the config declares no plans.
    pub fn shown(&self, plan: usize) -> Option<&str> {
        self.declared.then(|| self.names[plan].as_str())
    }
}
