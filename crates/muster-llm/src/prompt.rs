//! Prompt templates: the system and user prompts of an LLM agent, written in Jinja
//! (`{{ input.title }}`) and rendered with `minijinja` over the variables in
//! [`VARIABLES`].
//!
//! Templates are compiled and checked once, when the manifest is loaded: a syntax error or
//! a variable that is not one of [`VARIABLES`] is reported with the field it is in.
//! Rendering is bounded (fuel, and [`MAX_PROMPT_BYTES`] of output), so a template cannot
//! hang an attempt or fill the memory. It must not know about HTTP or schemas.

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::Value;

/// The variables a template may use.
pub const VARIABLES: &[&str] = &["input", "capability", "task", "attempt", "feedback"];
/// The largest rendered prompt.
pub const MAX_PROMPT_BYTES: usize = 1 << 20;
/// Template instructions one rendering may run (minijinja's fuel).
const FUEL: u64 = 1_000_000;

/// What a template is rendered over.
#[derive(Debug, Clone, Serialize)]
pub struct PromptVars<'a> {
    /// The task's input.
    pub input: &'a Value,
    /// The capability asked for.
    pub capability: &'a str,
    /// The task id.
    pub task: String,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// The schema errors of the previous turn of this attempt; empty on the first turn.
    pub feedback: &'a str,
}

/// An agent's compiled templates.
///
/// # Example
/// ```
/// use muster_llm::{PromptVars, Prompts};
/// use serde_json::json;
///
/// let p = Prompts::compile(Some("You triage bugs."), "Title: {{ input.title }}").unwrap();
/// let input = json!({"title": "crash on start"});
/// let vars = PromptVars { input: &input, capability: "triage", task: "t1".into(), attempt: 1, feedback: "" };
/// let (system, user) = p.render(&vars).unwrap();
/// assert_eq!((system.as_deref(), user.as_str()), (Some("You triage bugs."), "Title: crash on start"));
/// // Unknown variables are refused when the templates are compiled:
/// let err = Prompts::compile(None, "{{ inptu.title }}").unwrap_err();
/// assert_eq!(err[0].0, "/prompt");
/// ```
#[derive(Debug)]
pub struct Prompts {
    env: Environment<'static>,
    has_system: bool,
}

impl Prompts {
    /// Compiles and checks both templates; errors are `(field, message)` with the field
    /// `/system` or `/prompt`.
    pub fn compile(system: Option<&str>, prompt: &str) -> Result<Prompts, Vec<(String, String)>> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_fuel(Some(FUEL));
        let globals: Vec<String> = env.globals().map(|(n, _)| n.to_string()).collect();
        let mut problems = Vec::new();
        let mut add = |env: &mut Environment<'static>, name: &'static str, source: &str| {
            let field = format!("/{name}");
            if let Err(e) = env.add_template_owned(name, source.to_string()) {
                problems.push((field, format!("not a valid template: {e}")));
                return;
            }
            let Ok(t) = env.get_template(name) else {
                return;
            };
            let mut unknown: Vec<String> = t
                .undeclared_variables(false)
                .into_iter()
                .filter(|v| !VARIABLES.contains(&v.as_str()) && !globals.contains(v))
                .collect();
            unknown.sort();
            if !unknown.is_empty() {
                problems.push((
                    field,
                    format!(
                        "unknown variable{} {} (a template may use: {})",
                        if unknown.len() == 1 { "" } else { "s" },
                        unknown
                            .iter()
                            .map(|v| format!("`{v}`"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        VARIABLES.join(", ")
                    ),
                ));
            }
        };
        if let Some(s) = system {
            add(&mut env, "system", s);
        }
        add(&mut env, "prompt", prompt);
        if problems.is_empty() {
            Ok(Prompts {
                env,
                has_system: system.is_some(),
            })
        } else {
            Err(problems)
        }
    }

    /// Renders the system prompt (if any) and the user prompt.
    pub fn render(&self, vars: &PromptVars<'_>) -> Result<(Option<String>, String), String> {
        let one = |name: &str| -> Result<String, String> {
            let t = self
                .env
                .get_template(name)
                .map_err(|e| format!("template `{name}`: {e}"))?;
            let out = t
                .render(vars)
                .map_err(|e| format!("rendering the {name} template failed: {e}"))?;
            if out.len() > MAX_PROMPT_BYTES {
                return Err(format!(
                    "the rendered {name} prompt is {} bytes, above the limit of {MAX_PROMPT_BYTES}",
                    out.len()
                ));
            }
            Ok(out)
        };
        let system = if self.has_system {
            Some(one("system")?)
        } else {
            None
        };
        Ok((system, one("prompt")?))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn vars(input: &Value) -> PromptVars<'_> {
        PromptVars {
            input,
            capability: "triage",
            task: "t".into(),
            attempt: 2,
            feedback: "at /severity: not one of the allowed values",
        }
    }

    #[test]
    fn prompt_renders_every_variable() {
        let p = Prompts::compile(
            None,
            "{{ capability }} {{ task }} {{ attempt }} {{ input.n }} {{ input | tojson }} [{{ feedback }}]",
        )
        .unwrap();
        let input = json!({"n": 7});
        let (_, out) = p.render(&vars(&input)).unwrap();
        assert_eq!(
            out,
            "triage t 2 7 {\"n\":7} [at /severity: not one of the allowed values]"
        );
    }

    #[test]
    fn unknown_variables_and_bad_syntax_name_their_field() {
        let err = Prompts::compile(Some("{{ sytem }}"), "{% if %}").unwrap_err();
        assert_eq!(err.len(), 2);
        assert_eq!(err[0].0, "/system");
        assert!(err[0].1.contains("`sytem`"), "{}", err[0].1);
        assert_eq!(err[1].0, "/prompt");
        // Loop variables and builtins are not unknown.
        assert!(
            Prompts::compile(
                None,
                "{% for x in range(3) %}{{ x }}{{ loop.index }}{% endfor %}"
            )
            .is_ok()
        );
    }

    #[test]
    fn a_runaway_template_is_stopped() {
        let p = Prompts::compile(
            None,
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
        )
        .unwrap();
        assert!(p.render(&vars(&json!({}))).is_err());
    }
}
