//! The built-in Deepvue simulator: the tool's own test double and an offline rehearsal ground.
//!
//! It serves the provider's shapes field for field (see `REFERENCE.md`), including the faults a
//! real nightly job meets, so a client can be rehearsed against each of them:
//!
//! - rate limits per key, per second, minute and day, fixed or sliding (`--per-*`,
//!   `--limit-window`), answered 429 with no headers like Deepvue, or with `Retry-After`
//!   (`--retry-after`) and rate-limit headers (`--rate-headers`) like other providers;
//! - latency (`--latency-ms`, `--latency-jitter-ms`) and slow async results and batches;
//! - gateway 5xx answers before the endpoint runs (`--error-share`), and connections dropped
//!   without an answer after it ran, a paid request the client never hears of (`--reset-share`);
//! - an outage: from `--down-after-ms` for `--down-for-ms`, every `/v1` call is answered 503,
//!   429 or a dropped connection (`--down-status`) before the rate limiter;
//! - jobs and batches that never finish (`--stuck-share`, and test identifiers);
//! - scripted faults per test identifier (see `udyam.rs` and `batch.rs`), expired tokens and
//!   expired pre-signed URLs.
//!
//! Everything that decides an answer, except the random shares of 5xx answers and resets, is
//! derived from the seed and the request, so two sandboxes fed the same calls answer the same ids
//! and files.

mod batch;
mod clock;
mod deepvue;
mod faults;
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
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use faults::Answer;
use ids::Ids;
use limits::RateLimiter;
use stats::{Endpoint, Stats};
use store::Store;

/// The sandbox's client id: public, so `bulkverify sandbox` may print it for ops teams.
pub const CLIENT_ID: &str = "sandbox_client";
/// The sandbox's client secret: public too, and shaped like a real trial secret (which starts
/// with `free_tier`).
pub const CLIENT_SECRET: &str = "free_tier_sandbox_secret";
pub const CASHFREE_CLIENT_ID: &str = "sandbox_cf_client";
pub const CASHFREE_CLIENT_SECRET: &str = "sandbox_cf_secret";
pub const ATTESTR_AUTH_TOKEN: &str = "sandbox_attestr_token";
pub const EQUAL_CLIENT_ID: &str = "sandbox_equal_client";
pub const EQUAL_CLIENT_SECRET: &str = "sandbox_equal_secret";
pub const EQUAL_JOURNEY_ID: &str = "sandbox-aadhaar-otp";

const DEFAULT_PER_SECOND: u64 = 17;
const DEFAULT_PER_MINUTE: u64 = 1000;
const DEFAULT_PER_DAY: u64 = 50_000;
const DEFAULT_UDYAM_DELAY_MS: u64 = 4000;
const DEFAULT_BATCH_DELAY_MS: u64 = 5000;
const DEFAULT_BATCH_MS_PER_ROW: u64 = 1;
const DEFAULT_BATCH_MAX_ROWS: u64 = 10_000;
const DEFAULT_TOKEN_TTL_SECS: u64 = 86_400;
const DEFAULT_URL_TTL_SECS: u64 = 3600;
const DEFAULT_SEED: &str = "bulkverify-sandbox";
/// Longest token or URL lifetime accepted: keeps every expiry a representable date.
const MAX_TTL_SECS: u64 = 100 * 366 * 86_400;
/// Largest request body: a batch of the largest accepted size with wide pass-through columns.
const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;
/// Largest authorize body read to find the `client_secret` that keys its rate limit.
const MAX_AUTHORIZE_BYTES: usize = 64 * 1024;

/// How a rate-limit window counts, so a client can be rehearsed against either server behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LimitWindow {
    /// Windows aligned to UTC epoch second, minute and day boundaries (slowapi's default).
    Fixed,
    /// At most N requests in any interval of the window's length (a sliding log).
    Sliding,
}

/// Whether a 429 says when to come back: clients must work without it (Deepvue sends none) and
/// should use it when a provider does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RetryAfter {
    /// No header, as Deepvue answers.
    None,
    /// Retry-After: N, in whole seconds rounded up.
    Seconds,
    /// Retry-After as an HTTP date (IMF-fixdate).
    Date,
}

/// Which rate-limit headers every `/v1` answer carries, to rehearse clients that pace themselves
/// by them.
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
    /// 503 with a JSON detail.
    #[value(name = "503")]
    Unavailable,
    /// 429 with Deepvue's body, and Retry-After (as --retry-after says) at the outage's end.
    #[value(name = "429")]
    RateLimited,
    /// The connection is dropped without an answer.
    Reset,
}

/// Settings of the simulator: the flags of `bulkverify sandbox`, and what `run --sandbox` uses.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct SandboxConfig {
    /// Requests per second allowed per API key (0 = no limit)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PER_SECOND)]
    pub per_second: u64,
    /// Requests per minute allowed per API key (0 = no limit)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PER_MINUTE)]
    pub per_minute: u64,
    /// Requests per day allowed per API key (0 = no limit)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PER_DAY)]
    pub per_day: u64,
    /// How the rate-limit windows count: aligned to UTC boundaries, or sliding
    #[arg(long, value_enum, default_value_t = LimitWindow::Fixed)]
    pub limit_window: LimitWindow,
    /// Mean latency added to every /v1 answer, in milliseconds
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
    /// Persist accepted jobs in this directory, so a restarted sandbox answers earlier requests
    /// (in memory only when absent)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Key for request ids, token and URL signatures: same seed, same answers
    #[arg(long, value_name = "TEXT", default_value = DEFAULT_SEED)]
    pub seed: String,
    /// Share (0 to 1) of admitted /v1 requests answered 502, 503 or 504 before the endpoint runs
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = faults::parse_share)]
    pub error_share: f64,
    /// Share (0 to 1) of admitted /v1 requests whose connection is dropped after the endpoint ran
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = faults::parse_share)]
    pub reset_share: f64,
    /// Whether a 429 carries Retry-After: none (as Deepvue), seconds, or an HTTP date
    #[arg(long, value_enum, default_value_t = RetryAfter::None)]
    pub retry_after: RetryAfter,
    /// Rate-limit headers on every /v1 answer: none (as Deepvue), x (X-RateLimit-*), ietf
    #[arg(long, value_enum, default_value_t = RateHeaders::None)]
    pub rate_headers: RateHeaders,
    /// Milliseconds after the start when the outage begins
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub down_after_ms: u64,
    /// Milliseconds the outage lasts (0 = never down)
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub down_for_ms: u64,
    /// What every /v1 request gets during the outage: 503, 429, or reset (a dropped connection)
    #[arg(long, value_enum, default_value_t = DownStatus::Unavailable)]
    pub down_status: DownStatus,
    /// Share (0 to 1) of accepted Udyam requests and batches that never finish, chosen by id
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
            latency_ms: 0,
            latency_jitter_ms: 0,
            udyam_delay_ms: DEFAULT_UDYAM_DELAY_MS,
            batch_delay_ms: DEFAULT_BATCH_DELAY_MS,
            batch_ms_per_row: DEFAULT_BATCH_MS_PER_ROW,
            batch_max_rows: DEFAULT_BATCH_MAX_ROWS,
            token_ttl_secs: DEFAULT_TOKEN_TTL_SECS,
            url_ttl_secs: DEFAULT_URL_TTL_SECS,
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
    let banner = format!(
        "bulkverify sandbox listening on {}\nclient id:     {CLIENT_ID}\nclient secret: {CLIENT_SECRET}\n",
        sandbox.base_url()
    );
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(banner.as_bytes()).and_then(|()| out.flush()) {
        tracing::warn!("could not print the sandbox's address: {e}");
    }
    drop(out);
    wait_for_stop_signal().await?;
    sandbox.shutdown().await;
    Ok(())
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
        .route("/_sandbox/stats", get(stats::handler))
        .fallback(|| async { deepvue::detail(StatusCode::NOT_FOUND, "Not Found") })
        .method_not_allowed_fallback(|| async {
            deepvue::detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
        })
        .layer(middleware::from_fn_with_state(app.clone(), gate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

/// The provider's gateway: counts every request, then for `/v1` applies, in the provider's
/// order, the outage, the rate limit, the latency, the injected 5xx and the authentication
/// before the endpoint runs, and the injected reset after it.
async fn gate(State(app): State<Shared>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let endpoint = Endpoint::of(path);
    let is_v1 = path.starts_with("/v1/");
    if let Some(endpoint) = endpoint {
        lock(&app.stats).arrived(endpoint);
    }
    if !is_v1 {
        return next.run(request).await;
    }
    lock(&app.stats).v1_arrived();
    let answer = v1_answer(&app, endpoint, request, next).await;
    lock(&app.stats).v1_answered(&answer);
    answer.into_response()
}

/// A `/v1` request through the outage and the rate limiter, with the headers a flag asks for.
async fn v1_answer(
    app: &Shared,
    endpoint: Option<Endpoint>,
    request: Request,
    next: Next,
) -> Answer {
    let arrival = clock::now_ms();
    if let Some(until) = app.down_until(arrival) {
        return faults::down(&app.config, until);
    }
    let (request, key) = if endpoint == Some(Endpoint::Authorize) {
        deepvue::read_authorize_form(request).await
    } else {
        let key = header_text(request.headers(), "x-api-key").to_owned();
        (request, key)
    };
    let decision = lock(&app.limiter).admit(&key, arrival);
    let mut answer = if decision.admitted {
        lock(&app.stats).admitted(arrival / 1000);
        admitted(app, endpoint, request, next).await
    } else {
        let mut refusal = deepvue::rate_limited();
        if let Some(retry_at) = decision.retry_at_ms() {
            faults::retry_after(app.config.retry_after, retry_at, refusal.headers_mut());
        }
        Answer::Respond(refusal)
    };
    if let Answer::Respond(response) = &mut answer {
        faults::rate_headers(app.config.rate_headers, &decision, response.headers_mut());
    }
    answer
}

/// A request the rate limiter let through, on its way past the gateway's other steps.
async fn admitted(
    app: &Shared,
    endpoint: Option<Endpoint>,
    request: Request,
    next: Next,
) -> Answer {
    let latency = latency_ms(&app.config);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if faults::draw(app.config.error_share) {
        return Answer::Respond(faults::gateway_error());
    }
    let response = match authenticate(app, endpoint, request.headers()) {
        Some(refusal) => refusal,
        None => next.run(request).await,
    };
    if faults::draw(app.config.reset_share) {
        Answer::Reset
    } else {
        Answer::Respond(response)
    }
}

/// A header's value as text; absent or non-text headers read as empty, which matches nothing.
fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

fn latency_ms(config: &SandboxConfig) -> u64 {
    if config.latency_jitter_ms == 0 {
        return config.latency_ms;
    }
    let low = config.latency_ms.saturating_sub(config.latency_jitter_ms);
    let high = config.latency_ms.saturating_add(config.latency_jitter_ms);
    rand::rng().random_range(low..=high)
}

/// The refusal of a call without a valid token and API key; authorize needs neither.
fn authenticate(app: &App, endpoint: Option<Endpoint>, headers: &HeaderMap) -> Option<Response> {
    if endpoint == Some(Endpoint::Authorize) {
        return None;
    }
    let authorization = header_text(headers, "authorization");
    let token = authorization
        .strip_prefix("Bearer ")
        .or_else(|| authorization.strip_prefix("bearer "));
    let valid = token.is_some_and(|token| app.ids.token_is_valid(token.trim(), clock::now_ms()));
    if !valid {
        return Some(deepvue::detail(
            StatusCode::UNAUTHORIZED,
            "Invalid or expired token",
        ));
    }
    if header_text(headers, "x-api-key") != CLIENT_SECRET {
        return Some(deepvue::detail(StatusCode::FORBIDDEN, "Invalid API key"));
    }
    None
}
