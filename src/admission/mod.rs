//! Admission I/O: reading an AdmissionReview into a [`Change`] the rules can judge, and
//! writing the AdmissionReview response back.

mod change;
mod response;
mod review;

pub use change::{
    ActorKind, AnnotationState, Change, ChangeClass, ChangeDetail, ConfigInForce, ConfigKind,
    HpaBounds, LabelState, POLICY_LABEL, PodMakerKind, REFLECTION_LABEL, ReplicaChange, Requester,
    Target, TargetKind, WorkloadKey, WorkloadKind, WorkloadLookup, WorkloadSnapshot, classify,
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

/// Why a request body is not a review slo-guard can judge. Each names what is wrong;
/// `server::error` maps them to HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    /// Above [`MAX_REVIEW_BYTES`]; refused before parsing.
    #[error("request body is {size} bytes, above the {MAX_REVIEW_BYTES}-byte limit")]
    TooLarge {
        /// The body's length in bytes.
        size: usize,
    },
    /// Not JSON at all.
    #[error("request body is not an AdmissionReview: it is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// Nested deeper than serde_json's recursion limit.
    #[error(
        "request body is not an AdmissionReview: its JSON nests deeper than the 128 levels slo-guard reads"
    )]
    TooDeep,
    /// JSON, but not shaped like an AdmissionReview.
    #[error("request body is not an AdmissionReview: {0}")]
    NotAReview(String),
    /// An AdmissionReview of another version than `admission.k8s.io/v1`.
    #[error("AdmissionReview apiVersion {0:?} is not supported: send admission.k8s.io/v1")]
    UnsupportedVersion(String),
    /// No `request` to answer.
    #[error("AdmissionReview has no request")]
    MissingRequest,
    /// No `request.uid`, which the answer must echo.
    #[error("AdmissionReview request has no uid")]
    MissingUid,
    /// A review whose request contradicts itself or the API (the message says how).
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
        // Only on the error path: name what is wrong. serde_json reports its nesting limit
        // as a syntax error, which would read as "not JSON".
        if error.to_string().starts_with("recursion limit exceeded") {
            return AdmissionError::TooDeep;
        }
        if matches!(
            error.classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        ) {
            return AdmissionError::NotJson(error);
        }
        // "Wrong version" rather than a field error when the body is a review of another
        // version.
        match serde_json::from_slice::<TypeFields>(body) {
            Ok(types)
                if types.kind == "AdmissionReview"
                    && types.api_version != "admission.k8s.io/v1" =>
            {
                AdmissionError::UnsupportedVersion(format!("{}/{}", types.api_version, types.kind))
            }
            _ => AdmissionError::NotAReview(error.to_string()),
        }
    })?;
    if review.api_version.is_empty() && review.kind.is_empty() {
        return Err(AdmissionError::NotAReview(
            "it has no apiVersion and kind; send an admission.k8s.io/v1 AdmissionReview".into(),
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(body: &str) -> String {
        parse_review(body.as_bytes())
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn a_refused_body_is_named_for_what_is_wrong_with_it() {
        assert!(refusal("{\"hello\": ").contains("it is not JSON: EOF while parsing"));
        assert!(refusal("not json").contains("it is not JSON"));
        let deep = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let deep_object = format!(
            "{{\"apiVersion\": \"admission.k8s.io/v1\", \"kind\": \"AdmissionReview\", \"request\": {{\"object\": {{\"spec\": {}}}}}}}",
            deep(200)
        );
        assert_eq!(
            refusal(&deep_object),
            "request body is not an AdmissionReview: its JSON nests deeper than the 128 levels slo-guard reads"
        );
        // Nesting in a field slo-guard skips is skipped, not read: what is wrong is the rest.
        let deep_elsewhere = format!("{{\"x\": {}}}", deep(200));
        assert_eq!(
            refusal(&deep_elsewhere),
            "request body is not an AdmissionReview: it has no apiVersion and kind; send an admission.k8s.io/v1 AdmissionReview"
        );
        assert_eq!(
            refusal(
                "{\"apiVersion\": \"admission.k8s.io/v1beta1\", \"kind\": \"AdmissionReview\"}"
            ),
            "AdmissionReview apiVersion \"admission.k8s.io/v1beta1/AdmissionReview\" is not supported: send admission.k8s.io/v1"
        );
        assert!(
            refusal("[1, 2]").starts_with("request body is not an AdmissionReview: invalid type")
        );
    }
}
