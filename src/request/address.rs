//! The client's address: the downstream address, or the one the outermost trusted proxy saw in
//! `x-forwarded-for`; and the key a range of addresses makes.

use std::net::{IpAddr, SocketAddr};

use super::view::Request;

/// The client IP: `source.address` with no trusted hops, else the address the outermost
/// trusted proxy saw, i.e. the `trusted_hops`-th entry from the right of `x-forwarded-for`.
/// A chain shorter than that falls back to `source.address` (as Envoy's own XFF handling does);
/// an entry that is not an IP address yields no key. IPv4-mapped IPv6 addresses are IPv4
/// (`::ffff:1.2.3.4` and `1.2.3.4` are one client).
pub fn client_ip(request: &Request, trusted_hops: u32) -> Option<IpAddr> {
    if trusted_hops > 0 {
        if let Some(xff) = request.header("x-forwarded-for") {
            let entries: Vec<&[u8]> = xff.split(|&b| b == b',').map(|e| e.trim_ascii()).collect();
            let hops = trusted_hops as usize;
            if entries.len() >= hops {
                return parse_ip(entries[entries.len() - hops]).map(canonical_ip);
            }
        }
    }
    request
        .source_address()
        .and_then(|a| parse_ip(&a))
        .map(canonical_ip)
}

/// The key of an address: its text, or with fewer prefix bits than the address has, the text of
/// its network (`203.0.113.0/24`, `2001:db8:1:2::/64`), so every address in it is one client.
pub fn ip_key(ip: IpAddr, ipv4_prefix: u8, ipv6_prefix: u8) -> Vec<u8> {
    let text = match ip {
        IpAddr::V4(v4) if ipv4_prefix < 32 => {
            let mask = u32::MAX << (32 - ipv4_prefix as u32);
            let network = std::net::Ipv4Addr::from(u32::from(v4) & mask);
            format!("{network}/{ipv4_prefix}")
        }
        IpAddr::V6(v6) if ipv6_prefix < 128 => {
            let mask = u128::MAX << (128 - ipv6_prefix as u32);
            let network = std::net::Ipv6Addr::from(u128::from(v6) & mask);
            format!("{network}/{ipv6_prefix}")
        }
        whole => whole.to_string(),
    };
    text.into_bytes()
}

/// Parses `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]:80`.
fn parse_ip(text: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(text).ok()?.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    text.parse::<SocketAddr>().ok().map(|s| s.ip())
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}
