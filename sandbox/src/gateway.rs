//! The providers' gateways: every provider request passes the same steps in the same order —
//! the outage, the rate limit, the latency, the injected 5xx, the authentication, the endpoint
//! and the injected reset — each answered in that provider's own shapes, so a client meets every
//! provider's real refusals and not one generic imitation of them.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;

use super::faults::{self, Answer};
use super::limits::Decision;
use super::stats::Endpoint;
use super::{
    RateHeaders, RetryAfter, SandboxConfig, Shared, attestr, cashfree, clock, deepvue, equal, lock,
};

/// Who answers a path: each provider has its own prefix under the one base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Provider {
    /// `/v1/...`
    Deepvue,
    /// `/verification/...`: the client's base URL is `{base}/verification`.
    Cashfree,
    /// `/api/v1/public/...`
    Attestr,
    /// `/ie/...`
    Equal,
}

impl Provider {
    pub(super) const ALL: [Provider; 4] = [
        Provider::Deepvue,
        Provider::Cashfree,
        Provider::Attestr,
        Provider::Equal,
    ];

    /// The provider behind `path`; `None` for the sandbox's own routes and the S3 look-alike.
    pub(super) fn of(path: &str) -> Option<Provider> {
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if under("/v1") {
            Some(Provider::Deepvue)
        } else if under("/verification") {
            Some(Provider::Cashfree)
        } else if under("/api/v1/public") {
            Some(Provider::Attestr)
        } else if under("/ie") {
            Some(Provider::Equal)
        } else {
            None
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Provider::Deepvue => "deepvue",
            Provider::Cashfree => "cashfree",
            Provider::Attestr => "attestr",
            Provider::Equal => "equal",
        }
    }

    /// The credential the provider counts a request against, read before the rate limit: the
    /// limiter is keyed per provider and credential, so one provider's traffic never uses up
    /// another's quota.
    async fn limit_key(self, endpoint: Option<Endpoint>, request: Request) -> (Request, String) {
        let (request, credential) = match self {
            Provider::Deepvue if endpoint == Some(Endpoint::Authorize) => {
                deepvue::read_authorize_form(request).await
            }
            Provider::Deepvue => {
                let key = header_text(request.headers(), "x-api-key").to_owned();
                (request, key)
            }
            Provider::Cashfree => {
                let key = header_text(request.headers(), "x-client-id").to_owned();
                (request, key)
            }
            Provider::Attestr | Provider::Equal => {
                let key = header_text(request.headers(), "authorization").to_owned();
                (request, key)
            }
        };
        (request, format!("{}:{credential}", self.name()))
    }

    /// The refusal of a request without the provider's credentials, or `None` to let it in.
    fn authenticate(
        self,
        app: &Shared,
        endpoint: Option<Endpoint>,
        headers: &HeaderMap,
    ) -> Option<Response> {
        match self {
            Provider::Deepvue => deepvue::authenticate(app, endpoint, headers),
            Provider::Cashfree => cashfree::authenticate(headers),
            Provider::Attestr => attestr::authenticate(headers),
            Provider::Equal => equal::authenticate(headers),
        }
    }

    /// The provider's 429. `daily` when the day's window is the full one: Attestr tells that
    /// apart (4293, stop for today) from a short burst (4291).
    pub(super) fn too_many(
        self,
        config: &SandboxConfig,
        daily: bool,
        retry_at_ms: Option<u64>,
    ) -> Response {
        let mut response = match self {
            Provider::Deepvue => deepvue::rate_limited(),
            Provider::Cashfree => cashfree::rate_limited(),
            Provider::Attestr => attestr::rate_limited(daily),
            Provider::Equal => equal::gateway_refusal(StatusCode::TOO_MANY_REQUESTS),
        };
        if let Some(at) = retry_at_ms {
            faults::retry_after(self.retry_after(config), at, response.headers_mut());
        }
        response
    }

    /// A 5xx from the provider's gateway, in whatever shape its gateway answers.
    pub(super) fn unavailable(self, status: StatusCode) -> Response {
        match self {
            Provider::Deepvue => deepvue::detail(status, "Service temporarily unavailable"),
            Provider::Cashfree => cashfree::unavailable(status),
            Provider::Attestr => attestr::unavailable(status),
            Provider::Equal => equal::gateway_refusal(status),
        }
    }

    /// Cashfree always says when to come back; the others as `--retry-after` asks.
    fn retry_after(self, config: &SandboxConfig) -> RetryAfter {
        match (self, config.retry_after) {
            (Provider::Cashfree, RetryAfter::None) => RetryAfter::Seconds,
            (_, style) => style,
        }
    }

    /// Cashfree always sends `X-RateLimit-*`; the others as `--rate-headers` asks.
    fn rate_headers(self, config: &SandboxConfig) -> RateHeaders {
        match self {
            Provider::Cashfree => RateHeaders::X,
            _ => config.rate_headers,
        }
    }

    /// Headers the provider puts on every answer: Attestr's tracing id.
    fn stamp(self, app: &Shared, headers: &mut HeaderMap) {
        if self == Provider::Attestr
            && let Ok(value) = HeaderValue::try_from(app.ids.transaction_id())
        {
            headers.insert(HeaderName::from_static("xattestrid"), value);
        }
    }

    /// The answer to a path the provider does not serve, or serves for other methods.
    fn no_route(self, status: StatusCode) -> Response {
        let message = if status == StatusCode::METHOD_NOT_ALLOWED {
            "Method Not Allowed"
        } else {
            "Not Found"
        };
        match self {
            Provider::Deepvue => deepvue::detail(status, message),
            Provider::Cashfree if status == StatusCode::NOT_FOUND => {
                cashfree::error(status, "not_found_error", "url_not_found", message)
            }
            Provider::Cashfree => {
                cashfree::error(status, "validation_error", "method_not_allowed", message)
            }
            Provider::Attestr => attestr::error(status, 4001, message, None),
            Provider::Equal => equal::failure(status, "invalid_request", message),
        }
    }
}

/// The router's fallback: a provider's own 404 under its prefix, Deepvue's elsewhere.
pub(super) async fn not_found(uri: Uri) -> Response {
    Provider::of(uri.path())
        .unwrap_or(Provider::Deepvue)
        .no_route(StatusCode::NOT_FOUND)
}

/// The router's fallback for a known path called with another method.
pub(super) async fn method_not_allowed(uri: Uri) -> Response {
    Provider::of(uri.path())
        .unwrap_or(Provider::Deepvue)
        .no_route(StatusCode::METHOD_NOT_ALLOWED)
}

/// The middleware: counts every request, then sends a provider's through its gateway.
pub(super) async fn gate(State(app): State<Shared>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let endpoint = Endpoint::of(request.method(), path);
    let provider = Provider::of(path);
    if let Some(endpoint) = endpoint {
        lock(&app.stats).arrived(endpoint);
    }
    let Some(provider) = provider else {
        return next.run(request).await;
    };
    lock(&app.stats).provider_arrived(provider);
    let mut answer = through_gateway(&app, provider, endpoint, request, next).await;
    if let Answer::Respond(response) = &mut answer {
        provider.stamp(&app, response.headers_mut());
    }
    lock(&app.stats).provider_answered(provider, &answer);
    answer.into_response()
}

/// A provider request through the outage and the rate limiter, with the headers it asks for.
async fn through_gateway(
    app: &Shared,
    provider: Provider,
    endpoint: Option<Endpoint>,
    request: Request,
    next: Next,
) -> Answer {
    let arrival = clock::now_ms();
    if let Some(until) = app.down_until(arrival) {
        return faults::down(&app.config, provider, until);
    }
    let (request, key) = provider.limit_key(endpoint, request).await;
    let late = faults::arrival_delay_ms(app.config.arrival_jitter_ms, &mut rand::rng());
    let arrival = if late > 0 {
        tokio::time::sleep(Duration::from_millis(late)).await;
        clock::now_ms()
    } else {
        arrival
    };
    let decision = lock(&app.limiter).admit(&key, arrival);
    let mut answer = if decision.admitted {
        lock(&app.stats).admitted(arrival / 1000);
        admitted(app, provider, endpoint, request, next).await
    } else {
        let daily = is_daily(&decision);
        Answer::Respond(provider.too_many(&app.config, daily, decision.retry_at_ms()))
    };
    if let Answer::Respond(response) = &mut answer {
        faults::rate_headers(
            provider.rate_headers(&app.config),
            &decision,
            response.headers_mut(),
        );
    }
    answer
}

/// Whether a refusal is for the day: the day's window is among the full ones.
fn is_daily(decision: &Decision) -> bool {
    decision
        .windows
        .iter()
        .any(|window| window.remaining == 0 && window.length_ms >= 86_400_000)
}

/// A request the rate limiter let through, on its way past the gateway's other steps.
async fn admitted(
    app: &Shared,
    provider: Provider,
    endpoint: Option<Endpoint>,
    request: Request,
    next: Next,
) -> Answer {
    let latency = latency_ms(&app.config);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if faults::draw(app.config.error_share) {
        return Answer::Respond(faults::gateway_error(provider));
    }
    let response = match provider.authenticate(app, endpoint, request.headers()) {
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
pub(super) fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
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

/// An `Authorization: Basic <credentials>` header's credentials, as sent (not decoded).
pub(super) fn basic_credentials(headers: &HeaderMap) -> Option<&str> {
    let value = header_text(headers, "authorization").trim();
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("basic")
        .then(|| credentials.trim())
}
