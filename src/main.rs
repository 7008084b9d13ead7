//! The `bulkverify` binary: everything lives in the library; see `cli::main`.

fn main() -> std::process::ExitCode {
    bulkverify::cli::main()
}
