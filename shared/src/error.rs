//! Errors, and their one mapping to HTTP status and reason codes.

use serde::Serialize;

/// A failure of a storage backend (DynamoDB, S3). Transient from the caller's point of view:
/// handlers report 503 and events are retried.
#[derive(Debug, thiserror::Error)]
#[error("{backend}: {message}")]
pub struct StoreError {
    pub backend: &'static str,
    pub message: String,
}

impl StoreError {
    pub fn new(backend: &'static str, e: impl std::fmt::Display) -> Self {
        Self { backend, message: e.to_string() }
    }
}

/// An error as the API reports it: `{"error": {"code", "message"}}` with a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
    /// The methods a route takes, for a 405's `Allow` header.
    pub allow: Option<&'static str>,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None, allow: None }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }
    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self { allow: Some(allow), ..Self::new(405, "method_not_allowed", "this route does not take that method") }
    }
    pub fn too_many_items(message: impl Into<String>) -> Self {
        Self::new(413, "too_many_items", message)
    }
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(413, "payload_too_large", message)
    }
    /// Past the caller's rate for this kind of request (`access`): retry after `secs`.
    pub fn rate_limited(secs: u64) -> Self {
        Self {
            retry_after: Some(secs),
            ..Self::new(429, "rate_limited", format!("too many requests; retry in {secs} s"))
        }
    }
    pub fn unavailable() -> Self {
        Self { retry_after: Some(1), ..Self::new(503, "unavailable", "storage is busy; retry shortly") }
    }
    pub fn internal() -> Self {
        Self::new(500, "internal", "internal error")
    }

    pub fn body(&self) -> String {
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: &'a str,
        }
        #[derive(Serialize)]
        struct Outer<'a> {
            error: Inner<'a>,
        }
        serde_json::to_string(&Outer { error: Inner { code: self.code, message: &self.message } })
            .unwrap_or_else(|_| r#"{"error":{"code":"internal","message":"internal error"}}"#.into())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(backend = e.backend, error = %e.message, "storage call failed");
        ApiError::unavailable()
    }
}

impl From<crate::download_urls::SigningError> for ApiError {
    fn from(e: crate::download_urls::SigningError) -> Self {
        tracing::error!(error = %e, "signing failed");
        ApiError::unavailable()
    }
}

impl From<crate::presign::CredentialsError> for ApiError {
    fn from(e: crate::presign::CredentialsError) -> Self {
        crate::download_urls::SigningError::from(e).into()
    }
}

impl From<crate::policy::InvalidDeck> for ApiError {
    fn from(e: crate::policy::InvalidDeck) -> Self {
        ApiError::bad_request(e.to_string())
    }
}
