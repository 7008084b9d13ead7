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
//!
//! What each send's outcome leads to is decided in [`decide`], apart from the I/O; `exchange`
//! is the loop that acts on it.

mod answer;
pub mod attestr;
pub mod cashfree;
mod decide;
pub mod deepvue;
pub mod downloads;
pub mod equal;
pub mod ratelimit;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};
use tokio::sync::{Semaphore, SemaphorePermit};

pub use answer::{Answer, provider_words};
use answer::{Failed, failure_words, receive};
use decide::{Attempt, Decision, Fail, Outcome};

use crate::config::ProviderSettings;
use crate::outcome::{Reason, ReasonCode};
use crate::quota::gate::{Ask, Gate, GateError, Grant, Priority, Refusal};
use crate::quota::hints::Hints;
use crate::quota::retry::{Backoff, Budget};
use crate::stats::{Exchange, Sent, Stats};
use crate::util::stop::Stop;
use crate::util::time::unix_ms;

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
    /// Sends the intent to be committed at `at`; the future resolves once it is durable, with
    /// how long the commit took from then.
    fn record(
        &self,
        at: std::time::Instant,
    ) -> Pin<Box<dyn Future<Output = Result<Duration, CallError>> + Send + '_>>;

    /// Takes what sending the request again costs from the run's cap on paid calls, after an
    /// answer that may have been billed however it failed (a 5xx, a 408); `false` when the
    /// cap has no room for it, and the request is not sent again.
    fn again(&self) -> bool;
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

#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The run cannot go on (credentials rejected): stop everything.
    #[error("{0}")]
    Fatal(String),
    /// The retry policy ran out; the row becomes `error` and a later run tries again.
    #[error("{label}: gave up after {attempts} attempts: {message}")]
    GaveUp {
        label: &'static str,
        reason: ReasonCode,
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

    /// One logical call: rounds of turn and send until [`decide::classify`] ends it.
    async fn exchange(
        &self,
        req: &Request<'_>,
        dest: Option<&Path>,
        slot: Slot,
    ) -> Result<Answer, CallError> {
        let mut call = self.attempt(req, dest.is_some());
        // Requests sent (a resend after a 401 takes its place), and where the call stands at
        // the gate.
        let mut attempts = 0u32;
        let mut place = Place::default();
        let mut turn = None;
        loop {
            // Once the run stops, no new paid call starts and no call goes again. The loop
            // passes here before each turn and again between its grant and its send.
            if self.stop.is_set() && (req.priority == Priority::Low || attempts > 0) {
                return Err(CallError::Stopped);
            }
            let Some(Turn { permit, grant }) = turn.take() else {
                turn = self.turn(req, slot, &mut place).await?;
                continue;
            };
            let Some((headers, builder)) = self.request(req) else {
                continue;
            };
            attempts += 1;
            place.again = false;
            // A resend after a 401 is the same call again: it deposits nothing more.
            if attempts == 1 && call.renewals == 0 {
                self.budget.deposit();
            } else {
                Stats::add(&self.stats.retries, 1);
            }
            Stats::add(&self.stats.calls, 1);
            let (sent_ms, left) = (unix_ms(), std::time::Instant::now());
            let result = receive(builder, dest.map(|d| (d, self.downloads.max_bytes))).await;
            drop(permit);
            let (outcome, hints) = self.outcome(&result);
            self.stats.timeline.record(&Exchange {
                label: req.label,
                kind: match (dest, req.billing) {
                    (Some(_), _) => Sent::Download,
                    (None, Billing::Paid(_)) => Sent::Paid,
                    (None, Billing::Free) => Sent::Poll,
                },
                sent_ms,
                retry: attempts > 1 || call.renewals > 0,
                status: match outcome {
                    Outcome::Answered { status, .. } => Some(status.as_u16()),
                    _ => None,
                },
                round_trip: left.elapsed(),
            });
            // An answer not read tells the gate nothing: its grant is dropped unreported.
            let refusal = decide::signal(outcome, hints).and_then(|s| grant.report(s));
            let decision = self.decision(&call, outcome, refusal);
            if let Decision::Pace { .. }
            | Decision::Retry { .. }
            | Decision::Fail(Fail::GaveUp(_) | Fail::Denied(_)) = decision
            {
                tracing::debug!(
                    "{} {}: attempt {attempts}: {}",
                    self.provider,
                    req.label,
                    failure_words(&result, call.download)
                );
            }
            match (decision, result) {
                (Decision::Return, Ok(answer)) => return Ok(Answer { attempts, ..answer }),
                (Decision::Refused, Ok(answer)) => {
                    return Err(self.credentials_refused(req, &answer));
                }
                (Decision::Return | Decision::Refused, Err(_)) => {
                    unreachable!("classify returns an answer only for an answer")
                }
                (Decision::Renew, _) => {
                    if let Some(h) = &headers {
                        self.auth.rejected(h);
                    }
                    call.renewals += 1;
                    attempts -= 1;
                }
                (Decision::Pace { first }, _) => {
                    Stats::add(&self.stats.rate_limited, 1);
                    place.again = first;
                }
                (Decision::Retry { backoff }, result) => {
                    if let (Billing::Paid(intent), Outcome::Answered { .. }) =
                        (req.billing, outcome)
                        && !intent.again()
                    {
                        return Err(CallError::GaveUp {
                            label: req.label,
                            reason: Reason::PAID_CALL_LIMIT.into(),
                            message: format!(
                                "{}; not sent again: the run's cap on paid calls is spent",
                                failure_words(&result, call.download)
                            ),
                            attempts,
                        });
                    }
                    call.failures += 1;
                    if !self.stop.sleep(self.backoff.delay(backoff)).await {
                        return Err(CallError::Stopped);
                    }
                }
                (Decision::Fail(fail), result) => {
                    let message = failure_words(&result, call.download);
                    return Err(self.failed(req.label, fail, message, attempts));
                }
            }
        }
    }

    /// A call as the decision sees it, before any send.
    fn attempt(&self, req: &Request<'_>, download: bool) -> Attempt {
        Attempt {
            paid: req.billing.paid(),
            authenticated: req.authenticated,
            download,
            failures: 0,
            max_attempts: self.max_attempts,
            renewals: 0,
            budget: true,
        }
    }

    /// The request of one send, with its credentials; `None` when they went stale while it
    /// waited, to be renewed on the next turn.
    fn request(&self, req: &Request<'_>) -> Option<(Option<HeaderMap>, reqwest::RequestBuilder)> {
        let headers = if req.authenticated {
            Some(self.auth.headers()?)
        } else {
            None
        };
        let mut builder = (req.build)(&self.http);
        if let Some(h) = &headers {
            builder = builder.headers(h.clone());
        }
        Some((headers, builder))
    }

    /// What came back, as the decision and the gate read it.
    fn outcome(&self, result: &Result<Answer, Failed>) -> (Outcome, Hints) {
        match result {
            Ok(answer) => (
                Outcome::Answered {
                    status: answer.status,
                    day_spent: answer.status == StatusCode::TOO_MANY_REQUESTS
                        && self.auth.day_spent(answer),
                },
                Hints::read(&answer.headers, SystemTime::now()),
            ),
            Err(failed) => (failed.outcome(), Hints::default()),
        }
    }

    /// [`decide::classify`], the retry budget asked only once a charged retry is decided:
    /// asking takes the retry.
    fn decision(&self, call: &Attempt, outcome: Outcome, refusal: Option<Refusal>) -> Decision {
        let decision = decide::classify(call, outcome, refusal);
        if let Decision::Retry { .. } = decision
            && !self.budget.withdraw()
        {
            Stats::add(&self.stats.retries_denied, 1);
            let unfunded = Attempt {
                budget: false,
                ..*call
            };
            return decide::classify(&unfunded, outcome, refusal);
        }
        decision
    }

    /// Everything before a send, in this order: fresh credentials before queueing, then a
    /// concurrency slot and the quota's grant; a paid request records its intent (granted a
    /// little ahead for it) and waits for its slot. After it, nothing slow comes before the
    /// send, so that the provider's arrival times stay as close to the gate's pacing as the
    /// network allows. `None` when the slot passed while the intent committed: the same
    /// request asks for the next one, first in line.
    async fn turn(
        &self,
        req: &Request<'_>,
        slot: Slot,
        place: &mut Place,
    ) -> Result<Option<Turn<'_>>, CallError> {
        if req.authenticated {
            self.auth.refresh(self).await?;
        }
        let permit = match slot {
            Slot::Take => Some(self.slots.acquire().await.map_err(|_| CallError::Stopped)?),
            Slot::Bypass => None,
        };
        let ask = Ask {
            priority: req.priority,
            counted: req.priority == Priority::Low || self.polls_count,
            paid: req.billing.paid() && !place.recorded,
            again: place.again,
        };
        let mut grant = self.gate.acquire(ask).await?;
        // The intent goes to the journal as the request is granted, to be committed just
        // before its slot (`commit_by`); it is awaited once the slot has come, so that its
        // commit wakes nobody.
        let committing = match req.billing {
            Billing::Paid(intent) if !place.recorded => Some(intent.record(grant.commit_by())),
            _ => None,
        };
        grant.slot().await;
        if let Some(committing) = committing {
            self.gate.committed_in(committing.await?);
            place.recorded = true;
        }
        if !grant.until_slot().await {
            tracing::debug!(
                "{} {}: the slot passed while the intent committed",
                self.provider,
                req.label
            );
            Stats::add(&self.stats.slots_missed, 1);
            place.again = true;
            return Ok(None);
        }
        Ok(Some(Turn { permit, grant }))
    }

    /// The error a call ends with when no answer is the check's to read.
    fn failed(&self, label: &'static str, fail: Fail, message: String, attempts: u32) -> CallError {
        let gave_up = |reason: ReasonCode, message: String| CallError::GaveUp {
            label,
            reason,
            message,
            attempts,
        };
        match fail {
            Fail::DaySpent => {
                self.gate.exhaust();
                Stats::add(&self.stats.rate_limited, 1);
                CallError::DayQuota
            }
            Fail::Unconfirmed => CallError::Unconfirmed {
                label,
                message,
                attempts,
            },
            Fail::GaveUp(why) => gave_up(why.code(), message),
            Fail::Denied(why) => gave_up(
                why.code(),
                format!(
                    "{message}; not retried: retries are capped at a share of calls \
                     (retry_budget) while the provider fails this often"
                ),
            ),
            Fail::Oversize { download: true } => {
                gave_up(Reason::DOWNLOAD_TOO_LARGE.into(), message)
            }
            Fail::Oversize { download: false } => gave_up(Reason::ANSWER_TOO_LARGE.into(), message),
            Fail::Unwritable => CallError::Fatal(format!("{label}: {message}")),
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

/// Whether a request takes one of the provider's concurrency slots.
#[derive(Clone, Copy)]
enum Slot {
    Take,
    Bypass,
}

/// The right to send one request: its concurrency slot (none when bypassed), held until the
/// answer is in, and the quota's grant, held until the gate is told how it went.
struct Turn<'a> {
    permit: Option<SemaphorePermit<'a>>,
    grant: Grant,
}

/// Where a call stands at the gate.
#[derive(Default)]
struct Place {
    /// The paid request's intent is durable: later grants need no lead for it.
    recorded: bool,
    /// The provider refused it for pacing, or its slot passed while the intent committed: it
    /// goes before the rest of its queue at the next slot.
    again: bool,
}
