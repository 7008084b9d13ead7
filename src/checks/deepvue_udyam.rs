//! `deepvue-udyam`: Udyam registration lookup, asynchronous. Submit the number, then poll the
//! result endpoint (HTTP 202 while it runs) until `completed` or `failed`.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::flatten::flatten;
use super::{CheckInfo, Env, Pipeline, PollSchedule, RowCheck, Step, Subject};
use crate::config::{CheckConfig, ConfigError, ConfigFile};
use crate::http::deepvue::{self, accepted_request_id, refusal, verdict};
use crate::http::{Answer, Api, Billing, CallError, Intent};
use crate::input::reader::ColumnSpec;
use crate::input::validate::{self, Invalid};
use crate::outcome::{Outcome, Reason, Status};
use crate::quota::gate::Priority;

pub const INFO: CheckInfo = CheckInfo {
    name: "deepvue-udyam",
    provider: &deepvue::DEFAULTS,
    summary: "Udyam registration lookup at Deepvue (asynchronous: submit, then poll)",
    columns: &[ColumnSpec {
        name: "udyam",
        required: true,
        aliases: &[
            "udyam",
            "udyamno",
            "udyamnumber",
            "udyamregistrationnumber",
            "udyamaadhaarnumber",
        ],
        help: "the Udyam registration number, UDYAM-XX-00-0000000",
        filled_later: false,
    }],
    fields: &[
        (
            "<field>",
            "every field of the source's answer, flattened (below)",
        ),
        ("enterprise_name", "the enterprise's registered name"),
        ("enterprise_type", "Micro, Small or Medium"),
        ("major_activity", "Manufacturing or Services"),
        ("state, district, pin", "the registered address"),
        ("nic_codes_N_...", "the N-th NIC code's fields"),
    ],
    settings: &[],
    env: &[],
    reuse: crate::checks::Reuse {
        within: crate::checks::ReuseWithin::Secs(30 * 86_400),
        configurable: true,
        why: "an Udyam registration's details change rarely (an update is filed by the enterprise); a month covers the overlap of monthly and nightly exports",
        echoes: &["udyam_aadhaar_number"],
    },
    make: build,
};

fn build(config: &ConfigFile, section: &CheckConfig, _env: Env) -> Result<Pipeline, ConfigError> {
    Ok(Pipeline::Rows(Arc::new(Udyam::new(config, section)?)))
}

const DEFAULT_SCHEDULE: PollSchedule = PollSchedule {
    first: Duration::from_secs(3),
    max: Duration::from_secs(30),
    deadline: Duration::from_secs(15 * 60),
};

pub struct Udyam {
    schedule: PollSchedule,
}

impl Udyam {
    pub fn new(config: &ConfigFile, section: &CheckConfig) -> Result<Udyam, ConfigError> {
        if section.chunk_size.is_some() {
            return Err(config.invalid(
                format!("[checks.{}] chunk_size", INFO.name),
                "this check sends one request per row; chunk_size applies to batch checks",
            ));
        }
        Ok(Udyam {
            schedule: DEFAULT_SCHEDULE.from_config(config, INFO.name, section)?,
        })
    }
}

#[async_trait::async_trait]
impl RowCheck for Udyam {
    fn subject(&self, values: &[&str]) -> Result<Subject, Invalid> {
        let number = validate::udyam(values[0])?;
        Ok(Subject {
            ident: number.clone(),
            values: vec![number],
        })
    }

    async fn submit(
        &self,
        api: &Api,
        subject: &Subject,
        intent: &dyn Intent,
    ) -> Result<(Step, u32), CallError> {
        let mut url = api.url("/v1/verification/async/post-udyam-details");
        url.query_pairs_mut()
            .append_pair("udyam_aadhaar_number", &subject.ident);
        let build = move |c: &reqwest::Client| c.post(url.clone());
        let answer = api
            .call("udyam submit", Billing::Paid(intent), Priority::Low, &build)
            .await?;
        Ok((read_submit(&answer)?, answer.attempts))
    }

    async fn poll(&self, api: &Api, request_id: &str) -> Result<Step, CallError> {
        let mut url = api.url("/v1/verification/async/get-udyam-details");
        url.query_pairs_mut().append_pair("request_id", request_id);
        let build = move |c: &reqwest::Client| c.get(url.clone());
        let answer = api
            .call("udyam result", Billing::Free, Priority::High, &build)
            .await?;
        Ok(read_result(&answer, request_id))
    }

    fn schedule(&self) -> PollSchedule {
        self.schedule
    }
}

/// Reads the submission's answer: a request id to poll, or the provider's verdict.
pub fn read_submit(answer: &Answer) -> Result<Step, CallError> {
    if answer.status.is_success() {
        accepted_request_id(answer, "udyam submit").map(Step::Running)
    } else {
        verdict(answer, "udyam submit").map(Step::Done)
    }
}

/// Reads the result endpoint's answer.
pub fn read_result(answer: &Answer, request_id: &str) -> Step {
    if answer.status == StatusCode::ACCEPTED {
        return Step::Running(request_id.to_string());
    }
    if answer.status == StatusCode::NOT_FOUND {
        return Step::Lost(format!(
            "deepvue no longer knows the udyam request {request_id} (HTTP 404)"
        ));
    }
    if !answer.status.is_success() {
        return Step::Done(refusal(answer, Status::Error).with_request_id(request_id));
    }
    let body = answer.json().unwrap_or_default();
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let status = text("status").unwrap_or_default().to_ascii_lowercase();
    let id = text("request_id").unwrap_or_else(|| request_id.to_string());
    match status.as_str() {
        "completed" => {
            let source = body
                .get("result")
                .and_then(|r| r.get("source_output"))
                .filter(|s| s.is_object());
            // "completed" without the source's answer confirms nothing.
            let outcome = match source {
                Some(source) => Outcome::new(Status::Verified).with_fields(flatten(source)),
                None => Outcome::new(Status::Error)
                    .with_reason(Reason::UNEXPECTED_ANSWER)
                    .with_message(
                        "deepvue said completed but sent no source_output; the next run asks again",
                    ),
            };
            Step::Done(outcome.with_provider_status(status).with_request_id(id))
        }
        "failed" => {
            let mut outcome = Outcome::new(Status::NotVerified)
                .with_reason(
                    text("error").map_or_else(|| Reason::FAILED.into(), |e| Reason::provider(&e)),
                )
                .with_provider_status(status)
                .with_request_id(id);
            if let Some(m) = text("message") {
                outcome = outcome.with_message(m);
            }
            Step::Done(outcome)
        }
        _ => Step::Running(request_id.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(step: Step) -> Outcome {
        match step {
            Step::Done(o) => o,
            other => panic!("not done: {other:?}"),
        }
    }

    /// The provider's own sample of a failed result (docs/deepvue-udyam-async-result.txt).
    #[test]
    fn documented_failed_result_is_not_verified() {
        let body = include_str!("../../sandbox/fixtures/contract/deepvue-udyam-result-failed.json");
        let o = done(read_result(&Answer::sample(200, body), "x"));
        assert_eq!(o.status, Status::NotVerified);
        assert_eq!(o.reason.as_deref(), Some("bad_request"));
        assert_eq!(
            o.message.as_deref(),
            Some("Please enter a valid UAM number")
        );
        assert_eq!(o.provider_status.as_deref(), Some("failed"));
        assert_eq!(
            o.request_id.as_deref(),
            Some("2db0ab31-ce7c-47f3-8488-f2298fc2a811")
        );
    }

    /// The completed shape documented on the driving-licence twin (REFERENCE.md).
    #[test]
    fn documented_completed_result_is_verified_with_source_fields() {
        let body =
            include_str!("../../sandbox/fixtures/contract/deepvue-udyam-result-completed.json");
        let o = done(read_result(&Answer::sample(200, body), "x"));
        assert_eq!(o.status, Status::Verified);
        assert_eq!(o.provider_status.as_deref(), Some("completed"));
        let field = |k: &str| {
            o.fields
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            field("enterprise_name"),
            Some("SANDBOX ENTERPRISES 0000001")
        );
        assert_eq!(field("nic_codes_1_activity"), Some("Services"));
    }

    #[test]
    fn accepted_means_running_whatever_the_body() {
        assert!(
            matches!(read_result(&Answer::sample(202, ""), "r1"), Step::Running(id) if id == "r1")
        );
        assert!(matches!(
            read_result(&Answer::sample(200, r#"{"status":"in_progress"}"#), "r1"),
            Step::Running(_)
        ));
    }

    #[test]
    fn an_unknown_request_is_lost_and_other_refusals_are_errors() {
        let lost = read_result(
            &Answer::sample(404, r#"{"message":"No request found"}"#),
            "r1",
        );
        assert!(matches!(lost, Step::Lost(why) if why.contains("r1")));
        let o = done(read_result(
            &Answer::sample(400, r#"{"sub_code":"BAD_ID","message":"bad id"}"#),
            "r1",
        ));
        assert_eq!(o.status, Status::Error);
        assert_eq!(o.reason.as_deref(), Some("bad_id"));
    }

    #[test]
    fn submission_answers() {
        let ok = read_submit(&Answer::sample(200, r#"{"code":200,"request_id":"abc"}"#)).unwrap();
        assert!(matches!(ok, Step::Running(id) if id == "abc"));
        let nested = read_submit(&Answer::sample(200, r#"{"data":{"request_id":"n1"}}"#)).unwrap();
        assert!(matches!(nested, Step::Running(id) if id == "n1"));
        let refused = done(
            read_submit(&Answer::sample(
                400,
                r#"{"code":400,"sub_code":"INVALID_UDYAM_NUMBER","message":"Udyam number is not registered"}"#,
            ))
            .unwrap(),
        );
        assert_eq!(refused.status, Status::NotVerified);
        assert_eq!(refused.reason.as_deref(), Some("invalid_udyam_number"));
        assert_eq!(
            refused.message.as_deref(),
            Some("Udyam number is not registered")
        );
        assert!(matches!(
            read_submit(&Answer::sample(200, "{}")),
            Err(CallError::Unconfirmed { .. })
        ));
        // A wrong endpoint is not a verdict on the row.
        for (status, body) in [
            (404, r#"{"detail":"Not Found"}"#),
            (405, "{}"),
            (400, "<html>"),
        ] {
            assert!(
                matches!(
                    read_submit(&Answer::sample(status, body)),
                    Err(CallError::Fatal(_))
                ),
                "{status}"
            );
        }
    }
}
