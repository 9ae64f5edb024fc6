//! The `muster` binary: parses the command line and hands it to [`muster::cli`].

use clap::Parser;

fn main() {
    let cli = muster::cli::Cli::parse();
    // `muster bench` (W4) and `muster sim` crash agents on purpose: a warning per crash
    // would be printed, and timed, thousands of times; their reports say what happened.
    let default = match cli.command {
        muster::cli::Command::Bench(_) | muster::cli::Command::Sim(_) => "error",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .init();
    std::process::exit(muster::cli::run(cli));
}
