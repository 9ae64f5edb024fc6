//! `muster serve --tls-cert FILE --tls-key FILE` (docs/serve.md, "TLS"): a certificate
//! made by the test (rcgen, self-signed for 127.0.0.1) is served over HTTPS, the start
//! line says `https`, the CLI client reaches the node with `--ca-cert` (and
//! `MUSTER_CA_CERT`) and is refused without it; a missing, empty or mismatched file
//! exits 2 naming it. Processes listen on loopback port 0 and are stopped by pid.

use std::path::Path;
use std::process::{Output, Stdio};

use serde_json::Value;

use crate::support::common;
use crate::support::node as node_support;

const TOKEN: &str = "tls-test-token-0123456789abcdef";

/// A certificate for 127.0.0.1 and its key, written as `name.pem` and `name.key`.
fn certificate(dir: &Path, name: &str) -> (String, String) {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("a certificate");
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, made.cert.pem()).expect("cert");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("key");
    (cert.display().to_string(), key.display().to_string())
}

/// Runs the muster binary in `dir` with `args` and `env` (no inherited token or CA file),
/// bounded at 60 s.
fn muster(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = common::muster_cmd(dir);
    cmd.env_remove("MUSTER_TOKEN")
        .env_remove("MUSTER_CA_CERT")
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    common::output_within(60, cmd)
}

/// The JSON error document of a refused command (on stdout or stderr).
fn error_of(out: &Output) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    serde_json::from_slice::<Value>(&out.stdout)
        .or_else(|_| serde_json::from_slice::<Value>(&out.stderr))
        .map(|v| v.to_string())
        .unwrap_or_else(|_| format!("{}{}", text(&out.stdout), text(&out.stderr)))
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    node_support::write_cast(dir.path(), &["workflows", "j"], 1);
    dir
}

#[test]
fn a_node_with_a_certificate_serves_https_and_the_cli_reaches_it_trusting_the_ca_file() {
    let dir = setup();
    let d = dir.path();
    let (cert, key) = certificate(d, "node");
    let node = node_support::serve(
        d,
        &["--tls-cert", &cert, "--tls-key", &key],
        &[("MUSTER_TOKEN", TOKEN)],
    );
    let url = node.url.clone();
    assert!(url.starts_with("https://127.0.0.1:"), "{}", node.start);
    assert!(
        node.start["dashboard"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")),
        "{}",
        node.start
    );
    // The CLI client, trusting the node's certificate by --ca-cert, then by variable.
    let agents = muster(
        d,
        &["agents", "--server", &url, "--ca-cert", &cert, "--json"],
        &[("MUSTER_TOKEN", TOKEN)],
    );
    assert_eq!(agents.status.code(), Some(0), "{}", error_of(&agents));
    let doc: Value = serde_json::from_slice(&agents.stdout).expect("agents JSON");
    assert_eq!(doc["agents"][0]["id"], "echo#0", "{doc}");
    let by_env = muster(
        d,
        &["agents", "--server", &url, "--json"],
        &[("MUSTER_TOKEN", TOKEN), ("MUSTER_CA_CERT", &cert)],
    );
    assert_eq!(by_env.status.code(), Some(0), "{}", error_of(&by_env));
    // Without trusting it, the certificate is refused (not an unknown failure).
    let untrusted = muster(
        d,
        &["agents", "--server", &url, "--json"],
        &[("MUSTER_TOKEN", TOKEN)],
    );
    assert_eq!(untrusted.status.code(), Some(2), "{}", error_of(&untrusted));
    assert!(
        error_of(&untrusted).contains("cannot reach the node"),
        "{}",
        error_of(&untrusted)
    );
    // Another CA's file is not trusted either.
    let (other, _) = certificate(d, "other");
    let wrong = muster(
        d,
        &["agents", "--server", &url, "--ca-cert", &other, "--json"],
        &[("MUSTER_TOKEN", TOKEN)],
    );
    assert_eq!(wrong.status.code(), Some(2), "{}", error_of(&wrong));
    // Plain HTTP to the TLS port gets no API answer.
    let plain = muster(
        d,
        &[
            "agents",
            "--server",
            &url.replace("https://", "http://"),
            "--json",
        ],
        &[("MUSTER_TOKEN", TOKEN)],
    );
    assert_ne!(plain.status.code(), Some(0), "{}", error_of(&plain));
}

#[test]
fn a_missing_empty_or_mismatched_certificate_or_key_exits_2_naming_the_file() {
    let dir = setup();
    let d = dir.path();
    let (cert, key) = certificate(d, "node");
    let (_, other_key) = certificate(d, "other");
    let empty = d.join("empty.pem").display().to_string();
    std::fs::write(&empty, "").expect("empty");
    let missing = d.join("missing.pem").display().to_string();
    let start = |c: &str, k: &str| {
        muster(
            d,
            &[
                "serve",
                "--workflows",
                "workflows",
                "--journal",
                "j/journal.db",
                "--listen",
                "127.0.0.1:0",
                "--json",
                "--tls-cert",
                c,
                "--tls-key",
                k,
            ],
            &[("MUSTER_TOKEN", TOKEN)],
        )
    };
    for (c, k, named, says) in [
        (&missing, &key, &missing, "--tls-cert"),
        (&cert, &missing, &missing, "--tls-key"),
        (&empty, &key, &empty, "no PEM certificate"),
        (&cert, &empty, &empty, "no PEM private key"),
        (&key, &key, &key, "--tls-cert"),
        (
            &cert,
            &other_key,
            &other_key,
            "does not go with the certificate",
        ),
    ] {
        let out = start(c, k);
        let err = error_of(&out);
        assert_eq!(out.status.code(), Some(2), "{c} {k}: {err}");
        assert!(err.contains(named.as_str()), "names {named}: {err}");
        assert!(err.contains(says), "says {says}: {err}");
    }
    // One of the two alone is refused by the parser (exit 2) naming the other.
    let alone = muster(
        d,
        &["serve", "--listen", "127.0.0.1:0", "--tls-cert", &cert],
        &[("MUSTER_TOKEN", TOKEN)],
    );
    assert_eq!(alone.status.code(), Some(2), "{}", error_of(&alone));
    assert!(
        error_of(&alone).contains("--tls-key"),
        "{}",
        error_of(&alone)
    );
}
