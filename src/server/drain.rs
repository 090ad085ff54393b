//! Moving the apiserver off a stopping replica without failing a review.
//!
//! The apiserver calls a webhook Service over HTTP/1.1 and resolves the Service to an
//! endpoint only when it dials; a kept-alive connection stays with its replica for as
//! long as it is used. So leaving the Service's endpoints at SIGTERM does not move that
//! traffic, and closing the connections later races the apiserver, which may be writing
//! a review on one at that moment and does not retry (`write: broken pipe`, `EOF`).
//! Instead, from SIGTERM on, every HTTP/1 answer says `Connection: close`: the apiserver
//! reads its answer, drops the connection itself, and dials a replica that is still
//! ready. HTTP/2 clients get hyper's GOAWAY when the listener closes, which is safe by
//! design (they retry what the server did not take).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::Response;

/// Set once shutdown begins; shared by the server and its middleware.
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    /// From now on, answers close their HTTP/1 connections.
    pub fn begin(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Adds `Connection: close` to HTTP/1 answers once draining, including the answers of
/// requests that were in flight when it began.
pub async fn close_connections_when_draining(
    State(draining): State<Draining>,
    request: Request,
    next: Next,
) -> Response {
    let http1 = request.version() < Version::HTTP_2;
    let mut response = next.run(request).await;
    if http1 && draining.is_draining() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
