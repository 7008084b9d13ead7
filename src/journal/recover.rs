//! What a dead run left in flight, settled before anything is dispatched, and the batches
//! still to be polled.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, Transaction, params};

use super::state::{Step, sql_list};
use super::{BatchState, Journal, JournalError, RowState, sql_error};
use super::{kept, members};
use crate::outcome::{RowKey, Status};

/// A batch the provider accepted and that still needs polling.
#[derive(Debug, Clone)]
pub struct OpenBatch {
    pub batch_id: i64,
    pub request_id: String,
    /// The batch's rows, each with the hash of its identifier (results echoed by identifier
    /// are matched on it).
    pub rows: Vec<(RowKey, [u8; 16])>,
    /// False for an upload under a name we chose whose answer was lost: polling that name
    /// tells whether the provider has it.
    pub confirmed: bool,
}

impl Journal {
    /// Settles what a dead run left in flight, before anything is dispatched: a call whose
    /// intent was committed but whose answer never arrived may have been billed, so it is held
    /// as `unconfirmed` — or, when the user asked for it, planned again. Returns the rows
    /// held and the rows planned again.
    pub fn recover(&mut self, resend_unconfirmed: bool) -> Result<(u64, u64), JournalError> {
        use BatchState as B;
        use RowState as R;
        let sql = sql_error(&self.dir);
        let tx = self.conn.transaction().map_err(sql)?;
        let before = tx.total_changes();
        // The rows of the batches a dead run left unwritten are first written as what their
        // batch says (see `members`), then settled as any row the run left in flight.
        // A row whose outcome the batch keeps has it already.
        for kept in members::unwritten(&tx).map_err(sql)? {
            let (batch_id, mut keys) = (kept.batch_id, kept.members);
            let answered =
                kept::kept_over(&tx, keys.first().copied(), keys.last().copied()).map_err(sql)?;
            keys.retain(|k| !answered.contains_key(k));
            let accepted = members::accepted(kept.state).then_some(kept.attempts);
            let refused = members::write_rows(&tx, batch_id, &keys, accepted).map_err(sql)?;
            for (key, from) in refused {
                tracing::warn!(
                    "row {} of input file {} is {from}, not in batch {batch_id} it was sent in; \
                     left as it is",
                    key.record() + 1,
                    key.file() + 1
                );
            }
        }
        // An upload under a name we chose is reconciled by asking for that name, not held.
        let named = format!(
            "batch_id IN (SELECT batch_id FROM batches WHERE state = {} AND request_id IS NOT NULL)",
            sql_list([B::Sending.as_sql()])
        );
        move_rows(
            &tx,
            R::Sending,
            Step::Accept,
            ", request_id = (SELECT b.request_id FROM batches b WHERE b.batch_id = rows.batch_id)",
            &named,
        )
        .map_err(sql)?;
        move_batches(&tx, B::Sending, B::Reconcile, "request_id IS NOT NULL").map_err(sql)?;
        move_rows(&tx, R::Sending, Step::Hold, "", "1").map_err(sql)?;
        move_batches(&tx, B::Sending, B::Unconfirmed, "1").map_err(sql)?;
        let mut released = 0;
        if resend_unconfirmed {
            released = move_rows(&tx, R::Unconfirmed, Step::Release, ", batch_id = NULL", "1")
                .map_err(sql)?;
            move_batches(&tx, B::Unconfirmed, B::Abandoned, "1").map_err(sql)?;
        }
        if tx.total_changes() > before {
            Journal::output_stale(&tx).map_err(sql)?;
        }
        let held: i64 = tx
            .query_row(
                "SELECT count(*) FROM rows WHERE state = ?1",
                [R::Unconfirmed],
                |r| r.get(0),
            )
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok((held as u64, released as u64))
    }

    /// Batches accepted by the provider whose results are not in yet, each with its rows
    /// still to settle. A batch that keeps its rows (`members`) finds them by their keys;
    /// others, by reading every row once.
    pub fn open_batches(&self) -> Result<Vec<OpenBatch>, JournalError> {
        let sql = sql_error(&self.dir);
        let batches: Vec<(i64, String, bool, Option<Vec<u8>>)> = self
            .conn
            .prepare(&format!(
                "SELECT batch_id, request_id, state = ?1, members FROM batches
                 WHERE state IN ({}) ORDER BY batch_id",
                BatchState::open_sql()
            ))
            .and_then(|mut st| {
                st.query_map([BatchState::Uploaded], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect()
            })
            .map_err(sql)?;
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let unsettled = "(state = ?2 OR status IN (?3, ?4))";
        let mut keyed = self
            .conn
            .prepare(&format!(
                "SELECT row_key, ident FROM rows
                 WHERE row_key = ?5 AND batch_id = ?1 AND {unsettled}"
            ))
            .map_err(sql)?;
        let mut out: Vec<OpenBatch> = Vec::new();
        let mut scanned = Vec::new();
        for (batch_id, request_id, confirmed, members) in batches {
            let mut rows = Vec::new();
            match members {
                Some(members) => {
                    let members = members::decode(&members).map_err(sql)?;
                    let answered = self.kept_unsettled(batch_id, &members).map_err(sql)?;
                    for key in members {
                        // An outcome the batch keeps is the row's: polled again while pending.
                        if let Some(unsettled) = answered.get(&key) {
                            rows.extend(*unsettled);
                            continue;
                        }
                        let found = keyed
                            .query_row(
                                params![
                                    batch_id,
                                    RowState::Running,
                                    Status::Pending.as_str(),
                                    Status::Error.as_str(),
                                    key.0 as i64
                                ],
                                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<Vec<u8>>>(1)?)),
                            )
                            .optional()
                            .map_err(sql)?;
                        rows.extend(found.map(|(k, ident)| (RowKey(k as u64), hash_of(ident))));
                    }
                }
                None => scanned.push(batch_id),
            }
            out.push(OpenBatch {
                batch_id,
                request_id,
                rows,
                confirmed,
            });
        }
        if !scanned.is_empty() {
            let mut st = self
                .conn
                .prepare(&format!(
                    "SELECT batch_id, row_key, ident FROM rows
                     WHERE batch_id IN ({}) AND {unsettled} ORDER BY row_key",
                    scanned
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .map_err(sql)?;
            let found = st
                .query_map(
                    params![
                        0,
                        RowState::Running,
                        Status::Pending.as_str(),
                        Status::Error.as_str()
                    ],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, Option<Vec<u8>>>(2)?,
                        ))
                    },
                )
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(sql)?;
            for (batch_id, key, ident) in found {
                if let Some(b) = out.iter_mut().find(|b| b.batch_id == batch_id) {
                    b.rows.push((RowKey(key as u64), hash_of(ident)));
                }
            }
        }
        out.retain(|b| !b.rows.is_empty());
        Ok(out)
    }
}

/// A row to poll again, with its identifier's hash.
type Polled = (RowKey, [u8; 16]);

impl Journal {
    /// Of `members` of the batch `batch_id`, those whose outcome it keeps, each with itself
    /// and its identifier's hash when that outcome is pending or an error (still to be polled).
    fn kept_unsettled(
        &self,
        batch_id: i64,
        members: &[RowKey],
    ) -> rusqlite::Result<HashMap<RowKey, Option<Polled>>> {
        let mut ident = self
            .conn
            .prepare_cached("SELECT ident FROM rows WHERE row_key = ?1")?;
        let mut out = HashMap::new();
        let kept = kept::kept_over(
            &self.conn,
            members.first().copied(),
            members.last().copied(),
        )?;
        for (key, outcome) in kept.into_iter().filter(|(_, o)| o.batch_id == batch_id) {
            let settled = Status::parse(&outcome.status)
                .is_some_and(|s| !matches!(s, Status::Pending | Status::Error));
            let unsettled = if settled {
                None
            } else {
                let found = ident.query_row([key.0 as i64], |r| r.get(0)).optional()?;
                Some((key, hash_of(found.flatten())))
            };
            out.insert(key, unsettled);
        }
        Ok(out)
    }
}

/// A stored hash as the 16 bytes it was written as; none or a damaged one reads as zeros,
/// which no identifier hashes to in practice and so matches nothing.
fn hash_of(ident: Option<Vec<u8>>) -> [u8; 16] {
    let mut hash = [0u8; 16];
    if let Some(ident) = ident.filter(|i| i.len() == 16) {
        hash.copy_from_slice(&ident);
    }
    hash
}

/// Moves every row in `from` that matches `filter` by `step`, also setting `and` (an SQL
/// `, column = value` list). Returns the rows moved.
fn move_rows(
    tx: &Transaction,
    from: RowState,
    step: Step,
    and: &str,
    filter: &str,
) -> rusqlite::Result<usize> {
    debug_assert!(step.allows(from), "{step:?} from {from}");
    tx.execute(
        &format!("UPDATE rows SET state = ?1{and} WHERE state = ?2 AND {filter}"),
        params![step.target(), from],
    )
}

/// Moves every batch in `from` that matches `filter` to `to`.
fn move_batches(
    tx: &Transaction,
    from: BatchState,
    to: BatchState,
    filter: &str,
) -> rusqlite::Result<usize> {
    debug_assert!(from.can_become(to), "{from} to {to}");
    tx.execute(
        &format!("UPDATE batches SET state = ?1 WHERE state = ?2 AND {filter}"),
        params![to, from],
    )
}
