//! The run's results for monitoring: `--summary-json` for scripts, `--metrics-file` for
//! Prometheus through node_exporter's textfile collector. Both say the run's [`Summary`], on
//! exit 0, 75 and 1, and each appears whole or not at all: the collector reads every `*.prom`
//! of its directory at any moment, and the temporary file is named `.<name>.<random>.tmp`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::summary::as_seconds;
use super::{EXIT_OK, Summary};
use crate::util::fs::write_atomic;
use crate::util::time::rfc3339_unix;

/// The summary JSON is the job's business alone, as the output is.
const JSON_MODE: u32 = 0o600;
/// The metrics file is read by node_exporter, which runs as another user. It holds counts, the
/// check's name and the output file's name, nothing of the rows.
const METRICS_MODE: u32 = 0o644;

/// Where `run` writes its results for monitoring, besides the summary on stderr.
#[derive(Debug)]
pub struct Monitoring {
    /// `--summary-json`.
    pub summary_json: Option<PathBuf>,
    /// `--metrics-file`.
    pub metrics_file: Option<PathBuf>,
    /// `--report`, `--no-report`.
    pub report: ReportAt,
}

/// Where the HTML run report goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportAt {
    /// `<output>.report.html`, the default.
    BesideOutput,
    File(PathBuf),
    Nowhere,
}

impl ReportAt {
    /// The report's path for a job whose output is `output`.
    pub fn path(&self, output: &Path) -> Option<PathBuf> {
        match self {
            ReportAt::BesideOutput => {
                Some(PathBuf::from(format!("{}.report.html", output.display())))
            }
            ReportAt::File(file) => Some(file.clone()),
            ReportAt::Nowhere => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(
        "{flag} {path}: the directory {dir} does not exist; create it (writable by the user \
         that runs the job) or give another path"
    )]
    NoDirectory {
        flag: &'static str,
        path: String,
        dir: String,
    },
    #[error(
        "cannot write {flag} {path}: {source}; the run itself ended with exit {code} \
         ({meaning}); once the file can be written, the same command writes it again"
    )]
    Write {
        flag: &'static str,
        path: String,
        code: u8,
        meaning: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Monitoring {
    fn files(&self) -> impl Iterator<Item = (&'static str, &Path)> {
        [
            ("--summary-json", self.summary_json.as_deref()),
            ("--metrics-file", self.metrics_file.as_deref()),
            (
                "--report",
                match &self.report {
                    ReportAt::File(file) => Some(file.as_path()),
                    _ => None,
                },
            ),
        ]
        .into_iter()
        .filter_map(|(flag, path)| Some((flag, path?)))
    }

    /// Refuses a file whose directory does not exist: at the start, rather than after a night
    /// of calls.
    pub fn check(&self) -> Result<(), MonitorError> {
        for (flag, path) in self.files() {
            let dir = parent(path);
            if !dir.is_dir() {
                return Err(MonitorError::NoDirectory {
                    flag,
                    path: path.display().to_string(),
                    dir: dir.display().to_string(),
                });
            }
        }
        Ok(())
    }

    /// Writes each file asked for; both are tried, and the first that could not be written is
    /// the error (any other is logged).
    pub fn write(&self, summary: &Summary) -> Result<(), MonitorError> {
        let json = self.summary_json.as_deref().map(|path| {
            let mut json = serde_json::to_vec_pretty(summary).expect("a summary serialises");
            json.push(b'\n');
            ("--summary-json", path, json, JSON_MODE)
        });
        let metrics = self.metrics_file.as_deref().map(|path| {
            let previous = std::fs::read_to_string(path).ok();
            let text = metrics(summary, previous.as_deref());
            ("--metrics-file", path, text.into_bytes(), METRICS_MODE)
        });
        let mut failed = json
            .into_iter()
            .chain(metrics)
            .filter_map(|(flag, path, bytes, mode)| {
                let source = write_atomic(path, &bytes, mode).err()?;
                Some(MonitorError::Write {
                    flag,
                    path: path.display().to_string(),
                    code: summary.exit_code,
                    meaning: summary.exit_meaning,
                    source,
                })
            });
        let first = failed.next();
        for e in failed {
            tracing::error!("{e}");
        }
        first.map_or(Ok(()), Err)
    }
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// One metric: its name, type and help, the same in every job's file (node_exporter refuses
/// a name whose help or type differs between files).
struct Metric {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

const ROWS: Metric = Metric {
    name: "bulkverify_rows",
    kind: "gauge",
    help: "Rows of the job's output by bv_status, as its last run wrote them (none when it failed).",
};
const CALLS: Metric = Metric {
    name: "bulkverify_calls_total",
    kind: "counter",
    help: "HTTP requests sent to the provider, over the runs of the job.",
};
const RATE_LIMITED: Metric = Metric {
    name: "bulkverify_rate_limited_total",
    kind: "counter",
    help: "Requests the provider answered 429, over the runs of the job.",
};
const RETRIES: Metric = Metric {
    name: "bulkverify_retries_total",
    kind: "counter",
    help: "Requests sent again after a retryable failure, over the runs of the job.",
};
const PAID: Metric = Metric {
    name: "bulkverify_paid_calls_total",
    kind: "counter",
    help: "Paid calls (rows, for a batch check), over the runs of the job.",
};
const REUSED: Metric = Metric {
    name: "bulkverify_reused_rows",
    kind: "gauge",
    help: "Rows the last run gave an earlier job's answer on the account, without a call.",
};
const DURATION: Metric = Metric {
    name: "bulkverify_duration_seconds",
    kind: "gauge",
    help: "How long the last run took.",
};
const LAST_RUN: Metric = Metric {
    name: "bulkverify_last_run_timestamp_seconds",
    kind: "gauge",
    help: "When the last run ended, in Unix seconds.",
};
const EXIT_CODE: Metric = Metric {
    name: "bulkverify_last_run_exit_code",
    kind: "gauge",
    help: "The last run's exit code: 0 complete, 75 incomplete (the next run resumes), 1 failed.",
};
const LAST_SUCCESS: Metric = Metric {
    name: "bulkverify_last_success_timestamp_seconds",
    kind: "gauge",
    help: "When a run writing this file last ended with every row final (exit 0), in Unix \
           seconds; until one has, when the first run writing it started.",
};

/// The run's metrics in Prometheus' text exposition format. `previous` is what the file held:
/// the counters go on from it when it is the same job's (the same check and output), and the
/// last success is kept from it when this run did not succeed, whatever job wrote it, since
/// the file stands for one cron job, whose output may be named for each night.
pub fn metrics(summary: &Summary, previous: Option<&str>) -> String {
    let output = Path::new(&summary.output).file_name().map_or_else(
        || summary.output.clone(),
        |n| n.to_string_lossy().into_owned(),
    );
    let job = format!(
        "check=\"{}\",output=\"{}\"",
        escape(summary.check),
        escape(&output)
    );
    let labels = format!("{{{job}}}");
    let previous = previous.unwrap_or_default();
    let mut s = String::new();
    if let Some(rows) = &summary.rows {
        header(&mut s, &ROWS);
        for (status, n) in &rows.by_status {
            let _ = writeln!(s, "{}{{{job},status=\"{status}\"}} {n}", ROWS.name);
        }
    }
    for (metric, this_run) in [
        (&CALLS, summary.calls),
        (&RATE_LIMITED, summary.rate_limited),
        (&RETRIES, summary.retries),
        (&PAID, summary.paid_calls),
    ] {
        // A counter read back beyond 2^53 loses units: no job gets there.
        let before = value_in(previous, metric.name, Some(&labels)).map_or(0, |v| v as u64);
        series(&mut s, metric, &labels, before.saturating_add(this_run));
    }
    series(&mut s, &REUSED, &labels, summary.reused);
    series(&mut s, &DURATION, &labels, as_seconds(summary.elapsed));
    let ended = rfc3339_unix(&summary.ended_at).unwrap_or_default();
    series(&mut s, &LAST_RUN, &labels, ended);
    series(&mut s, &EXIT_CODE, &labels, summary.exit_code);
    let last_success = if summary.exit_code == EXIT_OK {
        ended
    } else {
        value_in(previous, LAST_SUCCESS.name, None).map_or_else(
            || rfc3339_unix(&summary.started_at).unwrap_or_default(),
            |v| v as i64,
        )
    };
    series(&mut s, &LAST_SUCCESS, &labels, last_success);
    s
}

fn header(s: &mut String, m: &Metric) {
    let _ = writeln!(s, "# HELP {} {}", m.name, m.help);
    let _ = writeln!(s, "# TYPE {} {}", m.name, m.kind);
}

fn series(s: &mut String, m: &Metric, labels: &str, value: impl std::fmt::Display) {
    header(s, m);
    let _ = writeln!(s, "{}{labels} {value}", m.name);
}

/// A label value as the format wants it: backslash, double quote and line feed escaped.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The value of metric `name` in a file written before: of the series with these `labels`
/// when given, else of the first. `None` when there is none, or it is not a count or a time.
fn value_in(text: &str, name: &str, labels: Option<&str>) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (series_labels, value) = rest.rsplit_once(' ')?;
        let same_metric = series_labels.is_empty() || series_labels.starts_with('{');
        let same_series = labels.is_none_or(|l| series_labels == l);
        let value: f64 = value.parse().ok()?;
        (same_metric && same_series && value.is_finite() && value >= 0.0).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::outcome::Status;
    use crate::report::{Failure, FailureKind, Run, Stage, Tally};
    use crate::stats::Stats;
    use crate::util::time::Started;

    fn summary(output: &str, ended: Result<&Tally, Failure>, calls: u64) -> Summary {
        let stats = Stats::default();
        Stats::add(&stats.calls, calls);
        let started = Started {
            at: time::macros::datetime!(2026-12-04 02:30:00 UTC),
            instant: std::time::Instant::now() - Duration::from_secs(90),
        };
        let run = Run {
            check: "deepvue-udyam",
            output: Path::new(output),
            state: Path::new("state"),
            files: 1,
            started,
            interrupted: false,
        };
        Summary::new(run, &stats, ended)
    }

    fn tally(pending: u64) -> Tally {
        Tally {
            counts: BTreeMap::from([(Status::Verified, 3), (Status::Pending, pending)]),
            ..Tally::default()
        }
    }

    #[test]
    fn every_status_is_a_series_and_the_output_label_is_its_file_name() {
        let s = summary("/srv/jobs/udyam.verified.csv", Ok(&tally(0)), 7);
        let text = metrics(&s, None);
        for status in Status::ALL {
            let n = if status == Status::Verified { 3 } else { 0 };
            let line = format!(
                "bulkverify_rows{{check=\"deepvue-udyam\",output=\"udyam.verified.csv\",\
                 status=\"{status}\"}} {n}\n"
            );
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(text.contains("# TYPE bulkverify_calls_total counter\n"));
        assert!(text.contains("bulkverify_last_run_exit_code{"));
        let ended = time::macros::datetime!(2026-12-04 02:31:30 UTC).unix_timestamp();
        assert!(
            text.contains(&format!(
                "bulkverify_last_success_timestamp_seconds{{check=\"deepvue-udyam\",\
                 output=\"udyam.verified.csv\"}} {ended}\n"
            )),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        let s = summary("we\"ird\\name.csv", Ok(&tally(0)), 0);
        assert!(metrics(&s, None).contains("output=\"we\\\"ird\\\\name.csv\""));
    }

    /// Counters go on from the same job's file; the last success is kept when this run did
    /// not succeed, whatever job's it was; a failed run writes no rows.
    #[test]
    fn counters_and_the_last_success_carry_over() {
        let first = metrics(&summary("udyam.csv", Ok(&tally(0)), 10), None);
        let last_success = value_in(&first, LAST_SUCCESS.name, None).unwrap();
        let incomplete = metrics(&summary("udyam.csv", Ok(&tally(2)), 5), Some(&first));
        assert_eq!(value_in(&incomplete, CALLS.name, None), Some(15.0));
        assert_eq!(value_in(&incomplete, EXIT_CODE.name, None), Some(75.0));
        assert_eq!(
            value_in(&incomplete, LAST_SUCCESS.name, None),
            Some(last_success)
        );
        let failure = Failure::of(&anyhow::anyhow!("refused"), Stage::Sending);
        assert_eq!(failure.kind, FailureKind::Sending);
        let failed = metrics(&summary("udyam.csv", Err(failure), 1), Some(&incomplete));
        assert_eq!(value_in(&failed, CALLS.name, None), Some(16.0));
        assert_eq!(value_in(&failed, EXIT_CODE.name, None), Some(1.0));
        assert_eq!(
            value_in(&failed, LAST_SUCCESS.name, None),
            Some(last_success)
        );
        assert!(!failed.contains("bulkverify_rows"));
        // Tomorrow's export is another output: its counters start again, the last success
        // stays the file's.
        let next = metrics(&summary("udyam-2.csv", Ok(&tally(1)), 4), Some(&failed));
        assert_eq!(value_in(&next, CALLS.name, None), Some(4.0));
        assert_eq!(value_in(&next, LAST_SUCCESS.name, None), Some(last_success));
        // A job's first file, from a run that did not succeed: its start, so that an alert
        // on the last success gives a new job a day.
        let new = metrics(&summary("new.csv", Ok(&tally(1)), 1), None);
        let started = time::macros::datetime!(2026-12-04 02:30:00 UTC).unix_timestamp();
        assert_eq!(
            value_in(&new, LAST_SUCCESS.name, None),
            Some(started as f64)
        );
    }
}
