//! A refusal as a gRPC client reads it: a trailers-only answer (HTTP 200, no body) whose
//! `grpc-status`, `grpc-message` and `grpc-status-details-bin` say what happened, with the
//! rate-limit headers as metadata.
//!
//! `grpc-status-details-bin` carries a `google.rpc.Status` with a `RetryInfo` (the wait
//! `Retry-After` gives) and, for a refusal by the client's own limits, a `QuotaFailure` naming
//! each limit it is over — encoded here with the crate's protobuf writer:
//!
//! ```text
//! Status       { int32 code = 1; string message = 2; repeated Any details = 3; }
//! Any          { string type_url = 1; bytes value = 2; }
//! RetryInfo    { Duration retry_delay = 1; }          Duration { int64 seconds = 1; }
//! QuotaFailure { repeated Violation violations = 1; }
//! Violation    { string subject = 1; string description = 2; string quota_id = 5;
//!                int64 quota_value = 7; }
//! ```

use super::value::{HeaderName, HeaderValue, Headers};
use crate::protobuf::{put_bytes, put_uint};

/// gRPC's `UNAVAILABLE`: the rate limiter or its service could not decide.
pub const UNAVAILABLE: u32 = 14;
/// gRPC's `UNAUTHENTICATED`: the request has no client key.
pub const UNAUTHENTICATED: u32 = 16;
/// gRPC's `INVALID_ARGUMENT`: the client key was given several times with different values.
pub const INVALID_ARGUMENT: u32 = 3;

const RETRY_INFO: &str = "type.googleapis.com/google.rpc.RetryInfo";
const QUOTA_FAILURE: &str = "type.googleapis.com/google.rpc.QuotaFailure";

/// Whether a request's content type is gRPC's (`application/grpc`, `application/grpc+proto`,
/// `application/grpc-web`, `application/grpc-web-text+proto`, ...; parameters allowed).
pub fn is_grpc(content_type: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    if content_type.len() < GRPC.len() || !content_type[..GRPC.len()].eq_ignore_ascii_case(GRPC) {
        return false;
    }
    let rest = &content_type[GRPC.len()..];
    let web = b"-web";
    let rest = match rest.get(..web.len()) {
        Some(prefix) if prefix.eq_ignore_ascii_case(web) => &rest[web.len()..],
        _ => rest,
    };
    let rest = rest.strip_prefix(b"-text").unwrap_or(rest);
    matches!(rest.first(), None | Some(b'+' | b';' | b' '))
}

/// One limit the request is over, as `QuotaFailure` names it.
pub struct Violation<'a> {
    /// `rule:<the rule's name>`.
    pub subject: String,
    /// E.g. `3 requests per 10s`.
    pub description: String,
    /// The limit's `code`.
    pub quota_id: &'a str,
    /// The limit's level.
    pub quota_value: u64,
}

/// What a gRPC answer says.
pub struct GrpcStatus<'a> {
    pub code: u32,
    pub message: &'a str,
    /// Seconds to wait before a retry (`RetryInfo`), when there is one to give.
    pub retry_delay: Option<u64>,
    pub violations: Vec<Violation<'a>>,
}

impl GrpcStatus<'_> {
    /// The serialized `google.rpc.Status`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.message.len());
        put_uint(&mut out, 1, u64::from(self.code));
        if !self.message.is_empty() {
            put_bytes(&mut out, 2, self.message.as_bytes());
        }
        let mut message = Vec::new();
        if let Some(seconds) = self.retry_delay {
            let mut duration = Vec::new();
            put_uint(&mut duration, 1, seconds);
            put_bytes(&mut message, 1, &duration);
            put_any(&mut out, RETRY_INFO, &message);
        }
        if !self.violations.is_empty() {
            message.clear();
            let mut violation = Vec::new();
            for v in &self.violations {
                violation.clear();
                put_bytes(&mut violation, 1, v.subject.as_bytes());
                put_bytes(&mut violation, 2, v.description.as_bytes());
                put_bytes(&mut violation, 5, v.quota_id.as_bytes());
                put_uint(&mut violation, 7, v.quota_value);
                put_bytes(&mut message, 1, &violation);
            }
            put_any(&mut out, QUOTA_FAILURE, &message);
        }
        out
    }

    /// The trailers-only answer: `headers` (the rate-limit headers, as metadata) and the status.
    pub fn trailers_only(&self, mut headers: Headers) -> (u32, Headers) {
        let mut put = |name: &str, value: String| {
            headers.push((HeaderName::from(name), HeaderValue::from(value.as_str())));
        };
        put("content-type", "application/grpc".into());
        put("grpc-status", self.code.to_string());
        put("grpc-message", percent_encode(self.message));
        put("grpc-status-details-bin", base64(&self.encode()));
        (200, headers)
    }
}

/// `Any { type_url = 1; value = 2 }` as field 3 of `Status`.
fn put_any(out: &mut Vec<u8>, type_url: &str, value: &[u8]) {
    let mut any = Vec::with_capacity(type_url.len() + value.len() + 4);
    put_bytes(&mut any, 1, type_url.as_bytes());
    put_bytes(&mut any, 2, value);
    put_bytes(out, 3, &any);
}

/// `grpc-message` as gRPC's HTTP/2 protocol has it: bytes outside printable ASCII, and `%`,
/// as `%XX`.
pub fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Base64 with the standard alphabet, unpadded, as gRPC sends a `-bin` header.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_answer_is_its_grpc_code() {
        use crate::config::GrpcAnswer;
        for (code, (_, answer)) in GrpcAnswer::NAMES.iter().enumerate() {
            assert_eq!(answer.code(), (code > 0).then_some(code as u32));
        }
        assert_eq!(GrpcAnswer::ResourceExhausted.code(), Some(8));
        assert_eq!(GrpcAnswer::Unavailable.code(), Some(UNAVAILABLE));
        assert_eq!(GrpcAnswer::Unauthenticated.code(), Some(UNAUTHENTICATED));
    }

    #[test]
    fn grpc_content_types() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC+json",
            "application/grpc; charset=utf-8",
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "application/grpc-web-text+proto",
        ] {
            assert!(is_grpc(yes.as_bytes()), "{yes}");
        }
        for no in [
            "application/json",
            "application/grpcx",
            "application/grpc-webx",
            "text/application/grpc",
            "",
        ] {
            assert!(!is_grpc(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn base64_is_unpadded_standard() {
        let cases: [(&[u8], &str); 6] = [
            (b"", ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg"),
            (&[0xfb, 0xff, 0xfe], "+//+"),
        ];
        for (bytes, text) in cases {
            assert_eq!(base64(bytes), text);
        }
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(
            percent_encode("Retry in 7 s: 100% \u{e9}t\u{e9}\n"),
            "Retry in 7 s: 100%25 %C3%A9t%C3%A9%0A"
        );
    }

    /// The bytes Python's `google.rpc.status_pb2` (googleapis-common-protos 1.76.0) serializes
    /// for the same message: `Status(code=8, message="m", details=[Any.Pack(RetryInfo(
    /// retry_delay=Duration(seconds=7))), Any.Pack(QuotaFailure(violations=[Violation(
    /// subject="rule:r", description="3 requests per 10s", quota_id="q", quota_value=3)]))])`.
    /// tests/e2e/test_grpc.py checks every answer of a real Envoy the same way.
    #[test]
    fn status_bytes_match_the_reference_encoding() {
        let status = GrpcStatus {
            code: 8,
            message: "m",
            retry_delay: Some(7),
            violations: vec![Violation {
                subject: "rule:r".into(),
                description: "3 requests per 10s".into(),
                quota_id: "q",
                quota_value: 3,
            }],
        };
        let expected = include_str!("grpc_status_golden.hex");
        let hex: String = status.encode().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected.trim());
    }

    #[test]
    fn trailers_only_answer() {
        let status = GrpcStatus {
            code: UNAUTHENTICATED,
            message: "no key",
            retry_delay: None,
            violations: Vec::new(),
        };
        let (code, headers) = status.trailers_only(Headers::new());
        assert_eq!(code, 200);
        let names: Vec<_> = headers.iter().map(|(k, v)| (&**k, v.as_str())).collect();
        assert_eq!(
            names,
            [
                ("content-type", "application/grpc"),
                ("grpc-status", "16"),
                ("grpc-message", "no key"),
                // 08 10 12 06 "no key"
                ("grpc-status-details-bin", "CBASBm5vIGtleQ"),
            ]
        );
    }
}
