//! Envoy's rate limit service protocol (`envoy.service.ratelimit.v3.RateLimitService`), the few
//! messages the filter needs, encoded and decoded by hand (protobuf wire format): the filter
//! sends `RateLimitRequest` and reads `RateLimitResponse`'s overall code and statuses.

use crate::protobuf::{put_bytes, put_uint_always};

/// The gRPC service and method the filter calls.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub const METHOD: &str = "ShouldRateLimit";

/// One descriptor: ordered key/value entries.
pub type Descriptor = Vec<(String, String)>;

/// `RateLimitRequest { domain = 1; repeated RateLimitDescriptor descriptors = 2;
/// uint32 hits_addend = 3 }`, with `RateLimitDescriptor { repeated Entry entries = 1 }` and
/// `Entry { key = 1; value = 2 }`.
pub fn encode_request(domain: &str, descriptors: &[Descriptor], hits: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + descriptors.len() * 48);
    put_bytes(&mut out, 1, domain.as_bytes());
    let mut descriptor = Vec::new();
    let mut entry = Vec::new();
    for entries in descriptors {
        descriptor.clear();
        for (key, value) in entries {
            entry.clear();
            put_bytes(&mut entry, 1, key.as_bytes());
            put_bytes(&mut entry, 2, value.as_bytes());
            put_bytes(&mut descriptor, 1, &entry);
        }
        put_bytes(&mut out, 2, &descriptor);
    }
    put_uint_always(&mut out, 3, u64::from(hits));
    out
}

/// What the filter reads of a `RateLimitResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub code: Code,
    pub statuses: Vec<Status>,
}

/// `RateLimitResponse.Code`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Code {
    #[default]
    Unknown,
    Ok,
    OverLimit,
}

/// `DescriptorStatus`: what the service says of one descriptor (engines may leave these out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub requests_per_unit: u32,
    pub remaining: u32,
    /// `duration_until_reset`, in milliseconds.
    pub reset_ms: Option<u64>,
}

/// The response is not a `RateLimitResponse` the filter can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

pub fn decode_response(bytes: &[u8]) -> Result<Answer, Malformed> {
    let mut answer = Answer::default();
    for field in Fields(bytes) {
        match field? {
            (1, Value::Varint(code)) => answer.code = code_of(code),
            (2, Value::Bytes(status)) => answer.statuses.push(decode_status(status)?),
            _ => {}
        }
    }
    Ok(answer)
}

fn decode_status(bytes: &[u8]) -> Result<Status, Malformed> {
    let mut status = Status::default();
    for field in Fields(bytes) {
        match field? {
            (1, Value::Varint(code)) => status.code = code_of(code),
            (2, Value::Bytes(limit)) => {
                for field in Fields(limit) {
                    if let (1, Value::Varint(n)) = field? {
                        status.requests_per_unit = n as u32;
                    }
                }
            }
            (3, Value::Varint(n)) => status.remaining = n as u32,
            (4, Value::Bytes(duration)) => {
                let (mut seconds, mut nanos) = (0u64, 0u64);
                for field in Fields(duration) {
                    match field? {
                        (1, Value::Varint(s)) => seconds = s,
                        (2, Value::Varint(n)) => nanos = n,
                        _ => {}
                    }
                }
                let ms = seconds.saturating_mul(1000) + nanos.min(999_999_999).div_ceil(1_000_000);
                status.reset_ms = Some(ms);
            }
            _ => {}
        }
    }
    Ok(status)
}

fn code_of(value: u64) -> Code {
    match value {
        1 => Code::Ok,
        2 => Code::OverLimit,
        _ => Code::Unknown,
    }
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed-width field the filter does not read.
    Fixed,
}

/// The fields of one message, in order; an error ends the iteration.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let item = self.field();
        if item.is_err() {
            self.0 = &[];
        }
        Some(item)
    }
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for (i, &byte) in self.0.iter().enumerate().take(10) {
            value |= ((byte & 0x7f) as u64) << (7 * i);
            if byte < 0x80 {
                self.0 = &self.0[i + 1..];
                return Ok(value);
            }
        }
        Err(Malformed)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed);
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn field(&mut self) -> Result<(u64, Value<'a>), Malformed> {
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => self.take(8).map(|_| Value::Fixed)?,
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| Malformed)?;
                Value::Bytes(self.take(len)?)
            }
            5 => self.take(4).map(|_| Value::Fixed)?,
            _ => return Err(Malformed),
        };
        Ok((key >> 3, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_encodes_as_protobuf() {
        let descriptors = vec![vec![
            ("limit".to_string(), "api".to_string()),
            ("client".into(), "ab".into()),
        ]];
        let bytes = encode_request("d", &descriptors, 300);
        // 0a 01 'd' | 12 len( 0a len(0a 05 'limit' 12 03 'api') 0a len(0a 06 'client' 12 02 'ab') ) | 18 ac 02
        let entry1 = [&[0x0a, 0x05][..], b"limit", &[0x12, 0x03], b"api"].concat();
        let entry2 = [&[0x0a, 0x06][..], b"client", &[0x12, 0x02], b"ab"].concat();
        let descriptor = [
            &[0x0a, entry1.len() as u8][..],
            &entry1,
            &[0x0a, entry2.len() as u8],
            &entry2,
        ]
        .concat();
        let expected = [
            &[0x0a, 0x01, b'd', 0x12, descriptor.len() as u8][..],
            &descriptor,
            &[0x18, 0xac, 0x02],
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn a_response_decodes_with_unknown_fields_skipped() {
        // overall_code OVER_LIMIT; one status: code OVER_LIMIT, current_limit {requests 10,
        // unit MINUTE, name "x"}, remaining 0, duration_until_reset 41.5 s; then an unknown
        // fixed64 field and response_headers_to_add (field 3).
        let limit = [0x08, 10, 0x10, 2, 0x1a, 1, b'x'];
        let duration = [0x08, 41, 0x10, 0x80, 0xca, 0xb5, 0xee, 0x01];
        let status = [
            &[0x08, 2, 0x12, limit.len() as u8][..],
            &limit,
            &[0x18, 0, 0x22, duration.len() as u8],
            &duration,
        ]
        .concat();
        let bytes = [
            &[0x08, 2, 0x12, status.len() as u8][..],
            &status,
            &[0x21, 1, 2, 3, 4, 5, 6, 7, 8],
            &[0x1a, 2, 0x0a, 0],
        ]
        .concat();
        let answer = decode_response(&bytes).unwrap();
        assert_eq!(answer.code, Code::OverLimit);
        assert_eq!(
            answer.statuses,
            vec![Status {
                code: Code::OverLimit,
                requests_per_unit: 10,
                remaining: 0,
                reset_ms: Some(41_500),
            }]
        );
        assert_eq!(decode_response(&[0x08, 1]).unwrap().code, Code::Ok);
        assert_eq!(
            decode_response(&[]).unwrap().code,
            Code::Unknown,
            "empty: no verdict"
        );
    }

    #[test]
    fn truncated_or_odd_bytes_are_malformed_never_a_panic() {
        for bad in [
            &[0x12, 5, 1][..],
            &[0x08],
            &[0x0b],
            &[0xff; 11],
            &[0x21, 1, 2],
        ] {
            assert_eq!(decode_response(bad), Err(Malformed), "{bad:?}");
        }
        let mut rng = crate::testing::Xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let seed = rng.next();
            let len = (seed % 24) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 8 * 8)) as u8).collect();
            let _ = decode_response(&bytes);
        }
    }
}
