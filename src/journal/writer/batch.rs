//! The writer's moves of batches, checked against their lifecycle in `state`.

use rusqlite::{OptionalExtension, Transaction, params};

use super::WriteError;
use crate::journal::state::{Refused, Step};
use crate::journal::{BatchState, RowState};
use crate::outcome::RowKey;
use crate::util::time::now_rfc3339;

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

/// Deletes a batch the provider has nothing of, and plans its rows again.
pub(super) fn forget_batch(tx: &Transaction, batch_id: i64) -> Result<(), WriteError> {
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
    tx.execute(
        &format!(
            "UPDATE rows SET state = ?2, batch_id = NULL, request_id = NULL
             WHERE batch_id = ?1 AND state IN ({})",
            step.sources_sql()
        ),
        params![batch_id, step.target()],
    )?;
    let left: Option<(i64, RowState)> = tx
        .query_row(
            "SELECT row_key, state FROM rows WHERE batch_id = ?1 LIMIT 1",
            [batch_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((key, from)) = left {
        step.move_from(RowKey(key as u64), from)?;
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
