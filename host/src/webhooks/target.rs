//! Where a webhook may point: an http(s) URL whose host resolves only to addresses on the
//! public internet, or to hosts the operator allowed (`[webhooks] allowed_private_hosts`).
//! The check runs when a webhook is stored and again before each delivery, and the delivery
//! connects to the very addresses checked, so a DNS answer that changes in between (DNS
//! rebinding) cannot lead it into the host's own or its network's services.

use crate::tasks::egress::is_public;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest URL a webhook may have.
pub const MAX_URL_CHARS: usize = 2048;

/// A checked destination: the URL and the addresses it resolved to, all allowed.
#[derive(Debug, Clone)]
pub struct Target {
    /// The parsed URL.
    pub url: url::Url,
    /// Its host as it goes in `Host` and TLS SNI.
    pub host: String,
    /// Its port (the scheme's default when none is given).
    pub port: u16,
    /// Every address the host resolved to; each passed the check.
    pub addrs: Vec<SocketAddr>,
}

/// What the operator allowed beyond public addresses.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    hosts: Vec<String>,
    ips: Vec<IpAddr>,
}

impl Allowed {
    /// From `[webhooks] allowed_private_hosts`: IP addresses or host names.
    pub fn new(entries: &[String]) -> Allowed {
        let mut allowed = Allowed::default();
        for entry in entries {
            let entry = normalize(entry);
            match entry.parse::<IpAddr>() {
                Ok(ip) => allowed.ips.push(ip),
                Err(_) => allowed.hosts.push(entry),
            }
        }
        allowed
    }

    fn permits(&self, host: &str, ip: IpAddr) -> bool {
        self.ips.contains(&ip) || self.hosts.iter().any(|h| h == host)
    }
}

/// Lowercase, without IPv6 brackets or a trailing dot.
fn normalize(host: &str) -> String {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Addresses no webhook reaches unless the operator allowed them, beyond the egress
/// classifier's non-public ranges: the cloud metadata services (also link-local or ULA, named
/// here so that the refusal says what they are).
const METADATA: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
];

/// The URL's shape alone, without DNS: http(s), a host, no credentials, not too long.
pub fn parse(raw: &str) -> Result<url::Url, String> {
    if raw.chars().count() > MAX_URL_CHARS {
        return Err(format!("must be at most {MAX_URL_CHARS} characters"));
    }
    let url = url::Url::parse(raw.trim()).map_err(|e| format!("is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; use the webhook's secret".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    Ok(url)
}

/// Resolve the URL's host and check every address it resolved to.
pub async fn resolve(raw: &str, allowed: &Allowed) -> Result<Target, String> {
    let url = parse(raw)?;
    let host = normalize(url.host_str().unwrap_or_default());
    let port = url
        .port_or_known_default()
        .ok_or_else(|| "must name a port".to_string())?;
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("host {host} does not resolve ({e})"))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("host {host} does not resolve"));
    }
    for addr in &addrs {
        check(&host, addr.ip(), allowed)?;
    }
    Ok(Target {
        url,
        host,
        port,
        addrs,
    })
}

/// Whether one resolved address may be reached.
fn check(host: &str, ip: IpAddr, allowed: &Allowed) -> Result<(), String> {
    if allowed.permits(host, ip) {
        return Ok(());
    }
    let canonical = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if METADATA.contains(&canonical) {
        return Err(format!(
            "resolves to {ip}, a cloud metadata address, which webhooks may not reach"
        ));
    }
    if !is_public(ip) {
        return Err(format!(
            "resolves to {ip}, a loopback, private, link-local or otherwise non-public address, \
             which webhooks may not reach unless the operator allows it"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked_before_any_lookup() {
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "not a url",
            "http://user:pw@example.com/",
            "https://example.com/#frag",
            "http://",
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
        assert!(
            parse(&format!(
                "https://example.com/{}",
                "a".repeat(MAX_URL_CHARS)
            ))
            .is_err()
        );
        parse("https://example.com:8443/hook?x=1").unwrap();
    }

    #[tokio::test]
    async fn private_and_metadata_addresses_are_refused_unless_allowed() {
        let none = Allowed::default();
        for url in [
            "http://127.0.0.1/",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://[::1]:8080/",
            "http://0.0.0.0/",
            "http://100.64.0.1/",
            "http://192.168.1.10/",
            "http://255.255.255.255/",
            "http://224.0.0.1/",
            "http://[::ffff:10.0.0.1]/",
            "http://localhost/",
            // Other spellings of 127.0.0.1 that the URL parser normalizes.
            "http://2130706433/",
            "http://0x7f.1/",
        ] {
            let e = resolve(url, &none).await.unwrap_err();
            assert!(e.starts_with("resolves to"), "{url}: {e}");
        }
        let e = resolve("http://169.254.169.254/", &none).await.unwrap_err();
        assert!(e.contains("metadata"), "{e}");
        let e = resolve("http://[fd00:ec2::254]/", &none).await.unwrap_err();
        assert!(e.contains("metadata"), "{e}");

        let loopback = Allowed::new(&["127.0.0.1".to_string()]);
        let t = resolve("http://127.0.0.1:9/hook", &loopback).await.unwrap();
        assert_eq!(t.addrs, vec!["127.0.0.1:9".parse().unwrap()]);
        assert!(resolve("http://10.0.0.1/", &loopback).await.is_err());
        // Allowing one address allows no other.
        assert!(resolve("http://[::1]/", &loopback).await.is_err());

        let public = resolve("https://1.1.1.1/", &none).await.unwrap();
        assert_eq!(public.port, 443);
    }
}
