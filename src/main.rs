//! The `upcache` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    upcache::cli::run(upcache::cli::Cli::parse())
}
