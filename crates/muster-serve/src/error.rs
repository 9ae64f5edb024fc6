//! The API's errors: a status code and a JSON body `{error, field?}`, and the JSON body
//! extractor that turns every malformed request into a 400 (or 413) naming what is wrong.
//!
//! It owns the mapping from input problems to status codes (docs/api.md's table) and
//! must not decide anything about runs or tasks. Bad input is never a 500.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

/// The largest request body, in bytes.
pub const BODY_LIMIT: usize = 1 << 20;

/// An error answered to an API client.
///
/// # Example
/// ```
/// use axum::http::StatusCode;
/// use muster_serve::ApiError;
///
/// let e = ApiError::not_found("no run `42`").field("id");
/// assert_eq!(e.status, StatusCode::NOT_FOUND);
/// assert_eq!(e.body()["field"], "id");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The status code.
    pub status: StatusCode,
    /// The message (the CLI's words for the same problem).
    pub error: String,
    /// The field at fault, if one is.
    pub field: Option<String>,
    /// Seconds to wait before trying again (a `Retry-After` header), for a refusal at a
    /// bound.
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            field: None,
            retry_after: None,
        }
    }

    /// 403: the token is valid, its role does not allow the request.
    ///
    /// # Example
    /// ```
    /// use muster_serve::ApiError;
    ///
    /// let e = ApiError::forbidden("deciding a gate needs role `operator`");
    /// assert_eq!(e.status.as_u16(), 403);
    /// ```
    pub fn forbidden(error: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, error)
    }

    /// 429: the node is at a bound; the client may try again after `retry_after` seconds
    /// (sent as `Retry-After`).
    ///
    /// # Example
    /// ```
    /// use muster_serve::ApiError;
    /// use axum::response::IntoResponse;
    ///
    /// let r = ApiError::too_many("10 runs in flight (--max-runs 10)", 1).into_response();
    /// assert_eq!(r.status().as_u16(), 429);
    /// assert_eq!(r.headers()["retry-after"], "1");
    /// ```
    pub fn too_many(error: impl Into<String>, retry_after: u32) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, error);
        e.retry_after = Some(retry_after);
        e
    }

    /// 400: malformed input.
    pub fn bad_request(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error)
    }

    /// 404: no such thing.
    pub fn not_found(error: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, error)
    }

    /// 409: the state does not allow it.
    pub fn conflict(error: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, error)
    }

    /// 422: well-formed, but breaks a schema or a bound.
    pub fn unprocessable(error: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, error)
    }

    /// 503: the node is shutting down, or at a limit.
    pub fn unavailable(error: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, error)
    }

    /// Names the field at fault.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        match &self.field {
            Some(f) => json!({"error": self.error, "field": f}),
            None => json!({"error": self.error}),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        r
    }
}

/// A JSON request body of type `T`; a body that is not JSON, misses a field, has an
/// unknown one or one of the wrong type is a 400 naming the field, one over the size limit
/// a 413.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(e) => Err(rejection(e)),
        }
    }
}

/// The API error for a refused JSON body.
fn rejection(e: JsonRejection) -> ApiError {
    match e {
        JsonRejection::JsonDataError(d) => {
            // serde_path_to_error's text: "field: message" (or the message alone at the root).
            let text = d.body_text();
            let detail = text
                .strip_prefix("Failed to deserialize the JSON body into the target type: ")
                .unwrap_or(&text)
                .to_string();
            let field = detail
                .split_once(": ")
                .map(|(path, _)| path.to_string())
                .filter(|p| !p.contains(' '))
                .or_else(|| unknown_field(&detail));
            // serde quotes a wrong value whole (`invalid type: string "..."`): bounded.
            let err = ApiError::bad_request(format!(
                "the request body: {}",
                muster_core::util::bounded_text(&detail)
            ));
            match field {
                Some(f) => err.field(f),
                None => err,
            }
        }
        JsonRejection::JsonSyntaxError(s) => {
            ApiError::bad_request(format!("the request body is not JSON: {}", s.body_text()))
        }
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::bad_request("the request body must be JSON (Content-Type: application/json)")
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over the limit of {} bytes", BODY_LIMIT),
        ),
        other => ApiError::bad_request(format!(
            "the request body: {}",
            muster_core::util::bounded_text(&other.body_text())
        )),
    }
}

/// The field serde names in "unknown field `x`" or "missing field `x`".
fn unknown_field(detail: &str) -> Option<String> {
    let start = detail.find("field `")? + "field `".len();
    let end = detail[start..].find('`')? + start;
    Some(detail[start..end].to_string())
}
