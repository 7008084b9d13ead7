//! `deepvue-upi-batch`: UPI address checks in batches. Each chunk of rows is written as a CSV
//! with a row-key column we control, uploaded, polled until its output file is ready, and the
//! downloaded file's rows are matched back by that key — never by position: the output's order,
//! line ends and extra columns are the provider's choice.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{
    BatchCheck, BatchStep, CheckInfo, Env, Match, Pipeline, PollSchedule, Subject, Uploaded,
};
use crate::config::{CheckConfig, ConfigError, ConfigFile};
use crate::http::deepvue::{self, accepted_request_id, refusal, verdict};
use crate::http::{Answer, Api, Billing, CallError, Intent};
use crate::input::reader::ColumnSpec;
use crate::input::validate::{self, Invalid};
use crate::outcome::{Outcome, Reason, RowKey, Status};
use crate::quota::gate::Priority;
use crate::secret::Secret;

pub const INFO: CheckInfo = CheckInfo {
    name: "deepvue-upi-batch",
    provider: &deepvue::DEFAULTS,
    summary: "UPI address (VPA) check at Deepvue, in batch files",
    columns: &[
        ColumnSpec {
            name: "vpa",
            required: true,
            aliases: &["vpa", "upi", "upiid", "vpaid", "upiaddress", "upihandle"],
            help: "the UPI address, handle@psp",
            filled_later: false,
        },
        ColumnSpec {
            name: "name",
            required: false,
            aliases: &["name"],
            help: "the account holder's name, sent along when present",
            filled_later: false,
        },
    ],
    fields: &[
        ("account_exists", "true or false, as the bank answered"),
        ("name_at_bank", "the account holder's name at the bank"),
        (
            "name_at_bank_cleaned",
            "the same, cleaned up by the provider",
        ),
    ],
    settings: &[],
    env: &[],
    reuse: crate::checks::Reuse {
        within: crate::checks::ReuseWithin::Secs(7 * 86_400),
        configurable: true,
        why: "a VPA can be closed or moved to another bank account at any time; a week covers a re-sent or overlapping export",
        echoes: &[],
    },
    make: build,
};

fn build(config: &ConfigFile, section: &CheckConfig, _env: Env) -> Result<Pipeline, ConfigError> {
    Ok(Pipeline::Batches(Arc::new(UpiBatch::new(config, section)?)))
}

/// The column we add to each uploaded file to match its results back.
pub const KEY_COLUMN: &str = "bv_row_key";
/// The most rows the provider takes in one file (the sandbox's limit; Deepvue does not publish
/// one).
pub const MAX_CHUNK: usize = 10_000;

const DEFAULT_SCHEDULE: PollSchedule = PollSchedule {
    first: Duration::from_secs(5),
    max: Duration::from_secs(60),
    deadline: Duration::from_secs(2 * 3600),
};

pub struct UpiBatch {
    chunk_size: usize,
    schedule: PollSchedule,
}

impl UpiBatch {
    pub fn new(config: &ConfigFile, section: &CheckConfig) -> Result<UpiBatch, ConfigError> {
        let chunk_size = section.chunk_size.unwrap_or(MAX_CHUNK);
        if !(1..=MAX_CHUNK).contains(&chunk_size) {
            return Err(config.invalid(
                format!("[checks.{}] chunk_size", INFO.name),
                format!("must be between 1 and {MAX_CHUNK}"),
            ));
        }
        Ok(UpiBatch {
            chunk_size,
            schedule: DEFAULT_SCHEDULE.from_config(config, INFO.name, section)?,
        })
    }
}

#[async_trait::async_trait]
impl BatchCheck for UpiBatch {
    fn downloads(&self) -> bool {
        true
    }

    fn subject(&self, values: &[&str]) -> Result<Subject, Invalid> {
        let vpa = validate::vpa(values[0])?;
        Ok(Subject {
            ident: vpa.clone(),
            values: vec![vpa, values[1].trim().to_string()],
        })
    }

    fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    async fn upload(
        &self,
        api: &Api,
        rows: &[(RowKey, Subject)],
        _name: &str,
        intent: &dyn Intent,
    ) -> Result<(Uploaded, u32), CallError> {
        let file = bytes::Bytes::from(batch_file(rows));
        let url = api.url("/v1/verification/upi-basic/batch");
        let build = move |c: &reqwest::Client| {
            // A Bytes clone shares the file: each attempt rebuilds the form, not the data.
            let body = reqwest::Body::from(file.clone());
            let part = reqwest::multipart::Part::stream_with_length(body, file.len() as u64)
                .file_name("bulkverify-batch.csv")
                .mime_str("text/csv")
                .expect("text/csv is a valid mime type");
            c.post(url.clone())
                .multipart(reqwest::multipart::Form::new().part("batch_file", part))
        };
        let answer = api
            .call(
                "upi batch upload",
                Billing::Paid(intent),
                Priority::Low,
                &build,
            )
            .await?;
        Ok((read_upload(&answer)?, answer.attempts))
    }

    async fn poll(
        &self,
        api: &Api,
        request_id: &str,
        scratch: &Path,
    ) -> Result<BatchStep, CallError> {
        let mut url = api.url("/v1/verification/batch-processing-status");
        url.query_pairs_mut().append_pair("request_id", request_id);
        let build = move |c: &reqwest::Client| c.get(url.clone());
        let answer = api
            .call("upi batch status", Billing::Free, Priority::High, &build)
            .await?;
        let url = match read_status(&answer) {
            BatchStatus::Running => return Ok(BatchStep::Running),
            BatchStatus::Failed(o) => return Ok(BatchStep::Failed(o.with_request_id(request_id))),
            BatchStatus::Lost => {
                return Ok(BatchStep::Lost(format!(
                    "deepvue no longer knows the UPI batch {request_id} (HTTP 404)"
                )));
            }
            BatchStatus::Ready(url) => url,
        };
        let name: String = request_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(64)
            .collect();
        let dest = scratch.join(format!("upi-batch-{name}.csv"));
        let got = api.download("upi batch download", &url, &dest).await?;
        if !got.status.is_success() {
            // Most often the pre-signed URL expired before we got to it: the next status call
            // hands out a fresh one.
            tracing::warn!(
                "the result file of a UPI batch could not be fetched (HTTP {}); asking for it again",
                got.status.as_u16()
            );
            return Ok(BatchStep::Running);
        }
        // A file too large for memory went to the disk: it holds personal data, and lives only
        // as long as it takes to read it.
        let spilled = dest.exists();
        let path = dest.clone();
        let body = got.body;
        let read = tokio::task::spawn_blocking(move || {
            if spilled {
                std::fs::File::open(&path)
                    .map_err(|e| format!("cannot open the result file: {e}"))
                    .and_then(read_output)
            } else {
                read_output(&body[..])
            }
        })
        .await;
        if spilled && let Err(e) = tokio::fs::remove_file(&dest).await {
            tracing::warn!("could not remove {}: {e}", dest.display());
        }
        match read {
            Ok(Ok(results)) => Ok(BatchStep::Done(results)),
            Ok(Err(message)) => Ok(BatchStep::Failed(
                Outcome::new(Status::Error)
                    .with_reason(Reason::RESULT_FILE_UNREADABLE)
                    .with_message(message)
                    .with_request_id(request_id),
            )),
            Err(e) => Err(CallError::Fatal(format!(
                "reading a batch result file failed: {e}"
            ))),
        }
    }

    fn schedule(&self) -> PollSchedule {
        self.schedule
    }
}

/// The file uploaded for a chunk: the VPA, the name, and our key.
pub fn batch_file(rows: &[(RowKey, Subject)]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut write = || -> csv::Result<()> {
        w.write_record(["vpa", "name", KEY_COLUMN])?;
        for (key, s) in rows {
            w.write_record([
                s.values[0].as_str(),
                s.values[1].as_str(),
                &key.0.to_string(),
            ])?;
        }
        w.flush()?;
        Ok(())
    };
    write().expect("writing CSV to memory cannot fail");
    w.into_inner().expect("writing CSV to memory cannot fail")
}

/// Reads the upload's answer. A refused file is an error for its rows (the fault is the
/// file's, not theirs), with advice where there is some.
pub fn read_upload(answer: &Answer) -> Result<Uploaded, CallError> {
    const LABEL: &str = "upi batch upload";
    if answer.status.is_success() {
        return accepted_request_id(answer, LABEL).map(Uploaded::Accepted);
    }
    let verdict = verdict(answer, LABEL)?;
    let reason = verdict.reason.clone().unwrap_or_default();
    let advice = if reason == "batch_too_large" {
        format!("; lower chunk_size in [checks.{}]", INFO.name)
    } else {
        String::new()
    };
    Ok(Uploaded::Refused(Outcome {
        status: Status::Error,
        reason: Some(Reason::batch_refused(&reason).into()),
        message: Some(format!("{}{advice}", verdict.message.unwrap_or_default())),
        ..verdict
    }))
}

/// Where a batch stands, as its status endpoint says.
pub enum BatchStatus {
    Running,
    Ready(Secret),
    Failed(Outcome),
    /// The provider does not know the batch (any more).
    Lost,
}

pub fn read_status(answer: &Answer) -> BatchStatus {
    if answer.status.as_u16() == 404 {
        return BatchStatus::Lost;
    }
    if !answer.status.is_success() {
        return BatchStatus::Failed(refusal(answer, Status::Error));
    }
    let body = answer.json().unwrap_or_default();
    match body
        .get("data")
        .and_then(|d| d.get("batch_output_file_url"))
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    {
        Some(url) => BatchStatus::Ready(Secret::new(url)),
        None => BatchStatus::Running,
    }
}

/// Reads a downloaded output file into outcomes by row key. Tolerates a BOM, CRLF, extra and
/// reordered columns; needs our key column.
pub fn read_output(file: impl std::io::Read) -> Result<Vec<(Match, Outcome)>, String> {
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(file);
    let headers = rdr
        .headers()
        .map_err(|e| format!("the result file has no readable header: {e}"))?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let Some(key_col) = col(KEY_COLUMN) else {
        return Err(format!(
            "the result file has no {KEY_COLUMN} column to match rows by"
        ));
    };
    let cols = [
        col("code"),
        col("sub_code"),
        col("message"),
        col("account_exists"),
        col("name_at_bank"),
        col("name_at_bank_cleaned"),
    ];
    let mut out = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(format!("the result file is malformed: {e}")),
        }
        let Some(key) = record
            .get(key_col)
            .and_then(|k| k.trim().parse::<u64>().ok())
        else {
            // A row that cannot be matched makes the whole file suspect: nothing is merged.
            return Err(format!(
                "a row of the result file has no usable {KEY_COLUMN}; nothing of it was merged"
            ));
        };
        let get = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or("").trim();
        out.push((
            Match::Row(RowKey(key)),
            row_outcome(
                get(cols[0]),
                get(cols[1]),
                get(cols[2]),
                get(cols[3]),
                get(cols[4]),
                get(cols[5]),
            ),
        ));
    }
    Ok(out)
}

/// One result row's outcome.
fn row_outcome(
    code: &str,
    sub_code: &str,
    message: &str,
    account_exists: &str,
    name_at_bank: &str,
    cleaned: &str,
) -> Outcome {
    let provider_status = if sub_code.is_empty() { code } else { sub_code };
    let code: u16 = code.parse().unwrap_or(200);
    let exists = match account_exists.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        _ => None,
    };
    let base = |status| {
        let o = Outcome::new(status).with_message(message);
        if provider_status.is_empty() {
            o
        } else {
            o.with_provider_status(provider_status)
        }
    };
    let reason_or = |fallback: Reason| {
        if sub_code.is_empty() {
            fallback.into()
        } else {
            Reason::provider(sub_code)
        }
    };
    if code >= 500 {
        return base(Status::Error).with_reason(reason_or(Reason::SOURCE_ERROR));
    }
    if (400..500).contains(&code) {
        return base(Status::NotVerified).with_reason(reason_or(Reason::REJECTED));
    }
    match exists {
        Some(true) => base(Status::Verified).with_fields(vec![
            ("account_exists".into(), "true".into()),
            ("name_at_bank".into(), name_at_bank.into()),
            ("name_at_bank_cleaned".into(), cleaned.into()),
        ]),
        Some(false) => base(Status::NotVerified)
            .with_reason(Reason::ACCOUNT_NOT_FOUND)
            .with_fields(vec![("account_exists".into(), "false".into())]),
        None => base(Status::Error).with_reason(Reason::NO_RESULT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_status_answers() {
        let done =
            include_str!("../../sandbox/fixtures/contract/deepvue-batch-status-completed.json");
        match read_status(&Answer::sample(200, done)) {
            BatchStatus::Ready(url) => assert!(url.expose().ends_with(".csv")),
            _ => panic!("a completed batch has a URL"),
        }
        let running =
            include_str!("../../sandbox/fixtures/contract/deepvue-batch-status-in-progress.json");
        assert!(matches!(
            read_status(&Answer::sample(200, running)),
            BatchStatus::Running
        ));
        assert!(matches!(
            read_status(&Answer::sample(404, r#"{"message":"No request found"}"#)),
            BatchStatus::Lost
        ));
        assert!(matches!(
            read_status(&Answer::sample(400, r#"{"sub_code":"BAD","message":"bad"}"#)),
            BatchStatus::Failed(o) if o.reason.as_deref() == Some("bad")
        ));
    }

    #[test]
    fn documented_upload_answer() {
        let body = include_str!("../../sandbox/fixtures/contract/deepvue-batch-submit.json");
        assert!(matches!(
            read_upload(&Answer::sample(201, body)).unwrap(),
            Uploaded::Accepted(id) if id == "4e8b0c1f9a2d4e7b8c3d2a1f0e9d8c7b"
        ));
        let refused = read_upload(&Answer::sample(
            400,
            r#"{"code":400,"sub_code":"BATCH_TOO_LARGE","message":"batch_file has 20 rows; at most 10 rows are accepted"}"#,
        ))
        .unwrap();
        let Uploaded::Refused(o) = refused else {
            panic!("refused")
        };
        assert_eq!(o.status, Status::Error);
        assert_eq!(o.reason.as_deref(), Some("batch_refused_batch_too_large"));
        assert!(o.message.unwrap().contains("lower chunk_size"));
    }

    #[test]
    fn output_rows_match_by_key_in_any_order() {
        let path = crate::util::package_dir()
            .join("sandbox/fixtures/contract/deepvue-upi-batch-output.csv");
        let mut rows: Vec<(RowKey, Outcome)> = read_output(std::fs::File::open(&path).unwrap())
            .unwrap()
            .into_iter()
            .map(|(m, o)| match m {
                Match::Row(k) => (k, o),
                Match::Ident(_) => panic!("matched by row key"),
            })
            .collect();
        rows.sort_by_key(|(k, _)| *k);
        let keys: Vec<u64> = rows.iter().map(|(k, _)| k.0).collect();
        assert_eq!(keys, [0, 1, 3, 4]);
        let by = |k: u64| &rows.iter().find(|(r, _)| r.0 == k).unwrap().1;
        assert_eq!(by(0).status, Status::Verified);
        assert!(
            by(0)
                .fields
                .contains(&("name_at_bank".into(), "RAVI KUMAR".into()))
        );
        assert_eq!(by(1).status, Status::NotVerified);
        assert_eq!(by(1).reason.as_deref(), Some("account_not_found"));
        assert_eq!(by(3).status, Status::NotVerified);
        assert_eq!(by(3).reason.as_deref(), Some("invalid_vpa"));
        assert_eq!(by(4).status, Status::Error);
        assert_eq!(by(4).reason.as_deref(), Some("source_unavailable"));
        assert_eq!(
            by(4).message.as_deref(),
            Some("Source unavailable, try again later")
        );
    }

    #[test]
    fn a_file_without_our_key_is_refused() {
        let unkeyed = "vpa,account_exists\r\na@b,true\r\n";
        assert!(
            read_output(unkeyed.as_bytes())
                .unwrap_err()
                .contains(KEY_COLUMN)
        );
        let err =
            read_output("bv_row_key,account_exists\n0,true\nx,true\n".as_bytes()).unwrap_err();
        assert!(err.contains("nothing of it was merged"), "{err}");
    }

    #[test]
    fn uploaded_file_carries_our_key() {
        let rows = vec![(
            RowKey::new(0, 7),
            Subject {
                ident: "a@ybl".into(),
                values: vec!["a@ybl".into(), "A, B".into()],
            },
        )];
        assert_eq!(
            String::from_utf8(batch_file(&rows)).unwrap(),
            "vpa,name,bv_row_key\na@ybl,\"A, B\",7\n"
        );
    }
}
