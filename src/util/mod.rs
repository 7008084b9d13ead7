//! Helpers every layer may use, and that use nothing of the product: private files, times, the
//! run's stop signal, SQLite's journal modes.

pub mod alarm;
pub mod fs;
pub mod sqlite;
pub mod stop;
pub mod sync;
pub mod time;

/// The package's directory as cargo gives it to the running test, since a test built in
/// another checkout (a build cache shared between clones) holds that checkout's path; the path
/// it was built with when run by hand.
#[cfg(test)]
pub fn package_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
