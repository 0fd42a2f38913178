//! The configuration's `response` part compiled ([`ResponseFormat`]), and each limit as refusals
//! name it ([`LimitText`]): its code, message, and refusal bodies rendered at load.

use super::body::{default_body, problem_json_body, FixedValues, DEFAULT_MESSAGE};
use super::names::HeaderSet;
use super::template::{BodyTemplate, Placeholder, PreparedBody, TextTemplate};
use super::value::{Digits, HeaderName, HeaderValue};
use crate::config::{
    valid_header_name, BodyPreset, Errors, GrpcAnswer, LimitConfig, Report, ResponseConfig,
};

/// How refusals and rate-limit headers look: the configuration's `response` part, compiled.
#[derive(Debug, Clone)]
pub struct ResponseFormat {
    pub status: u32,
    /// The rate-limit headers sent: their names, style and reset format.
    pub(super) headers: HeaderSet,
    pub(super) body: BodyTemplate,
    pub(super) content_type: String,
    pub(super) default_message: TextTemplate,
    /// The header that says what the filter made of a request, when configured.
    status_header: Option<HeaderName>,
    /// Whether that status goes in the request's filter state too (the access log).
    pub status_filter_state: bool,
    /// How a refused gRPC request is answered unless its rule says (`response.grpc`).
    pub grpc: GrpcAnswer,
}

impl ResponseFormat {
    pub fn compile(response: &ResponseConfig, errors: &mut Errors) -> Option<Self> {
        if !(400..=599).contains(&response.status) {
            let message = format!(
                "a refusal status must be 4xx or 5xx, got {}",
                response.status
            );
            errors.add("$.response.status", message);
        }
        let headers = HeaderSet::compile(&response.headers, errors);
        let (preset_body, preset_type) = match response.preset {
            BodyPreset::Default => (default_body(), "application/json"),
            BodyPreset::ProblemJson => (problem_json_body(), "application/problem+json"),
        };
        let content_type = response
            .content_type
            .clone()
            .unwrap_or_else(|| preset_type.to_string());
        if content_type.is_empty() || content_type.bytes().any(|b| b.is_ascii_control()) {
            let message = format!("{content_type:?} is not a content type");
            errors.add("$.response.content_type", message);
        }
        let status_header = response.status_header.as_ref().and_then(|name| {
            if valid_header_name(name) {
                return Some(HeaderName::from(name.to_ascii_lowercase()));
            }
            let message = format!("{name:?} is not a header name");
            errors.add("$.response.status_header", message);
            None
        });
        let body = BodyTemplate::compile(response.body.as_ref().unwrap_or(&preset_body))
            .map_err(|e| errors.add(format!("$.response.body{}", e.path), e.message))
            .ok()?;
        Some(ResponseFormat {
            status: response.status,
            headers,
            body,
            content_type,
            default_message: TextTemplate::compile(DEFAULT_MESSAGE, &[]).expect("a valid template"),
            status_header,
            status_filter_state: response.status_filter_state,
            grpc: response.grpc.unwrap_or(GrpcAnswer::ResourceExhausted),
        })
    }

    /// Whether the headers report the remaining quota of every limit, not only the headline's.
    pub fn lists_every_remaining(&self) -> bool {
        self.headers.lists_every_remaining()
    }

    /// The header that says what the filter made of a request, when configured.
    pub fn status_header(&self) -> Option<&HeaderName> {
        self.status_header.as_ref()
    }

    /// Whether rendering a refusal needs the request id (so the host reads it only then).
    pub fn uses_request_id(&self) -> bool {
        self.body.uses_request_id()
    }
}

/// A limit as refusals name it: its name, error code and message, and its refusal body and
/// limit header value for each plan, rendered at load (see [`LimitText::prepare`]).
#[derive(Debug, Clone)]
pub struct LimitText {
    pub name: String,
    /// Whether the name was given (Envoy's form names only those: `;name="..."`).
    pub name_given: bool,
    pub code: String,
    /// What the limit counts (`requests` unless it says).
    pub unit: String,
    /// Whether the unit was given (it is then the policy's quota unit, `qu`).
    pub unit_given: bool,
    pub message: Option<TextTemplate>,
    pub(super) bodies: Vec<PreparedBody>,
    /// Per plan: the level, and its digits for the limit header.
    pub(super) levels: Vec<(u64, Digits)>,
}

impl LimitText {
    /// `name` is the limit's name as the rule settled it (given, or its window).
    pub fn compile(limit: &LimitConfig, name: &str, at: &str, errors: &mut Errors) -> Self {
        let code = limit.code.clone().unwrap_or_else(|| name.to_string());
        if code.is_empty() || code.len() > 128 {
            errors.add(format!("{at}.code"), "must be 1 to 128 characters");
        }
        let message = limit.message.as_ref().and_then(|text| {
            TextTemplate::compile(text, &[Placeholder::Message])
                .map_err(|m| errors.add(format!("{at}.message"), m))
                .ok()
        });
        let unit = limit.unit.clone().unwrap_or_else(|| "requests".into());
        let token = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-';
        if unit.is_empty() || unit.len() > 32 || !unit.bytes().all(token) {
            let message = format!("{unit:?} is not a unit: 1 to 32 of a-z, 0-9 and -");
            errors.add(format!("{at}.unit"), message);
        }
        LimitText {
            name: name.to_string(),
            name_given: limit.name.is_some(),
            code,
            unit_given: limit.unit.is_some(),
            unit,
            message,
            bodies: Vec::new(),
            levels: Vec::new(),
        }
    }

    /// Renders this limit's refusal body for each plan at load: `levels[plan]` (0: the plan does
    /// not enforce this limit), `plans[plan]` the plan as the body shows it.
    pub fn prepare(
        &mut self,
        format: &ResponseFormat,
        rule: &str,
        (levels, window_ms): (&[u64], u64),
        plans: &[Option<&str>],
    ) {
        let message = self.message.as_ref().unwrap_or(&format.default_message);
        self.bodies = levels
            .iter()
            .zip(plans)
            .map(|(&requests, &plan)| {
                let fixed = FixedValues {
                    status: format.status,
                    name: &self.name,
                    code: &self.code,
                    unit: &self.unit,
                    requests,
                    window_ms,
                    rule,
                    plan,
                };
                format.body.prepare(&|p| fixed.fill(p), message)
            })
            .collect();
        self.levels = levels
            .iter()
            .map(|&level| (level, Digits::of(level)))
            .collect();
    }

    /// The refusal body rendered at load for `plan`, if the limit's level is the plan's (a level
    /// a request brought is rendered with the request).
    pub fn prepared(&self, plan: usize, requests: u64) -> Option<&PreparedBody> {
        let (level, _) = self.levels.get(plan)?;
        (*level == requests).then(|| self.bodies.get(plan))?
    }

    /// `requests` as the limit header shows it: written at load for the plan's level.
    pub fn level_text(&self, plan: usize, requests: u64) -> HeaderValue {
        match self.levels.get(plan) {
            Some((level, digits)) if *level == requests => HeaderValue::from(*digits),
            _ => HeaderValue::number(requests),
        }
    }
}
