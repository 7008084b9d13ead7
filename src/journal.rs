//! The journal: the job's durable state in SQLite (WAL), the single source of truth for resume.
//!
//! A row's intent is committed before its paid call leaves the process, its request id as soon
//! as the provider gives one, and its outcome when known. A killed run therefore leaves every
//! row in a state that says exactly what the next run must do: nothing (an outcome), poll (a
//! request id), send (planned), or hold (`unconfirmed`: the call may have been billed but its
//! answer was lost). Writes go through one thread that groups them into transactions; the
//! callers that must wait for durability (intents) wait for their commit.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};
use sha2::{Digest, Sha256};

use crate::outcome::{Outcome, RowKey, Status};
use crate::util::fs::{create_private_dir, create_private_file, private_options};
use crate::util::time::now_rfc3339;

const DB_FILE: &str = "journal.sqlite";
const LOCK_FILE: &str = "lock";
const SCHEMA_VERSION: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("state directory {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("state journal in {dir}: {source}")]
    Sqlite {
        dir: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "another bulkverify run{pid} is using the state directory {dir}; \
         let it finish, or give this run its own --state"
    )]
    Busy { dir: String, pid: String },
    #[error(
        "the state directory {dir} belongs to a run of {found}, not {wanted}; \
         give this check its own output or --state"
    )]
    OtherCheck {
        dir: String,
        found: String,
        wanted: String,
    },
    #[error(
        "the state directory {dir} holds results from {found}, but this run talks to {wanted}; \
         results from the sandbox and from a live account must not mix: use another --state"
    )]
    OtherEnvironment {
        dir: String,
        found: String,
        wanted: String,
    },
    #[error(
        "the state directory {dir} was made for a different list of input files; \
         run with the same inputs to resume, or use --fresh to start over"
    )]
    OtherInputs { dir: String },
    #[error(
        "the state directory {dir} was made reading other columns ({found}; now {wanted}); \
         run with the same column mapping to resume, or use --fresh to start over"
    )]
    OtherColumns {
        dir: String,
        found: String,
        wanted: String,
    },
    #[error(
        "{file} changed since the state in {dir} was created (its content hash differs), so its \
         old results cannot be attached to its rows; restore the original file, or re-run with \
         --fresh to start over (the old state is kept aside, not deleted)"
    )]
    InputChanged { file: String, dir: String },
    #[error(
        "the state directory {dir} was written by a newer bulkverify (journal format {found}); \
         upgrade bulkverify"
    )]
    Format { dir: String, found: String },
    #[error(
        "the journal could not be written ({0}); no further paid call was made. \
         Free disk space and run the same command again to resume"
    )]
    WriteFailed(String),
    #[error("{dir} is not a bulkverify state directory (it holds no journal); nothing was deleted")]
    NotAState { dir: String },
}

/// Where a row is in its life. Stored as text so the journal can be read with `sqlite3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowState {
    /// Nothing sent yet.
    Planned,
    /// Intent committed; the paid call is about to leave or is in flight.
    Sending,
    /// The provider accepted it and gave a request id: poll, never resend.
    Running,
    /// An outcome is recorded (which may itself be `pending` or `error`).
    Done,
    /// A paid call may have reached the provider but its answer was lost.
    Unconfirmed,
    /// Same identifier as an earlier row: that row's outcome is copied.
    Duplicate,
}

impl RowState {
    fn as_str(self) -> &'static str {
        match self {
            RowState::Planned => "planned",
            RowState::Sending => "sending",
            RowState::Running => "running",
            RowState::Done => "done",
            RowState::Unconfirmed => "unconfirmed",
            RowState::Duplicate => "duplicate",
        }
    }

    /// A state read back. An unknown word is an error, never a default: reading a damaged
    /// state as `planned` would send a paid call again.
    fn parse(s: &str) -> Option<RowState> {
        Some(match s {
            "planned" => RowState::Planned,
            "sending" => RowState::Sending,
            "running" => RowState::Running,
            "done" => RowState::Done,
            "unconfirmed" => RowState::Unconfirmed,
            "duplicate" => RowState::Duplicate,
            _ => return None,
        })
    }
}

impl rusqlite::types::FromSql for RowState {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let text = value.as_str()?;
        RowState::parse(text).ok_or_else(|| {
            rusqlite::types::FromSqlError::Other(format!("unknown row state {text:?}").into())
        })
    }
}

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

/// Who the state belongs to: a journal refuses to serve another check or another environment.
pub struct Identity<'a> {
    pub check: &'a str,
    /// `sandbox`, or the provider's base URL.
    pub environment: &'a str,
}

/// What the planner decided for a row on first sight.
pub enum RowPlan {
    /// Failed local validation: final, never sent.
    Invalid(Outcome),
    /// To be verified; the hash of its normalised identifier detects duplicates without
    /// storing the identifier itself.
    Subject([u8; 16]),
}

/// Where a two-step check's OTP request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpPhase {
    /// The OTP went to the owner's phone; step two waits for it in the input.
    Awaiting,
    /// Step two was accepted and its result is being prepared: fetch it, never resend.
    Verifying,
    /// The provider will take no OTP for this request any more (expired, archived, already
    /// used): a new OTP is needed.
    Closed,
}

impl OtpPhase {
    fn as_str(self) -> &'static str {
        match self {
            OtpPhase::Awaiting => "awaiting",
            OtpPhase::Verifying => "verifying",
            OtpPhase::Closed => "closed",
        }
    }

    fn parse(s: &str) -> Option<OtpPhase> {
        Some(match s {
            "awaiting" => OtpPhase::Awaiting,
            "verifying" => OtpPhase::Verifying,
            "closed" => OtpPhase::Closed,
            _ => return None,
        })
    }
}

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

/// The durable state of one job.
pub struct Journal {
    dir: PathBuf,
    conn: Connection,
    _lock: File,
}

impl Journal {
    /// Opens (or creates) the state in `dir`, taking its lock for the life of the value.
    /// With `fresh`, an existing state is moved aside first.
    pub fn open(dir: &Path, identity: &Identity, fresh: bool) -> Result<Journal, JournalError> {
        let io = |source| JournalError::Io {
            dir: dir.display().to_string(),
            source,
        };
        if fresh && dir.exists() {
            let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
            let aside = PathBuf::from(format!("{}.old-{stamp}", dir.display()));
            // Moving a directory another run is using would pull its state away under it.
            drop(take_lock(dir)?);
            std::fs::rename(dir, &aside).map_err(io)?;
            tracing::warn!("the old state was moved to {}", aside.display());
        }
        create_private_dir(dir).map_err(io)?;
        let lock = take_lock(dir)?;
        let conn = open_db(dir)?;
        let journal = Journal {
            dir: dir.to_path_buf(),
            conn,
            _lock: lock,
        };
        journal.migrate()?;
        journal.check_identity(identity)?;
        Ok(journal)
    }

    /// Deletes a job's state (the journal holds the providers' answers, which are personal
    /// data) and the old states `--fresh` moved aside beside it, once no run uses it. Returns
    /// the directories deleted.
    pub fn purge(dir: &Path) -> Result<Vec<PathBuf>, JournalError> {
        let io = |source| JournalError::Io {
            dir: dir.display().to_string(),
            source,
        };
        let is_state = |d: &Path| d.join(DB_FILE).is_file() && d.join(LOCK_FILE).is_file();
        if !is_state(dir) {
            return Err(JournalError::NotAState {
                dir: dir.display().to_string(),
            });
        }
        let mut doomed = vec![dir.to_path_buf()];
        if let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            let aside = format!("{}.old-", name.to_string_lossy());
            for entry in std::fs::read_dir(parent).map_err(io)? {
                let path = entry.map_err(io)?.path();
                let named = path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&aside));
                if named && is_state(&path) {
                    doomed.push(path);
                }
            }
        }
        let mut deleted = Vec::new();
        for d in doomed {
            // Held while deleting: a run that starts meanwhile finds it taken.
            let _lock = take_lock(&d)?;
            std::fs::remove_dir_all(&d).map_err(|source| JournalError::Io {
                dir: d.display().to_string(),
                source,
            })?;
            deleted.push(d);
        }
        Ok(deleted)
    }

    fn sql(&self, source: rusqlite::Error) -> JournalError {
        sql_error(&self.dir)(source)
    }

    fn migrate(&self) -> Result<(), JournalError> {
        self.conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
                 CREATE TABLE IF NOT EXISTS inputs (
                     file_idx INTEGER PRIMARY KEY, path TEXT NOT NULL, sha256 TEXT NOT NULL) STRICT;
                 CREATE TABLE IF NOT EXISTS rows (
                     row_key INTEGER PRIMARY KEY,
                     ident BLOB,
                     dup_of INTEGER,
                     state TEXT NOT NULL,
                     batch_id INTEGER,
                     request_id TEXT,
                     attempts INTEGER NOT NULL DEFAULT 0,
                     status TEXT, reason TEXT, message TEXT, provider_status TEXT,
                     checked_at TEXT, fields TEXT) STRICT;
                 CREATE INDEX IF NOT EXISTS rows_ident ON rows(ident) WHERE dup_of IS NULL;
                 CREATE INDEX IF NOT EXISTS rows_batch ON rows(batch_id) WHERE batch_id IS NOT NULL;
                 CREATE TABLE IF NOT EXISTS batches (
                     batch_id INTEGER PRIMARY KEY,
                     state TEXT NOT NULL,
                     request_id TEXT,
                     attempts INTEGER NOT NULL DEFAULT 0,
                     created_at TEXT NOT NULL) STRICT;
                 CREATE TABLE IF NOT EXISTS usage (
                     minute INTEGER PRIMARY KEY, requests INTEGER NOT NULL) STRICT;
                 CREATE TABLE IF NOT EXISTS otp_requests (
                     row_key INTEGER PRIMARY KEY,
                     handle TEXT NOT NULL,
                     expires_at INTEGER NOT NULL,
                     phase TEXT NOT NULL,
                     tried TEXT NOT NULL DEFAULT '',
                     sent INTEGER NOT NULL DEFAULT 1) STRICT;",
            )
            .map_err(|e| self.sql(e))?;
        match self.meta("format")? {
            None => self.set_meta("format", SCHEMA_VERSION),
            Some(v) if v == SCHEMA_VERSION => Ok(()),
            Some(found) => Err(JournalError::Format {
                dir: self.dir.display().to_string(),
                found,
            }),
        }
    }

    fn meta(&self, key: &str) -> Result<Option<String>, JournalError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.sql(e))
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), JournalError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    fn check_identity(&self, identity: &Identity) -> Result<(), JournalError> {
        let dir = self.dir.display().to_string();
        match self.meta("check")? {
            None => {
                self.set_meta("check", identity.check)?;
                self.set_meta("environment", identity.environment)?;
                self.set_meta("created_at", &now_rfc3339())?;
                Ok(())
            }
            Some(found) if found != identity.check => Err(JournalError::OtherCheck {
                dir,
                found,
                wanted: identity.check.into(),
            }),
            Some(_) => match self.meta("environment")? {
                Some(found) if found != identity.environment => {
                    Err(JournalError::OtherEnvironment {
                        dir,
                        found,
                        wanted: identity.environment.into(),
                    })
                }
                _ => Ok(()),
            },
        }
    }

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
                                RowState::Done.as_str(),
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
                                state.as_str(),
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

    pub fn finish_planning(&self, rows: u64) -> Result<(), JournalError> {
        self.set_meta("planned_rows", &rows.to_string())
    }

    /// Settles what a dead run left in flight, before anything is dispatched: a call whose
    /// intent was committed but whose answer never arrived may have been billed, so it is held
    /// as `unconfirmed` — or, when the user asked for it, planned again. Returns the rows
    /// held and the rows planned again.
    pub fn recover(&mut self, resend_unconfirmed: bool) -> Result<(u64, u64), JournalError> {
        let sql = sql_error(&self.dir);
        let tx = self.conn.transaction().map_err(sql)?;
        // An upload under a name we chose is reconciled by asking for that name, not held.
        tx.execute(
            "UPDATE rows SET state = 'running',
                    request_id = (SELECT b.request_id FROM batches b WHERE b.batch_id = rows.batch_id)
             WHERE state = 'sending' AND batch_id IN
                   (SELECT batch_id FROM batches WHERE state = 'sending' AND request_id IS NOT NULL)",
            [],
        )
        .map_err(sql)?;
        tx.execute(
            "UPDATE batches SET state = 'reconcile'
             WHERE state = 'sending' AND request_id IS NOT NULL",
            [],
        )
        .map_err(sql)?;
        tx.execute(
            "UPDATE rows SET state = 'unconfirmed' WHERE state = 'sending'",
            [],
        )
        .map_err(sql)?;
        tx.execute(
            "UPDATE batches SET state = 'unconfirmed' WHERE state = 'sending'",
            [],
        )
        .map_err(sql)?;
        let mut released = 0;
        if resend_unconfirmed {
            released = tx
                .execute(
                    "UPDATE rows SET state = 'planned', batch_id = NULL WHERE state = 'unconfirmed'",
                    [],
                )
                .map_err(sql)?;
            tx.execute(
                "UPDATE batches SET state = 'abandoned' WHERE state = 'unconfirmed'",
                [],
            )
            .map_err(sql)?;
        }
        let held: i64 = tx
            .query_row(
                "SELECT count(*) FROM rows WHERE state = 'unconfirmed'",
                [],
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
            .prepare(
                "SELECT b.batch_id, b.request_id, r.row_key, r.ident, b.state = 'uploaded'
                 FROM batches b JOIN rows r ON r.batch_id = b.batch_id
                 WHERE b.state IN ('uploaded', 'reconcile')
                   AND (r.state = 'running' OR r.status IN ('pending', 'error'))
                 ORDER BY b.batch_id, r.row_key",
            )
            .map_err(|e| self.sql(e))?;
        let mut out: Vec<OpenBatch> = Vec::new();
        let rows = st
            .query_map([], |r| {
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

    /// What identifiers are hashed with ([`ident_hash`]): the check's
    /// name and a random key made with the state, so that the journal's hashes (of Aadhaar
    /// numbers, among others) cannot be looked up in a table computed once for every state.
    /// Whoever holds the state holds its key too: keep it private, and purge it when done. A
    /// state that holds rows from before keys hashes with the name alone, so that its rows
    /// still match.
    pub fn ident_scope(&self, check: &str) -> Result<String, JournalError> {
        if let Some(key) = self.meta("ident_key")? {
            return Ok(format!("{check}\0{key}"));
        }
        let rows: i64 = self
            .conn
            .query_row("SELECT count(*) FROM rows", [], |r| r.get(0))
            .map_err(|e| self.sql(e))?;
        if rows > 0 {
            return Ok(check.to_string());
        }
        let key: String = (0..4)
            .map(|_| format!("{:016x}", rand::random::<u64>()))
            .collect();
        self.set_meta("ident_key", &key)?;
        Ok(format!("{check}\0{key}"))
    }

    /// A random name for this job's state, made on first use: it makes the names we give
    /// uploads unique across every job that shares the provider account.
    pub fn job_token(&self) -> Result<String, JournalError> {
        if let Some(t) = self.meta("token")? {
            return Ok(t);
        }
        let token = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        self.set_meta("token", &token)?;
        Ok(token)
    }

    /// The next free batch id.
    pub fn next_batch_id(&self) -> Result<i64, JournalError> {
        self.conn
            .query_row(
                "SELECT coalesce(max(batch_id), 0) + 1 FROM batches",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))
    }

    /// Requests sent after `since_minute` (a Unix minute), per minute, across runs: the
    /// per-day window must remember what yesterday evening's run spent.
    pub fn usage_since(&self, since_minute: i64) -> Result<Vec<(i64, u64)>, JournalError> {
        let mut st = self
            .conn
            .prepare("SELECT minute, requests FROM usage WHERE minute > ?1 ORDER BY minute")
            .map_err(|e| self.sql(e))?;
        st.query_map([since_minute], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64))
        })
        .and_then(Iterator::collect)
        .map_err(|e| self.sql(e))
    }

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

    /// Starts the writer thread on its own connection.
    pub fn writer(&self) -> Result<(JournalWriter, WriterThread), JournalError> {
        let conn = open_db(&self.dir)?;
        let (tx, rx) = mpsc::channel();
        let failed = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let writer = JournalWriter {
            tx,
            failed: failed.clone(),
            failure: failure.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || write_loop(conn, rx, failed, failure))
            .map_err(|source| JournalError::Io {
                dir: self.dir.display().to_string(),
                source,
            })?;
        Ok((writer, WriterThread(handle)))
    }

    /// The check's own result fields over all rows, in the order they first appear: the
    /// columns of the output after the common ones.
    pub fn field_names(&self) -> Result<Vec<String>, JournalError> {
        let mut st = self
            .conn
            .prepare("SELECT fields FROM rows WHERE fields IS NOT NULL ORDER BY row_key")
            .map_err(|e| self.sql(e))?;
        let mut rows = st.query([]).map_err(|e| self.sql(e))?;
        let mut names: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while let Some(r) = rows.next().map_err(|e| self.sql(e))? {
            let text: String = r.get(0).map_err(|e| self.sql(e))?;
            let fields: Vec<(String, String)> = serde_json::from_str(&text).unwrap_or_default();
            for (name, _) in fields {
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
        let sql = sql_error(&self.dir);
        let mut st = self
            .conn
            .prepare(
                "SELECT r.row_key, r.dup_of, s.state, s.status, s.reason, s.message,
                        s.provider_status, s.request_id, s.checked_at, s.attempts, s.fields
                 FROM rows r JOIN rows s ON s.row_key = coalesce(r.dup_of, r.row_key)
                 ORDER BY r.row_key",
            )
            .map_err(sql)?;
        let mut rows = st.query([]).map_err(sql)?;
        while let Some(r) = rows.next().map_err(sql)? {
            let status: Option<String> = r.get(3).map_err(sql)?;
            let fields: Option<String> = r.get(10).map_err(sql)?;
            f(ExportRow {
                key: RowKey(r.get::<_, i64>(0).map_err(sql)? as u64),
                duplicate_of: r
                    .get::<_, Option<i64>>(1)
                    .map_err(sql)?
                    .map(|k| RowKey(k as u64)),
                state: r.get(2).map_err(sql)?,
                status: status.as_deref().and_then(Status::parse),
                reason: r.get(4).map_err(sql)?,
                message: r.get(5).map_err(sql)?,
                provider_status: r.get(6).map_err(sql)?,
                request_id: r.get(7).map_err(sql)?,
                checked_at: r.get(8).map_err(sql)?,
                attempts: r.get::<_, i64>(9).map_err(sql)? as u32,
                fields: fields
                    .and_then(|f| serde_json::from_str(&f).ok())
                    .unwrap_or_default(),
            });
        }
        Ok(())
    }
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
    pub fields: Vec<(String, String)>,
}

/// Reads row states page by page, so that a long read never pins the WAL.
pub struct JournalReader {
    dir: PathBuf,
    conn: Connection,
}

impl JournalReader {
    /// Up to `limit` rows with keys above `after`, in key order.
    pub fn page(
        &self,
        after: Option<RowKey>,
        limit: usize,
    ) -> Result<Vec<RowRecord>, JournalError> {
        let sql = sql_error(&self.dir);
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT r.row_key, r.state, r.status, r.request_id, r.batch_id,
                        coalesce(b.state IN ('uploaded', 'reconcile'), 0),
                        o.handle, o.expires_at, o.phase, o.tried, o.sent
                 FROM rows r LEFT JOIN batches b ON b.batch_id = r.batch_id
                      LEFT JOIN otp_requests o ON o.row_key = r.row_key
                 WHERE r.row_key > ?1 ORDER BY r.row_key LIMIT ?2",
            )
            .map_err(sql)?;
        let after = after.map_or(-1, |k| k.0 as i64);
        st.query_map(params![after, limit as i64], |r| {
            let status: Option<String> = r.get(2)?;
            let otp = match r.get::<_, Option<String>>(6)? {
                None => None,
                Some(handle) => {
                    let phase: String = r.get(8)?;
                    let tried: String = r.get(9)?;
                    Some(OtpRequest {
                        handle,
                        expires_at: r.get(7)?,
                        // An unknown word is read as closed: a new OTP, never a resend.
                        phase: OtpPhase::parse(&phase).unwrap_or(OtpPhase::Closed),
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
        })
        .and_then(Iterator::collect)
        .map_err(sql)
    }
}

/// One change to the journal.
enum Op {
    Intent {
        keys: Vec<RowKey>,
        batch_id: Option<i64>,
        /// The name the batch is uploaded under, when we choose it.
        name: Option<String>,
        ack: tokio::sync::oneshot::Sender<Result<(), JournalError>>,
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
        /// The batch's state: `uploaded`, or `reconcile` while it is unknown whether the
        /// provider has it.
        batch_state: &'static str,
    },
    Done {
        key: RowKey,
        outcome: Outcome,
        attempts: Option<u32>,
    },
    Otp {
        key: RowKey,
        change: OtpChange,
        outcome: Outcome,
        attempts: Option<u32>,
    },
    BatchClosed {
        batch_id: i64,
        state: &'static str,
    },
    Usage {
        minute: i64,
        requests: u32,
    },
    Flush {
        ack: tokio::sync::oneshot::Sender<Result<(), JournalError>>,
        /// Whether the writer thread ends after this.
        close: bool,
    },
}

/// The handle through which the engine records progress. Cheap to clone.
#[derive(Clone)]
pub struct JournalWriter {
    tx: mpsc::Sender<Op>,
    failed: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
}

/// The writer thread; joined after [`JournalWriter::close`].
pub struct WriterThread(std::thread::JoinHandle<()>);

impl WriterThread {
    pub fn join(self) {
        // A panic in the thread surfaces as failed writes already; nothing more to report.
        let _ = self.0.join();
    }
}

impl JournalWriter {
    fn send(&self, op: Op) {
        // A closed channel means the writer thread is gone; `failed()` reports why.
        let _ = self.tx.send(op);
    }

    /// Commits the intent to call for these rows (and their batch) and waits until it is
    /// durable. No paid request may leave before this returns `Ok`.
    /// `name` is the name a batch is uploaded under, when we choose it: recorded with the
    /// intent, so that a run that dies before the answer asks the provider for it.
    pub async fn intent(
        &self,
        keys: Vec<RowKey>,
        batch_id: Option<i64>,
        name: Option<String>,
    ) -> Result<(), JournalError> {
        self.check()?;
        let (ack, done) = tokio::sync::oneshot::channel();
        self.send(Op::Intent {
            keys,
            batch_id,
            name,
            ack,
        });
        done.await
            .unwrap_or_else(|_| Err(JournalError::WriteFailed("the writer stopped".into())))
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
            batch_state: "uploaded",
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
            batch_state: "reconcile",
        });
    }

    /// A row's outcome. `attempts` is the number of tries of its paid call, when this step made
    /// one.
    pub fn done(&self, key: RowKey, outcome: Outcome, attempts: Option<u32>) {
        self.send(Op::Done {
            key,
            outcome,
            attempts,
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

    /// A batch whose rows all have an outcome, or that was given up.
    pub fn batch_closed(&self, batch_id: i64, state: &'static str) {
        self.send(Op::BatchClosed { batch_id, state });
    }

    /// Requests sent to the provider, for the per-day window of later runs.
    pub fn usage(&self, minute: i64, requests: u32) {
        self.send(Op::Usage { minute, requests });
    }

    /// Waits until everything sent so far is committed.
    pub async fn flush(&self) -> Result<(), JournalError> {
        self.flush_and(false).await
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
            let why = self
                .failure
                .lock()
                .map(|f| f.clone().unwrap_or_default())
                .unwrap_or_default();
            Err(JournalError::WriteFailed(why))
        } else {
            Ok(())
        }
    }
}

fn write_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<Op>,
    failed: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < 4096 {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let result = if failed.load(Ordering::Acquire) {
            Err("an earlier write failed".to_string())
        } else {
            apply_all(&mut conn, &ops).map_err(|e| e.to_string())
        };
        if let Err(why) = &result {
            if !failed.swap(true, Ordering::AcqRel) {
                tracing::error!("journal write failed: {why}");
            }
            if let Ok(mut f) = failure.lock() {
                f.get_or_insert_with(|| why.clone());
            }
        }
        let mut closing = false;
        for op in ops {
            closing |= matches!(op, Op::Flush { close: true, .. });
            if let Op::Intent { ack, .. } | Op::Flush { ack, .. } = op {
                let _ = ack.send(result.clone().map_err(JournalError::WriteFailed));
            }
        }
        if closing {
            return;
        }
    }
}

fn apply_all(conn: &mut Connection, ops: &[Op]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for op in ops {
        apply(&tx, op)?;
    }
    tx.commit()
}

fn set_state(
    tx: &Transaction,
    keys: &[RowKey],
    batch_id: Option<i64>,
    state: RowState,
    request_id: Option<&str>,
    attempts: Option<u32>,
) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "UPDATE rows SET state = ?2, batch_id = coalesce(?3, batch_id),
                request_id = coalesce(?4, request_id), attempts = coalesce(?5, attempts)
         WHERE row_key = ?1",
    )?;
    for k in keys {
        st.execute(params![
            k.0 as i64,
            state.as_str(),
            batch_id,
            request_id,
            attempts.map(i64::from)
        ])?;
    }
    Ok(())
}

fn apply(tx: &Transaction, op: &Op) -> rusqlite::Result<()> {
    match op {
        Op::Intent {
            keys,
            batch_id,
            name,
            ..
        } => {
            if let Some(b) = batch_id {
                tx.execute(
                    "INSERT INTO batches (batch_id, state, request_id, created_at)
                     VALUES (?1, 'sending', ?2, ?3)
                     ON CONFLICT (batch_id) DO UPDATE SET state = 'sending'",
                    params![b, name, now_rfc3339()],
                )?;
            }
            set_state(tx, keys, *batch_id, RowState::Sending, None, None)
        }
        Op::Revert { keys, batch_id } => {
            if let Some(b) = batch_id {
                tx.execute("DELETE FROM batches WHERE batch_id = ?1", [b])?;
                tx.execute(
                    "UPDATE rows SET state = 'planned', batch_id = NULL, request_id = NULL
                     WHERE batch_id = ?1",
                    [b],
                )?;
            }
            set_state(tx, keys, None, RowState::Planned, None, None)
        }
        Op::Unconfirmed {
            keys,
            batch_id,
            attempts,
        } => {
            if let Some(b) = batch_id {
                tx.execute(
                    "UPDATE batches SET state = 'unconfirmed' WHERE batch_id = ?1",
                    [b],
                )?;
            }
            set_state(tx, keys, None, RowState::Unconfirmed, None, *attempts)
        }
        Op::Running {
            keys,
            batch_id,
            request_id,
            attempts,
            batch_state,
        } => {
            if let Some(b) = batch_id {
                tx.execute(
                    "UPDATE batches SET state = ?4, request_id = ?2, attempts = ?3
                     WHERE batch_id = ?1",
                    params![b, request_id, i64::from(*attempts), batch_state],
                )?;
            }
            set_state(
                tx,
                keys,
                None,
                RowState::Running,
                Some(request_id),
                Some(*attempts),
            )
        }
        Op::Done {
            key,
            outcome,
            attempts,
        } => done(tx, *key, outcome, *attempts),
        Op::Otp {
            key,
            change,
            outcome,
            attempts,
        } => {
            otp_change(tx, *key, change)?;
            done(tx, *key, outcome, *attempts)
        }
        Op::BatchClosed { batch_id, state } => tx
            .execute(
                "UPDATE batches SET state = ?2 WHERE batch_id = ?1",
                params![batch_id, state],
            )
            .map(drop),
        Op::Usage { minute, requests } => tx
            .prepare_cached(
                "INSERT INTO usage (minute, requests) VALUES (?1, ?2)
                 ON CONFLICT (minute) DO UPDATE SET requests = requests + excluded.requests",
            )?
            .execute(params![minute, i64::from(*requests)])
            .map(drop),
        Op::Flush { .. } => Ok(()),
    }
}

fn otp_change(tx: &Transaction, key: RowKey, change: &OtpChange) -> rusqlite::Result<()> {
    let key = key.0 as i64;
    match change {
        OtpChange::Sent {
            handle,
            expires_at,
            stale,
        } => tx.execute(
            "INSERT INTO otp_requests (row_key, handle, expires_at, phase, tried, sent)
             VALUES (?1, ?2, ?3, 'awaiting', ?4, 1)
             ON CONFLICT (row_key) DO UPDATE SET handle = excluded.handle,
                 expires_at = excluded.expires_at, phase = 'awaiting', tried = excluded.tried,
                 sent = sent + 1",
            params![
                key,
                handle,
                expires_at,
                stale.as_deref().unwrap_or_default()
            ],
        ),
        OtpChange::Refused(digest) => tx.execute(
            "UPDATE otp_requests SET phase = 'awaiting',
                    tried = CASE WHEN ?2 IS NULL THEN tried ELSE ltrim(tried || ' ' || ?2) END
             WHERE row_key = ?1",
            params![key, digest],
        ),
        OtpChange::Verifying | OtpChange::Closed => {
            let phase = if matches!(change, OtpChange::Verifying) {
                OtpPhase::Verifying
            } else {
                OtpPhase::Closed
            };
            tx.execute(
                "UPDATE otp_requests SET phase = ?2 WHERE row_key = ?1",
                params![key, phase.as_str()],
            )
        }
    }
    .map(drop)
}

fn done(
    tx: &Transaction,
    key: RowKey,
    outcome: &Outcome,
    attempts: Option<u32>,
) -> rusqlite::Result<()> {
    let fields = (!outcome.fields.is_empty())
        .then(|| serde_json::to_string(&outcome.fields).unwrap_or_default());
    tx.prepare_cached(
        "UPDATE rows SET state = 'done', status = ?2, reason = ?3, message = ?4,
                provider_status = ?5, request_id = coalesce(?6, request_id),
                checked_at = ?7, fields = ?8, attempts = coalesce(?9, attempts)
         WHERE row_key = ?1",
    )?
    .execute(params![
        key.0 as i64,
        outcome.status.as_str(),
        outcome.reason,
        outcome.message,
        outcome.provider_status,
        outcome.request_id,
        now_rfc3339(),
        fields,
        attempts.map(i64::from),
    ])
    .map(drop)
}

/// Wraps SQLite errors with the state directory they concern.
fn sql_error(dir: &Path) -> impl Fn(rusqlite::Error) -> JournalError + Copy + '_ {
    move |source| JournalError::Sqlite {
        dir: dir.display().to_string(),
        source,
    }
}

fn take_lock(dir: &Path) -> Result<File, JournalError> {
    let path = dir.join(LOCK_FILE);
    let io = |source| JournalError::Io {
        dir: dir.display().to_string(),
        source,
    };
    let mut file = private_options()
        .read(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0).map_err(io)?;
            write!(file, "{}", std::process::id()).map_err(io)?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path)
                .ok()
                .filter(|p| !p.trim().is_empty())
                .map(|p| format!(" (pid {})", p.trim()))
                .unwrap_or_default();
            Err(JournalError::Busy {
                dir: dir.display().to_string(),
                pid,
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

fn open_db(dir: &Path) -> Result<Connection, JournalError> {
    let path = dir.join(DB_FILE);
    let sql = sql_error(dir);
    if !path.exists() {
        // SQLite gives the -wal and -shm files the database file's mode, so 0600 here covers all.
        create_private_file(&path).map_err(|source| JournalError::Io {
            dir: dir.display().to_string(),
            source,
        })?;
    }
    let conn = Connection::open(&path).map_err(sql)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(sql)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
        .map_err(sql)?;
    // FULL: a committed intent survives a power cut too, not only a killed process.
    conn.execute_batch("PRAGMA synchronous = FULL;")
        .map_err(sql)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Reason;

    const ID: Identity = Identity {
        check: "deepvue-udyam",
        environment: "sandbox",
    };

    fn hash(b: u8) -> [u8; 16] {
        [b; 16]
    }

    fn export(j: &Journal) -> Vec<ExportRow> {
        let mut rows = Vec::new();
        j.export_each(|r| rows.push(r)).unwrap();
        rows
    }

    #[test]
    fn planning_detects_duplicates_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("s"), &ID, false).unwrap();
        let rows = vec![
            (RowKey::new(0, 0), RowPlan::Subject(hash(1))),
            (RowKey::new(0, 1), RowPlan::Subject(hash(2))),
            (RowKey::new(0, 2), RowPlan::Subject(hash(1))),
            (
                RowKey::new(0, 3),
                RowPlan::Invalid(
                    Outcome::new(Status::InvalidInput).with_reason(Reason::UDYAM_FORMAT),
                ),
            ),
        ];
        j.plan_rows(&rows).unwrap();
        // Planning the same rows again (a resumed pass) changes nothing.
        j.plan_rows(&rows).unwrap();
        let export = export(&j);
        assert_eq!(export.len(), 4);
        let leaders: Vec<_> = export.iter().map(|r| r.duplicate_of).collect();
        assert_eq!(leaders, vec![None, None, Some(RowKey::new(0, 0)), None]);
        assert_eq!(export[3].status, Some(Status::InvalidInput));
    }

    #[tokio::test]
    async fn lifecycle_survives_reopen_and_recovery_holds_in_flight_rows() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s");
        {
            let mut j = Journal::open(&state, &ID, false).unwrap();
            let keys: Vec<_> = (0..4).map(|i| RowKey::new(0, i)).collect();
            j.plan_rows(
                &keys
                    .iter()
                    .map(|k| (*k, RowPlan::Subject(hash(k.0 as u8))))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            let (w, thread) = j.writer().unwrap();
            w.intent(vec![keys[0]], None, None).await.unwrap();
            w.running(vec![keys[0]], None, "req-0".into(), 1);
            w.intent(vec![keys[1]], None, None).await.unwrap();
            w.done(
                keys[1],
                Outcome::new(Status::Verified).with_fields(vec![("a".into(), "1".into())]),
                Some(2),
            );
            w.intent(vec![keys[2]], None, None).await.unwrap();
            w.close().await.unwrap();
            thread.join();
        }
        let mut j = Journal::open(&state, &ID, false).unwrap();
        assert_eq!(j.recover(false).unwrap(), (1, 0));
        let page = j.reader().unwrap().page(None, 10).unwrap();
        let states: Vec<_> = page.iter().map(|r| r.state).collect();
        assert_eq!(
            states,
            [
                RowState::Running,
                RowState::Done,
                RowState::Unconfirmed,
                RowState::Planned
            ]
        );
        assert_eq!(page[0].request_id.as_deref(), Some("req-0"));
        let export = export(&j);
        assert_eq!(export[1].attempts, 2);
        assert_eq!(j.field_names().unwrap(), ["a"]);
        assert_eq!(export[1].fields, vec![("a".to_string(), "1".to_string())]);
        assert_eq!(j.recover(true).unwrap(), (0, 1));
        let page = j
            .reader()
            .unwrap()
            .page(Some(RowKey::new(0, 1)), 1)
            .unwrap();
        assert_eq!(page[0].state, RowState::Planned);
    }

    /// A run killed between committing a named upload and its answer: the next run asks for
    /// the name (the batch is open, unconfirmed), while an unnamed upload is held.
    #[tokio::test]
    async fn recovery_reconciles_named_uploads_and_holds_unnamed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s");
        let keys: Vec<_> = (0..4).map(|i| RowKey::new(0, i)).collect();
        let token = {
            let mut j = Journal::open(&state, &ID, false).unwrap();
            j.plan_rows(
                &keys
                    .iter()
                    .map(|k| (*k, RowPlan::Subject(hash(k.0 as u8 + 1))))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            let (w, thread) = j.writer().unwrap();
            w.intent(keys[..2].to_vec(), Some(1), Some("bv-t-1".into()))
                .await
                .unwrap();
            w.intent(keys[2..].to_vec(), Some(2), None).await.unwrap();
            w.close().await.unwrap();
            thread.join();
            j.job_token().unwrap()
        };
        let mut j = Journal::open(&state, &ID, false).unwrap();
        assert_eq!(j.job_token().unwrap(), token, "the token is kept");
        assert_eq!(
            j.recover(false).unwrap(),
            (2, 0),
            "the unnamed batch is held"
        );
        let open = j.open_batches().unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].request_id, "bv-t-1");
        assert!(!open[0].confirmed);
        assert_eq!(open[0].rows, vec![(keys[0], hash(1)), (keys[1], hash(2))]);
        let page = j.reader().unwrap().page(None, 10).unwrap();
        assert!(
            page[..2]
                .iter()
                .all(|r| r.batch_open && r.state == RowState::Running)
        );
        assert!(page[2..].iter().all(|r| r.state == RowState::Unconfirmed));
    }

    #[test]
    fn a_second_run_on_the_same_state_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s");
        let _first = Journal::open(&state, &ID, false).unwrap();
        let err = Journal::open(&state, &ID, false).err().unwrap();
        assert!(matches!(err, JournalError::Busy { .. }), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id()))
        );
    }

    /// Purging deletes the state and the old states moved aside, never a directory that is
    /// not a state, and never a state a run is using.
    #[test]
    fn purge_deletes_states_only_when_no_run_uses_them() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("out.csv.bulkverify");
        drop(Journal::open(&state, &ID, false).unwrap());
        drop(Journal::open(&state, &ID, true).unwrap());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".old-"))
            .collect();
        assert_eq!(aside.len(), 1, "--fresh moved one aside");
        let other = dir.path().join("out.csv.bulkverify.old-notes");
        std::fs::create_dir(&other).unwrap();

        let running = Journal::open(&state, &ID, false).unwrap();
        let busy = Journal::purge(&state).unwrap_err();
        assert!(matches!(busy, JournalError::Busy { .. }), "{busy}");
        assert!(state.join(DB_FILE).exists());
        drop(running);

        let deleted = Journal::purge(&state).unwrap();
        assert_eq!(deleted.len(), 2, "{deleted:?}");
        assert!(!state.exists() && !aside[0].exists());
        assert!(other.exists(), "not a state: kept");
        let gone = Journal::purge(&state).unwrap_err();
        assert!(matches!(gone, JournalError::NotAState { .. }), "{gone}");
        assert!(matches!(
            Journal::purge(&other).unwrap_err(),
            JournalError::NotAState { .. }
        ));
    }

    /// A new state hashes with a key of its own, kept across runs; a state with rows from
    /// before keys keeps hashing with the check's name alone.
    #[test]
    fn identifiers_are_hashed_with_the_states_own_key() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let scope_a = Journal::open(&a, &ID, false)
            .unwrap()
            .ident_scope("c")
            .unwrap();
        let scope_b = Journal::open(&b, &ID, false)
            .unwrap()
            .ident_scope("c")
            .unwrap();
        assert!(
            scope_a.starts_with("c\0") && scope_a.len() > 60,
            "{scope_a:?}"
        );
        assert_ne!(scope_a, scope_b, "each state its own key");
        let again = Journal::open(&a, &ID, false)
            .unwrap()
            .ident_scope("c")
            .unwrap();
        assert_eq!(scope_a, again, "kept across runs");

        let old = dir.path().join("old");
        let mut j = Journal::open(&old, &ID, false).unwrap();
        j.plan_rows(&[(RowKey::new(0, 0), RowPlan::Subject(hash(1)))])
            .unwrap();
        assert_eq!(j.ident_scope("c").unwrap(), "c", "rows from before keys");
    }

    #[test]
    fn identity_and_inputs_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s");
        {
            let j = Journal::open(&state, &ID, false).unwrap();
            let inputs = vec![("a.csv".to_string(), "aa".to_string())];
            assert!(!j.check_inputs(&inputs, "udyam=Udyam").unwrap());
            j.finish_planning(10).unwrap();
            assert!(j.check_inputs(&inputs, "udyam=Udyam").unwrap());
            let err = j
                .check_inputs(&[("a.csv".to_string(), "bb".to_string())], "udyam=Udyam")
                .unwrap_err();
            assert!(matches!(err, JournalError::InputChanged { .. }));
            let err = j.check_inputs(&inputs, "udyam=Reg").unwrap_err();
            assert!(matches!(err, JournalError::OtherColumns { .. }), "{err}");
        }
        let other = Identity {
            check: "deepvue-upi-batch",
            environment: "sandbox",
        };
        assert!(matches!(
            Journal::open(&state, &other, false).err().unwrap(),
            JournalError::OtherCheck { .. }
        ));
        let live = Identity {
            check: "deepvue-udyam",
            environment: "https://production.deepvue.tech/",
        };
        assert!(matches!(
            Journal::open(&state, &live, false).err().unwrap(),
            JournalError::OtherEnvironment { .. }
        ));
        let j = Journal::open(&state, &live, true).unwrap();
        assert!(j.planned_rows().unwrap().is_none());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "the old state is kept aside"
        );
    }

    #[cfg(unix)]
    #[test]
    fn state_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s");
        let _j = Journal::open(&state, &ID, false).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(DB_FILE)), 0o600);
        assert_eq!(mode(&state.join(LOCK_FILE)), 0o600);
    }
}
