//! Cashfree Secure ID: `x-client-id` and `x-client-secret` on every call, an optional
//! `x-api-version`, and for accounts that use public-key two-factor authentication instead of
//! an IP allow-list, `x-cf-signature`: the RSA-OAEP (SHA-1) encryption of
//! `"<client_id>.<unix_seconds>"` with the account's public key, in base64.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderValue};
use rsa::pkcs8::DecodePublicKey;
use rsa::{Oaep, RsaPublicKey};
use tokio::time::Instant;

use super::{Answer, Api, CallError, Provider};
use crate::config::{ProviderDefaults, ProviderSettings};
use crate::outcome::{Outcome, Reason, Status};
use crate::util::sync::lock;

pub const DEFAULTS: ProviderDefaults = ProviderDefaults {
    name: "cashfree",
    env_prefix: "CASHFREE",
    base_url: "https://api.cashfree.com/verification",
    credentials: &["CLIENT_ID", "CLIENT_SECRET"],
    download_hosts: &[],
};

/// How long a signature is reused. Cashfree checks the timestamp inside it against its clock;
/// how much skew it allows is not published, so signatures are renewed every minute.
const SIGNATURE_LIFETIME: Duration = Duration::from_secs(60);

/// The failure to set up Cashfree's authentication: a configuration problem, said before any
/// call.
#[derive(Debug, thiserror::Error)]
pub enum CashfreeSetupError {
    #[error(
        "the public key in [providers.cashfree] public_key_file is not a PEM public key \
         (-----BEGIN PUBLIC KEY-----): {0}"
    )]
    PublicKey(String),
    #[error("the cashfree credentials or api_version contain characters HTTP headers cannot carry")]
    Header,
}

pub struct CashfreeAuth {
    /// `x-client-id`, `x-client-secret` and `x-api-version`.
    fixed: HeaderMap,
    /// The client id in clear, for the signature's plain text.
    client_id: String,
    public_key: Option<RsaPublicKey>,
    signed: Mutex<Option<(HeaderMap, Instant)>>,
}

impl CashfreeAuth {
    pub fn new(settings: &ProviderSettings) -> Result<CashfreeAuth, CashfreeSetupError> {
        let sensitive = |v: &str| {
            let mut h = HeaderValue::from_str(v).map_err(|_| CashfreeSetupError::Header)?;
            h.set_sensitive(true);
            Ok::<_, CashfreeSetupError>(h)
        };
        let mut fixed = HeaderMap::new();
        fixed.insert("x-client-id", sensitive(settings.credentials[0].expose())?);
        fixed.insert(
            "x-client-secret",
            sensitive(settings.credentials[1].expose())?,
        );
        if let Some(v) = &settings.api_version {
            fixed.insert(
                "x-api-version",
                HeaderValue::from_str(v).map_err(|_| CashfreeSetupError::Header)?,
            );
        }
        let public_key = settings
            .public_key
            .as_deref()
            .map(|pem| {
                RsaPublicKey::from_public_key_pem(pem.trim())
                    .map_err(|e| CashfreeSetupError::PublicKey(e.to_string()))
            })
            .transpose()?;
        Ok(CashfreeAuth {
            fixed,
            client_id: settings.credentials[0].expose().to_string(),
            public_key,
            signed: Mutex::new(None),
        })
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<(HeaderMap, Instant)>> {
        lock(&self.signed)
    }

    fn sign(&self, key: &RsaPublicKey) -> Result<HeaderMap, CallError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature = signature(key, &self.client_id, now)?;
        let mut value = HeaderValue::from_str(&signature)
            .map_err(|_| CallError::Fatal("a cashfree signature is not a header value".into()))?;
        value.set_sensitive(true);
        let mut headers = self.fixed.clone();
        headers.insert("x-cf-signature", value);
        Ok(headers)
    }
}

/// The `x-cf-signature` value for `client_id` at `unix_seconds`.
pub fn signature(
    key: &RsaPublicKey,
    client_id: &str,
    unix_seconds: i64,
) -> Result<String, CallError> {
    let plain = format!("{client_id}.{unix_seconds}");
    let sealed = key
        .encrypt(
            &mut rsa::rand_core::OsRng,
            Oaep::new::<sha1::Sha1>(),
            plain.as_bytes(),
        )
        .map_err(|e| CallError::Fatal(format!("cannot sign a cashfree request: {e}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(sealed))
}

impl Provider for CashfreeAuth {
    fn refresh<'a>(
        &'a self,
        _api: &'a Api,
    ) -> Pin<Box<dyn Future<Output = Result<(), CallError>> + Send + 'a>> {
        Box::pin(async move {
            let Some(key) = &self.public_key else {
                return Ok(());
            };
            if self
                .slot()
                .as_ref()
                .is_some_and(|(_, at)| at.elapsed() < SIGNATURE_LIFETIME)
            {
                return Ok(());
            }
            let headers = self.sign(key)?;
            *self.slot() = Some((headers, Instant::now()));
            Ok(())
        })
    }

    fn headers(&self) -> Option<HeaderMap> {
        if self.public_key.is_none() {
            return Some(self.fixed.clone());
        }
        self.slot()
            .as_ref()
            .filter(|(_, at)| at.elapsed() < SIGNATURE_LIFETIME)
            .map(|(h, _)| h.clone())
    }

    fn rejected(&self, headers: &HeaderMap) {
        // A signature the provider refused (its clock may disagree with ours) is made afresh.
        let mut slot = self.slot();
        if slot
            .as_ref()
            .is_some_and(|(h, _)| h.get("x-cf-signature") == headers.get("x-cf-signature"))
        {
            *slot = None;
        }
    }
}

/// Cashfree's error body, `{"type","code","message"}`: the code (lower case) is the reason.
pub fn refusal(answer: &Answer, status: Status) -> Outcome {
    let body = answer.json().unwrap_or_default();
    let text = |k: &str| body.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let outcome = Outcome::new(status)
        .with_reason(text("code").map_or_else(
            || Reason::http(answer.status.as_u16()),
            |c| Reason::provider(&c),
        ))
        .with_provider_status(answer.status.as_u16().to_string());
    match text("message") {
        Some(m) => outcome.with_message(m),
        None => outcome,
    }
}

/// The answers that say the run cannot go on for any row: no balance left, an endpoint that
/// does not exist (a mistyped base URL). A 401 or 403 (a refused IP) never gets here: the
/// client stops the run on those for every provider.
pub fn fatal(answer: &Answer, label: &str) -> Option<CallError> {
    let code = refusal(answer, Status::Error).reason.unwrap_or_default();
    let advice = match (answer.status.as_u16(), code.as_str()) {
        (422, "insufficient_balance") => {
            "the cashfree account has no balance left; top it up and run the same command again"
        }
        (404 | 405, _) if answer.json().is_none() => {
            "check CASHFREE_BASE_URL (or base_url in [providers.cashfree])"
        }
        _ => return None,
    };
    Some(CallError::Fatal(format!(
        "cashfree answered HTTP {} ({code}) to the {label} request: {advice}",
        answer.status.as_u16()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1024-bit key pair made for this test only (`openssl genpkey -algorithm RSA`): the
    /// public half signs, the private half proves what was signed.
    const PRIVATE: &str = include_str!("../../sandbox/fixtures/contract/cashfree-test-key.pem");
    const PUBLIC: &str = include_str!("../../sandbox/fixtures/contract/cashfree-test-key.pub.pem");

    #[test]
    fn the_signature_decrypts_to_client_id_and_time() {
        use rsa::pkcs8::DecodePrivateKey;
        let public = RsaPublicKey::from_public_key_pem(PUBLIC).unwrap();
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(PRIVATE).unwrap();
        let sig = signature(&public, "CF123", 1_767_225_600).unwrap();
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(sig)
            .unwrap();
        let plain = private.decrypt(Oaep::new::<sha1::Sha1>(), &sealed).unwrap();
        assert_eq!(plain, b"CF123.1767225600");
    }

    #[test]
    fn documented_error_bodies() {
        let o = refusal(
            &Answer::sample(
                404,
                r#"{"type":"validation_error","code":"verification_id_value_invalid","message":"verification_id is invalid"}"#,
            ),
            Status::NotVerified,
        );
        assert_eq!(o.reason.as_deref(), Some("verification_id_value_invalid"));
        assert_eq!(o.message.as_deref(), Some("verification_id is invalid"));
        let broke = Answer::sample(
            422,
            r#"{"type":"validation_error","code":"insufficient_balance","message":"low"}"#,
        );
        assert!(matches!(fatal(&broke, "x"), Some(CallError::Fatal(m)) if m.contains("top it up")));
        assert!(fatal(&Answer::sample(404, r#"{"code":"x"}"#), "x").is_none());
        assert!(fatal(&Answer::sample(404, "<html>"), "x").is_some());
    }
}
