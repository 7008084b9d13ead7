//! Planning: the inputs a state was made for, and every row recorded once, before any call.

use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::{Journal, JournalError, RowState, sql_error};
use crate::outcome::{Outcome, RowKey};
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

    /// Records a batch of first-seen rows in one transaction; a row whose identifier an earlier
    /// row already has becomes that row's duplicate.
    pub fn plan_rows(&mut self, rows: &[(RowKey, RowPlan)]) -> Result<(), JournalError> {
        let sql = sql_error(&self.dir);
        let tx = self.conn.transaction().map_err(&sql)?;
        {
            let mut find = tx
                .prepare_cached(
                    "SELECT row_key FROM rows WHERE ident = ?1 AND dup_of IS NULL LIMIT 1",
                )
                .map_err(sql)?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO rows (row_key, ident, dup_of, state, status, reason, message, checked_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (row_key) DO NOTHING",
                )
                .map_err(sql)?;
            for (key, plan) in rows {
                match plan {
                    RowPlan::Invalid(o) => {
                        insert
                            .execute(params![
                                key.0 as i64,
                                None::<Vec<u8>>,
                                None::<i64>,
                                RowState::Done,
                                o.status.as_str(),
                                o.reason,
                                o.message,
                                now_rfc3339(),
                            ])
                            .map_err(sql)?;
                    }
                    RowPlan::Subject(hash) => {
                        let leader: Option<i64> = find
                            .query_row([&hash[..]], |r| r.get(0))
                            .optional()
                            .map_err(sql)?;
                        let leader = leader.filter(|l| *l != key.0 as i64);
                        let state = if leader.is_some() {
                            RowState::Duplicate
                        } else {
                            RowState::Planned
                        };
                        insert
                            .execute(params![
                                key.0 as i64,
                                &hash[..],
                                leader,
                                state,
                                None::<String>,
                                None::<String>,
                                None::<String>,
                                None::<String>,
                            ])
                            .map_err(sql)?;
                    }
                }
            }
        }
        tx.commit().map_err(sql)
    }

    /// Marks planning complete for `rows` rows: a resumed run skips the first pass.
    pub fn finish_planning(&self, rows: u64) -> Result<(), JournalError> {
        self.set_meta("planned_rows", &rows.to_string())
    }
}
