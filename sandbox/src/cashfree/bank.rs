//! Bulk bank-account verification: `POST /bank-account/bulk` accepts up to 1,000 accounts,
//! `GET /bank-account/bulk` answers each one's status once the bulk is processed.
//!
//! # Bank accounts: per bulk entry, the first row that matches
//!
//! | entry | `account_status` / `account_status_code` |
//! |---|---|
//! | `ifsc` not `AAAA0XXXXXX`, or its branch part is `000000` (e.g. `HDFC0000000`) | `INVALID` / `INVALID_IFSC_FAIL` |
//! | `bank_account` not 6 to 40 letters or digits | `INVALID` / `INVALID_ACCOUNT_FAIL` |
//! | `bank_account` ends `0000` | `INVALID` / `INVALID_ACCOUNT_FAIL` |
//! | `bank_account` ends `1111` | `INVALID` / `ACCOUNT_BLOCKED` |
//! | `bank_account` ends `2222` | `FAILED` / `IMPS_MODE_FAIL` |
//! | `bank_account` ends `3333` | `REJECTED` / `NRE_ACCOUNT_FAIL` |
//! | `bank_account` ends `9999` | `IN_PROCESS` for ever |
//! | anything else | `VALID` / `ACCOUNT_IS_VALID`, name match by the name (`names.rs`) |
//!
//! Until the bulk is processed (`--batch-delay-ms` plus `--batch-ms-per-row` per entry) every
//! entry is `RECEIVED` (first half of that time) then `IN_PROCESS`, with an empty
//! `account_status_code`. Entries come back in a shuffled order, never the input order.
//!
//! A bank entry without a name has empty match fields and `SANDBOX ACCOUNT HOLDER` at the bank.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::super::ids::{Ids, shuffled};
use super::super::stats::Paid;
use super::super::store::Record;
use super::super::{Shared, clock};
use super::bulk::{Bulk, Bulks, Entry, Progress, find, progress, submit};
use super::names::{NO_NAME, NameMatch};
use super::{Books, Params};

/// An accepted bank-account bulk.
pub(crate) type BankBulk = Bulk<BankEntry>;

/// One bank bulk entry, echoed back exactly as sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BankEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    bank_account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ifsc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone: Option<String>,
}

impl Entry for BankEntry {
    const PURPOSE: &'static str = "bank bulk";
    const REFERENCE_PARAM: &'static str = "bulk_reference_id";
    const PAID_BULK: Paid = Paid::BankBulk;
    const PAID_ENTRY: Paid = Paid::BankAccount;

    fn missing_field(&self) -> Option<&'static str> {
        if self.bank_account.is_none() {
            Some("bank_account")
        } else if self.ifsc.is_none() {
            Some("ifsc")
        } else {
            None
        }
    }

    fn bulks(books: &Books) -> &Bulks<Self> {
        &books.bank
    }

    fn record(bulk: Bulk<Self>) -> Record {
        Record::BankBulk(bulk)
    }

    fn stats_key(&self) -> String {
        format!(
            "{}:{}",
            self.bank_account.as_deref().unwrap_or_default(),
            self.ifsc.as_deref().unwrap_or_default()
        )
    }
}

#[derive(Serialize)]
struct BankAccepted {
    bulk_reference_id: u64,
    bulk_verification_id: String,
    status: &'static str,
}

/// `POST /verification/bank-account/bulk`.
pub(crate) async fn bank_bulk_submit(State(app): State<Shared>, body: Bytes) -> Response {
    match submit::<BankEntry>(&app, &body).await {
        Ok(bulk) => Json(BankAccepted {
            bulk_reference_id: bulk.reference_id,
            bulk_verification_id: bulk.bulk_verification_id,
            status: "RECEIVED",
        })
        .into_response(),
        Err(refusal) => refusal,
    }
}

#[derive(Serialize)]
struct BankResult<'a> {
    #[serde(flatten)]
    entry: &'a BankEntry,
    reference_id: u64,
    name_at_bank: String,
    bank_name: String,
    utr: String,
    city: String,
    branch: String,
    micr: Option<u64>,
    name_match_score: &'static str,
    name_match_result: &'static str,
    account_status: &'static str,
    account_status_code: &'static str,
}

#[derive(Serialize)]
struct BankStatus<'a> {
    bulk_reference_id: u64,
    bulk_verification_id: &'a str,
    entries: Vec<BankResult<'a>>,
}

/// `AAAA0XXXXXX`: four letters, a zero, six letters or digits.
pub(super) fn is_ifsc(ifsc: &str) -> bool {
    let b = ifsc.as_bytes();
    b.len() == 11
        && b[..4].iter().all(u8::is_ascii_uppercase)
        && b[4] == b'0'
        && b[5..].iter().all(u8::is_ascii_alphanumeric)
}

/// A few real banks by IFSC prefix, so results read plausibly.
const BANKS: [(&str, &str); 6] = [
    ("SBIN", "STATE BANK OF INDIA"),
    ("HDFC", "HDFC BANK"),
    ("ICIC", "ICICI BANK"),
    ("UTIB", "AXIS BANK"),
    ("PUNB", "PUNJAB NATIONAL BANK"),
    ("KKBK", "KOTAK MAHINDRA BANK"),
];

const CITIES: [&str; 6] = [
    "MUMBAI",
    "NEW DELHI",
    "BENGALURU",
    "CHENNAI",
    "KOLKATA",
    "PUNE",
];

/// An account's final `account_status` and `account_status_code`; `None` for one that is
/// never processed.
pub(super) fn account_outcome(ifsc: &str, account: &str) -> Option<(&'static str, &'static str)> {
    if !is_ifsc(ifsc) || ifsc.ends_with("000000") {
        return Some(("INVALID", "INVALID_IFSC_FAIL"));
    }
    if !(6..=40).contains(&account.len()) || !account.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Some(("INVALID", "INVALID_ACCOUNT_FAIL"));
    }
    let ending = account.get(account.len() - 4..).unwrap_or_default();
    Some(match ending {
        "0000" => ("INVALID", "INVALID_ACCOUNT_FAIL"),
        "1111" => ("INVALID", "ACCOUNT_BLOCKED"),
        "2222" => ("FAILED", "IMPS_MODE_FAIL"),
        "3333" => ("REJECTED", "NRE_ACCOUNT_FAIL"),
        "9999" => return None,
        _ => ("VALID", "ACCOUNT_IS_VALID"),
    })
}

fn bank_result<'a>(
    ids: &Ids,
    bulk: &Bulk<BankEntry>,
    index: usize,
    entry: &'a BankEntry,
    progress: Progress,
) -> BankResult<'a> {
    let reference_id = bulk.entry_reference(index);
    let ifsc = entry.ifsc.as_deref().unwrap_or_default().trim();
    let account = entry.bank_account.as_deref().unwrap_or_default().trim();
    let mut result = BankResult {
        entry,
        reference_id,
        name_at_bank: String::new(),
        bank_name: String::new(),
        utr: String::new(),
        city: String::new(),
        branch: String::new(),
        micr: None,
        name_match_score: "",
        name_match_result: "",
        account_status: if progress == Progress::Received {
            "RECEIVED"
        } else {
            "IN_PROCESS"
        },
        account_status_code: "",
    };
    let outcome = account_outcome(ifsc, account);
    let Some((status, code)) = outcome.filter(|_| progress == Progress::Done) else {
        return result;
    };
    result.account_status = status;
    result.account_status_code = code;
    if code == "INVALID_IFSC_FAIL" {
        return result;
    }
    let prefix = ifsc.get(..4).unwrap_or_default();
    result.bank_name = BANKS
        .iter()
        .find(|(code, _)| *code == prefix)
        .map_or_else(|| format!("{prefix} BANK"), |(_, name)| (*name).to_owned());
    let city = CITIES[(ids.reference("city", ifsc, 0, CITIES.len() as u64)) as usize];
    result.city = city.to_owned();
    result.branch = format!("{city} MAIN BRANCH");
    result.micr = Some(ids.reference("micr", ifsc, 100_000_000, 1_000_000_000));
    if status != "VALID" {
        return result;
    }
    result.utr = ids
        .reference(
            "utr",
            &reference_id.to_string(),
            100_000_000_000,
            1_000_000_000_000,
        )
        .to_string();
    match &entry.name {
        Some(name) => {
            let matched = NameMatch::of(name);
            result.name_at_bank = matched.source_name(name);
            result.name_match_score = matched.score();
            result.name_match_result = matched.result();
        }
        None => result.name_at_bank = NO_NAME.to_owned(),
    }
    result
}

/// `GET /verification/bank-account/bulk?bulk_reference_id=|bulk_verification_id=`.
pub(crate) async fn bank_bulk_status(State(app): State<Shared>, Query(params): Params) -> Response {
    let bulk = match find::<BankEntry>(&app, &params) {
        Ok(bulk) => bulk,
        Err(unfound) => return unfound.response::<BankEntry>(),
    };
    let progress = progress(&app, &bulk, clock::now_ms());
    let entries = shuffled(bulk.entries.len(), &bulk.bulk_verification_id)
        .into_iter()
        .map(|index| bank_result(&app.ids, &bulk, index, &bulk.entries[index], progress))
        .collect();
    Json(BankStatus {
        bulk_reference_id: bulk.reference_id,
        bulk_verification_id: &bulk.bulk_verification_id,
        entries,
    })
    .into_response()
}
