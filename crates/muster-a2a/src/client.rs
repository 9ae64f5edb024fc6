//! A small A2A client: fetch a card, call the JSON-RPC methods muster uses (`SendMessage`,
//! `GetTask`, `CancelTask`) over reqwest. It classifies every failure as the remote being
//! unreachable (the agent is gone), a JSON-RPC error (the task's failure) or a broken
//! answer (a protocol error); it does not retry.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::config::A2aConfig;
use super::types::{
    AgentCard, PROTOCOL_VERSION, SendMessageRequest, SendMessageResponse, Task, TaskIdParams,
    method,
};

/// The most bytes of an answer read.
const MAX_BODY: usize = 16 << 20;

/// Why a call to a remote A2A agent failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The remote could not be reached (connection refused or reset, timeout, 502-504).
    Unreachable(String),
    /// The remote answered with a JSON-RPC error.
    Rpc {
        /// The error's code.
        code: i64,
        /// Its message.
        message: String,
    },
    /// The remote's answer is not what A2A says it must be (or a 4xx).
    Protocol(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unreachable(m) | ClientError::Protocol(m) => f.write_str(m),
            ClientError::Rpc { code, message } => write!(f, "JSON-RPC error {code}: {message}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A client of one remote A2A agent: its card, and its JSON-RPC endpoint.
///
/// # Example
/// ```no_run
/// use muster_a2a::{A2aClient, A2aConfig};
///
/// # async fn demo() -> Result<(), muster_a2a::ClientError> {
/// let client = A2aClient::connect(&A2aConfig::new(
///     "http://127.0.0.1:9999/.well-known/agent-card.json",
/// ))
/// .await?;
/// println!("{} has {} skills", client.card().name, client.card().skills.len());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct A2aClient {
    http: reqwest::Client,
    card: AgentCard,
    rpc: String,
}

impl A2aClient {
    /// Fetches the card of `config` and finds its JSON-RPC interface.
    pub async fn connect(config: &A2aConfig) -> Result<A2aClient, ClientError> {
        let http = http_client(config)?;
        let card = fetch_card(&http, &config.card).await?;
        let rpc = card
            .jsonrpc_url()
            .ok_or_else(|| {
                ClientError::Protocol(format!(
                    "the agent card at {} lists no JSONRPC interface (supportedInterfaces), which muster needs",
                    config.card
                ))
            })?
            .to_string();
        Ok(A2aClient { http, card, rpc })
    }

    /// The remote's card.
    pub fn card(&self) -> &AgentCard {
        &self.card
    }

    /// `SendMessage`.
    pub async fn send_message(
        &self,
        request: &SendMessageRequest,
    ) -> Result<SendMessageResponse, ClientError> {
        self.call(
            method::SEND_MESSAGE,
            serde_json::to_value(request).unwrap_or_default(),
        )
        .await
    }

    /// `GetTask`.
    pub async fn get_task(&self, id: &str) -> Result<Task, ClientError> {
        let params = TaskIdParams { id: id.to_string() };
        self.call(
            method::GET_TASK,
            serde_json::to_value(params).unwrap_or_default(),
        )
        .await
    }

    /// `CancelTask`.
    pub async fn cancel_task(&self, id: &str) -> Result<Task, ClientError> {
        let params = TaskIdParams { id: id.to_string() };
        self.call(
            method::CANCEL_TASK,
            serde_json::to_value(params).unwrap_or_default(),
        )
        .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, ClientError> {
        let id = uuid::Uuid::now_v7().to_string();
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let resp = self
            .http
            .post(&self.rpc)
            .json(&body)
            .send()
            .await
            .map_err(|e| transport(&self.rpc, e))?;
        let doc = read_json(&self.rpc, resp).await?;
        if let Some(err) = doc.get("error") {
            let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)");
            return Err(ClientError::Rpc {
                code,
                message: muster_core::util::bounded_text(message).into_owned(),
            });
        }
        let result = doc.get("result").cloned().ok_or_else(|| {
            ClientError::Protocol(format!(
                "{method} at {}: the answer has neither `result` nor `error`",
                self.rpc
            ))
        })?;
        serde_json::from_value(result).map_err(|e| {
            ClientError::Protocol(format!(
                "{method} at {}: the result is not what A2A 1.0 says: {e}",
                self.rpc
            ))
        })
    }
}

/// The HTTP client of `config`: its headers and token on every request, its timeout.
fn http_client(config: &A2aConfig) -> Result<reqwest::Client, ClientError> {
    // Installing fails only when a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut headers = HeaderMap::new();
    for (k, v) in &config.headers {
        let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) else {
            return Err(ClientError::Protocol(format!(
                "header `{k}` is not valid HTTP"
            )));
        };
        headers.insert(k, v);
    }
    headers.insert(
        HeaderName::from_static("a2a-version"),
        HeaderValue::from_static(PROTOCOL_VERSION),
    );
    if let Some(var) = &config.token_env {
        let token = std::env::var(var).map_err(|_| {
            ClientError::Protocol(format!(
                "the environment variable `{var}` (the bearer token) is not set"
            ))
        })?;
        let mut v = HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
            ClientError::Protocol(format!(
                "the token in `{var}` is not a valid HTTP header value"
            ))
        })?;
        v.set_sensitive(true);
        headers.insert(AUTHORIZATION, v);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(config.connect_timeout())
        .retry(reqwest::retry::never())
        .build()
        .map_err(|e| ClientError::Protocol(format!("cannot build the HTTP client: {e}")))
}

async fn fetch_card(http: &reqwest::Client, url: &str) -> Result<AgentCard, ClientError> {
    let resp = http.get(url).send().await.map_err(|e| transport(url, e))?;
    let doc = read_json(url, resp).await?;
    serde_json::from_value(doc).map_err(|e| {
        ClientError::Protocol(format!(
            "the agent card at {url} is not an A2A 1.0 card: {e}"
        ))
    })
}

fn transport(url: &str, e: reqwest::Error) -> ClientError {
    let why = if e.is_timeout() {
        "did not answer in time".to_string()
    } else if e.is_connect() {
        "cannot be reached (connection failed)".to_string()
    } else {
        format!("failed: {e}")
    };
    ClientError::Unreachable(format!("the A2A agent at {url} {why}"))
}

async fn read_json(url: &str, resp: reqwest::Response) -> Result<Value, ClientError> {
    let status = resp.status();
    if matches!(status.as_u16(), 502..=504) {
        return Err(ClientError::Unreachable(format!(
            "the A2A agent at {url} is unavailable (HTTP {status})"
        )));
    }
    let bytes = read_bounded(url, resp).await?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes);
        // A JSON-RPC error may come with a 4xx: read it as one.
        if let Ok(doc) = serde_json::from_slice::<Value>(&bytes)
            && doc.get("error").is_some()
        {
            return Ok(doc);
        }
        return Err(ClientError::Protocol(format!(
            "the A2A agent at {url} answered HTTP {status}: {}",
            muster_core::util::bounded_text(text.trim())
        )));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ClientError::Protocol(format!(
            "the A2A agent at {url} answered something that is not JSON: {e}"
        ))
    })
}

async fn read_bounded(url: &str, mut resp: reqwest::Response) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if out.len() + c.len() > MAX_BODY {
                    return Err(ClientError::Protocol(format!(
                        "the answer of the A2A agent at {url} is over {MAX_BODY} bytes"
                    )));
                }
                out.extend_from_slice(&c);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(transport(url, e)),
        }
    }
}

/// How long a cancel sent on an attempt's way out may take.
pub(crate) const CANCEL_WAIT: Duration = Duration::from_secs(5);
