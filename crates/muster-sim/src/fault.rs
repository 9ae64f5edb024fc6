//! Fault models: how a simulated agent misbehaves, per task.
//!
//! Owns [`FaultModel`] (its file format and its checks) and the per-task draw of a
//! [`Fault`]. Each task draws exactly one outcome: a crash (panic), a hang (never
//! answers), an error, an output that breaks the output schema, a late answer (after the
//! deadline, inside the instance's grace window, so it is fenced as stale: G2), or a valid
//! output. The probabilities are independent of the latency draw. It must not run tasks
//! (the [`super::SimAgent`] does) and must not read a global RNG (G6).

use serde::{Deserialize, Serialize};

use super::distribution::secs;
use super::{Distribution, InvalidModel, SimRng};

fn default_late_by() -> f64 {
    0.1
}

/// How a simulated agent behaves: its latency distribution and, per task, the
/// probability of each fault. Probabilities are in `[0, 1]` and sum to at most 1; the rest
/// is the probability of a valid answer.
///
/// In a manifest (`[backend]` with `kind = "sim"`):
/// ```toml
/// [backend]
/// kind = "sim"
/// seed = 7          # optional, default 0
/// crash = 0.02      # panics (the supervisor restarts the instance)
/// hang = 0.01       # never answers (the attempt times out)
/// error = 0.05      # returns an agent error
/// violate = 0.02    # returns an output that breaks the output schema
/// late = 0.01       # answers `late_by` after its deadline (fenced as stale)
/// late_by = "100ms"
/// [backend.latency]
/// kind = "normal"
/// mean = "2s"
/// std_dev = "500ms"
/// ```
///
/// # Example
/// ```
/// use muster_sim::FaultModel;
///
/// let m: FaultModel = serde_json::from_value(serde_json::json!({
///     "latency": {"kind": "fixed", "value": "1s"}, "crash": 0.1, "late": 0.2})).unwrap();
/// m.validate().unwrap();
/// let bad: FaultModel = serde_json::from_value(serde_json::json!({"crash": 1.5})).unwrap();
/// assert_eq!(bad.validate().unwrap_err().to_string(), "crash: 1.5 is above 1");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultModel {
    /// Time spent on every task before its outcome (default: none).
    #[serde(default)]
    pub latency: Distribution,
    /// Probability that a task panics.
    #[serde(default)]
    pub crash: f64,
    /// Probability that a task never answers.
    #[serde(default)]
    pub hang: f64,
    /// Probability that a task returns an agent error.
    #[serde(default)]
    pub error: f64,
    /// Probability that a task returns an output that breaks the output schema.
    #[serde(default)]
    pub violate: f64,
    /// Probability that a task answers after its deadline.
    #[serde(default)]
    pub late: f64,
    /// How long after the deadline a late answer comes, in seconds (a humantime string or
    /// a number of seconds in files; default 100 ms). Keep it below the runtime's grace
    /// (`RuntimeConfig::grace`, 1 s by default) so the answer reaches the owner and is
    /// journaled `result_stale`; past the grace the attempt is aborted instead.
    #[serde(default = "default_late_by", with = "secs")]
    pub late_by: f64,
    /// Probability that a task does its effect (journaled `effect_started`, then
    /// `effect_done`) and then panics before it answers. A model with it above 0 makes
    /// every task do one effect, named `effect`, through `TaskContext::effect`, before
    /// its outcome: a later attempt finds it done and does not do it again.
    #[serde(default)]
    pub crash_after_effect: f64,
}

impl Default for FaultModel {
    /// No latency, no faults: every task answers at once with a valid output.
    fn default() -> Self {
        FaultModel {
            latency: Distribution::default(),
            crash: 0.0,
            hang: 0.0,
            error: 0.0,
            violate: 0.0,
            late: 0.0,
            late_by: default_late_by(),
            crash_after_effect: 0.0,
        }
    }
}

/// What one task does, as drawn from a [`FaultModel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Answers with a valid output.
    None,
    /// Panics.
    Crash,
    /// Never answers.
    Hang,
    /// Returns an agent error.
    Error,
    /// Returns an output that breaks the output schema.
    Violate,
    /// Answers after its deadline.
    Late,
    /// Does its effect, then panics before it answers.
    CrashAfterEffect,
}

impl FaultModel {
    /// Every problem with the model, each naming its field (`latency.std_dev`, `crash`;
    /// an empty field for the model as a whole, e.g. probabilities summing above 1).
    pub fn problems(&self) -> Vec<InvalidModel> {
        let mut out = Vec::new();
        if let Err(e) = self.latency.validate() {
            out.push(InvalidModel::new(
                &format!("latency.{}", e.field),
                e.message,
            ));
        }
        for (field, p) in self.probabilities() {
            if p.is_nan() {
                out.push(InvalidModel::new(
                    field,
                    "must be a number in [0, 1]".into(),
                ));
            } else if p > 1.0 {
                out.push(InvalidModel::new(field, format!("{p} is above 1")));
            } else if p < 0.0 {
                out.push(InvalidModel::new(field, format!("{p} is below 0")));
            }
        }
        let sum: f64 = self.probabilities().iter().map(|(_, p)| p).sum();
        // A little slack for decimal fractions that do not add up exactly in binary.
        if out.is_empty() && sum > 1.0 + 1e-9 {
            out.push(InvalidModel::new(
                "",
                format!(
                    "crash + hang + error + violate + late + crash_after_effect = {sum} is above 1"
                ),
            ));
        }
        if !self.late_by.is_finite() || self.late_by < 0.0 {
            out.push(InvalidModel::new(
                "late_by",
                format!("must be >= 0 (got {})", self.late_by),
            ));
        }
        out
    }

    /// Checks the model; the error names the first bad field (see
    /// [`FaultModel::problems`] for all of them).
    pub fn validate(&self) -> Result<(), InvalidModel> {
        match self.problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn probabilities(&self) -> [(&'static str, f64); 6] {
        [
            ("crash", self.crash),
            ("hang", self.hang),
            ("error", self.error),
            ("violate", self.violate),
            ("late", self.late),
            ("crash_after_effect", self.crash_after_effect),
        ]
    }

    /// Draws one task's outcome (one draw from `rng`).
    ///
    /// # Example
    /// ```
    /// use muster_sim::{Fault, FaultModel, SimRng};
    /// let m = FaultModel { crash: 1.0, ..FaultModel::default() };
    /// assert_eq!(m.draw(&mut SimRng::new(1)), Fault::Crash);
    /// ```
    pub fn draw(&self, rng: &mut SimRng) -> Fault {
        let u = rng.next_f64();
        let mut acc = 0.0;
        let faults = [
            Fault::Crash,
            Fault::Hang,
            Fault::Error,
            Fault::Violate,
            Fault::Late,
            Fault::CrashAfterEffect,
        ];
        for ((_, p), fault) in self.probabilities().into_iter().zip(faults) {
            acc += p.max(0.0);
            if u < acc {
                return fault;
            }
        }
        Fault::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn probabilities_are_checked_naming_the_field() {
        let m = FaultModel {
            crash: 1.5,
            ..FaultModel::default()
        };
        assert_eq!(
            m.validate().unwrap_err().to_string(),
            "crash: 1.5 is above 1"
        );
        let m = FaultModel {
            hang: -0.1,
            ..FaultModel::default()
        };
        assert_eq!(m.validate().unwrap_err().field, "hang");
        let m = FaultModel {
            crash: 0.6,
            late: 0.6,
            ..FaultModel::default()
        };
        let e = m.validate().unwrap_err();
        assert_eq!(e.field, "");
        assert!(e.message.contains("above 1"), "{e}");
        let m = FaultModel {
            latency: Distribution::Normal {
                mean: 1.0,
                std_dev: -1.0,
            },
            ..FaultModel::default()
        };
        assert_eq!(
            m.validate().unwrap_err().to_string(),
            "latency.std_dev: must be >= 0 (got -1)"
        );
        let ok = FaultModel {
            crash: 0.1,
            hang: 0.2,
            error: 0.3,
            violate: 0.3,
            late: 0.1,
            ..FaultModel::default()
        };
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_value::<FaultModel>(json!({"crsh": 0.1})).unwrap_err();
        assert!(e.to_string().contains("crsh"), "{e}");
    }

    #[test]
    fn draws_follow_the_probabilities() {
        let m = FaultModel {
            crash: 0.25,
            violate: 0.25,
            ..FaultModel::default()
        };
        let mut rng = SimRng::new(11);
        let n = 10_000;
        let mut crash = 0;
        let mut violate = 0;
        let mut none = 0;
        for _ in 0..n {
            match m.draw(&mut rng) {
                Fault::Crash => crash += 1,
                Fault::Violate => violate += 1,
                Fault::None => none += 1,
                other => panic!("drew {other:?} with probability 0"),
            }
        }
        for (what, k) in [("crash", crash), ("violate", violate)] {
            assert!((2200..2800).contains(&k), "{what}: {k} of {n}");
        }
        assert!((4500..5500).contains(&none), "none: {none}");
    }
}
