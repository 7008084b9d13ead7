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

/// What an output held: rows by status, by status and reason, and the rows that repeated an
/// earlier identifier.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OutputCounts {
    pub counts: BTreeMap<Status, u64>,
    pub reasons: BTreeMap<(Status, String), u64>,
    pub duplicates: u64,
}

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
    pub fn output_written(&self, path: &Path, held: &OutputCounts) -> Result<(), JournalError> {
        let file = identify(path).map_err(io_error(&self.dir))?;
        let tally: Vec<String> = held
            .counts
            .iter()
            .map(|(s, n)| format!("{}={n}", s.as_str()))
            .collect();
        // Reasons come from providers too: JSON holds any text.
        let reasons: Vec<(&str, &str, u64)> = held
            .reasons
            .iter()
            .map(|((s, r), n)| (s.as_str(), r.as_str(), *n))
            .collect();
        let reasons = serde_json::to_string(&reasons).unwrap_or_default();
        self.set_meta(
            KEY,
            &format!(
                "{file}\n{}\n{}\n{reasons}",
                tally.join(","),
                held.duplicates
            ),
        )
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
        let mut lines = rest.splitn(3, '\n');
        let (Some(tally), Some(duplicates), Some(reasons)) =
            (lines.next(), lines.next(), lines.next())
        else {
            return Ok(None);
        };
        let Ok(reasons) = serde_json::from_str::<Vec<(String, String, u64)>>(reasons) else {
            return Ok(None);
        };
        let mut held = OutputCounts::default();
        for (status, reason, n) in reasons {
            let Some(status) = Status::parse(&status) else {
                return Ok(None);
            };
            held.reasons.insert((status, reason), n);
        }
        for part in tally.split(',').filter(|p| !p.is_empty()) {
            let parsed = part
                .split_once('=')
                .and_then(|(s, n)| Some((Status::parse(s)?, n.parse().ok()?)));
            let Some((status, n)) = parsed else {
                return Ok(None);
            };
            held.counts.insert(status, n);
        }
        Ok(duplicates.parse().ok().map(|d| OutputCounts {
            duplicates: d,
            ..held
        }))
    }

    /// The rows are about to change: the output on disk no longer holds them as they will be.
    pub(super) fn output_stale(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        conn.execute("DELETE FROM meta WHERE key = ?1", [KEY])
            .map(drop)
    }
}
