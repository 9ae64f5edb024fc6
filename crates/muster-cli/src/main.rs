//! The `muster` binary: parses the command line ([`cli`]) and calls the `muster` library.

mod cli;

use std::ffi::OsString;
use std::io::IsTerminal;

use clap::Parser;

/// mimalloc: a runtime on several shards allocates a task's records on one thread and frees
/// them on another, which glibc's allocator serialises on its arena locks (the W2 profile on
/// two shards spent a quarter of its time in malloc and free).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Whether log lines on stderr may carry ANSI colour codes: only when stderr is a terminal
/// and `NO_COLOR` is unset or empty (<https://no-color.org>: any non-empty value disables
/// colour). Redirected to a file or a pipe, stderr gets plain text.
fn colour(stderr_is_terminal: bool, no_color: Option<OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

fn main() {
    // Started as a command agent's shim (`argv[0]` is `muster-agent-shim`), the process is
    // the shim and never returns from this; otherwise agents get the shim from here on.
    muster::agents::command::shim::run_if_requested();
    let cli = crate::cli::Cli::parse();
    // `muster bench` (W4) and `muster sim` crash agents on purpose: a warning per crash
    // would be printed, and timed, thousands of times; their reports say what happened.
    let default = match cli.command {
        crate::cli::Command::Bench(_) | crate::cli::Command::Sim(_) => "error",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .with_writer(std::io::stderr)
        .init();
    std::process::exit(crate::cli::run(cli));
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())), "an empty NO_COLOR is unset");
        assert!(!colour(true, Some("1".into())));
        assert!(
            !colour(true, Some("0".into())),
            "any non-empty value disables colour"
        );
        assert!(!colour(false, None));
        assert!(!colour(false, Some("".into())));
    }
}
