//! Planning: the inputs a state was made for, and every row recorded once, before any call.

use rusqlite::params;
use sha2::{Digest, Sha256};

use super::sort::{ExternalSort, Sorted};
use super::{Journal, JournalError, RowState, io_error, sql_error};
use crate::outcome::{Outcome, RowKey};
use crate::util::sqlite::{JournalMode, journal_mode, values_list};
use crate::util::time::now_rfc3339;

/// The hash duplicates are detected on: the identifier itself never enters the journal.
/// `scope` is the check's name and the state's key ([`Journal::ident_scope`]).
pub fn ident_hash(scope: &str, ident: &str) -> [u8; 16] {
    let digest = Sha256::new()
        .chain_update(scope.as_bytes())
        .chain_update([0])
        .chain_update(ident.as_bytes())
        .finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// What the planner decided for a row on first sight.
pub enum RowPlan {
    /// Failed local validation: final, never sent.
    Invalid(Outcome),
    /// To be verified; the hash of its normalised identifier detects duplicates without
    /// storing the identifier itself.
    Subject([u8; 16]),
}

impl Journal {
    /// Records the inputs' fingerprints and the columns read from them on first use;
    /// afterwards refuses inputs that changed, or other columns (the rows' recorded identities
    /// and outcomes belong to the columns first read). Returns whether planning already
    /// completed for these inputs.
    pub fn check_inputs(
        &self,
        inputs: &[(String, String)],
        columns: &str,
    ) -> Result<bool, JournalError> {
        let dir = self.dir.display().to_string();
        match self.meta("columns")? {
            None => self.set_meta("columns", columns)?,
            Some(found) if found != columns => {
                return Err(JournalError::OtherColumns {
                    dir,
                    found,
                    wanted: columns.into(),
                });
            }
            Some(_) => {}
        }
        let known: Vec<(String, String)> = {
            let mut st = self
                .conn
                .prepare("SELECT path, sha256 FROM inputs ORDER BY file_idx")
                .map_err(|e| self.sql(e))?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(Iterator::collect)
                .map_err(|e| self.sql(e))?
        };
        if known.is_empty() {
            for (i, (path, sha)) in inputs.iter().enumerate() {
                self.conn
                    .execute(
                        "INSERT INTO inputs (file_idx, path, sha256) VALUES (?1, ?2, ?3)",
                        params![i as i64, path, sha],
                    )
                    .map_err(|e| self.sql(e))?;
            }
            return Ok(false);
        }
        if known.len() != inputs.len() {
            return Err(JournalError::OtherInputs { dir });
        }
        for ((_, old), (path, new)) in known.iter().zip(inputs) {
            if old != new {
                return Err(JournalError::InputChanged {
                    file: path.clone(),
                    dir,
                });
            }
        }
        Ok(self.meta("planned_rows")?.is_some())
    }

    /// The number of rows planning found, once planning completed.
    pub fn planned_rows(&self) -> Result<Option<u64>, JournalError> {
        Ok(self.meta("planned_rows")?.and_then(|v| v.parse().ok()))
    }

    /// Starts recording the rows of the first pass.
    pub fn planner(&mut self) -> Result<Planner<'_>, JournalError> {
        self.planner_sorting(IDENTS_IN_MEMORY)
    }

    /// A planner that sorts up to `in_memory` identifiers before it spills them.
    pub(super) fn planner_sorting(
        &mut self,
        in_memory: usize,
    ) -> Result<Planner<'_>, JournalError> {
        Journal::output_stale(&self.conn).map_err(|e| self.sql(e))?;
        if !journal_mode(&self.conn, JournalMode::Rollback).map_err(|e| self.sql(e))? {
            tracing::debug!("another process reads the state: planning goes through the WAL");
        }
        let idents = ExternalSort::new(&self.dir, in_memory);
        let empty: bool = self
            .conn
            .query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM rows) AND NOT EXISTS (SELECT 1 FROM batches)",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        Ok(Planner {
            journal: self,
            idents,
            in_memory,
            learnt: None,
            known: None,
            to_send: empty.then_some(0),
        })
    }
}

/// Identifier hashes the planner sorts in memory before it spills them (24 bytes each).
const IDENTS_IN_MEMORY: usize = 1 << 20;
/// Duplicates marked per transaction.
const DUPLICATES_PER_TRANSACTION: usize = 100_000;

/// The first pass's rows, recorded in key order as they are read. Duplicates are found by
/// sorting the identifiers' hashes: the journal keeps no index of them, whose random inserts
/// slowed planning as the journal grew and rewrote most of the index's pages at every
/// transaction. When the identifiers were learnt first ([`Planner::learn`], a pass of their
/// own), a duplicate is recorded as such with its row; otherwise duplicates are marked at the
/// end, which writes again nearly every page of rows (one row in a hundred repeating an
/// earlier one is one on most pages).
pub struct Planner<'a> {
    journal: &'a mut Journal,
    /// The identifiers of rows recorded before their duplicates were known.
    idents: ExternalSort<(u128, u64)>,
    in_memory: usize,
    /// The identifiers learnt ahead of the rows.
    learnt: Option<ExternalSort<(u128, u64)>>,
    /// The duplicates among the learnt identifiers, `(row, leader)` in row order, up to the
    /// rows recorded so far.
    known: Option<std::iter::Peekable<Sorted<(u64, u64)>>>,
    /// The rows recorded as planned so far, while that is all the journal holds to send: it
    /// was empty when planning began, and every row's duplicate was known as it was recorded.
    to_send: Option<u64>,
}

impl Planner<'_> {
    /// Learns a subject row's identifier ahead of its row, so that [`Planner::rows`] records a
    /// duplicate as one at once. Every subject row is learnt before the first row is recorded.
    pub fn learn(&mut self, key: RowKey, hash: [u8; 16]) -> Result<(), JournalError> {
        let (dir, in_memory) = (&self.journal.dir, self.in_memory);
        self.learnt
            .get_or_insert_with(|| ExternalSort::new(dir, in_memory))
            .push((u128::from_be_bytes(hash), key.0))
            .map_err(io_error(dir))
    }

    /// Records a batch of rows, in key order, in one transaction. A row already recorded (a
    /// resumed planning) is left as it is, unless it is now known as a duplicate: a pass
    /// killed before its end sent nothing.
    pub fn rows(&mut self, rows: &[(RowKey, RowPlan)]) -> Result<(), JournalError> {
        if let Some(learnt) = self.learnt.take() {
            let duplicates = duplicates_of(learnt, &self.journal.dir, self.in_memory)?;
            self.known = Some(
                duplicates
                    .sorted()
                    .map_err(io_error(&self.journal.dir))?
                    .peekable(),
            );
        }
        let sql = sql_error(&self.journal.dir);
        let tx = self.journal.conn.transaction().map_err(&sql)?;
        {
            // A row that failed validation is final: one already recorded stays as it is.
            let mut invalid = tx
                .prepare_cached(
                    "INSERT INTO rows (row_key, state, status, reason, message, checked_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (row_key) DO NOTHING",
                )
                .map_err(sql)?;
            // Nearly every row: the same, binding only what it has, several a statement.
            let mut many = tx
                .prepare_cached(&subjects_sql(SUBJECTS_AT_ONCE))
                .map_err(sql)?;
            let mut one = tx.prepare_cached(&subjects_sql(1)).map_err(sql)?;
            let mut held = Vec::with_capacity(SUBJECTS_AT_ONCE);
            for (key, plan) in rows {
                match plan {
                    RowPlan::Invalid(o) => invalid
                        .execute(params![
                            key.0 as i64,
                            RowState::Done,
                            o.status.as_str(),
                            o.reason,
                            o.message,
                            now_rfc3339(),
                        ])
                        .map(drop),
                    RowPlan::Subject(hash) => {
                        let leader = match &mut self.known {
                            Some(known) => {
                                leader_of(known, *key).map_err(io_error(&self.journal.dir))?
                            }
                            None => {
                                self.idents
                                    .push((u128::from_be_bytes(*hash), key.0))
                                    .map_err(io_error(&self.journal.dir))?;
                                // It may yet be marked a duplicate, at the end.
                                self.to_send = None;
                                None
                            }
                        };
                        if leader.is_none()
                            && let Some(n) = &mut self.to_send
                        {
                            *n += 1;
                        }
                        held.push((*key, *hash, leader));
                        if held.len() < SUBJECTS_AT_ONCE {
                            continue;
                        }
                        for (i, subject) in held.drain(..).enumerate() {
                            bind_subject(&mut many, 4 * i, subject).map_err(sql)?;
                        }
                        many.raw_execute().map(drop)
                    }
                }
                .map_err(sql)?;
            }
            for subject in held {
                bind_subject(&mut one, 0, subject).map_err(sql)?;
                one.raw_execute().map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }

    /// Marks every row whose identifier an earlier row has as that row's duplicate, then
    /// planning complete for `rows` rows: a resumed run skips the first pass. Returns how many
    /// rows are planned to send when this planning wrote every row the journal holds and
    /// knew each duplicate as it went, so that the run need not count them by reading the
    /// rows again (at ten million rows, 3.5 s with the other core idle).
    pub fn finish(mut self, rows: u64) -> Result<Option<u64>, JournalError> {
        let dir = self.journal.dir.clone();
        let io = io_error(&dir);
        let idents = std::mem::replace(&mut self.idents, ExternalSort::new(&dir, 1));
        let duplicates = duplicates_of(idents, &dir, self.in_memory)?;
        // In key order, so that each page of rows is written once.
        let mut sorted = duplicates.sorted().map_err(io)?.peekable();
        while sorted.peek().is_some() {
            let chunk = sorted
                .by_ref()
                .take(DUPLICATES_PER_TRANSACTION)
                .collect::<Result<Vec<_>, _>>()
                .map_err(io)?;
            self.journal.mark_duplicates(&chunk)?;
        }
        self.journal.set_meta("planned_rows", &rows.to_string())?;
        let journal = &self.journal;
        journal_mode(&journal.conn, JournalMode::Wal).map_err(|e| journal.sql(e))?;
        Ok(self.to_send)
    }
}

impl Drop for Planner<'_> {
    /// A planning that ends early leaves the journal as a run reads it: in WAL mode. A
    /// failure here is the run's next open's to repair, which sets the mode again.
    fn drop(&mut self) {
        let _ = journal_mode(&self.journal.conn, JournalMode::Wal);
    }
}

/// Rows to verify recorded by one statement: a statement's run through SQLite's machine cost
/// about a third of planning a row.
const SUBJECTS_AT_ONCE: usize = 32;

/// The statement that records `n` rows to verify, each `(row_key, ident, state, dup_of)`: a
/// row already recorded is left as it is unless it is now known as a duplicate.
fn subjects_sql(n: usize) -> String {
    format!(
        "INSERT INTO rows (row_key, ident, state, dup_of) VALUES {}
         ON CONFLICT (row_key) DO UPDATE SET state = excluded.state, dup_of = excluded.dup_of
         WHERE rows.state = '{}' AND excluded.state = '{}'",
        values_list(n, 4),
        RowState::Planned.as_sql(),
        RowState::Duplicate.as_sql()
    )
}

/// Binds a row to verify, its hash and its leader if it has one, after the first `at`
/// parameters of a [`subjects_sql`] statement.
fn bind_subject(
    st: &mut rusqlite::CachedStatement,
    at: usize,
    (key, hash, leader): (RowKey, [u8; 16], Option<u64>),
) -> rusqlite::Result<()> {
    let state = if leader.is_some() {
        RowState::Duplicate
    } else {
        RowState::Planned
    };
    st.raw_bind_parameter(at + 1, key.0 as i64)?;
    st.raw_bind_parameter(at + 2, &hash[..])?;
    st.raw_bind_parameter(at + 3, state)?;
    st.raw_bind_parameter(at + 4, leader.map(|l| l as i64))
}

/// The rows whose identifier an earlier row has, `(row, leader)`, to be read in row order.
fn duplicates_of(
    idents: ExternalSort<(u128, u64)>,
    dir: &std::path::Path,
    in_memory: usize,
) -> Result<ExternalSort<(u64, u64)>, JournalError> {
    let io = io_error(dir);
    let mut duplicates = ExternalSort::new(dir, in_memory);
    let mut leader: Option<(u128, u64)> = None;
    for record in idents.sorted().map_err(io)? {
        let (hash, key) = record.map_err(io)?;
        match leader {
            Some((h, first)) if h == hash => duplicates.push((key, first)).map_err(io)?,
            _ => leader = Some((hash, key)),
        }
    }
    Ok(duplicates)
}

/// The leader of the row `key` among the known duplicates, which are read up to it.
fn leader_of(
    known: &mut std::iter::Peekable<Sorted<(u64, u64)>>,
    key: RowKey,
) -> std::io::Result<Option<u64>> {
    while let Some(next) = known.peek() {
        match next {
            Ok((row, _)) if *row < key.0 => {
                known.next();
            }
            Ok((row, leader)) if *row == key.0 => {
                let leader = *leader;
                known.next();
                return Ok(Some(leader));
            }
            Ok(_) => return Ok(None),
            Err(_) => return known.next().transpose().map(|_| None),
        }
    }
    Ok(None)
}

impl Journal {
    /// Marks rows (`(row, leader)`, in row order) as duplicates of their leaders, in one
    /// transaction. Only a planned row moves: planning ends before any call.
    fn mark_duplicates(&mut self, pairs: &[(u64, u64)]) -> Result<(), JournalError> {
        let sql = sql_error(&self.dir);
        let tx = self.conn.transaction().map_err(&sql)?;
        {
            let mut mark = tx
                .prepare_cached(
                    "UPDATE rows SET state = ?3, dup_of = ?2 WHERE row_key = ?1 AND state = ?4",
                )
                .map_err(sql)?;
            for (key, leader) in pairs {
                mark.execute(params![
                    *key as i64,
                    *leader as i64,
                    RowState::Duplicate,
                    RowState::Planned
                ])
                .map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }
}
