//! muster's system tests, one binary: every guarantee, CLI, node, cluster, browser and fuzz
//! test of the workspace, one module per behaviour (the module named after what it
//! proves). Shared helpers are in `support`; the fuzz targets in `tests/fuzzing` are shared
//! with the libFuzzer targets of `fuzz/`.

/// The system tests run from the repository root, where a user runs `muster` and where the
/// tests' relative paths (`examples/...`, `scripts/...`) point; cargo starts a package's
/// tests in the package's directory (`crates/muster-cli`). This runs before `main` (an
/// ELF initialiser, as the `ctor` crate makes), so no test thread sees another directory.
#[used]
#[unsafe(link_section = ".init_array")]
static RUN_FROM_THE_REPOSITORY_ROOT: extern "C" fn() = {
    extern "C" fn chdir_to_root() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        if let Err(e) = std::env::set_current_dir(root) {
            eprintln!("the system tests must run from the repository root ({root}): {e}");
            std::process::exit(2);
        }
    }
    chdir_to_root
};

#[path = "../fuzzing/mod.rs"]
mod fuzzing;
mod support;

mod a2a_agents;
mod agent_descendants;
mod approve_cli;
mod architecture_layers;
mod bad_manifests;
mod bench_cli;
mod bench_peers;
mod bounded_memory;
mod bounded_quotes;
mod cancellation;
mod cast_conflicts;
mod cel_limits;
mod check_catches_run_refusals;
mod cli_snapshots;
mod cluster_capacity;
mod cluster_effects;
mod cluster_nats;
mod cluster_one_system;
mod cluster_replicas;
mod cluster_retention;
mod cluster_script;
mod cluster_wire;
mod code_review_example;
mod colour_cli;
mod command_agent_scopes;
mod command_agents;
mod completed_work_reuse;
mod contract_violations;
mod count_limits;
mod crash_interrupted_attempts;
mod crash_reassigns_immediately;
mod dashboard_actions;
mod dashboard_browser;
mod dashboard_llm;
mod dashboard_run_page;
mod discovery;
mod duration_limits;
mod effect_ledger;
mod errors_at_root;
mod failover_example;
mod fuzz_cel;
mod fuzz_envelope;
mod fuzz_journal;
mod fuzz_llm;
mod fuzz_loaders;
mod fuzz_regressions;
mod fuzz_surfaces;
mod generated_token_is_kept;
mod http_errors_are_json;
mod inspect_cli;
mod instance_queue;
mod journal_compact;
mod journal_corrupt_file;
mod journal_hardening;
mod journal_index;
mod journal_reads;
mod journal_round_trip;
mod late_results_adopt;
mod llm_agents;
mod llm_real_model;
mod mcp_agents;
mod mcp_server;
mod messaging_contracts;
mod named_restart;
mod no_capable_agent;
mod no_task_lost;
mod outcomes_wait_for_the_journal;
mod recovery_rebuilds_state;
mod refunds_exactly_once;
mod restart_strategies;
mod resume_keeps_budgets;
mod run_reports;
mod scope_leases;
mod scope_overlap;
mod serve_admission;
mod serve_api;
mod serve_refused_workflows;
mod serve_roles;
mod serve_run_actions;
mod serve_tls;
mod shards;
mod sigkill_resume;
mod sim_agents;
mod sim_cli;
mod sim_determinism;
mod sim_effects;
mod sim_horizon;
mod sim_network;
mod sim_no_loss;
mod sim_virtual_time;
mod stale_results_are_fenced;
mod submit_during_shutdown;
mod task_bounds;
mod telemetry_metrics;
mod telemetry_traces;
mod tokio_main;
mod typed_capabilities;
mod unknown_env_overrides;
mod user_service_example;
mod waiting_for_agents;
mod waits_are_wake_ups;
mod workflow_check;
mod workflow_engine;
mod workspace_scope;
