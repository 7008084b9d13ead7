//! Where a result file may be fetched from. Its URL comes in a provider's answer, so it is
//! checked before anything is sent to it: HTTPS only, to a host the configuration allows
//! (`download_hosts`; Deepvue's default is its S3 bucket's domain), and never to a private,
//! loopback or link-local address, which would let an answer point the tool at the machine's
//! own network. The provider's own origin (its base URL) is always allowed: that is how the
//! sandbox, on loopback, serves its files. Redirects are never followed (the client has none),
//! and the body is capped in size and in time.

use std::net::IpAddr;

use reqwest::Url;

use crate::config::DownloadPolicy;

impl DownloadPolicy {
    /// Checks `url` before it is fetched; the refusal says why, never the URL (it is a secret).
    pub async fn check(&self, url: &str) -> Result<(), String> {
        let url = Url::parse(url).map_err(|_| "the result file's URL is not a URL".to_string())?;
        if same_origin(&url, &self.base) {
            return Ok(());
        }
        if url.scheme() != "https" {
            return Err(format!(
                "the result file's URL is {}, not https: not fetched",
                url.scheme()
            ));
        }
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        if !self.hosts.iter().any(|p| host_matches(p, &host)) {
            return Err(format!(
                "the result file is on {host}, which download_hosts does not allow: not fetched"
            ));
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?;
        for addr in addrs {
            if !is_public(addr.ip()) {
                return Err(format!(
                    "{host} resolves to a private or local address ({}): not fetched",
                    addr.ip()
                ));
            }
        }
        Ok(())
    }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// `*.amazonaws.com` matches any host under it; anything else matches itself.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim().to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(&format!(".{suffix}")),
        None => host == pattern,
    }
}

/// An address on the public internet: not loopback, private, link-local, shared (CGNAT),
/// unspecified, broadcast, multicast or documentation space.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy() -> DownloadPolicy {
        DownloadPolicy {
            base: Url::parse("http://127.0.0.1:8080").unwrap(),
            hosts: vec!["*.amazonaws.com".into(), "files.example.in".into()],
            max_bytes: 1 << 20,
            max_time: Duration::from_secs(60),
        }
    }

    #[test]
    fn addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["52.95.110.1", "8.8.8.8", "2600:1f18::1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn hosts() {
        assert!(host_matches(
            "*.amazonaws.com",
            "bucket.s3.ap-south-1.amazonaws.com"
        ));
        assert!(!host_matches("*.amazonaws.com", "amazonaws.com"));
        assert!(!host_matches("*.amazonaws.com", "evilamazonaws.com"));
        assert!(host_matches("files.example.in", "files.example.in"));
        assert!(!host_matches("files.example.in", "x.files.example.in"));
    }

    #[tokio::test]
    async fn urls() {
        let p = policy();
        assert!(
            p.check("http://127.0.0.1:8080/out/1.csv?sig=x")
                .await
                .is_ok(),
            "the provider's own origin"
        );
        for (url, why) in [
            ("http://bucket.s3.amazonaws.com/x.csv", "not https"),
            ("https://evil.example.com/x.csv", "does not allow"),
            ("http://127.0.0.1:9999/x.csv", "not https"),
            ("https://127.0.0.1/x.csv", "does not allow"),
            ("file:///etc/passwd", "not https"),
            ("not a url", "not a URL"),
        ] {
            let err = p.check(url).await.unwrap_err();
            assert!(err.contains(why), "{url}: {err}");
            assert!(!err.contains("x.csv"), "the URL is never repeated: {err}");
        }
        let local = DownloadPolicy {
            hosts: vec!["localhost".into()],
            ..policy()
        };
        let err = local.check("https://localhost/x.csv").await.unwrap_err();
        assert!(err.contains("private or local"), "{err}");
    }
}
