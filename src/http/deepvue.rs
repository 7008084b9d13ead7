//! Deepvue: a bearer token from `POST /v1/authorize`, plus the client secret as `x-api-key`
//! on every call.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use tokio::time::Instant;

use super::{Answer, Api, Billing, CallError, Provider, Request, provider_words};
use crate::config::ProviderDefaults;
use crate::outcome::{Outcome, Reason, Status};
use crate::quota::gate::Priority;
use crate::secret::Secret;
use crate::util::sync::lock;

pub const DEFAULTS: ProviderDefaults = ProviderDefaults {
    name: "deepvue",
    env_prefix: "DEEPVUE",
    base_url: "https://production.deepvue.tech",
    credentials: &["CLIENT_ID", "CLIENT_SECRET"],
    download_hosts: &["*.amazonaws.com"],
};

/// How long before its expiry a token is renewed: a call must never leave with a token that
/// expires on the way.
const RENEW_BEFORE: Duration = Duration::from_secs(300);
/// The documented lifetime, assumed when the answer does not say.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The lifetime assumed when the expiry is already past by our clock.
const SKEWED_LIFETIME: Duration = Duration::from_secs(60);

struct Token {
    /// The headers every call carries, built once per token.
    headers: HeaderMap,
    renew_at: Instant,
}

pub struct DeepvueAuth {
    client_id: Secret,
    client_secret: Secret,
    token: std::sync::Mutex<Option<Token>>,
    /// Held across the authorize call, so that concurrent callers wait for one token instead
    /// of each fetching their own.
    renewal: tokio::sync::Mutex<()>,
}

impl DeepvueAuth {
    pub fn new(client_id: Secret, client_secret: Secret) -> Self {
        DeepvueAuth {
            client_id,
            client_secret,
            token: std::sync::Mutex::new(None),
            renewal: tokio::sync::Mutex::new(()),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Token>> {
        lock(&self.token)
    }

    fn fresh(&self) -> bool {
        self.slot()
            .as_ref()
            .is_some_and(|t| Instant::now() < t.renew_at)
    }

    async fn authorize(&self, api: &Api) -> Result<Token, CallError> {
        let url = api.url("/v1/authorize");
        let (id, secret) = (self.client_id.clone(), self.client_secret.clone());
        let build = move |c: &reqwest::Client| {
            let form = reqwest::multipart::Form::new()
                .text("client_id", id.expose().to_string())
                .text("client_secret", secret.expose().to_string());
            c.post(url.clone()).multipart(form)
        };
        let answer = api
            .send_for_credentials(&Request {
                label: "authorize",
                billing: Billing::Free,
                priority: Priority::High,
                authenticated: false,
                build: &build,
            })
            .await
            .map_err(|e| match e {
                // A provider failing for a while: the call that waited for the token fails as
                // if it had, unbilled, and a later run sends it again; the breaker stops the
                // run if the provider stays down. Ending the run here would leave the output
                // unwritten for a blip the other calls ride out.
                CallError::GaveUp {
                    label,
                    reason,
                    message,
                    ..
                } => CallError::GaveUp {
                    label,
                    reason,
                    message: format!("could not authenticate with deepvue: {message}"),
                    attempts: 0,
                },
                other => other,
            })?;
        if !answer.status.is_success() {
            return Err(CallError::Fatal(format!(
                "deepvue refused the credentials (HTTP {}{}); check DEEPVUE_CLIENT_ID and \
                 DEEPVUE_CLIENT_SECRET",
                answer.status.as_u16(),
                provider_words(&answer)
                    .map(|w| format!(": {w}"))
                    .unwrap_or_default()
            )));
        }
        let body = answer.json().unwrap_or_default();
        let Some(token) = body.get("access_token").and_then(|t| t.as_str()) else {
            return Err(CallError::Fatal(
                "deepvue's authorize answer carried no access_token; run again later".into(),
            ));
        };
        let expiry = body.get("expiry").and_then(|e| e.as_str()).and_then(|e| {
            time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339).ok()
        });
        let lifetime = match expiry {
            // Not said: the documented lifetime.
            None => DEFAULT_LIFETIME,
            // Already past by our clock (the clocks disagree): use it briefly, then renew.
            Some(e) => {
                Duration::try_from(e - time::OffsetDateTime::now_utc()).unwrap_or(SKEWED_LIFETIME)
            }
        };
        // Renew a little early: five minutes, or a tenth of a short lifetime.
        let renew_in = lifetime.saturating_sub(RENEW_BEFORE.min(lifetime / 10));
        Ok(Token {
            headers: self.headers_for(token)?,
            renew_at: Instant::now() + renew_in,
        })
    }

    fn headers_for(&self, token: &str) -> Result<HeaderMap, CallError> {
        let bad = |_| {
            CallError::Fatal(
                "the deepvue credentials contain characters HTTP headers cannot carry".into(),
            )
        };
        let mut bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(bad)?;
        bearer.set_sensitive(true);
        let mut key = HeaderValue::from_str(self.client_secret.expose()).map_err(bad)?;
        key.set_sensitive(true);
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, bearer);
        h.insert("x-api-key", key);
        Ok(h)
    }
}

impl Provider for DeepvueAuth {
    fn refresh<'a>(
        &'a self,
        api: &'a Api,
    ) -> Pin<Box<dyn Future<Output = Result<(), CallError>> + Send + 'a>> {
        Box::pin(async move {
            if self.fresh() {
                return Ok(());
            }
            let _renewal = self.renewal.lock().await;
            if self.fresh() {
                return Ok(());
            }
            let token = self.authorize(api).await?;
            *self.slot() = Some(token);
            Ok(())
        })
    }

    fn headers(&self) -> Option<HeaderMap> {
        self.slot()
            .as_ref()
            .filter(|t| Instant::now() < t.renew_at)
            .map(|t| t.headers.clone())
    }

    fn rejected(&self, headers: &HeaderMap) {
        let mut slot = self.slot();
        if slot
            .as_ref()
            .is_some_and(|t| t.headers.get(AUTHORIZATION) == headers.get(AUTHORIZATION))
        {
            *slot = None;
        }
    }
}

/// The request id of an accepted call (`request_id`, at the top or under `data`). An accepted
/// call without one may have been billed and cannot be polled: it is held, never resent.
pub fn accepted_request_id(answer: &Answer, label: &'static str) -> Result<String, CallError> {
    let body = answer.json().unwrap_or_default();
    body.get("request_id")
        .or_else(|| body.get("data").and_then(|d| d.get("request_id")))
        .and_then(|v| v.as_str())
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| CallError::Unconfirmed {
            label,
            message: "the provider accepted the request without a request_id".into(),
            attempts: answer.attempts,
        })
}

/// A refusal's outcome: the reason is Deepvue's `sub_code` or `error` (lower case), else the
/// HTTP status; the message is its words.
pub fn refusal(answer: &Answer, status: Status) -> Outcome {
    let body = answer.json().unwrap_or_default();
    let reason = ["sub_code", "error"]
        .iter()
        .find_map(|k| body.get(k).and_then(|v| v.as_str()))
        .map_or_else(|| Reason::http(answer.status.as_u16()), Reason::provider);
    let outcome = Outcome::new(status)
        .with_reason(reason)
        .with_provider_status(answer.status.as_u16().to_string());
    match provider_words(answer) {
        Some(m) => outcome.with_message(m),
        None => outcome,
    }
}

/// A 4xx answer to a paid call, read as the provider's verdict on the row. A 404 or 405, or an
/// answer without a JSON body, says the endpoint is wrong (a mistyped base URL): every row
/// would get the same false verdict, so the run stops instead.
pub fn verdict(answer: &Answer, label: &'static str) -> Result<Outcome, CallError> {
    let endpoint_wrong = matches!(answer.status.as_u16(), 404 | 405) || answer.json().is_none();
    if endpoint_wrong {
        return Err(CallError::Fatal(format!(
            "deepvue answered HTTP {} to the {label} request, which is not a verdict on the \
             row: check DEEPVUE_BASE_URL (or base_url in [providers.deepvue])",
            answer.status.as_u16()
        )));
    }
    Ok(refusal(answer, Status::NotVerified))
}
