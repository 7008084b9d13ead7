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
pub mod spending;

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

    /// How long this job reuses earlier answers: `[checks.<name>] reuse_within` over the
    /// check's default, or never with `--no-reuse`.
    pub fn reuse_within(
        &self,
        config: &ConfigFile,
        no_reuse: bool,
    ) -> Result<ReuseWithin, ConfigError> {
        let setting = config
            .checks
            .get(self.name)
            .and_then(|s| s.reuse_within.as_deref());
        let within = match setting {
            None => self.reuse.within,
            Some(text) => {
                let key = format!("[checks.{}] reuse_within", self.name);
                let within = match text.trim() {
                    "never" => ReuseWithin::Never,
                    "always" => ReuseWithin::Always,
                    t => crate::util::time::parse_age(t)
                        .map(|d| ReuseWithin::Secs(d.as_secs()))
                        .ok_or_else(|| {
                            config.invalid(
                                key.clone(),
                                "give an age such as \"30d\", \"12h\" or \"90m\", \"always\", \
                                 or \"0\" to send every identifier again",
                            )
                        })?,
                };
                if !self.reuse.configurable && within.since(0).is_some() {
                    return Err(config.invalid(key, self.reuse.why));
                }
                within
            }
        };
        Ok(if no_reuse { ReuseWithin::Never } else { within })
    }

    /// Where a two-step check's OTP is among a subject's values (`usize::MAX`: a check without
    /// one): the pipeline reads it there, and `plan` too.
    pub fn otp_at(&self) -> usize {
        self.columns
            .iter()
            .position(|c| c.filled_later)
            .unwrap_or(usize::MAX)
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
    /// How long its final answers serve later jobs by default, and why: a decision made from
    /// what the answer means and how fast it goes stale, which the README's table repeats.
    pub reuse: Reuse,
    pub make: Build,
}

/// How long a check's final answers serve later jobs on the same account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReuseWithin {
    /// Every identifier is sent again.
    Never,
    /// Answers younger than this many seconds are reused.
    Secs(u64),
    /// A final answer never changes.
    Always,
}

impl ReuseWithin {
    /// The oldest time (Unix seconds) an answer may have been obtained at to be reused now;
    /// `None` when nothing is reused.
    pub fn since(self, now: i64) -> Option<i64> {
        match self {
            ReuseWithin::Never | ReuseWithin::Secs(0) => None,
            ReuseWithin::Secs(s) => Some(now.saturating_sub(i64::try_from(s).unwrap_or(i64::MAX))),
            ReuseWithin::Always => Some(i64::MIN),
        }
    }

    /// As the README and `bulkverify checks` write it.
    pub fn describe(self) -> String {
        match self {
            ReuseWithin::Never | ReuseWithin::Secs(0) => "never".into(),
            ReuseWithin::Always => "always".into(),
            ReuseWithin::Secs(s) if s % 86_400 == 0 => format!("{}d", s / 86_400),
            ReuseWithin::Secs(s) if s % 3_600 == 0 => format!("{}h", s / 3_600),
            ReuseWithin::Secs(s) => format!("{s}s"),
        }
    }
}

/// A check's default [`ReuseWithin`], with the reason for it.
#[derive(Debug, Clone, Copy)]
pub struct Reuse {
    pub within: ReuseWithin,
    /// Whether `reuse_within` may change it: never for a check whose every run is the
    /// holder's consent.
    pub configurable: bool,
    pub why: &'static str,
    /// Result fields that repeat the identifier: the store keeps them out, since it never
    /// holds an identifier in clear, and a reused row leaves them empty (the input has it).
    pub echoes: &'static [&'static str],
}

impl Reuse {
    /// Whether the check's answers are worth keeping: a check that never reuses keeps none.
    pub fn keeps(&self) -> bool {
        self.configurable || self.within.since(0).is_some()
    }
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
    (
        "reused",
        "yes: the answer an earlier job on the account obtained at bv_checked_at, taken \
         without a call",
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

    /// Whether an accepted request is polled for its result: `plan` counts at least one poll
    /// for each.
    fn polls(&self) -> bool {
        true
    }
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

    /// Whether a finished batch's results come as a file to download: `plan` counts one
    /// download for each batch.
    fn downloads(&self) -> bool {
        false
    }

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
mod tests;
