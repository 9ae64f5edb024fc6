//! The MCP backend's part of loading a manifest: each capability's `tool` is resolved
//! against the tools its server lists, and an omitted `input` or `output` becomes the
//! tool's schema, registered under a stable name (or the generic content schema for a
//! tool that declares no output schema). It lists tools once per load; it starts nothing
//! that outlives the load.

use serde_json::{Map, Value};

use muster_core::messaging::SchemaStore;
use muster_mcp::{
    CONTENT_SCHEMA, McpConfig, ToolInfo, content_schema, input_schema_name, list_tools,
    output_schema_name,
};

/// A placeholder schema name for the manifest schema's check of an MCP manifest whose
/// capabilities leave their schemas to their tools.
const PENDING: &str = "mcp.pending";

fn is_mcp(doc: &Value) -> bool {
    doc.pointer("/backend/kind").and_then(Value::as_str) == Some("mcp")
}

/// `doc` as the manifest schema should see it: for an MCP manifest, each capability
/// without `input`/`output` gets a placeholder and its `tool` (checked by [`prepare`]) is
/// set aside; other manifests are unchanged.
pub(crate) fn schema_view(doc: &Value) -> Value {
    let mut view = doc.clone();
    if !is_mcp(doc) {
        return view;
    }
    if let Some(caps) = view.get_mut("capabilities").and_then(Value::as_array_mut) {
        for cap in caps.iter_mut().filter_map(Value::as_object_mut) {
            cap.remove("tool");
            for field in ["input", "output"] {
                cap.entry(field)
                    .or_insert_with(|| Value::String(PENDING.into()));
            }
        }
    }
    view
}

/// What [`prepare`] found: the server's tools and the schemas the manifest brings.
type Prepared = (Vec<ToolInfo>, Vec<(String, Value)>);

/// Resolves an MCP manifest's capabilities (`doc`, already checked against the manifest
/// schema through [`schema_view`]): lists the server's tools, maps each capability to its
/// `tool` (its own name when it has none) in `backend.tools`, fills omitted schemas with
/// the tool's and adds those to `schemas`. Returns the tools and the schemas brought, or
/// `(field, message)` problems.
pub(crate) fn prepare(
    doc: &mut Value,
    schemas: &SchemaStore,
) -> Result<Prepared, Vec<(String, String)>> {
    let agent = doc
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("agent")
        .to_string();
    let mut backend = doc.get("backend").cloned().unwrap_or(Value::Null);
    if let Some(b) = backend.as_object_mut() {
        b.remove("kind");
    }
    let mut config: McpConfig = serde_json::from_value(backend)
        .map_err(|e| vec![("/backend".to_string(), format!("{e} (for kind = \"mcp\")"))])?;
    let problems: Vec<(String, String)> = config
        .problems()
        .into_iter()
        .map(|(f, m)| (format!("/backend{f}"), m))
        .collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    if !config.tools.is_empty() {
        return Err(vec![(
            "/backend/tools".into(),
            "set by each capability's `tool`, not here".into(),
        )]);
    }
    let mut problems = Vec::new();
    let caps: Vec<Map<String, Value>> = doc
        .get("capabilities")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|c| c.as_object().cloned()).collect())
        .unwrap_or_default();
    for (i, cap) in caps.iter().enumerate() {
        let name = cap.get("name").and_then(Value::as_str).unwrap_or_default();
        match cap.get("tool") {
            None => {}
            Some(Value::String(t)) if !t.is_empty() => {
                config.tools.insert(name.to_string(), t.clone());
            }
            Some(other) => problems.push((
                format!("/capabilities/{i}/tool"),
                format!("expected the name of one of the server's tools, got {other}"),
            )),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let server_field = if config.program.is_some() {
        "/backend/program"
    } else {
        "/backend/url"
    };
    let tools = list_tools(&agent, &config).map_err(|e| {
        vec![(
            server_field.to_string(),
            format!("cannot list the server's tools: {e}"),
        )]
    })?;
    let mut brought: Vec<(String, Value)> = Vec::new();
    let mut bring = |name: String, document: Value| {
        if !brought.iter().any(|(n, _)| *n == name) {
            brought.push((name, document));
        }
    };
    let mut filled = Vec::new();
    for (i, cap) in caps.iter().enumerate() {
        let name = cap.get("name").and_then(Value::as_str).unwrap_or_default();
        let tool_name = config.tool_for(name).to_string();
        let Some(tool) = tools.iter().find(|t| t.name == tool_name) else {
            let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
            let field = if cap.contains_key("tool") {
                format!("/capabilities/{i}/tool")
            } else {
                format!("/capabilities/{i}/name")
            };
            problems.push((
                field,
                format!(
                    "the MCP server {} has no tool `{tool_name}`; it has: {}",
                    config.target(),
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            ));
            continue;
        };
        let mut cap = cap.clone();
        cap.remove("tool");
        if !cap.contains_key("input") {
            let n = input_schema_name(&agent, &tool.name);
            bring(n.clone(), tool.input_schema.clone());
            cap.insert("input".into(), Value::String(n));
        }
        if !cap.contains_key("output") {
            let n = match &tool.output_schema {
                Some(s) => {
                    let n = output_schema_name(&agent, &tool.name);
                    bring(n.clone(), s.clone());
                    n
                }
                None => {
                    bring(CONTENT_SCHEMA.to_string(), content_schema());
                    CONTENT_SCHEMA.to_string()
                }
            };
            cap.insert("output".into(), Value::String(n));
        }
        filled.push(Value::Object(cap));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    for (name, document) in &brought {
        schemas.add(name, document.clone()).map_err(|e| {
            vec![(
                "/capabilities".to_string(),
                format!("the tool schema registered as `{name}` is not usable: {e}"),
            )]
        })?;
    }
    doc["capabilities"] = Value::Array(filled);
    doc["backend"]["tools"] = serde_json::to_value(&config.tools).unwrap_or_default();
    Ok((tools, brought))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_schema_view_completes_only_mcp_capabilities() {
        let mcp = json!({"backend": {"kind": "mcp"}, "capabilities": [{"name": "t", "tool": "x"}]});
        let v = schema_view(&mcp);
        assert_eq!(
            v["capabilities"][0],
            json!({"name": "t", "input": PENDING, "output": PENDING})
        );
        let cmd =
            json!({"backend": {"kind": "command"}, "capabilities": [{"name": "t", "tool": "x"}]});
        assert_eq!(schema_view(&cmd), cmd);
    }

    #[test]
    fn a_bad_backend_is_refused_before_any_server_is_started() {
        let mut doc = json!({"name": "a", "backend": {"kind": "mcp", "program": "x", "url": "http://h/mcp"},
            "capabilities": [{"name": "t"}]});
        let e = prepare(&mut doc, &SchemaStore::new()).unwrap_err();
        assert_eq!(e[0].0, "/backend/url");
        let mut doc = json!({"name": "a", "backend": {"kind": "mcp", "program": "x"},
            "capabilities": [{"name": "t", "tool": 3}]});
        let e = prepare(&mut doc, &SchemaStore::new()).unwrap_err();
        assert_eq!(e[0].0, "/capabilities/0/tool");
    }
}
