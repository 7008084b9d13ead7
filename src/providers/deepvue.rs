//! Deepvue: a bearer token from `POST /v1/authorize`, plus the client secret as `x-api-key`
//! on every call.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use tokio::time::Instant;

use super::{Api, Authenticator, Billing, CallError, Request, provider_words};
use crate::config::{ProviderDefaults, Quotas};
use crate::engine::gate::Priority;
use crate::secret::Secret;

pub const DEFAULTS: ProviderDefaults = ProviderDefaults {
    name: "deepvue",
    env_prefix: "DEEPVUE",
    base_url: "https://production.deepvue.tech",
    // The Starter plan: the smallest Deepvue sells.
    quotas: Quotas {
        per_second: NonZeroU32::new(1),
        per_minute: NonZeroU32::new(30),
        per_day: NonZeroU32::new(1000),
    },
};

/// How long before its expiry a token is renewed: a call must never leave with a token that
/// expires on the way.
const RENEW_BEFORE: Duration = Duration::from_secs(300);
/// The documented lifetime, assumed when the answer does not say.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

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
        self.token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
                CallError::GaveUp { message, .. } => CallError::Fatal(format!(
                    "could not authenticate with deepvue: {message}; run again later"
                )),
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
        let lifetime = body
            .get("expiry")
            .and_then(|e| e.as_str())
            .and_then(|e| {
                time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(|expiry| expiry - time::OffsetDateTime::now_utc())
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or(DEFAULT_LIFETIME);
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

impl Authenticator for DeepvueAuth {
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

/// The reason code and message of a Deepvue answer: `sub_code`/`error` and `message`/`detail`.
pub fn reason_and_message(answer: &super::Answer) -> (Option<String>, Option<String>) {
    let body = answer.json().unwrap_or_default();
    let reason = ["sub_code", "error"]
        .iter()
        .find_map(|k| body.get(k).and_then(|v| v.as_str()))
        .map(|s| s.to_ascii_lowercase());
    (reason, provider_words(answer))
}
