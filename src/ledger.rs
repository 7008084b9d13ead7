//! The requests each provider account spent, shared by every job on the machine.
//!
//! A provider counts its per-day quota per account, not per job: two nightly exports checked
//! against one account under two state directories draw on the same day. Each job's journal
//! remembers only its own requests, so the gate's per-day window also reads this ledger: one
//! SQLite file (WAL, 0600) in a directory every job of the user shares
//! (`BULKVERIFY_LEDGER_DIR`, else `$XDG_STATE_HOME/bulkverify`, else
//! `~/.local/state/bulkverify`). An account is named by a digest of the provider, its base URL
//! and the first credential (the client id, or for a single-token provider a digest of the
//! token): never a secret.
//!
//! A run records its grants once a second, and reads once a second what other runs on the
//! same account recorded since, so runs at the same time see each other within about a
//! second. A ledger that cannot be opened or written costs the sharing, never the run: the
//! journal's own count still holds the job's quota.

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};
use sha2::{Digest, Sha256};

use crate::config::ProviderSettings;
use crate::quota::gate::{DAY_MINUTES, WeakGate};
use crate::util::fs::create_private_dir;
use crate::util::sync::MinuteCounts;

const FILE: &str = "usage.sqlite";
/// How often a run records its requests and reads the other runs'.
const SYNC_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(
        "the usage ledger in {dir} cannot be used ({source}); the per-day quota counts this \
         job's requests only"
    )]
    Io {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the usage ledger in {dir} cannot be used ({source}); the per-day quota counts this \
         job's requests only"
    )]
    Sqlite {
        dir: String,
        #[source]
        source: rusqlite::Error,
    },
}

/// Wraps SQLite errors with the ledger's directory.
fn sql(dir: &Path) -> impl Fn(rusqlite::Error) -> LedgerError + Copy + '_ {
    move |source| LedgerError::Sqlite {
        dir: dir.display().to_string(),
        source,
    }
}

/// Where the ledger lives, from the environment: `None` when no directory can be found (no
/// home), or when `BULKVERIFY_LEDGER_DIR` is set empty to turn the sharing off.
pub fn default_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(dir) = env("BULKVERIFY_LEDGER_DIR") {
        return (!dir.is_empty()).then(|| PathBuf::from(dir));
    }
    if let Some(state) = env("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return Some(PathBuf::from(state).join("bulkverify"));
    }
    env("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".local/state/bulkverify"))
}

/// The account's name in the ledger.
pub fn account(settings: &ProviderSettings) -> String {
    let first = settings
        .credentials
        .first()
        .map(|c| c.expose().to_string())
        .unwrap_or_default();
    let digest = Sha256::new()
        .chain_update(b"bulkverify ledger\0")
        .chain_update(settings.defaults.name.as_bytes())
        .chain_update([0])
        .chain_update(settings.base_url.as_str().as_bytes())
        .chain_update([0])
        .chain_update(first.as_bytes())
        .finalize();
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// One run's handle on the ledger.
pub struct Ledger {
    dir: PathBuf,
    conn: Connection,
    account: String,
    /// This run's name, so that it reads back only what others wrote.
    run: String,
    /// The last entry read.
    seen: i64,
    /// The minute of the last sweep of old entries.
    swept: i64,
}

impl Ledger {
    pub fn open(dir: &Path, account: String) -> Result<Ledger, LedgerError> {
        let io = |source| LedgerError::Io {
            dir: dir.display().to_string(),
            source,
        };
        let fail = sql(dir);
        create_private_dir(dir).map_err(io)?;
        let path = dir.join(FILE);
        if !path.exists() {
            crate::util::fs::create_private_file(&path).map_err(io)?;
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(fail)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(fail)?;
        // NORMAL: a commit survives a killed process, not a power loss, which costs the
        // sharing of the last moments' count and spares an fsync a second.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS spent (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 account TEXT NOT NULL, run TEXT NOT NULL,
                 minute INTEGER NOT NULL, requests INTEGER NOT NULL) STRICT;
             CREATE INDEX IF NOT EXISTS spent_account ON spent(account, minute);",
        )
        .map_err(fail)?;
        Ok(Ledger {
            dir: dir.to_path_buf(),
            conn,
            account,
            run: format!("{:016x}", rand::random::<u64>()),
            seen: 0,
            swept: 0,
        })
    }

    /// What every run spent on the account after `since_minute` (a Unix minute), per minute.
    /// Entries from now on that this run has not read are those [`Self::others`] returns.
    pub fn spent_since(&mut self, since_minute: i64) -> Result<Vec<(i64, u64)>, LedgerError> {
        let fail = sql(&self.dir);
        let tx = self.conn.transaction().map_err(fail)?;
        let seen: i64 = tx
            .query_row("SELECT coalesce(max(id), 0) FROM spent", [], |r| r.get(0))
            .map_err(fail)?;
        let rows = {
            let mut st = tx
                .prepare(
                    "SELECT minute, sum(requests) FROM spent
                     WHERE account = ?1 AND minute > ?2 AND id <= ?3
                     GROUP BY minute ORDER BY minute",
                )
                .map_err(fail)?;
            st.query_map(params![self.account, since_minute, seen], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(fail)?
        };
        tx.commit().map_err(fail)?;
        self.seen = seen;
        Ok(rows)
    }

    /// Records this run's requests, per minute, and (once an hour) forgets entries older than
    /// two days.
    pub fn record(&mut self, spent: &[(i64, u64)]) -> Result<(), LedgerError> {
        let fail = sql(&self.dir);
        let tx = self.conn.transaction().map_err(fail)?;
        for (minute, n) in spent {
            tx.execute(
                "INSERT INTO spent (account, run, minute, requests) VALUES (?1, ?2, ?3, ?4)",
                params![self.account, self.run, minute, *n as i64],
            )
            .map_err(fail)?;
        }
        let sweep = spent
            .last()
            .map(|(m, _)| *m)
            .filter(|m| *m >= self.swept + 60);
        if let Some(minute) = sweep {
            tx.execute(
                "DELETE FROM spent WHERE minute < ?1",
                [minute - 2 * DAY_MINUTES],
            )
            .map_err(fail)?;
        }
        tx.commit().map_err(fail)?;
        if let Some(minute) = sweep {
            self.swept = minute;
        }
        Ok(())
    }

    /// What other runs on the account recorded since the last look, per minute.
    pub fn others(&mut self) -> Result<Vec<(i64, u64)>, LedgerError> {
        let rows: Vec<(i64, i64, u64)> = {
            let mut st = self
                .conn
                .prepare_cached(
                    "SELECT id, minute, requests FROM spent
                     WHERE id > ?1 AND account = ?2 AND run != ?3 ORDER BY id",
                )
                .map_err(sql(&self.dir))?;
            st.query_map(params![self.seen, self.account, self.run], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
            })
            .and_then(Iterator::collect)
            .map_err(sql(&self.dir))?
        };
        if let Some((id, _, _)) = rows.last() {
            self.seen = *id;
        }
        Ok(rows.into_iter().map(|(_, m, n)| (m, n)).collect())
    }

    /// Keeps the ledger in step with a running gate, on its own thread: once a second it
    /// records what `counts` gathered and tells the gate what other runs spent, until
    /// [`Following::finish`]. It wakes only for that, never for a request.
    pub fn follow(mut self, gate: WeakGate, counts: Arc<MinuteCounts>) -> Following {
        let (stop, stopped) = mpsc::channel::<()>();
        let keep = move || {
            let mut pending: Vec<(i64, u64)> = Vec::new();
            let mut warned = false;
            loop {
                // Finished (the sender dropped) or a second passed.
                let open = matches!(
                    stopped.recv_timeout(SYNC_EVERY),
                    Err(mpsc::RecvTimeoutError::Timeout)
                );
                for (minute, n) in counts.take() {
                    match pending.last_mut() {
                        Some((m, c)) if *m == minute => *c += n,
                        _ => pending.push((minute, n)),
                    }
                }
                let synced = self.record(&pending).and_then(|()| self.others());
                match synced {
                    Ok(others) => {
                        pending.clear();
                        if let Some(gate) = gate.upgrade().filter(|_| !others.is_empty()) {
                            gate.spent_elsewhere(&others);
                        }
                    }
                    Err(e) if !warned => {
                        warned = true;
                        tracing::warn!("{e}");
                    }
                    Err(_) => {}
                }
                if !open {
                    return;
                }
            }
        };
        let thread = std::thread::Builder::new()
            .name("ledger".into())
            .spawn(keep)
            .expect("cannot start the usage ledger's thread");
        Following { stop, thread }
    }
}

/// The thread that keeps the ledger in step with a run.
pub struct Following {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Following {
    /// Records what is left and ends the thread: the run sends nothing more.
    pub fn finish(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_one_account_see_each_other_and_no_other_account() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Ledger::open(dir.path(), "acct".into()).unwrap();
        let mut b = Ledger::open(dir.path(), "acct".into()).unwrap();
        let mut other = Ledger::open(dir.path(), "other".into()).unwrap();
        a.record(&[(100, 3), (101, 2)]).unwrap();
        other.record(&[(100, 50)]).unwrap();
        assert_eq!(b.spent_since(0).unwrap(), vec![(100, 3), (101, 2)]);
        assert_eq!(b.others().unwrap(), vec![], "nothing new since");
        a.record(&[(102, 1)]).unwrap();
        b.record(&[(102, 4)]).unwrap();
        assert_eq!(
            b.others().unwrap(),
            vec![(102, 1)],
            "its own entries are not read back"
        );
        assert_eq!(a.others().unwrap(), vec![(102, 4)]);
        assert_eq!(b.spent_since(100).unwrap(), vec![(101, 2), (102, 5)]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn the_directory_comes_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            default_dir(&env(&[("BULKVERIFY_LEDGER_DIR", "/l"), ("HOME", "/h")])),
            Some(PathBuf::from("/l"))
        );
        assert_eq!(default_dir(&env(&[("BULKVERIFY_LEDGER_DIR", "")])), None);
        assert_eq!(
            default_dir(&env(&[("XDG_STATE_HOME", "/s"), ("HOME", "/h")])),
            Some(PathBuf::from("/s/bulkverify"))
        );
        assert_eq!(
            default_dir(&env(&[("HOME", "/h")])),
            Some(PathBuf::from("/h/.local/state/bulkverify"))
        );
        assert_eq!(default_dir(&env(&[])), None);
    }
}
