//! Conditions: CEL expressions over JSON, compiled once and evaluated many times.
//!
//! Acceptance rules (`output.total > 0`), workflow transitions and input mappings are CEL
//! (the `cel` crate): muster does not invent an expression language. What this module owns is
//! the one rule for turning JSON into CEL values, so that users' arithmetic works:
//!
//! - a JSON integer that fits in `i64` becomes a CEL `int` (so `failed + 1` works; CEL has
//!   no implicit `uint + int`), a larger one a `uint`, every other number a `double`;
//! - strings, booleans, null, arrays and objects map to their CEL counterparts.
//!
//! It must not touch the runtime: evaluation is a pure function of the expression and the
//! variables.

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key, Map};
use cel::{Context, Program, Value as Cel};
use serde_json::Value;

thread_local! {
    static STDLIB: Context<'static, 'static> = Context::default();
}

/// A compiled CEL expression.
///
/// # Example
/// ```
/// use muster::Condition;
/// use serde_json::json;
///
/// let rule = Condition::compile("output.failed + 1 == 1 && size(output.failures) == 0").unwrap();
/// let ok = rule.eval_bool(&[("output", &json!({"failed": 0, "failures": []}))]).unwrap();
/// assert!(ok);
/// ```
#[derive(Clone)]
pub struct Condition {
    source: Arc<str>,
    program: Arc<Program>,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Condition({:?})", self.source)
    }
}

/// A CEL expression that did not compile or did not evaluate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    /// Syntax error.
    #[error("invalid CEL expression `{source_text}`: {message}")]
    Syntax {
        /// The expression.
        source_text: String,
        /// The parser's message.
        message: String,
    },
    /// Evaluation failed (missing field, wrong types...).
    #[error("CEL expression `{source_text}` failed: {message}")]
    Eval {
        /// The expression.
        source_text: String,
        /// The interpreter's message.
        message: String,
    },
    /// A condition did not produce a boolean.
    #[error("CEL expression `{source_text}` gave {got}, expected a bool")]
    NotBool {
        /// The expression.
        source_text: String,
        /// What it gave.
        got: String,
    },
}

impl Condition {
    /// Compiles an expression.
    pub fn compile(source: &str) -> Result<Self, ConditionError> {
        let program = Program::compile(source).map_err(|e| ConditionError::Syntax {
            source_text: source.to_string(),
            message: e.to_string(),
        })?;
        Ok(Condition {
            source: Arc::from(source),
            program: Arc::new(program),
        })
    }

    /// The expression text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The top-level variable names the expression reads.
    pub fn variables(&self) -> Vec<String> {
        self.program
            .references()
            .variables()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// Evaluates to a CEL value, with the given JSON variables bound.
    fn eval_cel(&self, vars: &[(&str, &Value)]) -> Result<Cel, ConditionError> {
        // Building the standard library is most of the cost of a fresh context: build it
        // once per thread and bind each evaluation's variables in a child scope.
        STDLIB.with(|base| {
            let mut ctx = base.new_inner_scope();
            for (name, value) in vars {
                ctx.add_variable_from_value(*name, to_cel(value));
            }
            self.program
                .execute(&ctx)
                .map_err(|e| ConditionError::Eval {
                    source_text: self.source.to_string(),
                    message: e.to_string(),
                })
        })
    }

    /// Evaluates a condition; anything but a bool is an error.
    pub fn eval_bool(&self, vars: &[(&str, &Value)]) -> Result<bool, ConditionError> {
        match self.eval_cel(vars)? {
            Cel::Bool(b) => Ok(b),
            other => Err(ConditionError::NotBool {
                source_text: self.source.to_string(),
                got: format!("{other:?}"),
            }),
        }
    }

    /// Evaluates to JSON (input mappings).
    pub fn eval_json(&self, vars: &[(&str, &Value)]) -> Result<Value, ConditionError> {
        let v = self.eval_cel(vars)?;
        from_cel(&v).map_err(|message| ConditionError::Eval {
            source_text: self.source.to_string(),
            message,
        })
    }
}

/// JSON to CEL, by the rule in the module docs.
pub fn to_cel(value: &Value) -> Cel {
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Cel::Int(i)
            } else if let Some(u) = n.as_u64() {
                Cel::UInt(u)
            } else {
                Cel::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(a) => Cel::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(o) => {
            let map: HashMap<Key, Cel> = o
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            Cel::Map(Map { map: Arc::new(map) })
        }
    }
}

/// CEL to JSON; maps with non-string keys use the key's text.
pub fn from_cel(value: &Cel) -> Result<Value, String> {
    Ok(match value {
        Cel::Null => Value::Null,
        Cel::Bool(b) => Value::Bool(*b),
        Cel::Int(i) => Value::from(*i),
        Cel::UInt(u) => Value::from(*u),
        Cel::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| format!("{f} has no JSON form"))?,
        Cel::String(s) => Value::String(s.to_string()),
        Cel::List(l) => Value::Array(l.iter().map(from_cel).collect::<Result<_, _>>()?),
        Cel::Map(m) => {
            let mut out = serde_json::Map::new();
            let mut entries: Vec<_> = m.map.iter().collect();
            entries.sort_by_key(|(k, _)| key_text(k));
            for (k, v) in entries {
                out.insert(key_text(k), from_cel(v)?);
            }
            Value::Object(out)
        }
        other => value
            .json()
            .map_err(|e| format!("{other:?} has no JSON form: {e:?}"))?,
    })
}

fn key_text(k: &Key) -> String {
    match k {
        Key::String(s) => s.to_string(),
        Key::Int(i) => i.to_string(),
        Key::Uint(u) => u.to_string(),
        Key::Bool(b) => b.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integer_arithmetic_works_on_json_numbers() {
        let c = Condition::compile("steps.test.output.failed + 1").unwrap();
        let steps = json!({"test": {"output": {"failed": 2}}});
        assert_eq!(c.eval_json(&[("steps", &steps)]).unwrap(), json!(3));
    }

    #[test]
    fn has_ternary_size_and_map_literals_work() {
        let c = Condition::compile(
            "{'spec': run.input.spec, 'feedback': has(steps.test) ? steps.test.output.failures : []}",
        )
        .unwrap();
        let run = json!({"input": {"spec": "x"}});
        let out = c
            .eval_json(&[("run", &run), ("steps", &json!({}))])
            .unwrap();
        assert_eq!(out, json!({"spec": "x", "feedback": []}));
        let steps = json!({"test": {"output": {"failures": ["f"]}}});
        let out = c.eval_json(&[("run", &run), ("steps", &steps)]).unwrap();
        assert_eq!(out, json!({"spec": "x", "feedback": ["f"]}));
    }

    #[test]
    fn a_non_bool_condition_is_an_error() {
        let c = Condition::compile("1 + 1").unwrap();
        assert!(matches!(
            c.eval_bool(&[]),
            Err(ConditionError::NotBool { .. })
        ));
    }

    #[test]
    fn syntax_errors_name_the_expression() {
        let e = Condition::compile("a &&").unwrap_err();
        assert!(e.to_string().contains("a &&"));
    }

    #[test]
    fn variables_are_listed() {
        let c = Condition::compile("steps.a.output.x > run.input.y").unwrap();
        let mut v = c.variables();
        v.sort();
        assert_eq!(v, vec!["run", "steps"]);
    }
}
