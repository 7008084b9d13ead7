//! The writer's moves of batches, checked against their lifecycle in `state`, and the
//! batches whose rows' records do not show them yet (`members`).

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::WriteError;
use crate::journal::kept;
use crate::journal::members::{self, member_state};
use crate::journal::state::{Refused, Step};
use crate::journal::{BatchState, RowState};
use crate::outcome::RowKey;
use crate::util::time::now_rfc3339;

/// The batches of this run whose member rows' records do not all show them yet, as the
/// writer follows them: what each such row is, without reading it.
pub(super) struct Unwritten {
    /// Whether batches keep their rows and their outcomes (a journal of format 4); otherwise
    /// every move of a batch's rows is written to them.
    pub(super) kept: bool,
    /// The outcomes batches keep, and this transaction's.
    pub(super) outcomes: kept::Index,
    batches: HashMap<i64, Pending>,
    /// Each member row whose record does not show its batch, and the batch. Ordered: a
    /// batch's rows take their outcomes in key order, which walks this in order, where a hash
    /// map of a million rows missed the cache at every one (a fifth of the writer's time).
    member_of: BTreeMap<RowKey, i64>,
}

struct Pending {
    members: Vec<RowKey>,
    /// Members whose record does not show the batch yet.
    left: usize,
    /// The attempts of the upload, once the provider accepted it.
    accepted: Option<u32>,
    /// When the batch's first rows took their outcome (`answered_at`): rows whose outcome
    /// came then read their time from the batch, 20 bytes less in each.
    answered: Option<String>,
    /// Its rows that others repeat, whose outcomes are kept alone (see `kept`).
    leaders: foldhash::HashSet<RowKey>,
}

impl Unwritten {
    /// What the journal holds unwritten: nothing after recovery, which writes it all.
    pub(super) fn load(conn: &Connection, kept: bool) -> rusqlite::Result<Unwritten> {
        let mut unwritten = Unwritten {
            kept,
            outcomes: kept::Index::default(),
            batches: HashMap::new(),
            member_of: BTreeMap::new(),
        };
        if !kept {
            return Ok(unwritten);
        }
        unwritten.outcomes = kept::Index::load(conn)?;
        for kept in members::unwritten(conn)? {
            let (batch_id, keys) = (kept.batch_id, kept.members);
            let mut shown = conn.prepare_cached("SELECT batch_id FROM rows WHERE row_key = ?1")?;
            // A row whose outcome the batch keeps is not in flight.
            let answered = kept::kept_over(conn, keys.first().copied(), keys.last().copied())?;
            let mut left = 0;
            for key in keys.iter().filter(|k| !answered.contains_key(k)) {
                let batch: Option<Option<i64>> =
                    shown.query_row([key.0 as i64], |r| r.get(0)).optional()?;
                if batch.is_some_and(|b| b != Some(batch_id)) {
                    unwritten.member_of.insert(*key, batch_id);
                    left += 1;
                }
            }
            let accepted = members::accepted(kept.state).then_some(kept.attempts);
            unwritten.batches.insert(
                batch_id,
                Pending {
                    leaders: kept::leaders_among(conn, &keys)?,
                    members: keys,
                    left,
                    accepted,
                    answered: kept.answered_at,
                },
            );
        }
        Ok(unwritten)
    }

    pub(super) fn has(&self, batch_id: i64) -> bool {
        self.batches.contains_key(&batch_id)
    }

    /// The unwritten batch of the row `key`, and the attempts of its upload once accepted.
    pub(super) fn member(&self, key: RowKey) -> Option<(i64, Option<u32>)> {
        let batch_id = *self.member_of.get(&key)?;
        Some((batch_id, self.batches.get(&batch_id)?.accepted))
    }

    /// Whether other rows repeat the row `key`, of the unwritten batch `batch_id`.
    pub(super) fn leads(&self, batch_id: i64, key: RowKey) -> bool {
        self.batches
            .get(&batch_id)
            .is_some_and(|b| b.leaders.contains(&key))
    }

    /// Records a batch's intent on the batch alone: `None` when its rows must be written
    /// (a journal that does not keep them, or a batch written already).
    pub(super) fn intent(
        &mut self,
        tx: &Transaction,
        keys: &[RowKey],
        batch_id: i64,
        name: Option<&str>,
    ) -> Result<Option<()>, WriteError> {
        if !self.kept {
            return Ok(None);
        }
        // A row is a member of one unwritten batch at most: another's are written first.
        let others: Vec<i64> = keys
            .iter()
            .filter_map(|k| self.member_of.get(k).copied())
            .filter(|b| *b != batch_id)
            .collect();
        for other in others {
            self.write(tx, other)?;
        }
        let again = self.has(batch_id);
        if !again && batch_state(tx, batch_id)?.is_some() {
            return Ok(None);
        }
        let stored = Stored::of(tx, keys)?;
        for key in keys {
            let from = match self.member(*key) {
                Some((_, accepted)) => Some(member_state(accepted.is_some())),
                None => stored.state(tx, *key)?,
            };
            if let Some(from) = from {
                Step::Intent.move_from(*key, from)?;
            }
        }
        batch_intent(tx, batch_id, name)?;
        if !again {
            tx.prepare_cached(
                "UPDATE batches SET members = ?2, rows_written = 0 WHERE batch_id = ?1",
            )?
            .execute(params![batch_id, members::encode(keys)])?;
            for key in keys {
                self.member_of.insert(*key, batch_id);
            }
            self.batches.insert(
                batch_id,
                Pending {
                    members: keys.to_vec(),
                    left: keys.len(),
                    accepted: None,
                    answered: None,
                    leaders: kept::leaders_among(tx, keys)?,
                },
            );
        }
        Ok(Some(()))
    }

    /// The provider accepted an unwritten batch: its rows are running, on the batch alone.
    pub(super) fn accept(
        &mut self,
        tx: &Transaction,
        batch_id: i64,
        state: BatchState,
        request_id: &str,
        attempts: u32,
    ) -> Result<Option<()>, WriteError> {
        let Some(pending) = self.batches.get_mut(&batch_id) else {
            return Ok(None);
        };
        set_batch(tx, batch_id, state, Some((request_id, attempts)))?;
        pending.accepted = Some(attempts);
        Ok(Some(()))
    }

    /// Whether an unwritten batch's row taking its outcome at `now` reads its time from the
    /// batch: the first of its rows to take one records the time on the batch.
    pub(super) fn answered_at(
        &mut self,
        tx: &Transaction,
        batch_id: i64,
        now: &str,
    ) -> rusqlite::Result<bool> {
        let Some(pending) = self.batches.get_mut(&batch_id) else {
            return Ok(false);
        };
        match &pending.answered {
            Some(at) => Ok(at == now),
            None => {
                tx.prepare_cached("UPDATE batches SET answered_at = ?2 WHERE batch_id = ?1")?
                    .execute(params![batch_id, now])?;
                pending.answered = Some(now.to_string());
                Ok(true)
            }
        }
    }

    /// The row `key` took its outcome, and with it its batch: once every member did, the
    /// batch's rows are written.
    pub(super) fn settled(&mut self, tx: &Transaction, key: RowKey) -> rusqlite::Result<()> {
        let Some(batch_id) = self.member_of.remove(&key) else {
            return Ok(());
        };
        let Some(pending) = self.batches.get_mut(&batch_id) else {
            return Ok(());
        };
        pending.left = pending.left.saturating_sub(1);
        if pending.left == 0 {
            self.batches.remove(&batch_id);
            tx.prepare_cached("UPDATE batches SET rows_written = 1 WHERE batch_id = ?1")?
                .execute([batch_id])?;
        }
        Ok(())
    }

    /// Writes the records of an unwritten batch's rows as what the batch says they are,
    /// before a step that reads them (a hold, a revert, the batch closed).
    pub(super) fn write(&mut self, tx: &Transaction, batch_id: i64) -> Result<(), WriteError> {
        let Some(pending) = self.batches.remove(&batch_id) else {
            return Ok(());
        };
        let left: Vec<RowKey> = pending
            .members
            .into_iter()
            .filter(|k| self.member_of.get(k) == Some(&batch_id))
            .collect();
        for key in &left {
            self.member_of.remove(key);
        }
        let refused = members::write_rows(tx, batch_id, &left, pending.accepted)?;
        if let Some((key, from)) = refused.first() {
            Step::Intent.move_from(*key, *from)?;
        }
        Ok(())
    }

    /// Writes every unwritten batch's rows: the last commit leaves the rows' records whole.
    pub(super) fn write_all(&mut self, tx: &Transaction) -> Result<(), WriteError> {
        let mut batches: Vec<i64> = self.batches.keys().copied().collect();
        batches.sort_unstable();
        for batch_id in batches {
            self.write(tx, batch_id)?;
        }
        Ok(())
    }
}

/// The stored states of a batch's rows. A batch is mostly rows next to each other: their
/// states are read in one pass over their range, where looking each up cost the writer a
/// descent of the table a row (a tenth of its work under a flow of batches); rows spread
/// wider are looked up one at a time.
struct Stored {
    first: u64,
    states: Option<Vec<Option<RowState>>>,
}

impl Stored {
    /// Rows of the range per row of the batch, beyond which each is looked up alone.
    const SPREAD: u64 = 4;

    fn of(tx: &Transaction, keys: &[RowKey]) -> rusqlite::Result<Stored> {
        let (Some(first), Some(last)) = (keys.iter().min(), keys.iter().max()) else {
            return Ok(Stored {
                first: 0,
                states: None,
            });
        };
        let span = last.0 - first.0 + 1;
        if span > Self::SPREAD * keys.len() as u64 {
            return Ok(Stored {
                first: first.0,
                states: None,
            });
        }
        let mut states = vec![None; span as usize];
        let mut st =
            tx.prepare_cached("SELECT row_key, state FROM rows WHERE row_key BETWEEN ?1 AND ?2")?;
        let mut rows = st.query(params![first.0 as i64, last.0 as i64])?;
        while let Some(r) = rows.next()? {
            let at = r.get::<_, i64>(0)? as u64 - first.0;
            states[at as usize] = Some(r.get(1)?);
        }
        Ok(Stored {
            first: first.0,
            states: Some(states),
        })
    }

    /// The stored state of the row `key`, one of the batch's; `None` for a row the journal
    /// does not have.
    fn state(&self, tx: &Transaction, key: RowKey) -> rusqlite::Result<Option<RowState>> {
        match &self.states {
            Some(states) => Ok(states[(key.0 - self.first) as usize]),
            None => tx
                .prepare_cached("SELECT state FROM rows WHERE row_key = ?1")?
                .query_row([key.0 as i64], |r| r.get(0))
                .optional(),
        }
    }
}

/// Records a batch's intent: a new batch, or the same batch sent again.
pub(super) fn batch_intent(
    tx: &Transaction,
    batch_id: i64,
    name: Option<&str>,
) -> Result<(), WriteError> {
    let to = BatchState::Sending;
    let moved = tx.execute(
        &format!(
            "INSERT INTO batches (batch_id, state, request_id, created_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (batch_id) DO UPDATE SET state = excluded.state
             WHERE batches.state IN ({})",
            BatchState::sources_sql(to)
        ),
        params![batch_id, to, name, now_rfc3339()],
    )?;
    if moved == 0 {
        refuse_batch(tx, batch_id, Some(to))?;
    }
    Ok(())
}

/// Moves a batch to `to`, only from the states it may be reached from; `accepted` is the
/// request id and the attempts of an upload the provider answered.
pub(super) fn set_batch(
    tx: &Transaction,
    batch_id: i64,
    to: BatchState,
    accepted: Option<(&str, u32)>,
) -> Result<(), WriteError> {
    let (request_id, attempts) = accepted.unzip();
    let moved = tx.execute(
        &format!(
            "UPDATE batches SET state = ?2, request_id = coalesce(?3, request_id),
                    attempts = coalesce(?4, attempts)
             WHERE batch_id = ?1 AND state IN ({})",
            BatchState::sources_sql(to)
        ),
        params![batch_id, to, request_id, attempts.map(i64::from)],
    )?;
    if moved == 0 {
        refuse_batch(tx, batch_id, Some(to))?;
    }
    Ok(())
}

/// Deletes a batch the provider has nothing of, and plans its rows (`keys`) again.
pub(super) fn forget_batch(
    tx: &Transaction,
    batch_id: i64,
    keys: &[RowKey],
) -> Result<(), WriteError> {
    if let Some(from) = batch_state(tx, batch_id)?.filter(|s| !s.can_be_forgotten()) {
        return Err(Refused::Batch {
            batch_id,
            from,
            to: None,
        }
        .into());
    }
    tx.execute("DELETE FROM batches WHERE batch_id = ?1", [batch_id])?;
    let step = Step::Forget;
    let mut forget = tx.prepare_cached(&format!(
        "UPDATE rows SET state = ?3, batch_id = NULL, request_id = NULL
         WHERE row_key = ?1 AND batch_id = ?2 AND state IN ({})",
        step.sources_sql()
    ))?;
    let mut left =
        tx.prepare_cached("SELECT state FROM rows WHERE row_key = ?1 AND batch_id = ?2")?;
    for key in keys {
        let moved = forget.execute(params![key.0 as i64, batch_id, step.target()])?;
        if moved == 0 {
            let from: Option<RowState> = left
                .query_row(params![key.0 as i64, batch_id], |r| r.get(0))
                .optional()?;
            if let Some(from) = from {
                step.move_from(*key, from)?;
            }
        }
    }
    Ok(())
}

/// A batch that was not moved to `to` (`None`: forgotten): refused when the journal has it.
fn refuse_batch(tx: &Transaction, batch_id: i64, to: Option<BatchState>) -> Result<(), WriteError> {
    match batch_state(tx, batch_id)? {
        Some(from) => Err(Refused::Batch { batch_id, from, to }.into()),
        None => Ok(()),
    }
}

/// A batch's stored state, if the journal has the batch.
fn batch_state(tx: &Transaction, batch_id: i64) -> Result<Option<BatchState>, WriteError> {
    Ok(tx
        .query_row(
            "SELECT state FROM batches WHERE batch_id = ?1",
            [batch_id],
            |r| r.get(0),
        )
        .optional()?)
}
