//! The deadlines of a webhook connection's phases, kept by watching its plaintext bytes.
//!
//! hyper has one HTTP/1 timeout for both "a header is being sent too slowly" and "a
//! keep-alive connection is idle": its header read timeout starts as soon as an answer
//! is written. The two need different lengths. A header should take milliseconds, so a
//! client trickling one is cut off after `--header-read-timeout` (10 s). But an idle
//! connection closed by the server races the client: the kube-apiserver keeps idle
//! webhook connections for 90 s (Go's `IdleConnTimeout`), may pick one at the very moment
//! slo-guard closes it, and does not retry the POST (the failure surfaces as
//! `write: broken pipe` or `EOF` in kubectl). So the idle deadline here is
//! `--idle-timeout` (120 s), longer than the client's, so that the client is always the
//! one that closes; and hyper's own header timeout is turned off.
//!
//! HTTP/1 framing is simple enough to follow without parsing: a header ends at the first
//! CRLF CRLF, and the answer is what slo-guard writes. HTTP/2 connections are left to
//! hyper's keep-alive pings, and to its GOAWAY at shutdown.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::metrics::Metrics;

/// What every HTTP/2 connection sends first; hyper-util reads this many bytes to tell
/// HTTP/1 from HTTP/2.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The end of an HTTP/1 header.
const HEADER_END: &[u8; 4] = b"\r\n\r\n";

/// The deadlines of a connection's phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseTimeouts {
    /// From the TLS handshake, or from a request's first byte, to the end of its header.
    pub header: Duration,
    /// From an answer to the next request's first byte (HTTP/1 keep-alive).
    pub idle: Duration,
}

/// Where a connection is in its exchange, as far as its deadlines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// After the handshake, until it is clear whether this is HTTP/2: how many bytes of
    /// the HTTP/2 preface have been seen.
    Start {
        /// Bytes of the preface seen so far.
        preface_matched: usize,
    },
    /// HTTP/2: hyper's pings and stream limits apply from here on.
    Http2,
    /// Reading an HTTP/1 header: how many bytes of its closing CRLF CRLF have been seen.
    Header {
        /// Bytes of CRLF CRLF seen so far.
        end_matched: usize,
    },
    /// The header is in; reading the body and answering is the request deadline's
    /// (`--request-timeout`, a middleware).
    Request,
    /// Answered; waiting for the next request on a keep-alive connection.
    Idle,
}

/// What a step asks of the connection's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineChange {
    /// Leave it as it is.
    Keep,
    /// Now plus this long.
    Arm(Duration),
    /// No deadline in this phase.
    Disarm,
}

impl Phase {
    /// Follows the bytes just read.
    pub fn on_read(&mut self, bytes: &[u8], timeouts: &PhaseTimeouts) -> DeadlineChange {
        let mut change = DeadlineChange::Keep;
        let mut at = 0;
        while let Some(&byte) = bytes.get(at) {
            match *self {
                Phase::Start { preface_matched } => {
                    if H2_PREFACE.get(preface_matched) != Some(&byte) {
                        // HTTP/1: the header's deadline is the one armed at the
                        // handshake. This byte is the header's; look at it again.
                        *self = Phase::Header { end_matched: 0 };
                        continue;
                    }
                    if preface_matched + 1 == H2_PREFACE.len() {
                        *self = Phase::Http2;
                        return DeadlineChange::Disarm;
                    }
                    *self = Phase::Start {
                        preface_matched: preface_matched + 1,
                    };
                }
                Phase::Header { end_matched } => {
                    let end_matched = next_header_end_match(end_matched, byte);
                    if end_matched == HEADER_END.len() {
                        *self = Phase::Request;
                        return DeadlineChange::Disarm;
                    }
                    *self = Phase::Header { end_matched };
                }
                Phase::Idle => {
                    *self = Phase::Header { end_matched: 0 };
                    change = DeadlineChange::Arm(timeouts.header);
                    continue;
                }
                // Body bytes, or HTTP/2 frames: nothing to follow.
                Phase::Request | Phase::Http2 => break,
            }
            at += 1;
        }
        change
    }

    /// Follows an answer being written. A header that never showed its CRLF CRLF (a
    /// client ending lines with a bare LF) is over once it is answered, too.
    pub fn on_write(&mut self, timeouts: &PhaseTimeouts) -> DeadlineChange {
        match self {
            Phase::Header { .. } | Phase::Request | Phase::Idle => {
                *self = Phase::Idle;
                DeadlineChange::Arm(timeouts.idle)
            }
            Phase::Start { .. } | Phase::Http2 => DeadlineChange::Keep,
        }
    }

    /// The `phase` label of `slo_guard_connection_timeouts_total` when this phase's
    /// deadline passes.
    pub fn timeout_label(&self) -> &'static str {
        match self {
            Phase::Start { .. } => "request_start",
            Phase::Header { .. } => "header",
            Phase::Idle => "idle",
            // No deadline is armed in these.
            Phase::Request | Phase::Http2 => "request",
        }
    }
}

/// One step of matching CRLF CRLF. After a mismatch only a CR can start a new match,
/// because no proper prefix of the pattern ends where another begins but "\r".
fn next_header_end_match(matched: usize, byte: u8) -> usize {
    if HEADER_END.get(matched) == Some(&byte) {
        matched + 1
    } else if byte == b'\r' {
        1
    } else {
        0
    }
}

/// Wraps each accepted (TLS) stream in a [`PhasedConnection`].
#[derive(Clone)]
pub struct PhasedAcceptor<A> {
    inner: A,
    timeouts: PhaseTimeouts,
    metrics: Arc<Metrics>,
}

impl<A> PhasedAcceptor<A> {
    /// Wraps the streams `inner` accepts.
    pub fn new(inner: A, timeouts: PhaseTimeouts, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            timeouts,
            metrics,
        }
    }
}

impl<A, I, S> Accept<I, S> for PhasedAcceptor<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = PhasedConnection<A::Stream>;
    type Service = A::Service;
    type Future = BoxFuture<'static, io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let accepted = self.inner.accept(stream, service);
        let metrics = self.metrics.clone();
        let timeouts = self.timeouts;
        Box::pin(async move {
            match accepted.await {
                Ok((stream, service)) => Ok((
                    PhasedConnection {
                        inner: stream,
                        phase: Phase::Start { preface_matched: 0 },
                        timeouts,
                        deadline: Box::pin(tokio::time::sleep(timeouts.header)),
                        armed: true,
                        metrics,
                    },
                    service,
                )),
                Err(error) => {
                    if error.kind() == io::ErrorKind::TimedOut {
                        metrics.connection_timeout("tls_handshake");
                    }
                    Err(error)
                }
            }
        })
    }
}

/// A connection whose current phase has a deadline; past it, the next read fails and
/// hyper drops the connection.
pub struct PhasedConnection<S> {
    inner: S,
    phase: Phase,
    timeouts: PhaseTimeouts,
    deadline: Pin<Box<Sleep>>,
    armed: bool,
    metrics: Arc<Metrics>,
}

impl<S> PhasedConnection<S> {
    fn apply(&mut self, change: DeadlineChange) {
        match change {
            DeadlineChange::Keep => {}
            DeadlineChange::Arm(after) => {
                self.deadline.as_mut().reset(Instant::now() + after);
                self.armed = true;
            }
            DeadlineChange::Disarm => self.armed = false,
        }
    }

    fn after_write(&mut self, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            let change = self.phase.on_write(&self.timeouts);
            self.apply(change);
        }
        written
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PhasedConnection<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let filled = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let change = this.phase.on_read(&buf.filled()[filled..], &this.timeouts);
                this.apply(change);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if !this.armed || this.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.armed = false;
                this.metrics.connection_timeout(this.phase.timeout_label());
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{} deadline passed", this.phase.timeout_label()),
                )))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PhasedConnection<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, data);
        self.after_write(written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, data);
        self.after_write(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: PhaseTimeouts = PhaseTimeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(120),
    };

    fn start() -> Phase {
        Phase::Start { preface_matched: 0 }
    }

    #[test]
    fn an_http2_preface_hands_the_connection_to_hyper() {
        let mut phase = start();
        // The preface holds a CRLF CRLF, which must not end an HTTP/1 header.
        assert_eq!(
            phase.on_read(&H2_PREFACE[..10], &TIMEOUTS),
            DeadlineChange::Keep
        );
        assert_eq!(
            phase.on_read(&H2_PREFACE[10..], &TIMEOUTS),
            DeadlineChange::Disarm
        );
        assert_eq!(phase, Phase::Http2);
        assert_eq!(phase.on_write(&TIMEOUTS), DeadlineChange::Keep);
        assert_eq!(phase.on_read(b"\0\0\x04", &TIMEOUTS), DeadlineChange::Keep);
    }

    #[test]
    fn an_http1_header_keeps_the_handshake_deadline_until_its_end() {
        let mut phase = start();
        assert_eq!(
            phase.on_read(b"POST /validate HTTP/1.1\r\nHost: x\r\n", &TIMEOUTS),
            DeadlineChange::Keep
        );
        assert_eq!(phase, Phase::Header { end_matched: 2 });
        // The end split across reads, with a false start.
        assert_eq!(
            phase.on_read(b"A: \r\r\nB: c\r", &TIMEOUTS),
            DeadlineChange::Keep
        );
        assert_eq!(
            phase.on_read(b"\n\r\n{\"body\":1}", &TIMEOUTS),
            DeadlineChange::Disarm
        );
        assert_eq!(phase, Phase::Request);
        assert_eq!(
            phase.on_read(b"\r\n\r\n more body", &TIMEOUTS),
            DeadlineChange::Keep
        );
        assert_eq!(phase, Phase::Request);
    }

    #[test]
    fn an_answer_starts_the_idle_deadline_and_the_next_request_the_header_deadline() {
        let mut phase = Phase::Request;
        assert_eq!(
            phase.on_write(&TIMEOUTS),
            DeadlineChange::Arm(TIMEOUTS.idle)
        );
        assert_eq!(phase, Phase::Idle);
        // A second write of the same answer pushes the idle deadline on.
        assert_eq!(
            phase.on_write(&TIMEOUTS),
            DeadlineChange::Arm(TIMEOUTS.idle)
        );
        assert_eq!(
            phase.on_read(b"PO", &TIMEOUTS),
            DeadlineChange::Arm(TIMEOUTS.header)
        );
        assert_eq!(phase, Phase::Header { end_matched: 0 });
        assert_eq!(phase.timeout_label(), "header");
        // A whole header in one read after idling: armed and disarmed in one step.
        let mut phase = Phase::Idle;
        assert_eq!(
            phase.on_read(b"GET / HTTP/1.1\r\n\r\n", &TIMEOUTS),
            DeadlineChange::Disarm
        );
    }

    #[test]
    fn a_header_answered_without_its_crlf_crlf_is_over() {
        // hyper accepts bare LF line ends, and answers a malformed header with a 400.
        let mut phase = start();
        phase.on_read(b"GET / HTTP/1.1\n\n", &TIMEOUTS);
        assert_eq!(phase, Phase::Header { end_matched: 0 });
        assert_eq!(
            phase.on_write(&TIMEOUTS),
            DeadlineChange::Arm(TIMEOUTS.idle)
        );
        assert_eq!(phase.timeout_label(), "idle");
    }

    #[test]
    fn a_preface_lookalike_is_http1() {
        let mut phase = start();
        assert_eq!(
            phase.on_read(b"PRI * HTTP/1.1\r\n\r\n", &TIMEOUTS),
            DeadlineChange::Disarm
        );
        assert_eq!(phase, Phase::Request);
    }
}
