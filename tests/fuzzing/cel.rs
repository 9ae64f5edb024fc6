//! CEL conditions: compile, then evaluate against a small JSON context (the variables the
//! runtime binds: `output`, `input`, `run`, `steps`). Sources are raw text, generated
//! expression trees, or one construct repeated up to a few hundred times (deep nesting,
//! long operator chains).

use muster::conditions::{from_cel, to_cel};
use muster::{Condition, ConditionError};
use serde_json::Value;

use super::arb::{self, Bytes, CEL_FIELDS};

/// How deep the generated context nests.
const CONTEXT_DEPTH: usize = 3;

/// Compiles and evaluates one expression. Invariants: every error quotes the expression;
/// an expression that evaluates to JSON gives a value that survives JSON -> CEL -> JSON
/// unchanged; a bool condition evaluates the same way twice.
pub fn cel(data: &[u8]) {
    let mut b = Bytes::new(data);
    let mode = b.below(8);
    let vars: Vec<(&str, Value)> = ["output", "input", "run", "steps"]
        .into_iter()
        .map(|name| (name, arb::json(&mut b, CONTEXT_DEPTH, CEL_FIELDS)))
        .collect();
    let src = match mode {
        0 | 1 => String::from_utf8_lossy(b.rest()).into_owned(),
        2..=5 => {
            let depth = 1 + b.below(6);
            arb::cel(&mut b, depth)
        }
        6 => {
            let n = b.below(400);
            arb::deep_cel(&mut b, n)
        }
        _ => {
            // The JSON <-> CEL rule on its own.
            let v = arb::json(&mut b, 6, CEL_FIELDS);
            assert_eq!(from_cel(&to_cel(&v)).as_ref(), Ok(&v));
            return;
        }
    };
    let bound: Vec<(&str, &Value)> = vars.iter().map(|(n, v)| (*n, v)).collect();
    let c = match Condition::compile(&src) {
        Ok(c) => c,
        Err(e) => {
            assert_quotes(&e, &src);
            return;
        }
    };
    assert_eq!(c.source(), src);
    let _ = c.variables();
    let first = c.eval_bool(&bound);
    if let Err(e) = &first {
        assert_quotes(e, &src);
    }
    match c.eval_json(&bound) {
        Ok(v) => assert_eq!(
            from_cel(&to_cel(&v)).as_ref(),
            Ok(&v),
            "JSON -> CEL -> JSON changed the value of {src}"
        ),
        Err(e) => assert_quotes(&e, &src),
    }
    if let Ok(first) = first {
        assert_eq!(c.eval_bool(&bound), Ok(first), "{src}");
    }
}

fn assert_quotes(e: &ConditionError, src: &str) {
    let quoted = match e {
        ConditionError::Syntax { source_text, .. }
        | ConditionError::TooLarge { source_text, .. }
        | ConditionError::Eval { source_text, .. }
        | ConditionError::NotBool { source_text, .. } => source_text,
    };
    assert_eq!(quoted, src, "{e}");
}
