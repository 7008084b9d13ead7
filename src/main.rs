//! The `bulkverify` binary: everything lives in the library; see `cli::main`.

/// jemalloc, for memory that stays flat over a long run: see its entry in `Cargo.toml`.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    bulkverify::cli::main()
}
