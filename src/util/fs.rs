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
