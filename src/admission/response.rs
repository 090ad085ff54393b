//! The AdmissionReview v1 response, written by hand so the patch is encoded the way the
//! apiserver's Go decoder documents it: a base64 string (kube-core's response type
//! serializes it as a JSON array of numbers, kube#1781).

use std::collections::BTreeMap;

use base64::Engine;
use serde::Serialize;

/// `response.status` of a denial: kubectl prints its message.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewStatus {
    /// The HTTP status the apiserver answers the client with (403 for a denial).
    pub code: u16,
    /// The `metav1.StatusReason` (`Forbidden`).
    pub reason: &'static str,
    /// The denial as kubectl shows it, after `admission webhook "..." denied the request:`.
    pub message: String,
}

/// The `response` of an AdmissionReview v1.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewResponse {
    /// The request's uid, echoed.
    pub uid: String,
    /// The verdict. A warn- or audit-mode finding still allows.
    pub allowed: bool,
    /// Why not, for a denial.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ReviewStatus>,
    /// A JSON Patch, base64-encoded (mutating webhook only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// `JSONPatch` whenever `patch` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// Kept in the apiserver's audit log under the webhook's name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
    /// Shown by kubectl as `Warning:` lines, allowed or not.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: &'a ReviewResponse,
}

impl ReviewResponse {
    /// Allows the request `uid`, with nothing attached.
    pub fn allow(uid: impl Into<String>) -> Self {
        Self {
            uid: uid.into(),
            allowed: true,
            status: None,
            patch: None,
            patch_type: None,
            audit_annotations: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    /// Denies the request `uid` with 403 Forbidden and `message`.
    #[must_use]
    pub fn deny(uid: impl Into<String>, message: String) -> Self {
        Self {
            allowed: false,
            status: Some(ReviewStatus {
                code: 403,
                reason: "Forbidden",
                message,
            }),
            ..Self::allow(uid)
        }
    }

    /// Attaches a JSON Patch (RFC 6902). An empty patch is left off entirely.
    pub fn with_patch(mut self, patch: &json_patch::Patch) -> Result<Self, serde_json::Error> {
        if patch.0.is_empty() {
            return Ok(self);
        }
        let bytes = serde_json::to_vec(patch)?;
        self.patch = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
        self.patch_type = Some("JSONPatch");
        Ok(self)
    }

    /// The full AdmissionReview envelope the apiserver expects.
    pub fn to_review_json(&self) -> Vec<u8> {
        let envelope = Envelope {
            api_version: "admission.k8s.io/v1",
            kind: "AdmissionReview",
            response: self,
        };
        // Serializing plain strings, bools and maps cannot fail.
        serde_json::to_vec(&envelope).unwrap_or_default()
    }

    /// The line kubectl prints for this response.
    pub fn kubectl_line(&self, webhook: &str) -> String {
        match &self.status {
            Some(status) if !self.allowed => {
                format!(
                    "admission webhook \"{webhook}\" denied the request: {}",
                    status.message
                )
            }
            _ => "allowed".to_string(),
        }
    }
}
