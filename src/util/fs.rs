//! Files that hold personal data or secrets: created readable only by their owner, from the
//! moment they exist.

use std::fs::{File, OpenOptions};
use std::path::Path;

/// Creates `dir` (and parents) readable only by the owner: it holds personal data.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Options that create a file readable only by its owner (mode 0600 from its creation).
pub fn private_options() -> OpenOptions {
    let mut opts = OpenOptions::new();
    opts.write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts
}

/// Opens a file for writing, empty, with mode 0600 from its creation.
pub fn create_private_file(path: &Path) -> std::io::Result<File> {
    private_options().truncate(true).open(path)
}

/// [`create_private_file`], for async code.
pub async fn create_private_file_async(path: &Path) -> std::io::Result<tokio::fs::File> {
    let mut opts = tokio::fs::OpenOptions::from(private_options());
    opts.truncate(true).open(path).await
}

/// Puts a written temporary file in place of `path`: its data synced first, then renamed over
/// whatever `path` held, then the directory synced so that the rename itself is durable.
/// Readers of `path` see the old file or the new one, never part of either.
pub fn persist(temp: tempfile::NamedTempFile, path: &Path) -> std::io::Result<()> {
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `bytes` to `path` whole or not at all, with `mode` (unix): through a temporary file
/// beside it, `.<name>.<random>.tmp`, hidden and with a name no reader of `*.json` or `*.prom`
/// takes, then [`persist`]ed. The mode is set on the file itself, whatever the umask, since a
/// file meant for another user (node_exporter's) must be readable by it.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    // tempfile creates the file 0600.
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    std::io::Write::write_all(&mut temp, bytes)?;
    persist(temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn atomic_writes_replace_whole_files_with_their_mode_and_leave_no_temporary_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.prom");
        std::fs::write(&path, "old").unwrap();
        for mode in [0o600, 0o644] {
            write_atomic(&path, b"new\n", mode).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode);
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["job.prom"]);
        let missing = dir.path().join("no such dir").join("job.prom");
        assert!(write_atomic(&missing, b"x", 0o600).is_err());
    }
}
