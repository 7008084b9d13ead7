//! The gateway's injected faults: 5xx answers, dropped connections, outages, and the headers
//! that tell a client when it may come back.
//!
//! These answer before or after an endpoint, never instead of its bookkeeping: a request that
//! ran and was then reset stays accepted and billed, which is the case a client must survive.

use std::io;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;

use super::gateway::Provider;
use super::limits::Decision;
use super::{DownStatus, RateHeaders, RetryAfter, SandboxConfig, clock};

/// What the gateway does with a provider request: answer it, or drop its connection unanswered.
pub(super) enum Answer {
    Respond(Response),
    Reset,
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self {
            Answer::Respond(response) => response,
            Answer::Reset => reset(),
        }
    }
}

/// Whether `value` can be drawn against: a share from 0 to 1 inclusive (never NaN).
pub(super) fn is_share(value: f64) -> bool {
    (0.0..=1.0).contains(&value)
}

/// Parses a `--*-share` flag, refusing what [`is_share`] refuses at the command line already.
pub(super) fn parse_share(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if is_share(value) {
        Ok(value)
    } else {
        Err(format!("{text} is not a share between 0 and 1"))
    }
}

/// True for a `share` of the calls, at random: these faults model a flaky network, not a
/// scripted scenario, so they need not repeat from run to run.
pub(super) fn draw(share: f64) -> bool {
    share > 0.0 && rand::rng().random_bool(share)
}

/// How late a request is counted on a path with `jitter_ms` of jitter: normal, mean twice
/// the jitter and standard deviation the jitter (Box-Muller), never before it arrived. Two
/// requests sent `d` apart are then counted about `d ± 1.4 × jitter` apart.
pub(super) fn arrival_delay_ms(jitter_ms: u64, rng: &mut impl Rng) -> u64 {
    if jitter_ms == 0 {
        return 0;
    }
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random();
    let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
    let jitter = jitter_ms as f64;
    (2.0 * jitter + jitter * z).max(0.0).round() as u64
}

/// A gateway's transient 5xx: 502, 503 or 504 at random, in the provider's error shape.
pub(super) fn gateway_error(provider: Provider) -> Response {
    let statuses = [
        StatusCode::BAD_GATEWAY,
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::GATEWAY_TIMEOUT,
    ];
    let status = statuses[rand::rng().random_range(0..statuses.len())];
    provider.unavailable(status)
}

/// A response whose body fails before its first byte. hyper has only buffered the head when it
/// polls the body, and on the body's error it closes the connection without flushing it: the
/// client sees the connection end with no answer at all, exactly like a reset mid-request.
fn reset() -> Response {
    let failing = futures_util::stream::iter([Err::<Bytes, _>(io::Error::new(
        io::ErrorKind::ConnectionReset,
        "sandbox: connection reset",
    ))]);
    Body::from_stream(failing).into_response()
}

/// The outage's answer to every provider request, whatever the limits say.
pub(super) fn down(config: &SandboxConfig, provider: Provider, until_ms: u64) -> Answer {
    match config.down_status {
        DownStatus::Unavailable => {
            Answer::Respond(provider.unavailable(StatusCode::SERVICE_UNAVAILABLE))
        }
        DownStatus::RateLimited => {
            Answer::Respond(provider.too_many(config, false, Some(until_ms)))
        }
        DownStatus::Reset => Answer::Reset,
    }
}

/// Whole seconds from now until `at_ms`, rounded up so that a client waiting that long is
/// never early.
fn seconds_until(at_ms: u64) -> u64 {
    at_ms.saturating_sub(clock::now_ms()).div_ceil(1000)
}

/// Adds `Retry-After` for a client that may come back at `at_ms`, in the form `style` asks.
pub(super) fn retry_after(style: RetryAfter, at_ms: u64, headers: &mut HeaderMap) {
    let value = match style {
        RetryAfter::None => return,
        RetryAfter::Seconds => HeaderValue::from(seconds_until(at_ms).max(1)),
        RetryAfter::Date => {
            // HTTP dates have whole seconds: round up, so the date is never early either.
            let at = UNIX_EPOCH + Duration::from_secs(at_ms.div_ceil(1000));
            text_value(httpdate::fmt_http_date(at))
        }
    };
    headers.insert(RETRY_AFTER, value);
}

/// Adds the rate-limit headers `style` asks for, from the limiter's `decision` on this request.
pub(super) fn rate_headers(style: RateHeaders, decision: &Decision, headers: &mut HeaderMap) {
    let Some(tightest) = decision.tightest() else {
        return;
    };
    let reset = seconds_until(tightest.frees_at_ms);
    match style {
        RateHeaders::None => {}
        RateHeaders::X => {
            for (name, value) in [
                ("x-ratelimit-limit", tightest.limit),
                ("x-ratelimit-remaining", tightest.remaining),
                ("x-ratelimit-reset", reset),
            ] {
                headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
            }
        }
        RateHeaders::Ietf => {
            let policy: Vec<String> = decision
                .windows
                .iter()
                .map(|w| format!("\"{}\";q={};w={}", w.name, w.limit, w.length_ms / 1000))
                .collect();
            headers.insert(
                HeaderName::from_static("ratelimit-policy"),
                text_value(policy.join(", ")),
            );
            let state = format!("\"{}\";r={};t={reset}", tightest.name, tightest.remaining);
            headers.insert(HeaderName::from_static("ratelimit"), text_value(state));
        }
    }
}

/// A header value from text built here of printable ASCII only, which is always valid.
fn text_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    #[test]
    fn arrivals_are_late_by_a_normal_delay_and_never_early() {
        let rng = &mut rand::rng();
        assert_eq!(super::arrival_delay_ms(0, rng), 0);
        let delays: Vec<f64> = (0..4000)
            .map(|_| super::arrival_delay_ms(50, rng) as f64)
            .collect();
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        let sd =
            (delays.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / delays.len() as f64).sqrt();
        assert!((95.0..105.0).contains(&mean), "mean {mean}");
        assert!((45.0..55.0).contains(&sd), "sd {sd}");
    }
}
