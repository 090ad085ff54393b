//! Load benchmark: `/validate` and `/mutate` of a running `slo-guard serve` over loopback
//! TLS with keep-alive, HTTP/1.1 and h2, against a do-nothing axum+rustls server (the
//! ceiling) measured in the same run.
//!
//!     cargo bench --bench load                       # 10 s per phase, the full table
//!     cargo bench --bench load -- --seconds 5 --rate 2000 --connections 64
//!
//! What it does, all on 127.0.0.1, bounded in time, stopping by itself:
//! - makes a CA and serving certificate (`slo-guard certs`), starts a stand-in Prometheus
//!   (plain HTTP, answers from tests/load/prometheus-answers.yaml), then starts
//!   `slo-guard serve` (the binary cargo built with this bench: target/release/slo-guard
//!   under `cargo bench`) with `--policies tests/load/policies` (the SLO gate on for
//!   creates) and `--prometheus-url` pointing at the stand-in, so every review goes
//!   through the SLO gate and its cache: after the first review of each refresh interval
//!   (10 s) the answers come from the cache, never from Prometheus;
//! - measures the time from spawning the process to the first `/readyz` 200 it sees;
//! - re-executes itself as the ceiling: the same axum-server + rustls (ring) stack, TLS
//!   config, TCP_NODELAY and allocator (mimalloc), whose handler reads the review and
//!   answers `allowed`. `--ceiling-parse kube` (the default) reads it as a do-nothing
//!   kube-rs webhook does, into `AdmissionReview<DynamicObject>`; `--ceiling-parse
//!   slo-guard` with slo-guard's own `parse_review`, so that the ratio leaves out what
//!   slo-guard saves by reading less;
//! - sends the captured Deployment CREATE (tests/fixtures/captured/deployment-create.json,
//!   compacted as the apiserver sends it: 8,650 bytes), alternating `/validate` and
//!   `/mutate` on every connection;
//! - saturation: `--connections` (64) connections, one request in flight on each, as fast
//!   as they go for `--seconds` after `--warmup`; throughput and latency (a queue);
//! - steady: `--rate` (2,000) reviews/s on a fixed schedule spread over the same number
//!   of connections; latency is measured from each request's scheduled send time, so a
//!   request that waits for a connection or for the server counts the wait
//!   (coordinated omission). A request "missed its slot" when it was sent more than one
//!   interval (1/rate) after its scheduled time;
//! - server RSS (`/proc/<pid>/status`): idle after start, the peak sampled every 50 ms
//!   under load, and VmHWM; server and client CPU time per phase.
//!
//! Cores: by default (`--cpus pinned`, on a machine with 2 or more CPUs) the servers run
//! with one worker thread (`serve --worker-threads 1`, the ceiling likewise) pinned to
//! CPU 0, and this client, a one-thread tokio runtime plus a dispatcher thread for the
//! steady schedule, is pinned to CPU 1. `--cpus shared` pins nothing: the same threads
//! float over all CPUs. `--server-threads N` changes the servers' worker threads. The
//! stderr of `slo-guard serve` (its JSON decision log, one line per review) is read by a
//! thread of this client. `--fifo` (root) runs the client and the servers it starts with
//! SCHED_FIFO, so that other processes on a shared machine (a fuzzer at nice 19) cannot
//! delay them: a diagnostic, not the headline figure.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it is a smoke run of about a
//! second with the debug binary: the same phases, a few connections, no timed checks,
//! only that every review is answered 200 with `allowed: true`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use slo_guard_testkit::{free_port, root};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

// The same allocator as `slo-guard serve`, for the ceiling (this binary, re-executed) and
// the client alike: the comparison is of the work, not of the allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const REVIEW: &str = "tests/fixtures/captured/deployment-create.json";
const POLICIES: &str = "tests/load/policies";
const ANSWERS: &str = "tests/load/prometheus-answers.yaml";
const CEILING_FLAG: &str = "--ceiling-server";

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    H1,
    H2,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::H1 => "http/1.1",
            Proto::H2 => "h2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Saturation,
    Steady,
}

#[derive(Debug, Clone)]
struct Options {
    full: bool,
    seconds: f64,
    warmup: f64,
    connections: usize,
    rate: f64,
    protocols: Vec<Proto>,
    modes: Vec<Mode>,
    pinned: bool,
    /// SCHED_FIFO for this client and the servers it starts (a diagnostic; needs root).
    fifo: bool,
    server_threads: usize,
    starts: usize,
    ceiling: bool,
    /// How the ceiling reads the review: `kube` (kube-rs's `AdmissionReview<DynamicObject>`,
    /// what a do-nothing kube-rs webhook does) or `slo-guard` (slo-guard's own reader).
    ceiling_parse: String,
    server_args: Vec<String>,
    /// An already running server instead of one started here (with `--ca` and `--pid`).
    external: Option<(SocketAddr, PathBuf, Option<u32>)>,
}

const USAGE: &str = "cargo bench --bench load -- [--seconds S] [--warmup S] [--connections N] \
[--rate R] [--protocols h1,h2] [--modes saturation,steady] [--cpus pinned|shared] \
[--server-threads N] [--starts N] [--no-ceiling] [--ceiling-parse kube|slo-guard] [--fifo] \
[--server-arg ARG]... \
[--addr HOST:PORT --ca CA.pem [--pid PID]]";

impl Options {
    fn parse(args: &[String]) -> Options {
        let full = args.iter().any(|a| a == "--bench");
        let multi_cpu = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
        let mut o = if full {
            Options {
                full,
                seconds: 10.0,
                warmup: 2.0,
                connections: 64,
                rate: 2000.0,
                protocols: vec![Proto::H1, Proto::H2],
                modes: vec![Mode::Saturation, Mode::Steady],
                pinned: multi_cpu,
                fifo: false,
                server_threads: 1,
                starts: 5,
                ceiling: true,
                ceiling_parse: "kube".to_string(),
                server_args: Vec::new(),
                external: None,
            }
        } else {
            Options {
                full,
                seconds: 0.1,
                warmup: 0.03,
                connections: 4,
                rate: 200.0,
                protocols: vec![Proto::H1, Proto::H2],
                modes: vec![Mode::Saturation, Mode::Steady],
                pinned: false,
                fifo: false,
                server_threads: 1,
                starts: 1,
                ceiling: true,
                ceiling_parse: "kube".to_string(),
                server_args: Vec::new(),
                external: None,
            }
        };
        let (mut addr, mut ca, mut pid) = (None, None, None);
        let mut it = args.iter().skip(1);
        while let Some(arg) = it.next() {
            let mut value = |name: &str| -> String {
                it.next()
                    .cloned()
                    .unwrap_or_else(|| die(&format!("{name} needs a value")))
            };
            match arg.as_str() {
                "--bench" => {}
                "--seconds" => o.seconds = number(&value("--seconds")),
                "--warmup" => o.warmup = number(&value("--warmup")),
                "--connections" => o.connections = number(&value("--connections")) as usize,
                "--rate" => o.rate = number(&value("--rate")),
                "--server-threads" => {
                    o.server_threads = number(&value("--server-threads")) as usize
                }
                "--starts" => o.starts = number(&value("--starts")) as usize,
                "--no-ceiling" => o.ceiling = false,
                "--ceiling-parse" => {
                    o.ceiling_parse = value("--ceiling-parse");
                    if !["kube", "slo-guard"].contains(&o.ceiling_parse.as_str()) {
                        die("--ceiling-parse: expected kube or slo-guard");
                    }
                }
                "--fifo" => o.fifo = true,
                "--server-arg" => o.server_args.push(value("--server-arg")),
                "--addr" => addr = Some(value("--addr")),
                "--ca" => ca = Some(PathBuf::from(value("--ca"))),
                "--pid" => pid = Some(number(&value("--pid")) as u32),
                "--cpus" => {
                    o.pinned = match value("--cpus").as_str() {
                        "pinned" => true,
                        "shared" => false,
                        other => die(&format!("--cpus {other}: expected pinned or shared")),
                    }
                }
                "--protocols" => {
                    o.protocols = value("--protocols")
                        .split(',')
                        .map(|p| match p {
                            "h1" | "http1" | "http/1.1" => Proto::H1,
                            "h2" => Proto::H2,
                            other => die(&format!("unknown protocol {other}")),
                        })
                        .collect()
                }
                "--modes" => {
                    o.modes = value("--modes")
                        .split(',')
                        .map(|m| match m {
                            "saturation" => Mode::Saturation,
                            "steady" => Mode::Steady,
                            other => die(&format!("unknown mode {other}")),
                        })
                        .collect()
                }
                "-h" | "--help" => {
                    println!("usage: {USAGE}");
                    std::process::exit(0);
                }
                // `cargo bench <filter>` hands its filter to every bench; `cargo test`
                // may hand over harness flags. Neither means anything here.
                other if !full || !other.starts_with("--") => {}
                other => die(&format!("unknown option {other}\nusage: {USAGE}")),
            }
        }
        if let Some(addr) = addr {
            let addr = addr
                .parse::<SocketAddr>()
                .unwrap_or_else(|e| die(&format!("--addr {addr}: {e}")));
            if !addr.ip().is_loopback() {
                die("--addr must be a loopback address");
            }
            let ca =
                ca.unwrap_or_else(|| die("--addr needs --ca (the CA that signed its certificate)"));
            o.external = Some((addr, ca, pid));
        }
        if o.seconds <= 0.0 || o.seconds > 600.0 {
            die("--seconds must be in (0, 600]");
        }
        if o.warmup < 0.0 || o.warmup > 60.0 {
            die("--warmup must be in [0, 60]");
        }
        if o.connections == 0 || o.connections > 1024 {
            die("--connections must be in 1..=1024");
        }
        if o.rate <= 0.0 || o.rate > 200_000.0 {
            die("--rate must be in (0, 200000]");
        }
        o.server_threads = o.server_threads.max(1);
        o
    }
}

fn number(text: &str) -> f64 {
    text.parse::<f64>()
        .unwrap_or_else(|_| die(&format!("not a number: {text}")))
}

fn die(message: &str) -> ! {
    eprintln!("load: {message}");
    std::process::exit(2);
}

// ---------------------------------------------------------------------------------------
// CPUs, processes, /proc
// ---------------------------------------------------------------------------------------

fn pin_current_thread_group_to(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in its bounds.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// SCHED_FIFO at priority 10 for this process; threads and child processes started
/// afterwards inherit it. Other processes (a fuzzer at nice 19, say) then never delay a
/// runnable client or server thread. The kernel's RT throttling still leaves them 5%.
fn real_time_fifo() -> std::io::Result<()> {
    // SAFETY: sched_param is plain data; sched_setscheduler has no other preconditions.
    unsafe {
        let param = libc::sched_param { sched_priority: 10 };
        if libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Lets `std::thread::sleep` wake within microseconds instead of the default 50 µs slack.
fn tight_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time and run-queue wait of a process, summed over its threads
/// (`/proc/<pid>/task/*/schedstat`), in seconds. The wait is time a thread was runnable
/// but not running: CPU taken by someone else.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    cpu: f64,
    wait: f64,
}

fn usage(pid: Option<u32>) -> Option<Usage> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}/task"),
        None => "/proc/self/task".to_string(),
    };
    let mut total = Usage::default();
    for entry in std::fs::read_dir(dir).ok()? {
        let Ok(entry) = entry else { continue };
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        let mut fields = text
            .split_whitespace()
            .map(|f| f.parse::<f64>().unwrap_or(0.0));
        total.cpu += fields.next().unwrap_or(0.0) / 1e9;
        total.wait += fields.next().unwrap_or(0.0) / 1e9;
    }
    Some(total)
}

fn used_since(pid: Option<u32>, before: Option<Usage>) -> Option<Usage> {
    let (now, before) = (usage(pid)?, before?);
    Some(Usage {
        cpu: now.cpu - before.cpu,
        wait: now.wait - before.wait,
    })
}

/// Steal time of the whole machine (`/proc/stat`): CPU the hypervisor gave to others.
fn steal() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: f64 = line.split_whitespace().nth(8)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(Duration::from_secs_f64(ticks / per_second))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A server process this bench started. Its stderr (slo-guard's JSON log, one line per
/// decision) is drained by a thread that counts lines and keeps the few it needs.
struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    log: Arc<LogTap>,
}

#[derive(Default)]
struct LogTap {
    lines: AtomicU64,
    kept: Mutex<Vec<String>>,
    tail: Mutex<Vec<String>>,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) {
        // SAFETY: kill with a pid of a child we own.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
            }
        }
    }

    fn ready_ms_logged(&self) -> Option<u64> {
        let kept = self.log.kept.lock().unwrap();
        let line = kept.iter().find(|l| l.contains("\"message\":\"ready\""))?;
        let after = &line[line.find("\"ready_ms\":")? + 11..];
        after
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    }
}

fn spawn_logged(
    name: &'static str,
    mut command: Command,
    cpu: Option<usize>,
    addr: SocketAddr,
) -> Server {
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    if let Some(cpu) = cpu {
        use std::os::unix::process::CommandExt;
        // SAFETY: only sched_setaffinity, async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(move || pin_current_thread_group_to(cpu));
        }
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| die(&format!("cannot start {name}: {e}")));
    let stderr = child.stderr.take().expect("piped stderr");
    let log = Arc::new(LogTap::default());
    let tap = log.clone();
    std::thread::spawn(move || {
        let mut reader = BufReader::with_capacity(1 << 16, stderr);
        let mut line = Vec::with_capacity(1024);
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let n = tap.lines.fetch_add(1, Ordering::Relaxed);
                    let keep = n < 64 || !line.windows(10).any(|w| w == b"\"decision\"");
                    if keep {
                        let text = String::from_utf8_lossy(&line).trim_end().to_string();
                        let mut kept = tap.kept.lock().unwrap();
                        if kept.len() < 256 {
                            kept.push(text.clone());
                        }
                        let mut tail = tap.tail.lock().unwrap();
                        tail.push(text);
                        if tail.len() > 20 {
                            tail.remove(0);
                        }
                    }
                }
            }
        }
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
    });
    Server {
        name,
        child,
        addr,
        log,
    }
}

struct Certs {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_certs(bin: &Path) -> Certs {
    let dir = tempfile::tempdir().unwrap_or_else(|e| die(&format!("tempdir: {e}")));
    let out = dir.path().join("certs");
    let status = Command::new(bin)
        .args(["certs", "--out-dir"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| die(&format!("{}: {e}", bin.display())));
    if !status.success() {
        die(&format!("slo-guard certs failed: {status}"));
    }
    Certs {
        ca: out.join("ca.crt"),
        cert: out.join("tls.crt"),
        key: out.join("tls.key"),
        _dir: dir,
    }
}

// ---------------------------------------------------------------------------------------
// TLS client
// ---------------------------------------------------------------------------------------

fn client_config(ca: &Path, proto: Proto) -> Arc<rustls::ClientConfig> {
    let pem = std::fs::read(ca).unwrap_or_else(|e| die(&format!("{}: {e}", ca.display())));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots
            .add(cert.unwrap_or_else(|e| die(&format!("{}: {e}", ca.display()))))
            .unwrap_or_else(|e| die(&format!("{}: {e}", ca.display())));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![match proto {
        Proto::H1 => b"http/1.1".to_vec(),
        Proto::H2 => b"h2".to_vec(),
    }];
    Arc::new(config)
}

#[derive(Clone)]
struct Tls {
    h1: TlsConnector,
    h2: TlsConnector,
}

impl Tls {
    fn new(ca: &Path) -> Self {
        Tls {
            h1: TlsConnector::from(client_config(ca, Proto::H1)),
            h2: TlsConnector::from(client_config(ca, Proto::H2)),
        }
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn connect(tls: &Tls, addr: SocketAddr, proto: Proto) -> Result<Sender, BoxError> {
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
struct Requests {
    body: Bytes,
    host: HeaderValue,
    uris: [(Uri, Uri); 2],
}

impl Requests {
    fn new(addr: SocketAddr, body: Bytes) -> Self {
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

    fn build(&self, proto: Proto, which: usize) -> Request<Full<Bytes>> {
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
async fn exchange(
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
enum ReadyProbe<'a> {
    Plain(SocketAddr),
    Tls(&'a Tls, SocketAddr),
}

async fn get_readyz(
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
async fn wait_ready(
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

// ---------------------------------------------------------------------------------------
// Stand-in Prometheus and the ceiling server
// ---------------------------------------------------------------------------------------

fn form_value(form: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(form.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[derive(Default)]
struct Stand {
    answers: BTreeMap<String, f64>,
    served: AtomicU64,
    unknown: Mutex<Vec<String>>,
}

fn prometheus_answer(stand: &Stand, query: Option<String>) -> axum::response::Response {
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

async fn start_prometheus(answers_file: &Path) -> (SocketAddr, Arc<Stand>) {
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
fn ceiling_server(args: &[String]) -> ! {
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

// ---------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------

struct Sample {
    /// Completion minus the reference instant (send start, or scheduled send time).
    latency: Duration,
    /// Steady mode: actual send start minus scheduled time.
    lag: Duration,
    /// Steady mode: when the dispatcher released the request minus its scheduled time.
    dispatch: Duration,
}

#[derive(Default)]
struct Outcome {
    samples: Vec<Sample>,
    /// Answered 200 within the measured window (the throughput).
    completed: u64,
    /// Answered 200 at any time, warm-up included: every connection answers at least
    /// once whatever the timing, so the smoke check on it cannot fail on a slow machine.
    answered: u64,
    errors: u64,
    first_error: Option<String>,
    not_allowed: u64,
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.samples.extend(other.samples);
        self.completed += other.completed;
        self.answered += other.answered;
        self.errors += other.errors;
        self.not_allowed += other.not_allowed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn record(&mut self, result: Result<(u16, Bytes), BoxError>, uid: &str, check: bool) -> bool {
        match result {
            Ok((200, body)) => {
                self.answered += 1;
                // Only a few bodies are read closely; a review is "allowed" when the body
                // carries the request's uid and `"allowed":true`.
                if check {
                    let text = String::from_utf8_lossy(&body);
                    if !(text.contains(uid) && text.contains("\"allowed\":true")) {
                        self.not_allowed += 1;
                        if self.first_error.is_none() {
                            self.first_error = Some(format!("not allowed: {}", clip(&text)));
                        }
                    }
                }
                true
            }
            Ok((status, body)) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(format!(
                        "HTTP {status}: {}",
                        clip(&String::from_utf8_lossy(&body))
                    ));
                }
                false
            }
            Err(error) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(error.to_string());
                }
                false
            }
        }
    }
}

fn clip(text: &str) -> String {
    text.chars().take(300).collect()
}

struct PhaseResult {
    server: &'static str,
    proto: Proto,
    mode: Mode,
    connections: usize,
    offered: Option<f64>,
    elapsed: Duration,
    outcome: Outcome,
    server_cpu: Option<Usage>,
    client_cpu: Option<Usage>,
    /// CPU time the hypervisor took from this VM during the phase (all CPUs).
    steal: Option<Duration>,
    rss_peak_kib: Option<u64>,
    missed: u64,
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

struct Target<'a> {
    name: &'static str,
    addr: SocketAddr,
    pid: Option<u32>,
    tls: &'a Tls,
}

async fn open_connections(target: &Target<'_>, proto: Proto, n: usize) -> Vec<Sender> {
    let attempts = (0..n).map(|_| connect(target.tls, target.addr, proto));
    futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|e| die(&format!("{}: connect ({}): {e}", target.name, proto.name())))
        })
        .collect()
}

/// Samples the server's VmRSS every 50 ms until `stop`; the peak seen.
fn rss_sampler(pid: Option<u32>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Option<u64>> {
    tokio::spawn(async move {
        let pid = pid?;
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Some(kib) = status_kib(pid, "VmRSS:") {
                peak = peak.max(kib);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(kib) = status_kib(pid, "VmRSS:") {
            peak = peak.max(kib);
        }
        Some(peak)
    })
}

/// One keep-alive connection of a phase, and what was seen on it.
struct Connection {
    sender: Sender,
    tls: Tls,
    addr: SocketAddr,
    proto: Proto,
    uid: Arc<str>,
    index: usize,
    /// Requests sent so far, counted from `index`.
    n: usize,
    outcome: Outcome,
}

/// One request on a [`Connection`]: whether it was answered as expected, when it was sent
/// and answered, and whether the connection is still usable.
struct Exchanged {
    ok: bool,
    sent: Instant,
    done: Instant,
    connected: bool,
}

impl Connection {
    fn new(
        target: &Target<'_>,
        proto: Proto,
        uid: &Arc<str>,
        index: usize,
        sender: Sender,
    ) -> Self {
        Self {
            sender,
            tls: target.tls.clone(),
            addr: target.addr,
            proto,
            uid: uid.clone(),
            index,
            n: index,
            outcome: Outcome::default(),
        }
    }

    /// Sends `request` and records the answer, read in full for the first few and every
    /// 97th. A failed exchange may have broken the connection: a new one replaces it.
    async fn send(&mut self, request: Request<Full<Bytes>>) -> Exchanged {
        let sent = Instant::now();
        let result = exchange(&mut self.sender, request).await;
        let done = Instant::now();
        let check = self.n < self.index + 4 || self.n % 97 == 0;
        self.n += 1;
        let ok = self.outcome.record(result, &self.uid, check);
        let mut connected = true;
        if !ok {
            match connect(&self.tls, self.addr, self.proto).await {
                Ok(fresh) => self.sender = fresh,
                Err(_) => connected = false,
            }
        }
        Exchanged {
            ok,
            sent,
            done,
            connected,
        }
    }
}

/// The server's and this client's CPU time, the VM's steal time and the server's RSS peak
/// over a phase's measured part.
struct Meter {
    pid: Option<u32>,
    server_cpu: Option<Usage>,
    client_cpu: Option<Usage>,
    steal: Option<Duration>,
    stop_rss: Arc<AtomicBool>,
    rss: tokio::task::JoinHandle<Option<u64>>,
}

struct Metered {
    server_cpu: Option<Usage>,
    client_cpu: Option<Usage>,
    steal: Option<Duration>,
    rss_peak_kib: Option<u64>,
}

impl Meter {
    fn start(pid: Option<u32>) -> Self {
        let stop_rss = Arc::new(AtomicBool::new(false));
        Self {
            pid,
            rss: rss_sampler(pid, stop_rss.clone()),
            stop_rss,
            server_cpu: pid.and_then(|p| usage(Some(p))),
            client_cpu: usage(None),
            steal: steal(),
        }
    }

    async fn stop(self) -> Metered {
        let server_cpu = self.pid.and_then(|p| used_since(Some(p), self.server_cpu));
        let client_cpu = used_since(None, self.client_cpu);
        let steal = steal()
            .zip(self.steal)
            .map(|(now, before)| now.saturating_sub(before));
        self.stop_rss.store(true, Ordering::Relaxed);
        Metered {
            server_cpu,
            client_cpu,
            steal,
            rss_peak_kib: self.rss.await.ok().flatten(),
        }
    }
}

async fn saturation(
    target: &Target<'_>,
    proto: Proto,
    o: &Options,
    requests: &Arc<Requests>,
    uid: &Arc<str>,
) -> PhaseResult {
    let senders = open_connections(target, proto, o.connections).await;
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let mut tasks = Vec::new();
    for (index, sender) in senders.into_iter().enumerate() {
        let phase = phase.clone();
        let requests = requests.clone();
        let mut connection = Connection::new(target, proto, uid, index, sender);
        tasks.push(tokio::spawn(async move {
            loop {
                let before = phase.load(Ordering::Relaxed);
                if before == STOP {
                    break;
                }
                let request = requests.build(proto, connection.n);
                let exchanged = connection.send(request).await;
                if exchanged.ok && phase.load(Ordering::Relaxed) == MEASURE {
                    connection.outcome.completed += 1;
                    if before == MEASURE {
                        connection.outcome.samples.push(Sample {
                            latency: exchanged.done - exchanged.sent,
                            lag: Duration::ZERO,
                            dispatch: Duration::ZERO,
                        });
                    }
                }
                if !exchanged.connected {
                    break;
                }
            }
            connection.outcome
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(o.warmup)).await;
    let meter = Meter::start(target.pid);
    let started = Instant::now();
    phase.store(MEASURE, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(o.seconds)).await;
    phase.store(STOP, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let metered = meter.stop().await;
    let mut outcome = Outcome::default();
    for task in tasks {
        outcome.merge(task.await.expect("connection task"));
    }
    PhaseResult {
        server: target.name,
        proto,
        mode: Mode::Saturation,
        connections: o.connections,
        offered: None,
        elapsed,
        outcome,
        server_cpu: metered.server_cpu,
        client_cpu: metered.client_cpu,
        steal: metered.steal,
        rss_peak_kib: metered.rss_peak_kib,
        missed: 0,
    }
}

struct Job {
    seq: u64,
    due: Instant,
    released: Instant,
}

async fn steady(
    target: &Target<'_>,
    proto: Proto,
    o: &Options,
    requests: &Arc<Requests>,
    uid: &Arc<str>,
) -> PhaseResult {
    let senders = open_connections(target, proto, o.connections).await;
    let period = Duration::from_secs_f64(1.0 / o.rate);
    let warmup_jobs = (o.rate * o.warmup).round() as u64;
    let measured_jobs = (o.rate * o.seconds).round().max(1.0) as u64;
    let total = warmup_jobs + measured_jobs;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let measuring = Arc::new(AtomicBool::new(false));

    let mut tasks = Vec::new();
    for (index, sender) in senders.into_iter().enumerate() {
        let rx = rx.clone();
        let requests = requests.clone();
        let mut connection = Connection::new(target, proto, uid, index, sender);
        tasks.push(tokio::spawn(async move {
            loop {
                let job = { rx.lock().await.recv().await };
                let Some(job) = job else { break };
                let request = requests.build(proto, job.seq as usize);
                let exchanged = connection.send(request).await;
                if job.seq >= warmup_jobs {
                    if exchanged.ok {
                        connection.outcome.completed += 1;
                    }
                    connection.outcome.samples.push(Sample {
                        latency: exchanged.done - job.due,
                        lag: exchanged.sent.saturating_duration_since(job.due),
                        dispatch: job.released.saturating_duration_since(job.due),
                    });
                }
                if !exchanged.connected {
                    break;
                }
            }
            connection.outcome
        }));
    }

    // The schedule is kept by a plain thread sleeping to each due time (1 ns timer slack),
    // not by the runtime's 1 ms timer wheel.
    let flag = measuring.clone();
    let dispatcher = std::thread::spawn(move || {
        tight_timer_slack();
        let start = Instant::now() + Duration::from_millis(20);
        let mut measure_started = None;
        for seq in 0..total {
            let due = start + period.mul_f64(seq as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if seq == warmup_jobs {
                flag.store(true, Ordering::Relaxed);
                measure_started = Some(due);
            }
            if tx
                .send(Job {
                    seq,
                    due,
                    released: Instant::now(),
                })
                .is_err()
            {
                break;
            }
        }
        measure_started
    });

    while !measuring.load(Ordering::Relaxed) && !dispatcher.is_finished() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let meter = Meter::start(target.pid);
    let mut outcome = Outcome::default();
    for task in tasks {
        outcome.merge(task.await.expect("connection task"));
    }
    let metered = meter.stop().await;
    let measure_started = dispatcher
        .join()
        .expect("dispatcher")
        .unwrap_or_else(Instant::now);
    let elapsed = measure_started.elapsed();
    let missed = outcome.samples.iter().filter(|s| s.lag > period).count() as u64;
    PhaseResult {
        server: target.name,
        proto,
        mode: Mode::Steady,
        connections: o.connections,
        offered: Some(o.rate),
        elapsed,
        outcome,
        server_cpu: metered.server_cpu,
        client_cpu: metered.client_cpu,
        steal: metered.steal,
        rss_peak_kib: metered.rss_peak_kib,
        missed,
    }
}

// ---------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank: the smallest value with at least q of the samples at or below it.
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

struct Row {
    throughput: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
}

fn print_phase(r: &PhaseResult) -> Row {
    let mut latencies: Vec<Duration> = r.outcome.samples.iter().map(|s| s.latency).collect();
    latencies.sort_unstable();
    let throughput = r.outcome.completed as f64 / r.elapsed.as_secs_f64();
    let row = Row {
        throughput,
        p50: quantile(&latencies, 0.50),
        p99: quantile(&latencies, 0.99),
        p999: quantile(&latencies, 0.999),
    };
    let wall = r.elapsed.as_secs_f64();
    let cpu = |c: Option<Usage>| {
        c.map(|c| format!("{:.0}%/{:.0}%", 100.0 * c.cpu / wall, 100.0 * c.wait / wall))
            .unwrap_or_else(|| "-".into())
    };
    let mode = match (r.mode, r.offered) {
        (Mode::Saturation, _) => "saturation".to_string(),
        (Mode::Steady, Some(rate)) => format!("steady {rate:.0}/s"),
        (Mode::Steady, None) => "steady".to_string(),
    };
    println!(
        "{:<10} {:<8} {:<13} {:>5} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6} {:>9} {:>9} {:>10} {:>8}",
        r.server,
        r.proto.name(),
        mode,
        r.connections,
        throughput,
        ms(row.p50),
        ms(row.p99),
        ms(row.p999),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
        r.outcome.completed,
        r.outcome.errors + r.outcome.not_allowed,
        cpu(r.server_cpu),
        cpu(r.client_cpu),
        r.rss_peak_kib.map(mib).unwrap_or_else(|| "-".into()),
        r.steal
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0))
            .unwrap_or_else(|| "-".into()),
    );
    row
}

fn print_steady_detail(r: &PhaseResult) {
    let mut lags: Vec<Duration> = r.outcome.samples.iter().map(|s| s.lag).collect();
    let mut dispatch: Vec<Duration> = r.outcome.samples.iter().map(|s| s.dispatch).collect();
    // Latency from when the dispatcher released the request: the scheduled-time latency
    // without the dispatcher's own lateness (a stalled client), still with every wait for
    // a connection or for the server.
    let mut released: Vec<Duration> = r
        .outcome
        .samples
        .iter()
        .map(|s| s.latency.saturating_sub(s.dispatch))
        .collect();
    lags.sort_unstable();
    dispatch.sort_unstable();
    released.sort_unstable();
    println!(
        "  {} {}: {} of {} requests missed their slot (sent > {} ms after the scheduled time); send lag p50 {} p99 {} max {} ms; dispatcher lateness p50 {} p99 {} max {} ms; latency from release p99 {} p99.9 {} ms",
        r.server,
        r.proto.name(),
        r.missed,
        r.outcome.samples.len(),
        ms(Duration::from_secs_f64(1.0 / r.offered.unwrap_or(1.0))),
        ms(quantile(&lags, 0.5)),
        ms(quantile(&lags, 0.99)),
        ms(*lags.last().unwrap_or(&Duration::ZERO)),
        ms(quantile(&dispatch, 0.5)),
        ms(quantile(&dispatch, 0.99)),
        ms(*dispatch.last().unwrap_or(&Duration::ZERO)),
        ms(quantile(&released, 0.99)),
        ms(quantile(&released, 0.999)),
    );
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

// ---------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == CEILING_FLAG) {
        ceiling_server(&args[at + 1..]);
    }
    let o = Options::parse(&args);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (server_cpu, client_cpu) = if o.pinned && cpus >= 2 {
        (Some(0), Some(1))
    } else {
        (None, None)
    };
    if let Some(cpu) = client_cpu {
        pin_current_thread_group_to(cpu).unwrap_or_else(|e| die(&format!("pin to CPU {cpu}: {e}")));
    }
    if o.fifo && o.modes.contains(&Mode::Saturation) {
        eprintln!(
            "load: --fifo with saturation: the kernel's RT throttling pauses a saturated FIFO server for tens of ms each second; use --fifo with --modes steady"
        );
    }
    if o.fifo {
        real_time_fifo().unwrap_or_else(|e| die(&format!("--fifo: SCHED_FIFO: {e}")));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    runtime.block_on(run(o, server_cpu, client_cpu, cpus));
    println!("load: done in {:.1} s", started.elapsed().as_secs_f64());
}

async fn run(o: Options, server_cpu: Option<usize>, client_cpu: Option<usize>, cpus: usize) {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_slo-guard"));
    let raw = std::fs::read(root().join(REVIEW)).unwrap_or_else(|e| die(&format!("{REVIEW}: {e}")));
    let value: serde_json::Value = serde_json::from_slice(&raw).expect("review JSON");
    let uid: Arc<str> = value["request"]["uid"].as_str().expect("review uid").into();
    let body = Bytes::from(serde_json::to_vec(&value).expect("compact JSON"));

    println!(
        "load: {} mode; machine: {cpus} CPUs, {}; load average {} at start",
        if o.full { "full" } else { "smoke (no --bench)" },
        cpu_model(),
        loadavg()
    );
    println!(
        "load: review {REVIEW} ({} bytes compact), /validate and /mutate alternating; server binary {}",
        body.len(),
        bin.display()
    );
    println!(
        "load: cores: {}; server worker threads {}; client: one-thread tokio runtime{}; scheduling: {}",
        match (server_cpu, client_cpu) {
            (Some(s), Some(c)) => format!("servers pinned to CPU {s}, client pinned to CPU {c}"),
            _ => "nothing pinned".to_string(),
        },
        o.server_threads,
        if o.modes.contains(&Mode::Steady) {
            " + a dispatcher thread for the steady schedule"
        } else {
            ""
        },
        if o.fifo {
            "SCHED_FIFO 10 (--fifo), client and servers"
        } else {
            "normal (SCHED_OTHER, nice 0)"
        }
    );
    if o.ceiling && o.external.is_none() {
        println!(
            "load: ceiling reads the review with {}",
            match o.ceiling_parse.as_str() {
                "kube" => "kube-rs's AdmissionReview<DynamicObject> (--ceiling-parse kube)",
                _ => "slo-guard's parse_review (--ceiling-parse slo-guard)",
            }
        );
    }

    // The server under test: started here, or given.
    let mut ready_times = Vec::new();
    let mut start_detail = Vec::new();
    let mut logged_ready = Vec::new();
    let mut idle_at_ready = Vec::new();
    let (tls, addr, pid, server, _certs, stand) = match &o.external {
        Some((addr, ca, pid)) => (Tls::new(ca), *addr, *pid, None, None, None),
        None => {
            let certs = make_certs(&bin);
            let tls = Tls::new(&certs.ca);
            let (prometheus, stand) = start_prometheus(&root().join(ANSWERS)).await;
            let start = |threads: usize| -> (Server, SocketAddr) {
                let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), free_port());
                let ops = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), free_port());
                let mut command = Command::new(&bin);
                command
                    .arg("serve")
                    .arg("--listen")
                    .arg(addr.to_string())
                    .arg("--metrics-listen")
                    .arg(ops.to_string())
                    .arg("--tls-cert")
                    .arg(&certs.cert)
                    .arg("--tls-key")
                    .arg(&certs.key)
                    .arg("--policies")
                    .arg(root().join(POLICIES))
                    .arg("--prometheus-url")
                    .arg(format!("http://{prometheus}"))
                    .arg("--worker-threads")
                    .arg(threads.to_string())
                    .args(&o.server_args);
                (spawn_logged("slo-guard", command, server_cpu, addr), ops)
            };
            // Every start but the last is only timed; the last one serves the load.
            let mut kept = None;
            for round in 0..o.starts.max(1) {
                let since = Instant::now();
                let (server, ops) = start(o.server_threads);
                let spawned = since.elapsed();
                let (connected, ready) =
                    wait_ready(ReadyProbe::Plain(ops), since, Duration::from_secs(60)).await;
                ready_times.push(ready);
                start_detail.push((spawned, connected));
                logged_ready.push(server.ready_ms_logged());
                idle_at_ready.push(status_kib(server.pid(), "VmRSS:"));
                if round + 1 == o.starts.max(1) {
                    kept = Some(server);
                } else {
                    server.stop();
                }
            }
            let server = kept.expect("a server");
            (
                tls,
                server.addr,
                Some(server.pid()),
                Some(server),
                Some(certs),
                Some(stand),
            )
        }
    };

    // Idle: after start, and after a first review has warmed the SLO cache.
    let requests = Arc::new(Requests::new(addr, body.clone()));
    {
        let mut sender = connect(&tls, addr, Proto::H1)
            .await
            .unwrap_or_else(|e| die(&format!("connect: {e}")));
        for which in 0..2 {
            let mut outcome = Outcome::default();
            outcome.record(
                exchange(&mut sender, requests.build(Proto::H1, which)).await,
                &uid,
                true,
            );
            if outcome.errors + outcome.not_allowed > 0 {
                die(&format!(
                    "slo-guard does not allow the review: {}",
                    outcome.first_error.unwrap_or_default()
                ));
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(if o.full { 1000 } else { 50 })).await;
    let idle_rss = pid.and_then(|p| status_kib(p, "VmRSS:"));

    // The ceiling, in its own process on the servers' CPU.
    let ceiling = if o.ceiling && o.external.is_none() {
        let certs = _certs.as_ref().expect("certs");
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), free_port());
        let mut command = Command::new(std::env::current_exe().expect("current exe"));
        command
            .arg(CEILING_FLAG)
            .arg(addr.to_string())
            .arg(&certs.cert)
            .arg(&certs.key)
            .arg(o.server_threads.to_string())
            .arg(&o.ceiling_parse);
        let server = spawn_logged("ceiling", command, server_cpu, addr);
        wait_ready(
            ReadyProbe::Tls(&tls, addr),
            Instant::now(),
            Duration::from_secs(60),
        )
        .await;
        Some(server)
    } else {
        None
    };
    let ceiling_requests = ceiling
        .as_ref()
        .map(|c| Arc::new(Requests::new(c.addr, body.clone())));

    let guard_target = Target {
        name: "slo-guard",
        addr,
        pid,
        tls: &tls,
    };
    let ceiling_target = ceiling.as_ref().map(|c| Target {
        name: c.name,
        addr: c.addr,
        pid: Some(c.pid()),
        tls: &tls,
    });

    println!(
        "load: {} s per phase after {} s warm-up; {} connections; steady rate {}/s; load average {} before the phases",
        o.seconds,
        o.warmup,
        o.connections,
        o.rate,
        loadavg()
    );
    println!(
        "load: srv/cli CPU = CPU time / run-queue wait of the server / this client over the phase, in % of one CPU; steal = CPU time the hypervisor took from this VM during the phase"
    );
    println!();
    println!(
        "{:<10} {:<8} {:<13} {:>5} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6} {:>9} {:>9} {:>10} {:>8}",
        "server",
        "proto",
        "mode",
        "conns",
        "reviews/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "n",
        "errors",
        "srv CPU",
        "cli CPU",
        "srv RSS pk",
        "steal ms"
    );
    let mut results: Vec<(PhaseResult, Row)> = Vec::new();
    for &mode in &o.modes {
        for &proto in &o.protocols {
            let mut targets = vec![(&guard_target, &requests)];
            if let (Some(t), Some(r)) = (&ceiling_target, &ceiling_requests) {
                targets.push((t, r));
            }
            for (target, requests) in targets {
                let result = match mode {
                    Mode::Saturation => saturation(target, proto, &o, requests, &uid).await,
                    Mode::Steady => steady(target, proto, &o, requests, &uid).await,
                };
                let row = print_phase(&result);
                results.push((result, row));
                // Let sockets drain and the server settle between phases.
                tokio::time::sleep(Duration::from_millis(if o.full { 500 } else { 10 })).await;
            }
        }
    }
    println!();
    for (r, _) in results.iter().filter(|(r, _)| r.mode == Mode::Steady) {
        print_steady_detail(r);
    }
    for (r, _) in &results {
        if let Some(error) = &r.outcome.first_error {
            println!(
                "  {} {} {:?}: first error: {error}",
                r.server,
                r.proto.name(),
                r.mode
            );
        }
    }

    // Ratios to the ceiling, and server CPU per review (the steadier figure on a shared
    // machine: it does not depend on how much CPU the server got).
    for &proto in &o.protocols {
        let find = |server: &str| {
            results
                .iter()
                .find(|(r, _)| r.server == server && r.proto == proto && r.mode == Mode::Saturation)
        };
        let per_review = |r: &PhaseResult| {
            r.server_cpu
                .filter(|_| r.outcome.completed > 0)
                .map(|c| format!("{:.1} µs", 1e6 * c.cpu / r.outcome.completed as f64))
                .unwrap_or_else(|| "-".into())
        };
        match (find("slo-guard"), find("ceiling")) {
            (Some((ours, our_row)), Some((ceiling, ceiling_row))) => println!(
                "saturation {}: slo-guard {:.0}/s = {:.1}% of the ceiling's {:.0}/s; server CPU per review {} (ceiling {})",
                proto.name(),
                our_row.throughput,
                100.0 * our_row.throughput / ceiling_row.throughput,
                ceiling_row.throughput,
                per_review(ours),
                per_review(ceiling),
            ),
            (Some((ours, our_row)), None) => println!(
                "saturation {}: slo-guard {:.0}/s; server CPU per review {}",
                proto.name(),
                our_row.throughput,
                per_review(ours),
            ),
            _ => {}
        }
    }

    // Memory and start.
    let tail_rss = pid.and_then(|p| status_kib(p, "VmRSS:"));
    let hwm = pid.and_then(|p| status_kib(p, "VmHWM:"));
    let under_load = results
        .iter()
        .filter(|(r, _)| r.server == "slo-guard")
        .filter_map(|(r, _)| r.rss_peak_kib)
        .max();
    println!(
        "slo-guard RSS: idle {} (at ready: {}); peak sampled under load {}; VmHWM {}; after the phases {}",
        idle_rss.map(mib).unwrap_or_else(|| "-".into()),
        idle_at_ready
            .iter()
            .map(|k| k.map(mib).unwrap_or_else(|| "-".into()))
            .collect::<Vec<_>>()
            .join(", "),
        under_load.map(mib).unwrap_or_else(|| "-".into()),
        hwm.map(mib).unwrap_or_else(|| "-".into()),
        tail_rss.map(mib).unwrap_or_else(|| "-".into()),
    );
    if let Some(ceiling) = &ceiling {
        println!(
            "ceiling RSS: VmHWM {}",
            status_kib(ceiling.pid(), "VmHWM:")
                .map(mib)
                .unwrap_or_else(|| "-".into())
        );
    }
    if !ready_times.is_empty() {
        let mut sorted = ready_times.clone();
        sorted.sort_unstable();
        println!(
            "slo-guard start to first /readyz 200 seen by the client ({} starts): {} ms (median {} ms, max {} ms); ready_ms in its log: {}",
            sorted.len(),
            ready_times
                .iter()
                .map(|d| ms(*d))
                .collect::<Vec<_>>()
                .join(", "),
            ms(quantile(&sorted, 0.5)),
            ms(*sorted.last().unwrap()),
            logged_ready
                .iter()
                .map(|m| m.map(|m| m.to_string()).unwrap_or_else(|| "-".into()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  per start: spawn() returned / first connection to the operations port accepted, ms after spawning: {}",
            start_detail
                .iter()
                .map(|(spawned, connected)| format!("{}/{}", ms(*spawned), ms(*connected)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(stand) = &stand {
        let unknown = stand.unknown.lock().unwrap();
        println!(
            "stand-in Prometheus: {} queries answered over the whole run{}",
            stand.served.load(Ordering::Relaxed),
            if unknown.is_empty() {
                String::new()
            } else {
                format!("; {} without an answer, e.g. {}", unknown.len(), unknown[0])
            }
        );
    }
    if let Some(server) = &server {
        println!(
            "slo-guard log: {} lines on stderr",
            server.log.lines.load(Ordering::Relaxed)
        );
    }
    println!("load average at the end: {}", loadavg());

    // Targets (DESIGN.md), reported, never asserted.
    if o.full {
        println!();
        println!("targets (DESIGN.md):");
        for (r, row) in &results {
            if r.server != "slo-guard" {
                continue;
            }
            match r.mode {
                Mode::Saturation => println!(
                    "  {:<8} saturation  >= 10,000 reviews/s: {:.0}/s  {}",
                    r.proto.name(),
                    row.throughput,
                    if row.throughput >= 10_000.0 {
                        "met"
                    } else {
                        "NOT met"
                    }
                ),
                Mode::Steady => println!(
                    "  {:<8} steady {:.0}/s p99 <= 2 ms: {} ms  {}",
                    r.proto.name(),
                    o.rate,
                    ms(row.p99),
                    if row.p99 <= Duration::from_millis(2) {
                        "met"
                    } else {
                        "NOT met"
                    }
                ),
            }
        }
        for &proto in &o.protocols {
            let find = |server: &str| {
                results
                    .iter()
                    .find(|(r, _)| {
                        r.server == server && r.proto == proto && r.mode == Mode::Saturation
                    })
                    .map(|(_, row)| row.throughput)
            };
            if let (Some(ours), Some(ceiling)) = (find("slo-guard"), find("ceiling")) {
                let pct = 100.0 * ours / ceiling;
                println!(
                    "  {:<8} >= 70% of the ceiling: {:.1}%  {}",
                    proto.name(),
                    pct,
                    if pct >= 70.0 { "met" } else { "NOT met" }
                );
            }
        }
        if let Some(idle) = idle_rss {
            println!(
                "  RSS idle <= 40 MiB: {}  {}",
                mib(idle),
                if idle <= 40 * 1024 { "met" } else { "NOT met" }
            );
        }
        if let Some(peak) = under_load.into_iter().chain(hwm).max() {
            println!(
                "  RSS under load <= 100 MiB: {} (max of sampled peak and VmHWM)  {}",
                mib(peak),
                if peak <= 100 * 1024 { "met" } else { "NOT met" }
            );
        }
        if let Some(worst) = ready_times.iter().max() {
            println!(
                "  ready <= 200 ms: worst of {} starts {} ms  {}",
                ready_times.len(),
                ms(*worst),
                if *worst <= Duration::from_millis(200) {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
    }

    // Functional checks only: every review answered, and allowed.
    let failures: Vec<String> = results
        .iter()
        .filter(|(r, _)| r.outcome.errors + r.outcome.not_allowed > 0 || r.outcome.answered == 0)
        .map(|(r, _)| {
            format!(
                "{} {} {:?}: {} answered, {} errors, {} not allowed ({})",
                r.server,
                r.proto.name(),
                r.mode,
                r.outcome.answered,
                r.outcome.errors,
                r.outcome.not_allowed,
                r.outcome.first_error.clone().unwrap_or_default()
            )
        })
        .collect();
    if let Some(c) = ceiling {
        c.stop();
    }
    if let Some(s) = server {
        s.stop();
    }
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("load: {f}");
        }
        panic!(
            "load: {} phase(s) had failed or unexpected answers",
            failures.len()
        );
    }
}
