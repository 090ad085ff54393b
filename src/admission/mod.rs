//! Admission I/O: reading an AdmissionReview into a [`Change`] the rules can judge, and
//! writing the AdmissionReview response back.

mod change;
mod response;
mod review;

pub use change::{
    ActorKind, Change, ChangeClass, ConfigKind, HpaBounds, LabelState, POLICY_LABEL, PodMakerKind,
    REFLECTION_LABEL, ReplicaChange, Requester, Target, TargetKind, WorkloadKind, WorkloadLookup,
    WorkloadSnapshot, classify,
};
pub use response::{ReviewResponse, ReviewStatus};
pub use review::{
    GroupResource, ObjectMetadata, Operation, OwnerReference, RequestOptions, ReviewObject,
    ReviewRequest, UserInfo,
};

use review::{ReviewEnvelope, TypeFields};

/// Bodies larger than this are refused before parsing. The apiserver's own request limit
/// is 3 MiB, so nothing legitimate is larger.
pub const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("request body is {size} bytes, above the {MAX_REVIEW_BYTES}-byte limit")]
    TooLarge { size: usize },
    #[error("request body is not an AdmissionReview: {0}")]
    NotAReview(#[source] serde_json::Error),
    #[error("AdmissionReview apiVersion {0:?} is not supported: send admission.k8s.io/v1")]
    UnsupportedVersion(String),
    #[error("AdmissionReview has no request")]
    MissingRequest,
    #[error("AdmissionReview request has no uid")]
    MissingUid,
    #[error("{0}")]
    Malformed(String),
    /// slo-guard failed on a request it read: its own fault, not the sender's.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Parses an AdmissionReview v1 body and returns its request.
pub fn parse_review(body: &[u8]) -> Result<ReviewRequest, AdmissionError> {
    if body.len() > MAX_REVIEW_BYTES {
        return Err(AdmissionError::TooLarge { size: body.len() });
    }
    let review: ReviewEnvelope = serde_json::from_slice(body).map_err(|error| {
        // Only on the error path: say "wrong version" rather than a field error when the
        // body is a review of another version.
        match serde_json::from_slice::<TypeFields>(body) {
            Ok(types)
                if types.kind == "AdmissionReview"
                    && types.api_version != "admission.k8s.io/v1" =>
            {
                AdmissionError::UnsupportedVersion(format!("{}/{}", types.api_version, types.kind))
            }
            _ => AdmissionError::NotAReview(error),
        }
    })?;
    if review.api_version != "admission.k8s.io/v1" || review.kind != "AdmissionReview" {
        return Err(AdmissionError::UnsupportedVersion(format!(
            "{}/{}",
            review.api_version, review.kind
        )));
    }
    let request = review.request.ok_or(AdmissionError::MissingRequest)?;
    if request.uid.is_empty() {
        return Err(AdmissionError::MissingUid);
    }
    Ok(request)
}
