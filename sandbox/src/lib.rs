//! The built-in simulator of every provider the tool calls: Deepvue, Cashfree, Attestr and
//! Equal, one process, each under its own path prefix (`/v1`, `/verification`,
//! `/api/v1/public`, `/ie`). It is the tool's own test double and an offline rehearsal ground.
//!
//! It serves the providers' shapes field for field (see `REFERENCE.md`), including the faults a
//! real nightly job meets, so a client can be rehearsed against each of them. Every provider's
//! requests pass the same gateway (`gateway.rs`), each answered in that provider's shapes:
//!
//! - rate limits per provider and credential, per second, minute and day, counted in fixed or
//!   sliding windows, a token bucket or a zero-burst GCRA (`--per-*`, `--limit-window`,
//!   `--limit-burst`), each request counted late by a random delay (`--arrival-jitter-ms`),
//!   answered 429 as each provider does, with `Retry-After`
//!   (`--retry-after`) and rate-limit headers (`--rate-headers`) where a flag asks or the
//!   provider always sends them (Cashfree);
//! - latency (`--latency-ms`, `--latency-jitter-ms`) and slow async results and batches;
//! - gateway 5xx answers before the endpoint runs (`--error-share`), and connections dropped
//!   without an answer after it ran, a paid request the client never hears of (`--reset-share`);
//! - an outage: from `--down-after-ms` for `--down-for-ms`, every provider call is answered 503,
//!   429 or a dropped connection (`--down-status`) before the rate limiter;
//! - jobs and batches that never finish (`--stuck-share`, and test identifiers);
//! - OTPs that expire (`--otp-ttl-secs`) and journeys that resolve late (`--journey-delay-ms`);
//! - scripted outcomes and faults per test identifier, documented in a table in each provider's
//!   module (`udyam.rs`, `batch.rs`, `cashfree/*.rs`, `attestr.rs`, `equal.rs`), expired tokens
//!   and expired pre-signed URLs.
//!
//! Everything that decides an answer, except the random shares of 5xx answers and resets, is
//! derived from the seed and the request, so two sandboxes fed the same calls answer the same ids
//! and files. What a later run must still find (accepted jobs, bulks, OTP requests, journeys) is
//! persisted in `--data-dir`.

mod attestr;
mod batch;
mod cashfree;
mod clock;
mod deepvue;
mod equal;
mod faults;
mod gateway;
mod ids;
mod limits;
mod s3;
mod stats;
mod store;
#[cfg(test)]
mod tests;
mod udyam;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use ids::Ids;
use limits::RateLimiter;
use stats::Stats;
use store::Store;

/// The sandbox's Deepvue client id: public, so `bulkverify sandbox` may print it for ops teams.
pub const CLIENT_ID: &str = "sandbox_client";
/// The sandbox's Deepvue client secret: public too, and shaped like a real trial secret (which
/// starts with `free_tier`).
pub const CLIENT_SECRET: &str = "free_tier_sandbox_secret";
/// The sandbox's Cashfree `x-client-id`: public, like every sandbox credential, so a rehearsal
/// needs no account.
pub const CASHFREE_CLIENT_ID: &str = "sandbox_cf_client";
/// The sandbox's Cashfree `x-client-secret`.
pub const CASHFREE_CLIENT_SECRET: &str = "sandbox_cf_secret";
/// The sandbox's Attestr auth token, sent as `Authorization: Basic <token>`: opaque, as Attestr
/// documents it (the dashboard shows it ready to use, it is not base64 of anything).
pub const ATTESTR_AUTH_TOKEN: &str = "sandbox_attestr_token";
/// The sandbox's Equal client id, sent as `Authorization: Basic base64(id:secret)`.
pub const EQUAL_CLIENT_ID: &str = "sandbox_equal_client";
/// The sandbox's Equal client secret.
pub const EQUAL_CLIENT_SECRET: &str = "sandbox_equal_secret";
/// The Equal journey the sandbox runs: the Aadhaar OTP journey (Equal shares the real id at
/// onboarding; any other id is refused).
pub const EQUAL_JOURNEY_ID: &str = "sandbox-aadhaar-otp";
/// The right OTP for every OTP the sandbox "sends" (Attestr and Equal); any other is wrong.
pub const SANDBOX_OTP: &str = "123456";

const DEFAULT_PER_SECOND: u64 = 17;
const DEFAULT_PER_MINUTE: u64 = 1000;
const DEFAULT_PER_DAY: u64 = 50_000;
const DEFAULT_LIMIT_BURST: u64 = 5;
const DEFAULT_UDYAM_DELAY_MS: u64 = 4000;
const DEFAULT_BATCH_DELAY_MS: u64 = 5000;
const DEFAULT_BATCH_MS_PER_ROW: u64 = 1;
const DEFAULT_BATCH_MAX_ROWS: u64 = 10_000;
const DEFAULT_TOKEN_TTL_SECS: u64 = 86_400;
const DEFAULT_URL_TTL_SECS: u64 = 3600;
/// Attestr documents OTPs valid for 10 minutes.
const DEFAULT_OTP_TTL_SECS: u64 = 600;
const DEFAULT_JOURNEY_DELAY_MS: u64 = 4000;
const DEFAULT_SEED: &str = "bulkverify-sandbox";
/// Longest token or URL lifetime accepted: keeps every expiry a representable date.
const MAX_TTL_SECS: u64 = 100 * 366 * 86_400;
/// Largest request body: a batch of the largest accepted size with wide pass-through columns.
const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;
/// Largest authorize body read to find the `client_secret` that keys its rate limit.
const MAX_AUTHORIZE_BYTES: usize = 64 * 1024;

/// How a rate-limit window counts, so a client can be rehearsed against the ways real limiters
/// count: providers rarely say which they use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LimitWindow {
    /// Windows aligned to UTC epoch second, minute and day boundaries (slowapi's default).
    Fixed,
    /// At most N requests in any interval of the window's length (a sliding log).
    Sliding,
    /// A token bucket refilled at N per window on a millisecond clock, holding `--limit-burst`
    /// requests beyond the one in hand: nginx's `limit_req` with `burst=B nodelay`. The day
    /// window stays fixed.
    Bucket,
    /// The same with no burst: any two requests closer than the window over N are refused,
    /// as nginx's `limit_req` without `burst` (a GCRA on a millisecond clock). The day window
    /// stays fixed.
    Gcra,
}

/// Whether a 429 says when to come back: clients must work without it (Deepvue sends none) and
/// should use it when a provider does (Cashfree always does: seconds unless `date` is asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RetryAfter {
    /// No header, as Deepvue answers.
    None,
    /// Retry-After: N, in whole seconds rounded up.
    Seconds,
    /// Retry-After as an HTTP date (IMF-fixdate).
    Date,
}

/// Which rate-limit headers every provider answer carries, to rehearse clients that pace
/// themselves by them. Cashfree always sends `X-RateLimit-*`, whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RateHeaders {
    /// None, as Deepvue answers.
    None,
    /// X-RateLimit-Limit, -Remaining and -Reset of the tightest window, as Cashfree sends.
    X,
    /// The IETF draft's RateLimit-Policy and RateLimit fields.
    Ietf,
}

/// How the simulated outage answers, so a client meets both a dead provider and a 429 storm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DownStatus {
    /// 503, in each provider's error shape (Equal's with no body).
    #[value(name = "503")]
    Unavailable,
    /// Each provider's 429, and Retry-After (as --retry-after says) at the outage's end.
    #[value(name = "429")]
    RateLimited,
    /// The connection is dropped without an answer.
    Reset,
}

/// The gateway's limiter and arrival jitter without its server or its clock: what a simulation
/// of a client against the sandbox counts the client's requests with, so that the limiter it
/// meets is this one and not a copy (`benches/quota_sim.rs` in the product).
#[derive(Debug)]
pub struct Limiter {
    limiter: RateLimiter,
    arrival_jitter_ms: u64,
}

impl Limiter {
    /// The limiter of a sandbox started with `config`: its windows, their counting and its
    /// arrival jitter.
    pub fn new(config: &SandboxConfig) -> Limiter {
        Limiter {
            limiter: RateLimiter::new(config),
            arrival_jitter_ms: config.arrival_jitter_ms,
        }
    }

    /// Whether one credential's request counted at `arrival_ms` is admitted (and counted).
    pub fn admit(&mut self, arrival_ms: u64) -> bool {
        self.limiter.admit(CLIENT_ID, arrival_ms).admitted
    }

    /// How many milliseconds after it was sent a request is counted, drawn from `rng`.
    pub fn arrival_delay_ms(&self, rng: &mut impl rand::Rng) -> u64 {
        faults::arrival_delay_ms(self.arrival_jitter_ms, rng)
    }
}

/// Settings of the simulator: the flags of `bulkverify sandbox`, and what `run --sandbox` uses.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct SandboxConfig {
    /// Requests per second allowed per provider and credential (0 = no limit)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PER_SECOND)]
    pub per_second: u64,
    /// Requests per minute allowed per provider and credential (0 = no limit)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PER_MINUTE)]
    pub per_minute: u64,
    /// Requests per day allowed per provider and credential (0 = no limit)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PER_DAY)]
    pub per_day: u64,
    /// How the rate-limit windows count: aligned to UTC boundaries, sliding, a token bucket, or
    /// a zero-burst GCRA on a millisecond clock
    #[arg(long, value_enum, default_value_t = LimitWindow::Fixed)]
    pub limit_window: LimitWindow,
    /// Requests a `bucket` window lets through at once beyond its rate
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT_BURST)]
    pub limit_burst: u64,
    /// Counts each provider request this many milliseconds late, give or take as much (normal,
    /// mean 2×J, standard deviation J, never early), as a jittery network path would: a client
    /// paced exactly arrives unevenly
    #[arg(long, value_name = "J", default_value_t = 0)]
    pub arrival_jitter_ms: u64,
    /// Mean latency added to every provider answer, in milliseconds
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub latency_ms: u64,
    /// Latency is uniform in mean ± this many milliseconds (clamped at 0)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub latency_jitter_ms: u64,
    /// Milliseconds from an accepted Udyam submission until its result is ready
    #[arg(long, value_name = "N", default_value_t = DEFAULT_UDYAM_DELAY_MS)]
    pub udyam_delay_ms: u64,
    /// Milliseconds from an accepted batch upload until its output file is ready (plus per row)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BATCH_DELAY_MS)]
    pub batch_delay_ms: u64,
    /// Extra milliseconds of batch processing per row of the batch
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BATCH_MS_PER_ROW)]
    pub batch_ms_per_row: u64,
    /// Largest number of rows accepted in one batch file
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BATCH_MAX_ROWS)]
    pub batch_max_rows: u64,
    /// Lifetime of an access token, in seconds
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TOKEN_TTL_SECS)]
    pub token_ttl_secs: u64,
    /// Lifetime of a pre-signed download URL, in seconds
    #[arg(long, value_name = "N", default_value_t = DEFAULT_URL_TTL_SECS)]
    pub url_ttl_secs: u64,
    /// Lifetime of an OTP (Attestr Udyam, Equal Aadhaar), in seconds, judged by the wall clock
    #[arg(long, value_name = "N", default_value_t = DEFAULT_OTP_TTL_SECS)]
    pub otp_ttl_secs: u64,
    /// Milliseconds until a delayed Equal journey (a test Aadhaar) resolves after its OTP
    #[arg(long, value_name = "N", default_value_t = DEFAULT_JOURNEY_DELAY_MS)]
    pub journey_delay_ms: u64,
    /// Persist accepted jobs in this directory, so a restarted sandbox answers earlier requests
    /// (in memory only when absent)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Key for request ids, token and URL signatures: same seed, same answers
    #[arg(long, value_name = "TEXT", default_value = DEFAULT_SEED)]
    pub seed: String,
    /// Share (0 to 1) of admitted provider requests answered 502, 503 or 504 before the endpoint runs
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = faults::parse_share)]
    pub error_share: f64,
    /// Share (0 to 1) of admitted provider requests whose connection is dropped after the endpoint ran
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = faults::parse_share)]
    pub reset_share: f64,
    /// Whether a 429 carries Retry-After: none (as Deepvue), seconds, or an HTTP date (Cashfree: always)
    #[arg(long, value_enum, default_value_t = RetryAfter::None)]
    pub retry_after: RetryAfter,
    /// Rate-limit headers on every provider answer: none (as Deepvue), x (X-RateLimit-*), ietf (Cashfree: always x)
    #[arg(long, value_enum, default_value_t = RateHeaders::None)]
    pub rate_headers: RateHeaders,
    /// Milliseconds after the start when the outage begins
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub down_after_ms: u64,
    /// Milliseconds the outage lasts (0 = never down)
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub down_for_ms: u64,
    /// What every provider request gets during the outage: 503, 429, or reset (a dropped connection)
    #[arg(long, value_enum, default_value_t = DownStatus::Unavailable)]
    pub down_status: DownStatus,
    /// Share (0 to 1) of accepted Udyam requests and batches (Deepvue, Cashfree) that never finish, chosen by id
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = faults::parse_share)]
    pub stuck_share: f64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            per_second: DEFAULT_PER_SECOND,
            per_minute: DEFAULT_PER_MINUTE,
            per_day: DEFAULT_PER_DAY,
            limit_window: LimitWindow::Fixed,
            limit_burst: DEFAULT_LIMIT_BURST,
            arrival_jitter_ms: 0,
            latency_ms: 0,
            latency_jitter_ms: 0,
            udyam_delay_ms: DEFAULT_UDYAM_DELAY_MS,
            batch_delay_ms: DEFAULT_BATCH_DELAY_MS,
            batch_ms_per_row: DEFAULT_BATCH_MS_PER_ROW,
            batch_max_rows: DEFAULT_BATCH_MAX_ROWS,
            token_ttl_secs: DEFAULT_TOKEN_TTL_SECS,
            url_ttl_secs: DEFAULT_URL_TTL_SECS,
            otp_ttl_secs: DEFAULT_OTP_TTL_SECS,
            journey_delay_ms: DEFAULT_JOURNEY_DELAY_MS,
            data_dir: None,
            seed: DEFAULT_SEED.to_owned(),
            error_share: 0.0,
            reset_share: 0.0,
            retry_after: RetryAfter::None,
            rate_headers: RateHeaders::None,
            down_after_ms: 0,
            down_for_ms: 0,
            down_status: DownStatus::Unavailable,
            stuck_share: 0.0,
        }
    }
}

/// Why a sandbox could not start: the caller decides whether that ends the run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A lifetime so long that its expiry date could not be written.
    #[error("--{flag} is {value}: at most {MAX_TTL_SECS} seconds are supported")]
    TtlTooLong { flag: &'static str, value: u64 },
    /// A share that is no fraction: it could not be drawn against.
    #[error("--{flag} is {value}: a share is between 0 and 1")]
    ShareOutOfRange { flag: &'static str, value: f64 },
    /// The listener handed in has no local address to advertise.
    #[error("cannot read the sandbox listener's address: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// The data directory or one of its files could not be created, read or written.
    #[error("sandbox data {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The job journal holds a line that is not a job record.
    #[error("sandbox journal {} line {line}: {source}", path.display())]
    Journal {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// A running simulator.
pub struct Sandbox {
    base_url: String,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

impl Sandbox {
    /// Binds nothing itself: takes a listener bound by the caller (127.0.0.1:0 in tests), so the
    /// caller owns the choice of port and can never race another process for it.
    pub async fn start(
        config: SandboxConfig,
        listener: TcpListener,
    ) -> Result<Sandbox, SandboxError> {
        for (flag, value) in [
            ("token-ttl-secs", config.token_ttl_secs),
            ("url-ttl-secs", config.url_ttl_secs),
            ("otp-ttl-secs", config.otp_ttl_secs),
        ] {
            if value > MAX_TTL_SECS {
                return Err(SandboxError::TtlTooLong { flag, value });
            }
        }
        for (flag, value) in [
            ("error-share", config.error_share),
            ("reset-share", config.reset_share),
            ("stuck-share", config.stuck_share),
        ] {
            if !faults::is_share(value) {
                return Err(SandboxError::ShareOutOfRange { flag, value });
            }
        }
        let addr = listener.local_addr().map_err(SandboxError::LocalAddr)?;
        let base_url = format!("http://{addr}");
        let store = Store::open(config.data_dir.as_deref())?;
        let app = Arc::new(App {
            started_ms: clock::now_ms(),
            ids: Ids::new(&config.seed),
            limiter: Mutex::new(RateLimiter::new(&config)),
            stats: Mutex::new(Stats::default()),
            store,
            base_url: base_url.clone(),
            config,
            status_refusals: Mutex::default(),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async {
                // A dropped sender means nobody can ask for a graceful stop any more: stop too.
                let _ = stopped.await;
            };
            if let Err(error) = axum::serve(listener, router(app))
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(%error, "sandbox server stopped");
            }
        });
        Ok(Sandbox {
            base_url,
            stop,
            server,
        })
    }

    /// Where clients reach the simulator: `http://127.0.0.1:PORT`, no trailing slash.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// Stops accepting connections and lets answers in flight finish, so a job accepted just
    /// before the stop is both answered and persisted.
    pub async fn shutdown(self) {
        // An error means the server already stopped; there is nothing left to signal.
        let _ = self.stop.send(());
        if let Err(error) = self.server.await {
            tracing::error!(%error, "sandbox server task failed");
        }
    }
}

/// The `bulkverify sandbox` subcommand: binds 127.0.0.1:port (0 = a free port), prints exactly
/// one first line `bulkverify sandbox listening on http://127.0.0.1:PORT` on stdout (flushed;
/// tests parse it), then the credentials to use, and serves until SIGINT or SIGTERM.
pub async fn serve(port: u16, config: SandboxConfig) -> anyhow::Result<()> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .with_context(|| format!("cannot bind 127.0.0.1:{port}"))?;
    let sandbox = Sandbox::start(config, listener).await?;
    // One write, and no failure if nobody reads on: a caller that read the first line and
    // closed the pipe must not bring the server down.
    let banner = banner(&sandbox.base_url());
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(banner.as_bytes()).and_then(|()| out.flush()) {
        tracing::warn!("could not print the sandbox's address: {e}");
    }
    drop(out);
    wait_for_stop_signal().await?;
    sandbox.shutdown().await;
    Ok(())
}

/// The address, then every provider's base URL and public credentials: a public sandbox hides
/// nothing, and an ops team rehearsing a nightly job needs all of them at hand.
fn banner(base: &str) -> String {
    format!(
        "bulkverify sandbox listening on {base}\n\
         deepvue   base url {base}\n\
         \x20         client id:     {CLIENT_ID}\n\
         \x20         client secret: {CLIENT_SECRET}\n\
         cashfree  base url {base}/verification\n\
         \x20         client id:     {CASHFREE_CLIENT_ID}\n\
         \x20         client secret: {CASHFREE_CLIENT_SECRET}\n\
         attestr   base url {base}\n\
         \x20         auth token:    {ATTESTR_AUTH_TOKEN}\n\
         equal     base url {base}\n\
         \x20         client id:     {EQUAL_CLIENT_ID}\n\
         \x20         client secret: {EQUAL_CLIENT_SECRET}\n\
         \x20         journey id:    {EQUAL_JOURNEY_ID}\n\
         OTP for every OTP request: {SANDBOX_OTP}\n"
    )
}

#[cfg(unix)]
async fn wait_for_stop_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted,
        _ = terminate.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn wait_for_stop_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}

/// What every handler shares.
struct App {
    config: SandboxConfig,
    /// When the sandbox started: the outage is timed from here.
    started_ms: u64,
    base_url: String,
    ids: Ids,
    limiter: Mutex<RateLimiter>,
    stats: Mutex<Stats>,
    store: Store,
    /// 503 answers given so far to each `statusdown` batch's status calls (not persisted).
    status_refusals: Mutex<std::collections::HashMap<String, u32>>,
}

type Shared = Arc<App>;

impl App {
    /// The end of the outage when `now_ms` falls inside it.
    fn down_until(&self, now_ms: u64) -> Option<u64> {
        let from = self.started_ms.saturating_add(self.config.down_after_ms);
        let until = from.saturating_add(self.config.down_for_ms);
        (from..until).contains(&now_ms).then_some(until)
    }

    /// Whether the job `request_id`, due at `ready_ms`, has finished by `now_ms`: a stuck one
    /// never does.
    fn is_ready(&self, request_id: &str, ready_ms: u64, now_ms: u64) -> bool {
        now_ms >= ready_ms && !self.ids.is_stuck(request_id, self.config.stuck_share)
    }
}

/// Locks a mutex even after a panic elsewhere poisoned it: every critical section here leaves
/// the data consistent, so a poisoned lock carries no broken invariant.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn router(app: Shared) -> Router {
    Router::new()
        .route("/v1/authorize", post(deepvue::authorize))
        .route(
            "/v1/verification/async/post-udyam-details",
            post(deepvue::udyam_submit),
        )
        .route(
            "/v1/verification/async/get-udyam-details",
            get(deepvue::udyam_result),
        )
        .route(
            "/v1/verification/upi-basic/batch",
            post(deepvue::batch_upload),
        )
        .route(
            "/v1/verification/batch-processing-status",
            get(deepvue::batch_status),
        )
        .route(
            "/bulk-data-processing/upi-basic-batch-output-files/{file}",
            get(s3::download),
        )
        .route(
            "/verification/digilocker",
            get(cashfree::digilocker_status).post(cashfree::digilocker_create),
        )
        .route(
            "/verification/bank-account/bulk",
            get(cashfree::bank_bulk_status).post(cashfree::bank_bulk_submit),
        )
        .route(
            "/verification/pan/bulk",
            get(cashfree::pan_bulk_status).post(cashfree::pan_bulk_submit),
        )
        .route("/api/v1/public/corpx/udyam", post(attestr::lookup))
        .route("/api/v1/public/corpx/udyam/otp-gen", post(attestr::otp_gen))
        .route(
            "/api/v1/public/corpx/udyam/otp-verify",
            post(attestr::otp_verify),
        )
        .route("/ie/transaction/journey/execute", post(equal::execute))
        .route("/ie/transaction/journey/data/fetch", post(equal::fetch))
        .route("/_sandbox/stats", get(stats::handler))
        .fallback(gateway::not_found)
        .method_not_allowed_fallback(gateway::method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), gateway::gate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}
