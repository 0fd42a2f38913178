//! Whole numbers as decimal text, written per request straight into a buffer on the stack (page
//! keys, header values): no `core::fmt` machinery (padding, flags, a call per piece), which costs
//! more than the digits themselves, and no copy of the digits afterwards (in V8 a copy of a
//! length known only at run time is a call out of the VM).

/// The longest `u64` in decimal.
pub const MAX_DIGITS: usize = 20;

/// How many digits `n` has.
pub fn len(n: u64) -> usize {
    let (mut len, mut bound) = (1, 10u64);
    while len < MAX_DIGITS && n >= bound {
        len += 1;
        bound = bound.wrapping_mul(10);
    }
    len
}

/// Writes `n` at the start of `out`, which must hold [`len`]`(n)` bytes; returns that length.
pub fn write(n: u64, out: &mut [u8]) -> usize {
    let len = len(n);
    let mut rest = n;
    for digit in out[..len].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_read_as_display_writes_them() {
        let mut powers: Vec<u64> = (0..20).map(|e| 10u64.pow(e)).collect();
        powers.extend(powers.clone().iter().map(|p| p - 1));
        for n in powers
            .into_iter()
            .chain([4_000_000_000, u64::MAX - 1, u64::MAX])
        {
            let mut out = [b'x'; MAX_DIGITS + 1];
            let written = write(n, &mut out);
            assert_eq!(&out[..written], n.to_string().as_bytes());
            assert_eq!((written, out[written]), (len(n), b'x'), "{n}");
        }
    }
}
