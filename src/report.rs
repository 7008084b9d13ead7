//! What the run produced: the result columns of the output, the summary, the exit code.

pub mod html;
pub mod job;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use crate::checks::COMMON_FIELDS;
use crate::input::InputFile;
use crate::journal::{ExportRow, RowState};
use crate::merge::{Cell, Kind, MergeError, Output};
use crate::outcome::{Reason, RowKey, Status};

mod monitor;
mod summary;

pub use monitor::{MonitorError, Monitoring, ReportAt};
pub use summary::{Failure, FailureKind, Rows, Run, Stage, Summary};

/// Every row has a final outcome.
pub const EXIT_OK: u8 = 0;
/// The run could not go on (config, credentials, input, disk); the output was not written.
pub const EXIT_FATAL: u8 = 1;
/// The command line was wrong (clap's own code).
pub const EXIT_USAGE: u8 = 2;
/// Some rows are `pending` or `error`: run the same command again to resume.
/// (75 is EX_TEMPFAIL: "try again later", which cron wrappers understand.)
pub const EXIT_INCOMPLETE: u8 = 75;

/// An exit code in words, with what to do next: for the summary JSON, and whatever else says a
/// run's end to someone who was not there.
pub fn exit_meaning(code: u8) -> &'static str {
    match code {
        EXIT_OK => "complete: every row has a final outcome",
        EXIT_INCOMPLETE => {
            "incomplete: some rows are pending or error; the output is written, and the same \
             command run again resumes them"
        }
        EXIT_USAGE => "the command line is wrong",
        _ => {
            "failed: the run could not go on and wrote no output (an earlier one is left as it \
             was); fix what the error says and run the same command again"
        }
    }
}

/// A result cell as written: one that a spreadsheet would run as a formula (it starts with
/// `=`, `+`, `-`, `@`, a tab, CR or LF) gets a `'` in front, OWASP's rule against CSV
/// injection, since result cells carry what providers and their sources say. A plain number
/// (`-1200`, `+919876543210`) is left as it is: it cannot run, and a turnover or a phone
/// number stays usable; a phone number with spaces or hyphens (`+91 98765 43210`) gets the
/// quote. The input's own columns are never changed.
pub fn neutralise(value: &str) -> Cow<'_, str> {
    // The first byte alone says it (each of these is a byte of its own in UTF-8): this runs
    // for every result cell of every row.
    let risky = matches!(
        value.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r' | b'\n')
    );
    if risky && !is_plain_number(value) {
        Cow::Owned(format!("'{value}"))
    } else {
        Cow::Borrowed(value)
    }
}

/// An optional sign, then digits with at most one decimal point.
fn is_plain_number(value: &str) -> bool {
    let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    !(int.is_empty() && frac.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

/// One row's result as written.
struct Written<'r> {
    status: Status,
    reason: Option<&'r str>,
    message: Option<&'r str>,
}

/// What a journal row means in the output: its status and reason, from its state, stored
/// status and reason alone (what `status` counts the rows by).
pub fn outcome_of(
    state: RowState,
    status: Option<Status>,
    reason: Option<&str>,
) -> (Status, Option<&str>) {
    let w = written_parts(state, status, reason, None);
    (w.status, w.reason)
}

/// What a journal row means in the output.
fn written(row: &ExportRow) -> Written<'_> {
    written_parts(
        row.state,
        row.status,
        row.reason.as_deref(),
        row.message.as_deref(),
    )
}

fn written_parts<'r>(
    state: RowState,
    status: Option<Status>,
    reason: Option<&'r str>,
    message: Option<&'r str>,
) -> Written<'r> {
    let own = || Written {
        status: status.unwrap_or(Status::Error),
        reason,
        message,
    };
    let pending = |reason: Reason, message: &'static str| Written {
        status: Status::Pending,
        reason: Some(reason.code),
        message: Some(message),
    };
    match state {
        RowState::Done => own(),
        RowState::Planned | RowState::Duplicate => pending(
            Reason::NOT_SENT,
            "not sent yet (the run stopped first); the next run sends it",
        ),
        RowState::Running => pending(
            Reason::STILL_PROCESSING,
            "accepted by the provider, result not in yet; the next run polls for it",
        ),
        RowState::Sending | RowState::Unconfirmed => Written {
            status: Status::Error,
            reason: Some(Reason::UNCONFIRMED_SUBMISSION.code),
            message: Some(
                "the request may have reached the provider (and been billed) but its answer \
                 was lost; re-run with --resend-unconfirmed to send it again",
            ),
        },
    }
}

/// Turns journal rows, one at a time in key order, into the output's result columns, written
/// beside their input rows, and the count of rows by status.
pub struct Collector<'a> {
    inputs: &'a [InputFile],
    output: Output<'a>,
    tally: Tally,
}

/// What the rows add up to: what the output holds.
pub type Tally = crate::journal::OutputCounts;

impl<'a> Collector<'a> {
    /// `fields` are the check's own result fields in output order; the output is written to
    /// `path`.
    pub fn new(
        inputs: &'a [InputFile],
        fields: Vec<String>,
        path: &Path,
    ) -> Result<Collector<'a>, MergeError> {
        let common: Vec<&str> = COMMON_FIELDS.iter().map(|(n, _)| *n).collect();
        // A provider field named like one of ours keeps its own column.
        let field_columns: Vec<String> = fields
            .iter()
            .map(|f| {
                if common.contains(&f.as_str()) {
                    format!("bv_source_{f}")
                } else {
                    format!("bv_{f}")
                }
            })
            .collect();
        let mut columns: Vec<(String, Kind)> = COMMON_FIELDS
            .iter()
            .map(|(n, _)| {
                let kind = if *n == "attempts" {
                    Kind::Count
                } else {
                    Kind::Text
                };
                (format!("bv_{n}"), kind)
            })
            .collect();
        columns.extend(field_columns.into_iter().map(|c| (c, Kind::Text)));
        Ok(Collector {
            inputs,
            output: Output::create(inputs, &columns, path)?,
            tally: Tally::default(),
        })
    }

    pub fn add<'r>(&mut self, row: &'r ExportRow) -> Result<(), MergeError> {
        let w = written(row);
        let tally = &mut self.tally;
        *tally.counts.entry(w.status).or_insert(0) += 1;
        if let Some(reason) = w.reason {
            *tally
                .reasons
                .entry((w.status, reason.to_string()))
                .or_insert(0) += 1;
        }
        tally.duplicates += u64::from(row.duplicate_of.is_some());
        let done = row.state == RowState::Done;
        let duplicate_of = row.duplicate_of.map(|k| row_reference(self.inputs, k));
        let text = |v: Option<&'r str>| Cell::Text(v.map(neutralise));
        // In the order of COMMON_FIELDS, then the check's own, which the row holds in the
        // order of the output's columns (a row that holds fewer has none of the rest).
        let common = [
            Cell::Text(Some(w.status.as_str().into())),
            text(w.reason),
            text(w.message),
            text(row.provider_status.as_deref()),
            text(row.request_id.as_deref()),
            Cell::Text(if done {
                row.checked_at.as_deref().map(Cow::Borrowed)
            } else {
                None
            }),
            Cell::Count((row.attempts > 0).then_some(row.attempts)),
            Cell::Text(duplicate_of.map(Cow::Owned)),
            Cell::Text(row.reused.then_some("yes".into())),
        ];
        self.output.push(
            row.key.0,
            common
                .into_iter()
                .chain(row.fields.iter().map(|f| text(f.as_deref())))
                .chain(std::iter::repeat_with(|| Cell::Text(None))),
        )
    }

    /// Puts the output in place.
    pub fn finish(self) -> Result<Tally, MergeError> {
        self.output.finish()?;
        Ok(self.tally)
    }
}

/// How the output refers to another row: `row 12`, or `b.csv row 12` with several inputs.
fn row_reference(inputs: &[InputFile], key: RowKey) -> String {
    let row = key.record() + 1;
    match inputs.get(key.file() as usize) {
        Some(f) if inputs.len() > 1 => format!("{} row {row}", f.name()),
        _ => format!("row {row}"),
    }
}

/// The exit code of a job whose rows have these outcomes.
pub fn exit_code(counts: &BTreeMap<Status, u64>) -> u8 {
    let incomplete = counts.iter().any(|(s, n)| !s.is_final() && *n > 0);
    if incomplete { EXIT_INCOMPLETE } else { EXIT_OK }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: u64, state: RowState, status: Option<Status>) -> ExportRow {
        ExportRow {
            key: RowKey(key),
            duplicate_of: None,
            state,
            status,
            reason: None,
            message: None,
            provider_status: None,
            request_id: None,
            checked_at: Some("2026-11-22T00:00:00Z".into()),
            attempts: 0,
            fields: Vec::new(),
            reused: false,
        }
    }

    #[test]
    fn states_become_definite_outcomes() {
        let mut dup = row(4, RowState::Done, Some(Status::Verified));
        dup.duplicate_of = Some(RowKey(0));
        dup.reused = true;
        let mut verified = row(0, RowState::Done, Some(Status::Verified));
        verified.fields = vec![Some("x".into()), Some("A".into())];
        verified.attempts = 2;
        let rows = vec![
            verified,
            row(1, RowState::Planned, None),
            row(2, RowState::Running, None),
            row(3, RowState::Unconfirmed, None),
            dup,
        ];
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        std::fs::write(&input, "id\na\nb\nc\nd\ne\n").unwrap();
        let inputs = InputFile::open_all(&[input], Default::default()).unwrap();
        let out = dir.path().join("out.csv");
        let mut c = Collector::new(&inputs, vec!["status".into(), "name".into()], &out).unwrap();
        for r in &rows {
            c.add(r).unwrap();
        }
        let tally = c.finish().unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "id,bv_status,bv_reason,bv_message,bv_provider_status,bv_request_id,\
             bv_checked_at,bv_attempts,bv_duplicate_of,bv_reused,bv_source_status,bv_name"
        );
        assert_eq!(lines[1], "a,verified,,,,,2026-11-22T00:00:00Z,2,,,x,A");
        assert!(lines[2].starts_with("b,pending,not_sent,"), "{}", lines[2]);
        assert!(lines[2].ends_with(",,,,,,"), "never checked: {}", lines[2]);
        assert!(
            lines[3].starts_with("c,pending,still_processing,"),
            "{}",
            lines[3]
        );
        assert!(
            lines[4].starts_with("d,error,unconfirmed_submission,"),
            "{}",
            lines[4]
        );
        assert_eq!(lines[5], "e,verified,,,,,2026-11-22T00:00:00Z,,row 1,yes,,");
        assert_eq!(tally.counts[&Status::Verified], 2);
        assert_eq!(tally.counts[&Status::Pending], 2);
        assert_eq!(tally.counts[&Status::Error], 1);
        assert_eq!(tally.duplicates, 1);
    }

    #[test]
    fn formula_like_result_cells_are_neutralised() {
        for (value, written) in [
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("\n=1", "'\n=1"),
            ("+91 98765 43210", "'+91 98765 43210"),
            ("+91-98765-43210", "'+91-98765-43210"),
            ("-", "'-"),
            ("+919876543210", "+919876543210"),
            ("-1200", "-1200"),
            ("-12.50", "-12.50"),
            ("RAVI KUMAR", "RAVI KUMAR"),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            assert_eq!(neutralise(value), written, "{value:?}");
        }
    }

    /// Through the output: result cells are neutralised, the input's cells are not.
    #[test]
    fn result_cells_are_neutralised_and_input_cells_kept() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        std::fs::write(
            &input,
            "id,note
a,=1+1
",
        )
        .unwrap();
        let inputs = InputFile::open_all(&[input], Default::default()).unwrap();
        let mut r = row(0, RowState::Done, Some(Status::NotVerified));
        r.message = Some("=cmd()".into());
        r.fields = vec![Some("@evil".into()), Some("-5".into())];
        let out = dir.path().join("out.csv");
        let mut c = Collector::new(&inputs, vec!["name".into(), "turnover".into()], &out).unwrap();
        c.add(&r).unwrap();
        c.finish().unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let line = text.lines().nth(1).unwrap();
        assert!(line.starts_with("a,=1+1,not_verified,,'=cmd(),"), "{line}");
        assert!(line.ends_with(",'@evil,-5"), "{line}");
    }
}
