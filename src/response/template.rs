//! The refusal body: a JSON template compiled once, filled per request.
//!
//! Any JSON value is a template. A string that is exactly one placeholder, `"{{limit}}"`, becomes
//! the typed value (a number stays a number). A string with placeholders among text,
//! `"Retry in {{retry_after}} seconds."`, is filled as text and JSON-escaped.

use crate::decimal;
use serde_json::Value;

/// Everything a placeholder can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// Requests allowed per window of the violated limit (number).
    Limit,
    /// The window as written, e.g. `1m` (text).
    Window,
    /// What the violated limit counts: `requests`, or its `unit` (text).
    Unit,
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
    ("unit", Placeholder::Unit),
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

    /// The whole body for `values` (a refusal without a body prepared at load).
    pub fn render(&self, values: &dyn Placeholders) -> String {
        let everything = |p| Some(values.fill(p));
        let unused = TextTemplate { pieces: Vec::new() }; // `{{message}}` is filled too
        self.prepare(&everything, &unused).render(values)
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

/// A body with everything that is the same for every refusal by one limit (for one plan)
/// rendered at load, and slots for what changes from request to request (the retry time, the
/// quota left, the violated limits, the request id): a refusal only splices those in.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedBody {
    parts: Vec<Part>,
    /// Bytes of text between the slots.
    fixed_len: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    /// Filled per request: as a JSON value (`json`), or as text inside a JSON string.
    Slot {
        placeholder: Placeholder,
        json: bool,
    },
}

/// Collects literal text and slots, merging adjacent literals.
#[derive(Default)]
struct Preparing {
    parts: Vec<Part>,
    literal: String,
}

impl Preparing {
    fn slot(&mut self, placeholder: Placeholder, json: bool) {
        if !self.literal.is_empty() {
            self.parts
                .push(Part::Literal(std::mem::take(&mut self.literal)));
        }
        self.parts.push(Part::Slot { placeholder, json });
    }

    fn done(mut self) -> PreparedBody {
        if !self.literal.is_empty() {
            self.parts.push(Part::Literal(self.literal));
        }
        let fixed_len = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Literal(text) => text.len(),
                Part::Slot { .. } => 0,
            })
            .sum();
        PreparedBody {
            parts: self.parts,
            fixed_len,
        }
    }
}

/// What is known at load: `None` for a placeholder filled per request.
pub type Known<'a> = &'a dyn Fn(Placeholder) -> Option<Filled>;

impl BodyTemplate {
    /// Renders what `known` fills, leaves slots for the rest; `{{message}}`, unless known,
    /// expands `message` (its own placeholders rendered or left as slots alike).
    pub fn prepare(&self, known: Known, message: &TextTemplate) -> PreparedBody {
        let mut out = Preparing::default();
        prepare_node(&self.root, known, message, &mut out);
        out.done()
    }
}

impl PreparedBody {
    /// The body for one refusal: the fixed text with `values` spliced in.
    pub fn render(&self, values: &dyn Placeholders) -> String {
        let mut out = String::with_capacity(self.fixed_len + 64);
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Slot { placeholder, json } => {
                    let filled = values.fill(*placeholder);
                    match json {
                        true => push_json(&mut out, &filled),
                        false => push_text(&mut out, &filled),
                    }
                }
            }
        }
        out
    }
}

fn prepare_node(node: &Node, known: Known, message: &TextTemplate, out: &mut Preparing) {
    match node {
        Node::Fixed(json) => out.literal.push_str(json),
        Node::Typed(Placeholder::Message) if known(Placeholder::Message).is_none() => {
            prepare_string(&message.pieces, known, message, out)
        }
        Node::Typed(p) => match known(*p) {
            Some(filled) => push_json(&mut out.literal, &filled),
            None => out.slot(*p, true),
        },
        Node::Text(pieces) => prepare_string(pieces, known, message, out),
        Node::Array(items) => {
            out.literal.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.literal.push(',');
                }
                prepare_node(item, known, message, out);
            }
            out.literal.push(']');
        }
        Node::Object(fields) => {
            out.literal.push('{');
            for (i, (key, value)) in fields.iter().enumerate() {
                if i > 0 {
                    out.literal.push(',');
                }
                push_json(&mut out.literal, &Filled::Text(key.clone()));
                out.literal.push(':');
                prepare_node(value, known, message, out);
            }
            out.literal.push('}');
        }
    }
}

/// A JSON string of text pieces.
fn prepare_string(pieces: &[Piece], known: Known, message: &TextTemplate, out: &mut Preparing) {
    out.literal.push('"');
    prepare_pieces(pieces, known, message, out);
    out.literal.push('"');
}

fn prepare_pieces(pieces: &[Piece], known: Known, message: &TextTemplate, out: &mut Preparing) {
    for piece in pieces {
        match piece {
            Piece::Literal(text) => escape_into(&mut out.literal, text),
            // A message cannot name itself (refused at load), so this ends.
            Piece::Slot(Placeholder::Message) if known(Placeholder::Message).is_none() => {
                prepare_pieces(&message.pieces, known, message, out)
            }
            Piece::Slot(p) => match known(*p) {
                Some(filled) => push_text(&mut out.literal, &filled),
                None => out.slot(*p, false),
            },
        }
    }
}

/// A filled placeholder as a JSON value.
fn push_json(out: &mut String, filled: &Filled) {
    match filled {
        Filled::Number(n) => push_number(out, *n),
        Filled::Text(text) => {
            out.push('"');
            escape_into(out, text);
            out.push('"');
        }
        Filled::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json(out, &Filled::Text(item.clone()));
            }
            out.push(']');
        }
        Filled::Null => out.push_str("null"),
    }
}

/// A filled placeholder as text inside a JSON string (escaped).
fn push_text(out: &mut String, filled: &Filled) {
    match filled {
        Filled::Number(n) => push_number(out, *n),
        Filled::Text(text) => escape_into(out, text),
        Filled::List(items) => escape_into(out, &items.join(", ")),
        Filled::Null => {}
    }
}

fn push_number(out: &mut String, n: u64) {
    let mut digits = [0; decimal::MAX_DIGITS];
    let len = decimal::write(n, &mut digits);
    // ASCII digits: always UTF-8.
    out.push_str(std::str::from_utf8(&digits[..len]).unwrap_or_default());
}

/// JSON string escaping, byte for byte as serde_json writes it.
fn escape_into(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, byte) in text.bytes().enumerate() {
        let escaped = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[start..i]);
        if escaped.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[(byte >> 4) as usize] as char);
            out.push(HEX[(byte & 0xf) as usize] as char);
        } else {
            out.push_str(escaped);
        }
        start = i + 1;
    }
    out.push_str(&text[start..]);
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

    /// Fills every placeholder, as a refusal does; the message expands its own template.
    struct Request<'a> {
        message: &'a TextTemplate,
        odd: &'a str,
        request_id: Option<&'a str>,
    }
    impl Placeholders for Request<'_> {
        fn fill(&self, p: Placeholder) -> Filled {
            match p {
                Placeholder::Limit | Placeholder::Status => Filled::Number(429),
                Placeholder::RetryAfter => Filled::Number(7),
                Placeholder::Remaining => Filled::Number(0),
                Placeholder::Reset => Filled::Number(1_700_000_061),
                Placeholder::WindowSeconds => Filled::Number(60),
                Placeholder::Message => Filled::Text(self.message.render(self)),
                Placeholder::ViolatedPolicies => {
                    Filled::List(vec!["per \"min\"".into(), self.odd.into()])
                }
                Placeholder::RequestId => self
                    .request_id
                    .map_or(Filled::Null, |id| Filled::Text(id.into())),
                Placeholder::Plan => Filled::Null,
                _ => Filled::Text(self.odd.into()),
            }
        }
    }

    #[test]
    fn a_body_rendered_at_load_splices_in_exactly_what_a_full_render_gives() {
        let message = TextTemplate::compile(
            "{{limit}} per {{window}} ({{policy}}, {{code}}): retry in {{retry_after}} s at {{reset_iso}}, id {{request_id}}, {{violated_policies}}",
            &[Placeholder::Message],
        )
        .unwrap();
        let every: Vec<String> = NAMES.iter().map(|(n, _)| format!("{{{{{n}}}}}")).collect();
        let mut fields = serde_json::Map::new();
        for (n, _) in NAMES {
            fields.insert(format!("{n}\u{1}\"k"), json!(format!("{{{{{n}}}}}")));
            fields.insert(format!("in_{n}"), json!(format!("<{{{{{n}}}}}> \t")));
        }
        fields.insert("all".into(), json!(every.join("|")));
        fields.insert(
            "nested".into(),
            json!([{"a": "{{message}}"}, 1.5, null, "\u{7f}é\u{0}"]),
        );
        let template = BodyTemplate::compile(&serde_json::Value::Object(fields)).unwrap();
        let odd_texts = [
            "plain",
            "quote \" back \\ slash",
            "ctl \u{1}\u{8}\u{c}\n\r\t\u{1f} end",
            "ünï \u{2028}",
        ];
        for odd in odd_texts {
            let mut escaped = String::from('"');
            escape_into(&mut escaped, odd);
            escaped.push('"');
            assert_eq!(
                escaped,
                serde_json::to_string(odd).unwrap(),
                "as serde_json escapes"
            );
            for request_id in [None, Some("id-\"1\"\n")] {
                let values = Request {
                    message: &message,
                    odd,
                    request_id,
                };
                // At load, only what every refusal by the limit shares is known.
                let per_request = [
                    Placeholder::Remaining,
                    Placeholder::RetryAfter,
                    Placeholder::Reset,
                    Placeholder::ResetIso,
                    Placeholder::RequestId,
                    Placeholder::ViolatedPolicies,
                ];
                let known = |p| (!per_request.contains(&p)).then(|| values.fill(p));
                let prepared = template.prepare(&known, &message);
                let full = template.render(&values);
                assert_eq!(prepared.render(&values), full);
                serde_json::from_str::<serde_json::Value>(&full).unwrap();
            }
        }
    }
}
