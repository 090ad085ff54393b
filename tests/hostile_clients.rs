//! The webhook port against hostile clients (issue 16): each limit is shown by what it
//! does to a real `slo-guard serve` process, over real TCP and TLS on loopback. The
//! limits are set short here; the assertions allow far more time than they need, so a
//! busy machine cannot fail them, and the metrics say which limit closed a connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

const GENEROUS: Duration = Duration::from_secs(20);

#[derive(Clone, Copy)]
enum Port {
    Webhook,
    Operations,
}

struct Serve {
    child: Child,
    port: u16,
    ops_port: u16,
    log: std::path::PathBuf,
    tls: Arc<rustls::ClientConfig>,
}

impl Serve {
    fn start(work: &Path, args: &[&str]) -> Self {
        let port = slo_guard_testkit::free_port();
        let ops_port = slo_guard_testkit::free_port();
        let certs = work.join("certs");
        let log = work.join("serve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_slo-guard"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{ops_port}")])
            .arg("--cert-dir")
            .arg(&certs)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("slo-guard starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("\"message\":\"ready\"")
        {
            assert!(Instant::now() < deadline, "slo-guard never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        let ca = std::fs::read(certs.join("ca.crt")).expect("the generated CA");
        for cert in rustls_pemfile::certs(&mut ca.as_slice()) {
            roots.add(cert.expect("CA PEM")).expect("CA");
        }
        let tls = Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        Self {
            child,
            port,
            ops_port,
            log,
            tls,
        }
    }

    fn tcp(&self) -> TcpStream {
        self.tcp_from([127, 0, 0, 1])
    }

    /// A TCP connection from another loopback address, as another client would come.
    fn tcp_from(&self, source: [u8; 4]) -> TcpStream {
        self.try_tcp_from(source).expect("connect")
    }

    /// A TCP connection from `source`, or the error of a connection reset as soon as it
    /// was made (a refused connection is reset, and the reset may come before the
    /// connect call returns).
    fn try_tcp_from(&self, source: [u8; 4]) -> std::io::Result<TcpStream> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime");
        let stream = runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind((std::net::Ipv4Addr::from(source), 0).into())?;
            socket
                .connect(([127, 0, 0, 1], self.port).into())
                .await?
                .into_std()
        })?;
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(GENEROUS))?;
        Ok(stream)
    }

    /// A TLS connection whose handshake has completed.
    fn tls(&self) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        self.try_tls().expect("TLS handshake")
    }

    /// A TLS connection, or why the handshake failed (a refused connection is reset).
    fn try_tls(&self) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let connection =
            rustls::ClientConnection::new(self.tls.clone(), name.to_owned()).expect("client");
        let mut stream = rustls::StreamOwned::new(connection, self.try_tcp_from([127, 0, 0, 1])?);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(stream)
    }

    /// One GET on a new connection, to the webhook port (TLS) or the operations port.
    /// Status 0 when no answer came (the connection was refused).
    fn get(&self, port: Port, path: &str) -> (u16, String) {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        let mut text = String::new();
        match port {
            Port::Webhook => {
                let mut stream = match self.try_tls() {
                    Ok(stream) => stream,
                    Err(error) => return (0, format!("TLS handshake: {error}")),
                };
                let _ = stream.write_all(request.as_bytes());
                let _ = stream.read_to_string(&mut text);
            }
            Port::Operations => {
                let mut stream = TcpStream::connect(("127.0.0.1", self.ops_port)).expect("connect");
                stream.write_all(request.as_bytes()).expect("request");
                let _ = stream.read_to_string(&mut text);
            }
        }
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        (status, text)
    }

    fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get(Port::Operations, "/metrics");
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

/// Whether a connection was refused: reset as it was made, or at once after. A reset,
/// not a close, so that the server keeps no TIME_WAIT entry for each refused connection.
fn refused(connection: std::io::Result<TcpStream>) -> bool {
    let reset = |error: &std::io::Error| error.kind() == std::io::ErrorKind::ConnectionReset;
    match connection {
        Err(error) => reset(&error),
        Ok(mut stream) => {
            let mut buffer = [0u8; 64];
            matches!(stream.read(&mut buffer), Err(error) if reset(&error))
        }
    }
}

/// Reads until the peer closes (or errors); how long that took.
fn closed_after(read: &mut impl Read) -> Duration {
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    loop {
        match read.read(&mut buffer) {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {}
        }
    }
}

#[test]
fn every_phase_of_a_connection_has_a_deadline() {
    let work = tempfile::tempdir().expect("work dir");
    let serve = Serve::start(
        work.path(),
        &[
            // Not shorter: a handshake on a loaded 2-core machine has taken over 1 s.
            "--tls-handshake-timeout",
            "3s",
            "--header-read-timeout",
            "1s",
            "--idle-timeout",
            "6s",
            "--request-timeout",
            "2s",
        ],
    );

    // A TCP connection that never starts TLS is closed by the handshake timeout.
    let mut silent = serve.tcp();
    let waited = closed_after(&mut silent);
    assert!(waited < GENEROUS, "a silent TCP connection stayed open");
    assert_eq!(
        serve.metric("slo_guard_connection_timeouts_total{phase=\"tls_handshake\"}"),
        1.0
    );

    // TLS, then nothing: closed before a request ever starts.
    let mut idle_tls = serve.tls();
    assert!(closed_after(&mut idle_tls) < GENEROUS);
    assert_eq!(
        serve.metric("slo_guard_connection_timeouts_total{phase=\"request_start\"}"),
        1.0
    );

    // Half a header, then a stall: closed by the header deadline, unanswered.
    let mut half = serve.tls();
    half.write_all(b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        .expect("half a header");
    half.flush().expect("flush");
    let mut answer = String::new();
    let _ = half.read_to_string(&mut answer);
    assert!(
        !answer.contains("HTTP/1.1 200"),
        "a half header was answered: {answer}"
    );
    assert_eq!(
        serve.metric("slo_guard_connection_timeouts_total{phase=\"header\"}"),
        1.0
    );

    // A keep-alive connection idle for longer than the header deadline stays open (the
    // apiserver keeps idle connections for 90 s and must be the one to close them), and
    // is closed by the idle deadline.
    let request = b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}";
    let mut keep_alive = serve.tls();
    for _ in 0..2 {
        keep_alive.write_all(request).expect("request");
        let mut first = [0u8; 512];
        let read = keep_alive.read(&mut first).expect("an answer");
        assert!(
            String::from_utf8_lossy(&first[..read]).starts_with("HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&first[..read])
        );
        std::thread::sleep(Duration::from_millis(2500));
    }
    assert!(closed_after(&mut keep_alive) < GENEROUS);
    assert_eq!(
        serve.metric("slo_guard_connection_timeouts_total{phase=\"idle\"}"),
        1.0
    );

    // A body trickled slower than the request timeout gets 408, and the connection goes.
    let mut trickle = serve.tls();
    trickle
        .write_all(
            b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{\"apiVersion\":",
        )
        .expect("header and a little body");
    trickle.flush().expect("flush");
    let mut answer = String::new();
    let _ = trickle.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("request not read and answered within 2s"),
        "{answer}"
    );
    assert_eq!(serve.metric("slo_guard_request_timeouts_total"), 1.0);

    // And through all of it the server answers.
    assert_eq!(serve.get(Port::Operations, "/healthz").0, 200);
}

#[test]
fn the_webhook_and_the_operations_routes_are_on_separate_ports() {
    let work = tempfile::tempdir().expect("work dir");
    let serve = Serve::start(work.path(), &[]);
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(serve.get(Port::Operations, path).0, 200, "{path}");
        assert_eq!(serve.get(Port::Webhook, path).0, 404, "{path}");
    }
    let (status, text) = serve.get(Port::Operations, "/validate");
    assert_eq!(status, 404, "{text}");
}

#[test]
fn connections_past_the_bounds_are_refused_and_the_rest_served() {
    let work = tempfile::tempdir().expect("work dir");
    let serve = Serve::start(
        work.path(),
        &[
            "--max-connections",
            "4",
            "--max-connections-per-ip",
            "2",
            "--tls-handshake-timeout",
            "30s",
        ],
    );
    // One client (127.0.0.2) holds its two connections, never handshaking; its third is
    // closed at once, while another client (127.0.0.3) is still let in.
    let flooder: Vec<TcpStream> = (0..2).map(|_| serve.tcp_from([127, 0, 0, 2])).collect();
    // Give the accept loop a moment to take them (the next assertion waits on a close,
    // so this sleep only orders the connections, it times nothing).
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        refused(serve.try_tcp_from([127, 0, 0, 2])),
        "the flooder's third connection was not reset"
    );
    let other: Vec<TcpStream> = (0..2).map(|_| serve.tcp_from([127, 0, 0, 3])).collect();
    std::thread::sleep(Duration::from_millis(300));
    // Now all four are taken: anyone's fifth is refused.
    assert!(
        refused(serve.try_tcp_from([127, 0, 0, 4])),
        "the fifth connection was not reset"
    );
    drop(flooder);
    drop(other);
    // With the holders gone the server serves again, and counts what it refused. It
    // takes a moment to see them go: until then a new connection is still refused.
    let deadline = Instant::now() + GENEROUS;
    loop {
        // GET of a POST route: 405, answered by the webhook port once it serves again.
        let (status, _) = serve.get(Port::Webhook, "/validate");
        if status == 405 {
            break;
        }
        assert!(Instant::now() < deadline, "never served again");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        serve.metric("slo_guard_connections_refused_total{reason=\"per_source_limit\"}"),
        1.0
    );
    // The fifth, and any retry above refused while the holders' permits were released.
    assert!(
        serve.metric("slo_guard_connections_refused_total{reason=\"connection_limit\"}") >= 1.0
    );
}
