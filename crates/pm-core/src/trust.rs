//! Trusted-host matching on a TCP peer address and its confirmed host names.

use std::net::IpAddr;

/// Turns an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) into the IPv4 address; other addresses are unchanged.
pub fn normalize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Whether a peer is trusted.
///
/// `peer` is the TCP peer address (never a header). `confirmed_names` are host names whose reverse lookup of the
/// peer was confirmed by a forward lookup; the caller resolves them (empty when no pattern needs them).
///
/// Patterns: an exact IPv4 or IPv6 address; an IPv4 pattern with `*` octets (`192.168.1.*`, `10.0.*.*`);
/// `localhost`, which matches any loopback peer; a host-name pattern where `*` matches within one label
/// (`*.mydomain.com` matches `a.mydomain.com`, not `a.b.mydomain.com`), compared without regard to case.
/// `0.0.0.0` and `::` match no peer: no connection comes from them.
pub fn host_is_trusted(peer: IpAddr, confirmed_names: &[String], patterns: &[String]) -> bool {
    let peer = normalize_ip(peer);
    patterns.iter().any(|pattern| pattern_matches(pattern.trim(), peer, confirmed_names))
}

/// Whether `pattern` is a host-name pattern that needs a reverse lookup to be decided.
pub fn needs_name_lookup(pattern: &str) -> bool {
    let pattern = pattern.trim();
    !(pattern.eq_ignore_ascii_case("localhost") || pattern.parse::<IpAddr>().is_ok() || ipv4_wildcard(pattern).is_some())
}

fn pattern_matches(pattern: &str, peer: IpAddr, confirmed_names: &[String]) -> bool {
    if pattern.is_empty() {
        return false;
    }
    if pattern.eq_ignore_ascii_case("localhost") {
        return peer.is_loopback();
    }
    if let Ok(ip) = pattern.parse::<IpAddr>() {
        let ip = normalize_ip(ip);
        return !ip.is_unspecified() && ip == peer;
    }
    if let Some(octets) = ipv4_wildcard(pattern) {
        let IpAddr::V4(v4) = peer else { return false };
        return octets.iter().zip(v4.octets()).all(|(want, got)| want.is_none_or(|want| want == got));
    }
    confirmed_names.iter().any(|name| name_matches(pattern, name))
}

/// Parses `a.b.c.d` where each part is an octet or `*`; `None` when it is not such a pattern.
fn ipv4_wildcard(pattern: &str) -> Option<[Option<u8>; 4]> {
    let parts: Vec<&str> = pattern.split('.').collect();
    if parts.len() != 4 || !parts.contains(&"*") {
        return None;
    }
    let mut res = [None; 4];
    for (slot, part) in res.iter_mut().zip(parts) {
        *slot = match part {
            "*" => None,
            digits => Some(digits.parse::<u8>().ok()?),
        };
    }
    Some(res)
}

/// Label-wise match where `*` matches any run of characters within one label.
fn name_matches(pattern: &str, name: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let pattern_labels: Vec<&str> = pattern.split('.').collect();
    let name_labels: Vec<&str> = name.split('.').collect();
    pattern_labels.len() == name_labels.len()
        && pattern_labels.iter().zip(&name_labels).all(|(p, n)| label_matches(p.as_bytes(), n.as_bytes()))
}

fn label_matches(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| label_matches(rest, &text[skip..])),
        Some((c, rest)) => text.split_first().is_some_and(|(t, text_rest)| t == c && label_matches(rest, text_rest)),
    }
}
