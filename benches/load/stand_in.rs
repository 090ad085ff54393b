//! The servers beside slo-guard: a stand-in Prometheus whose answers come from a file,
//! and the ceiling, a do-nothing webhook on the same stack as slo-guard.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::Uri;
use hyper::header::CONTENT_TYPE;

use crate::die;

pub(crate) fn form_value(form: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(form.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[derive(Default)]
pub(crate) struct Stand {
    pub(crate) answers: BTreeMap<String, f64>,
    pub(crate) served: AtomicU64,
    pub(crate) unknown: Mutex<Vec<String>>,
}

pub(crate) fn prometheus_answer(stand: &Stand, query: Option<String>) -> axum::response::Response {
    use axum::response::IntoResponse;
    stand.served.fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let query = query.unwrap_or_default();
    let value = if query.starts_with("max(timestamp(") {
        Some(now.floor())
    } else {
        stand.answers.get(query.trim()).copied()
    };
    let json = |status: axum::http::StatusCode, body: String| {
        (status, [(CONTENT_TYPE, "application/json")], body).into_response()
    };
    match value {
        Some(v) => json(
            axum::http::StatusCode::OK,
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[{now:.3},"{v}"]}}]}}}}"#
            ),
        ),
        None => {
            stand.unknown.lock().unwrap().push(query.clone());
            json(
                axum::http::StatusCode::BAD_REQUEST,
                r#"{"status":"error","errorType":"bad_data","error":"the load benchmark has no answer for this query"}"#.to_string(),
            )
        }
    }
}

pub(crate) async fn start_prometheus(answers_file: &Path) -> (SocketAddr, Arc<Stand>) {
    use axum::routing::get;
    let text = std::fs::read_to_string(answers_file)
        .unwrap_or_else(|e| die(&format!("{}: {e}", answers_file.display())));
    let answers: BTreeMap<String, f64> = serde_yaml::from_str(&text)
        .unwrap_or_else(|e| die(&format!("{}: {e}", answers_file.display())));
    let stand = Arc::new(Stand {
        answers,
        ..Stand::default()
    });
    let on_get = {
        let stand = stand.clone();
        move |uri: Uri| {
            let stand = stand.clone();
            async move { prometheus_answer(&stand, uri.query().and_then(|q| form_value(q, "query"))) }
        }
    };
    let on_post = {
        let stand = stand.clone();
        move |uri: Uri, body: Bytes| {
            let stand = stand.clone();
            async move {
                let form = String::from_utf8_lossy(&body).into_owned();
                let query = form_value(&form, "query")
                    .or_else(|| uri.query().and_then(|q| form_value(q, "query")));
                prometheus_answer(&stand, query)
            }
        }
    };
    let app = axum::Router::new().route("/api/v1/query", get(on_get).post(on_post));
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap_or_else(|e| die(&format!("stand-in Prometheus: {e}")));
    let addr = listener.local_addr().expect("address");
    // TCP_NODELAY, as Go (and so Prometheus) sets by default: without it an answer written
    // in two segments can wait out slo-guard's delayed ACK, 40 ms.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, stand)
}

/// The ceiling: `load --ceiling-server ADDR CERT KEY THREADS PARSE`, run in its own
/// process. The same axum-server + rustls stack, TLS config, TCP_NODELAY and allocator as
/// `slo-guard serve`; the handler reads the review (PARSE: `kube`, kube-rs's
/// `AdmissionReview<DynamicObject>`, or `slo-guard`, slo-guard's own `parse_review`) and
/// answers `allowed` without judging.
pub(crate) fn ceiling_server(args: &[String]) -> ! {
    let [addr, cert, key, threads, parse] = args else {
        die("usage: --ceiling-server ADDR CERT KEY THREADS PARSE");
    };
    let addr: SocketAddr = addr.parse().unwrap_or_else(|_| die("ceiling: bad address"));
    let threads: usize = threads.parse().unwrap_or(1);
    let lean = match parse.as_str() {
        "kube" => false,
        "slo-guard" => true,
        other => die(&format!("ceiling: unknown parse {other}")),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        use axum::response::IntoResponse;
        use axum::routing::{get, post};
        use kube::core::DynamicObject;
        use kube::core::admission::AdmissionReview;

        fn uid_of(body: &[u8], lean: bool) -> Result<String, String> {
            if lean {
                slo_guard::admission::parse_review(body)
                    .map(|request| request.uid)
                    .map_err(|e| e.to_string())
            } else {
                serde_json::from_slice::<AdmissionReview<DynamicObject>>(body)
                    .map(|review| review.request.map(|r| r.uid).unwrap_or_default())
                    .map_err(|e| e.to_string())
            }
        }
        let allow = move |body: Bytes| async move {
            match uid_of(&body, lean) {
                Ok(uid) => (
                    [(CONTENT_TYPE, "application/json")],
                    format!(
                        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{{"uid":{},"allowed":true}}}}"#,
                        serde_json::Value::String(uid)
                    ),
                )
                    .into_response(),
                Err(error) => (axum::http::StatusCode::BAD_REQUEST, error).into_response(),
            }
        };
        let config = slo_guard::server::tls::server_config(Path::new(cert), Path::new(key))
            .unwrap_or_else(|e| die(&format!("ceiling TLS: {e}")));
        let app = axum::Router::new()
            .route("/validate", post(allow))
            .route("/mutate", post(allow))
            .route("/readyz", get(|| async { "ready" }))
            .layer(axum::extract::DefaultBodyLimit::max(3 * 1024 * 1024));
        let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(
            axum_server::tls_rustls::RustlsConfig::from_config(config),
        )
        .acceptor(axum_server::accept::NoDelayAcceptor::new());
        let _ = axum_server::bind(addr)
            .acceptor(acceptor)
            .serve(app.into_make_service())
            .await;
    });
    std::process::exit(0)
}
