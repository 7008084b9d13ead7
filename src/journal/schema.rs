//! The tables, the journal's format and how connections to it are opened.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::{Journal, JournalError, fields, io_error, kept, sql_error};
use crate::util::fs::create_private_file;

pub(super) const DB_FILE: &str = "journal.sqlite";

/// The format whose rows keep their fields by number and whose batches keep their rows
/// (`members`): a batch's intent and acceptance are the batch's until each row's outcome.
pub(super) const MEMBERS: &str = "3";

/// The format whose batches also keep their rows' outcomes (`kept`): a row's record is
/// planning's until it is changed again.
pub(super) const KEPT: &str = "4";

/// The formats read, written to `meta` as the journal is made; a state of a newer format is
/// refused, never read wrong. A journal of format 2 or 3 becomes 4 when opened, which only adds
/// what batches may keep (a version that reads 3 but not 4 would send again the rows whose
/// outcomes their batch keeps); format 1 keeps naming its fields in its rows (`fields`), and
/// its batches' rows are written at each move.
const FORMATS: [&str; 4] = [fields::NAMED, fields::NUMBERED, MEMBERS, KEPT];

/// States are stored as text so the journal can be read with `sqlite3`: their words are in
/// `state`. SQLite keeps this text in every state, so it stays as first written.
const TABLES: &str =
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
                     checked_at TEXT, fields TEXT, reused INTEGER) STRICT;
                 -- Older journals indexed identifiers; planning sorts them instead. They
                 -- indexed rows by batch too, an entry written with each batch's intent; a
                 -- batch's rows are found by their keys.
                 DROP INDEX IF EXISTS rows_ident;
                 DROP INDEX IF EXISTS rows_batch;
                 -- The rows that repeat a row, found by it: a batch's rows that others
                 -- repeat keep their outcomes alone (`kept`); an entry a duplicate only.
                 CREATE INDEX IF NOT EXISTS rows_dup ON rows (dup_of) WHERE dup_of IS NOT NULL;
                 CREATE TABLE IF NOT EXISTS batches (
                     batch_id INTEGER PRIMARY KEY,
                     state TEXT NOT NULL,
                     request_id TEXT,
                     attempts INTEGER NOT NULL DEFAULT 0,
                     created_at TEXT NOT NULL,
                     members BLOB,
                     rows_written INTEGER NOT NULL DEFAULT 1,
                     answered_at TEXT) STRICT;
                 CREATE TABLE IF NOT EXISTS field_names (
                     idx INTEGER PRIMARY KEY,
                     name TEXT NOT NULL,
                     first_key INTEGER NOT NULL,
                     first_pos INTEGER NOT NULL) STRICT;
                 CREATE TABLE IF NOT EXISTS usage (
                     minute INTEGER PRIMARY KEY, requests INTEGER NOT NULL) STRICT;
                 CREATE TABLE IF NOT EXISTS otp_requests (
                     row_key INTEGER PRIMARY KEY,
                     handle TEXT NOT NULL,
                     expires_at INTEGER NOT NULL,
                     phase TEXT NOT NULL,
                     tried TEXT NOT NULL DEFAULT '',
                     sent INTEGER NOT NULL DEFAULT 1) STRICT;
                 CREATE TABLE IF NOT EXISTS runs (
                     run INTEGER PRIMARY KEY,
                     pid INTEGER NOT NULL,
                     version TEXT NOT NULL,
                     started_ms INTEGER NOT NULL,
                     prepared_ms INTEGER, dispatched_ms INTEGER, ended_ms INTEGER,
                     exit_code INTEGER, heartbeat_ms INTEGER,
                     work INTEGER NOT NULL DEFAULT 0, reused INTEGER NOT NULL DEFAULT 0,
                     paid INTEGER NOT NULL DEFAULT 0, settled INTEGER NOT NULL DEFAULT 0) STRICT;
                 CREATE TABLE IF NOT EXISTS seconds (
                     run INTEGER NOT NULL, second INTEGER NOT NULL,
                     paid INTEGER NOT NULL, polls INTEGER NOT NULL, downloads INTEGER NOT NULL,
                     accepted INTEGER NOT NULL, rate_limited INTEGER NOT NULL,
                     retries INTEGER NOT NULL,
                     PRIMARY KEY (run, second)) WITHOUT ROWID, STRICT;
                 CREATE TABLE IF NOT EXISTS latency (
                     run INTEGER NOT NULL, endpoint TEXT NOT NULL, bucket INTEGER NOT NULL,
                     answers INTEGER NOT NULL,
                     PRIMARY KEY (run, endpoint, bucket)) WITHOUT ROWID, STRICT;";

impl Journal {
    pub(super) fn migrate(&self) -> Result<(), JournalError> {
        self.conn.execute_batch(TABLES).map_err(|e| self.sql(e))?;
        self.conn
            .execute_batch(kept::TABLE)
            .map_err(|e| self.sql(e))?;
        // Columns later versions added: journals made before lack them.
        const ADDED: [(&str, &str, &str); 4] = [
            // Answers reused from earlier jobs.
            ("rows", "reused", "INTEGER"),
            // Batches that keep their rows (`members`).
            ("batches", "members", "BLOB"),
            ("batches", "rows_written", "INTEGER NOT NULL DEFAULT 1"),
            // When a batch's results came, its rows' time (`bv_checked_at`).
            ("batches", "answered_at", "TEXT"),
        ];
        for (table, column, decl) in ADDED {
            let has: bool = self
                .conn
                .query_row(
                    "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
                    [table, column],
                    |r| r.get::<_, i64>(0).map(|n| n > 0),
                )
                .map_err(|e| self.sql(e))?;
            if !has {
                self.conn
                    .execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))
                    .map_err(|e| self.sql(e))?;
            }
        }
        match self.meta("format")? {
            None => self.set_meta("format", KEPT),
            Some(v) if v == fields::NUMBERED || v == MEMBERS => self.set_meta("format", KEPT),
            Some(v) if FORMATS.contains(&v.as_str()) => Ok(()),
            Some(found) => Err(JournalError::Format {
                dir: self.dir.display().to_string(),
                found,
            }),
        }
    }
}

/// A connection for writing, created private.
pub(super) fn open_db(dir: &Path) -> Result<Connection, JournalError> {
    let path = dir.join(DB_FILE);
    let sql = sql_error(dir);
    if !path.exists() {
        // SQLite gives the -wal and -shm files the database file's mode, so 0600 here covers all.
        create_private_file(&path).map_err(io_error(dir))?;
    }
    let conn = Connection::open(&path).map_err(sql)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(sql)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
        .map_err(sql)?;
    // NORMAL: in WAL mode a commit survives a killed process without an fsync; only a power
    // cut can lose the last ones. What must survive that too, an intent, is committed FULL
    // ([`durable`]). A larger WAL between checkpoints copies a row's page into the database
    // once for many changes to it, not once per few: 256 MB of WAL (65,536 pages) holds a
    // batch's intent, acceptance and results, so its pages reach the database once (a
    // million-row batch job wrote 1.12 GB with 32 MB of WAL, 0.95 GB with 512 MB).
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 65536;")
        .map_err(sql)?;
    Ok(conn)
}

/// Sets whether the connection's next commits are synced to the disk (FULL: an intent, which
/// must survive a power cut too) or left to the operating system (NORMAL: any other change,
/// which survives a killed process all the same).
pub(super) fn durable(conn: &Connection, durable: bool) -> rusqlite::Result<()> {
    // Cached: a paced run switches twice a paid request, and parsing the pragma each time
    // showed in its profile.
    conn.prepare_cached(if durable {
        "PRAGMA synchronous = FULL"
    } else {
        "PRAGMA synchronous = NORMAL"
    })?
    .execute([])
    .map(drop)
}

/// How often a short WAL is checkpointed so that the next commits overwrite blocks the file
/// already has. A sync of a commit that grows the file writes its size and block map too; one
/// that overwrites, with fdatasync (`.cargo/config.toml` builds SQLite to use it), leaves the
/// inode alone where the filesystem keeps its times apart (ext4 with its journal): two waits a
/// paid request's intent, not three, and a paced run syncs once a paid request. ext4 without a
/// journal writes the inode at every sync whose write moved its mtime, so there it stays three.
pub(super) const RESTART_EVERY: Duration = Duration::from_secs(10);
/// A WAL file this long grows fast, or grew so once: its commits overwrite blocks it has after
/// each autocheckpoint ([`open_db`]'s), and an earlier checkpoint would only copy its pages into
/// the database more often.
const SHORT_LOG_BYTES: u64 = 32 << 20;

/// Checkpoints a short WAL (a paced run's), so that the writer's next commit starts it again
/// from its beginning. Passive: it never waits for a reader, and one that holds the log only
/// puts the restart off to a later checkpoint.
pub(super) fn restart_short_log(conn: &Connection) {
    let Some(path) = conn.path().filter(|p| !p.is_empty()) else {
        return;
    };
    let len = std::fs::metadata(format!("{path}-wal")).map_or(u64::MAX, |m| m.len());
    if len < SHORT_LOG_BYTES {
        let frames = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1));
        tracing::trace!(?frames, "short WAL checkpointed");
    }
}
