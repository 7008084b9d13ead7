//! What the bank-account and PAN bulks share: a bulk is accepted whole, journaled before it is
//! answered, found by its reference or its id, and processed after a delay.
//!
//! A bulk holds 1 to 1,000 entries; a repeated `bulk_verification_id` is 409
//! `bulk_verification_id_already_exists`; an unknown id or reference is 404
//! `<parameter>_value_invalid`. A `bulk_verification_id` with a refusing DigiLocker prefix
//! (`failed`, `nobalance`, `ipblocked`, see `digilocker.rs`) is refused as a DigiLocker call is.
//! Processing takes `--batch-delay-ms` plus `--batch-ms-per-row` per entry.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::super::stats::Paid;
use super::super::store::Record;
use super::super::{Shared, clock, lock};
use super::digilocker::Marker;
use super::{
    Books, body_invalid, error, free_reference, internal_error, invalid, is_client_id, missing,
};

/// The most entries one bulk may hold.
const MAX_ENTRIES: usize = 1000;

/// One accepted bulk of either kind, as journaled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Bulk<E> {
    pub(super) reference_id: u64,
    pub(super) bulk_verification_id: String,
    created_ms: u64,
    ready_ms: u64,
    pub(super) entries: Vec<E>,
}

impl<E> Bulk<E> {
    /// Each entry's own `reference_id`: unique, as bulks hold at most [`MAX_ENTRIES`].
    pub(super) fn entry_reference(&self, index: usize) -> u64 {
        self.reference_id * 10_000 + index as u64 + 1
    }
}

/// The accepted bulks of one kind, by id and by reference.
#[derive(Debug)]
pub(super) struct Bulks<E> {
    by_id: HashMap<String, Arc<Bulk<E>>>,
    by_reference: HashMap<u64, String>,
}

impl<E> Default for Bulks<E> {
    fn default() -> Self {
        Bulks {
            by_id: HashMap::new(),
            by_reference: HashMap::new(),
        }
    }
}

impl<E> Bulks<E> {
    pub(super) fn insert(&mut self, bulk: Bulk<E>) {
        self.by_reference
            .insert(bulk.reference_id, bulk.bulk_verification_id.clone());
        self.by_id
            .insert(bulk.bulk_verification_id.clone(), Arc::new(bulk));
    }

    /// The bulk both given keys name; a key that names none, or another bulk, finds nothing.
    fn find(&self, reference: Option<u64>, id: Option<&str>) -> Option<Arc<Bulk<E>>> {
        let by_reference = reference.map(|r| self.by_reference.get(&r).map(String::as_str));
        let id = match (by_reference, id) {
            (Some(found), Some(id)) => found.filter(|found| *found == id)?,
            (Some(found), None) => found?,
            (None, Some(id)) => id,
            (None, None) => return None,
        };
        self.by_id.get(id).cloned()
    }
}

/// What differs between the bank and the PAN bulks.
pub(super) trait Entry: Clone + Serialize + DeserializeOwned {
    /// Names the derived bulk references, so the two kinds draw apart.
    const PURPOSE: &'static str;
    /// The query parameter that carries the bulk's reference in a status call.
    const REFERENCE_PARAM: &'static str;
    const PAID_BULK: Paid;
    const PAID_ENTRY: Paid;
    /// A required field the entry lacks.
    fn missing_field(&self) -> Option<&'static str>;
    fn bulks(books: &Books) -> &Bulks<Self>;
    fn record(bulk: Bulk<Self>) -> Record;
    /// The identifier the entry's paid check is counted under.
    fn stats_key(&self) -> String;
}

#[derive(Deserialize)]
struct BulkBody<E> {
    bulk_verification_id: Option<String>,
    entries: Option<Vec<E>>,
}

/// Validates and accepts a bulk, persisted before it is answered; the refusal otherwise.
pub(super) async fn submit<E: Entry>(app: &Shared, body: &[u8]) -> Result<Bulk<E>, Response> {
    let body: BulkBody<E> = serde_json::from_slice(body).map_err(|_| body_invalid())?;
    let id = body
        .bulk_verification_id
        .ok_or_else(|| missing("bulk_verification_id"))?;
    if !is_client_id(&id) {
        return Err(invalid(
            StatusCode::BAD_REQUEST,
            "bulk_verification_id",
            "bulk_verification_id must be 1 to 50 letters, digits, '.', '-' or '_'",
        ));
    }
    let entries = body.entries.ok_or_else(|| missing("entries"))?;
    if !(1..=MAX_ENTRIES).contains(&entries.len()) {
        return Err(invalid(
            StatusCode::BAD_REQUEST,
            "entries",
            &format!("entries must hold 1 to {MAX_ENTRIES} items"),
        ));
    }
    let lacking = entries
        .iter()
        .enumerate()
        .find_map(|(index, entry)| entry.missing_field().map(|field| (index, field)));
    if let Some((index, field)) = lacking {
        return Err(invalid(
            StatusCode::BAD_REQUEST,
            "entries",
            &format!("entries[{index}].{field} is missing"),
        ));
    }
    if let Some(refusal) = Marker::of(&id).refusal() {
        return Err(refusal);
    }
    let created_ms = clock::now_ms();
    let rows = entries.len() as u64;
    let ready_ms = created_ms
        .saturating_add(app.config.batch_delay_ms)
        .saturating_add(rows.saturating_mul(app.config.batch_ms_per_row));
    let accepted = app
        .store
        .update(|jobs| {
            let bulks = E::bulks(&jobs.cashfree);
            if bulks.by_id.contains_key(&id) {
                return (None, None);
            }
            let derived = app.ids.reference(E::PURPOSE, &id, 1000, 100_000_000);
            let bulk = Bulk {
                reference_id: free_reference(&bulks.by_reference, derived),
                bulk_verification_id: id.clone(),
                created_ms,
                ready_ms,
                entries,
            };
            (Some(E::record(bulk.clone())), Some(bulk))
        })
        .await;
    let bulk = match accepted {
        Ok(Some(bulk)) => bulk,
        Ok(None) => {
            return Err(error(
                StatusCode::CONFLICT,
                "validation_error",
                "bulk_verification_id_already_exists",
                "bulk_verification_id already exists",
            ));
        }
        Err(error) => return Err(internal_error(&error)),
    };
    let mut stats = lock(&app.stats);
    stats.paid(E::PAID_BULK, &id);
    for entry in &bulk.entries {
        stats.paid(E::PAID_ENTRY, &entry.stats_key());
    }
    Ok(bulk)
}

/// Why a status call found no bulk.
pub(super) enum Unfound {
    /// Neither the reference nor the id was given.
    Unnamed,
    /// The reference is not an integer.
    BadReference,
    /// No bulk has this parameter's value (or both values name different bulks).
    Unknown(&'static str),
}

impl Unfound {
    pub(super) fn response<E: Entry>(self) -> Response {
        let reference_param = E::REFERENCE_PARAM;
        match self {
            Unfound::Unnamed => missing(reference_param),
            Unfound::BadReference => invalid(
                StatusCode::BAD_REQUEST,
                reference_param,
                &format!("{reference_param} must be an integer"),
            ),
            Unfound::Unknown(field) => invalid(
                StatusCode::NOT_FOUND,
                field,
                &format!("{field} does not exist"),
            ),
        }
    }
}

/// The bulk a status call names by reference, by id or by both.
pub(super) fn find<E: Entry>(
    app: &Shared,
    params: &HashMap<String, String>,
) -> Result<Arc<Bulk<E>>, Unfound> {
    let reference = params.get(E::REFERENCE_PARAM).map(|text| text.trim());
    let id = params.get("bulk_verification_id").map(String::as_str);
    if reference.is_none() && id.is_none() {
        return Err(Unfound::Unnamed);
    }
    let reference = match reference {
        Some(text) => Some(text.parse::<u64>().map_err(|_| Unfound::BadReference)?),
        None => None,
    };
    let found = app
        .store
        .read(|jobs| E::bulks(&jobs.cashfree).find(reference, id));
    found.ok_or(Unfound::Unknown(if reference.is_some() {
        E::REFERENCE_PARAM
    } else {
        "bulk_verification_id"
    }))
}

/// Where a bulk is in its processing at `now_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    Received,
    InProcess,
    Done,
}

pub(super) fn progress<E>(app: &Shared, bulk: &Bulk<E>, now_ms: u64) -> Progress {
    if app.is_ready(&bulk.bulk_verification_id, bulk.ready_ms, now_ms) {
        Progress::Done
    } else if now_ms < bulk.created_ms + (bulk.ready_ms.saturating_sub(bulk.created_ms)) / 2 {
        Progress::Received
    } else {
        Progress::InProcess
    }
}
