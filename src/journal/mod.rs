//! The journal: the job's durable state in SQLite (WAL), the single source of truth for resume.
//!
//! A row's intent is committed before its paid call leaves the process, its request id as soon
//! as the provider gives one, and its outcome when known. A killed run therefore leaves every
//! row in a state that says exactly what the next run must do: nothing (an outcome), poll (a
//! request id), send (planned), or hold (`unconfirmed`: the call may have been billed but its
//! answer was lost). Writes go through one thread that groups them into transactions; the
//! callers that must wait for durability (intents) wait for their commit.
//!
//! The parts: `schema` (tables, format, connections), `lock` (one run per state, purge),
//! `plan` (inputs and first-seen rows, duplicates found by `sort`), `recover` (what a dead run left, open batches), `members` (a batch's rows, kept with it),
//! `kept` (the outcomes a batch's rows took, kept with it), `reuse`
//! (what the account's results store gives and takes),
//! `reader` (row pages, export), `writer` (the writer thread), `written` (the output last
//! written), `runs` (the job's runs and their per-second counters, read by the report and by
//! `status` through [`Peek`]) and `state` (the lifecycles, their stored words and the moves
//! allowed).

mod fields;
mod kept;
mod lock;
mod members;
mod plan;
mod reader;
mod recover;
mod reuse;
mod runs;
mod schema;
mod sort;
mod state;
mod writer;
mod written;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};

pub use fields::values_by_number;
pub use plan::{Planner, RowPlan, ident_hash};
pub use reader::{ExportRow, JournalReader, OtpRequest, RowRecord};
pub use recover::OpenBatch;
pub use reuse::{Answer, Obtained, PAGE as REUSE_PAGE, REUSABLE};
pub use runs::{Following, History, OutcomeGroup, Peek, RunRecord};
pub use state::{BatchState, OtpPhase, RowState};
pub use writer::{JournalWriter, OtpChange, WriterThread};
pub use written::OutputCounts;

use crate::util::fs::{create_private_dir, create_private_file};
use crate::util::time::now_rfc3339;

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
        "{file} changed since the state in {dir} was created, or is read with another \
         --encoding or --delimiter (its content hash differs), so its old results cannot be \
         attached to its rows; restore the original file and flags, or re-run with --fresh to \
         start over (the old state is kept aside, not deleted)"
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
    #[error(
        "the journal refused a change of state ({0}), which is a bug in bulkverify; no further \
         paid call was made and the state is as it was before the change. Report it, then run \
         the same command again to resume"
    )]
    Refused(String),
    #[error("{dir} is not a bulkverify state directory (it holds no journal); nothing was deleted")]
    NotAState { dir: String },
    #[error(
        "{dir} holds no bulkverify job (no journal there): give the job's output (-o) or the \
         --state its run was given"
    )]
    NoJob { dir: String },
    #[error(
        "the job in {dir} is being planned, or its planning was stopped: its rows are not \
         counted until planning ends. Ask again once the run sends; if no run is live, run the \
         same command to resume"
    )]
    Planning { dir: String },
}

/// Who the state belongs to: a journal refuses to serve another check or another environment.
pub struct Identity<'a> {
    pub check: &'a str,
    /// `sandbox`, or the provider's base URL.
    pub environment: &'a str,
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
        if fresh && dir.exists() {
            lock::move_aside(dir)?;
        }
        create_private_dir(dir).map_err(io_error(dir))?;
        let lock = lock::take_lock(dir)?;
        let conn = schema::open_db(dir)?;
        let journal = Journal {
            dir: dir.to_path_buf(),
            conn,
            _lock: lock,
        };
        journal.migrate()?;
        journal.check_identity(identity)?;
        Ok(journal)
    }

    /// A second connection to this state, for a thread that works beside the run's own (the
    /// results store taking the job's answers while the output is written). It holds the
    /// state's lock as this one does; through the WAL each reads while the other writes.
    pub fn beside(&self) -> Result<Journal, JournalError> {
        Ok(Journal {
            dir: self.dir.clone(),
            conn: schema::open_db(&self.dir)?,
            _lock: self._lock.try_clone().map_err(io_error(&self.dir))?,
        })
    }

    /// Whether `dir` holds a state: `plan` copies one, and makes none.
    pub fn exists(dir: &Path) -> bool {
        dir.join(schema::DB_FILE).is_file()
    }

    /// A consistent copy of the state in `dest`, an empty private directory: what `plan` works
    /// on, so that it changes nothing of the job's own state.
    pub fn copy_into(&self, dest: &Path) -> Result<(), JournalError> {
        let path = dest.join(schema::DB_FILE);
        // SQLite writes into an empty file it is given, which keeps this one's mode.
        create_private_file(&path).map_err(io_error(dest))?;
        self.conn
            .execute("VACUUM INTO ?1", [path.to_string_lossy()])
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    fn sql(&self, source: rusqlite::Error) -> JournalError {
        sql_error(&self.dir)(source)
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
}

/// Wraps SQLite errors with the state directory they concern.
fn sql_error(dir: &Path) -> impl Fn(rusqlite::Error) -> JournalError + Copy + '_ {
    move |source| JournalError::Sqlite {
        dir: dir.display().to_string(),
        source,
    }
}

/// Wraps file errors with the state directory they concern.
fn io_error(dir: &Path) -> impl Fn(std::io::Error) -> JournalError + Copy + '_ {
    move |source| JournalError::Io {
        dir: dir.display().to_string(),
        source,
    }
}
