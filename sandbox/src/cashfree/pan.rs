//! Bulk PAN verification: `POST /pan/bulk` accepts up to 1,000 PANs, `GET /pan/bulk` answers
//! each one's status once the bulk is processed.
//!
//! # PANs: the 4-digit serial (characters 6 to 9)
//!
//! | `pan` | `pan_status` | `valid` | `aadhaar_seeding_status` |
//! |---|---|---|---|
//! | not `AAAAA9999A`, or serial `0000` | `INVALID` ("Invalid PAN format") | false | `NA` |
//! | serial `9001` (e.g. `ABCPE9001F`) | `INVALID` ("PAN does not exist") | false | `NA` |
//! | serial `9002` | `DELETED` | false | `NA` |
//! | serial `9003` | `DEACTIVATED` | false | `NA` |
//! | serial `9004` | `VALID` | true | `N` |
//! | anything else | `VALID`, name match by the name (`names.rs`) | true | `Y` |
//!
//! `type` follows the 4th letter (P Individual, C Company, F Firm, H HUF, …). While a PAN bulk is
//! processed its status is `{"message":"File is being processed. Try again after some time.",
//! "entries":[]}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::super::ids::shuffled;
use super::super::stats::Paid;
use super::super::store::Record;
use super::super::{Shared, clock};
use super::bulk::{Bulk, Bulks, Entry, Progress, find, progress, submit};
use super::names::NameMatch;
use super::{Books, Params};

/// An accepted PAN bulk.
pub(crate) type PanBulk = Bulk<PanEntry>;

/// One PAN bulk entry, as sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PanEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pan: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

impl Entry for PanEntry {
    const PURPOSE: &'static str = "pan bulk";
    const REFERENCE_PARAM: &'static str = "reference_id";
    const PAID_BULK: Paid = Paid::PanBulk;
    const PAID_ENTRY: Paid = Paid::Pan;

    fn missing_field(&self) -> Option<&'static str> {
        self.pan.is_none().then_some("pan")
    }

    fn bulks(books: &Books) -> &Bulks<Self> {
        &books.pan
    }

    fn record(bulk: Bulk<Self>) -> Record {
        Record::PanBulk(bulk)
    }

    fn stats_key(&self) -> String {
        self.pan.clone().unwrap_or_default()
    }
}

#[derive(Serialize)]
struct PanAccepted {
    reference_id: u64,
    message: &'static str,
}

/// `POST /verification/pan/bulk`.
pub(crate) async fn pan_bulk_submit(State(app): State<Shared>, body: Bytes) -> Response {
    match submit::<PanEntry>(&app, &body).await {
        Ok(bulk) => Json(PanAccepted {
            reference_id: bulk.reference_id,
            message: "Request accepted. You can check the status after some time.",
        })
        .into_response(),
        Err(refusal) => refusal,
    }
}

#[derive(Serialize)]
struct PanProcessing {
    message: &'static str,
    entries: [(); 0],
}

#[derive(Serialize)]
struct PanResult<'a> {
    pan: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    reference_id: u64,
    name_provided: &'a str,
    registered_name: String,
    valid: bool,
    message: &'static str,
    name_match_score: &'static str,
    name_match_result: &'static str,
    aadhaar_seeding_status: &'static str,
    pan_status: &'static str,
}

#[derive(Serialize)]
struct PanStatus<'a> {
    reference_id: u64,
    bulk_verification_id: &'a str,
    count: usize,
    entries: Vec<PanResult<'a>>,
}

/// `^[A-Z]{5}[0-9]{4}[A-Z]$` with a serial other than `0000`.
pub(super) fn is_pan(pan: &str) -> bool {
    let b = pan.as_bytes();
    b.len() == 10
        && b[..5].iter().all(u8::is_ascii_uppercase)
        && b[5..9].iter().all(u8::is_ascii_digit)
        && b[9].is_ascii_uppercase()
        && &b[5..9] != b"0000"
}

/// The holder type of a PAN's 4th letter.
fn holder_type(letter: u8) -> &'static str {
    match letter {
        b'P' => "Individual",
        b'C' => "Company",
        b'F' => "Firm",
        b'H' => "HUF",
        b'A' => "Association of Persons",
        b'B' => "Body of Individuals",
        b'G' => "Government",
        b'J' => "Artificial Juridical Person",
        b'L' => "Local Authority",
        b'T' => "Trust",
        b'K' => "Krish",
        _ => "",
    }
}

fn pan_result<'a>(bulk: &Bulk<PanEntry>, index: usize, entry: &'a PanEntry) -> PanResult<'a> {
    let pan = entry.pan.as_deref().unwrap_or_default();
    let name = entry.name.as_deref().unwrap_or_default();
    let mut result = PanResult {
        pan,
        kind: "",
        reference_id: bulk.entry_reference(index),
        name_provided: name,
        registered_name: String::new(),
        valid: false,
        message: "Invalid PAN format",
        name_match_score: "",
        name_match_result: "",
        aadhaar_seeding_status: "NA",
        pan_status: "INVALID",
    };
    let trimmed = pan.trim();
    if !is_pan(trimmed) {
        return result;
    }
    result.kind = holder_type(trimmed.as_bytes()[3]);
    let (status, message, seeding) = match &trimmed[5..9] {
        "9001" => ("INVALID", "PAN does not exist", "NA"),
        "9002" => ("DELETED", "PAN is deleted", "NA"),
        "9003" => ("DEACTIVATED", "PAN is deactivated", "NA"),
        "9004" => ("VALID", "PAN verified successfully", "N"),
        _ => ("VALID", "PAN verified successfully", "Y"),
    };
    result.pan_status = status;
    result.message = message;
    result.aadhaar_seeding_status = seeding;
    if status == "VALID" {
        let matched = NameMatch::of(name);
        result.valid = true;
        result.registered_name = matched.source_name(name);
        result.name_match_score = matched.score();
        result.name_match_result = matched.result();
    }
    result
}

/// `GET /verification/pan/bulk?reference_id=&bulk_verification_id=`.
pub(crate) async fn pan_bulk_status(State(app): State<Shared>, Query(params): Params) -> Response {
    let bulk = match find::<PanEntry>(&app, &params) {
        Ok(bulk) => bulk,
        Err(unfound) => return unfound.response::<PanEntry>(),
    };
    if progress(&app, &bulk, clock::now_ms()) != Progress::Done {
        return Json(PanProcessing {
            message: "File is being processed. Try again after some time.",
            entries: [],
        })
        .into_response();
    }
    let entries = shuffled(bulk.entries.len(), &bulk.bulk_verification_id)
        .into_iter()
        .map(|index| pan_result(&bulk, index, &bulk.entries[index]))
        .collect();
    Json(PanStatus {
        reference_id: bulk.reference_id,
        bulk_verification_id: &bulk.bulk_verification_id,
        count: bulk.entries.len(),
        entries,
    })
    .into_response()
}
