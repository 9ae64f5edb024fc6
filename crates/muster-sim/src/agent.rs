//! The simulated agent: an [`Agent`] whose latency and faults are drawn from a
//! [`FaultModel`] and whose outputs are generated from the capability's output schema.
//!
//! Owns how one simulated task runs. Every draw for a task comes from a PRNG seeded by
//! (instance seed, task id, epoch), and all of them are made before the task's first
//! await, so a task's latency, fault and output are the same whatever the scheduling
//! (G6). Waiting is `tokio::time::sleep`, so on a paused clock an hour of latency costs no
//! wall time. Faults are real to the runtime: a crash is a panic the instance turns into a
//! restart, a hang is a future that never resolves, a violation is an output the contract
//! check refuses, a late answer arrives after the deadline and is fenced as stale. It must
//! not reach around the runtime (no journal writes, no registry calls): it is observed only
//! through what it returns.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use serde_json::Value;

use super::{Fault, FaultModel, SimRng, generate, violate};
use muster_core::agents::{Agent, AgentError, AgentFactory, TaskContext};
use muster_core::ids::{fnv1a64, splitmix64};
use muster_core::messaging::SchemaStore;

/// The panic message of a simulated crash (the runner keeps it out of the panic hook's
/// output).
pub const CRASH_MESSAGE: &str = "simulated crash";

/// The panic message of a simulated crash that happens after the attempt's effect and
/// before its result (the `crash_after_effect` fault). Like [`CRASH_MESSAGE`], the runner
/// keeps it out of the panic hook's output; [`is_simulated_crash`] recognises both.
pub const CRASH_AFTER_EFFECT_MESSAGE: &str = "simulated crash (after its effect)";

/// Whether a panic's message is one of the simulator's own crashes.
///
/// # Example
/// ```
/// assert!(muster_sim::is_simulated_crash("simulated crash"));
/// assert!(muster_sim::is_simulated_crash("simulated crash (after its effect)"));
/// assert!(!muster_sim::is_simulated_crash("index out of bounds"));
/// ```
pub fn is_simulated_crash(message: &str) -> bool {
    message == CRASH_MESSAGE || message == CRASH_AFTER_EFFECT_MESSAGE
}

/// Makes [`SimAgent`]s: one per instance start, each seeded from the factory's seed and
/// the instance's name (`splitmix64(seed ^ fnv1a64(name))`), so `tester#0` and `tester#1`
/// behave differently and a restarted `tester#0` draws like the one it replaces.
///
/// # Example
/// ```
/// use std::collections::HashMap;
/// use std::sync::Arc;
/// use muster_sim::{FaultModel, SimFactory};
/// use muster_core::{AgentDef, CapabilitySpec, SchemaStore};
/// use serde_json::json;
///
/// let schemas = Arc::new(SchemaStore::new());
/// schemas.add("report", json!({"type": "object", "required": ["total"],
///     "properties": {"total": {"type": "integer"}}})).unwrap();
/// let factory = SimFactory {
///     model: FaultModel { crash: 0.1, ..FaultModel::default() },
///     seed: 42,
///     outputs: HashMap::from([("code.test".to_string(), "report".to_string())]),
///     schemas,
/// };
/// let def = AgentDef::new("tester", factory)
///     .capability(CapabilitySpec::new("code.test", "report", "report"))
///     .replicas(2);
/// assert_eq!(def.instance_ids(), ["tester#0", "tester#1"]);
/// ```
#[derive(Debug, Clone)]
pub struct SimFactory {
    /// How every instance behaves.
    pub model: FaultModel,
    /// The run's seed.
    pub seed: u64,
    /// Capability name → the name of its output schema (in `schemas`).
    pub outputs: HashMap<String, String>,
    /// Where the output schemas are.
    pub schemas: Arc<SchemaStore>,
}

impl SimFactory {
    /// The seed of the instance called `instance`.
    pub fn instance_seed(&self, instance: &str) -> u64 {
        splitmix64(self.seed ^ fnv1a64(instance.as_bytes()))
    }
}

impl AgentFactory for SimFactory {
    fn create(&self, instance: &str) -> Box<dyn Agent> {
        Box::new(SimAgent::new(
            self.model.clone(),
            self.instance_seed(instance),
            self.outputs.clone(),
            self.schemas.clone(),
        ))
    }
}

/// One simulated agent instance.
///
/// # Example
/// ```
/// use std::collections::HashMap;
/// use std::sync::Arc;
/// use std::time::Duration;
/// use muster_sim::{FaultModel, SimAgent};
/// use muster_core::{Agent, SchemaStore, TaskContext};
/// use serde_json::json;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// let schemas = Arc::new(SchemaStore::new());
/// schemas.add("n", json!({"type": "integer", "minimum": 1})).unwrap();
/// let agent = SimAgent::new(FaultModel::default(), 7,
///     HashMap::from([("count".to_string(), "n".to_string())]), schemas.clone());
/// let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
/// let ctx = TaskContext::standalone(uuid::Uuid::nil(), 1, "count", "sim#0", deadline);
/// let out = agent.handle(json!({}), ctx).await.unwrap();
/// assert!(schemas.validate("n", &out).is_ok());
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct SimAgent {
    model: Arc<FaultModel>,
    seed: u64,
    outputs: Arc<HashMap<String, String>>,
    schemas: Arc<SchemaStore>,
}

/// What a simulated task will do, drawn before it starts waiting.
enum Plan {
    Answer(Value),
    CrashAfterEffect,
    Late(Value),
    Fail(AgentError),
    Crash,
    Hang,
}

impl SimAgent {
    /// An agent drawing from `model` with this instance `seed`; `outputs` maps each
    /// capability to its output schema's name in `schemas`.
    pub fn new(
        model: FaultModel,
        seed: u64,
        outputs: HashMap<String, String>,
        schemas: Arc<SchemaStore>,
    ) -> Self {
        SimAgent {
            model: Arc::new(model),
            seed,
            outputs: Arc::new(outputs),
            schemas,
        }
    }

    /// The PRNG of one task: the same for the same (instance seed, task, epoch).
    fn task_rng(&self, ctx: &TaskContext) -> SimRng {
        let (hi, lo) = ctx.task_id.as_u64_pair();
        SimRng::new(splitmix64(
            self.seed ^ splitmix64(hi ^ splitmix64(lo ^ splitmix64(ctx.epoch))),
        ))
    }

    fn plan(&self, fault: Fault, ctx: &TaskContext, rng: &mut SimRng) -> Plan {
        // The compiled schema is shared: its document is borrowed, not cloned per task.
        let output_schema =
            || -> Result<Arc<muster_core::messaging::contract::Schema>, AgentError> {
                let name = self.outputs.get(ctx.capability.as_ref()).ok_or_else(|| {
                    AgentError::new(format!(
                        "simulated agent {} has no output schema for capability `{}`",
                        ctx.agent, ctx.capability
                    ))
                })?;
                self.schemas
                    .get(name)
                    .map_err(|e| AgentError::new(format!("simulated agent {}: {e}", ctx.agent)))
            };
        let schema = match fault {
            Fault::Crash => return Plan::Crash,
            Fault::CrashAfterEffect => return Plan::CrashAfterEffect,
            Fault::Hang => return Plan::Hang,
            Fault::Error => {
                return Plan::Fail(AgentError::new(format!(
                    "simulated error (task {}, epoch {})",
                    ctx.task_id, ctx.epoch
                )));
            }
            Fault::None | Fault::Violate | Fault::Late => match output_schema() {
                Ok(s) => s,
                Err(e) => return Plan::Fail(e),
            },
        };
        match fault {
            Fault::Violate => match violate(&schema.document, &self.schemas, rng) {
                Some(v) => Plan::Answer(v),
                None => Plan::Fail(AgentError::new(format!(
                    "simulated violation impossible: the output schema of `{}` accepts every value",
                    ctx.capability
                ))),
            },
            Fault::Late => Plan::Late(generate(&schema.document, &self.schemas, rng)),
            _ => Plan::Answer(generate(&schema.document, &self.schemas, rng)),
        }
    }
}

impl Agent for SimAgent {
    fn handle(
        &self,
        _input: Value,
        ctx: TaskContext,
    ) -> LocalBoxFuture<'static, Result<Value, AgentError>> {
        // Every draw happens here, in a fixed order, before the first await.
        let mut rng = self.task_rng(&ctx);
        let fault = self.model.draw(&mut rng);
        let latency = self.model.latency.sample(&mut rng);
        let plan = self.plan(fault, &ctx, &mut rng);
        let late_by = Duration::from_secs_f64(self.model.late_by.clamp(0.0, 1.0e9));
        let deadline = ctx.deadline;
        let effects = self.model.crash_after_effect > 0.0;
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            if effects {
                // One effect per task, run at most once whatever happens to its attempts.
                let key = ctx.effect_key("effect");
                ctx.effect("effect", Some(&key), || async { Ok::<u64, AgentError>(1) })
                    .await?;
            }
            match plan {
                Plan::Answer(v) => Ok(v),
                Plan::CrashAfterEffect => panic!("{}", CRASH_AFTER_EFFECT_MESSAGE),
                Plan::Fail(e) => Err(e),
                Plan::Crash => panic!("{}", CRASH_MESSAGE),
                Plan::Hang => {
                    futures::future::pending::<()>().await;
                    Err(AgentError::new("a simulated hang ended"))
                }
                Plan::Late(v) => {
                    if let Some(at) = deadline.checked_add(late_by) {
                        tokio::time::sleep_until(at).await;
                    }
                    Ok(v)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_paused as run;
    use serde_json::json;

    fn agent(model: FaultModel, seed: u64) -> (SimAgent, Arc<SchemaStore>) {
        let schemas = Arc::new(SchemaStore::new());
        schemas
            .add(
                "out",
                json!({"type": "object", "required": ["id", "n"], "additionalProperties": false,
                       "properties": {"id": {"type": "string", "format": "uuid"},
                                      "n": {"type": "integer", "minimum": 0}}}),
            )
            .unwrap();
        let outputs = HashMap::from([("cap".to_string(), "out".to_string())]);
        (
            SimAgent::new(model, seed, outputs, schemas.clone()),
            schemas,
        )
    }

    fn ctx(task: u128, epoch: u64, deadline: tokio::time::Instant) -> TaskContext {
        TaskContext::standalone(uuid::Uuid::from_u128(task), epoch, "cap", "sim#0", deadline)
    }

    #[test]
    fn outputs_depend_on_seed_task_and_epoch_only() {
        run(async {
            let dl = tokio::time::Instant::now() + Duration::from_secs(60);
            let (a, schemas) = agent(FaultModel::default(), 1);
            let (b, _) = agent(FaultModel::default(), 1);
            let (c, _) = agent(FaultModel::default(), 2);
            let x = a.handle(json!({}), ctx(9, 1, dl)).await.unwrap();
            assert!(schemas.validate("out", &x).is_ok(), "{x}");
            assert_eq!(x, b.handle(json!({}), ctx(9, 1, dl)).await.unwrap());
            assert_ne!(x, c.handle(json!({}), ctx(9, 1, dl)).await.unwrap());
            assert_ne!(x, a.handle(json!({}), ctx(9, 2, dl)).await.unwrap());
            assert_ne!(x, a.handle(json!({}), ctx(10, 1, dl)).await.unwrap());
        });
    }

    #[test]
    fn latency_and_late_answers_run_on_the_tokio_clock() {
        run(async {
            let start = tokio::time::Instant::now();
            let dl = start + Duration::from_secs(10);
            let model = FaultModel {
                latency: Distribution::fixed(Duration::from_secs(3)),
                ..FaultModel::default()
            };
            let (a, _) = agent(model.clone(), 1);
            a.handle(json!({}), ctx(1, 1, dl)).await.unwrap();
            assert_eq!(start.elapsed(), Duration::from_secs(3));
            let (late, _) = agent(FaultModel { late: 1.0, ..model }, 1);
            late.handle(json!({}), ctx(1, 1, dl)).await.unwrap();
            assert_eq!(start.elapsed(), Duration::from_millis(10_100));
        });
    }

    #[test]
    fn faults_become_errors_violations_and_hangs() {
        run(async {
            let dl = tokio::time::Instant::now() + Duration::from_secs(10);
            let (e, _) = agent(
                FaultModel {
                    error: 1.0,
                    ..FaultModel::default()
                },
                1,
            );
            let err = e.handle(json!({}), ctx(1, 1, dl)).await.unwrap_err();
            assert!(err.message.contains("simulated error"));
            let (v, schemas) = agent(
                FaultModel {
                    violate: 1.0,
                    ..FaultModel::default()
                },
                1,
            );
            for t in 0..50 {
                let out = v.handle(json!({}), ctx(t, 1, dl)).await.unwrap();
                assert!(schemas.validate("out", &out).is_err(), "{out}");
            }
            let (h, _) = agent(
                FaultModel {
                    hang: 1.0,
                    ..FaultModel::default()
                },
                1,
            );
            let r = tokio::time::timeout(
                Duration::from_secs(3600),
                h.handle(json!({}), ctx(1, 1, dl)),
            )
            .await;
            assert!(r.is_err(), "a hang never answers");
            let (u, _) = agent(FaultModel::default(), 1);
            let other = TaskContext::standalone(uuid::Uuid::nil(), 1, "nope", "sim#0", dl);
            let err = u.handle(json!({}), other).await.unwrap_err();
            assert!(err.message.contains("no output schema"), "{err}");
        });
    }

    #[test]
    fn instances_are_seeded_apart() {
        let f = SimFactory {
            model: FaultModel::default(),
            seed: 3,
            outputs: HashMap::new(),
            schemas: Arc::new(SchemaStore::new()),
        };
        assert_ne!(f.instance_seed("a#0"), f.instance_seed("a#1"));
        assert_eq!(f.instance_seed("a#0"), f.instance_seed("a#0"));
    }

    use super::super::Distribution;
}
