//! The one place errors become HTTP statuses.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use axum::extract::rejection::BytesRejection;

use crate::admission::{AdmissionError, MAX_REVIEW_BYTES};
use crate::preflight::PreflightError;

/// Every error the webhook port answers; [`HttpError::status`] is the one place they
/// become HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The body is not a review slo-guard can judge.
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    /// The body could not be read: too large, or the connection failed mid-body.
    #[error("cannot read the request body: {0}")]
    Body(#[from] BytesRejection),
    /// A preflight that cannot be answered.
    #[error(transparent)]
    Preflight(#[from] PreflightError),
}

fn admission_status(error: &AdmissionError) -> StatusCode {
    match error {
        AdmissionError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        AdmissionError::NotAReview(_)
        | AdmissionError::NotJson(_)
        | AdmissionError::TooDeep
        | AdmissionError::UnsupportedVersion(_)
        | AdmissionError::MissingRequest
        | AdmissionError::MissingUid
        | AdmissionError::Malformed(_) => StatusCode::BAD_REQUEST,
        AdmissionError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn admission_reason(error: &AdmissionError) -> &'static str {
    match error {
        AdmissionError::TooLarge { .. } => "too_large",
        AdmissionError::NotAReview(_) => "not_a_review",
        AdmissionError::NotJson(_) => "not_json",
        AdmissionError::TooDeep => "too_deep",
        AdmissionError::UnsupportedVersion(_) => "unsupported_version",
        AdmissionError::MissingRequest => "missing_request",
        AdmissionError::MissingUid => "missing_uid",
        AdmissionError::Malformed(_) => "malformed",
        AdmissionError::Internal(_) => "internal",
    }
}

impl HttpError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::Body(rejection) => rejection.status(),
            // A preflight's change is judged as the webhook judges it: the same statuses.
            HttpError::Admission(error)
            | HttpError::Preflight(PreflightError::Admission(error)) => admission_status(error),
            HttpError::Preflight(error) => match error {
                PreflightError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
                PreflightError::Forbidden(_) => StatusCode::FORBIDDEN,
                PreflightError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
                PreflightError::Invalid(_) => StatusCode::BAD_REQUEST,
                PreflightError::NotFound(_) => StatusCode::NOT_FOUND,
                PreflightError::Unavailable(_) | PreflightError::Disabled(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                PreflightError::Admission(_) | PreflightError::Internal(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
        }
    }

    /// A short, bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            HttpError::Body(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                "too_large"
            }
            HttpError::Body(_) => "unreadable_body",
            HttpError::Admission(error)
            | HttpError::Preflight(PreflightError::Admission(error)) => admission_reason(error),
            HttpError::Preflight(error) => match error {
                PreflightError::Unauthenticated(_) => "preflight_unauthenticated",
                PreflightError::Forbidden(_) => "preflight_forbidden",
                PreflightError::RateLimited { .. } => "preflight_rate_limited",
                PreflightError::Invalid(_) => "preflight_invalid",
                PreflightError::NotFound(_) => "preflight_not_found",
                PreflightError::Unavailable(_) => "preflight_unavailable",
                PreflightError::Disabled(_) => "preflight_disabled",
                PreflightError::Admission(_) | PreflightError::Internal(_) => "internal",
            },
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let message = match &self {
            HttpError::Body(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                format!("request body is larger than the {MAX_REVIEW_BYTES}-byte limit")
            }
            other => other.to_string(),
        };
        let mut response = (self.status(), Json(json!({ "error": message }))).into_response();
        let headers = response.headers_mut();
        match &self {
            HttpError::Preflight(PreflightError::RateLimited {
                retry_after_secs, ..
            }) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            HttpError::Preflight(PreflightError::Unauthenticated(_)) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
