//! What a run leaves behind besides the output: its end in the job's history, and the job's
//! HTML report drawn from that history.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::shared_usage;
use crate::checks::CheckInfo;
use crate::checks::spending::Spending;
use crate::config::ProviderSettings;
use crate::journal::Journal;
use crate::quota::gate::unix_minute;
use crate::report::html::{Quota, render};
use crate::report::job::{JobFacts, held_by_groups, job_report};
use crate::report::{EXIT_FATAL, Tally, exit_code};
use crate::stats::Stats;
use crate::util::fs::write_atomic;
use crate::util::sync::lock;
use crate::util::time::unix_ms;

/// The report is the job's business alone, as the output is.
const REPORT_MODE: u32 = 0o600;

/// Where the run records its end, and what its report needs beside the journal.
pub(super) struct Record {
    /// The run's number in the job's history.
    pub run: Option<i64>,
    pub stats: Arc<Stats>,
    pub report: Option<Reporting>,
}

/// The job's report: where it goes and what it says of the job besides its history.
pub(super) struct Reporting {
    pub path: PathBuf,
    pub check: &'static str,
    pub provider: &'static str,
    pub output: String,
    pub quota: Quota,
    pub price_per_call: Option<f64>,
    /// The account's usage ledger and the account, for the day's quota used by every job.
    pub ledger: Option<(PathBuf, String)>,
}

impl Record {
    /// The run's last step, `write`, then its end recorded: by its rows' outcomes, or failed.
    pub fn finish(
        &self,
        journal: &Journal,
        write: impl FnOnce() -> anyhow::Result<Tally>,
    ) -> anyhow::Result<Tally> {
        let written = write();
        self.ended(journal, written.as_ref().ok());
        written
    }

    /// Records that the run failed with `e`, which it returns.
    pub fn failed(&self, journal: &Journal, e: anyhow::Error) -> anyhow::Error {
        self.ended(journal, None);
        e
    }

    /// Records how the run ended, with what its output holds (`None`: it failed first), and
    /// writes the job's report. Neither can lose anything: a failure to record is logged.
    fn ended(&self, journal: &Journal, held: Option<&Tally>) {
        let code = held.map_or(EXIT_FATAL, |t| exit_code(&t.counts));
        if let Some(run) = self.run {
            ended(journal, run, code, Stats::get(&self.stats.paid));
        }
        if let Some(reporting) = &self.report
            && let Err(e) = reporting.write(journal, held, &self.stats)
        {
            tracing::error!(
                "the run report {} could not be written ({e:#}); the next run of the same \
                 command writes it",
                reporting.path.display()
            );
        }
    }
}

/// Records how run `run` ended, as far as the journal can still be written: a failure to
/// record it loses only the report's line for it.
pub(super) fn ended(journal: &Journal, run: i64, exit_code: u8, paid: u64) {
    if let Err(e) = journal.end_run(run, exit_code, paid) {
        tracing::warn!("{e}");
    }
}

impl Reporting {
    /// The report at `path` of a job of `info` whose output is `output`, on the provider
    /// account `settings` reach; its usage ledger is in `ledger` (live runs only).
    pub fn of(
        path: PathBuf,
        info: &'static CheckInfo,
        output: &Path,
        settings: &ProviderSettings,
        spending: &Spending,
        ledger: &Option<PathBuf>,
    ) -> Reporting {
        let quotas = &settings.quotas;
        Reporting {
            path,
            check: info.name,
            provider: info.provider.name,
            output: output.display().to_string(),
            quota: Quota {
                per_second: quotas.per_second.map(|n| f64::from(n.get())),
                per_minute: quotas.per_minute.map(|n| u64::from(n.get())),
                per_day: quotas.per_day.map(|n| u64::from(n.get())),
                ..Quota::default()
            },
            price_per_call: spending.price,
            ledger: ledger
                .clone()
                .map(|dir| (dir, crate::ledger::account(settings))),
        }
    }

    fn write(&self, journal: &Journal, held: Option<&Tally>, stats: &Stats) -> anyhow::Result<()> {
        let grouped;
        let held = match held {
            Some(held) => held,
            None => {
                grouped = held_by_groups(&journal.outcome_groups()?);
                &grouped
            }
        };
        let since = unix_minute() - 24 * 60;
        let own = journal.usage_since(since)?;
        let used = match &self.ledger {
            Some((dir, account)) => shared_usage(dir, account.clone(), own).1,
            None => own,
        };
        let quota = Quota {
            day_used: self.quota.per_day.map(|_| {
                used.iter()
                    .filter(|(m, _)| *m > since)
                    .map(|(_, n)| n)
                    .sum()
            }),
            pace_note: lock(&stats.pace_note).clone(),
            ..self.quota.clone()
        };
        let facts = JobFacts {
            check: self.check,
            provider: self.provider,
            output: &self.output,
            quota,
            price_per_call: self.price_per_call,
        };
        let page = render(&job_report(facts, held, &journal.history()?, unix_ms()));
        write_atomic(&self.path, page.as_bytes(), REPORT_MODE)?;
        Ok(())
    }
}
