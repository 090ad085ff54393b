//! What one client may hold of the webhook port. Inside a cluster any pod that reaches
//! the Service can connect, and with `failurePolicy: Fail` a starved slo-guard blocks
//! every governed change; so every phase of a connection has a deadline, and the number
//! of open connections a bound.
//!
//! hyper and axum-server bring part of it: the TLS handshake timeout
//! (`RustlsAcceptor::handshake_timeout`), and HTTP/2's stream, header-list and reset
//! limits and keep-alive pings (set in `cli::serve`). The deadlines of a request's
//! header and of an idle keep-alive connection are `server::phases`'. What is left is
//! written here: the bound on connections, refused before any TLS work, and the time to
//! read a request's body and answer it.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_server::accept::Accept;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use prometheus_client::metrics::counter::Counter;

use crate::metrics::{Metrics, ReasonLabels};

/// The limits of the webhook port. The defaults suit a webhook the apiserver calls with
/// a timeout of at most 30 s.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at most; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Open connections from one source address at most, so that one flooding client
    /// cannot take the connections the apiserver needs.
    pub max_connections_per_ip: usize,
    /// For the TLS handshake, from accept.
    pub tls_handshake_timeout: Duration,
    /// From the end of the TLS handshake, or from a request's first byte, to its
    /// complete header.
    pub header_read_timeout: Duration,
    /// The longest an HTTP/1 keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// To read a request's body and answer it.
    pub request_timeout: Duration,
    /// HTTP/2 streams one connection may have open at once.
    pub h2_max_concurrent_streams: u32,
    /// Largest HTTP/2 header list, in bytes.
    pub h2_max_header_list_size: u32,
    /// Streams a client may open and reset before they are served (the rapid-reset
    /// attack, CVE-2023-44487) before the connection is closed.
    pub h2_max_pending_reset_streams: usize,
    /// Streams slo-guard may reset for a client's protocol errors before it closes the
    /// connection.
    pub h2_max_local_error_reset_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_ip: 256,
            tls_handshake_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            // Longer than the kube-apiserver's 90 s: see `server::phases`.
            idle_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            h2_max_concurrent_streams: 250,
            h2_max_header_list_size: 64 * 1024,
            h2_max_pending_reset_streams: 20,
            h2_max_local_error_reset_streams: 256,
        }
    }
}

/// Holds one of `max_connections` permits for each connection, and one of its source
/// address's `max_connections_per_ip`, and refuses the connection (closes it, before
/// TLS) when either is used up.
#[derive(Clone)]
pub struct CountedAcceptor<A> {
    inner: A,
    permits: Arc<Semaphore>,
    per_source: Arc<PerSource>,
    metrics: Arc<Metrics>,
    // Looked up once: a flood is refused thousands of times a second, and each lookup
    // would allocate its label.
    refused_per_source: Counter,
    refused_connection_limit: Counter,
}

/// Open connections by source address.
struct PerSource {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerSource {
    fn take(self: &Arc<Self>, source: IpAddr) -> Option<SourceSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(source).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            source,
            sources: self.clone(),
        })
    }
}

/// One connection's place in its source's count, given back when dropped.
struct SourceSlot {
    source: IpAddr,
    sources: Arc<PerSource>,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.sources.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.source);
            }
        }
    }
}

impl<A> CountedAcceptor<A> {
    /// Counts the streams `inner` accepts against `limits`.
    pub fn new(inner: A, limits: &Limits, metrics: Arc<Metrics>) -> Self {
        let refused = |reason: &str| {
            metrics
                .connections_refused
                .get_or_create(&ReasonLabels {
                    reason: reason.to_string(),
                })
                .clone()
        };
        Self {
            inner,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            per_source: Arc::new(PerSource {
                limit: limits.max_connections_per_ip,
                open: Mutex::new(HashMap::new()),
            }),
            refused_per_source: refused(PER_SOURCE_LIMIT),
            refused_connection_limit: refused(CONNECTION_LIMIT),
            metrics,
        }
    }
}

const PER_SOURCE_LIMIT: &str = "per_source_limit";
const CONNECTION_LIMIT: &str = "connection_limit";

/// Closes a refused connection with a reset: no FIN exchange, and no TIME_WAIT entry
/// left behind for each of a flood's thousands of connections a second.
fn refuse(stream: TcpStream, counter: &Counter, why: &'static str) -> io::Error {
    counter.inc();
    // Without the reset the connection is still closed, only more slowly.
    let _ = stream.set_zero_linger();
    drop(stream);
    io::Error::other(why)
}

impl<A, S> Accept<TcpStream, S> for CountedAcceptor<A>
where
    A: Accept<TcpStream, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Counted<A::Stream>;
    type Service = A::Service;
    type Future = BoxFuture<'static, io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let source = stream
            .peer_addr()
            .map_or(IpAddr::from([0, 0, 0, 0]), |peer| peer.ip());
        let Some(slot) = self.per_source.take(source) else {
            let refused = refuse(stream, &self.refused_per_source, PER_SOURCE_LIMIT);
            return Box::pin(std::future::ready(Err(refused)));
        };
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            let refused = refuse(stream, &self.refused_connection_limit, CONNECTION_LIMIT);
            return Box::pin(std::future::ready(Err(refused)));
        };
        let accepted = self.inner.accept(stream, service);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            metrics.open_connections.inc();
            Ok((
                Counted {
                    inner: stream,
                    _permit: permit,
                    _slot: slot,
                    metrics,
                },
                service,
            ))
        })
    }
}

/// A connection holding its permits until it is dropped.
pub struct Counted<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
    _slot: SourceSlot,
    metrics: Arc<Metrics>,
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        self.metrics.open_connections.dec();
    }
}

macro_rules! delegate_write {
    ($wrapper:ident) => {
        impl<S: AsyncWrite + Unpin> AsyncWrite for $wrapper<S> {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                data: &[u8],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.inner).poll_write(cx, data)
            }

            fn poll_write_vectored(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                data: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.inner).poll_write_vectored(cx, data)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }

            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.inner).poll_shutdown(cx)
            }
        }
    };
}

delegate_write!(Counted);

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// Answers 408 when a request's body is not read and answered within the request
/// timeout (a client trickling its body holds a connection and a task otherwise).
pub async fn request_deadline(
    State(limits): State<RequestLimits>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            limits.metrics.request_timeouts.inc();
            (
                StatusCode::REQUEST_TIMEOUT,
                axum::Json(serde_json::json!({
                    "error": format!("request not read and answered within {:?}", limits.timeout)
                })),
            )
                .into_response()
        }
    }
}

/// What [`request_deadline`] needs.
#[derive(Clone)]
pub struct RequestLimits {
    /// [`Limits::request_timeout`].
    pub timeout: Duration,
    /// Where timeouts are counted.
    pub metrics: Arc<Metrics>,
}
