//! The one place errors become HTTP statuses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use axum::extract::rejection::BytesRejection;

use crate::admission::{AdmissionError, MAX_REVIEW_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    /// The body could not be read: too large, or the connection failed mid-body.
    #[error("cannot read the request body: {0}")]
    Body(#[from] BytesRejection),
}

impl HttpError {
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::Body(rejection) => rejection.status(),
            HttpError::Admission(AdmissionError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::Admission(
                AdmissionError::NotAReview(_)
                | AdmissionError::NotJson(_)
                | AdmissionError::TooDeep
                | AdmissionError::UnsupportedVersion(_)
                | AdmissionError::MissingRequest
                | AdmissionError::MissingUid
                | AdmissionError::Malformed(_),
            ) => StatusCode::BAD_REQUEST,
            HttpError::Admission(AdmissionError::Internal(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short, bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            HttpError::Body(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                "too_large"
            }
            HttpError::Body(_) => "unreadable_body",
            HttpError::Admission(AdmissionError::TooLarge { .. }) => "too_large",
            HttpError::Admission(AdmissionError::NotAReview(_)) => "not_a_review",
            HttpError::Admission(AdmissionError::NotJson(_)) => "not_json",
            HttpError::Admission(AdmissionError::TooDeep) => "too_deep",
            HttpError::Admission(AdmissionError::UnsupportedVersion(_)) => "unsupported_version",
            HttpError::Admission(AdmissionError::MissingRequest) => "missing_request",
            HttpError::Admission(AdmissionError::MissingUid) => "missing_uid",
            HttpError::Admission(AdmissionError::Malformed(_)) => "malformed",
            HttpError::Admission(AdmissionError::Internal(_)) => "internal",
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
        (self.status(), Json(json!({ "error": message }))).into_response()
    }
}
