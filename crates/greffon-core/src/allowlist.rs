//! Network allowlists: which URLs a plugin's HTTP requests may reach.
//!
//! Entries are exact host names (`api.example.com`), subdomain wildcards
//! (`*.example.com`: subdomains only, not the apex), or IP literals; each
//! may carry a port (`127.0.0.1:8080`), otherwise only ports 80 and 443
//! match. Matching is on whole labels of the WHATWG-parsed host (IDNA
//! punycode, lowercase, trailing dot removed), never on substrings, so
//! userinfo, fragments, suffix tricks and other IP notations cannot pass
//! for an allowed host.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// The suffix after `*.`.
    Wildcard(String),
    Ip(IpAddr),
}

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    host: HostPattern,
    /// None: the default ports of http and https.
    port: Option<u16>,
}

/// The default ports, the only ones an entry without a port allows.
const DEFAULT_PORTS: [u16; 2] = [80, 443];

fn normalize_domain(d: &str) -> String {
    d.strip_suffix('.').unwrap_or(d).to_string()
}

impl Pattern {
    /// Parses an entry, naming what is wrong with it.
    pub fn parse(entry: &str) -> Result<Pattern, String> {
        let raw = entry.trim();
        let bad = |why: &str| format!("allowlist entry '{entry}' {why}");
        if raw.is_empty() {
            return Err(bad("is empty"));
        }
        if raw.contains("://") || raw.contains('/') || raw.contains('@') {
            return Err(bad("must be a host name, not a URL"));
        }
        let (host, port) = split_port(raw).map_err(|e| bad(&e))?;
        let (wild, host) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        if host.contains('*') {
            return Err(bad(
                "may only use '*' as a whole first label ('*.example.com')",
            ));
        }
        let parsed = Host::parse(host).map_err(|e| bad(&format!("is not a valid host: {e}")))?;
        let host = match parsed {
            Host::Domain(d) => {
                let d = normalize_domain(&d);
                if wild && d.split('.').filter(|l| !l.is_empty()).count() < 2 {
                    return Err(bad(
                        "is a wildcard over a whole top-level domain; name at least two labels ('*.example.com')",
                    ));
                }
                if wild {
                    HostPattern::Wildcard(d)
                } else {
                    HostPattern::Exact(d)
                }
            }
            Host::Ipv4(ip) if !wild => HostPattern::Ip(IpAddr::V4(ip)),
            Host::Ipv6(ip) if !wild => HostPattern::Ip(IpAddr::V6(ip)),
            _ => return Err(bad("puts a wildcard on an IP address")),
        };
        Ok(Pattern { host, port })
    }

    fn allows_port(&self, port: u16) -> bool {
        match self.port {
            Some(p) => p == port,
            None => DEFAULT_PORTS.contains(&port),
        }
    }

    /// Whether this entry is covered by `wider` (for narrowing a plugin's
    /// list by the global one).
    fn within(&self, wider: &Pattern) -> bool {
        if wider.port.is_some() && wider.port != self.port {
            return false;
        }
        match (&self.host, &wider.host) {
            (a, b) if a == b => true,
            (HostPattern::Exact(d) | HostPattern::Wildcard(d), HostPattern::Wildcard(s)) => {
                is_subdomain(d, s)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostPattern::Exact(d) => f.write_str(d)?,
            HostPattern::Wildcard(d) => write!(f, "*.{d}")?,
            HostPattern::Ip(IpAddr::V4(ip)) => write!(f, "{ip}")?,
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

fn split_port(raw: &str) -> Result<(&str, Option<u16>), String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("has an invalid port '{p}'"))
    };
    if let Some(rest) = raw.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or_else(|| "has an unclosed '['".to_string())?;
        return match after {
            "" => Ok((raw, None)),
            p => match p.strip_prefix(':') {
                Some(p) => Ok((&raw[..ip.len() + 2], Some(port(p)?))),
                None => Err("has text after ']'".into()),
            },
        };
    }
    match raw.rsplit_once(':') {
        // A bare IPv6 address has several colons.
        Some((h, p)) if !h.contains(':') => Ok((h, Some(port(p)?))),
        _ => Ok((raw, None)),
    }
}

fn is_subdomain(domain: &str, suffix: &str) -> bool {
    domain.len() > suffix.len() + 1
        && domain.ends_with(suffix)
        && domain.as_bytes()[domain.len() - suffix.len() - 1] == b'.'
}

/// Why a URL is refused before any connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deny {
    Unparsable(String),
    Scheme(String),
    Credentials,
    NoHost,
    /// The host matches no entry (the allowlist may be empty).
    Host(String),
    Port {
        host: String,
        port: u16,
    },
}

impl fmt::Display for Deny {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Deny::Unparsable(e) => write!(f, "the URL cannot be parsed: {e}"),
            Deny::Scheme(s) => write!(f, "scheme '{s}' is not allowed (only http and https)"),
            Deny::Credentials => f.write_str(
                "URLs with a user name or password are refused; send credentials in a header",
            ),
            Deny::NoHost => f.write_str("the URL has no host"),
            Deny::Host(h) => write!(f, "host '{h}' is not in the plugin's allowlist_domains"),
            Deny::Port { host, port } => write!(
                f,
                "port {port} of '{host}' is not allowed (an entry without a port allows 80 and 443; list '{host}:{port}' to allow it)"
            ),
        }
    }
}

/// How a URL matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// The host as matched (punycode, no trailing dot).
    pub host: String,
    pub port: u16,
    /// An exact entry (name or IP) matched, not a wildcard: the operator
    /// named this host, so it may resolve to a non-public address.
    pub explicit: bool,
    /// The URL's host is an IP literal (no DNS involved).
    pub ip: Option<IpAddr>,
}

/// The effective allowlist of one plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    patterns: Vec<Pattern>,
}

impl Allowlist {
    /// The plugin's list narrowed by the global one: without a global
    /// list, what the plugin declared (shown at enable); without a plugin
    /// list, the global one; with both, the plugin's entries the global
    /// list covers.
    pub fn effective(global: Option<&[Pattern]>, plugin: Option<&[Pattern]>) -> Allowlist {
        let patterns = match (global, plugin) {
            (None, None) => Vec::new(),
            (None, Some(p)) => p.to_vec(),
            (Some(g), None) => g.to_vec(),
            (Some(g), Some(p)) => p
                .iter()
                .filter(|e| g.iter().any(|w| e.within(w)))
                .cloned()
                .collect(),
        };
        Allowlist { patterns }
    }

    /// Whether `name` (a host name as resolved) has an exact entry: the
    /// operator named it, so its addresses need not be public.
    pub fn names_exactly(&self, name: &str) -> bool {
        let name = normalize_domain(&name.to_ascii_lowercase());
        self.patterns
            .iter()
            .any(|p| matches!(&p.host, HostPattern::Exact(d) if *d == name))
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn entries(&self) -> Vec<String> {
        self.patterns.iter().map(|p| p.to_string()).collect()
    }

    /// Checks a URL given by a plugin (or a redirect target).
    pub fn check_str(&self, raw: &str) -> Result<(Url, Allowed), Deny> {
        let url = Url::parse(raw).map_err(|e| Deny::Unparsable(e.to_string()))?;
        let allowed = self.check(&url)?;
        Ok((url, allowed))
    }

    pub fn check(&self, url: &Url) -> Result<Allowed, Deny> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Deny::Scheme(url.scheme().to_string()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Deny::Credentials);
        }
        let port = url.port_or_known_default().ok_or(Deny::NoHost)?;
        let (host, ip) = match url.host().ok_or(Deny::NoHost)? {
            Host::Domain(d) => (normalize_domain(d), None),
            Host::Ipv4(ip) => (ip.to_string(), Some(IpAddr::V4(ip))),
            Host::Ipv6(ip) => (format!("[{ip}]"), Some(IpAddr::V6(ip))),
        };
        let mut host_matched = false;
        for p in &self.patterns {
            let (hit, explicit) = match (&p.host, ip) {
                (HostPattern::Ip(a), Some(b)) => (*a == b, true),
                (HostPattern::Exact(d), None) => (*d == host, true),
                (HostPattern::Wildcard(s), None) => (is_subdomain(&host, s), false),
                _ => (false, false),
            };
            if hit {
                host_matched = true;
                if p.allows_port(port) {
                    return Ok(Allowed {
                        host,
                        port,
                        explicit,
                        ip,
                    });
                }
            }
        }
        if host_matched {
            Err(Deny::Port { host, port })
        } else {
            Err(Deny::Host(host))
        }
    }
}

/// Whether `ip` is a public unicast address. Loopback, private,
/// link-local (cloud metadata), CGNAT, documentation, benchmark,
/// multicast and reserved ranges are not, nor IPv6 forms that embed a
/// non-public IPv4 address (mapped, NAT64, 6to4); IPv4-compatible and
/// Teredo addresses are refused outright.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b))
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && (c == 0 || c == 2))
        || (a == 192 && b == 88 && c == 99)
        || (a == 192 && b == 168)
        || (a == 198 && (b == 18 || b == 19))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    match s {
        // Unspecified, loopback and IPv4-compatible (deprecated).
        [0, 0, 0, 0, 0, 0, _, _] => false,
        // NAT64.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => is_public_v4(embedded(hi, lo)),
        // 6to4.
        [0x2002, hi, lo, ..] => is_public_v4(embedded(hi, lo)),
        // Teredo, documentation.
        [0x2001, 0, ..] | [0x2001, 0xdb8, ..] => false,
        // Discard-only.
        [0x100, 0, 0, 0, ..] => false,
        // Unique local, link-local, multicast.
        [first, ..] => {
            !((first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80 || (first >> 8) == 0xff)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Allowlist {
        let patterns: Vec<Pattern> = entries
            .iter()
            .map(|e| Pattern::parse(e).expect("valid"))
            .collect();
        Allowlist::effective(None, Some(&patterns))
    }

    #[test]
    fn entries_are_normalized_and_checked() {
        assert_eq!(
            Pattern::parse("API.Example.COM.")
                .expect("valid")
                .to_string(),
            "api.example.com"
        );
        assert_eq!(
            Pattern::parse("*.example.com").expect("valid").to_string(),
            "*.example.com"
        );
        assert_eq!(
            Pattern::parse("127.0.0.1:8080").expect("valid").to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            Pattern::parse("[::1]:80").expect("valid").to_string(),
            "[::1]:80"
        );
        assert_eq!(
            Pattern::parse("bücher.example").expect("valid").to_string(),
            "xn--bcher-kva.example"
        );
        for (bad, why) in [
            ("", "empty"),
            ("https://a.com", "not a URL"),
            ("*.com", "top-level"),
            ("a.*.com", "whole first label"),
            ("*.127.0.0.1", "wildcard on an IP"),
            ("a.com:99999", "invalid port"),
            ("a b.com", "not a valid host"),
        ] {
            let e = Pattern::parse(bad).expect_err("refused");
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn only_whole_labels_and_default_ports_match() {
        let l = list(&["api.example.com", "*.cdn.example.org", "127.0.0.1:8080"]);
        assert!(l.check_str("https://api.example.com/x").is_ok());
        assert!(l.check_str("https://API.EXAMPLE.COM./x").is_ok());
        assert!(l.check_str("http://api.example.com:80/").is_ok());
        assert!(
            !l.check_str("https://img.cdn.example.org/")
                .expect("valid")
                .1
                .explicit
        );
        assert!(
            l.check_str("http://127.0.0.1:8080/")
                .expect("valid")
                .1
                .explicit
        );
        for (url, deny) in [
            ("https://api.example.com@evil.com/", "user name or password"),
            ("https://evil.com#@api.example.com", "'evil.com'"),
            ("https://api.example.com.evil.com/", "not in the plugin's"),
            ("https://evilapi.example.com/", "not in the plugin's"),
            ("https://cdn.example.org/", "not in the plugin's"),
            ("https://user:pw@api.example.com/", "user name or password"),
            ("https://api.example.com:22/", "port 22"),
            ("http://127.0.0.1/", "port 80"),
            ("http://2130706433/", "port 80"),
            ("file:///etc/passwd", "scheme 'file'"),
            ("gopher://api.example.com/", "scheme 'gopher'"),
            ("http://[::ffff:127.0.0.1]:8080/", "not in the plugin's"),
            ("not a url", "cannot be parsed"),
        ] {
            let e = l.check_str(url).expect_err("refused").to_string();
            assert!(e.contains(deny), "{url}: {e}");
        }
        // Other notations of 127.0.0.1 parse to the same address: listed
        // exactly (with its port), they are the same host.
        assert!(l.check_str("http://0x7f.1:8080/").is_ok());
    }

    #[test]
    fn the_global_list_narrows_the_plugin_list() {
        let g = [
            Pattern::parse("*.example.com").expect("valid"),
            Pattern::parse("b.org").expect("valid"),
        ];
        let p = [
            Pattern::parse("api.example.com").expect("valid"),
            Pattern::parse("*.x.example.com").expect("valid"),
            Pattern::parse("b.org").expect("valid"),
            Pattern::parse("c.org").expect("valid"),
            Pattern::parse("example.com").expect("valid"),
        ];
        let e = Allowlist::effective(Some(&g), Some(&p)).entries();
        assert_eq!(e, ["api.example.com", "*.x.example.com", "b.org"]);
        assert_eq!(Allowlist::effective(None, Some(&p)).entries().len(), 5);
        assert_eq!(Allowlist::effective(Some(&g), None).entries().len(), 2);
        assert!(Allowlist::effective(None, None).is_empty());
    }

    #[test]
    fn non_public_addresses_are_recognized() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2001:db8::1",
            "::127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().expect("valid")), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip.parse().expect("valid")), "{ip}");
        }
    }
}
