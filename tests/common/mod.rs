//! Shared test support: fixtures, and slo-guard's router served over real TLS on loopback.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use serde_json::Value;
use slo_guard::admission::{WorkloadKind, WorkloadSnapshot};
use slo_guard::certs::{CertRequest, generate};
use slo_guard::guard::Guard;
use slo_guard::metrics::Metrics;
use slo_guard::server::{AppState, ops_router, router};
use slo_guard::store::{PolicyStore, StoreEvent, read_manifests};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A real AdmissionReview captured from kube-apiserver (see tests/e2e/capture-fixtures.sh).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = root().join("tests/fixtures/captured").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).expect("fixture is JSON")
}

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
/// with its full decision context.
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
        },
    )])
}

pub fn guard() -> Guard {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Guard::new(
        baseline_policies(),
        Arc::new(checkout_workload()),
        Arc::new(Metrics::new()),
    )
}

pub struct TlsServer {
    pub address: SocketAddr,
    pub client: reqwest::Client,
    handle: Handle<SocketAddr>,
}

impl TlsServer {
    pub async fn start(guard: Guard) -> Self {
        Self::start_with_readiness(guard, true).await
    }

    pub async fn start_with_readiness(guard: Guard, ready: bool) -> Self {
        Self::start_with_state(guard, ready, None).await
    }

    /// With `POST /v1/preflight` served by `preflight`.
    pub async fn start_with_preflight(
        guard: Guard,
        preflight: Arc<slo_guard::preflight::PreflightService>,
    ) -> Self {
        Self::start_with_state(guard, true, Some(preflight)).await
    }

    async fn start_with_state(
        guard: Guard,
        ready: bool,
        preflight: Option<Arc<slo_guard::preflight::PreflightService>>,
    ) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bundle = generate(&CertRequest::local(1)).expect("certificates");
        let config =
            RustlsConfig::from_pem(bundle.tls_cert.into_bytes(), bundle.tls_key.into_bytes())
                .await
                .expect("tls config");
        let state = AppState {
            guard: Arc::new(guard),
            ready: Arc::new(AtomicBool::new(ready)),
            preflight,
        };
        let handle: Handle<SocketAddr> = Handle::new();
        let server = axum_server::bind_rustls("127.0.0.1:0".parse().unwrap(), config)
            .handle(handle.clone())
            // `serve` puts these on two ports (tests/hostile_clients.rs shows the split);
            // handler tests reach both through one.
            .serve(
                router(state.clone())
                    .merge(ops_router(state))
                    .into_make_service(),
            );
        tokio::spawn(server);
        let address = handle.listening().await.expect("listening");
        let client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(bundle.ca_cert.as_bytes()).expect("ca"),
            )
            .build()
            .expect("client");
        Self {
            address,
            client,
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.address.port())
    }

    /// POSTs a body; returns the status and the parsed JSON.
    pub async fn post(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request");
        (
            response.status().as_u16(),
            response.text().await.expect("body"),
        )
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

pub fn root_path(relative: &str) -> PathBuf {
    root().join(Path::new(relative))
}
