//! Capabilities: what an agent declares it can do, with its contract.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[cfg(feature = "cel")]
use crate::conditions::{Condition, ConditionError};
use crate::messaging::contract::{Schema, SchemaError, SchemaStore};
use crate::messaging::scope::Scope;

/// A capability as declared (by a manifest or the builder API): names only.
///
/// # Example
/// ```
/// use muster_core::CapabilitySpec;
///
/// let cap = CapabilitySpec::new("code.test", "test-request", "test-report")
///     .accept("output.total > 0");
/// assert_eq!(cap.name, "code.test");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitySpec {
    /// The capability name, e.g. `code.test`.
    pub name: String,
    /// Contract version (free text; `1` by default).
    #[serde(default = "default_version")]
    pub version: String,
    /// The input schema name.
    pub input: String,
    /// The output schema name.
    pub output: String,
    /// An optional CEL acceptance rule over `input` and `output`, beyond the schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept: Option<String>,
    /// When set, a task's owner fails the attempt if this long passes without a heartbeat.
    #[serde(
        default,
        with = "crate::util::opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub heartbeat: Option<Duration>,
    /// The scope a task of this capability gets when it declares none (see [`Scope`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    /// The output field listing the paths the agent touched (default `touched`); a path
    /// outside the task's write scope is a contract violation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub touched: Option<String>,
    /// The input field naming the directory the agent works in. When a task of this
    /// capability has a scope, the files changed in that directory during an attempt
    /// (added, modified or removed) must lie inside its write scope, whatever the output
    /// reports: one outside is a contract violation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Completed work is reused: a task with the same capability, contract version and
    /// canonical input as an accepted result returns that result instead of running
    /// again (within `reuse_for`), and one identical to a task in flight attaches to it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub idempotent: bool,
    /// How long an accepted result of an idempotent capability is reused (default 1 h).
    #[serde(
        default,
        with = "crate::util::opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub reuse_for: Option<Duration>,
    /// What a result of an earlier epoch that arrives while a later attempt runs does:
    /// fenced as stale (the default), or, for an idempotent capability only, adopted when
    /// it passes the contract (the task completes with it and the running attempt is
    /// cancelled). A non-idempotent capability always fences.
    #[serde(default, skip_serializing_if = "LateResults::is_fence")]
    pub late_results: LateResults,
}

/// What a task's owner does with a result of an earlier epoch that arrives while a later
/// attempt is running ([`CapabilitySpec::late_results`]).
///
/// # Example
/// ```
/// use muster_core::messaging::capability::LateResults;
/// let adopt: LateResults = serde_json::from_str("\"adopt\"").unwrap();
/// assert_eq!(adopt, LateResults::Adopt);
/// assert_eq!(LateResults::default(), LateResults::Fence);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LateResults {
    /// Journaled `result_stale` and never accepted (G2).
    #[default]
    Fence,
    /// Adopted if the capability is idempotent and the result passes the contract:
    /// journaled `result_adopted` (both epochs) then `result_accepted` under the late
    /// epoch; the running attempt is cancelled.
    Adopt,
}

impl LateResults {
    fn is_fence(&self) -> bool {
        *self == LateResults::Fence
    }
}

/// How long an idempotent capability's accepted result is reused when its declaration
/// does not say.
pub const DEFAULT_REUSE_FOR: Duration = Duration::from_secs(3600);

fn default_version() -> String {
    "1".into()
}

impl CapabilitySpec {
    /// A capability with an input and an output schema.
    pub fn new(name: &str, input: &str, output: &str) -> Self {
        CapabilitySpec {
            name: name.into(),
            version: default_version(),
            input: input.into(),
            output: output.into(),
            accept: None,
            heartbeat: None,
            scope: None,
            touched: None,
            workspace: None,
            idempotent: false,
            reuse_for: None,
            late_results: LateResults::Fence,
        }
    }

    /// Adopts a late result of an earlier epoch (see [`LateResults::Adopt`]); only an
    /// idempotent capability ever does.
    ///
    /// # Example
    /// ```
    /// use muster_core::CapabilitySpec;
    /// use muster_core::messaging::capability::LateResults;
    /// use std::time::Duration;
    /// let cap = CapabilitySpec::new("code.review", "in", "out")
    ///     .idempotent(Duration::from_secs(600))
    ///     .adopt_late_results();
    /// assert_eq!(cap.late_results, LateResults::Adopt);
    /// ```
    pub fn adopt_late_results(mut self) -> Self {
        self.late_results = LateResults::Adopt;
        self
    }

    /// Declares the default scope of this capability's tasks.
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = Some(scope);
        self
    }

    /// Declares the capability idempotent: identical tasks reuse an accepted result
    /// (within `reuse_for`) or attach to one in flight.
    ///
    /// # Example
    /// ```
    /// use muster_core::CapabilitySpec;
    /// use std::time::Duration;
    ///
    /// let cap = CapabilitySpec::new("code.review", "review-request", "review-report")
    ///     .idempotent(Duration::from_secs(600));
    /// assert!(cap.idempotent);
    /// ```
    pub fn idempotent(mut self, reuse_for: Duration) -> Self {
        self.idempotent = true;
        self.reuse_for = Some(reuse_for);
        self
    }

    /// Names the input field holding the agent's working directory: after each attempt
    /// of a task with a scope, the files changed there are checked against its write
    /// scope.
    ///
    /// # Example
    /// ```
    /// use muster_core::CapabilitySpec;
    /// let cap = CapabilitySpec::new("code.write", "in", "out").workspace("workspace");
    /// assert_eq!(cap.workspace.as_deref(), Some("workspace"));
    /// ```
    pub fn workspace(mut self, field: &str) -> Self {
        self.workspace = Some(field.into());
        self
    }

    /// Adds a CEL acceptance rule over `input` and `output`.
    pub fn accept(mut self, rule: &str) -> Self {
        self.accept = Some(rule.into());
        self
    }

    /// Declares a heartbeat interval.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = Some(every);
        self
    }

    /// Resolves the schema names and compiles the acceptance rule.
    pub fn compile(&self, schemas: &SchemaStore) -> Result<Capability, CapabilityError> {
        let input = schemas
            .get(&self.input)
            .map_err(|e| CapabilityError::Schema {
                capability: self.name.clone(),
                field: "input",
                source: e,
            })?;
        let output = schemas
            .get(&self.output)
            .map_err(|e| CapabilityError::Schema {
                capability: self.name.clone(),
                field: "output",
                source: e,
            })?;
        let accept = self
            .accept
            .as_deref()
            .map(|rule| AcceptRule::compile(&self.name, rule))
            .transpose()?;
        Ok(Capability {
            name: Arc::from(self.name.as_str()),
            spec: self.clone(),
            input,
            output,
            accept,
        })
    }
}

/// A capability declaration that does not resolve.
#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    /// A schema name does not resolve.
    #[error("capability `{capability}`: field `{field}`: {source}")]
    Schema {
        /// The capability.
        capability: String,
        /// `input` or `output`.
        field: &'static str,
        /// Why.
        source: SchemaError,
    },
    /// The acceptance rule does not compile.
    #[cfg(feature = "cel")]
    #[error("capability `{capability}`: field `accept`: {source}")]
    Accept {
        /// The capability.
        capability: String,
        /// Why.
        source: ConditionError,
    },
    /// An acceptance rule was declared, but this build has no CEL (muster-core's `cel`
    /// feature is off).
    #[cfg(not(feature = "cel"))]
    #[error(
        "capability `{capability}`: field `accept`: acceptance rules are CEL expressions, and this build has no CEL: enable muster-core's `cel` feature (the `muster` crate does)"
    )]
    AcceptUnsupported {
        /// The capability.
        capability: String,
    },
    /// Another agent declared the same capability with a different contract.
    #[error(
        "capability `{capability}` is already declared by `{by}` with a different contract ({what}); two agents serving one capability must agree on it"
    )]
    Conflict {
        /// The capability.
        capability: String,
        /// The agent that declared it first.
        by: String,
        /// What differs.
        #[source]
        what: Box<ContractMismatch>,
    },
}

/// A capability with its contract compiled: validators and acceptance rule.
#[derive(Debug, Clone)]
pub struct Capability {
    /// The name.
    pub name: Arc<str>,
    /// The declaration.
    pub spec: CapabilitySpec,
    /// The compiled input schema.
    pub input: Arc<Schema>,
    /// The compiled output schema.
    pub output: Arc<Schema>,
    /// The compiled acceptance rule.
    pub accept: Option<AcceptRule>,
}

/// A capability's compiled acceptance rule: a CEL condition over `input` and `output`
/// (with muster-core's `cel` feature; without it, a declared rule is refused when the
/// capability is compiled).
#[derive(Debug, Clone)]
pub struct AcceptRule {
    #[cfg(feature = "cel")]
    condition: Condition,
    #[cfg(not(feature = "cel"))]
    never: std::convert::Infallible,
}

impl AcceptRule {
    #[cfg(feature = "cel")]
    fn compile(capability: &str, rule: &str) -> Result<Self, CapabilityError> {
        Condition::compile(rule)
            .map(|condition| AcceptRule { condition })
            .map_err(|e| CapabilityError::Accept {
                capability: capability.into(),
                source: e,
            })
    }

    #[cfg(not(feature = "cel"))]
    fn compile(capability: &str, _rule: &str) -> Result<Self, CapabilityError> {
        Err(CapabilityError::AcceptUnsupported {
            capability: capability.into(),
        })
    }

    /// The rule as declared.
    pub fn source(&self) -> &str {
        #[cfg(feature = "cel")]
        return self.condition.source();
        #[cfg(not(feature = "cel"))]
        match self.never {}
    }

    /// Whether `output` (answering `input`) satisfies the rule; `Err` when the rule cannot
    /// be evaluated on them.
    pub fn accepts(
        &self,
        input: &serde_json::Value,
        output: &serde_json::Value,
    ) -> Result<bool, String> {
        #[cfg(feature = "cel")]
        return self
            .condition
            .eval_bool(&[("input", input), ("output", output)])
            .map_err(|e| e.to_string());
        #[cfg(not(feature = "cel"))]
        {
            let _ = (input, output);
            match self.never {}
        }
    }
}

impl Capability {
    /// Whether two declarations describe the same contract (see [`ContractTerms`]); `Err`
    /// says what differs, this one's first.
    pub fn same_contract(&self, other: &Capability) -> Result<(), ContractMismatch> {
        ContractTerms::of(self)
            .differs(&ContractTerms::of(other))
            .map_err(|difference| ContractMismatch {
                input: self.spec.input.clone(),
                output: self.spec.output.clone(),
                difference,
            })
    }
}

/// Two declarations of one capability that are not the same contract: the first term
/// that differs (see [`Capability::same_contract`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct ContractMismatch {
    /// This side's input schema name.
    pub input: String,
    /// This side's output schema name.
    pub output: String,
    /// What differs, this side's first.
    pub difference: ContractDifference,
}

impl ContractMismatch {
    fn describe(&self) -> String {
        match &self.difference {
            ContractDifference::Version { ours, theirs } => format!("version {ours} vs {theirs}"),
            ContractDifference::Input { ours, theirs } => {
                format!("input schema {ours} vs {theirs}")
            }
            ContractDifference::Output { ours, theirs } => {
                format!("output schema {ours} vs {theirs}")
            }
            ContractDifference::Idempotent { ours, theirs } => {
                format!("idempotent {ours} vs {theirs}")
            }
            ContractDifference::Accept { ours, theirs } => {
                format!("accept rule {ours:?} vs {theirs:?}")
            }
            ContractDifference::Documents { ours, theirs } => format!(
                "schema documents of `{}` -> `{}` (digest {ours} vs {theirs})",
                self.input, self.output
            ),
        }
    }
}

/// What two declarations of one capability must agree on to be the same contract: the
/// version, the input and output schemas (names and documents), the acceptance rule and
/// whether it is idempotent. The one definition of "same contract": the runtime checks it
/// when a second agent declares a capability, the cast check before anything runs, and a
/// cluster on the wire (where the documents travel as a digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractTerms {
    /// Contract version.
    pub version: String,
    /// Input schema name.
    pub input: String,
    /// Output schema name.
    pub output: String,
    /// Whether identical work may be reused (an older record without it reads `false`).
    #[serde(default)]
    pub idempotent: bool,
    /// The acceptance rule's source, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept: Option<String>,
    /// FNV-1a 64 of the canonical JSON (keys sorted) of both schema documents, the version
    /// and the acceptance rule, in hex.
    pub digest: String,
}

/// How two [`ContractTerms`] differ: the first term that does, `ours` then `theirs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContractDifference {
    /// Another version.
    Version {
        /// This side's.
        ours: String,
        /// The other side's.
        theirs: String,
    },
    /// Another input schema name.
    Input {
        /// This side's.
        ours: String,
        /// The other side's.
        theirs: String,
    },
    /// Another output schema name.
    Output {
        /// This side's.
        ours: String,
        /// The other side's.
        theirs: String,
    },
    /// One is idempotent, the other not.
    Idempotent {
        /// This side's.
        ours: bool,
        /// The other side's.
        theirs: bool,
    },
    /// Another acceptance rule.
    Accept {
        /// This side's.
        ours: Option<String>,
        /// The other side's.
        theirs: Option<String>,
    },
    /// The same names, but other schema documents (their digests).
    Documents {
        /// This side's digest.
        ours: String,
        /// The other side's digest.
        theirs: String,
    },
}

impl ContractTerms {
    /// The terms of a compiled capability.
    pub fn of(c: &Capability) -> Self {
        let canonical = serde_json::json!({
            "version": c.spec.version,
            "input": [c.spec.input, c.input.document],
            "output": [c.spec.output, c.output.document],
            "accept": c.spec.accept,
        });
        let text = crate::ids::canonical_json(&canonical);
        ContractTerms {
            version: c.spec.version.clone(),
            input: c.spec.input.clone(),
            output: c.spec.output.clone(),
            idempotent: c.spec.idempotent,
            accept: c.spec.accept.clone(),
            digest: format!("{:016x}", crate::ids::fnv1a64(text.as_bytes())),
        }
    }

    /// `Err` names the first term in which `other` differs from these.
    pub fn differs(&self, other: &ContractTerms) -> Result<(), ContractDifference> {
        let pair = |a: &String, b: &String| (a.clone(), b.clone());
        if self.version != other.version {
            let (ours, theirs) = pair(&self.version, &other.version);
            return Err(ContractDifference::Version { ours, theirs });
        }
        if self.input != other.input {
            let (ours, theirs) = pair(&self.input, &other.input);
            return Err(ContractDifference::Input { ours, theirs });
        }
        if self.output != other.output {
            let (ours, theirs) = pair(&self.output, &other.output);
            return Err(ContractDifference::Output { ours, theirs });
        }
        if self.idempotent != other.idempotent {
            return Err(ContractDifference::Idempotent {
                ours: self.idempotent,
                theirs: other.idempotent,
            });
        }
        if self.accept != other.accept {
            return Err(ContractDifference::Accept {
                ours: self.accept.clone(),
                theirs: other.accept.clone(),
            });
        }
        if self.digest != other.digest {
            let (ours, theirs) = pair(&self.digest, &other.digest);
            return Err(ContractDifference::Documents { ours, theirs });
        }
        Ok(())
    }
}
