//! Decimal digits of a whole number appended to a string, without the formatting machinery: the
//! request path writes a few per request (page keys, header values, refusal bodies).

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits only.
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

/// `n` in decimal.
pub fn decimal(n: u64) -> String {
    let mut out = String::with_capacity(20);
    push_decimal(&mut out, n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_the_formatter_writes_it() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            4_000_000_000,
            1_700_000_000_061,
            u64::MAX,
        ] {
            assert_eq!(decimal(n), n.to_string());
        }
        let mut out = String::from("page/");
        push_decimal(&mut out, 407);
        assert_eq!(out, "page/407");
    }
}
