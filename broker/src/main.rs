//! The `broker` binary: see `broker --help`.

/// mimalloc instead of the system allocator: a request allocates and frees many
/// small buffers across worker threads, where glibc's malloc spends a tenth of the
/// produce path (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    broker::cli::main()
}
