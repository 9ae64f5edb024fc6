//! The CLI as a client of a running node (`--server URL`): `muster run`, `approve`,
//! `inspect` and `agents` talk to `muster serve`'s API (docs/api.md) and print what they
//! print locally, with the same exit codes.
//!
//! The token comes from `--token-file`, `--token-env`, `MUSTER_TOKEN` or the node's kept
//! `.muster/token` ([`DEFAULT_TOKEN_FILE`]). API errors become
//! the CLI's errors: a 4xx is bad input (exit 2) with the node's message; an unreachable
//! node is bad input naming the URL.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::CliError;
use muster::serve::Token;

/// The token file a node on the default journal (`.muster/journal.db`) generates and
/// keeps; read when no token file or variable is given and `MUSTER_TOKEN` is unset.
pub const DEFAULT_TOKEN_FILE: &str = ".muster/token";

/// The largest response the client reads, in bytes.
pub const MAX_RESPONSE: usize = 256 << 20;

/// Options of a command that can talk to a node instead of running locally.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerArgs {
    /// Talk to a running `muster serve` at this URL (e.g. http://127.0.0.1:7070).
    #[arg(long)]
    pub server: Option<String>,
    /// With --server: read the API token from this file.
    #[arg(long, requires = "server", conflicts_with = "token_env")]
    pub token_file: Option<PathBuf>,
    /// With --server: read the API token from this variable (default MUSTER_TOKEN, then
    /// the file .muster/token that a node on the default journal keeps).
    #[arg(long, requires = "server")]
    pub token_env: Option<String>,
    /// With an https:// --server: trust only the CA certificates (PEM) in this file, in
    /// place of the system's roots (a node with a certificate of a private CA, or a
    /// self-signed one); default: the variable MUSTER_CA_CERT when set.
    #[arg(long, requires = "server", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

/// The variable naming a CA file (PEM) the client trusts, when `--ca-cert` is not given.
pub const CA_CERT_ENV: &str = "MUSTER_CA_CERT";

/// A connection to a node.
#[derive(Debug)]
pub struct Client {
    base: String,
    token: Token,
    http: reqwest::Client,
}

impl Client {
    /// A client for `args.server` (which must be given), with its token.
    pub fn new(args: &ServerArgs) -> Result<Client, CliError> {
        let base = args
            .server
            .as_deref()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CliError::bad_input(
                format!("--server `{base}` must be an http:// or https:// URL"),
                json!({"server": base}),
            ));
        }
        let bad = |e: muster::serve::TokenError| CliError::bad_input(e.to_string(), json!({}));
        let mut token = Token::load(args.token_file.as_deref(), args.token_env.as_deref())
            .map_err(bad)?
            .map(|(t, _)| t);
        // Last, the token a node on the default journal generated and keeps.
        let kept = std::path::Path::new(DEFAULT_TOKEN_FILE);
        if token.is_none() && kept.is_file() {
            token = Token::load(Some(kept), None).map_err(bad)?.map(|(t, _)| t);
        }
        let token = token.ok_or_else(|| {
            CliError::bad_input(
                format!(
                    "no API token: give --token-file FILE or --token-env VAR, set \
                     MUSTER_TOKEN, or run where `muster serve` keeps {DEFAULT_TOKEN_FILE}"
                ),
                json!({}),
            )
        })?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .retry(reqwest::retry::never());
        let ca = args.ca_cert.clone().map(|f| (f, "--ca-cert")).or_else(|| {
            std::env::var_os(CA_CERT_ENV)
                .filter(|v| !v.is_empty())
                .map(|v| (PathBuf::from(v), CA_CERT_ENV))
        });
        if let Some((file, from)) = ca {
            let bad = |why: String| {
                CliError::bad_input(
                    format!("{from} {}: {why}", file.display()),
                    json!({"file": file.display().to_string()}),
                )
            };
            let pem = std::fs::read(&file).map_err(|e| bad(format!("cannot read it: {e}")))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad(format!("not a PEM certificate bundle: {e}")))?;
            if certs.is_empty() {
                return Err(bad(
                    "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
                ));
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder
            .build()
            .map_err(|e| CliError::bad_input(format!("HTTP client: {e}"), json!({})))?;
        Ok(Client { base, token, http })
    }

    /// The node's URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`: the JSON answer, or the node's error as a CLI error.
    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        self.send(req).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, CliError> {
        let mut resp = req
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| {
                CliError::bad_input(
                    format!("cannot reach the node at {}: {e}", self.base),
                    json!({"server": self.base}),
                )
            })?;
        let status = resp.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            CliError::bad_input(
                format!("reading the answer of {}: {e}", self.base),
                json!({"server": self.base}),
            )
        })? {
            if bytes.len() + chunk.len() > MAX_RESPONSE {
                return Err(CliError::bad_input(
                    format!("the answer of {} is over {MAX_RESPONSE} bytes", self.base),
                    json!({"server": self.base}),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        let doc: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            json!({"error": String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).to_string()})
        });
        if status.is_success() {
            return Ok(doc);
        }
        let message = doc["error"]
            .as_str()
            .map_or_else(|| format!("the node answered {status}"), str::to_string);
        let details =
            json!({"status": status.as_u16(), "field": doc.get("field"), "server": self.base});
        Err(if status.is_client_error() {
            CliError::bad_input(message, details)
        } else {
            CliError::failed(message, details)
        })
    }

    /// Every record of the node's journal, page by page.
    pub async fn records(&self) -> Result<Vec<muster::journal::Record>, CliError> {
        self.records_where("").await
    }

    /// The records of one run (its own and its tasks'), page by page; on a control node of
    /// a cluster, from whichever control node has the run.
    pub async fn run_records(
        &self,
        run: uuid::Uuid,
    ) -> Result<Vec<muster::journal::Record>, CliError> {
        self.records_where(&format!("&run={run}")).await
    }

    async fn records_where(&self, filter: &str) -> Result<Vec<muster::journal::Record>, CliError> {
        let mut out = Vec::new();
        let mut after = 0u64;
        loop {
            let page = self
                .get(&format!("/v1/records?after={after}&limit=10000{filter}"))
                .await?;
            let records: Vec<muster::journal::Record> =
                serde_json::from_value(page["records"].clone()).map_err(|e| {
                    CliError::failed(
                        format!("the node's records are not readable: {e}"),
                        json!({}),
                    )
                })?;
            out.extend(records);
            match page["next"].as_u64() {
                Some(n) if n > after => after = n,
                _ => return Ok(out),
            }
        }
    }

    /// The full id of a run given by id or unique prefix.
    pub async fn resolve_run(&self, id: &str) -> Result<uuid::Uuid, CliError> {
        let id = id.trim().to_ascii_lowercase();
        if let Ok(u) = uuid::Uuid::parse_str(&id) {
            return Ok(u);
        }
        let mut hits = Vec::new();
        let mut after: Option<String> = None;
        // At most 100 pages of 500 runs are looked through.
        for _ in 0..100 {
            let q = after
                .as_ref()
                .map_or(String::new(), |a| format!("&after={a}"));
            let page = self.get(&format!("/v1/runs?limit=500{q}")).await?;
            for r in page["runs"].as_array().into_iter().flatten() {
                if let Some(run) = r["run"]
                    .as_str()
                    .filter(|r| !id.is_empty() && r.starts_with(&id))
                {
                    hits.push(run.to_string());
                }
            }
            match page["next"].as_str() {
                Some(n) => after = Some(n.to_string()),
                None => break,
            }
        }
        match hits.as_slice() {
            [one] => {
                uuid::Uuid::parse_str(one).map_err(|e| CliError::failed(e.to_string(), json!({})))
            }
            [] => Err(CliError::bad_input(
                format!("no run `{id}` on the node"),
                json!({"run": id}),
            )),
            many => Err(CliError::bad_input(
                format!(
                    "`{id}` matches {} runs; give more of the id: {}",
                    many.len(),
                    many.join(", ")
                ),
                json!({"run": id, "matches": many}),
            )),
        }
    }
}
