//! Whole numbers as decimal text, written per request into a buffer on the stack (page keys,
//! header values): no `core::fmt` machinery (padding, flags, a call per piece), which costs
//! more than the digits themselves.

/// The longest `u64` in decimal.
pub const MAX_DIGITS: usize = 20;

/// Writes `n` at the end of `buffer`; returns the digits.
pub fn digits(n: u64, buffer: &mut [u8; MAX_DIGITS]) -> &[u8] {
    let mut start = buffer.len();
    let mut rest = n;
    loop {
        start -= 1;
        buffer[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    &buffer[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_read_as_display_writes_them() {
        let mut buffer = [0; MAX_DIGITS];
        for n in [0, 1, 9, 10, 99, 100, 4_000_000_000, u64::MAX - 1, u64::MAX] {
            assert_eq!(digits(n, &mut buffer), n.to_string().as_bytes());
        }
    }
}
