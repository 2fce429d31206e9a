/// mimalloc rather than glibc's malloc: allocations are spread over every part of a message's
/// path (SQLite's, sqlx's arguments, TLS buffers, the spam tokens), and glibc's bookkeeping for
/// them (`malloc_consolidate`, `unlink_chunk`) was about a tenth of the daemon's CPU samples.
/// Measured in bench/README.md, bottleneck 26: ≈ 4 % less CPU per message, ≈ 2.5 KiB more per
/// idle TLS session.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    passerelle::cli::run()
}
