//! The protobuf wire format's writing side, by hand (no code generation, no runtime): the few
//! calls the filter's messages need — the rate limit service's request (`fleet::protocol`) and a
//! gRPC refusal's `google.rpc.Status` (`response::grpc`).

const VARINT: u8 = 0;
const LEN: u8 = 2;

fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A length-delimited field: a string, bytes or an embedded message.
pub fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A varint field (`uint32`, `uint64`, and `int32`/`int64` from 0 up), left out when 0 as
/// proto3 does for a field at its default.
pub fn put_uint(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        put_key(out, field, VARINT);
        put_varint(out, value);
    }
}

/// A varint field written even when 0 (a proto3 `optional` field that is set).
pub fn put_uint_always(out: &mut Vec<u8>, field: u32, value: u64) {
    put_key(out, field, VARINT);
    put_varint(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_length_delimited_fields() {
        let mut out = Vec::new();
        put_uint(&mut out, 1, 300);
        put_uint(&mut out, 2, 0);
        put_bytes(&mut out, 3, b"ab");
        put_uint_always(&mut out, 16, 0);
        // 300 = 0b1_0010_1100: 0xac 0x02; field 16 needs a two-byte key (0x80 0x01).
        assert_eq!(out, [0x08, 0xac, 0x02, 0x1a, 2, b'a', b'b', 0x80, 0x01, 0]);
    }
}
