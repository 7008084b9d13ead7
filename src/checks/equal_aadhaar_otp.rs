//! `equal-aadhaar-otp`: Aadhaar verification through Equal's Aadhaar OTP journey. Step one,
//! `journey/execute` with `{"aadhaar_no"}`, sends the OTP to the mobile linked to the number;
//! step two, the same call with `{"aadhaar_no","otp"}` under the same `transaction_id`, gives
//! the decision. A journey still IN_PROGRESS is followed with `journey/data/fetch`. The flow
//! between the steps is the engine's (`engine::otp`), the same for every OTP check.
//!
//! The Aadhaar number goes only into the request body. The journal keeps a hash of it, the
//! output's result columns a masked form (`XXXX XXXX 1234`) made here, never the provider's
//! `aadhaar_no`, whatever it holds.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::flatten::flatten;
use super::{
    CheckInfo, Env, OTP_COLUMN, OtpAnswer, OtpCheck, OtpSent, Pipeline, PollSchedule, Subject,
    otp_settings,
};
use crate::config::{CheckConfig, ConfigError, ConfigFile};
use crate::http::equal;
use crate::http::{Answer, Api, Billing, CallError, Intent, provider_words};
use crate::input::reader::ColumnSpec;
use crate::input::validate::{self, Invalid};
use crate::outcome::{Outcome, Reason, ReasonCode, Status};
use crate::quota::gate::Priority;

pub const INFO: CheckInfo = CheckInfo {
    name: "equal-aadhaar-otp",
    provider: &equal::DEFAULTS,
    summary: "Aadhaar verification by OTP through Equal's journey (two runs)",
    columns: &[
        ColumnSpec {
            name: "aadhaar",
            required: true,
            aliases: &[
                "aadhaar",
                "aadhaarno",
                "aadhaarnumber",
                "aadhar",
                "aadharno",
                "aadharnumber",
                "uid",
            ],
            help: "the 12-digit Aadhaar number (spaces and hyphens are accepted)",
            filled_later: false,
        },
        OTP_COLUMN,
    ],
    fields: &[
        (
            "otp_expires_at",
            "when the OTP sent for the row expires (RFC 3339, UTC)",
        ),
        (
            "journey_transaction_id",
            "Equal's id of the journey (bv_request_id is the transaction_id we chose)",
        ),
        ("aadhaar_masked", "the number, masked: XXXX XXXX 1234"),
        (
            "name, source, issuer, decision",
            "the holder's name and where it came from, and Equal's decision on the number",
        ),
        (
            "checks_N_<field>",
            "the checks Equal ran on the number, if any",
        ),
    ],
    settings: &["otp_valid_secs", "journey_id"],
    env: &[(
        "EQUAL_JOURNEY_ID",
        "the journey Equal set up for the account (or journey_id in the config)",
    )],
    reuse: crate::checks::Reuse {
        within: crate::checks::ReuseWithin::Never,
        configurable: false,
        why: "an OTP check never reuses an answer: each verification is the holder's consent, given by the OTP of that run",
        echoes: &[],
    },
    make: build,
};

fn build(config: &ConfigFile, section: &CheckConfig, env: Env) -> Result<Pipeline, ConfigError> {
    Ok(Pipeline::Otp(Arc::new(AadhaarOtp::new(
        config, section, env,
    )?)))
}

/// Equal does not document the OTP's life; UIDAI's OTPs last ten minutes.
const OTP_VALIDITY: Duration = Duration::from_secs(600);

const DEFAULT_SCHEDULE: PollSchedule = PollSchedule {
    first: Duration::from_secs(2),
    max: Duration::from_secs(15),
    deadline: Duration::from_secs(5 * 60),
};

pub struct AadhaarOtp {
    journey_id: String,
    validity: Duration,
    schedule: PollSchedule,
}

impl AadhaarOtp {
    /// `env` is where `EQUAL_JOURNEY_ID` is looked up (the process environment, or the
    /// sandbox's); it wins over the config, as base URLs do.
    pub fn new(
        config: &ConfigFile,
        section: &CheckConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AadhaarOtp, ConfigError> {
        let validity = otp_settings(config, INFO.name, section, OTP_VALIDITY)?;
        let journey_id = env("EQUAL_JOURNEY_ID")
            .filter(|j| !j.trim().is_empty())
            .or_else(|| section.journey_id.clone())
            .ok_or_else(|| {
                config.invalid(
                    format!("[checks.{}] journey_id", INFO.name),
                    "is not set: Equal shares the journey id at onboarding; set \
                     EQUAL_JOURNEY_ID or journey_id in this section",
                )
            })?;
        Ok(AadhaarOtp {
            journey_id: journey_id.trim().to_string(),
            validity,
            schedule: DEFAULT_SCHEDULE.from_config(config, INFO.name, section)?,
        })
    }
}

/// The handle is `"<transaction_id> <journey_transaction_id>"`: ours names the journey at
/// step two, both are needed to fetch it.
fn split(handle: &str) -> (&str, &str) {
    handle.split_once(' ').unwrap_or((handle, ""))
}

impl AadhaarOtp {
    async fn execute(
        &self,
        api: &Api,
        label: &'static str,
        transaction_id: &str,
        input: Value,
        intent: &dyn Intent,
    ) -> Result<Answer, CallError> {
        let url = api.url("/ie/transaction/journey/execute");
        let body = serde_json::json!({
            "journey_id": self.journey_id,
            "transaction_id": transaction_id,
            "input_data": input,
        });
        let build = move |c: &reqwest::Client| c.post(url.clone()).json(&body);
        api.call(label, Billing::Paid(intent), Priority::Low, &build)
            .await
    }
}

#[async_trait::async_trait]
impl OtpCheck for AadhaarOtp {
    fn subject(&self, values: &[&str]) -> Result<Subject, Invalid> {
        let number = validate::aadhaar(values[0])?;
        Ok(Subject {
            ident: number.clone(),
            values: vec![number, values[1].trim().to_string()],
        })
    }

    fn otp_validity(&self) -> Duration {
        self.validity
    }

    async fn send_otp(
        &self,
        api: &Api,
        subject: &Subject,
        intent: &dyn Intent,
    ) -> Result<(OtpSent, u32), CallError> {
        // A journey per OTP: a new OTP for the same row must not land in the old journey.
        let transaction_id = format!("bv-{:016x}", rand::random::<u64>());
        let input = serde_json::json!({"aadhaar_no": subject.values[0]});
        let answer = self
            .execute(api, "aadhaar otp step 1", &transaction_id, input, intent)
            .await?;
        let journey = read_journey(&answer, &subject.values[0])?;
        let sent = match journey {
            OtpAnswer::Running => {
                let jt = journey_transaction_id(&answer);
                let fields = vec![
                    ("journey_transaction_id".into(), jt.clone()),
                    (
                        "aadhaar_masked".into(),
                        validate::mask_aadhaar(&subject.values[0]),
                    ),
                ];
                OtpSent::Sent {
                    handle: format!("{transaction_id} {jt}"),
                    outcome: Outcome::new(Status::Pending)
                        .with_reason(Reason::OTP_SENT)
                        .with_message(
                            "the OTP went to the mobile linked to the Aadhaar number: fill the \
                             otp column and run the same command again before it expires",
                        )
                        .with_provider_status("IN_PROGRESS")
                        .with_request_id(transaction_id)
                        .with_fields(fields),
                }
            }
            OtpAnswer::Done(o) | OtpAnswer::Refused(o) | OtpAnswer::Closed(o) => OtpSent::Done(o),
        };
        Ok((sent, answer.attempts))
    }

    async fn verify(
        &self,
        api: &Api,
        handle: &str,
        subject: &Subject,
        otp: &str,
        intent: &dyn Intent,
    ) -> Result<(OtpAnswer, u32), CallError> {
        let (transaction_id, _) = split(handle);
        let input = serde_json::json!({"aadhaar_no": subject.values[0], "otp": otp});
        let answer = self
            .execute(api, "aadhaar otp step 2", transaction_id, input, intent)
            .await?;
        Ok((read_journey(&answer, &subject.values[0])?, answer.attempts))
    }

    async fn fetch(
        &self,
        api: &Api,
        handle: &str,
        subject: &Subject,
    ) -> Result<OtpAnswer, CallError> {
        let (transaction_id, journey_transaction_id) = split(handle);
        let url = api.url("/ie/transaction/journey/data/fetch");
        let body = serde_json::json!({
            "transaction_id": transaction_id,
            "journey_transaction_id": journey_transaction_id,
        });
        let build = move |c: &reqwest::Client| c.post(url.clone()).json(&body);
        let answer = api
            .call(
                "aadhaar journey fetch",
                Billing::Free,
                Priority::High,
                &build,
            )
            .await?;
        read_journey(&answer, &subject.values[0])
    }

    fn schedule(&self) -> PollSchedule {
        self.schedule
    }
}

fn journey_transaction_id(answer: &Answer) -> String {
    answer
        .json()
        .and_then(|b| {
            b.get("journey_transaction_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// Reads a journey envelope (step one, step two or a fetch). `aadhaar` is the row's number,
/// for the masked column: the envelope's own is never shown.
pub fn read_journey(answer: &Answer, aadhaar: &str) -> Result<OtpAnswer, CallError> {
    let body = answer.json().unwrap_or_default();
    let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
    let code = text("status_code").to_ascii_lowercase();
    let status = text("status").to_ascii_uppercase();
    let message = text("message").to_string();
    if matches!(answer.status.as_u16(), 404 | 405) && answer.json().is_none() {
        return Err(CallError::Fatal(format!(
            "equal answered HTTP {} to the journey request: check EQUAL_BASE_URL (or base_url \
             in [providers.equal])",
            answer.status.as_u16()
        )));
    }
    if !answer.status.is_success() {
        let reason = if code.is_empty() {
            Reason::http(answer.status.as_u16())
        } else {
            Reason::provider(&code)
        };
        return Ok(OtpAnswer::Done(
            Outcome::new(Status::Error)
                .with_reason(reason)
                .with_message(provider_words(answer).unwrap_or_default())
                .with_provider_status(answer.status.as_u16().to_string()),
        ));
    }
    let outcome = |s: Status, reason: ReasonCode| {
        Outcome::new(s)
            .with_reason(reason)
            .with_message(message.clone())
            .with_provider_status(status.clone())
    };
    let clear = "clear the otp cell and run the same command again to send a new OTP";
    Ok(match (status.as_str(), code.as_str()) {
        ("SUCCESS", _) => {
            let decision = text("decision").to_ascii_uppercase();
            let (s, reason) = match decision.as_str() {
                "CLEAR" => (Status::Verified, None),
                "MUST REVIEW" => (Status::NeedsReview, Some(Reason::MUST_REVIEW)),
                "NEEDS REVIEW" => (Status::NeedsReview, Some(Reason::NEEDS_REVIEW)),
                // A success without a decision this tool knows is not a verification.
                _ => (Status::NeedsReview, Some(Reason::UNKNOWN_DECISION)),
            };
            let mut o = Outcome::new(s)
                .with_message(message.clone())
                .with_provider_status(status.clone())
                .with_fields(holder_fields(&body, aadhaar));
            if let Some(r) = reason {
                o = o.with_reason(r);
            }
            OtpAnswer::Done(o)
        }
        ("IN_PROGRESS", _) => OtpAnswer::Running,
        ("FAILURE", "invalid_aadhaar_no") => OtpAnswer::Done(outcome(
            Status::NotVerified,
            Reason::INVALID_AADHAAR_NO.into(),
        )),
        ("FAILURE", "document_not_found") => OtpAnswer::Done(outcome(
            Status::NotVerified,
            Reason::DOCUMENT_NOT_FOUND.into(),
        )),
        ("FAILURE", "invalid_otp") => OtpAnswer::Refused(
            outcome(Status::Pending, Reason::OTP_INVALID.into()).with_message(
                "the OTP was wrong: correct the otp cell and run the same command again",
            ),
        ),
        ("FAILURE", "otp_expired") => OtpAnswer::Closed(
            outcome(Status::Pending, Reason::OTP_EXPIRED.into())
                .with_message(format!("the OTP expired before it was sent back; {clear}")),
        ),
        ("FAILURE", _) if !code.is_empty() => {
            OtpAnswer::Done(outcome(Status::Error, Reason::provider(&code)))
        }
        _ => OtpAnswer::Done(
            outcome(Status::Error, Reason::UNEXPECTED_ANSWER.into()).with_message(
                "equal answered in a shape this tool does not know; the next run asks again",
            ),
        ),
    })
}

/// The holder's key, flattened, with our masked number in place of the provider's.
fn holder_fields(body: &Value, aadhaar: &str) -> Vec<(String, String)> {
    let mut shown = Map::new();
    if let Some(jt) = body.get("journey_transaction_id") {
        shown.insert("journey_transaction_id".into(), jt.clone());
    }
    shown.insert(
        "aadhaar_masked".into(),
        Value::String(validate::mask_aadhaar(aadhaar)),
    );
    let holder = body
        .pointer("/data/keys/aadhaar/0")
        .and_then(Value::as_object);
    for (k, v) in holder.into_iter().flatten() {
        if k != "aadhaar_no" {
            shown.insert(k.clone(), v.clone());
        }
    }
    if !shown.contains_key("decision")
        && let Some(d) = body.get("decision")
    {
        shown.insert("decision".into(), d.clone());
    }
    flatten(&Value::Object(shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NUMBER: &str = "234123412346";

    fn envelope(status: &str, code: &str, decision: &str) -> Answer {
        Answer::sample(
            200,
            &format!(
                r#"{{"transaction_id":"t","journey_transaction_id":"jt","journey_id":"j",
                "status":"{status}","status_code":"{code}","message":"m","decision":"{decision}",
                "checks":[],"data":{{"keys":{{"aadhaar":[{{"aadhaar_no":"{NUMBER}",
                "name":"Ravi Kumar","source":"nsdl","issuer":"","decision":"{decision}",
                "checks":[]}}]}}}}}}"#
            ),
        )
    }

    #[test]
    fn documented_answers() {
        let read = |s, c, d| read_journey(&envelope(s, c, d), NUMBER).unwrap();
        match read("SUCCESS", "success", "CLEAR") {
            OtpAnswer::Done(o) => {
                assert_eq!(o.status, Status::Verified);
                let shown: Vec<String> = o.fields.iter().map(|(_, v)| v.clone()).collect();
                assert!(shown.contains(&"XXXX XXXX 2346".to_string()), "{shown:?}");
                assert!(!shown.iter().any(|v| v.contains(NUMBER)), "{shown:?}");
                assert!(o.fields.contains(&("name".into(), "Ravi Kumar".into())));
                assert!(o.fields.contains(&("decision".into(), "CLEAR".into())));
            }
            other => panic!("{other:?}"),
        }
        for (decision, reason) in [
            ("MUST REVIEW", "must_review"),
            ("NEEDS REVIEW", "needs_review"),
            ("", "unknown_decision"),
        ] {
            match read("SUCCESS", "success", decision) {
                OtpAnswer::Done(o) => assert_eq!(
                    (o.status, o.reason.as_deref()),
                    (Status::NeedsReview, Some(reason))
                ),
                other => panic!("{other:?}"),
            }
        }
        for code in ["invalid_aadhaar_no", "document_not_found"] {
            assert!(matches!(read("FAILURE", code, ""),
                OtpAnswer::Done(o) if o.status == Status::NotVerified && o.reason.as_deref() == Some(code)));
        }
        assert!(matches!(
            read("IN_PROGRESS", "otp_sent", ""),
            OtpAnswer::Running
        ));
        assert!(matches!(
            read("FAILURE", "invalid_otp", ""),
            OtpAnswer::Refused(_)
        ));
        assert!(matches!(
            read("FAILURE", "otp_expired", ""),
            OtpAnswer::Closed(_)
        ));
        let refused = read_journey(
            &Answer::sample(
                400,
                r#"{"status":"FAILURE","status_code":"invalid_request","message":"aadhaar_no is required"}"#,
            ),
            NUMBER,
        )
        .unwrap();
        assert!(matches!(refused, OtpAnswer::Done(o)
            if o.status == Status::Error && o.reason.as_deref() == Some("invalid_request")));
        assert!(read_journey(&Answer::sample(404, ""), NUMBER).is_err());
    }

    #[test]
    fn handles_carry_both_ids() {
        assert_eq!(split("bv-1 jt 2"), ("bv-1", "jt 2"));
        assert_eq!(split("bv-1"), ("bv-1", ""));
    }
}
