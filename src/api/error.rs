//! The API's error type: every failure becomes `{"errors": [...]}` with `Content-Type:
//! application/json` and a status chosen in one exhaustive `match` over the library's [`Error`].
//! Internal failures are logged in full and shown to the client only as an opaque message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::Error;

/// An error as the API answers it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub errors: Vec<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            errors: vec![message.into()],
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// Vault's answer to a missing path or an empty list: 404 with no messages.
    pub fn empty_not_found() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            errors: vec![],
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let opaque = |error: &Error| {
            tracing::error!(%error, "internal error answering a request");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; the server log has the details",
            )
        };
        match &error {
            Error::InvalidInput(message) => Self::bad_request(message.clone()),
            Error::NotFound { .. } => Self::new(StatusCode::NOT_FOUND, error.to_string()),
            Error::PermissionDenied => Self::new(StatusCode::FORBIDDEN, "permission denied"),
            Error::LoginRefused(_) => Self::new(StatusCode::FORBIDDEN, error.to_string()),
            // The device's error (a path, an errno) is for the operator's log, not the client.
            Error::AuditFailed(_) => {
                tracing::error!(%error, "request refused: no audit device could record it");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "audit log unavailable; the request was not performed",
                )
            }
            Error::Conflict(message) => Self::new(StatusCode::CONFLICT, message.clone()),
            Error::Unavailable(message) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, message.clone())
            }
            // Plugin messages never carry rendered statements or passwords, so the operator gets
            // the database's own words.
            Error::Database { source, .. } if source.is_transient() => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
            }
            Error::Database { .. } => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
            }
            // The store's own words say which address failed to answer, nothing secret; the
            // request did nothing, and retrying once the store is back works.
            Error::StoreUnavailable(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
            }
            Error::Store(_)
            | Error::Migration(_)
            | Error::Seal(_)
            | Error::Config(_)
            | Error::Internal(_) => opaque(&error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "errors": self.errors }))).into_response()
    }
}

pub type ApiResult<T = Response> = Result<T, ApiError>;
