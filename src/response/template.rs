//! The refusal body: a JSON template compiled once, filled per request.
//!
//! Any JSON value is a template. A string that is exactly one placeholder, `"{{limit}}"`, becomes
//! the typed value (a number stays a number). A string with placeholders among text,
//! `"Retry in {{retry_after}} seconds."`, is filled as text and JSON-escaped.

use serde_json::Value;

/// Everything a placeholder can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// Requests allowed per window of the violated limit (number).
    Limit,
    /// The window as written, e.g. `1m` (text).
    Window,
    /// The window in seconds (number).
    WindowSeconds,
    /// Quota left (number, 0 on a refusal).
    Remaining,
    /// Whole seconds until a retry is admitted (number).
    RetryAfter,
    /// When a retry is admitted, Unix epoch seconds (number).
    Reset,
    /// When a retry is admitted, ISO-8601 UTC with milliseconds (text).
    ResetIso,
    /// The violated limit's name (text).
    Policy,
    /// The rule's name (text).
    Rule,
    /// The request's `x-request-id` (text, or null when absent).
    RequestId,
    /// The response status (number).
    Status,
    /// The violated limit's error code (text; its name when it has no `code`).
    Code,
    /// The violated limit's message (text; itself filled).
    Message,
    /// The client's plan (text, or null without plans).
    Plan,
    /// The names of every violated limit (array of text).
    ViolatedPolicies,
}

const NAMES: &[(&str, Placeholder)] = &[
    ("limit", Placeholder::Limit),
    ("window", Placeholder::Window),
    ("window_seconds", Placeholder::WindowSeconds),
    ("remaining", Placeholder::Remaining),
    ("retry_after", Placeholder::RetryAfter),
    ("reset", Placeholder::Reset),
    ("reset_iso", Placeholder::ResetIso),
    ("policy", Placeholder::Policy),
    ("rule", Placeholder::Rule),
    ("request_id", Placeholder::RequestId),
    ("status", Placeholder::Status),
    ("code", Placeholder::Code),
    ("message", Placeholder::Message),
    ("plan", Placeholder::Plan),
    ("violated_policies", Placeholder::ViolatedPolicies),
];

/// A filled placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Filled {
    Number(u64),
    Text(String),
    List(Vec<String>),
    Null,
}

/// What the renderer asks of the request being refused.
pub trait Placeholders {
    fn fill(&self, placeholder: Placeholder) -> Filled;
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// A value without placeholders, pre-serialised.
    Fixed(String),
    Typed(Placeholder),
    Text(Vec<Piece>),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Literal(String),
    Slot(Placeholder),
}

#[derive(Debug, Clone, PartialEq)]
pub struct BodyTemplate {
    root: Node,
    uses_request_id: bool,
}

/// A template error: the JSON path inside the template and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub path: String,
    pub message: String,
}

/// A text with placeholders, filled as text (limit messages).
#[derive(Debug, Clone, PartialEq)]
pub struct TextTemplate {
    pieces: Vec<Piece>,
}

impl TextTemplate {
    /// `forbidden` placeholders (e.g. `message` inside a message) are an error.
    pub fn compile(text: &str, forbidden: &[Placeholder]) -> Result<Self, String> {
        let pieces = parse_pieces(text)?;
        for piece in &pieces {
            if let Piece::Slot(p) = piece {
                if forbidden.contains(p) {
                    return Err(format!("{text:?} may not use {{{{{}}}}} here", name_of(*p)));
                }
            }
        }
        Ok(TextTemplate { pieces })
    }

    pub fn render(&self, values: &dyn Placeholders) -> String {
        fill_text(&self.pieces, values)
    }
}

fn name_of(placeholder: Placeholder) -> &'static str {
    NAMES
        .iter()
        .find(|(_, p)| *p == placeholder)
        .map(|(n, _)| *n)
        .unwrap_or("?")
}

fn fill_text(pieces: &[Piece], values: &dyn Placeholders) -> String {
    let mut text = String::new();
    for piece in pieces {
        match piece {
            Piece::Literal(l) => text.push_str(l),
            Piece::Slot(p) => match values.fill(*p) {
                Filled::Number(n) => text.push_str(&n.to_string()),
                Filled::Text(t) => text.push_str(&t),
                Filled::List(items) => text.push_str(&items.join(", ")),
                Filled::Null => {}
            },
        }
    }
    text
}

impl BodyTemplate {
    pub fn compile(template: &Value) -> Result<Self, TemplateError> {
        let mut uses_request_id = false;
        let root = compile_node(template, "", &mut uses_request_id)?;
        Ok(BodyTemplate {
            root,
            uses_request_id,
        })
    }

    /// Whether rendering needs the request id (so the host reads it only then).
    pub fn uses_request_id(&self) -> bool {
        self.uses_request_id
    }

    pub fn render(&self, values: &dyn Placeholders) -> String {
        let mut out = String::with_capacity(256);
        render_node(&self.root, values, &mut out);
        out
    }
}

fn compile_node(
    value: &Value,
    path: &str,
    uses_request_id: &mut bool,
) -> Result<Node, TemplateError> {
    Ok(match value {
        Value::String(text) => {
            let pieces = parse_pieces(text).map_err(|message| TemplateError {
                path: path.to_string(),
                message,
            })?;
            for piece in &pieces {
                if let Piece::Slot(Placeholder::RequestId) = piece {
                    *uses_request_id = true;
                }
            }
            match pieces.as_slice() {
                [] => Node::Fixed(Value::String(String::new()).to_string()),
                [Piece::Slot(p)] => Node::Typed(*p),
                [Piece::Literal(text)] => Node::Fixed(Value::String(text.clone()).to_string()),
                _ => Node::Text(pieces),
            }
        }
        Value::Array(items) => Node::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| compile_node(item, &format!("{path}[{i}]"), uses_request_id))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(fields) => Node::Object(
            fields
                .iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        compile_node(v, &format!("{path}.{k}"), uses_request_id)?,
                    ))
                })
                .collect::<Result<_, _>>()?,
        ),
        other => Node::Fixed(other.to_string()),
    })
}

fn parse_pieces(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            pieces.push(Piece::Literal(rest[..open].to_string()));
        }
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| format!("unclosed placeholder in {text:?}"))?;
        let name = after[..close].trim();
        let placeholder = NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
            .ok_or_else(|| {
                let known: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown placeholder {{{{{name}}}}}; known: {}",
                    known.join(", ")
                )
            })?;
        pieces.push(Piece::Slot(placeholder));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest.to_string()));
    }
    Ok(pieces)
}

fn render_node(node: &Node, values: &dyn Placeholders, out: &mut String) {
    match node {
        Node::Fixed(json) => out.push_str(json),
        Node::Typed(p) => match values.fill(*p) {
            Filled::Number(n) => out.push_str(&n.to_string()),
            Filled::Text(t) => out.push_str(&Value::String(t).to_string()),
            Filled::List(items) => out.push_str(&Value::from(items).to_string()),
            Filled::Null => out.push_str("null"),
        },
        Node::Text(pieces) => out.push_str(&Value::String(fill_text(pieces, values)).to_string()),
        Node::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render_node(item, values, out);
            }
            out.push(']');
        }
        Node::Object(fields) => {
            out.push('{');
            for (i, (key, value)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                render_node(value, values, out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fixed;
    impl Placeholders for Fixed {
        fn fill(&self, p: Placeholder) -> Filled {
            match p {
                Placeholder::Limit => Filled::Number(100),
                Placeholder::RetryAfter => Filled::Number(42),
                Placeholder::Policy => Filled::Text("per \"minute\"\n".into()),
                Placeholder::RequestId => Filled::Null,
                _ => Filled::Text("x".into()),
            }
        }
    }

    #[test]
    fn typed_placeholders_keep_their_type_and_text_is_escaped() {
        let t = BodyTemplate::compile(&json!({
            "error": "Too Many Requests",
            "message": "Rate limit exceeded. Try again in {{retry_after}} seconds.",
            "statusCode": 429,
            "retryAfter": "{{ retry_after }}",
            "limit": "{{limit}}",
            "policy": "{{policy}}",
            "id": "{{request_id}}",
            "nested": [{"a": "{{limit}}/{{policy}}"}, true, null, 1.5]
        }))
        .unwrap();
        assert!(t.uses_request_id());
        let body: Value = serde_json::from_str(&t.render(&Fixed)).unwrap();
        assert_eq!(
            body,
            json!({
                "error": "Too Many Requests",
                "message": "Rate limit exceeded. Try again in 42 seconds.",
                "statusCode": 429,
                "retryAfter": 42,
                "limit": 100,
                "policy": "per \"minute\"\n",
                "id": null,
                "nested": [{"a": "100/per \"minute\"\n"}, true, null, 1.5]
            })
        );
    }

    #[test]
    fn keys_keep_their_order() {
        let t = BodyTemplate::compile(&json!({"ok": false, "code": "c", "message": "m"})).unwrap();
        assert!(!t.uses_request_id());
        assert_eq!(t.render(&Fixed), r#"{"ok":false,"code":"c","message":"m"}"#);
    }

    #[test]
    fn bad_placeholders_name_their_place() {
        let err = BodyTemplate::compile(&json!({"a": [1, {"b": "{{retry_afterr}}"}]})).unwrap_err();
        assert_eq!(err.path, ".a[1].b");
        assert!(
            err.message.contains("unknown placeholder {{retry_afterr}}"),
            "{}",
            err.message
        );
        let err = BodyTemplate::compile(&json!("{{limit")).unwrap_err();
        assert!(err.message.contains("unclosed"));
    }
}
