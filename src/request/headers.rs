//! All of a request's headers read at once, in the serialized form proxy-wasm's
//! `proxy_get_header_map_pairs` hands them (one host call, where each single header read is one
//! call out of the VM and one back in to allocate its value): a count, each pair's key and value
//! lengths, then each key and value followed by a 0 byte, integers 32-bit little-endian. Read in
//! place; bytes that are not such a map (too short, lengths past the end) find no header.

/// A request's headers in proxy-wasm's serialized pairs form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMap {
    bytes: Vec<u8>,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(raw)).ok()
}

impl HeaderMap {
    pub fn new(bytes: Vec<u8>) -> Self {
        HeaderMap { bytes }
    }

    /// Every (name, value) pair in the order the host gave them; stops at the first pair that
    /// does not fit in the bytes.
    pub fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let bytes = &self.bytes[..];
        let count = u32_at(bytes, 0).unwrap_or(0);
        // The data starts after the count and the lengths (8 bytes a pair).
        let start = count
            .checked_mul(8)
            .and_then(|n| n.checked_add(4))
            .filter(|&start| start <= bytes.len());
        let mut data = start.unwrap_or(bytes.len());
        let count = if start.is_some() { count } else { 0 };
        (0..count).map_while(move |i| {
            let key_len = u32_at(bytes, 4 + 8 * i)?;
            let value_len = u32_at(bytes, 8 + 8 * i)?;
            let key_end = data.checked_add(key_len)?;
            let value_start = key_end.checked_add(1)?;
            let value_end = value_start.checked_add(value_len)?;
            let key = bytes.get(data..key_end)?;
            let value = bytes.get(value_start..value_end)?;
            data = value_end.checked_add(1)?;
            Some((key, value))
        })
    }

    /// The first value of header `name` (lower case, as Envoy keeps names), as a single header
    /// read gives it.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.values(name).next()
    }

    /// Every value of header `name`, in the host's order.
    pub fn values<'a: 'n, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + 'n {
        self.pairs()
            .filter(move |(key, _)| *key == name.as_bytes())
            .map(|(_, value)| value)
    }
}

/// The serialized form of `pairs`, as a host writes it (tests and fakes).
#[cfg(any(test, feature = "internals"))]
pub fn serialize(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (key, value) in pairs {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (key, value) in pairs {
        out.extend_from_slice(key.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_found_where_the_host_wrote_them() {
        let bytes = serialize(&[
            (":path", b"/api/x"),
            ("x-api-key", b"a"),
            ("x-api-key", b"b"),
            ("empty", b""),
        ]);
        let map = HeaderMap::new(bytes);
        assert_eq!(map.get(":path"), Some(&b"/api/x"[..]));
        assert_eq!(
            map.get("x-api-key"),
            Some(&b"a"[..]),
            "the first, as a single read"
        );
        assert_eq!(map.get("empty"), Some(&b""[..]));
        let keys: Vec<_> = map.values("x-api-key").collect();
        assert_eq!(keys, [&b"a"[..], &b"b"[..]], "every line, in order");
        assert_eq!(map.get("absent"), None);
        assert_eq!(map.pairs().count(), 4);
    }

    #[test]
    fn odd_bytes_find_nothing_and_never_panic() {
        let good = serialize(&[("a", b"1"), ("b", b"2")]);
        for cut in 0..good.len() {
            let map = HeaderMap::new(good[..cut].to_vec());
            assert!(map.pairs().count() <= 2);
            let _ = map.get("b");
        }
        let huge_count = [0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0];
        assert_eq!(HeaderMap::new(huge_count.to_vec()).pairs().count(), 0);
        let huge_length = [1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, b'a', 0, 0];
        assert_eq!(HeaderMap::new(huge_length.to_vec()).get("a"), None);
        assert_eq!(HeaderMap::new(Vec::new()).get("a"), None);
    }
}
