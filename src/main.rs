//! The `muster` binary: parses the command line and hands it to [`muster::cli`].

use clap::Parser;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = muster::cli::Cli::parse();
    std::process::exit(muster::cli::run(cli));
}
