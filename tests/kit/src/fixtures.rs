//! The captured AdmissionReviews (tests/fixtures/captured), the baseline policies
//! (tests/fixtures/policies), the watch cache with the checkout Deployment, and a guard
//! over them: what the golden, router and preflight tests judge.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use slo_guard::admission::{WorkloadKind, WorkloadSnapshot};
use slo_guard::guard::Guard;
use slo_guard::metrics::Metrics;
use slo_guard::store::{PolicyStore, StoreEvent, read_manifests};

use crate::root;

/// A real AdmissionReview captured from kube-apiserver (see tests/e2e/capture-fixtures.sh).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = root().join("tests/fixtures/captured").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// A captured AdmissionReview, parsed.
pub fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).expect("fixture is JSON")
}

/// The captured AdmissionReviews' file names, sorted: the golden tests' table.
pub fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("tests/fixtures/captured"))
        .expect("fixtures directory")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// The baseline test policy (tests/fixtures/policies): the example without clock- or
/// history-dependent sections.
pub fn baseline_policies() -> Arc<PolicyStore> {
    let store = PolicyStore::new("slo-guard");
    let documents =
        read_manifests(&root().join("tests/fixtures/policies"), "default").expect("policies read");
    for event in store.replace_all(None, &documents) {
        assert!(matches!(event, StoreEvent::Loaded { .. }), "{event:?}");
    }
    Arc::new(store)
}

/// The watch cache as it would be after the fixtures' Deployment was created by the agent
/// with its full decision context, and a person had made the ConfigMaps the agent
/// deletes in configmap-owner-delete*.json, and the one it gives an owner in
/// configmap-owner-given-owner.json, its owners.
pub fn checkout_workload() -> BTreeMap<(WorkloadKind, String, String), WorkloadSnapshot> {
    let create = fixture_json("deployment-create.json");
    let metadata = &create["request"]["object"]["metadata"];
    let map = |value: &Value| -> BTreeMap<String, String> {
        serde_json::from_value(value.clone()).unwrap_or_default()
    };
    BTreeMap::from([(
        (
            WorkloadKind::Deployment,
            "payments".to_string(),
            "checkout".to_string(),
        ),
        WorkloadSnapshot {
            labels: map(&metadata["labels"]),
            pod_labels: map(&create["request"]["object"]["spec"]["template"]["metadata"]["labels"]),
            annotations: map(&metadata["annotations"]),
            replicas: Some(3),
            owner_uids: [
                "configmap-owner-delete.json",
                "configmap-owner-delete-orphan.json",
                "configmap-owner-given-owner.json",
            ]
            .into_iter()
            .filter_map(|name| {
                fixture_json(name)["request"]["oldObject"]["metadata"]["uid"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect(),
        },
    )])
}

/// A guard over the baseline policies and the checkout watch cache, with no SLO source.
pub fn guard() -> Guard {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Guard::new(
        baseline_policies(),
        Arc::new(checkout_workload()),
        Arc::new(Metrics::new()),
    )
}
