//! The `broker` binary: see `broker --help`.

fn main() -> std::process::ExitCode {
    broker::cli::main()
}
