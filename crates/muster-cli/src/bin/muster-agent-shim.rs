//! `muster-agent-shim`: the small process `muster` puts between itself and each command
//! agent, so that every descendant of the agent dies with muster (see
//! `muster_command::shim`). A binary of its own because it starts in a fraction of the
//! time the whole `muster` binary takes, once per oneshot task; `muster` uses it when it
//! lies beside it, and runs itself in shim mode otherwise.

fn main() {
    muster::agents::command::shim::run_if_requested();
    eprintln!(
        "muster-agent-shim: muster starts this program between itself and each command \
         agent; it is not run by hand"
    );
    std::process::exit(2);
}
