//! What the run produced: the result columns of the output, the summary, the exit code.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::checks::COMMON_FIELDS;
use crate::engine::stats::Stats;
use crate::input::InputFile;
use crate::journal::{ExportRow, RowState};
use crate::merge::{Results, Values};
use crate::outcome::{RowKey, Status};

/// Every row has a final outcome.
pub const EXIT_OK: u8 = 0;
/// The run could not go on (config, credentials, input, disk); the output was not written.
pub const EXIT_FATAL: u8 = 1;
/// The command line was wrong (clap's own code).
pub const EXIT_USAGE: u8 = 2;
/// Some rows are `pending` or `error`: run the same command again to resume.
/// (75 is EX_TEMPFAIL: "try again later", which cron wrappers understand.)
pub const EXIT_INCOMPLETE: u8 = 75;

/// One row's result as written.
struct Written {
    status: Status,
    reason: Option<String>,
    message: Option<String>,
}

/// What a journal row means in the output.
fn written(row: &ExportRow) -> Written {
    let own = || Written {
        status: row.status.unwrap_or(Status::Error),
        reason: row.reason.clone(),
        message: row.message.clone(),
    };
    let pending = |reason: &str, message: &str| Written {
        status: Status::Pending,
        reason: Some(reason.into()),
        message: Some(message.into()),
    };
    match row.state {
        RowState::Done => own(),
        RowState::Planned | RowState::Duplicate => pending(
            "not_sent",
            "not sent yet (the run stopped first); the next run sends it",
        ),
        RowState::Running => pending(
            "still_processing",
            "accepted by the provider, result not in yet; the next run polls for it",
        ),
        RowState::Sending | RowState::Unconfirmed => Written {
            status: Status::Error,
            reason: Some("unconfirmed_submission".into()),
            message: Some(
                "the request may have reached the provider (and been billed) but its answer \
                 was lost; re-run with --resend-unconfirmed to send it again"
                    .into(),
            ),
        },
    }
}

/// The output's result columns, and the count of rows by status.
pub fn results(inputs: &[InputFile], rows: &[ExportRow]) -> (Results, BTreeMap<Status, u64>) {
    let common: Vec<&str> = COMMON_FIELDS.iter().map(|(n, _)| *n).collect();
    // A provider field named like one of ours keeps its own column.
    let field_column = |name: &str| {
        if common.contains(&name) {
            format!("bv_source_{name}")
        } else {
            format!("bv_{name}")
        }
    };
    let mut field_names: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in rows {
        for (name, _) in &r.fields {
            if seen.insert(name.as_str()) {
                field_names.push(name.clone());
            }
        }
    }
    let n = rows.len();
    let mut keys = Vec::with_capacity(n);
    let mut text: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(n); 7 + field_names.len()];
    let mut attempts = Vec::with_capacity(n);
    let mut counts = BTreeMap::new();
    let field_index: std::collections::HashMap<&str, usize> = field_names
        .iter()
        .enumerate()
        .map(|(i, f)| (f.as_str(), i))
        .collect();
    for r in rows {
        let w = written(r);
        *counts.entry(w.status).or_insert(0) += 1;
        keys.push(r.key.0);
        let done = r.state == RowState::Done;
        text[0].push(Some(w.status.as_str().to_string()));
        text[1].push(w.reason);
        text[2].push(w.message);
        text[3].push(r.provider_status.clone());
        text[4].push(r.request_id.clone());
        text[5].push(if done { r.checked_at.clone() } else { None });
        text[6].push(r.duplicate_of.map(|k| row_reference(inputs, k)));
        attempts.push((r.attempts > 0).then_some(r.attempts));
        let mut values = vec![None; field_names.len()];
        for (name, value) in &r.fields {
            values[field_index[name.as_str()]] = Some(value.clone());
        }
        for (i, v) in values.into_iter().enumerate() {
            text[7 + i].push(v);
        }
    }
    let mut text = text.into_iter();
    let mut next = || Values::Text(text.next().expect("one column per name"));
    let mut columns = vec![
        ("bv_status".to_string(), next()),
        ("bv_reason".into(), next()),
        ("bv_message".into(), next()),
        ("bv_provider_status".into(), next()),
        ("bv_request_id".into(), next()),
        ("bv_checked_at".into(), next()),
        ("bv_attempts".into(), Values::Count(attempts)),
        ("bv_duplicate_of".into(), next()),
    ];
    for f in &field_names {
        columns.push((field_column(f), next()));
    }
    (Results { keys, columns }, counts)
}

/// How the output refers to another row: `row 12`, or `b.csv row 12` with several inputs.
fn row_reference(inputs: &[InputFile], key: RowKey) -> String {
    let row = key.record() + 1;
    match inputs.get(key.file() as usize) {
        Some(f) if inputs.len() > 1 => format!("{} row {row}", f.name()),
        _ => format!("row {row}"),
    }
}

/// The end-of-run summary, for stderr.
pub struct Summary<'a> {
    pub check: &'a str,
    pub files: usize,
    pub counts: &'a BTreeMap<Status, u64>,
    pub duplicates: u64,
    pub stats: &'a Stats,
    pub elapsed: Duration,
    pub output: &'a str,
    pub interrupted: bool,
}

impl Summary<'_> {
    pub fn incomplete(&self) -> u64 {
        self.counts
            .iter()
            .filter(|(s, _)| !s.is_final())
            .map(|(_, n)| n)
            .sum()
    }

    pub fn exit_code(&self) -> u8 {
        if self.incomplete() > 0 {
            EXIT_INCOMPLETE
        } else {
            EXIT_OK
        }
    }

    pub fn render(&self) -> String {
        let rows: u64 = self.counts.values().sum();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "bulkverify {}: {rows} rows in {} file{}, {}",
            self.check,
            self.files,
            if self.files == 1 { "" } else { "s" },
            crate::progress::clock(self.elapsed)
        );
        for status in Status::ALL {
            let n = self.counts.get(&status).copied().unwrap_or(0);
            let _ = writeln!(s, "  {:<14}{n:>9}", status.as_str());
        }
        if self.duplicates > 0 {
            let _ = writeln!(
                s,
                "  ({} repeated an earlier identifier and carr{} its outcome)",
                rows_word(self.duplicates),
                if self.duplicates == 1 { "ies" } else { "y" }
            );
        }
        let st = self.stats;
        let _ = writeln!(
            s,
            "  calls {} · 429 answers {} · retries {} · unconfirmed {}",
            Stats::get(&st.calls),
            Stats::get(&st.rate_limited),
            Stats::get(&st.retries),
            Stats::get(&st.unconfirmed)
        );
        let _ = writeln!(s, "  output {}", self.output);
        let incomplete = self.incomplete();
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

fn rows_word(n: u64) -> String {
    format!("{n} row{}", if n == 1 { "" } else { "s" })
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
        }
    }

    fn column<'a>(r: &'a Results, name: &str) -> &'a Vec<Option<String>> {
        match &r.columns.iter().find(|(n, _)| n == name).unwrap().1 {
            Values::Text(v) => v,
            Values::Count(_) => panic!("{name} is a count"),
        }
    }

    #[test]
    fn states_become_definite_outcomes() {
        let mut dup = row(4, RowState::Done, Some(Status::Verified));
        dup.duplicate_of = Some(RowKey(0));
        let mut verified = row(0, RowState::Done, Some(Status::Verified));
        verified.fields = vec![("status".into(), "x".into()), ("name".into(), "A".into())];
        verified.attempts = 2;
        let rows = vec![
            verified,
            row(1, RowState::Planned, None),
            row(2, RowState::Running, None),
            row(3, RowState::Unconfirmed, None),
            dup,
        ];
        let (r, counts) = results(&[], &rows);
        assert_eq!(
            column(&r, "bv_status"),
            &["verified", "pending", "pending", "error", "verified"]
                .map(|s| Some(s.to_string()))
                .to_vec()
        );
        assert_eq!(column(&r, "bv_reason")[1].as_deref(), Some("not_sent"));
        assert_eq!(
            column(&r, "bv_reason")[2].as_deref(),
            Some("still_processing")
        );
        assert_eq!(
            column(&r, "bv_reason")[3].as_deref(),
            Some("unconfirmed_submission")
        );
        assert_eq!(column(&r, "bv_checked_at")[1], None, "never checked");
        assert_eq!(column(&r, "bv_duplicate_of")[4].as_deref(), Some("row 1"));
        assert_eq!(column(&r, "bv_source_status")[0].as_deref(), Some("x"));
        assert_eq!(column(&r, "bv_name")[0].as_deref(), Some("A"));
        assert_eq!(column(&r, "bv_name")[1], None);
        assert_eq!(counts[&Status::Verified], 2);
        assert_eq!(counts[&Status::Pending], 2);
        let names: Vec<&str> = r.columns.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            &names[..8],
            &[
                "bv_status",
                "bv_reason",
                "bv_message",
                "bv_provider_status",
                "bv_request_id",
                "bv_checked_at",
                "bv_attempts",
                "bv_duplicate_of"
            ]
        );
    }

    #[test]
    fn summary_and_exit_codes() {
        let stats = Stats::default();
        let summary = |counts: &BTreeMap<Status, u64>| {
            let s = Summary {
                check: "deepvue-udyam",
                files: 1,
                counts,
                duplicates: 0,
                stats: &stats,
                elapsed: Duration::from_secs(5),
                output: "out.csv",
                interrupted: false,
            };
            (s.exit_code(), s.render())
        };
        let mut counts = BTreeMap::from([(Status::Verified, 3), (Status::InvalidInput, 1)]);
        let (code, text) = summary(&counts);
        assert_eq!(code, EXIT_OK);
        assert!(text.contains("4 rows in 1 file, 0:00:05"), "{text}");
        counts.insert(Status::Pending, 2);
        let (code, text) = summary(&counts);
        assert_eq!(code, EXIT_INCOMPLETE);
        assert!(
            text.contains("incomplete: 2 rows are pending or error"),
            "{text}"
        );
    }
}
