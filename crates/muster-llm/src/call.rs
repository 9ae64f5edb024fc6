//! One HTTP exchange with a chat-completions server, and every way it can fail, as a
//! [`CallError`] whose text names the kind (`rate_limited`, `server_error`, `refused`,
//! `unreachable`, `timeout`, `stream_idle`, `bad_answer`) for the journal.
//!
//! It sends once: no retry loop hides here. A failed request fails its attempt, the task's
//! owner journals it and reassigns, and the provider makes later requests wait out a
//! `Retry-After`. Bodies are read with a bound ([`MAX_RESPONSE_BYTES`]); the request is
//! bounded by the config's `timeout` (for a stream: until its headers, then `stream_idle`
//! between chunks).

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};

use super::decode::{Answer, DecodeError, MAX_RESPONSE_BYTES, StreamDecoder, decode_response};

/// The longest `Retry-After` honoured (a longer one is cut to it).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// How a request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// HTTP 429.
    #[error("rate_limited: HTTP 429{}: {body}", after(.retry_after))]
    RateLimited {
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
        /// An excerpt of the body.
        body: String,
    },
    /// HTTP 5xx.
    #[error("server_error: HTTP {status}{}: {body}", after(.retry_after))]
    Server {
        /// The status.
        status: u16,
        /// The server's `Retry-After` (503).
        retry_after: Option<Duration>,
        /// An excerpt of the body.
        body: String,
    },
    /// Another non-success status (400 bad request, 401, 404 unknown model...).
    #[error("refused: HTTP {status}: {body}")]
    Refused {
        /// The status.
        status: u16,
        /// An excerpt of the body.
        body: String,
    },
    /// No connection, or it broke.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The request's time bound passed.
    #[error("timeout: no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// A stream sent nothing for longer than its idle bound.
    #[error("stream_idle: the stream sent nothing for {}", humantime::format_duration(*.0))]
    StreamIdle(Duration),
    /// The answer could not be decoded.
    #[error("bad_answer: {0}")]
    Decode(#[from] DecodeError),
}

fn after(d: &Option<Duration>) -> String {
    match d {
        Some(d) => format!(" (retry after {})", humantime::format_duration(*d)),
        None => String::new(),
    }
}

impl CallError {
    /// The `Retry-After` the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::RateLimited { retry_after, .. } | CallError::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

/// `Retry-After` as seconds (an HTTP date is not honoured: servers of this API send
/// seconds), bounded by [`MAX_RETRY_AFTER`].
///
/// # Example
/// ```
/// use std::time::Duration;
/// use muster_llm::parse_retry_after;
/// assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
/// assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
/// assert_eq!(parse_retry_after("soon"), None);
/// ```
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs: f64 = v.trim().parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        secs.min(MAX_RETRY_AFTER.as_secs_f64()),
    ))
}

/// One request.
pub struct Request<'a> {
    /// The chat-completions URL.
    pub url: &'a str,
    /// The API key, sent as a bearer token.
    pub api_key: Option<&'a str>,
    /// The `Idempotency-Key`.
    pub idempotency_key: &'a str,
    /// The JSON body.
    pub body: Vec<u8>,
    /// The request's time bound.
    pub timeout: Duration,
    /// For a streamed answer: the idle bound between chunks.
    pub stream_idle: Option<Duration>,
}

impl<'a> std::fmt::Debug for Request<'a> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").finish_non_exhaustive()
    }
}

/// The body as an error quotes it: the one bounded quote, on one line.
fn excerpt(bytes: &[u8]) -> String {
    muster_core::util::bounded_bytes(bytes)
        .replace(['\n', '\r'], " ")
        .trim()
        .to_string()
}

fn unreachable(e: &reqwest::Error) -> CallError {
    // The source chain says what happened (connection refused, reset...).
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    CallError::Unreachable(msg)
}

/// Sends `req` with `client` and decodes the answer; `on_chunk` is called for every chunk
/// of a streamed answer (the attempt's heartbeat).
pub(crate) async fn send(
    client: &reqwest::Client,
    req: Request<'_>,
    on_chunk: &dyn Fn(),
) -> Result<Answer, CallError> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(req.idempotency_key) {
        headers.insert("idempotency-key", v);
    }
    if let Some(key) = req.api_key {
        let v = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            CallError::Unreachable("the API key is not a valid header value".into())
        })?;
        headers.insert(AUTHORIZATION, v);
    }
    let sent = client.post(req.url).headers(headers).body(req.body).send();
    let mut resp = match tokio::time::timeout(req.timeout, sent).await {
        Err(_) => return Err(CallError::Timeout(req.timeout)),
        Ok(Err(e)) => return Err(unreachable(&e)),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    if !status.is_success() {
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // The body of an error is read only briefly: it is for the message.
        let body = match tokio::time::timeout(req.timeout, read_bounded(&mut resp, 4096)).await {
            Ok(Ok(b)) => excerpt(&b),
            _ => String::new(),
        };
        return Err(match status.as_u16() {
            429 => CallError::RateLimited { retry_after, body },
            s @ 500..=599 => CallError::Server {
                status: s,
                retry_after,
                body,
            },
            s => CallError::Refused { status: s, body },
        });
    }
    match req.stream_idle {
        None => {
            let body = match tokio::time::timeout(
                req.timeout,
                read_bounded(&mut resp, MAX_RESPONSE_BYTES),
            )
            .await
            {
                Err(_) => return Err(CallError::Timeout(req.timeout)),
                Ok(r) => r?,
            };
            Ok(decode_response(&body)?)
        }
        Some(idle) => {
            let mut decoder = StreamDecoder::default();
            loop {
                match tokio::time::timeout(idle, resp.chunk()).await {
                    Err(_) => return Err(CallError::StreamIdle(idle)),
                    Ok(Err(e)) => return Err(unreachable(&e)),
                    Ok(Ok(None)) => break,
                    Ok(Ok(Some(bytes))) => {
                        on_chunk();
                        decoder.push(&bytes)?;
                        if decoder.is_done() {
                            break;
                        }
                    }
                }
            }
            Ok(decoder.finish()?)
        }
    }
}

async fn read_bounded(resp: &mut reqwest::Response, limit: usize) -> Result<Vec<u8>, CallError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| unreachable(&e))? {
        if body.len() + chunk.len() > limit {
            if limit == MAX_RESPONSE_BYTES {
                return Err(CallError::Decode(DecodeError::TooLarge));
            }
            body.extend_from_slice(&chunk[..limit - body.len()]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_their_kind_first() {
        let e = CallError::RateLimited {
            retry_after: Some(Duration::from_secs(1)),
            body: "slow down".into(),
        };
        assert_eq!(
            e.to_string(),
            "rate_limited: HTTP 429 (retry after 1s): slow down"
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
        assert!(
            CallError::Timeout(Duration::from_secs(60))
                .to_string()
                .starts_with("timeout: ")
        );
        assert_eq!(parse_retry_after("99999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("-1"), None);
    }
}
