//! How the SQLite files (a job's journal, the account's results store) write a bulk of new
//! rows: in place, not through the WAL that their readers and writers otherwise share, and
//! several to a statement.

use rusqlite::Connection;

/// How a connection's transactions reach the database file.
pub enum JournalMode {
    /// Through the WAL, which readers and the writer share.
    Wal,
    /// Written in place, the pages they change kept aside until the commit: a bulk of rows
    /// (a job's planning, the answers it hands the store). Its pages are mostly new ones,
    /// appended in key order, which are not kept aside; through the WAL each was written
    /// twice, into the WAL and then into the database (a 10M-row job's planning: 0.45 GB
    /// more).
    Rollback,
}

/// Puts the connection in `mode`; returns whether it is in it. Leaving WAL takes the database
/// for this connection alone, which another connection holding it open (`status` reading a
/// journal, another job on the store) forbids: SQLite refuses at once, and the bulk then goes
/// through the WAL rather than wait for the other or fail (`false`). A database that does not
/// come back to WAL is an error, since its readers and writers share it through the WAL.
pub fn journal_mode(conn: &Connection, mode: JournalMode) -> rusqlite::Result<bool> {
    let asked = match mode {
        JournalMode::Wal => "WAL",
        JournalMode::Rollback => "DELETE",
    };
    let now = conn.query_row(&format!("PRAGMA journal_mode = {asked}"), [], |r| {
        r.get::<_, String>(0)
    });
    match (mode, now) {
        (JournalMode::Wal, Ok(now)) if !now.eq_ignore_ascii_case("wal") => {
            Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                Some(format!("the database stayed in {now} mode, not WAL")),
            ))
        }
        (JournalMode::Rollback, Err(e))
            if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) =>
        {
            Ok(false)
        }
        (JournalMode::Rollback, Ok(now)) => Ok(now.eq_ignore_ascii_case("delete")),
        (JournalMode::Wal, now) => now.map(|_| true),
        (JournalMode::Rollback, Err(e)) => Err(e),
    }
}

/// The `VALUES` list of an `INSERT` of `rows` rows of `columns` parameters each: a bulk goes
/// in many rows a statement, where a statement's run through SQLite's machine cost about as
/// much as the row it inserted.
pub fn values_list(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}
