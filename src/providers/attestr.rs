//! Attestr: `Authorization: Basic <authToken>` on every call, the token an opaque string from
//! the dashboard. Errors carry a numeric `code` (4001–5001); the 429 codes 4293 and 4294 say
//! the day's quota is spent.

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

use super::{Answer, CallError, FixedHeaders};
use crate::config::{ProviderDefaults, ProviderSettings};
use crate::outcome::{Outcome, Status};

pub const DEFAULTS: ProviderDefaults = ProviderDefaults {
    name: "attestr",
    env_prefix: "ATTESTR",
    base_url: "https://api.attestr.com",
    credentials: &["AUTH_TOKEN"],
};

pub fn provider(settings: &ProviderSettings) -> Result<FixedHeaders, CallError> {
    let mut value = HeaderValue::from_str(&format!("Basic {}", settings.credentials[0].expose()))
        .map_err(|_| {
        CallError::Fatal("ATTESTR_AUTH_TOKEN contains characters HTTP headers cannot carry".into())
    })?;
    value.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value);
    Ok(FixedHeaders::new(headers, day_spent))
}

/// Attestr's error code in an answer's body.
pub fn code(answer: &Answer) -> Option<u64> {
    answer.json()?.get("code")?.as_u64()
}

fn day_spent(answer: &Answer) -> bool {
    matches!(code(answer), Some(4293 | 4294))
}

/// What an Attestr error answer means for the run: the codes that make every further call
/// pointless stop it with what to do; the rest are a verdict or an error on the row.
pub fn classify(answer: &Answer, label: &str) -> Result<Outcome, CallError> {
    let body = answer.json().unwrap_or_default();
    let message = body
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or_default()
        .to_string();
    let code = code(answer);
    let fatal = |advice: &str| {
        Err(CallError::Fatal(format!(
            "attestr answered {} to the {label} request ({message}): {advice}",
            code.map_or_else(
                || format!("HTTP {}", answer.status.as_u16()),
                |c| format!("code {c}")
            ),
        )))
    };
    let outcome = |status: Status, reason: &str| {
        let o = Outcome::new(status)
            .with_reason(reason)
            .with_provider_status(
                code.map_or_else(|| answer.status.as_u16().to_string(), |c| c.to_string()),
            );
        Ok(if message.is_empty() {
            o
        } else {
            o.with_message(message.clone())
        })
    };
    match code {
        Some(4005) => {
            fatal("the account's credits are low; top them up and run the same command again")
        }
        Some(4016) => fatal("check ATTESTR_AUTH_TOKEN"),
        Some(4031) => fatal("the account may not use this API; ask Attestr to grant access"),
        Some(4035) => {
            fatal("the service is not provisioned for the account; ask Attestr to enable it")
        }
        Some(4039) => fatal("allow this machine's IP address in the Attestr dashboard"),
        Some(4001) => outcome(Status::NotVerified, "malformed_request"),
        Some(5001) => outcome(Status::Error, "provider_error"),
        _ if answer.json().is_none() && matches!(answer.status.as_u16(), 404 | 405) => {
            fatal("check ATTESTR_BASE_URL (or base_url in [providers.attestr])")
        }
        Some(c) => outcome(
            if answer.status.is_server_error() {
                Status::Error
            } else {
                Status::NotVerified
            },
            &format!("code_{c}"),
        ),
        None => outcome(Status::Error, &format!("http_{}", answer.status.as_u16())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_error_codes() {
        let a = |status, code: u64| {
            Answer::sample(status, &format!(r#"{{"code":{code},"message":"m"}}"#))
        };
        for (status, code) in [
            (400, 4005),
            (401, 4016),
            (403, 4031),
            (403, 4035),
            (403, 4039),
        ] {
            assert!(
                matches!(classify(&a(status, code), "x"), Err(CallError::Fatal(_))),
                "{code}"
            );
        }
        let bad = classify(&a(400, 4001), "x").unwrap();
        assert_eq!(
            (bad.status, bad.reason.as_deref()),
            (Status::NotVerified, Some("malformed_request"))
        );
        let down = classify(&a(500, 5001), "x").unwrap();
        assert_eq!(
            (down.status, down.reason.as_deref()),
            (Status::Error, Some("provider_error"))
        );
        assert!(day_spent(&a(429, 4293)) && day_spent(&a(429, 4294)));
        assert!(!day_spent(&a(429, 4291)) && !day_spent(&a(429, 4292)));
    }
}
