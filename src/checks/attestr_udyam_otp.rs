//! `attestr-udyam-otp`: Udyam (MSME) verification by the OTP Udyam sends to the registered
//! mobile. Step one, `corpx/udyam/otp-gen {"reg","mobile"}`, sends the OTP and gives the
//! request's `_id`; step two, `corpx/udyam/otp-verify {"req","otp"}`, answers with the owner,
//! bank, employment, financials per year, units, address and NIC codes. Both are paid. The
//! flow between the steps is the engine's (`engine::otp`), the same for every OTP check.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::flatten::{flatten, snake_case};
use super::{
    CheckInfo, Env, OTP_COLUMN, OtpAnswer, OtpCheck, OtpSent, Pipeline, PollSchedule, Subject,
    otp_settings,
};
use crate::config::{CheckConfig, ConfigError, ConfigFile};
use crate::http::attestr::{self, classify};
use crate::http::{Answer, Api, Billing, CallError, Intent};
use crate::input::reader::ColumnSpec;
use crate::input::validate::{self, Invalid};
use crate::outcome::{Outcome, Reason, Status};
use crate::quota::gate::Priority;

pub const INFO: CheckInfo = CheckInfo {
    name: "attestr-udyam-otp",
    provider: &attestr::DEFAULTS,
    summary: "Udyam (MSME) details at Attestr, by the OTP sent to the registered mobile (two runs)",
    columns: &[
        ColumnSpec {
            name: "reg",
            required: true,
            aliases: &[
                "reg",
                "udyam",
                "udyamno",
                "udyamnumber",
                "udyamregistrationnumber",
            ],
            help: "the Udyam registration number, UDYAM-XX-00-0000000",
            filled_later: false,
        },
        ColumnSpec {
            name: "mobile",
            required: true,
            aliases: &[
                "mobile",
                "mobileno",
                "mobilenumber",
                "registeredmobile",
                "phone",
            ],
            help: "the mobile number registered with Udyam (+91, 0 and spaces are accepted)",
            filled_later: false,
        },
        OTP_COLUMN,
    ],
    fields: &[
        (
            "otp_expires_at",
            "when the OTP sent for the row expires (RFC 3339, UTC)",
        ),
        ("request_number", "Attestr's request number, for support"),
        (
            "entity, type, major_activity, category, gstin, incorporated, commenced, registered, \
             dic, dfo",
            "the enterprise",
        ),
        (
            "owner_details_<field>",
            "owner, gender, pan, mobile, email, social_category, specially_abled",
        ),
        ("bank_details_<field>", "bank, ifsc, account_number"),
        ("employment_details_<field>", "male, female, other, total"),
        (
            "financial_details_<fy>_<field>",
            "per financial year (2023-24 → 2023_24): classification, wdv, exclusion, \
             investment, gross_turnover, export_turnover, net_turnover, itr_filed, itr_type",
        ),
        (
            "unit_details_N_<field>",
            "the N-th unit (from 1): unit_name, unit_number, building, village_or_town, block, \
             road, city, zip, state, district",
        ),
        ("official_address_<field>", "the registered address"),
        (
            "nic_codes_N_<field>",
            "the N-th NIC code (from 1): digit2, digit4, digit5, activity, date",
        ),
    ],
    settings: &["otp_valid_secs"],
    env: &[],
    reuse: crate::checks::Reuse {
        within: crate::checks::ReuseWithin::Never,
        configurable: false,
        why: "an OTP check never reuses an answer: each verification is the holder's consent, given by the OTP of that run",
        echoes: &[],
    },
    make: build,
};

fn build(config: &ConfigFile, section: &CheckConfig, _env: Env) -> Result<Pipeline, ConfigError> {
    Ok(Pipeline::Otp(Arc::new(UdyamOtp::new(config, section)?)))
}

/// Attestr documents ten minutes.
const OTP_VALIDITY: Duration = Duration::from_secs(600);

/// Never used: Attestr answers step two at once.
const SCHEDULE: PollSchedule = PollSchedule {
    first: Duration::from_secs(1),
    max: Duration::from_secs(1),
    deadline: Duration::from_secs(1),
};

pub struct UdyamOtp {
    validity: Duration,
}

impl UdyamOtp {
    pub fn new(config: &ConfigFile, section: &CheckConfig) -> Result<UdyamOtp, ConfigError> {
        let validity = otp_settings(config, INFO.name, section, OTP_VALIDITY)?;
        if section.poll_initial_secs.is_some()
            || section.poll_max_secs.is_some()
            || section.poll_deadline_secs.is_some()
        {
            return Err(config.invalid(
                format!("[checks.{}] poll_*", INFO.name),
                "Attestr answers both steps at once; this check never polls",
            ));
        }
        Ok(UdyamOtp { validity })
    }
}

#[async_trait::async_trait]
impl OtpCheck for UdyamOtp {
    fn subject(&self, values: &[&str]) -> Result<Subject, Invalid> {
        let reg = validate::udyam(values[0])?;
        let mobile = validate::mobile(values[1])?;
        Ok(Subject {
            ident: format!("{reg}|{mobile}"),
            values: vec![reg, mobile, values[2].trim().to_string()],
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
        let url = api.url("/api/v1/public/corpx/udyam/otp-gen");
        let body = serde_json::json!({"reg": subject.values[0], "mobile": subject.values[1]});
        let build = move |c: &reqwest::Client| c.post(url.clone()).json(&body);
        let answer = api
            .call(
                "udyam otp-gen",
                Billing::Paid(intent),
                Priority::Low,
                &build,
            )
            .await?;
        Ok((read_sent(&answer)?, answer.attempts))
    }

    async fn verify(
        &self,
        api: &Api,
        handle: &str,
        _subject: &Subject,
        otp: &str,
        intent: &dyn Intent,
    ) -> Result<(OtpAnswer, u32), CallError> {
        let url = api.url("/api/v1/public/corpx/udyam/otp-verify");
        let body = serde_json::json!({"req": handle, "otp": otp});
        let build = move |c: &reqwest::Client| c.post(url.clone()).json(&body);
        let answer = api
            .call(
                "udyam otp-verify",
                Billing::Paid(intent),
                Priority::Low,
                &build,
            )
            .await?;
        Ok((read_verified(&answer)?, answer.attempts))
    }

    /// Attestr answers step two at once: there is nothing to fetch, and the engine never
    /// asks, since step two never answers `Running`.
    async fn fetch(
        &self,
        _api: &Api,
        _handle: &str,
        _subject: &Subject,
    ) -> Result<OtpAnswer, CallError> {
        Ok(OtpAnswer::Done(crate::outcome::misrouted()))
    }

    fn schedule(&self) -> PollSchedule {
        SCHEDULE
    }
}

fn text<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str)
}

/// Reads `otp-gen`'s answer.
pub fn read_sent(answer: &Answer) -> Result<OtpSent, CallError> {
    if !answer.status.is_success() {
        return classify(answer, "udyam otp-gen").map(OtpSent::Done);
    }
    let body = answer.json().unwrap_or_default();
    let status = text(&body, "status")
        .unwrap_or_default()
        .to_ascii_uppercase();
    // Only what the answer says counts: a missing or mistyped `valid` is not a "no".
    let valid = body.get("valid").and_then(Value::as_bool);
    match (valid, text(&body, "_id")) {
        (Some(true), Some(id)) if !id.is_empty() => {
            let mut outcome = Outcome::new(Status::Pending)
                .with_reason(Reason::OTP_SENT)
                .with_message(
                    "the OTP went to the registered mobile: fill the otp column and run the \
                     same command again before it expires",
                )
                .with_provider_status(status)
                .with_request_id(id);
            if let Some(n) = text(&body, "number") {
                outcome = outcome.with_fields(vec![("request_number".into(), n.into())]);
            }
            Ok(OtpSent::Sent {
                handle: id.to_string(),
                outcome,
            })
        }
        (Some(false), _) => Ok(OtpSent::Done(
            Outcome::new(Status::NotVerified)
                .with_reason(Reason::REG_OR_MOBILE_INVALID)
                .with_message(
                    "the Udyam number does not exist, or the mobile number is not the one \
                     registered with it",
                )
                .with_provider_status(status),
        )),
        _ => Ok(OtpSent::Done(unexpected(status))),
    }
}

fn unexpected(status: String) -> Outcome {
    Outcome::new(Status::Error)
        .with_reason(Reason::UNEXPECTED_ANSWER)
        .with_message(
            "attestr answered in a shape this tool does not know; the next run asks again",
        )
        .with_provider_status(status)
}

/// Reads `otp-verify`'s answer.
pub fn read_verified(answer: &Answer) -> Result<OtpAnswer, CallError> {
    if !answer.status.is_success() {
        return classify(answer, "udyam otp-verify").map(OtpAnswer::Done);
    }
    let body = answer.json().unwrap_or_default();
    let status = text(&body, "status")
        .unwrap_or_default()
        .to_ascii_uppercase();
    let pending = |reason: Reason, message: &str| {
        Outcome::new(Status::Pending)
            .with_reason(reason)
            .with_message(message)
            .with_provider_status(status.clone())
    };
    let clear = "clear the otp cell and run the same command again to send a new OTP";
    Ok(match status.as_str() {
        "SUCCESS" => OtpAnswer::Done(
            Outcome::new(Status::Verified)
                .with_provider_status(status.clone())
                .with_fields(msme_fields(&body)),
        ),
        "INVALID_OTP" => OtpAnswer::Refused(pending(
            Reason::OTP_INVALID,
            "the OTP was wrong: correct the otp cell and run again (Attestr allows three wrong \
             OTPs per request)",
        )),
        "MAX_ATTEMPTS_EXCEEDED" => OtpAnswer::Closed(pending(
            Reason::OTP_ATTEMPTS_EXCEEDED,
            &format!("three wrong OTPs ended this request; {clear}"),
        )),
        "REQUEST_EXPIRED" => OtpAnswer::Closed(pending(
            Reason::OTP_EXPIRED,
            &format!("the OTP expired before it was sent back; {clear}"),
        )),
        "ARCHIVED" => OtpAnswer::Closed(pending(
            Reason::REQUEST_ARCHIVED,
            &format!("attestr archived the OTP request; {clear}"),
        )),
        "INVALID_REQUEST" => OtpAnswer::Closed(pending(
            Reason::OTP_ALREADY_USED,
            &format!(
                "attestr says this request's OTP was verified already (an earlier answer was \
                 lost) and will not answer it again; {clear}"
            ),
        )),
        _ => OtpAnswer::Done(unexpected(status)),
    })
}

/// Every MSME field, flattened by the common rule, except that the financials are keyed by
/// their financial year rather than numbered: years differ between enterprises, and a column
/// should mean the same year on every row.
fn msme_fields(body: &Value) -> Vec<(String, String)> {
    let mut shown = Map::new();
    if let Value::Object(map) = body {
        for (k, v) in map {
            match (k.as_str(), v) {
                ("valid" | "status", _) => {}
                ("financialDetails", Value::Array(years)) => {
                    let mut by_year = Map::new();
                    for (i, year) in years.iter().enumerate() {
                        let mut year = year.clone();
                        let fy = year
                            .as_object_mut()
                            .and_then(|y| y.remove("fy"))
                            .and_then(|fy| fy.as_str().map(snake_case))
                            .filter(|fy| !fy.is_empty())
                            .unwrap_or_else(|| (i + 1).to_string());
                        by_year.insert(fy, year);
                    }
                    shown.insert(k.clone(), Value::Object(by_year));
                }
                _ => {
                    shown.insert(k.clone(), v.clone());
                }
            }
        }
    }
    flatten(&Value::Object(shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<'a>(fields: &'a [(String, String)], k: &str) -> Option<&'a str> {
        fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn subjects_leave_the_otp_out_of_the_identifier() {
        let c = UdyamOtp {
            validity: OTP_VALIDITY,
        };
        let a = c
            .subject(&["udyam-mh-01-0000001", "+91 98765 43210", " 123456 "])
            .unwrap();
        let b = c
            .subject(&["UDYAM-MH-01-0000001", "09876543210", ""])
            .unwrap();
        assert_eq!(a.ident, b.ident);
        assert_eq!(a.values[2], "123456");
        assert_eq!(
            c.subject(&["UDYAM-MH-01-000001", "9876543210", ""])
                .unwrap_err()
                .reason
                .code,
            "udyam_format"
        );
        assert_eq!(
            c.subject(&["UDYAM-MH-01-0000001", "12345", ""])
                .unwrap_err()
                .reason
                .code,
            "mobile_format"
        );
    }

    #[test]
    fn step_one_answers() {
        let sent = read_sent(&Answer::sample(
            200,
            r#"{"valid":true,"status":"SUCCESS","_id":"abc","number":"N1"}"#,
        ))
        .unwrap();
        let OtpSent::Sent { handle, outcome } = sent else {
            panic!("{sent:?}")
        };
        assert_eq!(handle, "abc");
        assert_eq!(outcome.status, Status::Pending);
        assert_eq!(outcome.reason.as_deref(), Some("otp_sent"));
        assert_eq!(outcome.request_id.as_deref(), Some("abc"));
        assert_eq!(field(&outcome.fields, "request_number"), Some("N1"));
        let invalid = read_sent(&Answer::sample(
            200,
            r#"{"valid":false,"status":"INVALID"}"#,
        ));
        assert!(
            matches!(invalid, Ok(OtpSent::Done(ref o)) if o.status == Status::NotVerified),
            "{invalid:?}"
        );
        let broke = read_sent(&Answer::sample(400, r#"{"code":4005,"message":"m"}"#));
        assert!(matches!(broke, Err(CallError::Fatal(_))));
    }

    #[test]
    fn step_two_answers() {
        let read = |status: &str| {
            read_verified(&Answer::sample(
                200,
                &format!(r#"{{"valid":false,"status":"{status}"}}"#),
            ))
            .unwrap()
        };
        assert!(
            matches!(read("INVALID_OTP"), OtpAnswer::Refused(o) if o.reason.as_deref() == Some("otp_invalid"))
        );
        for (status, reason) in [
            ("MAX_ATTEMPTS_EXCEEDED", "otp_attempts_exceeded"),
            ("REQUEST_EXPIRED", "otp_expired"),
            ("ARCHIVED", "request_archived"),
            ("INVALID_REQUEST", "otp_already_used"),
        ] {
            match read(status) {
                OtpAnswer::Closed(o) => {
                    assert_eq!(
                        (o.status, o.reason.as_deref()),
                        (Status::Pending, Some(reason))
                    );
                    assert!(o.message.unwrap().contains("clear the otp cell"));
                }
                other => panic!("{status}: {other:?}"),
            }
        }
        assert!(matches!(read("SOMETHING_NEW"), OtpAnswer::Done(o) if o.status == Status::Error));
    }

    #[test]
    fn msme_fields_are_flattened_with_financials_by_year() {
        let body = r#"{"valid":true,"status":"SUCCESS","reg":"UDYAM-MH-01-0000001",
            "entity":"ACME","ownerDetails":{"owner":"RAVI","speciallyAbled":false},
            "bankDetails":{"accountNumber":"3000"},
            "financialDetails":[{"fy":"2022-23","grossTurnover":"10"},
                                {"fy":"2023-24","grossTurnover":"12","itrFiled":true}],
            "unitDetails":[{"unitName":"UNIT 1"},{"unitName":"UNIT 2"}],
            "nicCodes":[{"digit2":"62"}],"dic":"PUNE"}"#;
        let OtpAnswer::Done(o) = read_verified(&Answer::sample(200, body)).unwrap() else {
            panic!("not done")
        };
        assert_eq!(o.status, Status::Verified);
        let f = &o.fields;
        assert_eq!(field(f, "valid"), None);
        assert_eq!(field(f, "entity"), Some("ACME"));
        assert_eq!(field(f, "owner_details_owner"), Some("RAVI"));
        assert_eq!(field(f, "owner_details_specially_abled"), Some("false"));
        assert_eq!(field(f, "bank_details_account_number"), Some("3000"));
        assert_eq!(
            field(f, "financial_details_2022_23_gross_turnover"),
            Some("10")
        );
        assert_eq!(
            field(f, "financial_details_2023_24_itr_filed"),
            Some("true")
        );
        assert_eq!(field(f, "unit_details_2_unit_name"), Some("UNIT 2"));
        assert_eq!(field(f, "nic_codes_1_digit2"), Some("62"));
        assert_eq!(field(f, "dic"), Some("PUNE"));
    }
}
