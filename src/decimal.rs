//! Whole numbers as decimal text, written per request straight into a buffer on the stack (page
//! keys, header values): no `core::fmt` machinery (padding, flags, a call per piece), which costs
//! more than the digits themselves, and no copy of the digits afterwards (in V8 a copy of a
//! length known only at run time is a call out of the VM).

/// The longest `u64` in decimal.
pub const MAX_DIGITS: usize = 20;

/// 10, 100, … 10^19: a number has one digit more than the powers it reaches.
const POWERS: [u64; MAX_DIGITS - 1] = {
    let mut powers = [10; MAX_DIGITS - 1];
    let mut i = 1;
    while i < powers.len() {
        powers[i] = powers[i - 1] * 10;
        i += 1;
    }
    powers
};

/// "00" to "99", for two digits per division.
const PAIRS: [u8; 200] = {
    let mut pairs = [0; 200];
    let mut i = 0;
    while i < 100 {
        pairs[2 * i] = b'0' + (i / 10) as u8;
        pairs[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    pairs
};

/// How many digits `n` has.
pub fn len(n: u64) -> usize {
    1 + POWERS.partition_point(|&p| p <= n)
}

/// Writes `n` at the start of `out`, which must hold [`len`]`(n)` bytes; returns that length.
pub fn write(n: u64, out: &mut [u8]) -> usize {
    let len = len(n);
    let mut end = len;
    let mut rest = n;
    while rest >= 100 {
        let pair = (rest % 100) as usize * 2;
        rest /= 100;
        end -= 2;
        out[end..end + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if rest >= 10 {
        let pair = rest as usize * 2;
        out[..2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        out[0] = b'0' + rest as u8;
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
