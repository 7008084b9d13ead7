//! The job's history: each run that worked on it (when it started, read and planned, sent and
//! wrote, how it ended), the requests of each second and their round trips per endpoint. What
//! the run report draws and `status` reads, kept as counters, never a record per request and
//! never an identifier.
//!
//! A run's row is written by the run itself on the main connection at its milestones, and its
//! progress (`heartbeat_ms`, `paid`, `settled`) and the timeline by the writer thread with its
//! commits, at most every [`FOLLOW_EVERY`]: a kill loses at most that much of the counts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};

use super::kept::{self, KeptOutcome};
use super::schema::DB_FILE;
use super::{Journal, JournalError, RowState, members, sql_error};
use crate::outcome::{RowKey, Status};
use crate::stats::{Second, Stats, Taken};
use crate::util::time::unix_ms;

/// How often the writer thread records a run's progress and its timeline.
pub(super) const FOLLOW_EVERY: Duration = Duration::from_secs(5);

/// One run of the job, as its row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// 1 for the job's first run, then 2, ...
    pub run: i64,
    pub pid: u32,
    pub version: String,
    /// Unix milliseconds.
    pub started_ms: i64,
    /// When the inputs were read and planned.
    pub prepared_ms: Option<i64>,
    /// When the last request was settled.
    pub dispatched_ms: Option<i64>,
    /// When the output was written, or the run failed; `None` while it runs, or when it was
    /// killed.
    pub ended_ms: Option<i64>,
    pub exit_code: Option<u8>,
    /// The last time the run's writer recorded its progress.
    pub heartbeat_ms: Option<i64>,
    /// Rows that needed a call when the run began.
    pub work: u64,
    /// Rows given an earlier job's answer by this run, without a call.
    pub reused: u64,
    /// Paid calls made (rows, for a batch check).
    pub paid: u64,
    /// Rows that reached an outcome in this run, final or not.
    pub settled: u64,
}

/// What a run's writer thread follows: the run's row and the counters it records.
pub struct Following {
    pub run: i64,
    pub stats: Arc<Stats>,
}

/// The job's history, as the report and `status` read it.
#[derive(Debug, Default)]
pub struct History {
    /// Oldest first.
    pub runs: Vec<RunRecord>,
    /// `(run, Unix second, counts)`, in time order.
    pub seconds: Vec<(i64, i64, Second)>,
    /// `(endpoint, latency bucket, answers)` over every run.
    pub latency: Vec<(String, u32, u64)>,
}

impl Journal {
    /// Records that a run of this job began at `started_ms`, by this process; its number.
    pub fn begin_run(&self, started_ms: i64) -> Result<i64, JournalError> {
        self.conn
            .query_row(
                "INSERT INTO runs (run, pid, version, started_ms)
                 VALUES ((SELECT coalesce(max(run), 0) + 1 FROM runs), ?1, ?2, ?3)
                 RETURNING run",
                params![std::process::id(), env!("CARGO_PKG_VERSION"), started_ms],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))
    }

    /// The run read and planned its inputs: `work` rows need a call, `reused` were answered
    /// from the results store.
    pub fn run_prepared(&self, run: i64, work: u64, reused: u64) -> Result<(), JournalError> {
        self.run_update(
            "UPDATE runs SET prepared_ms = ?2, work = ?3, reused = ?4 WHERE run = ?1",
            params![run, unix_ms(), work as i64, reused as i64],
        )
    }

    /// The run sent and settled what it could.
    pub fn run_dispatched(&self, run: i64) -> Result<(), JournalError> {
        self.run_update(
            "UPDATE runs SET dispatched_ms = ?2 WHERE run = ?1",
            params![run, unix_ms()],
        )
    }

    /// The run ended with `exit_code`, having made `paid` paid calls.
    pub fn end_run(&self, run: i64, exit_code: u8, paid: u64) -> Result<(), JournalError> {
        self.run_update(
            "UPDATE runs SET ended_ms = ?2, exit_code = ?3, paid = max(paid, ?4) WHERE run = ?1",
            params![run, unix_ms(), exit_code, paid as i64],
        )
    }

    fn run_update(&self, sql: &str, params: impl rusqlite::Params) -> Result<(), JournalError> {
        self.conn
            .execute(sql, params)
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// The job's history, for the run report.
    pub fn history(&self) -> Result<History, JournalError> {
        read_history(&self.conn).map_err(|e| self.sql(e))
    }

    /// See [`Peek::outcome_groups`].
    pub fn outcome_groups(&self) -> Result<Vec<OutcomeGroup>, JournalError> {
        outcome_groups(&self.conn).map_err(|e| self.sql(e))
    }
}

/// Records what the writer thread follows of its run, in the transaction `tx` it commits:
/// the timeline taken since the last time, and the run's progress.
pub(super) fn record_progress(
    tx: &Transaction,
    following: &Following,
    taken: &Taken,
) -> rusqlite::Result<()> {
    let run = following.run;
    let mut second = tx.prepare_cached(
        "INSERT INTO seconds (run, second, paid, polls, downloads, accepted, rate_limited, retries)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (run, second) DO UPDATE SET paid = paid + excluded.paid,
             polls = polls + excluded.polls, downloads = downloads + excluded.downloads,
             accepted = accepted + excluded.accepted,
             rate_limited = rate_limited + excluded.rate_limited,
             retries = retries + excluded.retries",
    )?;
    for (at, s) in &taken.seconds {
        second.execute(params![
            run,
            at,
            s.paid as i64,
            s.polls as i64,
            s.downloads as i64,
            s.accepted as i64,
            s.rate_limited as i64,
            s.retries as i64
        ])?;
    }
    let mut latency = tx.prepare_cached(
        "INSERT INTO latency (run, endpoint, bucket, answers) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (run, endpoint, bucket) DO UPDATE SET answers = answers + excluded.answers",
    )?;
    for (endpoint, bucket, n) in &taken.latency {
        latency.execute(params![run, endpoint, bucket, *n as i64])?;
    }
    tx.prepare_cached("UPDATE runs SET heartbeat_ms = ?2, paid = ?3, settled = ?4 WHERE run = ?1")?
        .execute(params![
            run,
            unix_ms(),
            Stats::get(&following.stats.paid) as i64,
            Stats::get(&following.stats.done) as i64
        ])?;
    Ok(())
}

fn read_history(conn: &Connection) -> rusqlite::Result<History> {
    let runs = conn
        .prepare(
            "SELECT run, pid, version, started_ms, prepared_ms, dispatched_ms, ended_ms,
                    exit_code, heartbeat_ms, work, reused, paid, settled
             FROM runs ORDER BY run",
        )?
        .query_map([], |r| {
            Ok(RunRecord {
                run: r.get(0)?,
                pid: r.get(1)?,
                version: r.get(2)?,
                started_ms: r.get(3)?,
                prepared_ms: r.get(4)?,
                dispatched_ms: r.get(5)?,
                ended_ms: r.get(6)?,
                exit_code: r.get(7)?,
                heartbeat_ms: r.get(8)?,
                work: r.get::<_, i64>(9)? as u64,
                reused: r.get::<_, i64>(10)? as u64,
                paid: r.get::<_, i64>(11)? as u64,
                settled: r.get::<_, i64>(12)? as u64,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let seconds = conn
        .prepare(
            "SELECT run, second, paid, polls, downloads, accepted, rate_limited, retries
             FROM seconds ORDER BY second, run",
        )?
        .query_map([], |r| {
            let n = |i| r.get::<_, i64>(i).map(|v| v as u64);
            Ok((
                r.get(0)?,
                r.get(1)?,
                Second {
                    paid: n(2)?,
                    polls: n(3)?,
                    downloads: n(4)?,
                    accepted: n(5)?,
                    rate_limited: n(6)?,
                    retries: n(7)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let latency = conn
        .prepare(
            "SELECT endpoint, bucket, sum(answers) FROM latency
             GROUP BY endpoint, bucket ORDER BY endpoint, bucket",
        )?
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(History {
        runs,
        seconds,
        latency,
    })
}

/// A look at a job's state from outside its run: no lock is taken and nothing is written, so
/// that `status` can read while the run goes on without holding it up.
pub struct Peek {
    dir: PathBuf,
    conn: Connection,
}

impl Peek {
    /// Opens the journal in `dir` read-only; an error when it is not a job's state.
    pub fn open(dir: &Path) -> Result<Peek, JournalError> {
        let path = dir.join(DB_FILE);
        if !path.is_file() {
            return Err(JournalError::NoJob {
                dir: dir.display().to_string(),
            });
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql_error(dir))?;
        // A reader of a WAL journal waits only while a checkpoint resets the log, briefly.
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(sql_error(dir))?;
        // Planning writes in place, not through the WAL: a reader would hold it up at every
        // commit, and one stopped midway leaves a journal that only a writer can roll back.
        // Once this connection has read through the WAL, planning leaves the WAL alone.
        let planning = || JournalError::Planning {
            dir: dir.display().to_string(),
        };
        let mode = conn.query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0));
        match mode {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => {}
            Ok(_) => return Err(planning()),
            // A planning commit holds the file (only planning writes outside the WAL), or
            // a stopped one left its rollback journal.
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    || e.extended_code == rusqlite::ffi::SQLITE_READONLY_ROLLBACK =>
            {
                return Err(planning());
            }
            Err(e) => return Err(sql_error(dir)(e)),
        }
        Ok(Peek {
            dir: dir.to_path_buf(),
            conn,
        })
    }

    /// The check the state belongs to.
    pub fn check(&self) -> Result<Option<String>, JournalError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = 'check'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql_error(&self.dir))
    }

    /// The job's history so far.
    pub fn history(&self) -> Result<History, JournalError> {
        read_history(&self.conn).map_err(sql_error(&self.dir))
    }

    /// The rows by state, stored status and reason: what the output would say of them, read
    /// in one pass of the journal.
    pub fn outcome_groups(&self) -> Result<Vec<OutcomeGroup>, JournalError> {
        // Its reads in one snapshot: between two of them the run's writer may close a batch
        // whose rows the first read counted where the batch said.
        let read = || {
            let tx = self.conn.unchecked_transaction()?;
            let groups = outcome_groups(&tx)?;
            tx.commit()?;
            Ok(groups)
        };
        read().map_err(sql_error(&self.dir))
    }

    /// The pid recorded in the lock file of the state in `dir` by the run that last took it.
    pub fn lock_pid(dir: &Path) -> Option<u32> {
        std::fs::read_to_string(dir.join(super::lock::LOCK_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// Rows of one state, stored status and reason (a duplicate's are its leader's): what the
/// output says of a row comes from these three.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeGroup {
    pub state: RowState,
    pub status: Option<Status>,
    pub reason: Option<String>,
    pub rows: u64,
    /// Of them, rows that repeat an earlier row's identifier.
    pub duplicates: u64,
}

fn outcome_groups(conn: &Connection) -> rusqlite::Result<Vec<OutcomeGroup>> {
    let mut groups = stored_groups(conn)?;
    // The rows of a batch in flight are where their batch says, not yet in their records,
    // and so are the rows that repeat them; those that took an outcome the batch keeps, as
    // every row whose outcome its batch keeps, are where that says.
    let in_flight = members::unwritten(conn)?;
    let copies = if in_flight.is_empty() {
        HashMap::new()
    } else {
        copies_of(conn, &in_flight)?
    };
    let mut stored = conn.prepare(
        "SELECT state, status, reason FROM rows WHERE row_key = ?1 AND batch_id IS NOT ?2",
    )?;
    for batch in in_flight {
        let (batch_id, now) = (
            batch.batch_id,
            members::member_state(members::accepted(batch.state)),
        );
        let members = &batch.members;
        let answered = kept::kept_over(conn, members.first().copied(), members.last().copied())?;
        for key in batch.members {
            if answered.contains_key(&key) {
                continue;
            }
            let Some((state, status, reason)) = stored
                .query_row(params![key.0 as i64, batch_id], |r| {
                    let status: Option<String> = r.get(1)?;
                    Ok((
                        r.get(0)?,
                        status.as_deref().and_then(Status::parse),
                        r.get(2)?,
                    ))
                })
                .optional()?
            else {
                continue;
            };
            let duplicates = copies.get(&key.0).copied().unwrap_or(0);
            shift(&mut groups, (state, status, reason), -1, duplicates);
            shift(&mut groups, (now, None, None), 1, duplicates);
        }
    }
    kept_groups(conn, &mut groups)?;
    groups.retain(|g| g.rows > 0);
    Ok(groups)
}

/// A row's state, stored status and reason: its group.
type Group = (RowState, Option<Status>, Option<String>);

/// Moves a row and the `duplicates` that repeat it into (`sign` 1) or out of (-1) its group.
fn shift(groups: &mut Vec<OutcomeGroup>, group: Group, sign: i64, duplicates: i64) {
    let (state, status, reason) = group;
    let at = groups
        .iter()
        .position(|g| g.state == state && g.status == status && g.reason == reason);
    let at = at.unwrap_or_else(|| {
        groups.push(OutcomeGroup {
            state,
            status,
            reason,
            rows: 0,
            duplicates: 0,
        });
        groups.len() - 1
    });
    let g = &mut groups[at];
    g.rows = g.rows.saturating_add_signed(sign * (1 + duplicates));
    g.duplicates = g.duplicates.saturating_add_signed(sign * duplicates);
}

/// Moves each row whose outcome its batch keeps, and the rows that repeat it, from the group
/// of its record to its outcome's: a chunk at a time, its records and the rows repeating them
/// read by their range of keys.
fn kept_groups(conn: &Connection, groups: &mut Vec<OutcomeGroup>) -> rusqlite::Result<()> {
    let mut own = conn.prepare(
        "SELECT row_key, state, status, reason FROM rows WHERE row_key BETWEEN ?1 AND ?2",
    )?;
    let mut copies = conn.prepare(
        "SELECT dup_of, count(*) FROM rows
         WHERE dup_of IS NOT NULL AND dup_of BETWEEN ?1 AND ?2 GROUP BY dup_of",
    )?;
    kept::each_chunk(conn, |rows| {
        let (Some((lo, _)), Some((hi, _))) = (rows.first(), rows.last()) else {
            return Ok(());
        };
        // Rows spread wider than their chunk holds are read one at a time.
        let spans: Vec<(RowKey, RowKey)> = if hi.0 - lo.0 >= 4 * rows.len() as u64 {
            rows.iter().map(|(k, _)| (*k, *k)).collect()
        } else {
            vec![(*lo, *hi)]
        };
        let mut records: HashMap<i64, Group> = HashMap::new();
        let mut repeats: HashMap<i64, i64> = HashMap::new();
        for (lo, hi) in spans {
            let range = params![lo.0 as i64, hi.0 as i64];
            let mut read = own.query(range)?;
            while let Some(r) = read.next()? {
                let status: Option<String> = r.get(2)?;
                let group = (
                    r.get(1)?,
                    status.as_deref().and_then(Status::parse),
                    r.get(3)?,
                );
                records.insert(r.get(0)?, group);
            }
            let mut read = copies.query(range)?;
            while let Some(r) = read.next()? {
                repeats.insert(r.get(0)?, r.get(1)?);
            }
        }
        for (key, outcome) in rows {
            let key = key.0 as i64;
            let Some(record) = records.get(&key) else {
                continue;
            };
            let duplicates = repeats.get(&key).copied().unwrap_or(0);
            shift(groups, record.clone(), -1, duplicates);
            let status = Status::parse(&outcome.status);
            let taken = (KeptOutcome::STATE, status, outcome.reason);
            shift(groups, taken, 1, duplicates);
        }
        Ok(())
    })
}

/// How many rows repeat each row of the batches `in_flight`, by its key: one pass over the
/// rows, since no index is kept on what a row repeats.
fn copies_of(
    conn: &Connection,
    in_flight: &[members::Kept],
) -> rusqlite::Result<HashMap<u64, i64>> {
    let mut copies: HashMap<u64, i64> = in_flight
        .iter()
        .flat_map(|kept| kept.members.iter().map(|key| (key.0, 0)))
        .collect();
    let mut st = conn.prepare("SELECT dup_of FROM rows WHERE dup_of IS NOT NULL")?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        if let Some(n) = copies.get_mut(&(r.get::<_, i64>(0)? as u64)) {
            *n += 1;
        }
    }
    Ok(copies)
}

fn stored_groups(conn: &Connection) -> rusqlite::Result<Vec<OutcomeGroup>> {
    conn.prepare(
        "SELECT CASE WHEN s.row_key IS NULL THEN r.state ELSE s.state END,
                CASE WHEN s.row_key IS NULL THEN r.status ELSE s.status END,
                CASE WHEN s.row_key IS NULL THEN r.reason ELSE s.reason END, count(*),
                sum(r.dup_of IS NOT NULL)
         FROM rows r LEFT JOIN rows s ON s.row_key = r.dup_of
         GROUP BY 1, 2, 3",
    )?
    .query_map([], |r| {
        let status: Option<String> = r.get(1)?;
        Ok(OutcomeGroup {
            state: r.get(0)?,
            status: status.as_deref().and_then(Status::parse),
            reason: r.get(2)?,
            rows: r.get::<_, i64>(3)? as u64,
            duplicates: r.get::<_, i64>(4)? as u64,
        })
    })?
    .collect()
}
