//! The messages of Envoy's rate limit service v3, written by hand with prost's derive.
//!
//! Field numbers are those of `api/envoy/service/ratelimit/v3/rls.proto`,
//! `api/envoy/extensions/common/ratelimit/v3/ratelimit.proto` and
//! `api/envoy/config/core/v3/base.proto` (HeaderValue). Only the fields this server reads or
//! writes are declared: prost skips unknown fields when decoding (a descriptor's `limit`
//! override and `hits_addend`, which limitador-server ignores too), and fields never written
//! are simply absent from the encoding, as they would be when left at their defaults.

/// `envoy.service.ratelimit.v3.RateLimitRequest`
#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitRequest {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(message, repeated, tag = "2")]
    pub descriptors: Vec<RateLimitDescriptor>,
    #[prost(uint32, tag = "3")]
    pub hits_addend: u32,
}

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor`
#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitDescriptor {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<Entry>,
}

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.Entry`
#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `envoy.service.ratelimit.v3.RateLimitResponse.Code`
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum Code {
    Unknown = 0,
    Ok = 1,
    OverLimit = 2,
}

/// `envoy.service.ratelimit.v3.RateLimitResponse` (statuses, raw_body, dynamic_metadata and
/// quota are never set by this server, as by limitador-server).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitResponse {
    #[prost(enumeration = "Code", tag = "1")]
    pub overall_code: i32,
    #[prost(message, repeated, tag = "3")]
    pub response_headers_to_add: Vec<HeaderValue>,
    #[prost(message, repeated, tag = "4")]
    pub request_headers_to_add: Vec<HeaderValue>,
}

/// `envoy.config.core.v3.HeaderValue`
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// The generated service routing (build.rs).
pub mod service {
    include!(concat!(
        env!("OUT_DIR"),
        "/envoy.service.ratelimit.v3.RateLimitService.rs"
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    // Bytes as any protobuf encoder writes them (fields in tag order), checked by hand against
    // the field numbers: domain "d" (1), one descriptor (2) with entry {k: v} (1 → 1, 2), hits 5 (3).
    #[test]
    fn decodes_a_request_encoded_elsewhere() {
        let bytes = [
            0x0a, 0x01, b'd', // domain = "d"
            0x12, 0x08, // descriptors[0], 8 bytes
            0x0a, 0x06, // entries[0], 6 bytes
            0x0a, 0x01, b'k', 0x12, 0x01, b'v', // key = "k", value = "v"
            0x18, 0x05, // hits_addend = 5
        ];
        let req = RateLimitRequest::decode(&bytes[..]).unwrap();
        assert_eq!(req.domain, "d");
        assert_eq!(req.hits_addend, 5);
        assert_eq!(req.descriptors.len(), 1);
        assert_eq!(req.descriptors[0].entries[0].key, "k");
        assert_eq!(req.descriptors[0].entries[0].value, "v");
    }

    #[test]
    fn skips_fields_it_does_not_declare() {
        // descriptor with a `limit` override (2) and `hits_addend` (3): both skipped
        let bytes = [
            0x0a, 0x01, b'd', 0x12, 0x0e, 0x0a, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v', 0x12,
            0x02, 0x08, 0x07, 0x1a, 0x00,
        ];
        let req = RateLimitRequest::decode(&bytes[..]).unwrap();
        assert_eq!(req.descriptors[0].entries.len(), 1);
        assert_eq!(req.hits_addend, 0);
    }

    #[test]
    fn encodes_over_limit_and_headers() {
        let resp = RateLimitResponse {
            overall_code: Code::OverLimit as i32,
            response_headers_to_add: vec![HeaderValue {
                key: "a".into(),
                value: "b".into(),
            }],
            request_headers_to_add: vec![],
        };
        assert_eq!(
            resp.encode_to_vec(),
            [0x08, 0x02, 0x1a, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'b']
        );
    }
}
