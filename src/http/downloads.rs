//! Where a result file may be fetched from. Its URL comes in a provider's answer, so it is
//! checked before anything is sent to it: HTTPS only, to a host the configuration allows
//! (`download_hosts`; Deepvue's default is its S3 bucket's domain), and never to a private,
//! loopback or link-local address, which would let an answer point the tool at the machine's
//! own network. The provider's own origin (its base URL) is always allowed: that is how the
//! sandbox, on loopback, serves its files. Redirects are never followed (the client has none),
//! and the body is capped in size and in time.

use std::net::IpAddr;
use std::path::Path;

use reqwest::Url;

use super::{Answer, Api, Billing, CallError, Request, Slot};
use crate::config::DownloadPolicy;
use crate::outcome::Reason;
use crate::quota::gate::Priority;
use crate::secret::Secret;

impl Api {
    /// Downloads a pre-signed URL: no credentials go with it (they would make S3 refuse the
    /// request). A body up to `DOWNLOAD_IN_MEMORY` is returned in the answer and nothing is
    /// written; a larger one is streamed to `dest` as it arrives, never whole in memory, and
    /// the answer's body is empty (`dest` exists then, and only then). A non-2xx answer is
    /// returned with its body and nothing written. The URL must pass the download policy
    /// (the module docs); the body is capped in size and in time, and a body cut short (fewer
    /// bytes than announced, a chunked body without its end) is a transport failure, fetched
    /// again.
    pub async fn download(
        &self,
        label: &'static str,
        url: &Secret,
        dest: &Path,
    ) -> Result<Answer, CallError> {
        let refused = |reason: Reason, message: String| CallError::GaveUp {
            label,
            reason: reason.into(),
            message,
            attempts: 0,
        };
        if let Err(why) = self.downloads.check(url.expose()).await {
            return Err(refused(Reason::DOWNLOAD_REFUSED, why));
        }
        let fetched = tokio::time::timeout(self.downloads.max_time, self.fetch(label, url, dest));
        match fetched.await {
            Ok(answer) => answer,
            Err(_) => Err(refused(
                Reason::DOWNLOAD_TIMEOUT,
                format!(
                    "the result file took longer than {} s to download (download_timeout_secs)",
                    self.downloads.max_time.as_secs()
                ),
            )),
        }
    }

    async fn fetch(
        &self,
        label: &'static str,
        url: &Secret,
        dest: &Path,
    ) -> Result<Answer, CallError> {
        let target = url.expose().to_string();
        let build = move |c: &reqwest::Client| c.get(&target);
        let req = Request {
            label,
            billing: Billing::Free,
            priority: Priority::High,
            authenticated: false,
            build: &build,
        };
        self.exchange(&req, Some(dest), Slot::Take).await
    }
}

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
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use reqwest::header::HeaderMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::{ConfigFile, ProviderSettings};
    use crate::http::{FixedHeaders, Intent, deepvue};
    use crate::quota::gate::{Gate, GateSettings};

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

    /// Requests `/failing` got.
    static FAILED: AtomicUsize = AtomicUsize::new(0);

    /// A server that cuts its first answer to `/short` off after 10 of 100 bytes, announces
    /// 3 MiB on `/big`, sends a byte more than is kept in memory on `/large`, streams without
    /// end on `/endless`, and answers 503 to `/failing`.
    async fn server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shorts = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let shorts = shorts.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let body = [b'x'; 100];
                    if request.starts_with("POST /failing") {
                        FAILED.fetch_add(1, Ordering::SeqCst);
                        let head = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
                        let _ = conn.write_all(head.as_bytes()).await;
                    } else if request.starts_with("GET /large") {
                        let large = vec![b'z'; super::super::answer::DOWNLOAD_IN_MEMORY + 1];
                        let head =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", large.len());
                        let _ = conn.write_all(head.as_bytes()).await;
                        let _ = conn.write_all(&large).await;
                    } else if request.starts_with("GET /short") {
                        let head = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
                        let _ = conn.write_all(head.as_bytes()).await;
                        let cut = if shorts.fetch_add(1, Ordering::SeqCst) == 0 {
                            10
                        } else {
                            100
                        };
                        let _ = conn.write_all(&body[..cut]).await;
                    } else if request.starts_with("GET /big") {
                        let head = "HTTP/1.1 200 OK\r\nContent-Length: 3145728\r\n\r\n";
                        let _ = conn.write_all(head.as_bytes()).await;
                    } else {
                        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
                        let _ = conn.write_all(head.as_bytes()).await;
                        let chunk = format!("10000\r\n{}\r\n", "y".repeat(0x10000));
                        while conn.write_all(chunk.as_bytes()).await.is_ok() {}
                    }
                });
            }
        });
        url
    }

    async fn api(base: &str) -> Api {
        api_capped(base, 1).await
    }

    /// An API whose downloads are capped at `max_mb`.
    async fn api_capped(base: &str, max_mb: u64) -> Api {
        let config = ConfigFile::parse(
            &format!("[providers.deepvue]\nmax_download_mb = {max_mb}\nmax_attempts = 3\n"),
            Path::new("t.toml"),
        )
        .unwrap();
        let env = |k: &str| match k {
            "DEEPVUE_BASE_URL" => Some(base.to_string()),
            "DEEPVUE_CLIENT_ID" | "DEEPVUE_CLIENT_SECRET" => Some("x".into()),
            _ => None,
        };
        let settings = ProviderSettings::resolve(&deepvue::DEFAULTS, &config, &env, None).unwrap();
        let gate = Gate::new(&GateSettings::of(&settings), vec![], None);
        let auth = Box::new(FixedHeaders::new(HeaderMap::new(), |_| false));
        Api::new(&settings, auth, gate, Arc::default(), Arc::default()).unwrap()
    }

    #[tokio::test]
    async fn downloads_cut_short_are_fetched_again_and_oversized_ones_refused() {
        let base = server().await;
        let api = api(&base).await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");

        let got = api
            .download("t", &Secret::new(format!("{base}/short")), &dest)
            .await
            .unwrap();
        assert_eq!(got.attempts, 2, "the cut answer was fetched again");
        assert_eq!(got.body.len(), 100, "a small file is kept in memory");
        assert!(!dest.exists(), "and nothing is written");

        for path in ["/big", "/endless"] {
            let err = api
                .download("t", &Secret::new(format!("{base}{path}")), &dest)
                .await
                .unwrap_err();
            assert!(
                matches!(&err, CallError::GaveUp { reason, .. } if reason.as_str() == "download_too_large"),
                "{path}: {err}"
            );
        }

        // An endless answer to an API call is cut off, not read into memory: a free call
        // gives up, a paid one is held (it may have been billed).
        struct Noted;
        impl Intent for Noted {
            fn record(
                &self,
                _at: std::time::Instant,
            ) -> Pin<Box<dyn Future<Output = Result<Duration, CallError>> + Send + '_>>
            {
                Box::pin(async { Ok(Duration::ZERO) })
            }

            fn again(&self) -> bool {
                true
            }
        }
        for (billing, paid) in [(Billing::Free, false), (Billing::Paid(&Noted), true)] {
            let url = api.url("/endless");
            let build = move |c: &reqwest::Client| c.get(url.clone());
            let err = api
                .call("t", billing, Priority::High, &build)
                .await
                .unwrap_err();
            let held = matches!(err, CallError::Unconfirmed { .. });
            let gave_up = matches!(&err, CallError::GaveUp { reason, .. } if reason.as_str() == "answer_too_large");
            assert!(if paid { held } else { gave_up }, "{err}");
        }

        let err = api
            .download(
                "t",
                &Secret::new("https://elsewhere.example/f.csv?X-Amz-Signature=s"),
                &dest,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CallError::GaveUp { reason, .. } if reason.as_str() == "download_refused"),
            "{err}"
        );
        assert!(!err.to_string().contains("Signature"), "{err}");
    }

    /// A result file larger than what is kept in memory goes to the disk as it arrives, and
    /// whole; a stale file from an earlier attempt is replaced, never read.
    #[tokio::test]
    async fn a_large_download_is_streamed_to_the_disk() {
        let base = server().await;
        let api = api_capped(&base, 64).await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        std::fs::write(&dest, "stale").unwrap();
        let got = api
            .download("t", &Secret::new(format!("{base}/large")), &dest)
            .await
            .unwrap();
        assert!(got.body.is_empty());
        let file = std::fs::read(&dest).unwrap();
        assert_eq!(file.len(), super::super::answer::DOWNLOAD_IN_MEMORY + 1);
        assert!(file.iter().all(|&b| b == b'z'));
        std::fs::write(&dest, "stale").unwrap();
        let small = api
            .download("t", &Secret::new(format!("{base}/short")), &dest)
            .await
            .unwrap();
        assert_eq!(small.body.len(), 100);
        assert!(!dest.exists(), "the stale file went");
    }

    /// A paid request the provider failed (503) is sent again only while the run's cap has
    /// room for another paid call: here one more, of the three attempts allowed.
    #[tokio::test]
    async fn a_failed_paid_request_is_sent_again_only_within_the_cap() {
        struct Capped(AtomicUsize);
        impl Intent for Capped {
            fn record(
                &self,
                _at: std::time::Instant,
            ) -> Pin<Box<dyn Future<Output = Result<Duration, CallError>> + Send + '_>>
            {
                Box::pin(async { Ok(Duration::ZERO) })
            }

            fn again(&self) -> bool {
                self.0.fetch_add(1, Ordering::SeqCst) == 0
            }
        }
        let base = server().await;
        let api = api(&base).await;
        let intent = Capped(AtomicUsize::new(0));
        let url = api.url("/failing");
        let build = move |c: &reqwest::Client| c.post(url.clone());
        let err = api
            .call("t", Billing::Paid(&intent), Priority::Low, &build)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CallError::GaveUp { reason, attempts: 2, .. } if reason.as_str() == "paid_call_limit"),
            "{err}"
        );
        assert_eq!(
            FAILED.load(Ordering::SeqCst),
            2,
            "sent once, and once again"
        );
    }
}
