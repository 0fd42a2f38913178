//! The rate limit service's answer (a `RateLimitResponse`, protobuf, read by the filter's own
//! decoder) on any bytes: never a panic; an answer the decoder accepts re-encodes (in canonical
//! field order) to bytes it decodes to the same answer; truncating an encoded answer anywhere
//! never panics.
#![no_main]

use envoy_ratelimit_wasm::internals::{decode_response, Answer, Code, Status};
use libfuzzer_sys::fuzz_target;

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn field_varint(out: &mut Vec<u8>, field: u8, n: u64) {
    out.push(field << 3);
    varint(out, n);
}

fn field_bytes(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push(field << 3 | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn code(code: Code) -> u64 {
    match code {
        Code::Unknown => 0,
        Code::Ok => 1,
        Code::OverLimit => 2,
    }
}

fn encode_status(status: &Status) -> Vec<u8> {
    let mut out = Vec::new();
    field_varint(&mut out, 1, code(status.code));
    let mut limit = Vec::new();
    field_varint(&mut limit, 1, status.requests_per_unit as u64);
    field_bytes(&mut out, 2, &limit);
    field_varint(&mut out, 3, status.remaining as u64);
    if let Some(ms) = status.reset_ms {
        let mut duration = Vec::new();
        field_varint(&mut duration, 1, ms / 1000);
        field_varint(&mut duration, 2, (ms % 1000) * 1_000_000);
        field_bytes(&mut out, 4, &duration);
    }
    out
}

fn encode(answer: &Answer) -> Vec<u8> {
    let mut out = Vec::new();
    field_varint(&mut out, 1, code(answer.code));
    for status in &answer.statuses {
        field_bytes(&mut out, 2, &encode_status(status));
    }
    out
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(answer) = decode_response(bytes) else {
        return;
    };
    let again = encode(&answer);
    assert_eq!(
        decode_response(&again),
        Ok(answer.clone()),
        "re-encoded: {again:?}"
    );
    for cut in 0..again.len() {
        let _ = decode_response(&again[..cut]);
    }
});
