//! The HTTP edges: the webhook routes over rustls ([`router`]: what the apiserver
//! calls), and the operations routes on their own port ([`ops_router`]: metrics, health
//! and readiness, for Prometheus and the kubelet), so that each port can be opened to
//! only the client that needs it. Both are public so tests drive the services `serve`
//! runs.

pub mod drain;
mod error;
pub mod limits;
pub mod phases;
pub mod tls;

pub use error::HttpError;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::admission::MAX_REVIEW_BYTES;
use crate::guard::{Endpoint, Guard};
use crate::metrics::{EndpointLabels, ReasonLabels};
use crate::preflight::{PreflightError, PreflightService};

/// What the routes share.
#[derive(Clone)]
pub struct AppState {
    /// Judges reviews.
    pub guard: Arc<Guard>,
    /// False until policies are loaded (and the cluster watches have synced), and again
    /// once shutdown begins, so the apiserver's endpoints stop routing to this pod first.
    pub ready: Arc<AtomicBool>,
    /// Authentication and rate limits for `POST /v1/preflight`; `None` where there is no
    /// cluster to authenticate callers against, and the route answers 503.
    pub preflight: Option<Arc<PreflightService>>,
}

/// The webhook port's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .route("/v1/preflight", post(preflight))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(state)
}

/// The operations port's routes: `/metrics`, `/healthz`, `/readyz`.
pub fn ops_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn validate(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    review(&state, Endpoint::Validate, body).await
}

async fn mutate(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    review(&state, Endpoint::Mutate, body).await
}

async fn review(
    state: &AppState,
    endpoint: Endpoint,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let guard = &state.guard;
    // Both endpoints may wait on Prometheus, never longer than the policies' timeouts.
    let judgement = match body.map_err(HttpError::from) {
        Ok(body) => guard
            .review_async(endpoint, &body, chrono::Utc::now())
            .await
            .map_err(HttpError::from),
        Err(error) => Err(error),
    };
    let response = match judgement {
        Ok(judgement) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            judgement.response.to_review_json(),
        )
            .into_response(),
        Err(error) => {
            count_refusal(guard, &error);
            tracing::warn!(endpoint = endpoint.as_str(), error = %error, "refused request");
            error.into_response()
        }
    };
    observe_latency(guard, endpoint.as_str(), started);
    response
}

fn count_refusal(guard: &Guard, error: &HttpError) {
    guard
        .metrics
        .bad_requests
        .get_or_create(&ReasonLabels {
            reason: error.reason().to_string(),
        })
        .inc();
}

fn observe_latency(guard: &Guard, endpoint: &str, started: Instant) {
    guard
        .metrics
        .latency
        .get_or_create(&EndpointLabels {
            endpoint: endpoint.to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
}

/// `POST /v1/preflight`: what a change would get now, and its envelope, for the caller
/// its bearer token names. Writes nothing, and answers with the same decision core.
async fn preflight(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let guard = &state.guard;
    let answer = async {
        let service = state.preflight.as_ref().ok_or_else(|| {
            PreflightError::Disabled(
                "slo-guard runs without a cluster to authenticate callers against".into(),
            )
        })?;
        let body = body?;
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        Ok::<_, HttpError>(
            service
                .answer(guard, authorization, &body, chrono::Utc::now())
                .await?,
        )
    }
    .await;
    let response = match answer {
        Ok(answer) => (StatusCode::OK, axum::Json(answer)).into_response(),
        Err(error) => {
            count_refusal(guard, &error);
            tracing::info!(endpoint = "preflight", error = %error, "refused preflight");
            error.into_response()
        }
    };
    observe_latency(guard, "preflight", started);
    response
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let guard = &state.guard;
    let snapshot = guard.policies.snapshot();
    guard
        .metrics
        .policies_loaded
        .set(snapshot.policies.len() as i64);
    guard
        .metrics
        .policies_rejected
        .set(guard.policies.errors().len() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        guard.metrics.encode(),
    )
        .into_response()
}
