//! `cashfree-bank-bulk` and `cashfree-pan-bulk`: Cashfree's JSON bulk endpoints. Both work the
//! same way, so they are one module with two entry shapes:
//!
//! - each chunk is posted under a `bulk_verification_id` the tool makes
//!   (`bv-<job token>-<batch>`), recorded in the journal before the call. Cashfree takes an id
//!   once and answers 409 to it again, so an upload whose answer was lost is sent again under
//!   the same id (a 409 then means "already accepted"), and a run that died mid-upload asks
//!   for the id instead of holding its rows;
//! - the status endpoint is polled by that id until no entry is in process;
//! - entries come back in the provider's order, and are matched to rows by the identifier
//!   the tool sent (the account, IFSC, name and phone, or the PAN and name), which a run never
//!   sends twice.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Map, Value, json};

use super::{
    BatchCheck, BatchStep, CheckInfo, Env, Match, Pipeline, PollSchedule, Subject, Uploaded,
};
use crate::config::{CheckConfig, ConfigError, ConfigFile};
use crate::http::cashfree::{self, refusal};
use crate::http::{Answer, Api, Billing, CallError, Intent};
use crate::input::reader::ColumnSpec;
use crate::input::validate::{self, Invalid};
use crate::outcome::{Outcome, Reason, RowKey, Status};
use crate::quota::gate::Priority;

const NAME_COLUMN: ColumnSpec = ColumnSpec {
    name: "name",
    required: false,
    aliases: &[
        "name",
        "accountholder",
        "accountholdername",
        "holdername",
        "fullname",
    ],
    help: "the holder's name, for the name match (sent when present)",
    filled_later: false,
};

pub const BANK_INFO: CheckInfo = CheckInfo {
    name: "cashfree-bank-bulk",
    provider: &cashfree::DEFAULTS,
    summary: "bank account verification at Cashfree, in bulk requests of up to 1,000 entries",
    columns: &[
        ColumnSpec {
            name: "bank_account",
            required: true,
            aliases: &[
                "bankaccount",
                "accountnumber",
                "accountno",
                "bankaccountnumber",
                "acno",
            ],
            help: "the account number (9 to 18 digits)",
            filled_later: false,
        },
        ColumnSpec {
            name: "ifsc",
            required: true,
            aliases: &["ifsc", "ifsccode", "ifscode"],
            help: "the branch's IFSC",
            filled_later: false,
        },
        NAME_COLUMN,
        ColumnSpec {
            name: "phone",
            required: false,
            aliases: &["phone", "mobile", "mobileno", "phonenumber", "mobilenumber"],
            help: "the holder's mobile number (sent when present)",
            filled_later: false,
        },
    ],
    fields: &[
        ("name_at_bank", "the holder's name as the bank has it"),
        (
            "name_match_result, name_match_score",
            "how well the given name matched it",
        ),
        (
            "account_status, account_status_code",
            "Cashfree's verdict and its code",
        ),
        (
            "bank_name, branch, city, micr, utr",
            "what the bank reported",
        ),
        ("reference_id", "Cashfree's reference for the entry"),
    ],
    settings: &[],
    env: &[],
    reuse: crate::checks::Reuse {
        within: crate::checks::ReuseWithin::Secs(7 * 86_400),
        configurable: true,
        why: "an account can be closed, frozen or renamed at any time; a week covers a re-sent or overlapping export",
        echoes: &[],
    },
    make: build_bank,
};

fn build_bank(
    config: &ConfigFile,
    section: &CheckConfig,
    _env: Env,
) -> Result<Pipeline, ConfigError> {
    Ok(Pipeline::Batches(Arc::new(CashfreeBulk::new(
        Kind::Bank,
        config,
        section,
    )?)))
}

pub const PAN_INFO: CheckInfo = CheckInfo {
    name: "cashfree-pan-bulk",
    provider: &cashfree::DEFAULTS,
    summary: "PAN verification at Cashfree, in bulk requests",
    columns: &[
        ColumnSpec {
            name: "pan",
            required: true,
            aliases: &["pan", "pannumber", "panno", "pancard"],
            help: "the PAN, AAAAA9999A",
            filled_later: false,
        },
        NAME_COLUMN,
    ],
    fields: &[
        ("registered_name", "the name the income-tax department has"),
        ("type", "the holder type the PAN belongs to"),
        ("pan_status", "VALID, INVALID, DELETED or DEACTIVATED"),
        (
            "name_match_result, name_match_score",
            "how well the given name matched",
        ),
        (
            "aadhaar_seeding_status",
            "whether the PAN is linked to an Aadhaar",
        ),
        ("reference_id", "Cashfree's reference for the entry"),
    ],
    settings: &[],
    env: &[],
    reuse: crate::checks::Reuse {
        within: crate::checks::ReuseWithin::Secs(30 * 86_400),
        configurable: true,
        why: "a PAN and its holder's name change rarely; a month covers the overlap of monthly and nightly exports",
        echoes: &[],
    },
    make: build_pan,
};

fn build_pan(
    config: &ConfigFile,
    section: &CheckConfig,
    _env: Env,
) -> Result<Pipeline, ConfigError> {
    Ok(Pipeline::Batches(Arc::new(CashfreeBulk::new(
        Kind::Pan,
        config,
        section,
    )?)))
}

/// Cashfree's limit per bank-account bulk request; used for PAN too, which publishes none.
pub const MAX_CHUNK: usize = 1000;

const DEFAULT_SCHEDULE: PollSchedule = PollSchedule {
    first: Duration::from_secs(5),
    max: Duration::from_secs(60),
    deadline: Duration::from_secs(2 * 3600),
};

/// Which of the two bulk products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bank,
    Pan,
}

impl Kind {
    fn info(self) -> &'static CheckInfo {
        match self {
            Kind::Bank => &BANK_INFO,
            Kind::Pan => &PAN_INFO,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Kind::Bank => "/bank-account/bulk",
            Kind::Pan => "/pan/bulk",
        }
    }

    fn label(self) -> (&'static str, &'static str) {
        match self {
            Kind::Bank => ("bank bulk upload", "bank bulk status"),
            Kind::Pan => ("pan bulk upload", "pan bulk status"),
        }
    }
}

pub struct CashfreeBulk {
    kind: Kind,
    chunk_size: usize,
    schedule: PollSchedule,
}

impl CashfreeBulk {
    pub fn new(
        kind: Kind,
        config: &ConfigFile,
        section: &CheckConfig,
    ) -> Result<CashfreeBulk, ConfigError> {
        let name = kind.info().name;
        let chunk_size = section.chunk_size.unwrap_or(MAX_CHUNK);
        if !(1..=MAX_CHUNK).contains(&chunk_size) {
            return Err(config.invalid(
                format!("[checks.{name}] chunk_size"),
                format!("must be between 1 and {MAX_CHUNK}"),
            ));
        }
        Ok(CashfreeBulk {
            kind,
            chunk_size,
            schedule: DEFAULT_SCHEDULE.from_config(config, name, section)?,
        })
    }
}

/// A name as it is sent and matched: trimmed, inner spaces collapsed, upper case.
fn name_key(value: &str) -> Result<String, Invalid> {
    if value.trim().is_empty() {
        return Ok(String::new());
    }
    Ok(validate::person_name(value)?.to_uppercase())
}

/// The identifier of a bank entry, from what was sent or what came back.
fn bank_ident(account: &str, ifsc: &str, name: &str, phone: &str) -> String {
    format!("{account}|{ifsc}|{name}|{phone}")
}

#[async_trait::async_trait]
impl BatchCheck for CashfreeBulk {
    fn names_uploads(&self) -> bool {
        true
    }

    fn subject(&self, values: &[&str]) -> Result<Subject, Invalid> {
        match self.kind {
            Kind::Bank => {
                let account = validate::bank_account(values[0])?;
                let ifsc = validate::ifsc(values[1])?;
                let name = name_key(values[2])?;
                let phone = if values[3].trim().is_empty() {
                    String::new()
                } else {
                    validate::mobile(values[3])?
                };
                Ok(Subject {
                    ident: bank_ident(&account, &ifsc, &name, &phone),
                    values: vec![account, ifsc, name, phone],
                })
            }
            Kind::Pan => {
                let pan = validate::pan(values[0])?;
                let name = name_key(values[1])?;
                Ok(Subject {
                    ident: format!("{pan}|{name}"),
                    values: vec![pan, name],
                })
            }
        }
    }

    fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    async fn upload(
        &self,
        api: &Api,
        rows: &[(RowKey, Subject)],
        name: &str,
        intent: &dyn Intent,
    ) -> Result<(Uploaded, u32), CallError> {
        let body = Bytes::from(request_body(self.kind, rows, name).to_string());
        let url = api.url(self.kind.path());
        let build = move |c: &reqwest::Client| {
            c.post(url.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
        };
        let (label, _) = self.kind.label();
        let answer = api
            .call(label, Billing::Paid(intent), Priority::Low, &build)
            .await?;
        Ok((read_upload(&answer, label, name)?, answer.attempts))
    }

    async fn poll(
        &self,
        api: &Api,
        request_id: &str,
        _scratch: &Path,
    ) -> Result<BatchStep, CallError> {
        let mut url = api.url(self.kind.path());
        url.query_pairs_mut()
            .append_pair("bulk_verification_id", request_id);
        let build = move |c: &reqwest::Client| c.get(url.clone());
        let (_, label) = self.kind.label();
        let answer = api
            .call(label, Billing::Free, Priority::High, &build)
            .await?;
        read_status(self.kind, &answer, request_id)
    }

    fn schedule(&self) -> PollSchedule {
        self.schedule
    }
}

/// The JSON posted for a chunk. Empty optional values are left out rather than sent empty.
pub fn request_body(kind: Kind, rows: &[(RowKey, Subject)], name: &str) -> Value {
    let keys: &[&str] = match kind {
        Kind::Bank => &["bank_account", "ifsc", "name", "phone"],
        Kind::Pan => &["pan", "name"],
    };
    let entries: Vec<Value> = rows
        .iter()
        .map(|(_, s)| {
            let mut entry = Map::new();
            for (k, v) in keys.iter().zip(&s.values) {
                if !v.is_empty() {
                    entry.insert((*k).into(), Value::String(v.clone()));
                }
            }
            Value::Object(entry)
        })
        .collect();
    json!({ "bulk_verification_id": name, "entries": entries })
}

/// Reads the upload's answer: accepted (a 409 too: the id was taken by an earlier send whose
/// answer was lost), refused as a whole, or the end of the run.
pub fn read_upload(answer: &Answer, label: &str, name: &str) -> Result<Uploaded, CallError> {
    if answer.status.is_success() || answer.status.as_u16() == 409 {
        return Ok(Uploaded::Accepted(name.to_string()));
    }
    if let Some(fatal) = cashfree::fatal(answer, label) {
        return Err(fatal);
    }
    let refused = refusal(answer, Status::Error);
    Ok(Uploaded::Refused(Outcome {
        reason: Some(Reason::batch_refused(refused.reason.as_deref().unwrap_or_default()).into()),
        ..refused
    }))
}

/// Reads a status answer: still running while any entry is in process, else every entry's
/// outcome by its identifier.
pub fn read_status(kind: Kind, answer: &Answer, request_id: &str) -> Result<BatchStep, CallError> {
    if answer.status.as_u16() == 404 {
        return Ok(BatchStep::Lost(format!(
            "cashfree has no bulk request {request_id} (HTTP 404)"
        )));
    }
    if let Some(fatal) = cashfree::fatal(answer, kind.label().1) {
        return Err(fatal);
    }
    if !answer.status.is_success() {
        return Ok(BatchStep::Failed(
            refusal(answer, Status::Error).with_request_id(request_id),
        ));
    }
    let body = answer.json().unwrap_or_default();
    let entries = body
        .get("entries")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if entries.is_empty() {
        return Ok(BatchStep::Running);
    }
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let read = match kind {
            Kind::Bank => bank_entry(entry),
            Kind::Pan => pan_entry(entry),
        };
        match read {
            Entry::InProcess => return Ok(BatchStep::Running),
            Entry::Unmatched => {
                tracing::warn!("a cashfree bulk entry echoes values that match no row; ignored");
            }
            Entry::Done(ident, outcome) => {
                out.push((Match::Ident(ident), outcome.with_request_id(request_id)));
            }
        }
    }
    Ok(BatchStep::Done(out))
}

enum Entry {
    InProcess,
    /// The echoed values do not make an identifier (the provider changed them).
    Unmatched,
    Done(String, Outcome),
}

fn text(entry: &Value, key: &str) -> String {
    entry.get(key).map(value_text).unwrap_or_default()
}

/// A scalar as a cell; anything else is empty.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// The entry's own columns: every field but the values we sent.
fn fields(entry: &Value, sent: &[&str]) -> Vec<(String, String)> {
    entry
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !sent.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), value_text(v)))
                .filter(|(_, v)| !v.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// A name match the provider flags as poor or absent: the account or PAN exists, but a
/// person has to look at whose it is.
fn weak_match(result: &str) -> Option<Reason> {
    match result {
        "POOR_PARTIAL_MATCH" => Some(Reason::POOR_PARTIAL_MATCH),
        "NO_MATCH" => Some(Reason::NO_MATCH),
        _ => None,
    }
}

fn bank_entry(entry: &Value) -> Entry {
    let status = text(entry, "account_status").to_ascii_uppercase();
    if matches!(
        status.as_str(),
        "RECEIVED" | "IN_PROCESS" | "PROCESSING" | "APPROVAL_PENDING" | "PARTIALLY_APPROVED"
    ) {
        return Entry::InProcess;
    }
    let ident = (|| {
        let account = validate::bank_account(&text(entry, "bank_account")).ok()?;
        let ifsc = validate::ifsc(&text(entry, "ifsc")).ok()?;
        let name = name_key(&text(entry, "name")).ok()?;
        let phone = match text(entry, "phone") {
            p if p.is_empty() => p,
            p => validate::mobile(&p).ok()?,
        };
        Some(bank_ident(&account, &ifsc, &name, &phone))
    })();
    let Some(ident) = ident else {
        return Entry::Unmatched;
    };
    let code = text(entry, "account_status_code");
    let reason = |fallback: Reason| {
        if code.is_empty() {
            fallback.into()
        } else {
            Reason::provider(&code)
        }
    };
    let weak = weak_match(&text(entry, "name_match_result").to_ascii_uppercase());
    let outcome = match (status.as_str(), weak) {
        ("VALID", Some(weak)) => Outcome::new(Status::NeedsReview)
            .with_reason(weak)
            .with_message("the account is valid but the name at the bank does not match well"),
        ("VALID", None) => Outcome::new(Status::Verified),
        ("INVALID", _) => Outcome::new(Status::NotVerified).with_reason(reason(Reason::INVALID)),
        ("REJECTED", _) => Outcome::new(Status::NotVerified).with_reason(reason(Reason::REJECTED)),
        ("MANUALLY_REJECTED", _) => {
            Outcome::new(Status::NotVerified).with_reason(reason(Reason::MANUALLY_REJECTED))
        }
        ("CANCELLED", _) => {
            Outcome::new(Status::NotVerified).with_reason(reason(Reason::CANCELLED))
        }
        ("FAILED", _) => Outcome::new(Status::Error)
            .with_reason(reason(Reason::FAILED))
            .with_message(
                "the bank could not be reached for this account; the next run tries again",
            ),
        _ => Outcome::new(Status::Error)
            .with_reason(Reason::UNKNOWN_STATUS)
            .with_message("cashfree answered a status this tool does not know"),
    };
    let sent = ["bank_account", "ifsc", "name", "phone"];
    Entry::Done(
        ident,
        outcome
            .with_provider_status(status)
            .with_fields(fields(entry, &sent)),
    )
}

fn pan_entry(entry: &Value) -> Entry {
    let status = text(entry, "pan_status").to_ascii_uppercase();
    let ident = (|| {
        let pan = validate::pan(&text(entry, "pan")).ok()?;
        let name = name_key(&text(entry, "name_provided")).ok()?;
        Some(format!("{pan}|{name}"))
    })();
    let Some(ident) = ident else {
        return Entry::Unmatched;
    };
    let weak = weak_match(&text(entry, "name_match_result").to_ascii_uppercase());
    let valid = text(entry, "valid");
    let outcome = match (status.as_str(), weak) {
        ("VALID", Some(weak)) => Outcome::new(Status::NeedsReview)
            .with_reason(weak)
            .with_message("the PAN is valid but the registered name does not match well"),
        ("VALID", None) => Outcome::new(Status::Verified),
        ("INVALID", _) => Outcome::new(Status::NotVerified).with_reason(Reason::PAN_INVALID),
        ("DELETED", _) => Outcome::new(Status::NotVerified).with_reason(Reason::PAN_DELETED),
        ("DEACTIVATED", _) => {
            Outcome::new(Status::NotVerified).with_reason(Reason::PAN_DEACTIVATED)
        }
        ("", _) if valid == "false" => {
            Outcome::new(Status::NotVerified).with_reason(Reason::PAN_INVALID)
        }
        ("", _) => return Entry::InProcess,
        _ => Outcome::new(Status::Error)
            .with_reason(Reason::UNKNOWN_STATUS)
            .with_message("cashfree answered a status this tool does not know"),
    };
    let outcome = match text(entry, "message") {
        m if m.is_empty() || outcome.message.is_some() => outcome,
        m => outcome.with_message(m),
    };
    Entry::Done(
        ident,
        outcome
            .with_provider_status(status)
            .with_fields(fields(entry, &["pan", "name_provided", "message"])),
    )
}

#[cfg(test)]
mod tests;
