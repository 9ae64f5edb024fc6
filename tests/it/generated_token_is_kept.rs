//! A token `muster serve` generated is kept in its file (mode 0600) and reused by the next
//! start on the same journal, so open dashboards and scripts keep working across
//! restarts; lines added to that file keep their roles; the CLI's `--server` mode reads
//! `.muster/token` (beside the default journal) when no token is given. The start line
//! names the dashboard's URL. Real nodes on 127.0.0.1 with free ports, stopped by pid.

use serde_json::json;

use crate::support::common::{muster_cmd, output_within};
use crate::support::node::{call_with, serve, write_cast};

#[cfg(unix)]
fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .expect("token file")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn a_restarted_node_keeps_its_generated_token_and_the_roles_added_to_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_cast(dir.path(), &["workflows"], 1);
    let file = dir.path().join("j/token");
    // First start: a token is generated, printed once, written 0600.
    let node = serve(dir.path(), &[], &[]);
    let token = node.start["token"]
        .as_str()
        .expect("a generated token")
        .to_string();
    assert_eq!(
        node.start["token_file"],
        json!("j/token"),
        "beside the journal"
    );
    assert_eq!(node.start["dashboard"], json!(format!("{}/", node.url)));
    #[cfg(unix)]
    assert_eq!(mode(&file), 0o600);
    let (code, doc) = call_with(
        "GET",
        &format!("{}/v1/whoami", node.url),
        None,
        Some(&token),
    )
    .await;
    assert_eq!((code, doc["role"].clone()), (200, json!("admin")));
    drop(node);
    // A viewer's line added to the file, and its mode loosened by hand.
    let viewer = "viewer-token-0123456789abcdef";
    let text = std::fs::read_to_string(&file).expect("token file");
    std::fs::write(&file, format!("{text}{viewer} viewer dash\n")).expect("append");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    // Second start: the same token, not printed again; the viewer keeps its role.
    let node = serve(dir.path(), &[], &[]);
    assert!(node.start.get("token").is_none(), "{}", node.start);
    assert_eq!(node.start["tokens"], 2, "{}", node.start);
    #[cfg(unix)]
    assert_eq!(mode(&file), 0o600, "the kept file is set back to 0600");
    let whoami = format!("{}/v1/whoami", node.url);
    let (code, doc) = call_with("GET", &whoami, None, Some(&token)).await;
    assert_eq!((code, doc["role"].clone()), (200, json!("admin")), "{doc}");
    let (code, doc) = call_with("GET", &whoami, None, Some(viewer)).await;
    assert_eq!(
        (code, doc),
        (200, json!({"role": "viewer", "name": "dash"}))
    );
    // The CLI finds the token in .muster/token (beside the default journal) by itself.
    std::fs::create_dir_all(dir.path().join(".muster")).expect("dir");
    std::fs::copy(&file, dir.path().join(".muster/token")).expect("copy");
    let mut cmd = muster_cmd(dir.path());
    cmd.env_remove("MUSTER_TOKEN")
        .args(["inspect", "--server", &node.url, "--json"]);
    let out = output_within(60, cmd);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without it, the CLI says where a token may come from.
    std::fs::remove_file(dir.path().join(".muster/token")).expect("rm");
    let mut cmd = muster_cmd(dir.path());
    cmd.env_remove("MUSTER_TOKEN")
        .args(["inspect", "--server", &node.url]);
    let out = output_within(60, cmd);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no API token") && err.contains(".muster/token"),
        "{err}"
    );
}
