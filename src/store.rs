//! The account's results store: the final answers every job on the machine obtained, so that a
//! later export that repeats an identifier (tonight's "onboarded this month" holds yesterday's
//! rows) takes the answer instead of paying for it again.
//!
//! One SQLite file (WAL, 0600) beside the usage ledger, in the same directory. It keeps, per
//! provider account and check, each final answer (`verified`, `not_verified`, `needs_review`:
//! never `pending` or `error`) under the keyed hash of the normalised identifier, with the time
//! the provider gave it. The key is made with the store, once, and given to each job's state as
//! the state is made, so that the job's own hashes are the store's: the identifier itself is
//! never written, and the hashes cannot be looked up in a table computed once for every store.
//! A job made before the store, or with another one, keeps its own key and neither takes nor
//! gives answers. A store that cannot be opened or written costs the reuse, never the run.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::checks::CheckInfo;
use crate::journal::{Answer, Journal, JournalError, REUSE_PAGE};
use crate::outcome::{Outcome, RowKey, Status};
use crate::util::fs::{create_private_dir, create_private_file};
use crate::util::time::{rfc3339_unix, unix_now};

const FILE: &str = "results.sqlite";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the results store in {dir} cannot be used ({source}); answers from earlier jobs are \
         not reused and this job's are not kept"
    )]
    Io {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the results store in {dir} cannot be used ({source}); answers from earlier jobs are \
         not reused and this job's are not kept"
    )]
    Sqlite {
        dir: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// The store, open.
pub struct ResultsStore {
    dir: PathBuf,
    conn: Connection,
    id: String,
    key: String,
}

impl ResultsStore {
    /// Opens the store in `dir` (the ledger's), making it and its key on first use.
    pub fn open(dir: &Path) -> Result<ResultsStore, StoreError> {
        let io = |source| StoreError::Io {
            dir: dir.display().to_string(),
            source,
        };
        let sql = sql(dir);
        create_private_dir(dir).map_err(io)?;
        let path = dir.join(FILE);
        if !path.exists() {
            // SQLite gives the -wal and -shm files the database file's mode.
            create_private_file(&path).map_err(io)?;
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(sql)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
             CREATE TABLE IF NOT EXISTS answers (
                 account TEXT NOT NULL, check_name TEXT NOT NULL, ident BLOB NOT NULL,
                 obtained_at INTEGER NOT NULL, checked_at TEXT NOT NULL, status TEXT NOT NULL,
                 reason TEXT, message TEXT, provider_status TEXT, request_id TEXT, fields TEXT,
                 PRIMARY KEY (account, check_name, ident)) STRICT, WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS answers_age ON answers(obtained_at);",
        )
        .map_err(sql)?;
        // Two jobs making the store at once agree on the first key written.
        let random = || {
            (0..4)
                .map(|_| format!("{:016x}", rand::random::<u64>()))
                .collect::<String>()
        };
        for name in ["key", "id"] {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                params![name, random()],
            )
            .map_err(sql)?;
        }
        let meta = |name: &str| {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [name], |r| {
                r.get::<_, String>(0)
            })
            .map_err(sql)
        };
        let (id, key) = (meta("id")?, meta("key")?);
        Ok(ResultsStore {
            dir: dir.to_path_buf(),
            conn,
            id,
            key,
        })
    }

    /// The store's name and key, for a state made now: its rows are hashed with the key.
    pub fn hash_key(&self) -> (&str, &str) {
        (&self.id, &self.key)
    }

    /// The answers obtained at or after `since` (Unix seconds) for the identifiers of `rows`.
    /// Whether the store holds any answer of `check` on `account` obtained since `since`: a
    /// job's first night on a check finds none, and looks none of its rows up one by one.
    fn holds_any(&self, account: &str, check: &str, since: i64) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM answers
                 WHERE account = ?1 AND check_name = ?2 AND obtained_at >= ?3)",
                params![account, check, since],
                |r| r.get(0),
            )
            .map_err(sql(&self.dir))
    }

    fn lookup(
        &self,
        account: &str,
        check: &str,
        since: i64,
        rows: &[(RowKey, [u8; 16])],
    ) -> Result<Vec<Answer>, StoreError> {
        let sql = sql(&self.dir);
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT status, reason, message, provider_status, request_id, checked_at, fields
                 FROM answers
                 WHERE account = ?1 AND check_name = ?2 AND ident = ?3 AND obtained_at >= ?4",
            )
            .map_err(sql)?;
        let mut found = Vec::new();
        for (key, ident) in rows {
            let answer = st
                .query_row(params![account, check, &ident[..], since], |r| {
                    let status: String = r.get(0)?;
                    let fields: Option<String> = r.get(6)?;
                    Ok(Status::parse(&status)
                        .filter(|s| crate::journal::REUSABLE.contains(s))
                        .map(|status| Answer {
                            key: *key,
                            ident: *ident,
                            outcome: Outcome {
                                status,
                                reason: r.get(1).ok().flatten(),
                                message: r.get(2).ok().flatten(),
                                provider_status: r.get(3).ok().flatten(),
                                request_id: r.get(4).ok().flatten(),
                                fields: fields
                                    .and_then(|f| serde_json::from_str(&f).ok())
                                    .unwrap_or_default(),
                            },
                            checked_at: r.get(5).unwrap_or_default(),
                        }))
                })
                .optional()
                .map_err(sql)?
                .flatten();
            found.extend(answer);
        }
        Ok(found)
    }

    /// Keeps `answers`, in one transaction; an answer older than the one kept is dropped.
    fn keep(&mut self, account: &str, check: &str, answers: &[Answer]) -> Result<(), StoreError> {
        let sql = sql(&self.dir);
        let tx = self.conn.transaction().map_err(sql)?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO answers (account, check_name, ident, obtained_at, checked_at,
                         status, reason, message, provider_status, request_id, fields)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (account, check_name, ident) DO UPDATE SET
                         obtained_at = excluded.obtained_at, checked_at = excluded.checked_at,
                         status = excluded.status, reason = excluded.reason,
                         message = excluded.message, provider_status = excluded.provider_status,
                         request_id = excluded.request_id, fields = excluded.fields
                     WHERE excluded.obtained_at >= answers.obtained_at",
                )
                .map_err(sql)?;
            for a in answers {
                let Some(obtained) = rfc3339_unix(&a.checked_at) else {
                    continue;
                };
                let o = &a.outcome;
                let fields = (!o.fields.is_empty())
                    .then(|| serde_json::to_string(&o.fields).unwrap_or_default());
                st.execute(params![
                    account,
                    check,
                    &a.ident[..],
                    obtained,
                    a.checked_at,
                    o.status.as_str(),
                    o.reason,
                    o.message,
                    o.provider_status,
                    o.request_id,
                    fields,
                ])
                .map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }

    /// Deletes the answers obtained more than `older_than` ago, or all of them; returns how
    /// many. The key stays, so that the states of jobs still open keep matching.
    pub fn purge(&self, older_than: Option<std::time::Duration>) -> Result<u64, StoreError> {
        let before = older_than.map_or(i64::MAX, |age| {
            unix_now().saturating_sub(i64::try_from(age.as_secs()).unwrap_or(i64::MAX))
        });
        let n = self
            .conn
            .execute("DELETE FROM answers WHERE obtained_at < ?1", [before])
            .map_err(sql(&self.dir))?;
        // Deleted answers must not stay readable in free pages.
        self.conn
            .execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(sql(&self.dir))?;
        Ok(n as u64)
    }
}

/// Where the account's results store is, and what a job takes from it.
pub struct StoreSide {
    pub dir: PathBuf,
    /// [`crate::ledger::account`]: answers are never shared between accounts.
    pub account: String,
    /// The oldest answer reused (Unix seconds), or none when the job reuses nothing.
    pub since: Option<i64>,
}

impl StoreSide {
    /// The store, for a job of `check`; `None`, with a warning, when it cannot be opened: the
    /// job goes on without it.
    pub fn open(self, check: &'static CheckInfo) -> Option<JobStore> {
        let store = ResultsStore::open(&self.dir)
            .map_err(|e| tracing::warn!("{e}"))
            .ok()?;
        Some(JobStore {
            store,
            side: self,
            check,
        })
    }
}

/// One job's side of the store: its account and check.
pub struct JobStore {
    store: ResultsStore,
    side: StoreSide,
    check: &'static CheckInfo,
}

impl JobStore {
    /// The store's name and key, for the job's state: see [`ResultsStore::hash_key`].
    pub fn hash_key(&self) -> (&str, &str) {
        self.store.hash_key()
    }

    /// Gives the job's planned rows the answers earlier jobs obtained within the check's
    /// freshness; returns how many rows took one. A failure costs the reuse, never the run.
    pub fn reuse_into(&self, journal: &mut Journal) -> u64 {
        let Some(since) = self.side.since else {
            return 0;
        };
        match self
            .store
            .holds_any(&self.side.account, self.check.name, since)
        {
            Ok(true) => {}
            Ok(false) => return 0,
            Err(e) => return warned(e, 0),
        }
        let mut after = None;
        let mut reused = 0;
        loop {
            let page = match journal.unsent_idents(after) {
                Ok(page) => page,
                Err(e) => return warned(e.into(), reused),
            };
            let Some(last) = page.last() else { break };
            after = Some(last.0);
            let found = self
                .store
                .lookup(&self.side.account, self.check.name, since, &page);
            match found.and_then(|found| Ok(journal.reuse(&found)?)) {
                Ok(n) => reused += n,
                Err(e) => return warned(e, reused),
            }
            if page.len() < REUSE_PAGE {
                break;
            }
        }
        reused
    }

    /// Hands the store the final answers the job obtained, unless an earlier run already did
    /// and nothing was sent since; a check that never reuses keeps none. A failure costs
    /// later jobs the reuse, never this one its output.
    pub fn keep_from(mut self, journal: &Journal) {
        if !self.check.reuse.keeps() {
            return;
        }
        match self.keep_all(journal) {
            Ok(n) if n > 0 => tracing::info!("kept {n} answers in the results store"),
            Ok(_) => {}
            Err(e) => tracing::warn!("{e}"),
        }
    }

    fn keep_all(&mut self, journal: &Journal) -> Result<u64, StoreError> {
        if journal.answers_stored()? {
            return Ok(0);
        }
        let echoes = self.check.reuse.echoes;
        let mut after = None;
        let mut kept = 0;
        loop {
            let mut page = journal.obtained_answers(after)?;
            let Some(last) = page.last() else { break };
            after = Some(last.key);
            for a in &mut page {
                a.outcome
                    .fields
                    .retain(|(name, _)| !echoes.contains(&name.as_str()));
            }
            self.store
                .keep(&self.side.account, self.check.name, &page)?;
            kept += page.len() as u64;
            if page.len() < REUSE_PAGE {
                break;
            }
        }
        journal.set_answers_stored(true)?;
        Ok(kept)
    }
}

/// Logs why the reuse stopped; what was reused before stays.
fn warned(e: StoreError, reused: u64) -> u64 {
    tracing::warn!("{e}");
    reused
}

/// Wraps SQLite errors with the store's directory.
fn sql(dir: &Path) -> impl Fn(rusqlite::Error) -> StoreError + Copy + '_ {
    move |source| StoreError::Sqlite {
        dir: dir.display().to_string(),
        source,
    }
}
