//! What a dead run left in flight, settled before anything is dispatched, and the batches
//! still to be polled.

use rusqlite::{Transaction, params};

use super::state::{Step, sql_list};
use super::{BatchState, Journal, JournalError, RowState, sql_error};
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

    /// Batches accepted by the provider whose results are not in yet.
    pub fn open_batches(&self) -> Result<Vec<OpenBatch>, JournalError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT b.batch_id, b.request_id, r.row_key, r.ident, b.state = ?1
                 FROM batches b JOIN rows r ON r.batch_id = b.batch_id
                 WHERE b.state IN ({})
                   AND (r.state = ?2 OR r.status IN (?3, ?4))
                 ORDER BY b.batch_id, r.row_key",
                BatchState::open_sql()
            ))
            .map_err(|e| self.sql(e))?;
        let mut out: Vec<OpenBatch> = Vec::new();
        let unsettled = params![
            BatchState::Uploaded,
            RowState::Running,
            Status::Pending.as_str(),
            Status::Error.as_str()
        ];
        let rows = st
            .query_map(unsettled, |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<Vec<u8>>>(3)?,
                    r.get::<_, bool>(4)?,
                ))
            })
            .map_err(|e| self.sql(e))?;
        for row in rows {
            let (batch_id, request_id, key, ident, confirmed) = row.map_err(|e| self.sql(e))?;
            let mut hash = [0u8; 16];
            if let Some(ident) = ident.filter(|i| i.len() == 16) {
                hash.copy_from_slice(&ident);
            }
            let row = (RowKey(key as u64), hash);
            match out.last_mut() {
                Some(b) if b.batch_id == batch_id => b.rows.push(row),
                _ => out.push(OpenBatch {
                    batch_id,
                    request_id,
                    rows: vec![row],
                    confirmed,
                }),
            }
        }
        Ok(out)
    }
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
