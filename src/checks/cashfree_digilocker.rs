//! `cashfree-digilocker`: the nightly reconciliation of the DigiLocker links sent to customers
//! during the day. One status lookup per row (`GET /digilocker?verification_id=`, or
//! `reference_id=`), answered at once: no polling. Cashfree bills the DigiLocker verification
//! when the link is created, during the day; the status lookup is a read, safe to repeat, so a
//! row whose customer has not acted yet is simply looked up again by the next run.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::flatten::flatten;
use super::{CheckInfo, Env, Pipeline, PollSchedule, RowCheck, Step, Subject};
use crate::config::{CheckConfig, ConfigError, ConfigFile};
use crate::http::cashfree::{self, refusal};
use crate::http::{Answer, Api, Billing, CallError, Intent};
use crate::input::reader::ColumnSpec;
use crate::input::validate::{self, Invalid};
use crate::outcome::{Outcome, Reason, Status};
use crate::quota::gate::Priority;

pub const INFO: CheckInfo = CheckInfo {
    name: "cashfree-digilocker",
    provider: &cashfree::DEFAULTS,
    summary: "DigiLocker consent status at Cashfree, one lookup per row (no polling)",
    columns: &[
        ColumnSpec {
            name: "verification_id",
            required: false,
            aliases: &[
                "verificationid",
                "digilockerid",
                "digilockerverificationid",
                "cfverificationid",
            ],
            help: "the verification_id given when the DigiLocker link was created",
            filled_later: false,
        },
        ColumnSpec {
            name: "reference_id",
            required: false,
            aliases: &["referenceid", "cfreferenceid", "digilockerreferenceid"],
            help: "Cashfree's reference_id of the link, used when verification_id is empty",
            filled_later: false,
        },
    ],
    fields: &[
        (
            "name, dob, gender, eaadhaar, mobile",
            "the user's details, once AUTHENTICATED",
        ),
        (
            "document_requested_N, document_consent_N",
            "the documents asked for and consented to",
        ),
        ("reference_id", "Cashfree's reference for the link"),
    ],
    settings: &[],
    env: &[],
    reuse: crate::checks::Reuse {
        within: crate::checks::ReuseWithin::Always,
        configurable: true,
        why: "a verification_id's final DigiLocker status does not change once the holder acted or the link expired",
        echoes: &["reference_id"],
    },
    make: build,
};

fn build(config: &ConfigFile, section: &CheckConfig, _env: Env) -> Result<Pipeline, ConfigError> {
    Ok(Pipeline::Rows(Arc::new(Digilocker::new(config, section)?)))
}

/// Never used: the lookup answers at once. A row left `pending` (consent not given yet) is
/// looked up again by the next run.
const SCHEDULE: PollSchedule = PollSchedule {
    first: Duration::from_secs(1),
    max: Duration::from_secs(1),
    deadline: Duration::from_secs(1),
};

pub struct Digilocker;

impl Digilocker {
    pub fn new(config: &ConfigFile, section: &CheckConfig) -> Result<Digilocker, ConfigError> {
        let setting = |k: &str| format!("[checks.{}] {k}", INFO.name);
        if section.chunk_size.is_some() {
            return Err(
                config.invalid(setting("chunk_size"), "this check looks rows up one by one")
            );
        }
        if section.poll_initial_secs.is_some()
            || section.poll_max_secs.is_some()
            || section.poll_deadline_secs.is_some()
        {
            return Err(config.invalid(
                setting("poll_*"),
                "this check is answered at once and never polls; a pending row is looked up \
                 again by the next run",
            ));
        }
        Ok(Digilocker)
    }
}

/// How a row is looked up: `v:<verification_id>` or `r:<reference_id>`, its identifier.
fn query(ident: &str) -> (&'static str, &str) {
    match ident.split_once(':') {
        Some(("r", id)) => ("reference_id", id),
        Some((_, id)) => ("verification_id", id),
        None => ("verification_id", ident),
    }
}

impl Digilocker {
    async fn look_up(&self, api: &Api, ident: &str) -> Result<(Step, u32), CallError> {
        let (param, id) = query(ident);
        let mut url = api.url("/digilocker");
        url.query_pairs_mut().append_pair(param, id);
        let build = move |c: &reqwest::Client| c.get(url.clone());
        let answer = api
            .call("digilocker status", Billing::Free, Priority::Low, &build)
            .await?;
        Ok((Step::Done(read_status(&answer)?), answer.attempts))
    }
}

#[async_trait::async_trait]
impl RowCheck for Digilocker {
    fn polls(&self) -> bool {
        false
    }

    fn subject(&self, values: &[&str]) -> Result<Subject, Invalid> {
        let (verification, reference) = (values[0].trim(), values[1].trim());
        let ident = if !verification.is_empty() {
            format!("v:{}", validate::digilocker_id(verification)?)
        } else if !reference.is_empty() {
            if !reference.bytes().all(|b| b.is_ascii_digit()) || reference.len() > 19 {
                return Err(Invalid::new(
                    Reason::REFERENCE_ID_FORMAT,
                    "a Cashfree reference_id is a number",
                ));
            }
            format!("r:{reference}")
        } else {
            return Err(Invalid::new(
                Reason::MISSING_VALUE,
                "both the verification_id and the reference_id cells are empty",
            ));
        };
        Ok(Subject {
            values: vec![verification.to_string(), reference.to_string()],
            ident,
        })
    }

    /// A status lookup is free: it records no intent, and a run killed during it looks again.
    async fn submit(
        &self,
        api: &Api,
        subject: &Subject,
        _intent: &dyn Intent,
    ) -> Result<(Step, u32), CallError> {
        self.look_up(api, &subject.ident).await
    }

    /// A row left with a request id by an earlier run is looked up by Cashfree's reference.
    async fn poll(&self, api: &Api, request_id: &str) -> Result<Step, CallError> {
        let (step, _) = self.look_up(api, &format!("r:{request_id}")).await?;
        Ok(step)
    }

    fn schedule(&self) -> PollSchedule {
        SCHEDULE
    }
}

/// Reads a status answer into the row's outcome.
pub fn read_status(answer: &Answer) -> Result<Outcome, CallError> {
    if let Some(fatal) = cashfree::fatal(answer, "digilocker status") {
        return Err(fatal);
    }
    if answer.status.as_u16() == 404 {
        return Ok(refusal(answer, Status::NotVerified));
    }
    if !answer.status.is_success() {
        return Ok(refusal(answer, Status::Error));
    }
    let body = answer.json().unwrap_or_default();
    let status = body
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_uppercase();
    let reference = match body.get("reference_id") {
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let (outcome, with_details) = match status.as_str() {
        "AUTHENTICATED" => (Outcome::new(Status::Verified), true),
        "PENDING" => (
            Outcome::new(Status::Pending)
                .with_reason(Reason::CONSENT_PENDING)
                .with_message("the customer has not given consent yet; the next run looks again"),
            false,
        ),
        "EXPIRED" => (
            Outcome::new(Status::NotVerified)
                .with_reason(Reason::EXPIRED)
                .with_message("the DigiLocker link expired before the customer acted"),
            false,
        ),
        "CONSENT_DENIED" => (
            Outcome::new(Status::NotVerified)
                .with_reason(Reason::CONSENT_DENIED)
                .with_message("the customer denied consent on the DigiLocker screen"),
            false,
        ),
        _ => (
            Outcome::new(Status::Error)
                .with_reason(Reason::UNKNOWN_STATUS)
                .with_message(
                    "cashfree answered a status this tool does not know; the next run looks again",
                ),
            false,
        ),
    };
    let mut shown = Map::new();
    if with_details && let Some(Value::Object(details)) = body.get("user_details") {
        shown.extend(details.clone());
    }
    for k in ["document_requested", "document_consent"] {
        if let Some(v) = body.get(k) {
            shown.insert(k.into(), v.clone());
        }
    }
    if let Some(r) = &reference {
        shown.insert("reference_id".into(), Value::String(r.clone()));
    }
    let mut outcome = outcome
        .with_provider_status(status)
        .with_fields(flatten(&Value::Object(shown)));
    if let Some(r) = reference {
        outcome = outcome.with_request_id(r);
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<'a>(o: &'a Outcome, k: &str) -> Option<&'a str> {
        o.fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    /// The provider's own sample (docs/cashfree-digilocker-status.txt), and each status.
    #[test]
    fn documented_statuses() {
        let sample =
            include_str!("../../sandbox/fixtures/contract/cashfree-digilocker-status.json");
        let pending = read_status(&Answer::sample(200, sample)).unwrap();
        assert_eq!(pending.status, Status::Pending);
        assert_eq!(pending.reason.as_deref(), Some("consent_pending"));
        assert_eq!(pending.request_id.as_deref(), Some("1234"));
        assert_eq!(field(&pending, "name"), None, "no details before consent");

        let authenticated = sample.replace("\"PENDING\"", "\"AUTHENTICATED\"");
        let ok = read_status(&Answer::sample(200, &authenticated)).unwrap();
        assert_eq!(ok.status, Status::Verified);
        assert_eq!(field(&ok, "name"), Some("John Doe"));
        assert_eq!(field(&ok, "dob"), Some("02-02-1995"));
        assert_eq!(field(&ok, "document_consent_1"), Some("AADHAAR"));
        for (status, reason) in [("EXPIRED", "expired"), ("CONSENT_DENIED", "consent_denied")] {
            let body = sample.replace("\"PENDING\"", &format!("\"{status}\""));
            let o = read_status(&Answer::sample(200, &body)).unwrap();
            assert_eq!(
                (o.status, o.reason.as_deref()),
                (Status::NotVerified, Some(reason))
            );
            assert_eq!(o.provider_status.as_deref(), Some(status));
        }
        let unknown = read_status(&Answer::sample(
            404,
            r#"{"type":"validation_error","code":"verification_id_value_invalid","message":"verification_id is invalid"}"#,
        ))
        .unwrap();
        assert_eq!(unknown.status, Status::NotVerified);
        assert_eq!(
            unknown.reason.as_deref(),
            Some("verification_id_value_invalid")
        );
        let broke = Answer::sample(
            422,
            r#"{"type":"validation_error","code":"insufficient_balance","message":"x"}"#,
        );
        assert!(matches!(read_status(&broke), Err(CallError::Fatal(_))));
    }

    #[test]
    fn subjects() {
        let d = Digilocker;
        assert_eq!(
            d.subject(&["ABC-00.1_2", ""]).unwrap().ident,
            "v:ABC-00.1_2"
        );
        assert_eq!(d.subject(&["", " 1234 "]).unwrap().ident, "r:1234");
        assert_eq!(
            d.subject(&["", ""]).unwrap_err().reason.code,
            "missing_value"
        );
        assert_eq!(
            d.subject(&["", "12a"]).unwrap_err().reason.code,
            "reference_id_format"
        );
        assert_eq!(
            d.subject(&["a b", ""]).unwrap_err().reason.code,
            "verification_id_format"
        );
        assert_eq!(query("r:55"), ("reference_id", "55"));
        assert_eq!(query("v:r:x"), ("verification_id", "r:x"));
    }
}
