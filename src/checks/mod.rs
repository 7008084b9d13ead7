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

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{CheckConfig, ConfigError, ConfigFile, ProviderDefaults, check_secs};
use crate::http::{Api, CallError, Intent};
use crate::input::reader::ColumnSpec;
use crate::input::validate::Invalid;
use crate::outcome::{Outcome, RowKey};

/// Every check, in the order `bulkverify checks` lists them: the one place a check is
/// registered. Its module declares the rest in its [`CheckInfo`].
pub static CHECKS: &[CheckName] = &[
    CheckName(&deepvue_udyam::INFO),
    CheckName(&deepvue_upi_batch::INFO),
    CheckName(&cashfree_digilocker::INFO),
    CheckName(&cashfree_bulk::BANK_INFO),
    CheckName(&cashfree_bulk::PAN_INFO),
    CheckName(&attestr_udyam_otp::INFO),
    CheckName(&equal_aadhaar_otp::INFO),
];

/// A check, by the name users type after `--check`.
#[derive(Clone, Copy)]
pub struct CheckName(&'static CheckInfo);

impl CheckName {
    /// Everything the check's module declares about it.
    pub fn info(self) -> &'static CheckInfo {
        self.0
    }

    /// The check called `name`, if there is one.
    pub fn named(name: &str) -> Option<CheckName> {
        CHECKS.iter().copied().find(|c| c.0.name == name)
    }
}

impl PartialEq for CheckName {
    fn eq(&self, other: &CheckName) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for CheckName {}

impl std::fmt::Debug for CheckName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name)
    }
}

impl clap::ValueEnum for CheckName {
    fn value_variants<'a>() -> &'a [CheckName] {
        CHECKS
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.0.name).help(self.0.summary))
    }
}

/// Config sections must name checks and providers that exist: a typo should not silently do
/// nothing.
pub fn validate_sections(config: &ConfigFile) -> Result<(), ConfigError> {
    if let Some(name) = config.checks.keys().find(|n| CheckName::named(n).is_none()) {
        return Err(config.invalid(
            format!("[checks.{name}]"),
            "no such check (see `bulkverify checks`)",
        ));
    }
    let known = |name: &str| CHECKS.iter().any(|c| c.0.provider.name == name);
    if let Some(name) = config.providers.keys().find(|n| !known(n)) {
        return Err(config.invalid(format!("[providers.{name}]"), "no such provider"));
    }
    Ok(())
}

/// Where settings outside the config file are looked up: the process environment, or the
/// sandbox's.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A check built from its config, by the pipeline that drives it: the engine has one per kind,
/// so a new check of a known kind needs nothing of the engine.
#[derive(Clone)]
pub enum Pipeline {
    /// One paid request per row, answered at once or polled for.
    Rows(Arc<dyn RowCheck>),
    /// Rows uploaded in batches, with a result per row to collect.
    Batches(Arc<dyn BatchCheck>),
    /// Two runs per row: one sends an OTP, the next verifies the OTP the row was given.
    Otp(Arc<dyn OtpCheck>),
}

impl Pipeline {
    /// A row's values validated into what is sent, whatever the pipeline: planning needs it
    /// before the pipeline runs.
    pub fn subject(&self, values: &[&str]) -> Result<Subject, Invalid> {
        match self {
            Pipeline::Rows(c) => c.subject(values),
            Pipeline::Batches(c) => c.subject(values),
            Pipeline::Otp(c) => c.subject(values),
        }
    }
}

/// How a check is built from its config section and the environment; a setting it cannot use
/// is an error that names it.
pub type Build = fn(&ConfigFile, &CheckConfig, Env) -> Result<Pipeline, ConfigError>;

impl CheckInfo {
    /// Builds the check, after refusing the settings of its section that only other checks
    /// read.
    pub fn build(&self, config: &ConfigFile, env: Env) -> Result<Pipeline, ConfigError> {
        let section = config.checks.get(self.name).cloned().unwrap_or_default();
        for (key, set) in [
            ("otp_valid_secs", section.otp_valid_secs.is_some()),
            ("journey_id", section.journey_id.is_some()),
        ] {
            if set && !self.settings.contains(&key) {
                let readers: Vec<&str> = CHECKS
                    .iter()
                    .filter(|c| c.0.settings.contains(&key))
                    .map(|c| c.0.name)
                    .collect();
                return Err(config.invalid(
                    format!("[checks.{}] {key}", self.name),
                    format!("only {} read it", readers.join(" and ")),
                ));
            }
        }
        (self.make)(config, &section, env)
    }

    /// Which input header each column the check reads is found under, where the config's
    /// `[checks.<name>] columns` or `--column` say: the command line's word is the last.
    pub fn mapping(
        &self,
        config: &ConfigFile,
        columns: &[(String, String)],
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut mapping = config
            .checks
            .get(self.name)
            .map(|s| s.columns.clone())
            .unwrap_or_default();
        mapping.extend(columns.iter().cloned());
        if let Some(logical) = mapping
            .keys()
            .find(|l| !self.columns.iter().any(|c| c.name == l.as_str()))
        {
            let known: Vec<&str> = self.columns.iter().map(|c| c.name).collect();
            return Err(ConfigError::UnknownColumn {
                check: self.name,
                column: logical.clone(),
                known: known.join(", "),
            });
        }
        Ok(mapping)
    }

    /// Every environment variable the check reads, with what it is for.
    pub fn variables(&self) -> Vec<(String, &'static str)> {
        let p = self.provider;
        let mut vars: Vec<(String, &'static str)> = p
            .credentials
            .iter()
            .map(|c| (format!("{}_{c}", p.env_prefix), "credential"))
            .collect();
        vars.push((format!("{}_BASE_URL", p.env_prefix), "base URL"));
        vars.extend(self.env.iter().map(|(v, help)| (v.to_string(), *help)));
        vars
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
    /// The settings of its `[checks.<name>]` section that only some checks read, if it reads
    /// them (`otp_valid_secs`, `journey_id`).
    pub settings: &'static [&'static str],
    /// The environment variables it reads besides its provider's, with what each is for.
    pub env: &'static [(&'static str, &'static str)],
    pub make: Build,
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
#[async_trait::async_trait]
pub trait RowCheck: Send + Sync + 'static {
    fn subject(&self, values: &[&str]) -> Result<Subject, Invalid>;

    /// Sends the paid request, whose intent `intent` records. Returns the step and how many
    /// times the request was sent.
    async fn submit(
        &self,
        api: &Api,
        subject: &Subject,
        intent: &dyn Intent,
    ) -> Result<(Step, u32), CallError>;

    async fn poll(&self, api: &Api, request_id: &str) -> Result<Step, CallError>;

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
#[async_trait::async_trait]
pub trait OtpCheck: Send + Sync + 'static {
    /// The row's values. The identifier (duplicates, the journal's hash) leaves the OTP out;
    /// the OTP cell, trimmed and unvalidated, is among the values at the position of the
    /// check's `filled_later` column.
    fn subject(&self, values: &[&str]) -> Result<Subject, Invalid>;

    /// How long an OTP stays valid after step one: rows whose OTP is older are not sent.
    fn otp_validity(&self) -> Duration;

    /// Step one: the paid request that sends the OTP.
    async fn send_otp(
        &self,
        api: &Api,
        subject: &Subject,
        intent: &dyn Intent,
    ) -> Result<(OtpSent, u32), CallError>;

    /// Step two: the paid request that sends the OTP back.
    async fn verify(
        &self,
        api: &Api,
        handle: &str,
        subject: &Subject,
        otp: &str,
        intent: &dyn Intent,
    ) -> Result<(OtpAnswer, u32), CallError>;

    /// Asks for the result of a step two that answered [`OtpAnswer::Running`].
    async fn fetch(
        &self,
        api: &Api,
        handle: &str,
        subject: &Subject,
    ) -> Result<OtpAnswer, CallError>;

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
#[async_trait::async_trait]
pub trait BatchCheck: Send + Sync + 'static {
    /// Whether each upload goes under a name we choose, that the provider refuses to take
    /// twice (Cashfree's `bulk_verification_id`, answered 409 when repeated). Then an upload
    /// whose answer was lost is safe to send again under the same name, and a run that died
    /// mid-upload asks for that name instead of holding the rows.
    fn names_uploads(&self) -> bool {
        false
    }

    fn subject(&self, values: &[&str]) -> Result<Subject, Invalid>;

    fn chunk_size(&self) -> usize;

    /// Sends the paid upload, under `name` where the check names its uploads. Returns its
    /// answer and how many times it was sent.
    async fn upload(
        &self,
        api: &Api,
        rows: &[(RowKey, Subject)],
        name: &str,
        intent: &dyn Intent,
    ) -> Result<(Uploaded, u32), CallError>;

    /// Asks how the batch is doing; when done, fetches and reads its results. `scratch` is a
    /// private directory for files in transit.
    async fn poll(
        &self,
        api: &Api,
        request_id: &str,
        scratch: &Path,
    ) -> Result<BatchStep, CallError>;

    fn schedule(&self) -> PollSchedule;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderSettings;
    use crate::http::Answer;
    use crate::outcome::Status;

    /// What `bulkverify checks` lists is what the client reads: with only the listed variables
    /// set, every check and its provider resolve, and no variable of the provider's prefix is
    /// asked for that the list leaves out.
    #[test]
    fn every_check_lists_the_variables_it_and_its_provider_read() {
        for name in CHECKS {
            let info = name.info();
            let listed: Vec<String> = info.variables().into_iter().map(|(v, _)| v).collect();
            let asked = std::sync::Mutex::new(Vec::new());
            let env = |k: &str| {
                asked.lock().unwrap().push(k.to_string());
                listed.iter().any(|v| v == k).then(|| {
                    if k.ends_with("_BASE_URL") {
                        "https://provider.example".to_string()
                    } else {
                        "set".to_string()
                    }
                })
            };
            let config = ConfigFile::default();
            if let Err(e) = ProviderSettings::resolve(info.provider, &config, &env, None) {
                panic!("{}: {e}", info.name);
            }
            if let Err(e) = info.build(&config, &env) {
                panic!("{}: {e}", info.name);
            }
            let prefix = format!("{}_", info.provider.env_prefix);
            for k in asked.lock().unwrap().iter() {
                assert!(
                    !k.starts_with(&prefix) || listed.contains(k),
                    "{} reads {k}, which `bulkverify checks` does not list",
                    info.name
                );
            }
        }
        let attestr = CheckName::named("attestr-udyam-otp")
            .unwrap()
            .info()
            .variables();
        assert_eq!(attestr[0].0, "ATTESTR_AUTH_TOKEN");
        let equal = CheckName::named("equal-aadhaar-otp")
            .unwrap()
            .info()
            .variables();
        assert!(equal.iter().any(|(v, _)| v == "EQUAL_JOURNEY_ID"));
    }

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
