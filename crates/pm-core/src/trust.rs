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
///
/// # Caveats
/// - `0.0.0.0` and `::` match no peer: no connection comes from them. `0.0.0.0` is in the default list only for
///   compatibility with the original's files; it never means "everyone".
/// - A malformed pattern matches nothing, and in particular is never tried as a host name: `192.168.1.*.*`,
///   `300.1.*.1`, `fe80::*`, `*`, an empty pattern. A host-name pattern is made of non-empty labels of
///   `A-Z a-z 0-9 - _ *` and holds at least one letter, so an address-like pattern cannot be satisfied by a peer
///   that controls its own reverse DNS (say `192.168.1.evil.com`).
pub fn host_is_trusted(peer: IpAddr, confirmed_names: &[String], patterns: &[String]) -> bool {
    let peer = normalize_ip(peer);
    patterns.iter().any(|pattern| pattern_matches(&HostPattern::parse(pattern), peer, confirmed_names))
}

/// Whether `pattern` is a host-name pattern that needs a reverse lookup to be decided (false for addresses,
/// address wildcards, `localhost` and malformed patterns).
pub fn needs_name_lookup(pattern: &str) -> bool {
    matches!(HostPattern::parse(pattern), HostPattern::Name(_))
}

/// Why a trusted-host pattern can never match, or `None` when it is usable.
pub(crate) fn host_pattern_problem(pattern: &str) -> Option<&'static str> {
    match HostPattern::parse(pattern) {
        HostPattern::Malformed => Some(
            "not an IP address, an IPv4 pattern with '*' octets, 'localhost', or a host-name pattern \
             (labels of A-Z a-z 0-9 - _ * with at least one letter)",
        ),
        _ => None,
    }
}

/// A trusted-host pattern, classified.
#[derive(Debug, PartialEq)]
enum HostPattern {
    /// `localhost`: any loopback peer.
    Localhost,
    /// An exact address (normalised).
    Ip(IpAddr),
    /// `a.b.c.d` with `*` octets.
    Ipv4Wildcard([Option<u8>; 4]),
    /// A host-name pattern, lower case, without a trailing dot.
    Name(String),
    /// Matches nothing.
    Malformed,
}

impl HostPattern {
    fn parse(pattern: &str) -> HostPattern {
        let pattern = pattern.trim();
        if pattern.eq_ignore_ascii_case("localhost") {
            return HostPattern::Localhost;
        }
        if let Ok(ip) = pattern.parse::<IpAddr>() {
            return HostPattern::Ip(normalize_ip(ip));
        }
        if let Some(octets) = ipv4_wildcard(pattern) {
            return HostPattern::Ipv4Wildcard(octets);
        }
        let name = pattern.strip_suffix('.').unwrap_or(pattern);
        let label_ok = |label: &str| {
            !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*'))
        };
        if name.split('.').all(label_ok) && name.bytes().any(|b| b.is_ascii_alphabetic()) {
            return HostPattern::Name(name.to_ascii_lowercase());
        }
        HostPattern::Malformed
    }
}

fn pattern_matches(pattern: &HostPattern, peer: IpAddr, confirmed_names: &[String]) -> bool {
    match pattern {
        HostPattern::Localhost => peer.is_loopback(),
        HostPattern::Ip(ip) => !ip.is_unspecified() && *ip == peer,
        HostPattern::Ipv4Wildcard(octets) => {
            let IpAddr::V4(v4) = peer else { return false };
            octets.iter().zip(v4.octets()).all(|(want, got)| want.is_none_or(|want| want == got))
        }
        HostPattern::Name(pattern) => confirmed_names.iter().any(|name| name_matches(pattern, name)),
        HostPattern::Malformed => false,
    }
}

/// Parses `a.b.c.d` where each part is a decimal octet (1 to 3 digits) or `*`, with at least one `*`; `None` when
/// it is not such a pattern.
fn ipv4_wildcard(pattern: &str) -> Option<[Option<u8>; 4]> {
    let parts: Vec<&str> = pattern.split('.').collect();
    if parts.len() != 4 || !parts.contains(&"*") {
        return None;
    }
    let mut res = [None; 4];
    for (slot, part) in res.iter_mut().zip(parts) {
        *slot = match part {
            "*" => None,
            digits if (1..=3).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) => {
                Some(digits.parse::<u8>().ok()?)
            }
            _ => return None,
        };
    }
    Some(res)
}

/// Label-wise match of a lower-case pattern where `*` matches any run of characters within one label.
fn name_matches(pattern: &str, name: &str) -> bool {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    let pattern_labels: Vec<&str> = pattern.split('.').collect();
    let name_labels: Vec<&str> = name.split('.').collect();
    pattern_labels.len() == name_labels.len()
        && pattern_labels.iter().zip(&name_labels).all(|(p, n)| label_matches(p.as_bytes(), n.as_bytes()))
}

/// Whether `text` matches `pattern`, where `*` matches any run of bytes. Greedy with one backtrack point, so it
/// takes at most `pattern.len() * text.len()` steps whatever the number of stars.
fn label_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p_idx, mut t_idx) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while t_idx < text.len() {
        match pattern.get(p_idx) {
            Some(b'*') => {
                last_star = Some((p_idx, t_idx));
                p_idx += 1;
            }
            Some(&c) if c == text[t_idx] => {
                p_idx += 1;
                t_idx += 1;
            }
            _ => match last_star {
                Some((star_p, star_t)) => {
                    p_idx = star_p + 1;
                    t_idx = star_t + 1;
                    last_star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p_idx..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `peer` (with these confirmed names) is trusted by the single `pattern`.
    fn check(pattern: &str, peer: &str, names: &[&str], expected: bool) {
        let peer: IpAddr = peer.parse().unwrap();
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let patterns = vec![pattern.to_owned()];
        assert_eq!(
            host_is_trusted(peer, &names, &patterns),
            expected,
            "pattern {pattern:?}, peer {peer}, names {names:?}"
        );
    }

    #[test]
    fn exact_addresses() {
        check("192.168.1.100", "192.168.1.100", &[], true);
        check("192.168.1.100", "192.168.1.101", &[], false);
        check("127.0.0.1", "127.0.0.1", &[], true);
        check("127.0.0.1", "127.0.0.2", &[], false);
        check("::1", "::1", &[], true);
        check("::1", "127.0.0.1", &[], false);
        check("0:0:0:0:0:0:0:1", "::1", &[], true);
        check("fe80::1", "fe80::1", &[], true);
        check("fe80::1", "fe80::2", &[], false);
        check(" 10.1.2.3 ", "10.1.2.3", &[], true);
    }

    #[test]
    fn ipv4_mapped_ipv6_is_normalised() {
        check("127.0.0.1", "::ffff:127.0.0.1", &[], true);
        check("::ffff:127.0.0.1", "127.0.0.1", &[], true);
        check("192.168.1.*", "::ffff:192.168.1.7", &[], true);
        check("localhost", "::ffff:127.0.0.1", &[], true);
        check("10.0.0.1", "::ffff:10.0.0.2", &[], false);
        assert_eq!(normalize_ip("::ffff:1.2.3.4".parse().unwrap()), "1.2.3.4".parse::<IpAddr>().unwrap());
        assert_eq!(normalize_ip("::1".parse().unwrap()), "::1".parse::<IpAddr>().unwrap());
        // IPv4-compatible (deprecated) addresses are not mapped ones.
        assert_eq!(normalize_ip("::1.2.3.4".parse().unwrap()), "::1.2.3.4".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn ipv4_wildcards() {
        check("192.168.1.*", "192.168.1.0", &[], true);
        check("192.168.1.*", "192.168.1.255", &[], true);
        check("192.168.1.*", "192.168.2.1", &[], false);
        check("192.168.1.*", "::1", &[], false);
        check("10.0.*.*", "10.0.0.0", &[], true);
        check("10.0.*.*", "10.0.255.255", &[], true);
        check("10.0.*.*", "10.1.0.1", &[], false);
        check("*.0.0.1", "127.0.0.1", &[], true);
    }

    #[test]
    fn localhost_means_loopback() {
        check("localhost", "127.0.0.1", &[], true);
        check("localhost", "127.5.5.5", &[], true);
        check("localhost", "::1", &[], true);
        check("LocalHost", "127.0.0.1", &[], true);
        check("localhost", "10.0.0.1", &[], false);
        check("localhost", "192.168.1.1", &[], false);
        // A peer that merely claims the name does not become loopback.
        check("localhost", "10.0.0.1", &["localhost"], false);
    }

    #[test]
    fn unspecified_addresses_match_no_peer() {
        // `0.0.0.0` stays in the default list for compatibility with the original; it never means "everyone".
        check("0.0.0.0", "0.0.0.0", &[], false);
        check("0.0.0.0", "127.0.0.1", &[], false);
        check("0.0.0.0", "10.0.0.1", &[], false);
        check("0.0.0.0", "203.0.113.9", &["anything.example"], false);
        check("::", "::", &[], false);
        check("::", "2001:db8::1", &[], false);
        check("::ffff:0.0.0.0", "10.0.0.1", &[], false);
    }

    #[test]
    fn host_name_patterns_need_confirmed_names() {
        check("*.mydomain.com", "10.0.0.5", &["a.mydomain.com"], true);
        check("*.mydomain.com", "10.0.0.5", &["A.MyDomain.COM"], true);
        check("*.MyDomain.com", "10.0.0.5", &["a.mydomain.com"], true);
        check("*.mydomain.com", "10.0.0.5", &["a.mydomain.com."], true);
        check("*.mydomain.com", "10.0.0.5", &["a.b.mydomain.com"], false);
        check("*.mydomain.com", "10.0.0.5", &["mydomain.com"], false);
        check("*.mydomain.com", "10.0.0.5", &["a.mydomain.com.evil.net"], false);
        check("*.mydomain.com", "10.0.0.5", &["amydomain.com"], false);
        check("*.mydomain.com", "10.0.0.5", &[], false);
        check("*.mydomain.com", "10.0.0.5", &["x.other.com", "b.mydomain.com"], true);
        check("server-*.local", "10.0.0.5", &["server-1.local"], true);
        check("server-*.local", "10.0.0.5", &["server-.local"], true);
        check("server-*.local", "10.0.0.5", &["server-10.local"], true);
        check("server-*.local", "10.0.0.5", &["server1.local"], false);
        check("server-*.local", "10.0.0.5", &["server-1.a.local"], false);
        check("build.example.org", "10.0.0.5", &["build.example.org"], true);
        check("build.example.org", "10.0.0.5", &["build2.example.org"], false);
    }

    #[test]
    fn malformed_patterns_never_match() {
        check("192.168.1.*.*", "192.168.1.1", &[], false);
        check("192.168.1.*.*", "192.168.1.1", &["192.168.1.evil.com"], false);
        check("300.1.*.1", "44.1.2.1", &[], false);
        check("300.1.*.1", "44.1.2.1", &["300.1.x.1"], false);
        check("192.168.+1.*", "192.168.1.1", &[], false);
        check("192.168.1.1*", "192.168.1.10", &["192.168.1.10"], false);
        check("192.168..*", "192.168.1.1", &[], false);
        check("fe80::*", "fe80::1", &[], false);
        check("", "127.0.0.1", &[""], false);
        check("   ", "127.0.0.1", &[], false);
        check("*", "10.0.0.5", &["anything"], false);
    }

    #[test]
    fn any_pattern_of_a_list_suffices() {
        let patterns: Vec<String> = ["10.0.*.*", "localhost", "*.mydomain.com"].map(String::from).to_vec();
        assert!(host_is_trusted("127.0.0.1".parse().unwrap(), &[], &patterns));
        assert!(host_is_trusted("10.0.3.4".parse().unwrap(), &[], &patterns));
        assert!(host_is_trusted("8.8.8.8".parse().unwrap(), &["x.mydomain.com".to_owned()], &patterns));
        assert!(!host_is_trusted("8.8.8.8".parse().unwrap(), &[], &patterns));
        assert!(!host_is_trusted("127.0.0.1".parse().unwrap(), &[], &[]));
    }

    #[test]
    fn which_patterns_need_a_lookup() {
        let check_lookup =
            |pattern: &str, expected: bool| assert_eq!(needs_name_lookup(pattern), expected, "{pattern:?}");
        check_lookup("*.mydomain.com", true);
        check_lookup("server-*.local", true);
        check_lookup("build.example.org", true);
        check_lookup("localhost", false);
        check_lookup("LOCALHOST", false);
        check_lookup("127.0.0.1", false);
        check_lookup("::1", false);
        check_lookup("0.0.0.0", false);
        check_lookup("192.168.1.*", false);
        // Patterns that can never match do not need a lookup either.
        check_lookup("", false);
        check_lookup("192.168.1.*.*", false);
        check_lookup("300.1.*.1", false);
        check_lookup("fe80::*", false);
    }

    #[test]
    fn label_wildcards() {
        let check_label = |pattern: &str, text: &str, expected: bool| {
            assert_eq!(label_matches(pattern.as_bytes(), text.as_bytes()), expected, "{pattern:?} vs {text:?}")
        };
        check_label("", "", true);
        check_label("", "a", false);
        check_label("*", "", true);
        check_label("*", "abc", true);
        check_label("a*", "abc", true);
        check_label("*c", "abc", true);
        check_label("*b*", "abc", true);
        check_label("a*c", "ac", true);
        check_label("a*c", "ab", false);
        check_label("a*b*c", "aXbYbZc", true);
        check_label("a*b*c", "aXbYbZ", false);
        check_label("**", "x", true);
        check_label("abc", "abcd", false);
        check_label("abcd", "abc", false);
    }

    #[test]
    fn many_stars_do_not_take_exponential_time() {
        // With naive recursion this takes minutes (found so); now it is instant.
        let pattern = format!("{}b.com", "*a".repeat(40));
        let name = format!("{}.com", "a".repeat(63));
        check(&pattern, "10.0.0.1", &[&name], false);
        check(&pattern, "10.0.0.1", &[&format!("{}b.com", "a".repeat(62))], true);
    }

    #[test]
    fn pattern_problems_for_settings() {
        for good in ["localhost", "127.0.0.1", "::1", "0.0.0.0", "192.168.1.*", "*.mydomain.com", "server-*.local"] {
            assert_eq!(host_pattern_problem(good), None, "{good:?}");
        }
        for bad in ["", " ", "192.168.1.*.*", "300.1.*.1", "fe80::*", "*", "a..b", "a b.com", "host/x"] {
            assert!(host_pattern_problem(bad).is_some(), "{bad:?}");
        }
    }
}
