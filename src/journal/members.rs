//! The rows of a batch, kept with the batch (`batches.members`) in a journal of format 3 or
//! later: its intent and its acceptance are recorded on the batch alone, and the outcomes its
//! rows take once it was accepted are kept with it too (`kept`, format 4). A batch's rows stay
//! unwritten from planning on, where writing each row's intent and then its acceptance wrote
//! every page of rows twice more (a batch of 10,000 rows is about 300 pages; its members,
//! about 10 KB).
//!
//! A batch whose rows' records do not all show it yet has `rows_written = 0`. Until they do,
//! a member row whose record names another batch (or none), and whose outcome the batch does
//! not keep, is where the batch says: `sending`, or `running` once the batch was accepted.
//! The writer brings the records of those rows up to date
//! whenever a step needs them (a hold, a revert, the batch closed) and at its last commit;
//! recovery does it for a run that died first.

use rusqlite::{OptionalExtension, Transaction, params};

use super::state::Step;
use super::{BatchState, RowState};
use crate::outcome::RowKey;

/// Keys in ascending order, each as its distance from the one before in LEB128: a batch of
/// rows read in order takes about a byte a row.
pub(super) fn encode(keys: &[RowKey]) -> Vec<u8> {
    let mut sorted: Vec<u64> = keys.iter().map(|k| k.0).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::with_capacity(sorted.len() + 8);
    let mut last = 0u64;
    for key in sorted {
        put_uint(&mut out, key - last);
        last = key;
    }
    out
}

/// `n` in LEB128: seven bits a byte, the high bit set on all but the last.
pub(super) fn put_uint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The keys [`encode`] wrote. A damaged list is an error, never a shorter one: a key left
/// out would be neither held nor known as sent, and sent again.
pub(super) fn decode(bytes: &[u8]) -> rusqlite::Result<Vec<RowKey>> {
    let mut keys = Vec::new();
    let (mut last, mut delta, mut shift) = (0u64, 0u64, 0u32);
    for &byte in bytes {
        if shift >= 64 {
            break;
        }
        delta |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            last = last.wrapping_add(delta);
            keys.push(RowKey(last));
            (delta, shift) = (0, 0);
        } else {
            shift += 7;
        }
    }
    if shift == 0 {
        Ok(keys)
    } else {
        Err(rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            "a batch's list of rows is damaged".into(),
        ))
    }
}

/// Where an unwritten member row of a batch is: what it would have been moved to.
pub(super) fn member_state(accepted: bool) -> RowState {
    if accepted {
        Step::Accept.target()
    } else {
        Step::Intent.target()
    }
}

/// Whether the rows of a batch in `state` are polled through it: they were accepted with it.
pub(super) fn accepted(state: BatchState) -> bool {
    BatchState::OPEN.contains(&state)
}

/// Writes the records of the batch's member rows that do not show it yet as what the batch
/// says they are (`accepted`: the attempts of its accepted upload), and marks the batch's rows
/// written. A row that cannot take the intent is left as it is and returned: the writer
/// refuses the move, recovery leaves the row.
pub(super) fn write_rows(
    tx: &Transaction,
    batch_id: i64,
    members: &[RowKey],
    accepted: Option<u32>,
) -> rusqlite::Result<Vec<(RowKey, RowState)>> {
    let mut st = tx.prepare_cached(&format!(
        "UPDATE rows SET state = ?3, batch_id = ?2,
                request_id = CASE WHEN ?4 THEN NULL ELSE request_id END,
                attempts = coalesce(?5, attempts)
         WHERE row_key = ?1 AND batch_id IS NOT ?2 AND {}",
        Step::Intent.sources_where("state")
    ))?;
    let mut refused = Vec::new();
    for key in members {
        let moved = st.execute(params![
            key.0 as i64,
            batch_id,
            member_state(accepted.is_some()),
            accepted.is_some(),
            accepted.map(i64::from),
        ])?;
        if moved == 0 {
            let shown: Option<(RowState, Option<i64>)> = tx
                .prepare_cached("SELECT state, batch_id FROM rows WHERE row_key = ?1")?
                .query_row([key.0 as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            // A row that took its outcome with the batch shows it; one the journal does not
            // have is left alone, as the writer always did.
            if let Some((state, shown)) = shown
                && shown != Some(batch_id)
            {
                refused.push((*key, state));
            }
        }
    }
    tx.prepare_cached("UPDATE batches SET rows_written = 1 WHERE batch_id = ?1")?
        .execute([batch_id])?;
    Ok(refused)
}

/// A batch whose rows' records do not all show it yet.
pub(super) struct Kept {
    pub(super) batch_id: i64,
    pub(super) state: BatchState,
    /// The attempts of its upload.
    pub(super) attempts: u32,
    pub(super) members: Vec<RowKey>,
    /// When its first rows took their outcome.
    pub(super) answered_at: Option<String>,
}

/// The batches whose rows' records do not all show them yet; none in a journal whose batches
/// never kept their rows (one read by `status` before a run of this version opened it).
pub(super) fn unwritten(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<Kept>> {
    let kept: bool = conn.query_row(
        "SELECT count(*) FROM pragma_table_info('batches') WHERE name = 'rows_written'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !kept {
        return Ok(Vec::new());
    }
    conn.prepare(
        "SELECT batch_id, state, attempts, members, answered_at FROM batches
         WHERE rows_written = 0 AND members IS NOT NULL ORDER BY batch_id",
    )?
    .query_map([], |r| {
        let members: Vec<u8> = r.get(3)?;
        Ok(Kept {
            batch_id: r.get(0)?,
            state: r.get(1)?,
            attempts: r.get::<_, i64>(2)?.try_into().unwrap_or(u32::MAX),
            members: decode(&members)?,
            answered_at: r.get(4)?,
        })
    })?
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_back_in_order() {
        let keys = [
            RowKey::new(0, 7),
            RowKey::new(0, 3),
            RowKey::new(0, 200),
            RowKey::new(1, 0),
            RowKey::new(3, 1 << 39),
        ];
        let bytes = encode(&keys);
        let mut sorted = keys.to_vec();
        sorted.sort();
        assert_eq!(decode(&bytes).unwrap(), sorted);
        let run: Vec<_> = (100..10_100).map(|i| RowKey::new(0, i)).collect();
        assert_eq!(encode(&run).len(), 10_000, "a byte a row in a run");
        assert_eq!(decode(&encode(&run)).unwrap(), run);
        assert!(decode(&[]).unwrap().is_empty());
        let mut cut = encode(&run);
        cut.push(0x80);
        assert!(decode(&cut).is_err(), "a list cut in a key");
    }
}
