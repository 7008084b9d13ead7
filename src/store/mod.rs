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
use crate::journal::{Answer, Handed, Journal, JournalError, REUSE_PAGE};
use crate::outcome::RowKey;
use crate::util::fs::{create_private_dir, create_private_file};
use crate::util::sqlite::{JournalMode, journal_mode, values_list};
use crate::util::time::unix_now;

mod answer;
mod spill;

use answer::decode;
use spill::{ByHash, Kept};

const FILE: &str = "results.sqlite";

/// Why the store cannot be used: every one costs the reuse, never the run.
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

/// Answers kept by one statement ([`ResultsStore::keep`]).
const KEEP_AT_ONCE: usize = 32;
static KEEP_MANY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| keep_sql(KEEP_AT_ONCE));

/// The statement that keeps `n` answers, each `(scope, ident, obtained_at, answer)`, in turn:
/// an answer older than the one kept is dropped.
fn keep_sql(n: usize) -> String {
    let values = values_list(n, 4);
    format!(
        "INSERT INTO results (scope, ident, obtained_at, answer) VALUES {values}
         ON CONFLICT (scope, ident) DO UPDATE SET
             obtained_at = excluded.obtained_at, answer = excluded.answer
         WHERE excluded.obtained_at >= results.obtained_at"
    )
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
        // An answer is a row of `results` under its scope (an account and a check), its result
        // fields' values by number with the scope's names once: a small key, a small row,
        // and no index beside the key, since a store of millions is written each night. The
        // first layout (`answers`) is dropped: it held a day's answers of a development build.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -32768;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
             DROP TABLE IF EXISTS answers;
             CREATE TABLE IF NOT EXISTS scopes (
                 scope INTEGER PRIMARY KEY, account TEXT NOT NULL, check_name TEXT NOT NULL,
                 fields TEXT NOT NULL DEFAULT '[]', UNIQUE (account, check_name)) STRICT;
             CREATE TABLE IF NOT EXISTS results (
                 scope INTEGER NOT NULL, ident BLOB NOT NULL, obtained_at INTEGER NOT NULL,
                 answer TEXT NOT NULL, PRIMARY KEY (scope, ident)) STRICT, WITHOUT ROWID;",
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
    /// The scope of `check` on `account` and its result fields' names, made when `make`.
    fn scope(
        conn: &Connection,
        account: &str,
        check: &str,
        make: bool,
    ) -> rusqlite::Result<Option<(i64, Vec<String>)>> {
        if make {
            conn.execute(
                "INSERT INTO scopes (account, check_name) VALUES (?1, ?2)
                 ON CONFLICT (account, check_name) DO NOTHING",
                params![account, check],
            )?;
        }
        conn.query_row(
            "SELECT scope, fields FROM scopes WHERE account = ?1 AND check_name = ?2",
            params![account, check],
            |r| Ok((r.get(0)?, r.get::<_, String>(1)?)),
        )
        .optional()
        .map(|found| {
            found.map(|(scope, names)| (scope, serde_json::from_str(&names).unwrap_or_default()))
        })
    }

    /// Whether the store holds any answer of `check` on `account` obtained since `since`: a
    /// job's first night on a check finds none, and looks none of its rows up one by one.
    fn holds_any(&self, account: &str, check: &str, since: i64) -> Result<bool, StoreError> {
        let sql = sql(&self.dir);
        let Some((scope, _)) = Self::scope(&self.conn, account, check, false).map_err(sql)? else {
            return Ok(false);
        };
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM results WHERE scope = ?1 AND obtained_at >= ?2)",
                params![scope, since],
                |r| r.get(0),
            )
            .map_err(sql)
    }

    /// The answers obtained at or after `since` (Unix seconds) for the identifiers of `rows`,
    /// looked up in the order of their hashes, as the key keeps them.
    fn lookup(
        &self,
        account: &str,
        check: &str,
        since: i64,
        rows: &[(RowKey, [u8; 16])],
    ) -> Result<Vec<Answer>, StoreError> {
        let sql = sql(&self.dir);
        let Some((scope, names)) = Self::scope(&self.conn, account, check, false).map_err(sql)?
        else {
            return Ok(Vec::new());
        };
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT answer, obtained_at FROM results
                 WHERE scope = ?1 AND ident = ?2 AND obtained_at >= ?3",
            )
            .map_err(sql)?;
        let mut sorted = rows.to_vec();
        sorted.sort_unstable_by_key(|(_, ident)| *ident);
        let mut found = Vec::new();
        for (key, ident) in sorted {
            let answer: Option<(String, i64)> = st
                .query_row(params![scope, &ident[..], since], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(sql)?;
            found.extend(answer.and_then(|(a, at)| decode(&a, at, &names, key, ident)));
        }
        Ok(found)
    }

    /// The scope of `check` on `account`, made if new, and its result fields' names, with
    /// `names` numbered onto them: in one transaction, so that jobs keeping answers at once
    /// agree on the numbers, and before any answer is encoded with them.
    fn numbered(
        &mut self,
        account: &str,
        check: &str,
        names: &[String],
    ) -> Result<(i64, Vec<String>), StoreError> {
        let sql = sql(&self.dir);
        let tx = self.conn.transaction().map_err(sql)?;
        let (scope, mut known) = Self::scope(&tx, account, check, true)
            .map_err(sql)?
            .unwrap_or_default();
        let before = known.len();
        for name in names {
            if !known.contains(name) {
                known.push(name.clone());
            }
        }
        if known.len() > before {
            tx.execute(
                "UPDATE scopes SET fields = ?1 WHERE scope = ?2",
                params![serde_json::to_string(&known).unwrap_or_default(), scope],
            )
            .map_err(sql)?;
        }
        tx.commit().map_err(sql)?;
        Ok((scope, known))
    }

    /// Keeps `answers` under `scope`, in one transaction; an answer older than the one kept
    /// is dropped. A job's answers come a range of hashes at a time, each sorted by hash
    /// ([`ByHash`]), so that they go in the key's order.
    fn keep(&mut self, scope: i64, answers: &[Kept]) -> Result<(), StoreError> {
        let sql = sql(&self.dir);
        let tx = self.conn.transaction().map_err(sql)?;
        {
            // Several answers a statement: a statement's run through SQLite's machine cost
            // about half as much again as the answer it inserted (a million answers: 1.29 s
            // one at a time, 0.93 s 32 at a time).
            let mut many = tx.prepare_cached(&KEEP_MANY).map_err(sql)?;
            let mut one = tx.prepare_cached(&keep_sql(1)).map_err(sql)?;
            let mut chunks = answers.chunks_exact(KEEP_AT_ONCE);
            for chunk in chunks.by_ref() {
                for (i, a) in chunk.iter().enumerate() {
                    many.raw_bind_parameter(4 * i + 1, scope).map_err(sql)?;
                    many.raw_bind_parameter(4 * i + 2, &a.ident[..])
                        .map_err(sql)?;
                    many.raw_bind_parameter(4 * i + 3, a.obtained)
                        .map_err(sql)?;
                    many.raw_bind_parameter(4 * i + 4, &a.text).map_err(sql)?;
                }
                many.raw_execute().map_err(sql)?;
            }
            for a in chunks.remainder() {
                one.execute(params![scope, &a.ident[..], a.obtained, a.text])
                    .map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }

    /// Puts the store's connection in `mode` ([`journal_mode`]).
    fn journal(&self, mode: JournalMode) -> Result<(), StoreError> {
        journal_mode(&self.conn, mode)
            .map(drop)
            .map_err(sql(&self.dir))
    }

    /// Deletes the answers obtained more than `older_than` ago, or all of them; returns how
    /// many. The key stays, so that the states of jobs still open keep matching.
    pub fn purge(&self, older_than: Option<std::time::Duration>) -> Result<u64, StoreError> {
        let before = older_than.map_or(i64::MAX, |age| {
            unix_now().saturating_sub(i64::try_from(age.as_secs()).unwrap_or(i64::MAX))
        });
        let n = self
            .conn
            .execute("DELETE FROM results WHERE obtained_at < ?1", [before])
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

    /// Whether the store is to take this job's answers: its check keeps them, and no earlier
    /// run handed them over with nothing sent since. Only then does the output's pass hand
    /// its rows on.
    pub fn takes_from(&self, journal: &Journal) -> bool {
        // A state that cannot say is tried: keeping warns of it.
        self.check.reuse.keeps() && !journal.answers_stored().unwrap_or(false)
    }

    /// Hands the store the final answers the job obtained, unless an earlier run already did
    /// and nothing was sent since; a check that never reuses keeps none. They come from the
    /// output's pass over the journal (`handed`), or, where that pass stopped early or never
    /// read the journal, from a pass of the store's own. A failure costs later jobs the
    /// reuse, never this one its output.
    pub fn keep_from(mut self, journal: &Journal, handed: Handed) {
        if !self.check.reuse.keeps() {
            return;
        }
        let keeping = std::time::Instant::now();
        match self.keep_all(journal, handed) {
            Ok((n, gathered, fed)) if n > 0 => tracing::info!(
                "kept {n} answers in the results store in {:.2} s ({gathered:.2} s {})",
                keeping.elapsed().as_secs_f64(),
                if fed {
                    "taking them as the output was written"
                } else {
                    "reading them from the state"
                }
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("{e}"),
        }
    }

    /// How many answers the store took, the seconds spent gathering them, and whether they
    /// came from the output's pass.
    fn keep_all(
        &mut self,
        journal: &Journal,
        handed: Handed,
    ) -> Result<(u64, f64, bool), StoreError> {
        if journal.answers_stored()? {
            return Ok((0, 0.0, false));
        }
        let gathering = std::time::Instant::now();
        let echoes = self.check.reuse.echoes;
        let dir = self.store.dir.display().to_string();
        let io = |source| StoreError::Io {
            dir: dir.clone(),
            source,
        };
        let (account, check) = (&self.side.account, self.check.name);
        let mut names = journal.field_numbers()?;
        names.retain(|name| !echoes.contains(&name.as_str()));
        let (scope, names) = self.store.numbered(account, check, &names)?;
        let numbers = journal.by_numbers(&names)?;
        let (by_hash, fed) = match ByHash::fed(handed, &numbers, &self.store.dir, io)? {
            Some(by_hash) => (by_hash, true),
            None => (ByHash::gather(journal, &names, &self.store.dir, io)?, false),
        };
        let gathered = gathering.elapsed().as_secs_f64();
        let mut kept = 0;
        // The answers go in as one pass over the key space, mostly onto new pages: in place,
        // each is written once, where the WAL writes it twice. Another job holding the store
        // open keeps it in WAL, and the answers go through it.
        self.store.journal(JournalMode::Rollback)?;
        let written = by_hash.ranges(
            |answers| {
                self.store.keep(scope, answers)?;
                kept += answers.len() as u64;
                Ok(())
            },
            io,
        );
        let back = self.store.journal(JournalMode::Wal);
        written?;
        back?;
        journal.set_answers_stored(true)?;
        Ok((kept, gathered, fed))
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

#[cfg(test)]
mod tests;
