//! Percent-decoding, the one implementation: for paths (repeatedly, see `route`) and for query
//! parameters (once, `+` as a space).

use std::borrow::Cow;

/// Decodes `%XX` escapes once (and `+` as a space when `plus_as_space`); malformed escapes stay
/// as they are.
pub fn decode(input: &[u8], plus_as_space: bool) -> Cow<'_, [u8]> {
    if !(input.contains(&b'%') || plus_as_space && input.contains(&b'+')) {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' if plus_as_space => out.push(b' '),
            b'%' if i + 2 < input.len() => match (hex(input[i + 1]), hex(input[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_leaves_malformed_ones() {
        assert_eq!(decode(b"a%2Fb", false).as_ref(), b"a/b");
        assert_eq!(decode(b"a+b%2B", true).as_ref(), b"a b+");
        assert_eq!(decode(b"a+b", false).as_ref(), b"a+b");
        assert_eq!(decode(b"%", false).as_ref(), b"%");
        assert_eq!(decode(b"%4", false).as_ref(), b"%4");
        assert_eq!(decode(b"%zz", false).as_ref(), b"%zz");
        assert_eq!(decode(b"%252F", false).as_ref(), b"%2F", "one pass only");
        assert!(matches!(decode(b"/plain", true), Cow::Borrowed(_)));
    }
}
