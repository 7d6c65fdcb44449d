//! What a task may reach through its egress proxy besides the model upstream: the operator's
//! host patterns, and the address check that keeps wildcards and names out of private space.

use std::net::{IpAddr, Ipv4Addr};

/// What a task may reach besides the model upstream.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    host: HostPattern,
    /// `None`: any port.
    port: Option<u16>,
}

#[derive(Debug, Clone)]
enum HostPattern {
    /// `*`: any host (public addresses only).
    Any,
    /// `*.example.com`, stored as `example.com`: strict subdomains only.
    Subdomains(String),
    /// `example.com`, lowercased, without a trailing dot.
    Name(String),
    /// `127.0.0.1`, `::1`.
    Ip(IpAddr),
}

impl EgressPolicy {
    /// Patterns: "*" (any public host), "example.com" (that host, any port), "example.com:443",
    /// "*.example.com" (subdomains only), "127.0.0.1:8123" / "[::1]:80" (IP literals).
    pub fn new(
        patterns: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Result<EgressPolicy, String> {
        let rules = patterns
            .into_iter()
            .map(|p| parse_rule(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(EgressPolicy { rules })
    }

    /// Whether some pattern matches `host:port`. Connecting also needs the address check.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.matching(host, port).is_some()
    }

    /// `None` if no pattern matches; else whether one that matches names the host's IP address
    /// itself (the only way a private address is allowed: a name is always checked after it
    /// resolves, since whoever controls its DNS could point it at the metadata service or
    /// gantry's own loopback).
    pub(super) fn matching(&self, host: &str, port: u16) -> Option<bool> {
        let host = normalize_host(host);
        let ip = host.parse::<IpAddr>().ok();
        let matches = self
            .rules
            .iter()
            .filter(|r| r.port.is_none_or(|p| p == port));
        matches
            .filter_map(|rule| match &rule.host {
                HostPattern::Any => Some(false),
                HostPattern::Ip(allowed) => (ip == Some(*allowed)).then_some(true),
                HostPattern::Name(name) => (ip.is_none() && host == *name).then_some(false),
                HostPattern::Subdomains(domain) => {
                    let sub = host
                        .strip_suffix(domain.as_str())
                        .and_then(|s| s.strip_suffix('.'));
                    (ip.is_none() && sub.is_some_and(|s| !s.is_empty())).then_some(false)
                }
            })
            .reduce(|a, b| a || b)
    }
}

fn parse_rule(raw: &str) -> Result<Rule, String> {
    let bad = |why: &str| format!("egress pattern {raw:?}: {why}");
    if raw.is_empty() || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("empty or contains whitespace"));
    }
    let (host, port) = split_host_port(raw).ok_or_else(|| bad("malformed IPv6 literal"))?;
    let port = port
        .map(|p| p.parse::<u16>().ok().filter(|p| *p != 0))
        .map(|p| p.ok_or_else(|| bad("the port is not a number from 1 to 65535")))
        .transpose()?;
    let host = parse_host_pattern(host)
        .ok_or_else(|| bad("expected \"*\", a host name, \"*.domain\" or an IP literal"))?;
    Ok(Rule { host, port })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 literal (which has no port).
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        ip.parse::<std::net::Ipv6Addr>().ok()?;
        return match after {
            "" => Some((ip, None)),
            _ => Some((ip, Some(after.strip_prefix(':')?))),
        };
    }
    if s.matches(':').count() > 1 {
        return Some((s, None));
    }
    Some(s.split_once(':').map_or((s, None), |(h, p)| (h, Some(p))))
}

fn parse_host_pattern(host: &str) -> Option<HostPattern> {
    if host == "*" {
        return Some(HostPattern::Any);
    }
    if let Ok(ip) = host.parse() {
        return Some(HostPattern::Ip(ip));
    }
    let (wildcard, name) = host.strip_prefix("*.").map_or((false, host), |n| (true, n));
    let name = normalize_host(name);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    match (valid, wildcard) {
        (false, _) => None,
        (true, true) => Some(HostPattern::Subdomains(name)),
        (true, false) => Some(HostPattern::Name(name)),
    }
}

/// Lowercase, without IPv6 brackets or the trailing dot of a fully qualified name.
pub(super) fn normalize_host(host: &str) -> String {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Whether `ip` is on the public internet: a wildcard pattern must not lead into the host's
/// own or its LAN's services.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
                // NAT64 reaches the IPv4 address in its low bits.
                return is_public_v4(Ipv4Addr::from(u128::from(v6) as u32));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || a >= 240 // reserved
        || (a == 100 && (b & 0xc0) == 64) // CGNAT 100.64/10
        || (a == 198 && (b & 0xfe) == 18) // benchmarking 198.18/15
        || (a == 192 && b == 0 && c == 0)) // IETF protocol assignments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_rejects_malformed_patterns() {
        let bad = "a b|*.|host:notaport|host:0|[::1|[nope]:80|ex/ample|a..b|*.*.x".split('|');
        for bad in bad.chain([""]) {
            assert!(EgressPolicy::new([bad]).is_err(), "{bad:?} was accepted");
        }
        let good = "* example.com Example.COM.:443 *.example.com 127.0.0.1:8123 [::1]:80 ::1";
        EgressPolicy::new(good.split(' ')).unwrap();
    }

    #[test]
    fn policy_matches_hosts_ports_and_wildcards() {
        let p =
            EgressPolicy::new("Example.com api.test:443 *.wild.org [::1]:80 10.0.0.1".split(' '));
        let p = p.unwrap();
        assert!(p.allows("EXAMPLE.com.", 8080) && !p.allows("sub.example.com", 443));
        assert!(p.allows("api.test", 443) && !p.allows("api.test", 80));
        assert!(
            p.allows("a.b.wild.org", 1) && !p.allows("wild.org", 1) && !p.allows("xwild.org", 1)
        );
        assert!(p.allows("[::1]", 80) && p.allows("::1", 80) && !p.allows("::1", 81));
        assert!(p.allows("10.0.0.1", 22) && !p.allows("10.0.0.2", 22));
        assert_eq!(
            p.matching("x.wild.org", 1),
            Some(false),
            "a wildcard names no host"
        );
        assert_eq!(p.matching("10.0.0.1", 1), Some(true));
        assert!(
            EgressPolicy::new(["*"])
                .unwrap()
                .allows("anything.at.all", 1)
        );
        assert!(!EgressPolicy::default().allows("example.com", 443));
    }

    #[test]
    fn private_addresses_are_not_public() {
        let private = "127.0.0.1 10.1.2.3 172.16.0.1 192.168.1.1 169.254.169.254 100.64.0.1 0.0.0.0 \
            224.0.0.1 255.255.255.255 192.0.2.1 ::1 :: fd00::1 fe80::1 ff02::1 2001:db8::1 \
            ::ffff:127.0.0.1 64:ff9b::a00:1";
        for ip in private.split_whitespace() {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in "1.1.1.1 100.128.0.1 2606:4700::1111 ::ffff:8.8.8.8".split(' ') {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
