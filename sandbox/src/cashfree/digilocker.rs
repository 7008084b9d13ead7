//! DigiLocker: `POST /digilocker` starts a verification and hands out its consent URL,
//! `GET /digilocker` answers its status by `verification_id` or `reference_id`.
//!
//! # DigiLocker: `verification_id` prefix (any case)
//!
//! | `verification_id` starts with | `GET /digilocker` answers |
//! |---|---|
//! | `pending` | 200 `PENDING`, `user_details` `{}`, `document_consent` `[]` |
//! | `expired` | 200 `EXPIRED`, `user_details` `{}`, `document_consent` `[]` |
//! | `denied` | 200 `CONSENT_DENIED`, `user_details` `{}`, `document_consent` `[]` |
//! | `notfound` | 404 `not_found_error` / `verification_id_value_invalid` |
//! | `failed` | 500 `internal_error` / `verification_failed` (create and bulk submit too) |
//! | `nobalance` | 422 `validation_error` / `insufficient_balance` (create and bulk submit too) |
//! | `ipblocked` | 403 `authentication_error` / `ip_validation_failed` (create and bulk submit too) |
//! | anything else | 200 `AUTHENTICATED`, synthetic `user_details` derived from the id |
//!
//! The same prefixes apply to a bulk's `bulk_verification_id` for the last three rows. A
//! `reference_id` is known once its verification was created or looked up by `verification_id`;
//! an unknown one is 404 `reference_id_value_invalid`. A second create of one id is 409
//! `verification_id_already_exists`.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::super::ids::Ids;
use super::super::stats::Paid;
use super::super::store::Record;
use super::super::{Shared, lock};
use super::{
    Params, body_invalid, error, free_reference, internal_error, invalid, is_client_id, missing,
};

/// What a client-chosen id scripts, by its prefix in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Marker {
    Authenticated,
    Pending,
    Expired,
    Denied,
    NotFound,
    Fails,
    NoBalance,
    IpBlocked,
}

impl Marker {
    pub(super) fn of(id: &str) -> Marker {
        let lower = id.to_ascii_lowercase();
        [
            ("pending", Marker::Pending),
            ("expired", Marker::Expired),
            ("denied", Marker::Denied),
            ("notfound", Marker::NotFound),
            ("failed", Marker::Fails),
            ("nobalance", Marker::NoBalance),
            ("ipblocked", Marker::IpBlocked),
        ]
        .into_iter()
        .find_map(|(prefix, marker)| lower.starts_with(prefix).then_some(marker))
        .unwrap_or(Marker::Authenticated)
    }

    /// The scripted refusal, for the markers that refuse every call.
    pub(super) fn refusal(self) -> Option<Response> {
        let (status, kind, code, message) = match self {
            Marker::Fails => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "verification_failed",
                "Verification failed at source. Please retry after some time.",
            ),
            Marker::NoBalance => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_error",
                "insufficient_balance",
                "Insufficient balance to process this request",
            ),
            Marker::IpBlocked => (
                StatusCode::FORBIDDEN,
                "authentication_error",
                "ip_validation_failed",
                "IP not whitelisted",
            ),
            _ => return None,
        };
        Some(error(status, kind, code, message))
    }
}

/// A DigiLocker verification the sandbox has handed a `reference_id`: created, or looked up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Digilocker {
    verification_id: String,
    reference_id: u64,
    document_requested: Vec<String>,
    /// Created by `POST /digilocker`, so a second create is refused; a lookup alone does not.
    created: bool,
}

/// The verifications handed a `reference_id`, by id and by reference.
#[derive(Debug, Default)]
pub(super) struct Verifications {
    by_id: HashMap<String, Digilocker>,
    by_reference: HashMap<u64, String>,
}

impl Verifications {
    pub(super) fn insert(&mut self, record: Digilocker) {
        self.by_reference
            .insert(record.reference_id, record.verification_id.clone());
        self.by_id.insert(record.verification_id.clone(), record);
    }
}

const DOCUMENTS: [&str; 3] = ["AADHAAR", "PAN", "DRIVING_LICENSE"];

#[derive(Deserialize)]
struct CreateBody {
    verification_id: Option<String>,
    document_requested: Option<Vec<String>>,
    redirect_url: Option<String>,
}

#[derive(Serialize)]
struct Created {
    verification_id: String,
    reference_id: u64,
    url: String,
    status: &'static str,
    document_requested: Vec<String>,
    redirect_url: Option<String>,
}

/// `POST /verification/digilocker`: a consent URL for the user; the status follows the id.
pub(crate) async fn digilocker_create(State(app): State<Shared>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<CreateBody>(&body) else {
        return body_invalid();
    };
    let Some(verification_id) = body.verification_id else {
        return missing("verification_id");
    };
    if !is_client_id(&verification_id) {
        return invalid(
            StatusCode::BAD_REQUEST,
            "verification_id",
            "verification_id must be 1 to 50 letters, digits, '.', '-' or '_'",
        );
    }
    let documents = body.document_requested.unwrap_or_default();
    if documents.is_empty() {
        return missing("document_requested");
    }
    if !documents.iter().all(|d| DOCUMENTS.contains(&d.as_str())) {
        return invalid(
            StatusCode::BAD_REQUEST,
            "document_requested",
            "document_requested may hold AADHAAR, PAN and DRIVING_LICENSE",
        );
    }
    if let Some(refusal) = Marker::of(&verification_id).refusal() {
        return refusal;
    }
    let created = app
        .store
        .update(|jobs| {
            let verifications = &jobs.cashfree.digilocker;
            let known = verifications.by_id.get(&verification_id);
            if known.is_some_and(|known| known.created) {
                return (None, None);
            }
            let reference_id = known.map_or_else(
                || digilocker_reference(&app.ids, verifications, &verification_id),
                |known| known.reference_id,
            );
            let record = Digilocker {
                verification_id: verification_id.clone(),
                reference_id,
                document_requested: documents.clone(),
                created: true,
            };
            (Some(Record::Digilocker(record.clone())), Some(record))
        })
        .await;
    let record = match created {
        Ok(Some(record)) => record,
        Ok(None) => {
            return error(
                StatusCode::CONFLICT,
                "validation_error",
                "verification_id_already_exists",
                "verification_id already exists",
            );
        }
        Err(error) => return internal_error(&error),
    };
    lock(&app.stats).paid(Paid::DigilockerCreated, &verification_id);
    Json(Created {
        url: format!(
            "{}/digilocker/consent?reference_id={}",
            app.base_url, record.reference_id
        ),
        verification_id: record.verification_id,
        reference_id: record.reference_id,
        status: "PENDING",
        document_requested: record.document_requested,
        redirect_url: body.redirect_url,
    })
    .into_response()
}

fn digilocker_reference(ids: &Ids, verifications: &Verifications, verification_id: &str) -> u64 {
    let derived = ids.reference("digilocker", verification_id, 10_000, 100_000_000);
    free_reference(&verifications.by_reference, derived)
}

/// The user's details: the document's holder when consent was given, none otherwise.
#[derive(Serialize)]
#[serde(untagged)]
enum UserDetails {
    Known {
        name: String,
        dob: String,
        gender: &'static str,
        eaadhaar: &'static str,
        mobile: String,
    },
    None {},
}

#[derive(Serialize)]
struct DigilockerStatus {
    user_details: UserDetails,
    status: &'static str,
    document_requested: Vec<String>,
    document_consent: Vec<String>,
    verification_id: String,
    reference_id: u64,
}

/// Holders for synthetic user details, with their gender.
const HOLDERS: [(&str, &str); 8] = [
    ("Ravi Kumar", "M"),
    ("Priya Sharma", "F"),
    ("Anil Mehta", "M"),
    ("Sunita Rao", "F"),
    ("Arjun Nair", "M"),
    ("Meera Iyer", "F"),
    ("Vikram Singh", "M"),
    ("Kavya Reddy", "F"),
];

fn user_details(ids: &Ids, verification_id: &str) -> UserDetails {
    let n = ids.reference("digilocker user", verification_id, 0, u64::MAX);
    let (name, gender) = HOLDERS[(n % 8) as usize];
    let day = 1 + (n / 8) % 28;
    let month = 1 + (n / 224) % 12;
    let year = 1960 + (n / 2688) % 45;
    UserDetails::Known {
        name: name.to_owned(),
        dob: format!("{day:02}-{month:02}-{year}"),
        gender,
        eaadhaar: "Y",
        mobile: format!("9{:09}", (n / 120_960) % 1_000_000_000),
    }
}

/// `GET /verification/digilocker?verification_id=|reference_id=`.
pub(crate) async fn digilocker_status(
    State(app): State<Shared>,
    Query(params): Params,
) -> Response {
    let verification_id = match (params.get("verification_id"), params.get("reference_id")) {
        (Some(id), _) => id.clone(),
        (None, Some(reference)) => {
            let Ok(reference) = reference.trim().parse::<u64>() else {
                return invalid(
                    StatusCode::BAD_REQUEST,
                    "reference_id",
                    "reference_id must be an integer",
                );
            };
            let known = app.store.read(|jobs| {
                jobs.cashfree
                    .digilocker
                    .by_reference
                    .get(&reference)
                    .cloned()
            });
            let Some(id) = known else {
                return invalid(
                    StatusCode::NOT_FOUND,
                    "reference_id",
                    "reference_id does not exist",
                );
            };
            id
        }
        (None, None) => return missing("verification_id"),
    };
    if !is_client_id(&verification_id) {
        return invalid(
            StatusCode::BAD_REQUEST,
            "verification_id",
            "verification_id must be 1 to 50 letters, digits, '.', '-' or '_'",
        );
    }
    let marker = Marker::of(&verification_id);
    if let Some(refusal) = marker.refusal() {
        return refusal;
    }
    if marker == Marker::NotFound {
        return invalid(
            StatusCode::NOT_FOUND,
            "verification_id",
            "verification_id does not exist",
        );
    }
    let known = app
        .store
        .update(|jobs| {
            if let Some(known) = jobs.cashfree.digilocker.by_id.get(&verification_id) {
                return (None, known.clone());
            }
            let record = Digilocker {
                verification_id: verification_id.clone(),
                reference_id: digilocker_reference(
                    &app.ids,
                    &jobs.cashfree.digilocker,
                    &verification_id,
                ),
                document_requested: vec!["AADHAAR".to_owned()],
                created: false,
            };
            (Some(Record::Digilocker(record.clone())), record)
        })
        .await;
    let known = match known {
        Ok(known) => known,
        Err(error) => return internal_error(&error),
    };
    let (status, user_details, consent) = match marker {
        Marker::Pending => ("PENDING", UserDetails::None {}, Vec::new()),
        Marker::Expired => ("EXPIRED", UserDetails::None {}, Vec::new()),
        Marker::Denied => ("CONSENT_DENIED", UserDetails::None {}, Vec::new()),
        _ => (
            "AUTHENTICATED",
            user_details(&app.ids, &verification_id),
            known.document_requested.clone(),
        ),
    };
    lock(&app.stats).paid(Paid::DigilockerLookup, &verification_id);
    Json(DigilockerStatus {
        user_details,
        status,
        document_requested: known.document_requested,
        document_consent: consent,
        verification_id: known.verification_id,
        reference_id: known.reference_id,
    })
    .into_response()
}
