//! Reading rows back: page by page for the dispatcher, streamed for the merge.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::kept::{self, KeptOutcome};
use super::schema::DB_FILE;
use super::state::sql_list;
use super::{BatchState, Journal, JournalError, OtpPhase, RowState, fields, io_error, sql_error};
use crate::outcome::{RowKey, Status};

/// What the journal keeps of a row's OTP request between the two steps: never the OTP, only
/// digests of the ones the provider refused, so that a re-run does not spend one of the
/// owner's few attempts on an OTP already known to be wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpRequest {
    /// What step two and a later fetch need (the provider's request id, or ours and theirs).
    pub handle: String,
    /// When the OTP expires, in Unix seconds.
    pub expires_at: i64,
    pub phase: OtpPhase,
    /// Digests of the OTPs the provider refused, and of any OTP already in the cell when this
    /// request was made (it cannot be this request's).
    pub tried: Vec<String>,
    /// OTPs sent for the row so far.
    pub sent: u32,
}

/// A row as the dispatcher sees it when resuming.
#[derive(Debug, Clone)]
pub struct RowRecord {
    pub key: RowKey,
    pub state: RowState,
    pub status: Option<Status>,
    pub request_id: Option<String>,
    pub batch_id: Option<i64>,
    /// Whether the row's batch was accepted and is still to be polled: such a row is never
    /// sent again on its own, whatever its status.
    pub batch_open: bool,
    /// A two-step check's OTP request, once one was made.
    pub otp: Option<OtpRequest>,
}

/// One row as the merge writes it.
#[derive(Debug, Clone)]
pub struct ExportRow {
    pub key: RowKey,
    pub duplicate_of: Option<RowKey>,
    pub state: RowState,
    pub status: Option<Status>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub provider_status: Option<String>,
    pub request_id: Option<String>,
    pub checked_at: Option<String>,
    pub attempts: u32,
    /// The check's own fields' values, one for each of [`Journal::field_names`], in its order:
    /// the output's columns, which the merge fills without looking a name up.
    pub fields: Vec<Option<String>>,
    /// The answer came from an earlier job on the account, without a call.
    pub reused: bool,
}

impl ExportRow {
    /// A row for [`Fill::into`] to fill.
    fn blank() -> ExportRow {
        ExportRow {
            key: RowKey(0),
            duplicate_of: None,
            state: RowState::Planned,
            status: None,
            reason: None,
            message: None,
            provider_status: None,
            request_id: None,
            checked_at: None,
            attempts: 0,
            fields: Vec::new(),
            reused: false,
        }
    }
}

/// Reads row states page by page, so that a long read never pins the WAL.
pub struct JournalReader {
    dir: PathBuf,
    conn: Connection,
}

impl Journal {
    /// A second connection for reading while the writer thread writes (WAL allows both).
    pub fn reader(&self) -> Result<JournalReader, JournalError> {
        let conn = Connection::open_with_flags(
            self.dir.join(DB_FILE),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| self.sql(e))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| self.sql(e))?;
        Ok(JournalReader {
            dir: self.dir.clone(),
            conn,
        })
    }

    /// The check's own result fields over all rows, in the order they first appear: the
    /// columns of the output after the common ones.
    pub fn field_names(&self) -> Result<Vec<String>, JournalError> {
        if fields::numbered(self.meta("format")?.as_deref()) {
            return fields::names_in_row_order(&self.conn).map_err(|e| self.sql(e));
        }
        let mut st = self
            .conn
            .prepare("SELECT fields FROM rows WHERE fields IS NOT NULL ORDER BY row_key")
            .map_err(|e| self.sql(e))?;
        let mut rows = st.query([]).map_err(|e| self.sql(e))?;
        let mut names: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while let Some(r) = rows.next().map_err(|e| self.sql(e))? {
            let text: String = r.get(0).map_err(|e| self.sql(e))?;
            for (name, _) in fields::decode(&text, &[]) {
                if seen.insert(name.clone()) {
                    names.push(name);
                }
            }
        }
        Ok(names)
    }

    /// Every row's outcome for the merge, one at a time in key order; a duplicate carries its
    /// leader's. Streamed: the merge must not hold a second copy of every result.
    pub fn export_each(&self, mut f: impl FnMut(ExportRow)) -> Result<(), JournalError> {
        let positions = self.export_positions()?;
        export_rows(&self.conn, &self.dir, &positions, |fill| {
            let mut row = ExportRow::blank();
            fill.into(&mut row)?;
            f(row);
            Ok(ControlFlow::Continue(()))
        })
    }

    /// [`Journal::export_each`], read on a thread of its own a chunk at a time while `f` takes
    /// the rows on this one: reading the journal is about half of the output step's work.
    /// `f`'s first error stops the reading and is returned; the reading's own error is
    /// returned once `f` has taken every row read before it.
    pub fn export_ahead<E: From<JournalError>>(
        &self,
        mut f: impl FnMut(&ExportRow) -> Result<(), E>,
    ) -> Result<(), E> {
        let reader = self.reader()?;
        let positions = self.export_positions()?;
        let (chunks, ahead) = mpsc::sync_channel(AHEAD_CHUNKS);
        // Each chunk goes back to the reading thread once taken, to be emptied and filled
        // there: freeing rows the other thread allocated took the merge's thread a sixth of
        // its time, in the allocator's slow paths.
        let (spent, back) = mpsc::channel();
        std::thread::scope(|scope| {
            let reading = std::thread::Builder::new()
                .name("export".into())
                .spawn_scoped(scope, move || reader.send_rows(&positions, &chunks, &back))
                .map_err(io_error(&self.dir))?;
            let taken = ahead.iter().try_for_each(|chunk: Vec<ExportRow>| {
                chunk.iter().try_for_each(&mut f)?;
                let _ = spent.send(chunk);
                Ok::<_, E>(())
            });
            // A reader blocked on a full queue sees it closed, and stops.
            drop(ahead);
            let read = reading
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            taken?;
            Ok(read?)
        })
    }
}

/// Rows the export's reading thread hands over at a time, and the chunks it may read ahead of
/// the merge: a bounded queue, whose chunks are used again, so that the output step's memory
/// does not grow with the rows.
const AHEAD_CHUNK: usize = 2048;
const AHEAD_CHUNKS: usize = 4;

impl Journal {
    /// Where each field goes in an exported row: at its place in [`Journal::field_names`].
    fn export_positions(&self) -> Result<fields::Positions, JournalError> {
        let numbered = fields::numbered(self.meta("format")?.as_deref());
        let names = if numbered {
            fields::numbered_names(&self.conn).map_err(|e| self.sql(e))?
        } else {
            Vec::new()
        };
        Ok(fields::Positions::new(
            numbered,
            &names,
            &self.field_names()?,
        ))
    }
}

/// What a batch gives the rows that keep no copy of it: its request id, once the provider
/// accepted it, and the time of the outcomes its first rows took.
pub(super) struct BatchGives {
    pub(super) request_id: Option<String>,
    pub(super) answered_at: Option<String>,
}

/// What each batch gives its rows, by batch id: looked up for every row of a batch job, so
/// hashed with foldhash rather than SipHash.
pub(super) type Batches = foldhash::HashMap<i64, BatchGives>;

/// Every batch's [`BatchGives`], by its id: a batch is one for thousands of rows, so the
/// export reads them once rather than joining each row with its batch.
pub(super) fn batches_give(conn: &Connection) -> rusqlite::Result<Batches> {
    let mut st = conn.prepare("SELECT batch_id, state, request_id, answered_at FROM batches")?;
    st.query_map([], |r| {
        let state: BatchState = r.get(1)?;
        Ok((
            r.get(0)?,
            BatchGives {
                request_id: r
                    .get::<_, Option<String>>(2)?
                    .filter(|_| BATCH_ACCEPTED.contains(&state)),
                answered_at: r.get(3)?,
            },
        ))
    })?
    .collect()
}

/// The columns of a row the export reads, its outcome's from `state` on: a duplicate's
/// outcome is its leader's, read by its key.
const ROW_OUTCOME: &str = "state, status, reason, message, provider_status, request_id, \
                           checked_at, attempts, fields, reused, batch_id";

/// One row of the export's query, read into an [`ExportRow`].
struct Fill<'r, 's> {
    r: &'r rusqlite::Row<'s>,
    conn: &'r Connection,
    positions: &'r fields::Positions,
    batches: &'r Batches,
    /// The outcome its batch keeps for the row, or for a duplicate its leader's.
    kept: Option<&'r KeptOutcome>,
}

impl Fill<'_, '_> {
    /// Reads the row into `row`, keeping the strings it holds for the new values: the reading
    /// thread fills the same rows again, chunk after chunk.
    fn into(&self, row: &mut ExportRow) -> rusqlite::Result<()> {
        let r = self.r;
        row.key = RowKey(r.get::<_, i64>(0)? as u64);
        row.duplicate_of = r.get::<_, Option<i64>>(1)?.map(|k| RowKey(k as u64));
        if let Some(kept) = self.kept {
            self.kept_outcome(kept, row);
            return Ok(());
        }
        match row.duplicate_of {
            None => self.outcome(r, 2, row),
            Some(leader) => self
                .conn
                .prepare_cached(&format!(
                    "SELECT {ROW_OUTCOME} FROM rows WHERE row_key = ?1"
                ))?
                .query_row([leader.0 as i64], |l| self.outcome(l, 0, row)),
        }
    }

    /// Fills `row` with the outcome its batch keeps, which takes the batch's request id and
    /// time as a row's record does.
    fn kept_outcome(&self, kept: &KeptOutcome, row: &mut ExportRow) {
        let batch = self.batches.get(&kept.batch_id);
        row.state = KeptOutcome::STATE;
        row.status = Status::parse(&kept.status);
        fields::set_text(&mut row.reason, kept.reason.as_deref());
        fields::set_text(&mut row.message, kept.message.as_deref());
        fields::set_text(&mut row.provider_status, kept.provider_status.as_deref());
        let request_id = batch.and_then(|b| b.request_id.as_deref());
        fields::set_text(
            &mut row.request_id,
            kept.request_id.as_deref().or(request_id),
        );
        let answered_at = batch.and_then(|b| b.answered_at.as_deref());
        fields::set_text(
            &mut row.checked_at,
            kept.checked_at.as_deref().or(answered_at),
        );
        row.attempts = kept.attempts;
        row.fields.resize(self.positions.width(), None);
        self.positions
            .decode_into(kept.fields.as_deref(), &mut row.fields);
        row.reused = false;
    }

    /// Reads the outcome columns of `r` from `at` on into `row`: a batch row's request id and
    /// time from its batch when it keeps none of its own (as `request_id_sql` and
    /// `checked_at_sql` say in SQL).
    fn outcome(&self, r: &rusqlite::Row, at: usize, row: &mut ExportRow) -> rusqlite::Result<()> {
        let text =
            |i: usize| -> rusqlite::Result<Option<&str>> { Ok(r.get_ref(i)?.as_str_or_null()?) };
        let batch = r
            .get::<_, Option<i64>>(at + 10)?
            .and_then(|b| self.batches.get(&b));
        row.state = r.get(at)?;
        row.status = text(at + 1)?.and_then(Status::parse);
        fields::set_text(&mut row.reason, text(at + 2)?);
        fields::set_text(&mut row.message, text(at + 3)?);
        fields::set_text(&mut row.provider_status, text(at + 4)?);
        let request_id = batch
            .filter(|_| ROWS_TAKE_BATCH_ID.contains(&row.state))
            .and_then(|b| b.request_id.as_deref());
        fields::set_text(&mut row.request_id, text(at + 5)?.or(request_id));
        let answered_at = batch
            .filter(|_| row.state == RowState::Done)
            .and_then(|b| b.answered_at.as_deref());
        fields::set_text(&mut row.checked_at, text(at + 6)?.or(answered_at));
        row.attempts = r.get::<_, i64>(at + 7)? as u32;
        row.fields.resize(self.positions.width(), None);
        self.positions.decode_into(text(at + 8)?, &mut row.fields);
        row.reused = r.get::<_, Option<i64>>(at + 9)? == Some(1);
        Ok(())
    }
}

/// [`Journal::export_each`] on the connection `conn`, each row given to `f` to read, until `f`
/// breaks. The rows are read by one scan in key order, joined with nothing.
fn export_rows(
    conn: &Connection,
    dir: &Path,
    positions: &fields::Positions,
    mut f: impl FnMut(&Fill) -> rusqlite::Result<ControlFlow<()>>,
) -> Result<(), JournalError> {
    let sql = sql_error(dir);
    let batches = batches_give(conn).map_err(sql)?;
    let mut st = conn
        .prepare(&format!(
            "SELECT row_key, dup_of, {ROW_OUTCOME} FROM rows ORDER BY row_key"
        ))
        .map_err(sql)?;
    let mut window = kept::Window::new(conn).map_err(sql)?;
    // A duplicate's leader's kept outcome, read alone.
    let mut led;
    let mut rows = st.query([]).map_err(sql)?;
    while let Some(r) = rows.next().map_err(sql)? {
        let key = RowKey(r.get::<_, i64>(0).map_err(sql)? as u64);
        let leader = r.get::<_, Option<i64>>(1).map_err(sql)?;
        let kept = match leader {
            None => window.get(conn, key).map_err(sql)?,
            Some(leader) => {
                led = window.leader(conn, RowKey(leader as u64)).map_err(sql)?;
                led.as_ref()
            }
        };
        let fill = Fill {
            r,
            conn,
            positions,
            batches: &batches,
            kept,
        };
        if f(&fill).map_err(sql)?.is_break() {
            break;
        }
    }
    Ok(())
}

impl JournalReader {
    /// Sends the export's rows to `chunks` a chunk at a time, until they end or the queue
    /// closes: the merge stopped, and says why. The chunks the merge took come back through
    /// `back`, to be filled again; a new one is made only when none has.
    fn send_rows(
        self,
        positions: &fields::Positions,
        chunks: &SyncSender<Vec<ExportRow>>,
        back: &Receiver<Vec<ExportRow>>,
    ) -> Result<(), JournalError> {
        let mut chunk = Vec::with_capacity(AHEAD_CHUNK);
        // Rows of `chunk` filled: a chunk that came back keeps its rows, to be filled again.
        let mut filled = 0;
        let read = export_rows(&self.conn, &self.dir, positions, |fill| {
            if filled == chunk.len() {
                chunk.push(ExportRow::blank());
            }
            fill.into(&mut chunk[filled])?;
            filled += 1;
            if filled < AHEAD_CHUNK {
                return Ok(ControlFlow::Continue(()));
            }
            filled = 0;
            let next = back
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(AHEAD_CHUNK));
            Ok(match chunks.send(std::mem::replace(&mut chunk, next)) {
                Ok(()) => ControlFlow::Continue(()),
                Err(_) => ControlFlow::Break(()),
            })
        });
        // The rows read before an error go too, ahead of it.
        if filled > 0 {
            chunk.truncate(filled);
            let _ = chunks.send(chunk);
        }
        read
    }

    /// Up to `limit` rows with keys above `after`, in key order.
    pub fn page(
        &self,
        after: Option<RowKey>,
        limit: usize,
    ) -> Result<Vec<RowRecord>, JournalError> {
        let sql = sql_error(&self.dir);
        let mut st = self.conn.prepare_cached(&records_sql("0")).map_err(sql)?;
        let after = after.map_or(-1, |k| k.0 as i64);
        let mut records: Vec<RowRecord> = st
            .query_map(params![after, limit as i64], record)
            .and_then(Iterator::collect)
            .map_err(sql)?;
        let (first, last) = (records.first(), records.last());
        let kept =
            kept::kept_over(&self.conn, first.map(|r| r.key), last.map(|r| r.key)).map_err(sql)?;
        KeptBatches::new(&self.conn)
            .records(&kept, &mut records)
            .map_err(sql)?;
        Ok(records)
    }

    /// How many rows `needs` holds for, which must not look at a row's key. A row planned and
    /// not touched since (no status, request, batch or OTP request) is counted without being
    /// read: every such row has the same record but for its key. A fresh job is nearly all of
    /// them: a 10M-row job's count took 3.56 s, 2.56 s with this and the cheaper SQL of
    /// `records_sql`.
    pub fn count(&self, needs: impl Fn(&RowRecord) -> bool) -> Result<u64, JournalError> {
        const PAGE: i64 = 10_000;
        let sql = sql_error(&self.dir);
        let template = RowRecord {
            key: RowKey(0),
            state: RowState::Planned,
            status: None,
            request_id: None,
            batch_id: None,
            batch_open: false,
            otp: None,
        };
        let untouched = needs(&template);
        let flag = format!(
            "r.state = '{}' AND r.status IS NULL AND r.request_id IS NULL \
             AND r.batch_id IS NULL AND o.row_key IS NULL",
            RowState::Planned.as_sql()
        );
        let mut st = self.conn.prepare(&records_sql(&flag)).map_err(sql)?;
        let mut batches = KeptBatches::new(&self.conn);
        let (mut n, mut after) = (0u64, -1i64);
        loop {
            // The page's records, none for an untouched row, and then the outcomes their
            // batches keep for the page's keys: such a row's record is planning's.
            let mut page: Vec<(RowKey, Option<RowRecord>)> = Vec::new();
            let mut rows = st.query(params![after, PAGE]).map_err(sql)?;
            while let Some(r) = rows.next().map_err(sql)? {
                after = r.get(0).map_err(sql)?;
                let read = if r.get(11).map_err(sql)? {
                    None
                } else {
                    Some(record(r).map_err(sql)?)
                };
                page.push((RowKey(after as u64), read));
            }
            drop(rows);
            let (first, last) = (page.first().map(|r| r.0), page.last().map(|r| r.0));
            let kept = kept::kept_over(&self.conn, first, last).map_err(sql)?;
            for (key, read) in &page {
                let counts = match (read, kept.get(key)) {
                    (_, Some(outcome)) => {
                        let mut rec = read.clone().unwrap_or_else(|| RowRecord {
                            key: *key,
                            ..template.clone()
                        });
                        batches.record(outcome, &mut rec).map_err(sql)?;
                        needs(&rec)
                    }
                    (None, None) => untouched,
                    (Some(rec), None) => needs(rec),
                };
                n += u64::from(counts);
            }
            if (page.len() as i64) < PAGE {
                return Ok(n);
            }
        }
    }
}

/// What a batch that keeps its rows' outcomes gives them besides: its request id once the
/// provider accepted it, and whether it is still to be polled.
struct KeptBatches<'c> {
    conn: &'c Connection,
    batches: HashMap<i64, (Option<BatchState>, Option<String>)>,
}

impl<'c> KeptBatches<'c> {
    fn new(conn: &'c Connection) -> KeptBatches<'c> {
        KeptBatches {
            conn,
            batches: HashMap::new(),
        }
    }

    /// The records of `records` whose outcomes their batches keep, as those say.
    fn records(
        &mut self,
        kept: &kept::KeptRows,
        records: &mut [RowRecord],
    ) -> rusqlite::Result<()> {
        if kept.is_empty() {
            return Ok(());
        }
        for rec in records {
            if let Some(outcome) = kept.get(&rec.key) {
                self.record(outcome, rec)?;
            }
        }
        Ok(())
    }

    /// `rec` as the outcome its batch keeps says; its OTP request is its own.
    fn record(&mut self, outcome: &KeptOutcome, rec: &mut RowRecord) -> rusqlite::Result<()> {
        let (state, request_id) = match self.batches.get(&outcome.batch_id) {
            Some(found) => found.clone(),
            None => {
                let found: (Option<BatchState>, Option<String>) = self
                    .conn
                    .prepare_cached("SELECT state, request_id FROM batches WHERE batch_id = ?1")?
                    .query_row([outcome.batch_id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?
                    .unwrap_or_default();
                self.batches.insert(outcome.batch_id, found.clone());
                found
            }
        };
        rec.state = KeptOutcome::STATE;
        rec.status = Status::parse(&outcome.status);
        rec.request_id = outcome
            .request_id
            .clone()
            .or_else(|| request_id.filter(|_| state.is_some_and(|s| BATCH_ACCEPTED.contains(&s))));
        rec.batch_id = Some(outcome.batch_id);
        rec.batch_open = state.is_some_and(|s| BatchState::OPEN.contains(&s));
        Ok(())
    }
}

/// The rows with keys above ?1, at most ?2 of them, in key order, as [`record`] reads them,
/// and last whether `flag` holds for the row.
fn records_sql(flag: &str) -> String {
    format!(
        "SELECT r.row_key, r.state, r.status, {}, r.batch_id,
                CASE WHEN r.batch_id IS NULL THEN 0 ELSE coalesce(b.state IN ({}), 0) END,
                o.handle, o.expires_at, o.phase, o.tried, o.sent, {flag}
         FROM rows r LEFT JOIN batches b ON b.batch_id = r.batch_id
              LEFT JOIN otp_requests o ON o.row_key = r.row_key
         WHERE r.row_key > ?1 ORDER BY r.row_key LIMIT ?2",
        request_id_sql("r", "b"),
        BatchState::open_sql()
    )
}

fn record(r: &rusqlite::Row) -> rusqlite::Result<RowRecord> {
    let status: Option<String> = r.get(2)?;
    let otp = match r.get::<_, Option<String>>(6)? {
        None => None,
        Some(handle) => {
            let phase: String = r.get(8)?;
            let tried: String = r.get(9)?;
            Some(OtpRequest {
                handle,
                expires_at: r.get(7)?,
                phase: OtpPhase::from_sql_or_closed(&phase),
                tried: tried.split_whitespace().map(str::to_owned).collect(),
                sent: r.get::<_, i64>(10)?.try_into().unwrap_or(u32::MAX),
            })
        }
    };
    Ok(RowRecord {
        key: RowKey(r.get::<_, i64>(0)? as u64),
        state: r.get(1)?,
        status: status.as_deref().and_then(Status::parse),
        request_id: r.get(3)?,
        batch_id: r.get(4)?,
        batch_open: r.get(5)?,
        otp,
    })
}

/// The time of the row `row`'s outcome, in SQL: its own, or for a row that took its outcome
/// with its batch's first rows, the batch's, which they do not each keep a copy of.
pub(super) fn checked_at_sql(row: &str, batch: &str) -> String {
    format!(
        "coalesce({row}.checked_at, CASE WHEN {row}.state = '{}' THEN {batch}.answered_at END)",
        RowState::Done.as_sql()
    )
}

/// The states of a batch's row in which it takes the batch's request id.
const ROWS_TAKE_BATCH_ID: [RowState; 3] =
    [RowState::Running, RowState::Done, RowState::Unconfirmed];

/// The states of a batch the provider accepted, which has its request id.
const BATCH_ACCEPTED: [BatchState; 5] = [
    BatchState::Uploaded,
    BatchState::Reconcile,
    BatchState::Done,
    BatchState::Unconfirmed,
    BatchState::Abandoned,
];

/// The request id of the row `row`, in SQL: its own, or for a row of the batch `batch` once
/// the batch was accepted, the batch's, which its rows do not each keep a copy of.
pub(super) fn request_id_sql(row: &str, batch: &str) -> String {
    let rows = sql_list(ROWS_TAKE_BATCH_ID.map(RowState::as_sql));
    let batches = sql_list(BATCH_ACCEPTED.map(BatchState::as_sql));
    format!(
        "coalesce({row}.request_id, CASE WHEN {row}.batch_id IS NOT NULL \
         AND {row}.state IN ({rows}) AND {batch}.state IN ({batches}) \
         THEN {batch}.request_id END)"
    )
}
