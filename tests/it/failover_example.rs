//! The failover example's scenario (examples/failover.rs) with fewer tasks: an agent that
//! panics on every 3rd task and hangs on every 7th loses no task and duplicates none.

#[path = "../../examples/failover.rs"]
#[allow(dead_code)]
mod failover;

#[test]
fn failover_loses_nothing_and_duplicates_nothing() {
    let report = failover::paused_system()
        .block_on(failover::scenario(200))
        .expect("the scenario runs");
    assert_eq!(report.tasks, 200);
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.duplicates, 0, "{report:?}");
    assert_eq!(report.completed + report.escalated, 200, "{report:?}");
    assert!(
        report.reassigned > 0,
        "the flaky agent's failures moved tasks: {report:?}"
    );
}
