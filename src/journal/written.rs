//! The output the journal last wrote, so that a run which changes nothing (the same command
//! again after a finished job) leaves it as it is instead of writing every row again: at ten
//! million rows that is most of such a run.
//!
//! The record is removed before anything changes the rows (planning, recovery, a run's
//! writer), in the same transaction where it can be, and written only once the output is in
//! place: a run killed in between leaves no record, and the next run writes the output.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Journal, JournalError, io_error};
use crate::outcome::Status;

const KEY: &str = "output";

/// What an output held: rows by status, and the rows that repeated an earlier identifier.
pub type OutputCounts = (BTreeMap<Status, u64>, u64);

/// The file at `path` as it is on disk now: where it is, which file it is, its size and its
/// modification time. An output edited, replaced or removed since no longer matches.
fn identify(path: &Path) -> std::io::Result<String> {
    let real = std::fs::canonicalize(path)?;
    let meta = std::fs::metadata(&real)?;
    let modified = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    #[cfg(unix)]
    let file = {
        use std::os::unix::fs::MetadataExt;
        format!("{}:{}", meta.dev(), meta.ino())
    };
    #[cfg(not(unix))]
    let file = String::new();
    Ok(format!(
        "{}\n{file}:{}:{modified}",
        real.display(),
        meta.len()
    ))
}

impl Journal {
    /// Records that the output at `path`, as it is now, holds every row as the journal has it.
    pub fn output_written(
        &self,
        path: &Path,
        counts: &BTreeMap<Status, u64>,
        duplicates: u64,
    ) -> Result<(), JournalError> {
        let file = identify(path).map_err(io_error(&self.dir))?;
        let tally: Vec<String> = counts
            .iter()
            .map(|(s, n)| format!("{}={n}", s.as_str()))
            .collect();
        self.set_meta(KEY, &format!("{file}\n{}\n{duplicates}", tally.join(",")))
    }

    /// What the output at `path` holds, when it is still the file this journal last wrote and
    /// no row changed since.
    pub fn output_unchanged(&self, path: &Path) -> Result<Option<OutputCounts>, JournalError> {
        let Some(record) = self.meta(KEY)? else {
            return Ok(None);
        };
        let Ok(file) = identify(path) else {
            return Ok(None);
        };
        let Some(rest) = record
            .strip_prefix(file.as_str())
            .and_then(|r| r.strip_prefix('\n'))
        else {
            return Ok(None);
        };
        let Some((tally, duplicates)) = rest.split_once('\n') else {
            return Ok(None);
        };
        let mut counts = BTreeMap::new();
        for part in tally.split(',').filter(|p| !p.is_empty()) {
            let parsed = part
                .split_once('=')
                .and_then(|(s, n)| Some((Status::parse(s)?, n.parse().ok()?)));
            let Some((status, n)) = parsed else {
                return Ok(None);
            };
            counts.insert(status, n);
        }
        Ok(duplicates.parse().ok().map(|d| (counts, d)))
    }

    /// The rows are about to change: the output on disk no longer holds them as they will be.
    pub(super) fn output_stale(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        conn.execute("DELETE FROM meta WHERE key = ?1", [KEY])
            .map(drop)
    }
}
