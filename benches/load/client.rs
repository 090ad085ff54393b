//! The client: rustls over TCP to the servers, HTTP/1.1 or h2 by ALPN, and the reviews it
//! sends.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use slo_guard_testkit::client_tls_config;

use crate::die;
use crate::options::Proto;

pub(crate) fn client_config(ca: &Path, proto: Proto) -> Arc<rustls::ClientConfig> {
    let alpn: &[u8] = match proto {
        Proto::H1 => b"http/1.1",
        Proto::H2 => b"h2",
    };
    Arc::new(client_tls_config(ca, alpn).unwrap_or_else(|e| die(&e)))
}

#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) h1: TlsConnector,
    pub(crate) h2: TlsConnector,
}

impl Tls {
    pub(crate) fn new(ca: &Path) -> Self {
        Tls {
            h1: TlsConnector::from(client_config(ca, Proto::H1)),
            h2: TlsConnector::from(client_config(ca, Proto::H2)),
        }
    }
}

pub(crate) enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) async fn connect(tls: &Tls, addr: SocketAddr, proto: Proto) -> Result<Sender, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::IpAddress(addr.ip().into());
    let connector = match proto {
        Proto::H1 => &tls.h1,
        Proto::H2 => &tls.h2,
    };
    let stream = connector.connect(name, tcp).await?;
    let negotiated = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let io = TokioIo::new(stream);
    Ok(match proto {
        Proto::H1 => {
            if negotiated.as_deref() != Some(b"http/1.1") {
                return Err(format!("ALPN: server chose {negotiated:?}, not http/1.1").into());
            }
            let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Sender::H1(sender)
        }
        Proto::H2 => {
            if negotiated.as_deref() != Some(b"h2") {
                return Err(format!("ALPN: server chose {negotiated:?}, not h2").into());
            }
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Sender::H2(sender)
        }
    })
}

/// The two requests a connection alternates between, built once.
pub(crate) struct Requests {
    pub(crate) body: Bytes,
    pub(crate) host: HeaderValue,
    pub(crate) uris: [(Uri, Uri); 2],
}

impl Requests {
    pub(crate) fn new(addr: SocketAddr, body: Bytes) -> Self {
        let uri = |proto_full: bool, path: &str| -> Uri {
            if proto_full {
                format!("https://{addr}{path}").parse().expect("uri")
            } else {
                path.parse().expect("uri")
            }
        };
        Requests {
            body,
            host: HeaderValue::from_str(&addr.to_string()).expect("host"),
            uris: [
                (uri(false, "/validate"), uri(true, "/validate")),
                (uri(false, "/mutate"), uri(true, "/mutate")),
            ],
        }
    }

    pub(crate) fn build(&self, proto: Proto, which: usize) -> Request<Full<Bytes>> {
        let (origin, absolute) = &self.uris[which % 2];
        let mut builder = Request::builder()
            .method(Method::POST)
            .header(CONTENT_TYPE, "application/json");
        builder = match proto {
            Proto::H1 => builder.uri(origin.clone()).header(HOST, self.host.clone()),
            Proto::H2 => builder.uri(absolute.clone()),
        };
        builder.body(Full::new(self.body.clone())).expect("request")
    }
}

/// One exchange: the status and the whole body.
pub(crate) async fn exchange(
    sender: &mut Sender,
    request: Request<Full<Bytes>>,
) -> Result<(u16, Bytes), BoxError> {
    let response = match sender {
        Sender::H1(s) => {
            s.ready().await?;
            s.send_request(request).await?
        }
        Sender::H2(s) => {
            s.ready().await?;
            s.send_request(request).await?
        }
    };
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Where a server answers `/readyz`: slo-guard on its operations port (plain HTTP), the
/// ceiling on its one TLS port.
#[derive(Clone, Copy)]
pub(crate) enum ReadyProbe<'a> {
    Plain(SocketAddr),
    Tls(&'a Tls, SocketAddr),
}

pub(crate) async fn get_readyz(
    probe: ReadyProbe<'_>,
    connected: &mut Option<Instant>,
) -> Result<u16, BoxError> {
    match probe {
        ReadyProbe::Tls(tls, addr) => {
            let mut sender = connect(tls, addr, Proto::H1).await?;
            connected.get_or_insert_with(Instant::now);
            let request = Request::builder()
                .method(Method::GET)
                .uri("/readyz")
                .header(HOST, addr.to_string())
                .body(Full::new(Bytes::new()))?;
            Ok(exchange(&mut sender, request).await?.0)
        }
        ReadyProbe::Plain(addr) => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            connected.get_or_insert_with(Instant::now);
            stream
                .write_all(b"GET /readyz HTTP/1.1\r\nHost: slo-guard\r\nConnection: close\r\n\r\n")
                .await?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await?;
            let status = String::from_utf8_lossy(&answer)
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse().ok())
                .unwrap_or(0);
            Ok(status)
        }
    }
}

/// Polls `/readyz` (a fresh connection every try, every 1 ms) until it answers 200.
/// Returns when the first connection was accepted and when `/readyz` said 200, both
/// from `since`.
pub(crate) async fn wait_ready(
    probe: ReadyProbe<'_>,
    since: Instant,
    limit: Duration,
) -> (Duration, Duration) {
    let mut connected = None;
    let addr = match probe {
        ReadyProbe::Plain(addr) | ReadyProbe::Tls(_, addr) => addr,
    };
    loop {
        if let Ok(200) = get_readyz(probe, &mut connected).await {
            let now = Instant::now();
            return (connected.unwrap_or(now) - since, now - since);
        }
        if since.elapsed() > limit {
            die(&format!("{addr}: /readyz not 200 after {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
