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

    /// Hands the store the final answers the job obtained, unless an earlier run already did
    /// and nothing was sent since; a check that never reuses keeps none. A failure costs
    /// later jobs the reuse, never this one its output.
    pub fn keep_from(mut self, journal: &Journal) {
        if !self.check.reuse.keeps() {
            return;
        }
        let keeping = std::time::Instant::now();
        match self.keep_all(journal) {
            Ok((n, gathered)) if n > 0 => tracing::info!(
                "kept {n} answers in the results store in {:.2} s ({gathered:.2} s reading them \
                 from the state)",
                keeping.elapsed().as_secs_f64()
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("{e}"),
        }
    }

    /// How many answers the store took, and the seconds spent reading them from the journal.
    fn keep_all(&mut self, journal: &Journal) -> Result<(u64, f64), StoreError> {
        if journal.answers_stored()? {
            return Ok((0, 0.0));
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
        let by_hash = ByHash::gather(journal, &names, &self.store.dir, io)?;
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
        Ok((kept, gathered))
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
mod tests {
    use super::answer::{Times, encode};
    use super::*;
    use crate::outcome::{Outcome, Status};

    fn answer(fields: &[(&str, &str)]) -> Answer {
        Answer {
            key: RowKey(7),
            ident: [3; 16],
            outcome: Outcome {
                status: Status::NeedsReview,
                reason: Some("name_mismatch".into()),
                message: None,
                provider_status: Some("SUCCESS".into()),
                request_id: Some("r1".into()),
                fields: fields
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            },
            checked_at: "2026-12-01T02:00:00Z".into(),
        }
    }

    fn owned(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// The answer's fields by the scope's numbers, as the journal hands them over.
    fn values(a: &Answer, names: &[String]) -> String {
        let fields = a.outcome.fields.iter();
        crate::journal::values_by_number(fields.map(|(n, v)| (n.as_str(), v.as_str())), names)
    }

    /// Keeps `answers` as a job does: their names numbered, then each encoded and kept.
    fn keep(store: &mut ResultsStore, answers: &[Answer]) {
        let mut all: Vec<String> = Vec::new();
        for (name, _) in answers.iter().flat_map(|a| &a.outcome.fields) {
            if !all.contains(name) {
                all.push(name.clone());
            }
        }
        let (scope, numbered) = store.numbered("acct", "check", &all).unwrap();
        let mut times = Times::default();
        let kept: Vec<Kept> = answers
            .iter()
            .map(|a| {
                let (obtained, with_time) = times.of(&a.checked_at).unwrap();
                Kept {
                    ident: a.ident,
                    obtained,
                    text: encode(a, with_time, &values(a, &numbered)),
                }
            })
            .collect();
        store.keep(scope, &kept).unwrap();
    }

    /// Field names are numbered once per scope, in the order they are first seen: a later
    /// job with other fields adds to them, and each answer reads back as it was.
    #[test]
    fn answers_keep_their_fields_by_number_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ResultsStore::open(dir.path()).unwrap();
        let first = answer(&[("name_at_bank", "RAVI"), ("account_exists", "true")]);
        let second = answer(&[("account_exists", "false"), ("ifsc", "HDFC0001234")]);
        // The first as the journal writes its time; the second with one of an older version's.
        let second = Answer {
            checked_at: "2026-12-01T07:30:00+05:30".into(),
            ..second
        };
        let at = |a: &Answer| Times::default().of(&a.checked_at).unwrap();
        let (scope, numbered) = store
            .numbered("acct", "check", &owned(&["name_at_bank", "account_exists"]))
            .unwrap();
        let a = encode(&first, at(&first).1, &values(&first, &numbered));
        let (again, names) = store
            .numbered("acct", "check", &owned(&["account_exists", "ifsc"]))
            .unwrap();
        assert_eq!(again, scope);
        let b = encode(&second, at(&second).1, &values(&second, &names));
        assert_eq!(names, ["name_at_bank", "account_exists", "ifsc"]);
        assert!(
            !a.contains("name_at_bank") && !b.contains("ifsc"),
            "{a} {b}"
        );
        assert!(
            !a.contains("2026"),
            "the time is the row's obtained_at: {a}"
        );
        assert!(b.contains("+05:30"), "{b}");
        for (text, original) in [(a, first), (b, second)] {
            let back = decode(&text, at(&original).0, &names, RowKey(9), [5; 16]).unwrap();
            assert_eq!((back.key, back.ident), (RowKey(9), [5; 16]));
            assert_eq!(back.checked_at, original.checked_at);
            let mut want = original.outcome.fields.clone();
            let mut got = back.outcome.fields.clone();
            want.sort();
            got.sort();
            assert_eq!(got, want);
            assert_eq!(
                (
                    back.outcome.status,
                    back.outcome.reason,
                    back.outcome.request_id
                ),
                (
                    Status::NeedsReview,
                    original.outcome.reason,
                    original.outcome.request_id
                )
            );
        }
        let pending = encode(
            &Answer {
                outcome: Outcome::new(Status::Pending),
                ..answer(&[])
            },
            false,
            "[]",
        );
        assert!(
            decode(&pending, 0, &names, RowKey(1), [0; 16]).is_none(),
            "never reused"
        );
    }

    /// Answers go in many to a statement and the rest one at a time; either way a newer answer
    /// for an identifier replaces an older one, never the other way, even within a statement.
    #[test]
    fn many_answers_at_once_keep_the_newest_of_each() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ResultsStore::open(dir.path()).unwrap();
        let (scope, _) = store.numbered("acct", "check", &[]).unwrap();
        let kept = |i: u8, obtained: i64| Kept {
            ident: [i; 16],
            obtained,
            text: format!("[{obtained}]"),
        };
        let n = 2 * KEEP_AT_ONCE as u8 + 6;
        store
            .keep(scope, &(0..n).map(|i| kept(i, 100)).collect::<Vec<_>>())
            .unwrap();
        let mut second: Vec<Kept> = (0..n)
            .map(|i| kept(i, if i % 2 == 0 { 200 } else { 50 }))
            .collect();
        second.insert(1, kept(0, 300));
        store.keep(scope, &second).unwrap();
        let read: Vec<(Vec<u8>, i64, String)> = store
            .conn
            .prepare("SELECT ident, obtained_at, answer FROM results ORDER BY ident")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read.len(), usize::from(n));
        for (ident, at, text) in read {
            let want = match ident[0] {
                0 => 300,
                i if i % 2 == 0 => 200,
                _ => 100,
            };
            assert_eq!((at, text), (want, format!("[{want}]")), "{ident:?}");
        }
    }

    /// A job's answers go in place when the store is its alone, through the WAL while another
    /// job holds it open; either way the store is back in WAL after, and whole.
    #[test]
    fn answers_go_in_place_only_on_a_store_no_other_job_holds() {
        let dir = tempfile::tempdir().unwrap();
        let mode = |store: &ResultsStore| {
            store
                .conn
                .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
                .unwrap()
        };
        let mut store = ResultsStore::open(dir.path()).unwrap();
        let other = ResultsStore::open(dir.path()).unwrap();
        store.journal(JournalMode::Rollback).unwrap();
        assert_eq!(mode(&store), "wal", "another job holds the store open");
        keep(&mut store, &[answer(&[("name", "RAVI")])]);
        store.journal(JournalMode::Wal).unwrap();
        drop(other);

        let second = Answer {
            ident: [4; 16],
            ..answer(&[("name", "ASHA")])
        };
        store.journal(JournalMode::Rollback).unwrap();
        assert_eq!(mode(&store), "delete");
        keep(&mut store, &[second]);
        store.journal(JournalMode::Wal).unwrap();
        assert_eq!(mode(&store), "wal");

        let reader = ResultsStore::open(dir.path()).unwrap();
        let found = reader
            .lookup(
                "acct",
                "check",
                0,
                &[(RowKey(1), [3; 16]), (RowKey(2), [4; 16])],
            )
            .unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|a| (a.key, a.outcome.fields.clone(), a.checked_at.clone()))
            .collect();
        let field = |v: &str| vec![("name".to_string(), v.to_string())];
        let at = "2026-12-01T02:00:00Z".to_string();
        assert_eq!(
            names,
            [
                (RowKey(1), field("RAVI"), at.clone()),
                (RowKey(2), field("ASHA"), at)
            ]
        );
    }
}
