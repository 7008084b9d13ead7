//! The checks: what each reads from a row, how it calls its provider, and how it reads the
//! answer into an [`Outcome`]. The engine does the rest (quota, retries, journal, merge), the
//! same for every check.

pub mod attestr_udyam_otp;
pub mod cashfree_bulk;
pub mod cashfree_digilocker;
pub mod deepvue_udyam;
pub mod deepvue_upi_batch;
pub mod equal_aadhaar_otp;
pub mod flatten;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use crate::config::{CheckConfig, ConfigError, ConfigFile, ProviderDefaults, check_secs};
use crate::http::{Api, CallError, Intent};
use crate::input::reader::ColumnSpec;
use crate::input::validate::Invalid;
use crate::outcome::{Outcome, RowKey};

/// The checks, by the name users type after `--check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckName {
    /// Deepvue Udyam registration lookup (per row, asynchronous).
    DeepvueUdyam,
    /// Deepvue UPI address check (batch file).
    DeepvueUpiBatch,
    /// Cashfree DigiLocker consent status (one lookup per row).
    CashfreeDigilocker,
    /// Cashfree bank account verification (JSON bulk requests).
    CashfreeBankBulk,
    /// Cashfree PAN verification (JSON bulk requests).
    CashfreePanBulk,
    /// Attestr Udyam details by the owner's OTP (two runs: send the OTP, then verify it).
    AttestrUdyamOtp,
    /// Equal Aadhaar verification by OTP (two runs: send the OTP, then verify it).
    EqualAadhaarOtp,
}

impl CheckName {
    pub const ALL: [CheckName; 7] = [
        CheckName::DeepvueUdyam,
        CheckName::DeepvueUpiBatch,
        CheckName::CashfreeDigilocker,
        CheckName::CashfreeBankBulk,
        CheckName::CashfreePanBulk,
        CheckName::AttestrUdyamOtp,
        CheckName::EqualAadhaarOtp,
    ];

    pub fn info(self) -> &'static CheckInfo {
        match self {
            CheckName::DeepvueUdyam => &deepvue_udyam::INFO,
            CheckName::DeepvueUpiBatch => &deepvue_upi_batch::INFO,
            CheckName::CashfreeDigilocker => &cashfree_digilocker::INFO,
            CheckName::CashfreeBankBulk => &cashfree_bulk::BANK_INFO,
            CheckName::CashfreePanBulk => &cashfree_bulk::PAN_INFO,
            CheckName::AttestrUdyamOtp => &attestr_udyam_otp::INFO,
            CheckName::EqualAadhaarOtp => &equal_aadhaar_otp::INFO,
        }
    }
}

/// What `bulkverify checks` shows, and what the engine needs to know before building a check.
pub struct CheckInfo {
    pub name: &'static str,
    pub provider: &'static ProviderDefaults,
    pub summary: &'static str,
    pub columns: &'static [ColumnSpec],
    /// The check's own result columns (without the `bv_` prefix), with their meaning.
    pub fields: &'static [(&'static str, &'static str)],
}

/// The columns every check writes, before its own.
pub const COMMON_FIELDS: &[(&str, &str)] = &[
    (
        "status",
        "verified, not_verified, needs_review, invalid_input, pending or error",
    ),
    (
        "reason",
        "a short code saying why (udyam_format, bad_request, daily_quota_exhausted, ...)",
    ),
    ("message", "the provider's own words, or ours"),
    (
        "provider_status",
        "the provider's status word for the answer",
    ),
    ("request_id", "the provider's id for the request or batch"),
    (
        "checked_at",
        "when the outcome was recorded (RFC 3339, UTC)",
    ),
    ("attempts", "how many times the paid request was sent"),
    (
        "duplicate_of",
        "for a repeated identifier: the row whose outcome was copied",
    ),
];

/// A row's values for the check, validated and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The normalised identifier: what is sent, and what duplicates are detected on.
    pub ident: String,
    /// Every logical column's normalised value, in the order of the check's column specs.
    pub values: Vec<String>,
}

/// Where an asynchronous request stands.
#[derive(Debug)]
pub enum Step {
    Done(Outcome),
    /// Accepted, with the id to poll.
    Running(String),
    /// The provider no longer knows the request: it may have been billed and no answer can be
    /// had, so the row is held like an unconfirmed submission, never polled for ever.
    Lost(String),
}

/// How a check polls: the first wait, the longest wait, and when to stop and call it pending.
#[derive(Debug, Clone, Copy)]
pub struct PollSchedule {
    pub first: Duration,
    pub max: Duration,
    pub deadline: Duration,
}

impl PollSchedule {
    /// The wait before poll number `n` (0-based): growing by half each time up to the cap.
    pub fn delay(&self, n: u32) -> Duration {
        self.first
            .mul_f64(1.5f64.powi(n.min(60) as i32))
            .min(self.max)
    }

    pub fn from_config(
        self,
        config: &ConfigFile,
        check: &str,
        c: &CheckConfig,
    ) -> Result<PollSchedule, ConfigError> {
        let s = PollSchedule {
            first: check_secs(
                config,
                check,
                "poll_initial_secs",
                c.poll_initial_secs,
                self.first,
            )?,
            max: check_secs(config, check, "poll_max_secs", c.poll_max_secs, self.max)?,
            deadline: check_secs(
                config,
                check,
                "poll_deadline_secs",
                c.poll_deadline_secs,
                self.deadline,
            )?,
        };
        if s.max < s.first {
            return Err(config.invalid(
                format!("[checks.{check}] poll_max_secs"),
                "must not be below poll_initial_secs",
            ));
        }
        Ok(s)
    }
}

/// A check that calls once per row: submit, then poll until an outcome.
pub trait RowCheck: Send + Sync + 'static {
    fn subject(&self, values: &[&str]) -> Result<Subject, Invalid>;

    /// Sends the paid request, whose intent `intent` records. Returns the step and how many
    /// times the request was sent.
    fn submit<'a>(
        &'a self,
        api: &'a Api,
        subject: &'a Subject,
        intent: &'a dyn Intent,
    ) -> impl Future<Output = Result<(Step, u32), CallError>> + Send + 'a;

    fn poll<'a>(
        &'a self,
        api: &'a Api,
        request_id: &'a str,
    ) -> impl Future<Output = Result<Step, CallError>> + Send + 'a;

    fn schedule(&self) -> PollSchedule;
}

/// A two-step check's answer to step one.
#[derive(Debug)]
pub enum OtpSent {
    /// The OTP is on its way to the owner's phone. `handle` is what step two and a fetch need,
    /// kept in the journal; `outcome` is the row's until then (`pending`, `otp_sent`, with the
    /// request id to show).
    Sent { handle: String, outcome: Outcome },
    /// No OTP was sent, and this is the row's outcome (an unknown registration, a mobile that
    /// is not linked, a refusal).
    Done(Outcome),
}

/// A two-step check's answer to step two, or to a fetch of its result.
#[derive(Debug)]
pub enum OtpAnswer {
    /// The row's outcome: the request has served.
    Done(Outcome),
    /// The OTP was wrong; the request waits for another one.
    Refused(Outcome),
    /// The request takes no OTP any more (expired, archived, used): a new OTP is needed.
    Closed(Outcome),
    /// Accepted; the result is being prepared: fetch it.
    Running,
}

/// A check in two steps around an OTP sent to a phone: step one asks the provider to send it,
/// the ops team collects it and fills the row's OTP cell, step two sends it back and gets the
/// result. The engine decides which step a row needs from its journal and its cells; the check
/// only speaks to its provider.
pub trait OtpCheck: Send + Sync + 'static {
    /// The row's values. The identifier (duplicates, the journal's hash) leaves the OTP out;
    /// the OTP cell, trimmed and unvalidated, is among the values at the position of the
    /// check's `filled_later` column.
    fn subject(&self, values: &[&str]) -> Result<Subject, Invalid>;

    /// How long an OTP stays valid after step one: rows whose OTP is older are not sent.
    fn otp_validity(&self) -> Duration;

    /// Step one: the paid request that sends the OTP.
    fn send_otp<'a>(
        &'a self,
        api: &'a Api,
        subject: &'a Subject,
        intent: &'a dyn Intent,
    ) -> impl Future<Output = Result<(OtpSent, u32), CallError>> + Send + 'a;

    /// Step two: the paid request that sends the OTP back.
    fn verify<'a>(
        &'a self,
        api: &'a Api,
        handle: &'a str,
        subject: &'a Subject,
        otp: &'a str,
        intent: &'a dyn Intent,
    ) -> impl Future<Output = Result<(OtpAnswer, u32), CallError>> + Send + 'a;

    /// Asks for the result of a step two that answered [`OtpAnswer::Running`].
    fn fetch<'a>(
        &'a self,
        api: &'a Api,
        handle: &'a str,
        subject: &'a Subject,
    ) -> impl Future<Output = Result<OtpAnswer, CallError>> + Send + 'a;

    fn schedule(&self) -> PollSchedule;
}

/// The column of the OTP in a two-step check's input: filled in by the ops team between the
/// two runs, so it is left out of the input's fingerprint.
pub const OTP_COLUMN: ColumnSpec = ColumnSpec {
    name: "otp",
    required: false,
    aliases: &["otp", "otpcode"],
    help: "the OTP sent to the registered mobile, filled in after the first run (the column \
           may be added then)",
    filled_later: true,
};

/// A two-step check's own settings: how long its OTP stays valid (by default, what the
/// provider documents). It sends rows one by one, so a batch size would mean nothing.
pub fn otp_settings(
    config: &ConfigFile,
    check: &str,
    section: &CheckConfig,
    validity: Duration,
) -> Result<Duration, ConfigError> {
    if section.chunk_size.is_some() {
        return Err(config.invalid(
            format!("[checks.{check}] chunk_size"),
            "this check sends rows one by one",
        ));
    }
    check_secs(
        config,
        check,
        "otp_valid_secs",
        section.otp_valid_secs,
        validity,
    )
}

/// A batch upload's answer.
#[derive(Debug)]
pub enum Uploaded {
    /// Accepted, with the id to poll.
    Accepted(String),
    /// The provider refused the file as a whole; every row of it gets this outcome.
    Refused(Outcome),
}

/// How a batch result finds its row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Match {
    /// By the row key we sent along (a column of the uploaded file).
    Row(RowKey),
    /// By the normalised identifier ([`Subject::ident`]) rebuilt from what the provider echoes:
    /// JSON bulk APIs leave no room for our key, and a run never sends one identifier twice.
    Ident(String),
}

/// Where a batch stands.
#[derive(Debug)]
pub enum BatchStep {
    Running,
    /// The results found. Rows of the batch missing here are errors.
    Done(Vec<(Match, Outcome)>),
    /// The results could not be had this time (an unreadable file, a failing status call):
    /// every row of the batch gets this outcome, and the batch stays open for a later run to
    /// poll again. An accepted batch is never uploaded again.
    Failed(Outcome),
    /// The provider does not know the batch: its rows are held like an unconfirmed upload,
    /// unless it was uploaded under a name we chose and never confirmed (then nothing was
    /// taken, and the rows are sent again).
    Lost(String),
}

/// A check that uploads rows in batches and collects a result per row.
pub trait BatchCheck: Send + Sync + 'static {
    /// Whether each upload goes under a name we choose, that the provider refuses to take
    /// twice (Cashfree's `bulk_verification_id`, answered 409 when repeated). Then an upload
    /// whose answer was lost is safe to send again under the same name, and a run that died
    /// mid-upload asks for that name instead of holding the rows.
    const NAMES_UPLOADS: bool = false;

    fn subject(&self, values: &[&str]) -> Result<Subject, Invalid>;

    fn chunk_size(&self) -> usize;

    /// Sends the paid upload, under `name` where the check names its uploads. Returns its
    /// answer and how many times it was sent.
    fn upload<'a>(
        &'a self,
        api: &'a Api,
        rows: &'a [(RowKey, Subject)],
        name: &'a str,
        intent: &'a dyn Intent,
    ) -> impl Future<Output = Result<(Uploaded, u32), CallError>> + Send + 'a;

    /// Asks how the batch is doing; when done, fetches and reads its results. `scratch` is a
    /// private directory for files in transit.
    fn poll<'a>(
        &'a self,
        api: &'a Api,
        request_id: &'a str,
        scratch: &'a Path,
    ) -> impl Future<Output = Result<BatchStep, CallError>> + Send + 'a;

    fn schedule(&self) -> PollSchedule;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Answer;
    use crate::outcome::Status;

    /// Bodies no provider should send, but a proxy, a bug or an attacker on the path might:
    /// empty, not JSON, not UTF-8, the wrong types, nested past any parser's depth, 1 MB.
    fn hostile_bodies() -> Vec<Vec<u8>> {
        vec![
            b"".to_vec(),
            b"null".to_vec(),
            b"[]".to_vec(),
            b"{}".to_vec(),
            b"\"SUCCESS\"".to_vec(),
            b"<html>gateway</html>".to_vec(),
            br#"{"status":5,"valid":"yes","data":[],"entries":{},"code":[1],"_id":7}"#.to_vec(),
            br#"{"status":{"a":1},"data":{"keys":5},"result":"x","decision":3}"#.to_vec(),
            br#"{"status":"completed","result":null,"data":"s","request_id":null}"#.to_vec(),
            vec![0xff, 0xfe, b'{', 0x80],
            "[".repeat(100_000).into_bytes(),
            format!(r#"{{"status":"{}"}}"#, "A".repeat(1 << 20)).into_bytes(),
        ]
    }

    /// A 2xx answer that makes no sense is never read as a verdict: only `error` or `pending`,
    /// with a reason. Anything else may be a refusal, or a stop with a message.
    fn judge(who: &str, status: u16, body: &[u8], outcome: Option<&Outcome>) {
        let Some(o) = outcome else { return };
        if (200..300).contains(&status) {
            assert!(
                matches!(o.status, Status::Error | Status::Pending),
                "{who}: HTTP {status} {:?} read as {:?}",
                String::from_utf8_lossy(&body[..body.len().min(80)]),
                o.status
            );
        }
        if o.status == Status::Error {
            assert!(o.reason.as_deref().is_some_and(|r| !r.is_empty()), "{o:?}");
        }
    }

    #[test]
    fn hostile_answers_never_panic_nor_pass_for_verdicts() {
        for status in [200, 202, 400, 404, 409, 422, 500] {
            for body in hostile_bodies() {
                let a = Answer {
                    status: reqwest::StatusCode::from_u16(status).unwrap(),
                    headers: reqwest::header::HeaderMap::new(),
                    body: bytes::Bytes::from(body.clone()),
                    attempts: 1,
                };
                let step = |s: Step| match s {
                    Step::Done(o) => judge("deepvue udyam", status, &body, Some(&o)),
                    Step::Running(id) => assert!(!id.is_empty() && status < 300),
                    Step::Lost(_) => {}
                };
                if let Ok(s) = deepvue_udyam::read_submit(&a) {
                    step(s);
                }
                step(deepvue_udyam::read_result(&a, "r"));
                if let Ok(Uploaded::Refused(o)) = deepvue_upi_batch::read_upload(&a) {
                    judge("upi upload", status, &body, Some(&o));
                }
                if let deepvue_upi_batch::BatchStatus::Failed(o) =
                    deepvue_upi_batch::read_status(&a)
                {
                    judge("upi status", status, &body, Some(&o));
                }
                judge(
                    "digilocker",
                    status,
                    &body,
                    cashfree_digilocker::read_status(&a).ok().as_ref(),
                );
                if let Ok(Uploaded::Refused(o)) = cashfree_bulk::read_upload(&a, "x", "n") {
                    judge("bulk upload", status, &body, Some(&o));
                }
                for kind in [cashfree_bulk::Kind::Bank, cashfree_bulk::Kind::Pan] {
                    match cashfree_bulk::read_status(kind, &a, "r") {
                        Ok(BatchStep::Done(rows)) => {
                            for (_, o) in &rows {
                                judge("bulk entries", status, &body, Some(o));
                            }
                        }
                        Ok(BatchStep::Failed(o)) => judge("bulk status", status, &body, Some(&o)),
                        _ => {}
                    }
                }
                if let Ok(OtpSent::Done(o)) = attestr_udyam_otp::read_sent(&a) {
                    judge("attestr otp-gen", status, &body, Some(&o));
                }
                let otp = |who: &str, r: Result<OtpAnswer, CallError>| {
                    if let Ok(OtpAnswer::Done(o) | OtpAnswer::Refused(o) | OtpAnswer::Closed(o)) = r
                    {
                        judge(who, status, &body, Some(&o));
                    }
                };
                otp("attestr otp-verify", attestr_udyam_otp::read_verified(&a));
                otp(
                    "equal journey",
                    equal_aadhaar_otp::read_journey(&a, "234123412346"),
                );
            }
        }
    }

    #[test]
    fn poll_delays_grow_and_cap() {
        let s = PollSchedule {
            first: Duration::from_secs(3),
            max: Duration::from_secs(30),
            deadline: Duration::from_secs(900),
        };
        assert_eq!(s.delay(0), Duration::from_secs(3));
        assert_eq!(s.delay(1), Duration::from_millis(4500));
        assert_eq!(s.delay(10), Duration::from_secs(30));
        assert_eq!(s.delay(u32::MAX), Duration::from_secs(30));
    }
}
