//! What requests cost: a rule's `cost`, a limit's own (`request`, held while the request is in
//! flight, and `response`, what its response says), and which responses stay counted.

use serde_json::Value;

use super::json::{invalid, list, text, whole, Fields};
use super::select::metadata_path;
use crate::config::model::*;
use crate::config::Errors;

pub fn cost(value: &Value, path: &str, errors: &mut Errors) -> Option<CostConfig> {
    if value.is_object() {
        const KNOWN: &[&str] = &["header", "query", "metadata", "default", "max"];
        let f = Fields::open(value, path, KNOWN, errors)?;
        let max = f
            .required("max", errors)
            .and_then(|v| whole(v, &f.path("max"), errors));
        return Some(CostConfig::FromRequest(CostFromRequest {
            header: f.optional("header", errors, text),
            query: f.optional("query", errors, text),
            metadata: f.optional("metadata", errors, metadata_path),
            default: f.or("default", 1, errors, whole),
            max: max?,
        }));
    }
    match value.as_u64() {
        Some(n) => Some(CostConfig::Fixed(n)),
        None => {
            invalid(
                errors,
                path,
                value,
                "a whole number, or {\"header\", \"query\" or \"metadata\", \"default\", \"max\"}",
            );
            None
        }
    }
}

pub fn limit_cost(value: &Value, path: &str, errors: &mut Errors) -> Option<LimitCostConfig> {
    if value.is_object() {
        let f = Fields::open(value, path, &["request", "response"], errors)?;
        return Some(LimitCostConfig::Parts(Box::new(LimitCostParts {
            request: f.optional("request", errors, cost),
            response: f.optional("response", errors, response_cost),
        })));
    }
    match value.as_u64() {
        Some(n) => Some(LimitCostConfig::Fixed(n)),
        None => {
            let expected = "a whole number, or {\"request\", \"response\"}";
            invalid(errors, path, value, expected);
            None
        }
    }
}

fn response_cost(value: &Value, path: &str, errors: &mut Errors) -> Option<ResponseCostConfig> {
    let f = Fields::open(value, path, &["header", "metadata", "max"], errors)?;
    let max = f
        .required("max", errors)
        .and_then(|v| whole(v, &f.path("max"), errors));
    Some(ResponseCostConfig {
        header: f.optional("header", errors, text),
        metadata: f.optional("metadata", errors, metadata_path),
        max: max?,
    })
}

pub fn responses(value: &Value, path: &str, errors: &mut Errors) -> Option<Vec<ResponseMatch>> {
    list(value, path, errors, |v, p, e| match v {
        Value::String(s) => Some(ResponseMatch::Named(s.clone())),
        other => match other.as_u64() {
            Some(n) => Some(ResponseMatch::Status(n)),
            None => {
                let expected = "a status (200), a class (\"2xx\") or \"no_response\"";
                invalid(e, p, other, expected);
                None
            }
        },
    })
}
