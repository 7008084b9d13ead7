//! What the journal gives the account's results store and takes from it: the first-seen rows
//! still to be sent, by their identifiers' hashes, and the final answers this job obtained.
//! A row given an earlier job's answer is done without a call and says so (`reused`).

use rusqlite::params;

use super::fields::{self, FieldNames};
use super::kept::{self, KeptOutcome};
use super::reader::{Batches, batches_give, checked_at_sql, request_id_sql};
use super::{Journal, JournalError, RowState, sql_error};
use crate::outcome::{Outcome, RowKey, Status};

/// The outcomes a later job may take instead of a call: the provider's final word. `pending`
/// and `error` say nothing lasting about the identifier.
pub const REUSABLE: [Status; 3] = [Status::Verified, Status::NotVerified, Status::NeedsReview];

/// An answer the job obtained, or one it takes from an earlier job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub key: RowKey,
    /// The hash of the row's identifier ([`super::ident_hash`]).
    pub ident: [u8; 16],
    pub outcome: Outcome,
    /// When the provider gave it (`bv_checked_at`).
    pub checked_at: String,
}

/// A final answer the job obtained, as the results store takes it: its fields, not in its
/// outcome, as the JSON array of their values by the store's numbers
/// ([`fields::values_by_number`]), mostly the row's own array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obtained {
    pub answer: Answer,
    pub values: String,
}

/// Rows of either side handed over per page.
pub const PAGE: usize = 10_000;

impl Journal {
    /// The hash scope of a job whose identifiers the results store can look up: the check's
    /// name and the store's key, kept with the state when the state is made, with the store's
    /// name. Returns the scope and whether the rows are hashed under `store`'s key; a state
    /// made before, or with another store, keeps its own key ([`Journal::ident_scope`]).
    pub fn ident_scope_for(
        &self,
        check: &str,
        store: Option<(&str, &str)>,
    ) -> Result<(String, bool), JournalError> {
        if let (Some((id, key)), None) = (store, self.meta("ident_key")?) {
            let rows: i64 = self
                .conn
                .query_row("SELECT count(*) FROM rows", [], |r| r.get(0))
                .map_err(|e| self.sql(e))?;
            if rows == 0 {
                self.set_meta("ident_key", key)?;
                self.set_meta("ident_store", id)?;
            }
        }
        let scope = self.ident_scope(check)?;
        let shared = match (store, self.meta("ident_store")?) {
            (Some((id, _)), Some(found)) => found == id,
            _ => false,
        };
        Ok((scope, shared))
    }

    /// Up to [`PAGE`] rows above `after` that are planned and not yet sent, with their
    /// identifiers' hashes, in key order, fewer only at the end. A row whose outcome its batch
    /// keeps ([`kept`]) was sent.
    pub fn unsent_idents(
        &self,
        after: Option<RowKey>,
    ) -> Result<Vec<(RowKey, [u8; 16])>, JournalError> {
        let sql = sql_error(&self.dir);
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT row_key, ident FROM rows
                 WHERE row_key > ?1 AND state = ?2 AND ident IS NOT NULL
                 ORDER BY row_key LIMIT ?3",
            )
            .map_err(sql)?;
        let mut after = after.map_or(-1, |k| k.0 as i64);
        let mut out = Vec::new();
        loop {
            let limit = PAGE - out.len();
            let page: Vec<(RowKey, [u8; 16])> = st
                .query_map(params![after, RowState::Planned, limit as i64], |r| {
                    let ident: Vec<u8> = r.get(1)?;
                    Ok((RowKey(r.get::<_, i64>(0)? as u64), hash_of(&ident)))
                })
                .and_then(Iterator::collect)
                .map_err(sql)?;
            let (Some(first), Some(last)) = (page.first(), page.last()) else {
                return Ok(out);
            };
            let kept = kept::kept_in(&self.conn, first.0, last.0).map_err(sql)?;
            after = last.0.0 as i64;
            let read = page.len();
            out.extend(page.into_iter().filter(|(k, _)| !kept.contains_key(k)));
            if read < limit || out.len() >= PAGE {
                return Ok(out);
            }
        }
    }

    /// Gives planned rows earlier jobs' answers, in one transaction: each is done, with the
    /// answer's outcome and time, and marked reused. A row no longer planned is left alone.
    /// Returns the rows that took one.
    pub fn reuse(&mut self, answers: &[Answer]) -> Result<u64, JournalError> {
        let sql = sql_error(&self.dir);
        Journal::output_stale(&self.conn).map_err(sql)?;
        let mut names = FieldNames::load(&self.conn).map_err(sql)?;
        let tx = self.conn.transaction().map_err(sql)?;
        let mut reused = 0;
        for a in answers {
            let fields = if a.outcome.fields.is_empty() {
                None
            } else {
                Some(names.encode(&tx, a.key, &a.outcome.fields).map_err(sql)?)
            };
            let o = &a.outcome;
            reused += tx
                .prepare_cached(
                    "UPDATE rows SET state = ?2, status = ?3, reason = ?4, message = ?5,
                            provider_status = ?6, request_id = ?7, checked_at = ?8, fields = ?9,
                            reused = 1
                     WHERE row_key = ?1 AND state = ?10",
                )
                .map_err(sql)?
                .execute(params![
                    a.key.0 as i64,
                    RowState::Done,
                    o.status.as_str(),
                    o.reason,
                    o.message,
                    o.provider_status,
                    o.request_id,
                    a.checked_at,
                    fields,
                    RowState::Planned,
                ])
                .map_err(sql)? as u64;
        }
        tx.commit().map_err(sql)?;
        Ok(reused)
    }

    /// The names of the fields by the journal's numbers, or in a journal of format 1 as
    /// [`Journal::field_names`]: numbered in this order, a new scope of the results store
    /// numbers them as the journal does, and [`Journal::obtained_answers`] hands it each row's
    /// array as it is.
    pub fn field_numbers(&self) -> Result<Vec<String>, JournalError> {
        if fields::numbered(self.meta("format")?.as_deref()) {
            fields::numbered_names(&self.conn).map_err(|e| self.sql(e))
        } else {
            self.field_names()
        }
    }

    /// About [`PAGE`] final answers above `after` that this job obtained itself (not reused,
    /// not a duplicate's copy), in key order, fewer only at the end: what the results store
    /// keeps for later jobs, their fields by the numbers of `numbers`. Read a page of rows at
    /// a time, with the outcomes their batches keep ([`kept`]).
    pub fn obtained_answers(
        &self,
        after: Option<RowKey>,
        numbers: &[String],
    ) -> Result<Vec<Obtained>, JournalError> {
        let sql = sql_error(&self.dir);
        let numbered = fields::numbered(self.meta("format")?.as_deref());
        let names = fields::numbered_names(&self.conn).map_err(sql)?;
        let renumber = fields::Renumber::new(numbered, names, numbers);
        let batches = batches_give(&self.conn).map_err(sql)?;
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT r.row_key, r.ident, r.state, r.status, r.reason, r.message,
                        r.provider_status, {}, {}, r.fields, coalesce(r.reused, 0)
                 FROM rows r LEFT JOIN batches b ON b.batch_id = r.batch_id
                 WHERE r.row_key > ?1 ORDER BY r.row_key LIMIT ?2",
                request_id_sql("r", "b"),
                checked_at_sql("r", "b"),
            ))
            .map_err(sql)?;
        let mut out = Vec::new();
        let mut after = after.map_or(-1, |k| k.0 as i64);
        loop {
            let page: Vec<(RowKey, Option<Vec<u8>>, Option<WithFields>)> = st
                .query_map(params![after, PAGE as i64], |r| {
                    let key = RowKey(r.get::<_, i64>(0)? as u64);
                    let ident: Option<Vec<u8>> = r.get(1)?;
                    let state: RowState = r.get(2)?;
                    let status: Option<String> = r.get(3)?;
                    let status = status.as_deref().and_then(Status::parse);
                    let checked_at: Option<String> = r.get(8)?;
                    let own = match (status, checked_at) {
                        (Some(status), Some(checked_at))
                            if state == RowState::Done
                                && REUSABLE.contains(&status)
                                && r.get::<_, i64>(10)? == 0 =>
                        {
                            let answer = Answer {
                                key,
                                ident: [0; 16],
                                outcome: Outcome {
                                    status,
                                    reason: r.get(4)?,
                                    message: r.get(5)?,
                                    provider_status: r.get(6)?,
                                    request_id: r.get(7)?,
                                    fields: Vec::new(),
                                },
                                checked_at,
                            };
                            Some((answer, r.get(9)?))
                        }
                        _ => None,
                    };
                    Ok((key, ident, own))
                })
                .and_then(Iterator::collect)
                .map_err(sql)?;
            let (first, last) = (page.first().map(|r| r.0), page.last().map(|r| r.0));
            let mut kept = kept::kept_over(&self.conn, first, last)
                .map_err(sql)?
                .into_iter()
                .peekable();
            let read = page.len();
            for (key, ident, own) in page {
                after = key.0 as i64;
                while kept.next_if(|(k, _)| *k < key).is_some() {}
                let answer = match kept.next_if(|(k, _)| *k == key) {
                    Some((_, k)) => kept_answer(key, k, &batches),
                    None => own,
                };
                let (Some((mut answer, text)), Some(ident)) = (answer, ident) else {
                    continue;
                };
                answer.ident = hash_of(&ident);
                out.push(Obtained {
                    answer,
                    values: renumber.values(text),
                });
            }
            if out.len() >= PAGE || read < PAGE {
                return Ok(out);
            }
        }
    }

    /// Whether the answers this job obtained are all in the results store: set before a run
    /// sends anything, cleared once the store took them, so that a run killed in between
    /// hands them over the next time.
    pub fn answers_stored(&self) -> Result<bool, JournalError> {
        Ok(self.meta("answers_stored")?.as_deref() == Some("1"))
    }

    pub fn set_answers_stored(&self, stored: bool) -> Result<(), JournalError> {
        self.set_meta("answers_stored", if stored { "1" } else { "0" })
    }
}

/// An answer, and its fields' text to renumber.
type WithFields = (Answer, Option<String>);

/// A final answer a batch keeps for the row `key`, with its batch's request id and time where
/// it keeps none of its own, and its fields' text for the caller to renumber. Takes the kept
/// outcome whole: its text moves into the answer, uncopied.
fn kept_answer(key: RowKey, kept: KeptOutcome, batches: &Batches) -> Option<WithFields> {
    let status = Status::parse(&kept.status).filter(|s| REUSABLE.contains(s))?;
    let batch = batches.get(&kept.batch_id);
    let checked_at = kept
        .checked_at
        .or_else(|| batch.and_then(|b| b.answered_at.clone()))?;
    let answer = Answer {
        key,
        ident: [0; 16],
        outcome: Outcome {
            status,
            reason: kept.reason,
            message: kept.message,
            provider_status: kept.provider_status,
            request_id: kept
                .request_id
                .or_else(|| batch.and_then(|b| b.request_id.clone())),
            fields: Vec::new(),
        },
        checked_at,
    };
    Some((answer, kept.fields))
}

/// A stored hash as the 16 bytes it was written as; a damaged one reads as zeros, which no
/// identifier hashes to in practice and so matches nothing.
fn hash_of(bytes: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    if bytes.len() == 16 {
        out.copy_from_slice(bytes);
    }
    out
}
