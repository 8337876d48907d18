//! The `upcache` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: fewer instructions per allocation than glibc's malloc on the hit path (see
/// docs/BENCHMARKS.md, "Small hits, instruction counts").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    upcache::cli::run(upcache::cli::Cli::parse())
}
