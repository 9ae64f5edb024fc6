//! Messaging: every envelope is validated and delivered, or failed with a reason and kept as
//! a dead letter. An invalid payload never reaches an agent.

use crate::support::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{paused, payload_schema, within};
use muster::{AgentDef, CapabilitySpec, Envelope, FailureReason, Muster, Recipient};
use serde_json::json;

#[test]
fn an_invalid_payload_is_refused_with_its_error_paths_and_never_reaches_the_agent() {
    paused(async {
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        let m = Muster::builder()
            .schema("p", payload_schema())
            .agent(
                AgentDef::function("echo", move |v, _| {
                    s.fetch_add(1, Ordering::SeqCst);
                    async move { Ok(v) }
                })
                .capability(CapabilitySpec::new("echo", "p", "p")),
            )
            .start()
            .await
            .unwrap();
        let bad = json!({"task_id": "seven", "hops": 0, "last": "", "data": "x"});
        let env = Envelope::new("echo", Recipient::Capability("echo".into()), "p", bad);
        let err = within(5, "send", m.send(env)).await.unwrap_err();
        assert_eq!(err.reason, FailureReason::SchemaViolation);
        let contract = err.contract.expect("validator errors attached");
        let paths: Vec<_> = contract
            .errors
            .iter()
            .map(|e| e.instance_path.as_str())
            .collect();
        assert!(paths.contains(&"/task_id"), "{paths:?}");
        assert!(
            contract.errors.iter().any(|e| e.message.contains("score")),
            "{contract:?}"
        );
        assert!(contract.errors.iter().all(|e| !e.schema_path.is_empty()));
        assert_eq!(seen.load(Ordering::SeqCst), 0, "the agent never saw it");
        let dead = m.dead_letters();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason, FailureReason::SchemaViolation);
        let kinds: Vec<_> = m
            .journal()
            .read_after(0)
            .iter()
            .map(|r| r.event.kind())
            .collect();
        assert!(kinds.contains(&"envelope_failed"));
    });
}

#[test]
fn a_message_to_an_unknown_capability_fails_with_that_reason() {
    paused(async {
        let m = Muster::builder()
            .schema("p", payload_schema())
            .start()
            .await
            .unwrap();
        let p = json!({"task_id": 1, "hops": 0, "last": "", "data": "x", "score": 0.5});
        let env = Envelope::new(
            "nobody",
            Recipient::Capability("nobody".into()),
            "p",
            p.clone(),
        );
        let err = within(5, "send", m.send(env)).await.unwrap_err();
        assert_eq!(err.reason, FailureReason::NoCapableAgent);
        assert!(err.detail.contains("nobody"));
        let env = Envelope::new("x", Recipient::Agent("ghost#0".into()), "p", p);
        let err = within(5, "send", m.send(env)).await.unwrap_err();
        assert_eq!(err.reason, FailureReason::RecipientGone);
        assert_eq!(m.dead_letters().len(), 2);
    });
}

#[test]
fn a_reply_is_checked_against_the_output_schema() {
    paused(async {
        let m = Muster::builder()
            .schema("p", payload_schema())
            .schema("n", json!({"type": "integer"}))
            .agent(
                AgentDef::function("liar", |_v, _| async move { Ok(json!("not a number")) })
                    .capability(CapabilitySpec::new("count", "p", "n")),
            )
            .start()
            .await
            .unwrap();
        let p = json!({"task_id": 1, "hops": 0, "last": "", "data": "x", "score": 0.5});
        let env = Envelope::new("count", Recipient::Capability("count".into()), "p", p);
        let err = within(5, "send", m.send(env)).await.unwrap_err();
        assert_eq!(err.reason, FailureReason::ReplyViolation);
    });
}

/// The reply gets the verdict a task's result gets: a reply that fits the output schema but
/// breaks the capability's acceptance rule is a reply violation, and one the rule accepts
/// is delivered.
#[test]
fn a_reply_is_checked_against_the_acceptance_rule() {
    paused(async {
        let m = Muster::builder()
            .schema("p", payload_schema())
            .schema("n", json!({"type": "integer"}))
            .agent(
                AgentDef::function("counter", |v, _| async move { Ok(v["task_id"].clone()) })
                    .capability(CapabilitySpec::new("count", "p", "n").accept("output > 0")),
            )
            .start()
            .await
            .unwrap();
        let send = |id: i64| {
            let p = json!({"task_id": id, "hops": 0, "last": "", "data": "x", "score": 0.5});
            Envelope::new("count", Recipient::Capability("count".into()), "p", p)
        };
        let err = within(5, "send", m.send(send(0))).await.unwrap_err();
        assert_eq!(err.reason, FailureReason::ReplyViolation);
        assert!(err.detail.contains("output > 0"), "{}", err.detail);
        let reply = within(5, "send", m.send(send(3))).await.unwrap();
        assert_eq!(*reply.payload, json!(3));
    });
}

#[test]
fn a_passed_deadline_fails_the_envelope() {
    paused(async {
        let m = Muster::builder()
            .schema("p", payload_schema())
            .agent(
                AgentDef::function("echo", |v, _| async move { Ok(v) })
                    .capability(CapabilitySpec::new("echo", "p", "p")),
            )
            .start()
            .await
            .unwrap();
        let p = json!({"task_id": 1, "hops": 0, "last": "", "data": "x", "score": 0.5});
        let env =
            Envelope::new("echo", Recipient::Capability("echo".into()), "p", p).deadline_at(1);
        let err = within(5, "send", m.send(env)).await.unwrap_err();
        assert_eq!(err.reason, FailureReason::DeadlinePassed);
    });
}

#[test]
fn a_reply_envelope_carries_provenance() {
    paused(async {
        let m = Muster::builder()
            .schema("p", payload_schema())
            .agent(
                AgentDef::function("echo", |v, _| async move { Ok(v) })
                    .capability(CapabilitySpec::new("echo", "p", "p")),
            )
            .start()
            .await
            .unwrap();
        let p = json!({"task_id": 1, "hops": 0, "last": "", "data": "x", "score": 0.5});
        let env =
            Envelope::new("echo", Recipient::Capability("echo".into()), "p", p.clone()).from("me");
        let id = env.id;
        let reply = within(5, "send", m.send(env)).await.unwrap();
        assert_eq!(reply.causation_id, Some(id));
        assert_eq!(reply.correlation_id, id);
        assert_eq!(reply.sender.as_ref(), "echo#0");
        assert_eq!(reply.recipient, Recipient::Agent("me".into()));
        assert_eq!(*reply.payload, p);
        assert!(reply.id > id, "v7 ids are time-ordered");
    });
}

#[test]
fn a_full_mailbox_fails_after_the_bounded_wait() {
    paused(async {
        let m = Muster::builder()
            .schema("p", payload_schema())
            .config(muster::RuntimeConfig {
                send_wait: std::time::Duration::from_secs(2),
                ..Default::default()
            })
            .agent(
                AgentDef::function("slow", |v, _| async move {
                    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                    Ok(v)
                })
                .capability(CapabilitySpec::new("slow", "p", "p"))
                .mailbox(0),
            )
            .start()
            .await
            .unwrap();
        let p = json!({"task_id": 1, "hops": 0, "last": "", "data": "x", "score": 0.5});
        // The first envelope takes the only slot (and waits for its hour-long reply).
        let first = Envelope::new("slow", Recipient::Agent("slow#0".into()), "p", p.clone());
        let m2 = m.clone();
        actix::spawn(async move {
            let _ = m2.send(first).await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let second = Envelope::new("slow", Recipient::Capability("slow".into()), "p", p);
        let err = within(10, "send", m.send(second)).await.unwrap_err();
        assert_eq!(err.reason, FailureReason::MailboxFull);
        assert!(
            m.dead_letters()
                .iter()
                .any(|d| d.reason == FailureReason::MailboxFull)
        );
    });
}
