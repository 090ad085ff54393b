//! Regression tests for what `cargo fuzz` found (fuzz/README.md). Each test is the
//! minimized input, judged through the public API the fuzz target drives.

use std::sync::Arc;

use base64::Engine;
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use slo_guard::admission::AdmissionError;
use slo_guard::guard::{Endpoint, Guard};
use slo_guard::metrics::Metrics;
use slo_guard::store::PolicyStore;

/// A guard with no policies and an empty watch cache: the `last-rollout` stamp is put on
/// every admitted rollout, governed or not.
fn bare_guard() -> Guard {
    Guard::new(
        Arc::new(PolicyStore::new("slo-guard")),
        Arc::new(()),
        Arc::new(Metrics::new()),
    )
}

/// An UPDATE of a Deployment that changes `spec.paused`: a rollout.
fn rollout_review(object: Value, old_object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0f5c1a7e-fuzz-0001",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "namespace": "payments",
            "operation": "UPDATE",
            "userInfo": {},
            "object": object,
            "oldObject": old_object,
        }
    }))
    .unwrap()
}

/// `/mutate` either refuses the review, or answers with a patch that applies to
/// `request.object`, as the apiserver will apply it. A patch that does not apply makes
/// the apiserver fail the request ("failed to apply patch") whatever the verdict was.
/// Returns whether there was a patch.
fn assert_mutation_applies(body: &[u8]) -> bool {
    let now = Utc.with_ymd_and_hms(2026, 11, 18, 10, 0, 0).unwrap();
    let judgement = match bare_guard().review(Endpoint::Mutate, body, now) {
        Ok(judgement) => judgement,
        Err(AdmissionError::Malformed(_)) => return false,
        Err(other) => panic!("unexpected error: {other}"),
    };
    let Some(patch) = &judgement.response.patch else {
        return false;
    };
    let patch = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("base64 patch");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("JSON Patch");
    let review: Value = serde_json::from_slice(body).unwrap();
    let mut object = review["request"]["object"].clone();
    if let Err(error) = json_patch::patch(&mut object, &patch) {
        panic!(
            "the /mutate patch does not apply to request.object: {error}\npatch: {}",
            serde_json::to_string(&patch).unwrap()
        );
    }
    true
}

/// Found by fuzz target `admission_review` (crash-c21982ab…, minimized by hand): a
/// workload object without `metadata` is judged as a rollout, and `/mutate` answers
/// `add /metadata/annotations`, whose parent does not exist. kube's `DynamicObject`
/// defaults a missing `metadata`, so `classify` reads "no annotations map" and
/// `mutation::annotation_patch` adds the map whole under a `/metadata` that is not
/// there. A kube-apiserver always sends `metadata`, so this needs a hand-made review;
/// the fix is to refuse such a review as malformed (or to patch `/metadata` whole).
#[test]
fn workload_object_without_metadata_gets_no_unappliable_patch() {
    assert_mutation_applies(&rollout_review(
        json!({"spec": {"paused": true}}),
        json!({"spec": {}}),
    ));
}

/// The same rollout with `metadata` (and no annotations map, the case
/// `annotation_patch` handles by adding the map whole) is patched cleanly today.
#[test]
fn workload_object_without_annotations_is_patched_cleanly() {
    let metadata = json!({"name": "checkout", "namespace": "payments"});
    let patched = assert_mutation_applies(&rollout_review(
        json!({"metadata": metadata, "spec": {"paused": true}}),
        json!({"metadata": metadata, "spec": {}}),
    ));
    assert!(patched, "a rollout gets the last-rollout stamp");
}
