//! Attestr: `Authorization: Basic <authToken>` on every call, the token an opaque string from
//! the dashboard. Errors carry a numeric `code` (4001–5001); the 429 codes 4293 and 4294 say
//! the day's quota is spent.

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

use super::{Answer, CallError, FixedHeaders};
use crate::config::{ProviderDefaults, ProviderSettings};
use crate::outcome::{Outcome, Reason, Status};

pub const DEFAULTS: ProviderDefaults = ProviderDefaults {
    name: "attestr",
    env_prefix: "ATTESTR",
    base_url: "https://api.attestr.com",
    credentials: &["AUTH_TOKEN"],
    download_hosts: &[],
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

/// What an Attestr error answer means. The client has dealt with 401 and 403 (credentials,
/// access, IP allow-list: the run stops, with Attestr's words), 429 (4291/4292 wait, 4293/4294
/// end the day) and 5xx (5001: retried, then `error`) before a check sees an answer; what is
/// left is 400: low credits (4005) stop the run with what to do, a malformed request (4001)
/// is the row's `not_verified`.
pub fn classify(answer: &Answer, label: &str) -> Result<Outcome, CallError> {
    let body = answer.json().unwrap_or_default();
    let message = body
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or_default()
        .to_string();
    let code = code(answer);
    let advice = match code {
        Some(4005) => {
            Some("the account's credits are low; top them up and run the same command again")
        }
        None if matches!(answer.status.as_u16(), 404 | 405) => {
            Some("check ATTESTR_BASE_URL (or base_url in [providers.attestr])")
        }
        _ => None,
    };
    let shown = code.map_or_else(|| answer.status.as_u16().to_string(), |c| c.to_string());
    if let Some(advice) = advice {
        return Err(CallError::Fatal(format!(
            "attestr answered {shown} to the {label} request ({message}): {advice}"
        )));
    }
    let (status, reason) = match code {
        Some(4001) => (Status::NotVerified, Reason::MALFORMED_REQUEST.into()),
        Some(c) => (Status::Error, Reason::numbered(c)),
        None => (Status::Error, Reason::http(answer.status.as_u16())),
    };
    let mut outcome = Outcome::new(status)
        .with_reason(reason)
        .with_provider_status(shown);
    let details = body.get("details").and_then(|d| d.as_str());
    if let Some(d) = details.filter(|d| !d.is_empty()) {
        outcome = outcome.with_message(format!("{message}: {d}"));
    } else {
        outcome = outcome.with_message(message);
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_error_codes() {
        let a = |status, code: u64| {
            Answer::sample(status, &format!(r#"{{"code":{code},"message":"m"}}"#))
        };
        let low = classify(&a(400, 4005), "x").unwrap_err().to_string();
        assert!(low.contains("credits are low"), "{low}");
        let bad = classify(
            &Answer::sample(
                400,
                r#"{"code":4001,"message":"m","details":"reg is invalid"}"#,
            ),
            "x",
        )
        .unwrap();
        assert_eq!(
            (bad.status, bad.reason.as_deref(), bad.message.as_deref()),
            (
                Status::NotVerified,
                Some("malformed_request"),
                Some("m: reg is invalid")
            )
        );
        let other = classify(&a(400, 4999), "x").unwrap();
        assert_eq!(other.status, Status::Error);
        let missing = classify(&Answer::sample(404, "<html>"), "x").unwrap_err();
        assert!(missing.to_string().contains("ATTESTR_BASE_URL"));
        assert!(day_spent(&a(429, 4293)) && day_spent(&a(429, 4294)));
        assert!(!day_spent(&a(429, 4291)) && !day_spent(&a(429, 4292)));
    }
}
