//! What the journal's commits cost the disk: an intent's commit is synced and others are not,
//! and a short WAL (a paced run's) is checkpointed so that later commits overwrite it from its
//! beginning, while a long one is left to the autocheckpoint.

use super::super::schema::{durable, open_db, restart_short_log};

#[test]
fn the_sync_mode_follows_each_switch() {
    let dir = tempfile::tempdir().unwrap();
    let conn = open_db(dir.path()).unwrap();
    let mode = || {
        conn.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0))
            .unwrap()
    };
    assert_eq!(mode(), 1, "NORMAL until an intent");
    // More than once each way: the switch is a cached statement, and each run must take.
    for _ in 0..3 {
        durable(&conn, true).unwrap();
        assert_eq!(mode(), 2, "FULL for an intent's commit");
        durable(&conn, false).unwrap();
        assert_eq!(mode(), 1, "NORMAL for the others");
    }
}

/// The WAL file's length.
fn log_len(dir: &std::path::Path) -> u64 {
    let wal = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-wal"))
        .expect("a WAL file");
    std::fs::metadata(wal).unwrap().len()
}

/// `n` commits of a `bytes` blob each, in place of a run's.
fn commits(conn: &rusqlite::Connection, n: usize, bytes: usize) {
    for i in 0..n {
        conn.execute(
            "INSERT OR REPLACE INTO t (k, v) VALUES (?1, zeroblob(?2))",
            rusqlite::params![(i % 7) as i64, bytes as i64],
        )
        .unwrap();
    }
}

#[test]
fn a_short_log_starts_again_from_its_beginning_and_a_long_one_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let conn = open_db(dir.path()).unwrap();
    conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        .unwrap();
    commits(&conn, 50, 3000);
    let grown = log_len(dir.path());
    commits(&conn, 50, 3000);
    assert!(
        log_len(dir.path()) > grown,
        "without a checkpoint every commit grows the log"
    );

    let before = log_len(dir.path());
    restart_short_log(&conn);
    commits(&conn, 50, 3000);
    assert_eq!(
        log_len(dir.path()),
        before,
        "after the checkpoint the commits overwrite the log's first blocks"
    );

    // A log past 32 MB is an autocheckpoint's: checkpointed here, its next commits would
    // overwrite it, and they append instead.
    commits(&conn, 40, 1 << 20);
    let long = log_len(dir.path());
    assert!(long > 32 << 20, "{long}");
    restart_short_log(&conn);
    commits(&conn, 5, 3000);
    assert!(
        log_len(dir.path()) > long,
        "a long log is left to the autocheckpoint"
    );
}
