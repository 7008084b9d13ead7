//! The HTTP client every check uses: quota gate, concurrency, authentication and the retry
//! policy live here once, so that no check carries its own copy.
//!
//! What is retried: 429, 5xx and 408 answers, failures to connect, and (for calls that cost
//! nothing) any transport failure. What is not: a business answer (any other 4xx, returned to
//! the check to read), and a paid call whose request may have reached the provider before the
//! connection failed or went silent — resending that could bill twice, so it comes back as
//! [`CallError::Unconfirmed`] and the row is held.
//!
//! Retries are disciplined three ways: exponential backoff with full jitter up to a cap and a
//! maximum number of attempts per call; a retry budget, so that retries stay a set share of
//! the calls and a sick provider is not hammered; and the gate's circuit breaker, fed with
//! every answer, which stops all calls when most recent ones fail. A 429 is not charged to
//! the budget: at a configured quota a single one is a pacing miss, and the request goes again
//! first at the next slot while the gate widens its margin; after a run of them or a
//! `Retry-After`, the gate holds every worker until the provider's time. Either way its retry
//! costs the provider nothing.
//!
//! A paid request's intent is recorded between its grant and its send ([`Intent`]): a run
//! killed while requests wait their turn holds none of them, only those that may have left.

pub mod attestr;
pub mod cashfree;
pub mod deepvue;
pub mod downloads;
pub mod equal;
pub mod ratelimit;

use std::error::Error as _;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::config::ProviderSettings;
use crate::quota::gate::{Ask, Gate, GateError, Priority, Refusal, Signal};
use crate::quota::hints::Hints;
use crate::quota::retry::{Backoff, Budget};
use crate::secret::Secret;
use crate::stats::Stats;
use crate::util::stop::Stop;

/// Whether a request costs money. Decides what may be resent after a lost answer, and what
/// must be recorded before it leaves.
#[derive(Clone, Copy)]
pub enum Billing<'a> {
    /// A paid request, and what records its intent: committed between the quota's grant and
    /// the send, so that a run killed while the request waits its turn holds nothing.
    Paid(&'a dyn Intent),
    Free,
}

impl Billing<'_> {
    fn paid(&self) -> bool {
        matches!(self, Billing::Paid(_))
    }
}

/// The durable record that a paid request is about to leave. The engine makes one per paid
/// call (its rows, its batch, the name it goes under); the client commits it once, after the
/// grant and before the first send.
pub trait Intent: Send + Sync {
    fn record(&self) -> Pin<Box<dyn Future<Output = Result<(), CallError>> + Send + '_>>;
}

/// Builds the HTTP request afresh for each attempt (a multipart body cannot be replayed).
pub type Build<'a> = &'a (dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync);

/// One logical call.
pub struct Request<'a> {
    /// What the call is, for logs and errors ("udyam submit"); never the URL, which can carry
    /// identifiers and signatures.
    pub label: &'static str,
    pub billing: Billing<'a>,
    pub priority: Priority,
    /// Whether the provider's credentials go with it.
    pub authenticated: bool,
    pub build: Build<'a>,
}

/// A provider's answer that is not a transport-level failure.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// How many times the request was sent.
    pub attempts: u32,
}

/// The status and size only: a body can carry a token (the authorize answer) or personal data.
impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("body_bytes", &self.body.len())
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Answer {
    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// An answer as a check's reader sees it, for tests of the readers.
    #[cfg(test)]
    pub fn sample(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).expect("a valid status"),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
            attempts: 1,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The run cannot go on (credentials rejected): stop everything.
    #[error("{0}")]
    Fatal(String),
    /// The retry policy ran out; the row becomes `error` and a later run tries again.
    #[error("{label}: gave up after {attempts} attempts: {message}")]
    GaveUp {
        label: &'static str,
        reason: String,
        message: String,
        attempts: u32,
    },
    /// A paid request may have reached the provider but no answer came back.
    #[error("{label}: no answer to a paid request: {message}")]
    Unconfirmed {
        label: &'static str,
        message: String,
        attempts: u32,
    },
    #[error("the provider's daily quota is used up")]
    DayQuota,
    /// The circuit breaker gave up on the provider: nothing more is sent in this run.
    #[error("the provider kept failing; no more calls in this run")]
    ProviderDown,
    #[error("the run is stopping")]
    Stopped,
}

impl From<GateError> for CallError {
    fn from(e: GateError) -> Self {
        match e {
            GateError::DayExhausted => CallError::DayQuota,
            GateError::ProviderDown => CallError::ProviderDown,
            GateError::Closed => CallError::Stopped,
        }
    }
}

/// A provider's own ways: how its calls are authenticated, and what its refusals mean beyond
/// the HTTP status.
pub trait Provider: Send + Sync {
    /// Makes sure fresh credentials are at hand, obtaining or renewing them when needed.
    fn refresh<'a>(
        &'a self,
        api: &'a Api,
    ) -> Pin<Box<dyn Future<Output = Result<(), CallError>> + Send + 'a>>;

    /// The headers of an authenticated call, if fresh credentials are at hand. Never waits:
    /// it is read between the quota grant and the send.
    fn headers(&self) -> Option<HeaderMap>;

    /// The provider answered 401 to a call made with `headers`: forget them, so that the next
    /// call authenticates afresh.
    fn rejected(&self, headers: &HeaderMap);

    /// Whether a 429 says the day's quota is spent (Attestr's 4293 and 4294) rather than "slow
    /// down": waiting would not help, so the run stops sending for today.
    fn day_spent(&self, _answer: &Answer) -> bool {
        false
    }
}

/// Credentials that are the same on every call: a key pair or a token in headers.
pub struct FixedHeaders {
    headers: HeaderMap,
    day_spent: fn(&Answer) -> bool,
}

impl FixedHeaders {
    pub fn new(headers: HeaderMap, day_spent: fn(&Answer) -> bool) -> FixedHeaders {
        FixedHeaders { headers, day_spent }
    }
}

impl Provider for FixedHeaders {
    fn refresh<'a>(
        &'a self,
        _api: &'a Api,
    ) -> Pin<Box<dyn Future<Output = Result<(), CallError>> + Send + 'a>> {
        Box::pin(async { Ok(()) })
    }

    fn headers(&self) -> Option<HeaderMap> {
        Some(self.headers.clone())
    }

    /// Nothing to renew: a second refusal ends the run with the credentials named.
    fn rejected(&self, _headers: &HeaderMap) {}

    fn day_spent(&self, answer: &Answer) -> bool {
        (self.day_spent)(answer)
    }
}

/// The provider behind a check's settings, set up before any call so that a bad key file or
/// credential is said at once.
pub fn provider(
    settings: &crate::config::ProviderSettings,
) -> Result<Box<dyn Provider>, CallError> {
    Ok(match settings.defaults.name {
        "attestr" => Box::new(attestr::provider(settings)?),
        "equal" => Box::new(equal::provider(settings)?),
        "cashfree" => Box::new(
            cashfree::CashfreeAuth::new(settings).map_err(|e| CallError::Fatal(e.to_string()))?,
        ),
        _ => Box::new(deepvue::DeepvueAuth::new(
            settings.credentials[0].clone(),
            settings.credentials[1].clone(),
        )),
    })
}

/// One provider, reached within its quota.
pub struct Api {
    pub provider: &'static str,
    http: reqwest::Client,
    base: Url,
    auth: Box<dyn Provider>,
    /// The environment variables of the credentials, for the message when they are refused.
    credential_vars: String,
    gate: Gate,
    slots: Semaphore,
    max_attempts: u32,
    backoff: Backoff,
    budget: Budget,
    /// Whether the provider counts polls and downloads against its quota.
    polls_count: bool,
    downloads: crate::config::DownloadPolicy,
    pub stats: Arc<Stats>,
    stop: Arc<Stop>,
}

impl Api {
    pub fn new(
        settings: &ProviderSettings,
        auth: Box<dyn Provider>,
        gate: Gate,
        stats: Arc<Stats>,
        stop: Arc<Stop>,
    ) -> Result<Api, reqwest::Error> {
        // A read timeout, not a whole-request deadline: a large result file may take minutes
        // to download, but a connection that goes silent is dead.
        // No redirects: reqwest would carry the custom x-api-key header (the client secret)
        // to wherever a redirect points.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .pool_max_idle_per_host(settings.concurrency)
            .user_agent(concat!("bulkverify/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Api {
            provider: settings.defaults.name,
            credential_vars: settings.defaults.credential_vars(),
            http,
            base: settings.base_url.clone(),
            auth,
            gate,
            slots: Semaphore::new(settings.concurrency),
            max_attempts: settings.max_attempts,
            backoff: Backoff {
                base: std::time::Duration::from_millis(500),
                cap: std::time::Duration::from_secs(30),
            },
            budget: Budget::new(settings.retry_budget),
            polls_count: settings.polls_count,
            downloads: settings.downloads.clone(),
            stats,
            stop,
        })
    }

    /// An endpoint of the provider: `path` is relative to the base URL.
    pub fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let base_path = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base_path}/{}", path.trim_start_matches('/')));
        url
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Sends a request under the provider's quota, authentication and retry policy.
    pub async fn send(&self, req: &Request<'_>) -> Result<Answer, CallError> {
        self.exchange(req, None, Slot::Take).await
    }

    /// A check's authenticated call: `send` with the request the checks all make.
    pub async fn call(
        &self,
        label: &'static str,
        billing: Billing<'_>,
        priority: Priority,
        build: Build<'_>,
    ) -> Result<Answer, CallError> {
        self.send(&Request {
            label,
            billing,
            priority,
            authenticated: true,
            build,
        })
        .await
    }

    /// Sends an authenticator's own request (a token renewal) under the quota and the retry
    /// policy, but without a concurrency slot: the requests waiting for the new token hold the
    /// slots, so waiting for one could wait for ever.
    pub async fn send_for_credentials(&self, req: &Request<'_>) -> Result<Answer, CallError> {
        self.exchange(req, None, Slot::Bypass).await
    }

    /// Downloads a pre-signed URL to `dest`, streamed: no credentials go with it (they would
    /// make S3 refuse the request), and its body never sits in memory whole. A non-2xx answer
    /// is returned with its body and nothing written. The URL must pass the download policy
    /// ([`downloads`]); the body is capped in size and in time, and a body cut short (fewer
    /// bytes than announced, a chunked body without its end) is a transport failure, fetched
    /// again.
    pub async fn download(
        &self,
        label: &'static str,
        url: &Secret,
        dest: &Path,
    ) -> Result<Answer, CallError> {
        let refused = |reason: &str, message: String| CallError::GaveUp {
            label,
            reason: reason.into(),
            message,
            attempts: 0,
        };
        if let Err(why) = self.downloads.check(url.expose()).await {
            return Err(refused("download_refused", why));
        }
        let fetched = tokio::time::timeout(self.downloads.max_time, self.fetch(label, url, dest));
        match fetched.await {
            Ok(answer) => answer,
            Err(_) => Err(refused(
                "download_timeout",
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

    async fn exchange(
        &self,
        req: &Request<'_>,
        dest: Option<&Path>,
        slot: Slot,
    ) -> Result<Answer, CallError> {
        let counted = req.priority == Priority::Low || self.polls_count;
        // Requests sent, and of those the failures that count against max_attempts.
        let (mut attempts, mut failures) = (0u32, 0u32);
        // 401s in a row: a token can expire while its request waits for the quota gate, so a
        // 401 renews the token and tries again; only a run of them means the credentials are bad.
        let mut refused = 0u32;
        // Whether the paid request's intent is durable, and whether the provider refused it
        // once for pacing (then it goes first at the next slot).
        let (mut recorded, mut again) = (false, false);
        loop {
            if self.stop.is_set() && (req.priority == Priority::Low || attempts > 0) {
                return Err(CallError::Stopped);
            }
            // Credentials are renewed before queueing, then a slot and the quota grant; a paid
            // request records its intent (granted a little ahead for it) and waits for its
            // slot; then nothing slow before the send: the provider's arrival times stay as
            // close to the gate's pacing as the network allows. A token that went stale while
            // its request waited gives up the grant (under-using the quota is safe; sending
            // late is not) and is renewed on the next round.
            if req.authenticated {
                self.auth.refresh(self).await?;
            }
            let (headers, outcome, grant) = {
                let _slot = match slot {
                    Slot::Take => Some(self.slots.acquire().await.map_err(|_| CallError::Stopped)?),
                    Slot::Bypass => None,
                };
                let ask = Ask {
                    priority: req.priority,
                    counted,
                    paid: req.billing.paid() && !recorded,
                    again,
                };
                let mut grant = self.gate.acquire(ask).await?;
                if let Billing::Paid(intent) = req.billing
                    && !recorded
                {
                    let started = std::time::Instant::now();
                    intent.record().await?;
                    self.gate.committed_in(started.elapsed());
                    recorded = true;
                }
                if !grant.until_slot().await {
                    // Its slot passed while the intent committed: the next one is asked for,
                    // the same request, first in line.
                    tracing::debug!(
                        "{} {}: the slot passed while the intent committed",
                        self.provider,
                        req.label
                    );
                    Stats::add(&self.stats.slots_missed, 1);
                    again = true;
                    continue;
                }
                if self.stop.is_set() && (req.priority == Priority::Low || attempts > 0) {
                    return Err(CallError::Stopped);
                }
                let headers = if req.authenticated {
                    match self.auth.headers() {
                        Some(h) => Some(h),
                        None => continue,
                    }
                } else {
                    None
                };
                let mut builder = (req.build)(&self.http);
                if let Some(h) = &headers {
                    builder = builder.headers(h.clone());
                }
                attempts += 1;
                again = false;
                // A resend after a 401 is the same call again: it deposits nothing more.
                if attempts == 1 && refused == 0 {
                    self.budget.deposit();
                } else {
                    Stats::add(&self.stats.retries, 1);
                }
                Stats::add(&self.stats.calls, 1);
                let dest = dest.map(|d| (d, self.downloads.max_bytes));
                (headers, receive(builder, dest).await, grant)
            };
            let failure = match outcome {
                Ok(answer) => {
                    let status = answer.status;
                    let hints = Hints::read(&answer.headers, SystemTime::now());
                    if status == StatusCode::TOO_MANY_REQUESTS && self.auth.day_spent(&answer) {
                        grant.report(Signal::Answered(hints));
                        self.gate.exhaust();
                        Stats::add(&self.stats.rate_limited, 1);
                        return Err(CallError::DayQuota);
                    } else if status == StatusCode::TOO_MANY_REQUESTS {
                        // A pacing miss goes again first at the next slot; after a run of
                        // 429s or a Retry-After, the gate holds everyone until the time.
                        again = grant.report(Signal::RateLimited(hints)) == Some(Refusal::Miss);
                        Stats::add(&self.stats.rate_limited, 1);
                        Failure::RateLimited
                    } else if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
                        grant.report(Signal::Failed { timeout: false });
                        Failure::Other {
                            reason: format!("http_{}", status.as_u16()),
                            message: format!(
                                "the provider answered HTTP {}{}",
                                status.as_u16(),
                                provider_words(&answer)
                                    .map(|w| format!(": {w}"))
                                    .unwrap_or_default()
                            ),
                        }
                    } else {
                        grant.report(Signal::Answered(hints));
                        if status == StatusCode::UNAUTHORIZED
                            && let Some(h) = &headers
                            && refused < 2
                        {
                            // The call was refused, not processed: safe to send again with
                            // fresh credentials, and not counted as an attempt.
                            self.auth.rejected(h);
                            refused += 1;
                            attempts -= 1;
                            continue;
                        }
                        if req.authenticated
                            && matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
                        {
                            return Err(self.credentials_refused(req, &answer));
                        }
                        return Ok(Answer { attempts, ..answer });
                    }
                }
                Err(Failed::TooLarge(max)) if dest.is_some() => {
                    return Err(CallError::GaveUp {
                        label: req.label,
                        reason: "download_too_large".into(),
                        message: format!(
                            "the result file is larger than {} MiB (max_download_mb): not \
                             fetched",
                            max / (1024 * 1024)
                        ),
                        attempts,
                    });
                }
                Err(Failed::TooLarge(max)) => {
                    let message = format!(
                        "the provider's answer passed {} MiB, far beyond any answer of this \
                         API: not read",
                        max / (1024 * 1024)
                    );
                    // The provider answered, so a paid call may have been billed: never resent.
                    return Err(if req.billing.paid() {
                        CallError::Unconfirmed {
                            label: req.label,
                            message,
                            attempts,
                        }
                    } else {
                        CallError::GaveUp {
                            label: req.label,
                            reason: "answer_too_large".into(),
                            message,
                            attempts,
                        }
                    });
                }
                Err(Failed::Local(e)) => {
                    return Err(CallError::Fatal(format!(
                        "{}: cannot write the downloaded file ({e}); free disk space and run \
                         the same command again",
                        req.label
                    )));
                }
                Err(Failed::Transport { error, sent }) => {
                    grant.report(Signal::Failed {
                        timeout: error.is_timeout(),
                    });
                    let message = describe(&error);
                    if sent && req.billing.paid() {
                        return Err(CallError::Unconfirmed {
                            label: req.label,
                            message,
                            attempts,
                        });
                    }
                    let reason = if sent {
                        "transport_error"
                    } else {
                        "connect_failed"
                    };
                    Failure::Other {
                        reason: reason.to_string(),
                        message,
                    }
                }
            };
            let (reason, message) = match &failure {
                Failure::RateLimited => (
                    "rate_limited",
                    "the provider answered 429 (rate limit exceeded)",
                ),
                Failure::Other { reason, message } => (reason.as_str(), message.as_str()),
            };
            tracing::debug!(
                "{} {}: attempt {attempts}: {message}",
                self.provider,
                req.label
            );
            let gave_up = |message: String| CallError::GaveUp {
                label: req.label,
                reason: reason.to_string(),
                message,
                attempts,
            };
            // After a 429 the gate decides when the request goes again: no wait here, no
            // charge to the budget, and no attempt used up (the provider did not process it);
            // a provider that keeps refusing trips the gate's breaker instead.
            if let Failure::Other { .. } = failure {
                failures += 1;
                if failures >= self.max_attempts {
                    return Err(gave_up(message.to_string()));
                }
                if !self.budget.withdraw() {
                    Stats::add(&self.stats.retries_denied, 1);
                    return Err(gave_up(format!(
                        "{message}; not retried: retries are capped at a share of calls \
                         (retry_budget) while the provider fails this often"
                    )));
                }
                if !self.stop.sleep(self.backoff.delay(failures - 1)).await {
                    return Err(CallError::Stopped);
                }
            }
        }
    }

    fn credentials_refused(&self, req: &Request<'_>, answer: &Answer) -> CallError {
        let advice = if answer.status == StatusCode::FORBIDDEN {
            format!(
                "check that the account behind {} may use this API and that this machine's IP \
                 address is on the provider's allow-list",
                self.credential_vars
            )
        } else {
            format!("check {}", self.credential_vars)
        };
        CallError::Fatal(format!(
            "{} refused the credentials on {} (HTTP {}{}); {advice}",
            self.provider,
            req.label,
            answer.status.as_u16(),
            provider_words(answer)
                .map(|w| format!(": {w}"))
                .unwrap_or_default(),
        ))
    }
}

/// Why an attempt got no usable answer.
enum Failure {
    /// A 429: the gate decides when the request goes again.
    RateLimited,
    /// A 5xx, a 408 or a transport failure: waited out with backoff, under the budget.
    Other { reason: String, message: String },
}

/// Whether a request takes one of the provider's concurrency slots.
#[derive(Clone, Copy)]
enum Slot {
    Take,
    Bypass,
}

/// Why no answer came back.
enum Failed {
    /// Below HTTP. `sent` is false only when the request provably never left (the connection
    /// was never made).
    Transport { error: reqwest::Error, sent: bool },
    /// The answer could not be written to disk.
    Local(std::io::Error),
    /// The body passed this many bytes.
    TooLarge(u64),
}

/// The largest API answer read (result files have their own cap): a JSON answer of these APIs
/// is kilobytes, so this only stops a body that would exhaust memory.
const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// Sends and reads the answer; with `dest`, a 2xx body is streamed to that file, up to a size.
async fn receive(
    builder: reqwest::RequestBuilder,
    dest: Option<(&Path, u64)>,
) -> Result<Answer, Failed> {
    let transport = |error: reqwest::Error| Failed::Transport {
        sent: !error.is_connect(),
        error,
    };
    let mut resp = builder.send().await.map_err(transport)?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = match dest {
        Some((path, max)) if status.is_success() => {
            if resp.content_length().is_some_and(|n| n > max) {
                return Err(Failed::TooLarge(max));
            }
            let mut out = crate::util::fs::create_private_file_async(path)
                .await
                .map_err(Failed::Local)?;
            let mut written = 0u64;
            while let Some(bytes) = resp.chunk().await.map_err(transport)? {
                written += bytes.len() as u64;
                if written > max {
                    return Err(Failed::TooLarge(max));
                }
                out.write_all(&bytes).await.map_err(Failed::Local)?;
            }
            out.flush().await.map_err(Failed::Local)?;
            Bytes::new()
        }
        _ => {
            if resp.content_length().is_some_and(|n| n > MAX_ANSWER_BYTES) {
                return Err(Failed::TooLarge(MAX_ANSWER_BYTES));
            }
            let mut body = Vec::new();
            while let Some(bytes) = resp.chunk().await.map_err(transport)? {
                if (body.len() + bytes.len()) as u64 > MAX_ANSWER_BYTES {
                    return Err(Failed::TooLarge(MAX_ANSWER_BYTES));
                }
                body.extend_from_slice(&bytes);
            }
            Bytes::from(body)
        }
    };
    Ok(Answer {
        status,
        headers,
        body,
        attempts: 0,
    })
}

/// A transport error's words, without the URL (which can carry identifiers and signatures).
fn describe(error: &reqwest::Error) -> String {
    let mut words = if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "could not connect".to_string()
    } else {
        "connection failed".to_string()
    };
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !words.contains(&text) && !text.contains("://") {
            words.push_str(": ");
            words.push_str(&text);
        }
        source = s.source();
    }
    words
}

/// The provider's own words in an error body: `detail` or `message`, as most of them send.
pub fn provider_words(answer: &Answer) -> Option<String> {
    let v = answer.json()?;
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .filter_map(|i| i.get("msg").and_then(|m| m.as_str()).map(str::to_owned))
                .collect();
            (!parts.is_empty()).then(|| parts.join("; "))
        }
        _ => None,
    };
    ["message", "detail", "error"]
        .iter()
        .find_map(|k| v.get(k).and_then(text))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::ConfigFile;
    use crate::quota::gate::GateSettings;

    /// A server that cuts its first answer to `/short` off after 10 of 100 bytes, announces
    /// 3 MiB on `/big`, and streams without end on `/endless`.
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
                    if request.starts_with("GET /short") {
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
        let config = ConfigFile::parse(
            "[providers.deepvue]\nmax_download_mb = 1\nmax_attempts = 3\n",
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
        assert_eq!(std::fs::read(&dest).unwrap().len(), 100);

        for path in ["/big", "/endless"] {
            let err = api
                .download("t", &Secret::new(format!("{base}{path}")), &dest)
                .await
                .unwrap_err();
            assert!(
                matches!(&err, CallError::GaveUp { reason, .. } if reason == "download_too_large"),
                "{path}: {err}"
            );
        }

        // An endless answer to an API call is cut off, not read into memory: a free call
        // gives up, a paid one is held (it may have been billed).
        struct Noted;
        impl Intent for Noted {
            fn record(&self) -> Pin<Box<dyn Future<Output = Result<(), CallError>> + Send + '_>> {
                Box::pin(async { Ok(()) })
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
            let gave_up =
                matches!(&err, CallError::GaveUp { reason, .. } if reason == "answer_too_large");
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
            matches!(&err, CallError::GaveUp { reason, .. } if reason == "download_refused"),
            "{err}"
        );
        assert!(!err.to_string().contains("Signature"), "{err}");
    }
}
