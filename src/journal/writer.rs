//! The writer thread: every change a run makes to the journal, grouped into transactions,
//! and every move of a row or a batch checked against the lifecycles in `state`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{CachedStatement, Connection, Transaction, params};

mod batch;
mod queue;
mod rows;

use batch::{Unwritten, batch_intent, forget_batch, set_batch};
use queue::{Queue, USAGE_EVERY};
use rows::{FINISH_SQL, done, otp_change, refuse_row, set_state};

use super::fields::FieldNames;
use super::runs::{FOLLOW_EVERY, Following, record_progress};
use super::state::{Refused, Step};
use super::{BatchState, Journal, JournalError, RowState, schema};
use crate::outcome::{Outcome, RowKey};
use crate::stats::Taken;
use crate::util::sync::MinuteCounts;
use crate::util::time::now_rfc3339;

/// A change to a row's OTP request, recorded with the row's outcome in one transaction.
#[derive(Debug, Clone)]
pub enum OtpChange {
    /// A new OTP went out: a fresh request replaces any old one.
    Sent {
        handle: String,
        expires_at: i64,
        /// The digest of an OTP already in the cell.
        stale: Option<String>,
    },
    /// The OTP was refused (by the provider: its digest is kept; or before sending it, for its
    /// format or because it was refused before) and the request waits for another.
    Refused(Option<String>),
    Verifying,
    Closed,
}

/// One change to the journal.
enum Op {
    Intent {
        keys: Vec<RowKey>,
        batch_id: Option<i64>,
        /// The name the batch is uploaded under, when we choose it.
        name: Option<String>,
        /// When it is to be committed: its request's slot, less the commit's time. Its commit
        /// says how long it took from then.
        due: Instant,
        ack: tokio::sync::oneshot::Sender<Result<Duration, JournalError>>,
    },
    Revert {
        keys: Vec<RowKey>,
        batch_id: Option<i64>,
    },
    Unconfirmed {
        keys: Vec<RowKey>,
        batch_id: Option<i64>,
        attempts: Option<u32>,
    },
    Running {
        keys: Vec<RowKey>,
        batch_id: Option<i64>,
        request_id: String,
        attempts: u32,
        /// The batch's state: uploaded, or reconcile while it is unknown whether the provider
        /// has it.
        batch_state: BatchState,
    },
    Done {
        key: RowKey,
        outcome: Outcome,
        attempts: Option<u32>,
        /// A poll's answer to a running row, which a kill before its commit only costs a poll
        /// again: it waits for another change's commit, up to [`queue::PATIENCE`].
        patient: bool,
    },
    Otp {
        key: RowKey,
        change: OtpChange,
        outcome: Outcome,
        attempts: Option<u32>,
    },
    BatchClosed {
        batch_id: i64,
        state: BatchState,
    },
    Flush {
        ack: tokio::sync::oneshot::Sender<Result<(), JournalError>>,
        /// Whether the writer thread ends after this.
        close: bool,
    },
    /// Answers once the changes sent before it are committed, and writes nothing itself.
    Committed {
        ack: tokio::sync::oneshot::Sender<Result<(), JournalError>>,
    },
}

impl Op {
    /// Whether a caller waits for the commit.
    fn awaited(&self) -> bool {
        matches!(
            self,
            Op::Intent { .. } | Op::Flush { .. } | Op::Committed { .. }
        )
    }

    /// Whether the change may wait for another's commit ([`queue::PATIENCE`]).
    fn patient(&self) -> bool {
        matches!(self, Op::Done { patient: true, .. })
    }

    /// When an intent is to be committed.
    fn due(&self) -> Option<Instant> {
        match self {
            Op::Intent { due, .. } => Some(*due),
            _ => None,
        }
    }
}

/// Why a transaction was not committed.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Refused(#[from] Refused),
}

/// Why writing stopped, kept to answer every later caller: once a write failed, nothing more
/// is written and no paid call may leave.
#[derive(Debug, Clone, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Write(String),
    #[error("{0}")]
    Refused(String),
}

impl From<WriteError> for Failure {
    fn from(e: WriteError) -> Failure {
        match e {
            WriteError::Sqlite(e) => Failure::Write(e.to_string()),
            WriteError::Refused(r) => Failure::Refused(r.to_string()),
        }
    }
}

impl From<Failure> for JournalError {
    fn from(f: Failure) -> JournalError {
        match f {
            Failure::Write(why) => JournalError::WriteFailed(why),
            Failure::Refused(why) => JournalError::Refused(why),
        }
    }
}

/// The handle through which the engine records progress. Cheap to clone.
#[derive(Clone)]
pub struct JournalWriter {
    tx: Arc<Sender>,
    usage: Arc<MinuteCounts>,
    failed: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<Failure>>>,
}

/// The handles' side of the queue; the last one dropped closes it.
struct Sender(Arc<Queue>);

impl Drop for Sender {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The writer thread; joined after [`JournalWriter::close`].
pub struct WriterThread(std::thread::JoinHandle<()>);

impl WriterThread {
    pub fn join(self) {
        // A panic in the thread surfaces as failed writes already; nothing more to report.
        let _ = self.0.join();
    }
}

impl Journal {
    /// Starts the writer thread on its own connection.
    pub fn writer(&self) -> Result<(JournalWriter, WriterThread), JournalError> {
        self.writer_following(None)
    }

    /// Starts the writer thread of a run, which also records the run's progress and timeline
    /// ([`Following`]) with its commits.
    pub fn writer_following(
        &self,
        following: Option<Following>,
    ) -> Result<(JournalWriter, WriterThread), JournalError> {
        Journal::output_stale(&self.conn).map_err(|e| self.sql(e))?;
        let conn = schema::open_db(&self.dir)?;
        let names = FieldNames::load(&conn).map_err(|e| self.sql(e))?;
        let kept = self.meta("format")?.as_deref() == Some(schema::KEPT);
        let unwritten = Unwritten::load(&conn, kept).map_err(|e| self.sql(e))?;
        let queue = Arc::new(Queue::default());
        let failed = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let usage = Arc::new(MinuteCounts::default());
        let writer = JournalWriter {
            tx: Arc::new(Sender(queue.clone())),
            usage: usage.clone(),
            failed: failed.clone(),
            failure: failure.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || {
                let shared = Shared {
                    usage: &usage,
                    following: following.as_ref(),
                    failed,
                    failure,
                };
                write_loop(conn, names, unwritten, &queue, &shared);
                queue.end();
            })
            .map_err(super::io_error(&self.dir))?;
        Ok((writer, WriterThread(handle)))
    }
}

impl JournalWriter {
    fn send(&self, op: Op) {
        // Once the writer thread is gone, `failed()` reports why.
        self.tx.0.send(op);
    }

    /// Commits the intent to call for these rows (and their batch), at once: [`Self::intent_at`]
    /// now.
    pub fn intent(
        &self,
        keys: Vec<RowKey>,
        batch_id: Option<i64>,
        name: Option<String>,
    ) -> impl Future<Output = Result<Duration, JournalError>> + Send + 'static {
        self.intent_at(keys, batch_id, name, Instant::now())
    }

    /// Sends the intent to call for these rows (and their batch), to be committed at `at`,
    /// and returns what waits until it is durable, with how long that took from `at`. No paid
    /// request may leave before that gives `Ok`. A request granted ahead of its slot sends it
    /// as it is granted, to be committed as late as the commit's time allows: a kill in
    /// between leaves no intent of a request that had not left, and the runtime, woken for
    /// the slot anyway, finds it done.
    /// `name` is the name a batch is uploaded under, when we choose it: recorded with the
    /// intent, so that a run that dies before the answer asks the provider for it.
    pub fn intent_at(
        &self,
        keys: Vec<RowKey>,
        batch_id: Option<i64>,
        name: Option<String>,
        at: Instant,
    ) -> impl Future<Output = Result<Duration, JournalError>> + Send + 'static {
        let (ack, done) = tokio::sync::oneshot::channel();
        let checked = self.check();
        if checked.is_ok() {
            self.send(Op::Intent {
                keys,
                batch_id,
                name,
                due: at.max(Instant::now()),
                ack,
            });
        }
        async move {
            checked?;
            done.await
                .unwrap_or_else(|_| Err(JournalError::WriteFailed("the writer stopped".into())))
        }
    }

    /// The call was not sent after all (it failed to connect, or the run stopped first).
    pub fn revert(&self, keys: Vec<RowKey>, batch_id: Option<i64>) {
        self.send(Op::Revert { keys, batch_id });
    }

    /// The call may have reached the provider (after `attempts` tries, when known) but its
    /// answer was lost, or the provider no longer knows it.
    pub fn unconfirmed(&self, keys: Vec<RowKey>, batch_id: Option<i64>, attempts: Option<u32>) {
        self.send(Op::Unconfirmed {
            keys,
            batch_id,
            attempts,
        });
    }

    /// The provider accepted the call: from now on the rows are polled, never resent.
    pub fn running(
        &self,
        keys: Vec<RowKey>,
        batch_id: Option<i64>,
        request_id: String,
        attempts: u32,
    ) {
        self.send(Op::Running {
            keys,
            batch_id,
            request_id,
            attempts,
            batch_state: BatchState::Uploaded,
        });
    }

    /// A batch uploaded under `name` got no answer: its rows wait while that name is asked
    /// for, and are never uploaded under another name until the provider says it has none.
    pub fn reconciling(&self, keys: Vec<RowKey>, batch_id: i64, name: String, attempts: u32) {
        self.send(Op::Running {
            keys,
            batch_id: Some(batch_id),
            request_id: name,
            attempts,
            batch_state: BatchState::Reconcile,
        });
    }

    /// A row's outcome. `attempts` is the number of tries of its paid call, when this step made
    /// one.
    pub fn done(&self, key: RowKey, outcome: Outcome, attempts: Option<u32>) {
        self.send(Op::Done {
            key,
            outcome,
            attempts,
            patient: false,
        });
    }

    /// A running row's outcome, from a poll: committed with the next change that is not one,
    /// or within [`queue::PATIENCE`]. A paced run's rows each took a commit of their own for
    /// it, a wake of the writer thread a row.
    pub fn polled(&self, key: RowKey, outcome: Outcome) {
        self.send(Op::Done {
            key,
            outcome,
            attempts: None,
            patient: true,
        });
    }

    /// A two-step check's row: its OTP request changed, and this is its outcome now.
    pub fn otp(&self, key: RowKey, change: OtpChange, outcome: Outcome, attempts: Option<u32>) {
        self.send(Op::Otp {
            key,
            change,
            outcome,
            attempts,
        });
    }

    /// A batch whose rows all have an outcome, or that was given up: `state` says why, and
    /// decides whether its rows may go into a new batch.
    pub fn batch_closed(&self, batch_id: i64, state: BatchState) {
        self.send(Op::BatchClosed { batch_id, state });
    }

    /// A request sent to the provider in `minute`, for the per-day window of later runs. It
    /// is committed with the next change, or within [`USAGE_EVERY`]: a request per slot must
    /// not wake the writer each time.
    pub fn usage(&self, minute: i64) {
        self.usage.add(minute);
    }

    /// Waits until everything sent so far is committed.
    pub async fn flush(&self) -> Result<(), JournalError> {
        self.flush_and(false).await
    }

    /// Waits until everything sent so far is committed, as [`JournalWriter::flush`] does but
    /// leaving the rows of batches in flight as their batches keep them (a flush writes them,
    /// for a step that reads them): for a caller that only waits for the writer to catch up.
    pub async fn committed(&self) -> Result<(), JournalError> {
        let (ack, done) = tokio::sync::oneshot::channel();
        self.send(Op::Committed { ack });
        done.await
            .unwrap_or_else(|_| Err(JournalError::WriteFailed("the writer stopped".into())))?;
        self.check()
    }

    /// Commits everything sent so far and ends the writer thread; later changes are lost.
    pub async fn close(&self) -> Result<(), JournalError> {
        self.flush_and(true).await
    }

    async fn flush_and(&self, close: bool) -> Result<(), JournalError> {
        let (ack, done) = tokio::sync::oneshot::channel();
        self.send(Op::Flush { ack, close });
        done.await
            .unwrap_or_else(|_| Err(JournalError::WriteFailed("the writer stopped".into())))?;
        self.check()
    }

    /// Fails once any write has failed: the run must stop sending.
    pub fn check(&self) -> Result<(), JournalError> {
        if self.failed.load(Ordering::Acquire) {
            let failure = self.failure.lock().ok().and_then(|f| f.clone());
            Err(failure.map_or_else(|| JournalError::WriteFailed(String::new()), Into::into))
        } else {
            Ok(())
        }
    }
}

/// What the writer thread shares with the run besides its changes.
struct Shared<'a> {
    usage: &'a MinuteCounts,
    following: Option<&'a Following>,
    failed: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<Failure>>>,
}

fn write_loop(
    mut conn: Connection,
    mut names: FieldNames,
    mut unwritten: Unwritten,
    queue: &Queue,
    shared: &Shared,
) {
    let Shared {
        usage,
        following,
        failed,
        failure,
    } = shared;
    let mut synced = false;
    let mut committed: Option<Instant> = None;
    let mut counted_at = Instant::now();
    let mut followed = Instant::now();
    let mut checkpointed = Instant::now();
    loop {
        let (ops, open) = queue.next(committed, counted_at);
        // The run's progress and timeline, with a commit made anyway, and at least every
        // FOLLOW_EVERY while anything was counted; all of it with the last commit.
        let last = !open
            || ops
                .iter()
                .any(|op| matches!(op, Op::Flush { close: true, .. }));
        let counted = if last || counted_at.elapsed() >= USAGE_EVERY {
            counted_at = Instant::now();
            usage.take()
        } else {
            Vec::new()
        };
        let progress = following.filter(|_| last || followed.elapsed() >= FOLLOW_EVERY);
        let taken = progress
            .map(|f| f.stats.timeline.take())
            .unwrap_or_default();
        if ops.is_empty() && counted.is_empty() && taken.is_empty() {
            if open {
                continue;
            }
            return;
        }
        if progress.is_some() {
            followed = Instant::now();
        }
        let result = if failed.load(Ordering::Acquire) {
            let first = failure.lock().ok().and_then(|f| f.clone());
            Err(first.unwrap_or_else(|| Failure::Write("an earlier write failed".into())))
        } else {
            // Only an intent (and the last commit) buys the fsync; see `schema::durable`.
            let sync = ops
                .iter()
                .any(|op| matches!(op, Op::Intent { .. } | Op::Flush { close: true, .. }));
            let mode = if sync == synced {
                Ok(())
            } else {
                schema::durable(&conn, sync).inspect(|()| synced = sync)
            };
            mode.map_err(WriteError::from)
                .and_then(|()| {
                    let progress = progress.map(|f| (f, &taken));
                    let journal = (&mut names, &mut unwritten);
                    apply_all(&mut conn, journal, &ops, &counted, progress)
                })
                .map_err(Failure::from)
        };
        if let Err(why) = &result {
            if !failed.swap(true, Ordering::AcqRel) {
                tracing::error!("journal write failed: {why}");
            }
            if let Ok(mut f) = failure.lock() {
                f.get_or_insert_with(|| why.clone());
            }
        }
        committed = Some(Instant::now());
        let mut closing = !open;
        for op in ops {
            match op {
                Op::Intent { ack, due, .. } => {
                    let took = result.clone().map(|()| due.elapsed());
                    let _ = ack.send(took.map_err(JournalError::from));
                }
                Op::Flush { ack, close } => {
                    closing |= close;
                    let _ = ack.send(result.clone().map_err(JournalError::from));
                }
                Op::Committed { ack } => {
                    let _ = ack.send(result.clone().map_err(JournalError::from));
                }
                _ => {}
            }
        }
        if closing {
            return;
        }
        // After the acks: the checkpoint's syncs hold up no intent waiting for its commit.
        if result.is_ok() && checkpointed.elapsed() >= schema::RESTART_EVERY {
            checkpointed = Instant::now();
            schema::restart_short_log(&conn);
        }
    }
}

fn apply_all(
    conn: &mut Connection,
    (names, unwritten): (&mut FieldNames, &mut Unwritten),
    ops: &[Op],
    counted: &[(i64, u64)],
    progress: Option<(&Following, &Taken)>,
) -> Result<(), WriteError> {
    let tx = conn.transaction()?;
    // One time for the transaction's outcomes: they are committed together, and formatting
    // it for each row was a good part of the writer's work under a flow of answers.
    let now = now_rfc3339();
    // Prepared once a transaction, not once an outcome: the statement cache hashes the text
    // of each statement looked up, and this one's, once a row, was a tenth of the writer's
    // work under a flow of batch results.
    let mut finish = tx.prepare_cached(&FINISH_SQL)?;
    for op in ops {
        // A row whose outcome its batch keeps takes it back into its record before it moves.
        if let Op::Intent { keys, .. }
        | Op::Revert { keys, .. }
        | Op::Unconfirmed { keys, .. }
        | Op::Running { keys, .. } = op
        {
            unwritten.outcomes.own(&tx, keys)?;
        }
        apply(&tx, &mut finish, names, unwritten, op, &now)?;
    }
    drop(finish);
    unwritten.outcomes.store(&tx)?;
    if !counted.is_empty() {
        let mut add = tx.prepare_cached(
            "INSERT INTO usage (minute, requests) VALUES (?1, ?2)
             ON CONFLICT (minute) DO UPDATE SET requests = requests + excluded.requests",
        )?;
        for (minute, requests) in counted {
            add.execute(params![minute, *requests as i64])?;
        }
    }
    if let Some((following, taken)) = progress {
        record_progress(&tx, following, taken)?;
    }
    Ok(tx.commit()?)
}

fn apply(
    tx: &Transaction,
    finish: &mut CachedStatement,
    names: &mut FieldNames,
    unwritten: &mut Unwritten,
    op: &Op,
    now: &str,
) -> Result<(), WriteError> {
    match op {
        Op::Intent {
            keys,
            batch_id,
            name,
            ..
        } => {
            if let Some(b) = batch_id {
                // A batch's intent is its members, its rows left as they are until their
                // outcome; see `members`.
                if unwritten.intent(tx, keys, *b, name.as_deref())?.is_some() {
                    return Ok(());
                }
                batch_intent(tx, *b, name.as_deref())?;
            }
            set_state(tx, keys, Step::Intent, *batch_id, None, None)
        }
        Op::Revert { keys, batch_id } => {
            if let Some(b) = batch_id {
                unwritten.write(tx, *b)?;
                forget_batch(tx, *b, keys)?;
            }
            set_state(tx, keys, Step::Revert, None, None, None)
        }
        Op::Unconfirmed {
            keys,
            batch_id,
            attempts,
        } => {
            if let Some(b) = batch_id {
                unwritten.write(tx, *b)?;
                set_batch(tx, *b, BatchState::Unconfirmed, None)?;
            }
            set_state(tx, keys, Step::Hold, None, None, *attempts)
        }
        Op::Running {
            keys,
            batch_id,
            request_id,
            attempts,
            batch_state,
        } => match batch_id {
            // A batch's rows take its request id from the batch when read: 32 bytes less in
            // each row. An id one had from an earlier outcome is not its own any more.
            Some(b) => {
                let accepted = unwritten.accept(tx, *b, *batch_state, request_id, *attempts)?;
                if accepted.is_some() {
                    return Ok(());
                }
                set_batch(tx, *b, *batch_state, Some((request_id, *attempts)))?;
                let mut accept = tx.prepare_cached(
                    "UPDATE rows SET state = ?2, request_id = NULL,
                            attempts = coalesce(?3, attempts)
                     WHERE row_key = ?1 AND state = ?4",
                )?;
                for k in keys {
                    let moved = accept.execute(params![
                        k.0 as i64,
                        Step::Accept.target(),
                        *attempts,
                        RowState::Sending
                    ])?;
                    if moved == 0 {
                        refuse_row(tx, *k, Step::Accept)?;
                    }
                }
                Ok(())
            }
            None => {
                let id = Some(request_id.as_str());
                set_state(tx, keys, Step::Accept, None, id, Some(*attempts))
            }
        },
        Op::Done {
            key,
            outcome,
            attempts,
            ..
        } => {
            let journal = (names, unwritten);
            done(tx, finish, journal, *key, outcome, *attempts, now)
        }
        Op::Otp {
            key,
            change,
            outcome,
            attempts,
        } => {
            otp_change(tx, *key, change)?;
            let journal = (names, unwritten);
            done(tx, finish, journal, *key, outcome, *attempts, now)
        }
        Op::BatchClosed { batch_id, state } => {
            unwritten.write(tx, *batch_id)?;
            set_batch(tx, *batch_id, *state, None)
        }
        // What is committed reads whole: every batch's rows are written.
        Op::Flush { .. } => unwritten.write_all(tx),
        Op::Committed { .. } => Ok(()),
    }
}
