//! slo-guard's router served over real TLS on loopback, with a client that trusts its CA.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use serde_json::Value;
use slo_guard::certs::{CertRequest, generate};
use slo_guard::guard::Guard;
use slo_guard::server::{AppState, ops_router, router};

/// slo-guard's admission and operations routes on one loopback TLS port, shut down when
/// dropped.
pub struct TlsServer {
    /// Where it listens.
    pub address: SocketAddr,
    /// A client that trusts the server's freshly made CA.
    pub client: reqwest::Client,
    handle: Handle<SocketAddr>,
}

impl TlsServer {
    /// Serves `guard`, ready.
    pub async fn start(guard: Guard) -> Self {
        Self::start_with_readiness(guard, true).await
    }

    /// Serves `guard`, with `/readyz` reporting `ready`.
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
        let server =
            axum_server::bind_rustls("127.0.0.1:0".parse().expect("a socket address"), config)
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

    /// The `https://localhost:<port>` URL of `path`, named as the certificate names it.
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

    /// GETs `path`; returns the status and the body text.
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
