//! The one error type of the HTTP surface, mapped to a status and a JSON body in one place.
//!
//! Every error reaches a client as `{"error": {"code": "...", "message": "..."}}`. Unexpected
//! failures are logged with their cause chain by the request middleware and answered with an
//! opaque message.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or a value is out of range (400).
    #[error("{0}")]
    Validation(String),
    /// No credentials, bad credentials or an invalid/expired token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed to do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The resource or route does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The method is not served on this route (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The change conflicts with existing state, e.g. a taken email (409).
    #[error("{0}")]
    Conflict(String),
    /// The body exceeds the limit (413).
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The body is not JSON (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request is well formed but cannot be done as asked, e.g. an `Idempotency-Key`
    /// reused for another request (422).
    #[error("{0}")]
    Unprocessable(String),
    /// Too many failed attempts (logins); retry after the given time (429).
    #[error("too many failed attempts; retry in {} s", retry_after_secs(*.retry_after))]
    TooManyRequests {
        /// When the next attempt may be made.
        retry_after: std::time::Duration,
    },
    /// A dependency (database, an actor) cannot serve the request now; retry later (503).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unclassified failure (500); the message is not shown to the client.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    /// The stable machine-readable `code` of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "invalid_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Unexpected(_) => "internal",
        }
    }

    /// A 400 with `message`.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Validation(message.into())
    }
}

/// Whole seconds to wait, rounded up (`Retry-After` takes seconds).
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// `code` and `message` of an error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    /// A body with `code` and `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = match self {
            ApiError::Unexpected(_) => "internal error".to_string(),
            other => other.to_string(),
        };
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unavailable(_) => {
                response.insert_header(("Retry-After", "1"));
            }
            ApiError::TooManyRequests { retry_after } => {
                response.insert_header(("Retry-After", retry_after_secs(*retry_after).to_string()));
            }
            _ => {}
        }
        response.json(ErrorBody::new(self.code(), message))
    }
}

/// An actor refused a request's message (overloaded), did not answer in time, or stopped: 503.
impl From<recsys_actors::observe::Refused> for ApiError {
    fn from(e: recsys_actors::observe::Refused) -> Self {
        use recsys_actors::observe::Refused;
        ApiError::Unavailable(
            match e {
                Refused::Overloaded => "service overloaded; retry later",
                Refused::TimedOut => "request timed out",
                Refused::Stopped => "service temporarily unavailable",
            }
            .into(),
        )
    }
}

/// A key whose first request is still running is a 409 (retry shortly); a key used for another
/// request is a 422 (a retry will not help).
impl From<crate::idempotency::IdempotencyError> for ApiError {
    fn from(e: crate::idempotency::IdempotencyError) -> Self {
        use crate::idempotency::IdempotencyError;
        match e {
            IdempotencyError::InFlight => ApiError::Conflict(e.to_string()),
            IdempotencyError::Mismatch => ApiError::Unprocessable(e.to_string()),
            IdempotencyError::Db(db) => db.into(),
        }
    }
}

/// A database that cannot serve now is a 503; any other database failure is unexpected.
impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        match e {
            crate::db::DbError::Unavailable(_) => {
                ApiError::Unavailable("database unavailable".into())
            }
            failed => ApiError::Unexpected(anyhow::Error::new(failed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    #[test]
    /// A message refused by an overloaded actor, not answered in time, or lost to a stopping
    /// actor is a 503 with the JSON shape.
    fn lost_messages_are_service_unavailable() {
        use recsys_actors::observe::Refused;
        for lost in [Refused::Overloaded, Refused::TimedOut, Refused::Stopped] {
            let error = ApiError::from(lost);
            assert_eq!(error.status_code(), StatusCode::SERVICE_UNAVAILABLE);
            let response = error.error_response();
            assert_eq!(response.headers().get("Retry-After").unwrap(), "1");
            let body = response.into_body().try_into_bytes().unwrap();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["error"]["code"], "unavailable");
        }
    }

    #[test]
    /// Unexpected errors never show their cause to the client.
    fn unexpected_errors_are_opaque() {
        let error = ApiError::from(anyhow::anyhow!("secret detail"));
        let body = error.error_response().into_body().try_into_bytes().unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains("secret detail"));
        assert!(text.contains("\"internal\""));
    }
}
