//! One run per state: the lock file, moving a state aside for `--fresh`, and purging.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::schema::DB_FILE;
use super::{Journal, JournalError, io_error};
use crate::util::fs::private_options;

pub(super) const LOCK_FILE: &str = "lock";

impl Journal {
    /// Deletes a job's state (the journal holds the providers' answers, which are personal
    /// data) and the old states `--fresh` moved aside beside it, once no run uses it. Returns
    /// the directories deleted.
    pub fn purge(dir: &Path) -> Result<Vec<PathBuf>, JournalError> {
        let io = io_error(dir);
        let is_state = |d: &Path| d.join(DB_FILE).is_file() && d.join(LOCK_FILE).is_file();
        if !is_state(dir) {
            return Err(JournalError::NotAState {
                dir: dir.display().to_string(),
            });
        }
        let mut doomed = vec![dir.to_path_buf()];
        if let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            let aside = format!("{}.old-", name.to_string_lossy());
            for entry in std::fs::read_dir(parent).map_err(io)? {
                let path = entry.map_err(io)?.path();
                let named = path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&aside));
                if named && is_state(&path) {
                    doomed.push(path);
                }
            }
        }
        let mut deleted = Vec::new();
        for d in doomed {
            // Held while deleting: a run that starts meanwhile finds it taken.
            let _lock = take_lock(&d)?;
            std::fs::remove_dir_all(&d).map_err(io_error(&d))?;
            deleted.push(d);
        }
        Ok(deleted)
    }
}

/// Moves an existing state aside for `--fresh`, kept rather than deleted.
pub(super) fn move_aside(dir: &Path) -> Result<(), JournalError> {
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let aside = PathBuf::from(format!("{}.old-{stamp}", dir.display()));
    // Moving a directory another run is using would pull its state away under it.
    drop(take_lock(dir)?);
    std::fs::rename(dir, &aside).map_err(io_error(dir))?;
    tracing::warn!("the old state was moved to {}", aside.display());
    Ok(())
}

/// Takes the state's lock and writes our pid in it, for the message another run gets.
pub(super) fn take_lock(dir: &Path) -> Result<File, JournalError> {
    let path = dir.join(LOCK_FILE);
    let io = io_error(dir);
    let mut file = private_options()
        .read(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0).map_err(io)?;
            write!(file, "{}", std::process::id()).map_err(io)?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path)
                .ok()
                .filter(|p| !p.trim().is_empty())
                .map(|p| format!(" (pid {})", p.trim()))
                .unwrap_or_default();
            Err(JournalError::Busy {
                dir: dir.display().to_string(),
                pid,
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}
