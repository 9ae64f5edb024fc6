//! Typed capabilities: schemas derived from Rust types; the runtime still validates every
//! payload against them, so a wrong input is refused before any agent sees it.

use muster::{AgentDef, Muster, SubmitError, Task};
use serde_json::json;

#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
struct Sum {
    a: i64,
    b: i64,
}

#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, Debug, PartialEq)]
struct Total {
    total: i64,
}

fn paused<F: std::future::Future>(f: F) -> F::Output {
    actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("tokio runtime")
    })
    .block_on(f)
}

#[test]
fn a_typed_capability_derives_its_schemas_and_round_trips() {
    paused(async {
        let m = Muster::builder()
            .agent(AgentDef::typed(
                "adder",
                "math.add",
                |s: Sum, _ctx| async move { Ok(Total { total: s.a + s.b }) },
            ))
            .start()
            .await
            .unwrap();
        let caps = &m.agents()[0].capabilities[0];
        assert_eq!(
            (caps.input.as_str(), caps.output.as_str()),
            ("Sum", "Total")
        );
        let sum = m.schemas().get("Sum").unwrap();
        assert_eq!(sum.document["type"], "object");
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            m.delegate(Task::typed("math.add", &Sum { a: 2, b: 40 }).unwrap()),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            out.output_as::<Total>().unwrap().unwrap(),
            Total { total: 42 }
        );
        // The derived schema is enforced like any other: a wrong input never reaches the agent.
        let err = m
            .submit(Task::new("math.add", json!({"a": "two", "b": 3})))
            .await
            .unwrap_err();
        match err {
            SubmitError::InvalidInput { source, .. } => {
                assert_eq!(source.errors[0].instance_path, "/a")
            }
            other => panic!("expected InvalidInput, got {other}"),
        }
    });
}
