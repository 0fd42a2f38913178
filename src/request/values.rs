//! Values read out of a request for keys and costs: usable (trimmed, bounded), a bearer token, a
//! query parameter.

use super::percent;

/// A key value, bounded: longer values are hashed whole, so nothing is lost by the bound on what
/// the filter would keep; this is the cap on what it accepts at all.
pub const MAX_KEY_BYTES: usize = 8 * 1024;

pub fn usable(value: Vec<u8>) -> Option<Vec<u8>> {
    keep(value, |v| bounded(v.trim_ascii()))
}

/// A key value that is neither empty nor over [`MAX_KEY_BYTES`].
fn bounded(key: &[u8]) -> Option<&[u8]> {
    (!key.is_empty() && key.len() <= MAX_KEY_BYTES).then_some(key)
}

/// The part of `value` that `pick` finds, in the buffer `value` came in (no copy on the heap).
fn keep(mut value: Vec<u8>, pick: impl FnOnce(&[u8]) -> Option<&[u8]>) -> Option<Vec<u8>> {
    let part = pick(&value)?;
    let start = part.as_ptr() as usize - value.as_ptr() as usize;
    let end = start + part.len();
    value.truncate(end);
    value.drain(..start);
    Some(value)
}

/// The token of `Bearer <token>` (scheme case-insensitive, one token, no spaces inside), in the
/// buffer the header came in.
pub fn bearer_token(authorization: Vec<u8>) -> Option<Vec<u8>> {
    keep(authorization, |authorization| {
        let value = authorization.trim_ascii();
        if value.len() < 7
            || !value[..6].eq_ignore_ascii_case(b"bearer")
            || !value[6].is_ascii_whitespace()
        {
            return None;
        }
        let token = value[7..].trim_ascii();
        if token.iter().any(|b| b.is_ascii_whitespace() || *b == b',') {
            return None;
        }
        bounded(token)
    })
}

/// The first value of query parameter `name` in a `:path`, percent- and `+`-decoded.
pub fn query_value(path: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    query_values(path, name).next()
}

/// Every value of query parameter `name` in a `:path`, in order, percent- and `+`-decoded.
pub fn query_values<'a>(path: &'a [u8], name: &'a [u8]) -> impl Iterator<Item = Vec<u8>> + 'a {
    let query = match path.iter().position(|&b| b == b'?') {
        Some(q) => {
            let rest = &path[q + 1..];
            let end = rest.iter().position(|&b| b == b'#').unwrap_or(rest.len());
            Some(&rest[..end])
        }
        None => None,
    };
    let pairs = query.into_iter().flat_map(|q| q.split(|&b| b == b'&'));
    pairs.filter_map(move |pair| {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &b""[..]),
        };
        (percent::decode(key, true).as_ref() == name)
            .then(|| percent::decode(value, true).into_owned())
    })
}

/// Whether an `Authorization` credential is a bearer one (`Bearer` and whitespace, any case).
pub fn is_bearer(credential: &[u8]) -> bool {
    let value = credential.trim_ascii_start();
    value.len() > 6 && value[..6].eq_ignore_ascii_case(b"bearer") && value[6].is_ascii_whitespace()
}
