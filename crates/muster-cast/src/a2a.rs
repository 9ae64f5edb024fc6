//! The A2A backend's part of loading a manifest: each capability's `skill` (the remote
//! skill it asks for; its own name when it has none) is set aside from the capability and
//! mapped in `backend.skills`. The schemas are the manifest's own: an A2A card has none.
//! It reaches nothing: the remote's card is read when an instance starts.

use serde_json::Value;

use muster_a2a::A2aConfig;

fn is_a2a(doc: &Value) -> bool {
    doc.pointer("/backend/kind").and_then(Value::as_str) == Some("a2a")
}

/// `doc` as the manifest schema should see it: for an A2A manifest, each capability's
/// `skill` (checked by [`prepare`]) is set aside; other manifests are unchanged.
pub(crate) fn schema_view(doc: Value) -> Value {
    let mut view = doc;
    if !is_a2a(&view) {
        return view;
    }
    if let Some(caps) = view.get_mut("capabilities").and_then(Value::as_array_mut) {
        for cap in caps.iter_mut().filter_map(Value::as_object_mut) {
            cap.remove("skill");
        }
    }
    view
}

/// Maps an A2A manifest's capabilities (`doc`, already checked through [`schema_view`]) to
/// their skills in `backend.skills`, removing `skill` from each; or `(field, message)`
/// problems. Other manifests are left as they are.
pub(crate) fn prepare(doc: &mut Value) -> Result<(), Vec<(String, String)>> {
    if !is_a2a(doc) {
        return Ok(());
    }
    let mut backend = doc.get("backend").cloned().unwrap_or(Value::Null);
    if let Some(b) = backend.as_object_mut() {
        b.remove("kind");
    }
    let mut config: A2aConfig = serde_json::from_value(backend)
        .map_err(|e| vec![("/backend".to_string(), format!("{e} (for kind = \"a2a\")"))])?;
    let mut problems: Vec<(String, String)> = config
        .problems()
        .into_iter()
        .map(|(f, m)| (format!("/backend{f}"), m))
        .collect();
    if !config.skills.is_empty() {
        problems.push((
            "/backend/skills".into(),
            "set by each capability's `skill`, not here".into(),
        ));
    }
    if let Some(caps) = doc.get_mut("capabilities").and_then(Value::as_array_mut) {
        for (i, cap) in caps.iter_mut().enumerate() {
            let Some(cap) = cap.as_object_mut() else {
                continue;
            };
            let name = cap
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            match cap.remove("skill") {
                None => {
                    config.skills.insert(name.clone(), name);
                }
                Some(Value::String(s)) if !s.trim().is_empty() => {
                    config.skills.insert(name, s);
                }
                Some(other) => problems.push((
                    format!("/capabilities/{i}/skill"),
                    format!("expected the id of one of the remote card's skills, got {other}"),
                )),
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    doc["backend"]["skills"] = serde_json::to_value(&config.skills).unwrap_or_default();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn skills_are_mapped_and_set_aside() {
        let mut doc = json!({"name": "r", "backend": {"kind": "a2a", "card": "http://h/c"},
            "capabilities": [{"name": "upper", "skill": "shout"}, {"name": "echo"}]});
        assert!(
            schema_view(doc.clone())["capabilities"][0]
                .get("skill")
                .is_none()
        );
        prepare(&mut doc).unwrap();
        assert_eq!(
            doc["backend"]["skills"],
            json!({"upper": "shout", "echo": "echo"})
        );
        assert!(doc["capabilities"][0].get("skill").is_none());
    }

    #[test]
    fn a_bad_skill_or_card_is_refused_naming_its_field() {
        let mut doc = json!({"name": "r", "backend": {"kind": "a2a", "card": "file:///c"},
            "capabilities": [{"name": "upper", "skill": 3}]});
        let fields: Vec<String> = prepare(&mut doc)
            .unwrap_err()
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(fields, ["/backend/card", "/capabilities/0/skill"]);
    }
}
