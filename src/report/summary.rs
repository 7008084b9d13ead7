//! What a run did, as one value taken when it ends: the summary on stderr, `--summary-json`
//! and `--metrics-file` all say it, so that they never disagree.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::{EXIT_FATAL, EXIT_INCOMPLETE, Tally, exit_meaning};
use crate::config::ConfigError;
use crate::input::InputError;
use crate::journal::JournalError;
use crate::outcome::Status;
use crate::stats::Stats;
use crate::util::sync::lock;
use crate::util::time::{Started, rfc3339};

/// The facts of a run that are neither counters nor rows: what [`Summary::new`] starts from.
pub struct Run<'a> {
    pub check: &'static str,
    pub output: &'a Path,
    pub state: &'a Path,
    pub files: usize,
    pub started: Started,
    pub interrupted: bool,
}

/// What a run did. Field for field it is the JSON of `--summary-json`, which
/// `docs/summary.schema.json` describes and admits no other field: a field added here goes
/// there too (`tests/monitoring.rs` validates real runs' JSON against it). No field holds an
/// identifier, a cell or the provider's words.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub check: &'static str,
    /// The output file, as given or defaulted.
    pub output: String,
    /// The job's state directory.
    pub state: String,
    /// The input files.
    pub files: usize,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub ended_at: String,
    #[serde(rename = "elapsed_seconds", serialize_with = "seconds")]
    pub elapsed: Duration,
    pub exit_code: u8,
    pub exit_meaning: &'static str,
    /// Why the run stopped, when it failed (exit 1).
    pub error: Option<Failure>,
    /// The job's rows by outcome, as the output holds them; none when the run failed, since it
    /// wrote no output.
    pub rows: Option<Rows>,
    /// A signal stopped the sending; the requests in flight finished and the output was written.
    pub interrupted: bool,
    /// Rows given an earlier job's answer on the account in this run, without a call.
    pub reused: u64,
    /// HTTP requests sent to the provider in this run.
    pub calls: u64,
    /// Of which answered 429.
    pub rate_limited: u64,
    /// Requests sent again after a retryable failure.
    pub retries: u64,
    /// Retries not made because the retry budget was spent on a failing provider.
    pub retries_denied: u64,
    /// Rows whose paid call may have been billed without an answer.
    pub unconfirmed: u64,
    /// Rows of earlier runs' unconfirmed calls sent again (`--resend-unconfirmed`).
    pub resent: u64,
    /// Uploads sent again under the same name after a lost answer (never billed twice).
    pub safe_resends: u64,
    /// Rows of uploads without an answer, asked for by the upload's name instead of held.
    pub reconciled: u64,
    /// Paid calls made in this run (rows, for a batch check).
    pub paid_calls: u64,
    /// The run's cap on paid calls, when it has one.
    pub max_paid_calls: Option<u64>,
    /// Rows not sent because the cap was reached.
    pub capped: u64,
    /// OTPs a two-step check sent in this run, and the rows waiting for theirs.
    pub otps_sent: u64,
    pub awaiting_otp: u64,
    /// Paid requests whose quota slot passed before they could leave.
    pub slots_missed: u64,
    /// The circuit breaker gave up on the provider.
    pub provider_down: bool,
    /// The provider's daily quota ran out.
    pub daily_quota_exhausted: bool,
    /// What the provider admitted, when well below the configured rate or none was configured.
    pub pace_note: Option<String>,
}

/// The job's rows by outcome.
#[derive(Debug, Serialize)]
pub struct Rows {
    pub total: u64,
    /// Every status, zeros included, in the order of [`Status::ALL`].
    #[serde(serialize_with = "every_status")]
    pub by_status: BTreeMap<Status, u64>,
    /// Rows that repeated an earlier identifier and carry its outcome.
    pub duplicates: u64,
}

/// Why a run failed, in words fixed here. The error's own text stays on stderr: it can quote
/// an input's header line (a headerless export's first row), a line of the config, or the
/// provider's words, and the JSON and the metrics must hold no identifier and no secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: &'static str,
}

/// What failed, for a script to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    Config,
    Credentials,
    Input,
    StateInUse,
    State,
    Sending,
    Output,
}

/// Where a run was when it failed: what an error of no known type is put down to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading the arguments, the config, the credentials and the inputs' headers.
    Setup,
    /// Opening the state, planning the rows, settling what a dead run left.
    State,
    /// Sending the requests and following them.
    Sending,
    /// Writing the output.
    Output,
}

impl Failure {
    /// The failure `error` is, from its type where it has one, else from `stage`.
    pub fn of(error: &anyhow::Error, stage: Stage) -> Failure {
        let kind = error.chain().find_map(kind_of).unwrap_or(match stage {
            Stage::Setup => FailureKind::Config,
            Stage::State => FailureKind::State,
            Stage::Sending => FailureKind::Sending,
            Stage::Output => FailureKind::Output,
        });
        Failure {
            kind,
            message: kind.message(),
        }
    }
}

/// The kind of failure an error of a type this knows is.
fn kind_of(e: &(dyn std::error::Error + 'static)) -> Option<FailureKind> {
    if let Some(e) = e.downcast_ref::<JournalError>() {
        return Some(match e {
            JournalError::Busy { .. } => FailureKind::StateInUse,
            _ => FailureKind::State,
        });
    }
    if e.is::<InputError>() {
        return Some(FailureKind::Input);
    }
    Some(match e.downcast_ref::<ConfigError>()? {
        ConfigError::MissingCredentials { .. } | ConfigError::CredentialsFile { .. } => {
            FailureKind::Credentials
        }
        _ => FailureKind::Config,
    })
}

impl FailureKind {
    fn message(self) -> &'static str {
        match self {
            FailureKind::Config => {
                "the config file or the arguments are wrong; the error on stderr names what to \
                 fix"
            }
            FailureKind::Credentials => {
                "the provider's credentials are missing or unreadable; set them (bulkverify \
                 checks lists each check's variables) and run the same command again"
            }
            FailureKind::Input => {
                "an input file cannot be read or lacks a column the check needs; the error on \
                 stderr names the file, the line and the column to fix"
            }
            FailureKind::StateInUse => {
                "another run holds the job's state: the previous run is still going, or two \
                 jobs share one state; this run sent nothing"
            }
            FailureKind::State => {
                "the job's state could not be opened or written (another job's state, changed \
                 inputs, a full disk); the error on stderr says what to do, and what was done \
                 is kept"
            }
            FailureKind::Sending => {
                "the run stopped while sending (credentials refused, the provider's account, \
                 the journal); what was done is kept, and the same command resumes once the \
                 error on stderr is dealt with"
            }
            FailureKind::Output => {
                "the output could not be written; what was done is kept in the state, and the \
                 same command writes it once the error on stderr is dealt with"
            }
        }
    }
}

impl Summary {
    /// Takes the counters as they are now. `ended` is what the output holds, or why the run
    /// failed.
    pub fn new(run: Run<'_>, stats: &Stats, ended: Result<&Tally, Failure>) -> Summary {
        let elapsed = run.started.instant.elapsed();
        let (rows, error) = match ended {
            Ok(tally) => (Some(Rows::of(tally)), None),
            Err(failure) => (None, Some(failure)),
        };
        let exit_code = rows
            .as_ref()
            .map_or(EXIT_FATAL, |r| super::exit_code(&r.by_status));
        let get = Stats::get;
        Summary {
            check: run.check,
            output: run.output.display().to_string(),
            state: run.state.display().to_string(),
            files: run.files,
            started_at: rfc3339(run.started.at),
            ended_at: rfc3339(run.started.at + elapsed),
            elapsed,
            exit_code,
            exit_meaning: exit_meaning(exit_code),
            error,
            rows,
            interrupted: run.interrupted,
            reused: get(&stats.reused),
            calls: get(&stats.calls),
            rate_limited: get(&stats.rate_limited),
            retries: get(&stats.retries),
            retries_denied: get(&stats.retries_denied),
            unconfirmed: get(&stats.unconfirmed),
            resent: get(&stats.resent),
            safe_resends: get(&stats.safe_resends),
            reconciled: get(&stats.reconciled),
            paid_calls: get(&stats.paid),
            max_paid_calls: *lock(&stats.max_paid_calls),
            capped: get(&stats.capped),
            otps_sent: get(&stats.otps_sent),
            awaiting_otp: get(&stats.awaiting_otp),
            slots_missed: get(&stats.slots_missed),
            provider_down: get(&stats.provider_down) > 0,
            daily_quota_exhausted: get(&stats.day_spent) > 0,
            pace_note: lock(&stats.pace_note).clone(),
        }
    }

    /// The summary's line on the paid calls made, and on the cap when the run has one.
    fn spending(&self, s: &mut String) {
        let paid = self.paid_calls;
        let Some(cap) = self.max_paid_calls else {
            if paid > 0 {
                let _ = writeln!(s, "  paid calls made in this run: {paid}");
            }
            return;
        };
        let _ = writeln!(
            s,
            "  paid calls made in this run: {paid} of its cap of {cap}{}",
            if self.capped > 0 {
                format!(
                    "; {} not sent (pending, paid_call_limit): the same command sends them, \
                     up to the cap again",
                    rows_word(self.capped)
                )
            } else {
                String::new()
            }
        );
    }

    /// The summary's lines on requests sent again after a lost answer.
    fn resends(&self, s: &mut String) {
        if self.resent > 0 {
            let _ = writeln!(
                s,
                "  resent after a lost answer (may be billed twice): {}",
                rows_word(self.resent)
            );
        }
        if self.safe_resends > 0 {
            let _ = writeln!(
                s,
                "  uploads sent again under the same name after a lost answer (never billed \
                 twice: the provider takes a name once): {}",
                self.safe_resends
            );
        }
        if self.reconciled > 0 {
            let _ = writeln!(
                s,
                "  rows of uploads without an answer, asked for by the upload's name instead of \
                 held: {}",
                rows_word(self.reconciled)
            );
        }
    }

    /// The summary's lines on what held the run back: OTPs, retries, the quota, the provider.
    fn obstacles(&self, s: &mut String) {
        if self.otps_sent > 0 || self.awaiting_otp > 0 {
            let _ = writeln!(
                s,
                "  OTPs sent in this run: {}; {} wait for their OTP: fill the otp column of \
                 the input and run the same command again before bv_otp_expires_at",
                self.otps_sent,
                rows_word(self.awaiting_otp)
            );
        }
        if self.retries_denied > 0 {
            let _ = writeln!(
                s,
                "  retries not made (the retry budget was spent on a failing provider): {}",
                self.retries_denied
            );
        }
        if let Some(note) = &self.pace_note {
            let _ = writeln!(s, "  {note}");
        }
        if self.slots_missed > 0 {
            let _ = writeln!(
                s,
                "  quota slots that passed before their paid request could leave: {} \
                 (its intent took long to commit, or the machine was busy; each went at the \
                 next slot)",
                self.slots_missed
            );
        }
        if self.provider_down {
            let _ = writeln!(
                s,
                "  the provider kept failing and the circuit breaker gave up: rows not sent are \
                 error (provider_unavailable); run the same command when it is back"
            );
        }
        if self.daily_quota_exhausted {
            let _ = writeln!(
                s,
                "  the provider's daily quota is spent: rows not sent are pending \
                 (daily_quota_exhausted); tomorrow's run of the same command continues"
            );
        }
    }

    /// The end-of-run summary, for stderr.
    pub fn render(&self) -> String {
        let no_rows = Rows::of(&Tally::default());
        let rows = self.rows.as_ref().unwrap_or(&no_rows);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "bulkverify {}: {} rows in {} file{}, {}",
            self.check,
            rows.total,
            self.files,
            if self.files == 1 { "" } else { "s" },
            crate::progress::clock(self.elapsed)
        );
        for (status, n) in &rows.by_status {
            let _ = writeln!(s, "  {:<14}{n:>9}", status.as_str());
        }
        if rows.duplicates > 0 {
            let _ = writeln!(
                s,
                "  ({} repeated an earlier identifier and carr{} its outcome)",
                rows_word(rows.duplicates),
                if rows.duplicates == 1 { "ies" } else { "y" }
            );
        }
        if self.reused > 0 {
            let _ = writeln!(
                s,
                "  reused from earlier jobs on the account: {} ({} paid call{} saved; \
                 --no-reuse sends them again)",
                rows_word(self.reused),
                self.reused,
                if self.reused == 1 { "" } else { "s" }
            );
        }
        let _ = writeln!(
            s,
            "  calls {} · 429 answers {} · retries {} · unconfirmed {}",
            self.calls, self.rate_limited, self.retries, self.unconfirmed
        );
        self.spending(&mut s);
        self.resends(&mut s);
        self.obstacles(&mut s);
        let _ = writeln!(s, "  output {}", self.output);
        let incomplete = rows.incomplete();
        if incomplete > 0 {
            let _ = writeln!(
                s,
                "incomplete: {incomplete} rows are pending or error{}; run the same command \
                 again to resume (exit {EXIT_INCOMPLETE})",
                if self.interrupted {
                    " (the run was interrupted)"
                } else {
                    ""
                }
            );
        }
        s
    }
}

impl Rows {
    fn of(tally: &Tally) -> Rows {
        let by_status: BTreeMap<Status, u64> = Status::ALL
            .into_iter()
            .map(|s| (s, tally.counts.get(&s).copied().unwrap_or(0)))
            .collect();
        Rows {
            total: by_status.values().sum(),
            by_status,
            duplicates: tally.duplicates,
        }
    }

    /// Rows that are `pending` or `error`: the next run picks them up.
    pub fn incomplete(&self) -> u64 {
        self.by_status
            .iter()
            .filter(|(s, _)| !s.is_final())
            .map(|(_, n)| n)
            .sum()
    }
}

fn rows_word(n: u64) -> String {
    format!("{n} row{}", if n == 1 { "" } else { "s" })
}

/// A duration as seconds, to the millisecond: as the JSON and the metrics say it.
pub(super) fn as_seconds(d: Duration) -> f64 {
    d.as_millis() as f64 / 1000.0
}

fn seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(as_seconds(*d))
}

/// Counts by status as an object keyed by `bv_status`, every status present.
fn every_status<S: Serializer>(counts: &BTreeMap<Status, u64>, s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(Status::ALL.len()))?;
    for status in Status::ALL {
        map.serialize_entry(status.as_str(), &counts.get(&status).copied().unwrap_or(0))?;
    }
    map.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::EXIT_OK;

    fn summary(counts: &[(Status, u64)], ended: Option<Failure>) -> Summary {
        let stats = Stats::default();
        Stats::add(&stats.calls, 12);
        *lock(&stats.max_paid_calls) = Some(20);
        let tally = Tally {
            counts: counts.iter().copied().collect(),
            duplicates: 1,
            ..Tally::default()
        };
        let run = Run {
            check: "deepvue-udyam",
            output: Path::new("out.csv"),
            state: Path::new("out.csv.bulkverify"),
            files: 1,
            started: Started {
                at: time::macros::datetime!(2026-12-04 02:30:00 UTC),
                instant: std::time::Instant::now() - Duration::from_secs(5),
            },
            interrupted: false,
        };
        Summary::new(run, &stats, ended.map_or(Ok(&tally), Err))
    }

    #[test]
    fn summary_and_exit_codes() {
        let complete = summary(&[(Status::Verified, 3), (Status::InvalidInput, 1)], None);
        assert_eq!(complete.exit_code, EXIT_OK);
        let text = complete.render();
        assert!(text.contains("4 rows in 1 file, 0:00:05"), "{text}");
        let incomplete = summary(&[(Status::Verified, 3), (Status::Pending, 2)], None);
        assert_eq!(incomplete.exit_code, EXIT_INCOMPLETE);
        assert!(
            incomplete
                .render()
                .contains("incomplete: 2 rows are pending or error"),
            "{}",
            incomplete.render()
        );
    }

    /// The JSON holds every status, zeros included, and the times; a failed run's holds its
    /// failure instead of rows.
    #[test]
    fn the_json_says_what_the_text_says() {
        let json = serde_json::to_value(summary(&[(Status::Verified, 3)], None)).unwrap();
        assert_eq!(
            json["rows"],
            serde_json::json!({
                "total": 3,
                "by_status": {"verified": 3, "not_verified": 0, "needs_review": 0,
                              "invalid_input": 0, "pending": 0, "error": 0},
                "duplicates": 1,
            })
        );
        assert_eq!(json["started_at"], "2026-12-04T02:30:00Z");
        assert_eq!(json["ended_at"], "2026-12-04T02:30:05Z");
        assert_eq!(json["elapsed_seconds"].as_f64().map(f64::round), Some(5.0));
        assert_eq!(
            (json["calls"].as_u64(), json["max_paid_calls"].as_u64()),
            (Some(12), Some(20))
        );
        assert_eq!(json["error"], serde_json::Value::Null);

        let failure = Failure::of(&anyhow::anyhow!("x"), Stage::Output);
        let json = serde_json::to_value(summary(&[], Some(failure))).unwrap();
        assert_eq!(json["exit_code"], 1);
        assert_eq!(json["rows"], serde_json::Value::Null);
        assert_eq!(json["error"]["kind"], "output");
    }

    /// An error of a known type says its kind wherever it happened; any other, the stage it
    /// stopped.
    #[test]
    fn failures_are_known_by_their_type_then_by_their_stage() {
        use anyhow::Context as _;
        let kind = |e: anyhow::Error, stage| Failure::of(&e, stage).kind;
        let busy = JournalError::Busy {
            dir: "s".into(),
            pid: String::new(),
        };
        assert_eq!(
            kind(
                Err::<(), _>(busy).context("opening").unwrap_err(),
                Stage::State
            ),
            FailureKind::StateInUse
        );
        let missing = ConfigError::MissingCredentials {
            provider: "deepvue",
            vars: "A and B".into(),
        };
        assert_eq!(kind(missing.into(), Stage::Setup), FailureKind::Credentials);
        let invalid = ConfigError::Invalid {
            path: "c".into(),
            setting: "s".into(),
            message: "m".into(),
        };
        assert_eq!(kind(invalid.into(), Stage::Setup), FailureKind::Config);
        let empty = InputError::Empty {
            file: "in.csv".into(),
        };
        assert_eq!(kind(empty.into(), Stage::State), FailureKind::Input);
        assert_eq!(
            kind(anyhow::anyhow!("refused"), Stage::Sending),
            FailureKind::Sending
        );
        assert_eq!(
            kind(anyhow::anyhow!("x"), Stage::Setup),
            FailureKind::Config
        );
    }
}
