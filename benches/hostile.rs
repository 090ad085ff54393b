//! Hostile-client benchmark (issue 16): the steady load an apiserver sends, once alone and
//! once while hostile clients flood the webhook port, side by side in one run.
//!
//!     cargo bench --bench hostile                     # 2,000 reviews/s; 10,000 stalled clients
//!     cargo bench --bench hostile -- --seconds 30 --rate 2000 --stalled 10000 --server-threads 2
//!
//! All on loopback, bounded in time, stopping by itself:
//! - starts `slo-guard serve` (the embedded example policies, default limits, one worker
//!   thread) with a certificate made by `slo-guard certs`;
//! - the apiserver stand-in, from 127.0.0.1: `--rate` reviews/s of the captured
//!   Deployment CREATE (8,650 bytes) to `/validate` over `--connections` (16) keep-alive
//!   HTTP/1.1 TLS connections, each request on a fixed schedule; latency counts from the
//!   scheduled send (a request that waits for its connection counts the wait);
//! - phase "quiet": that load alone for `--seconds`;
//! - phase "hostile": the same load while
//!   - `--stalled` (10,000) clients from 127.0.0.2 each keep trying to hold a connection:
//!     TCP, TLS, half a request header, then silence until the server closes it (a
//!     refused client tries again `--retry-after` seconds later, 1 by default);
//!   - a churn client from 127.0.0.3 opens and drops TCP connections as fast as it can;
//! - reports, per phase: reviews sent and answered, failures, latency p50/p99/max, the
//!   server's peak RSS; for the stalled clients: connections held, the longest any was held
//!   after its handshake (the header deadline bounds it), connections refused by reason
//!   (from slo-guard's /metrics), churn connections made.
//!
//! Where each party runs (`--cpus`):
//! - `pinned` (the default with `--bench`, on a machine with 2 CPUs or more): slo-guard
//!   alone on CPU 0, as it would have its own CPU in its pod; the apiserver stand-in and
//!   the flood on CPU 1. The stand-in is a one-thread tokio runtime fed by a dispatcher
//!   thread that sleeps to each scheduled send with 1 ns timer slack (tokio's timer wheel
//!   rounds to 1 ms). The flood has its own runtime whose thread runs SCHED_IDLE, so it
//!   takes every cycle of CPU 1 the stand-in leaves, but never delays it: in a cluster the
//!   attacker's pod does not share the apiserver's CPU. What the flood costs slo-guard
//!   (accepting, refusing, handshakes, timeouts) is all on slo-guard's CPU and measured.
//! - `shared`: nothing pinned, the flood at normal priority on every core, competing with
//!   both the server and the stand-in (the bench as it was before; a diagnostic).
//!
//! `--fifo` (root) runs the server and the stand-in SCHED_FIFO, the flood at normal
//! priority; `--fifo-stand-in-only` the stand-in alone, so that the flood cannot delay the
//! client while the server, at normal priority, gets no help against it.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it is a smoke run of a few
//! seconds with a small flood, nothing pinned, checking only that every review is
//! answered.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use slo_guard_testkit::sched::{
    Job, idle_priority, normal_priority, pace, pin_to, real_time_fifo, status_kib,
};
use slo_guard_testkit::{client_tls_config, free_port, root};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

const REVIEW: &str = "tests/fixtures/captured/deployment-create.json";

struct Options {
    full: bool,
    seconds: f64,
    rate: f64,
    connections: usize,
    stalled: usize,
    /// `serve --worker-threads` (1 by default, as in the load bench).
    server_threads: usize,
    /// How long a refused stalled client waits before it tries again.
    retry_after: f64,
    /// Whether the server, the stand-in and the flood are kept apart (see the header).
    cpus: Cpus,
    /// Who runs SCHED_FIFO (root): on a machine shared with other work (builds), what is
    /// measured is then the server against the flood, not against the other work.
    fifo: Fifo,
}

#[derive(Clone, Copy, PartialEq)]
enum Fifo {
    /// Everything at its default policy (the flood SCHED_IDLE when pinned).
    Off,
    /// `--fifo`: the server and the stand-in; the flood at normal priority.
    ServerAndStandIn,
    /// `--fifo-stand-in-only`: the stand-in alone, so that the flood cannot delay the
    /// client while the server, at normal priority, gets no help against it.
    StandInOnly,
}

#[derive(Clone, Copy, PartialEq)]
enum Cpus {
    Pinned,
    Shared,
}

fn die(message: &str) -> ! {
    eprintln!("hostile: {message}");
    std::process::exit(2)
}

impl Options {
    fn parse() -> Options {
        let args: Vec<String> = std::env::args().collect();
        let full = args.iter().any(|a| a == "--bench");
        let mut o = if full {
            Options {
                full,
                seconds: 30.0,
                rate: 2000.0,
                connections: 16,
                stalled: 10_000,
                server_threads: 1,
                retry_after: 1.0,
                cpus: if available_cpus() >= 2 {
                    Cpus::Pinned
                } else {
                    Cpus::Shared
                },
                fifo: Fifo::Off,
            }
        } else {
            Options {
                full,
                seconds: 2.0,
                rate: 100.0,
                connections: 2,
                stalled: 20,
                server_threads: 1,
                retry_after: 1.0,
                cpus: Cpus::Shared,
                fifo: Fifo::Off,
            }
        };
        let mut it = args.iter().skip(1);
        while let Some(arg) = it.next() {
            let mut number = |name: &str| -> f64 {
                it.next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| die(&format!("{name} needs a number")))
            };
            match arg.as_str() {
                "--seconds" => o.seconds = number("--seconds"),
                "--rate" => o.rate = number("--rate"),
                "--connections" => o.connections = number("--connections") as usize,
                "--stalled" => o.stalled = number("--stalled") as usize,
                "--server-threads" => o.server_threads = number("--server-threads") as usize,
                "--retry-after" => o.retry_after = number("--retry-after"),
                "--fifo" => o.fifo = Fifo::ServerAndStandIn,
                "--fifo-stand-in-only" => o.fifo = Fifo::StandInOnly,
                "--cpus" => {
                    o.cpus = match it.next().map(String::as_str) {
                        Some("pinned") => Cpus::Pinned,
                        Some("shared") => Cpus::Shared,
                        _ => die("--cpus pinned|shared"),
                    }
                }
                _ => {}
            }
        }
        if !(0.5..=600.0).contains(&o.seconds) || !(1.0..=20_000.0).contains(&o.rate) {
            die("--seconds in [0.5, 600], --rate in [1, 20000]");
        }
        if o.connections == 0 || o.connections > 256 || o.stalled > 15_000 {
            die("--connections in 1..=256, --stalled at most 15000");
        }
        if o.cpus == Cpus::Pinned && available_cpus() < 2 {
            die("--cpus pinned needs 2 CPUs");
        }
        o
    }
}

fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

struct Server {
    child: Child,
    addr: SocketAddr,
    ops: SocketAddr,
    _dir: tempfile::TempDir,
    ca: PathBuf,
}

impl Server {
    fn start(threads: usize, cpu: Option<usize>, normal: bool) -> Server {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_slo-guard"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| die(&format!("tempdir: {e}")));
        let certs = dir.path().join("certs");
        let made = Command::new(&bin)
            .args(["certs", "--ip", "127.0.0.1", "--out-dir"])
            .arg(&certs)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| die(&format!("slo-guard certs: {e}")));
        if !made.success() {
            die("slo-guard certs failed");
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let ops = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.path().join("serve.log"))
            .unwrap_or_else(|e| die(&format!("log: {e}")));
        let mut command = Command::new(&bin);
        if normal {
            use std::os::unix::process::CommandExt;
            // SAFETY: only sched_setscheduler, async-signal-safe, between fork and exec.
            unsafe {
                command.pre_exec(normal_priority);
            }
        }
        if let Some(cpu) = cpu {
            use std::os::unix::process::CommandExt;
            // SAFETY: only sched_setaffinity, async-signal-safe, between fork and exec.
            unsafe {
                command.pre_exec(move || pin_to(cpu));
            }
        }
        let child = command
            .args(["serve", "--log-level", "warn", "--worker-threads"])
            .arg(threads.to_string())
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--metrics-listen")
            .arg(ops.to_string())
            .arg("--tls-cert")
            .arg(certs.join("tls.crt"))
            .arg("--tls-key")
            .arg(certs.join("tls.key"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| die(&format!("slo-guard serve: {e}")));
        Server {
            child,
            addr,
            ops,
            ca: certs.join("ca.crt"),
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn ops_get(ops: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(ops).await.ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    Some(text)
}

fn tls_connector(ca: &Path) -> TlsConnector {
    let config = client_tls_config(ca, b"http/1.1").unwrap_or_else(|e| die(&format!("CA {e}")));
    TlsConnector::from(Arc::new(config))
}

async fn tcp_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// What one phase of the steady load saw.
#[derive(Default)]
struct Phase {
    sent: u64,
    answered: u64,
    failed: u64,
    first_failure: Option<String>,
    latencies: Vec<Duration>,
    /// How late the dispatcher released each request: what the client itself added (a
    /// dispatcher delayed by other threads on its CPU), not the server.
    lateness: Vec<Duration>,
    /// Latency from when the dispatcher released the request: the latency without the
    /// dispatcher's own lateness, still with every wait for a connection or the server.
    from_release: Vec<Duration>,
    peak_rss_kib: u64,
    /// The server's CPU time during the phase, in seconds.
    server_cpu: f64,
}

impl Phase {
    fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }
}

/// The `p` quantile of `values`, in any order.
fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    slo_guard_testkit::percentile(&sorted, p)
}

/// utime + stime of a process, in seconds (`/proc/<pid>/stat`, 100 ticks a second).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    ticks(11).unwrap_or(0.0) / 100.0 + ticks(12).unwrap_or(0.0) / 100.0
}

/// The apiserver stand-in: `rate` reviews/s over `connections` keep-alive connections for
/// `seconds`. A dispatcher thread releases each request at its scheduled time; any free
/// connection takes it, and its latency counts from the scheduled time, so a request
/// that waits for a connection or for the server counts the wait.
async fn steady(o: &Options, server: &Server, tls: &TlsConnector, body: Bytes) -> Phase {
    let interval = Duration::from_secs_f64(1.0 / o.rate);
    let total = (o.rate * o.seconds) as u64;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut tasks = Vec::new();
    for _ in 0..o.connections {
        let (tls, body, rx) = (tls.clone(), body.clone(), rx.clone());
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut phase = Phase::default();
            let mut sender = None;
            loop {
                let job = { rx.lock().await.recv().await };
                let Some(job) = job else { break };
                phase
                    .lateness
                    .push(job.released.saturating_duration_since(job.due));
                phase.sent += 1;
                let outcome = async {
                    if sender.is_none() {
                        let tcp = tcp_from(Ipv4Addr::LOCALHOST, addr).await?;
                        let stream = tls
                            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
                            .await?;
                        let (s, connection) =
                            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                        tokio::spawn(connection);
                        sender = Some(s);
                    }
                    let s = sender.as_mut().expect("connected");
                    s.ready().await?;
                    let request = Request::post("/validate")
                        .header("host", "slo-guard")
                        .header("content-type", "application/json")
                        .body(Full::new(body.clone()))?;
                    let response = s.send_request(request).await?;
                    let status = response.status();
                    let answer = response.into_body().collect().await?.to_bytes();
                    if status != 200 || !answer.starts_with(b"{\"apiVersion\"") {
                        return Err::<(), Box<dyn std::error::Error + Send + Sync>>(
                            format!("status {status}: {}", String::from_utf8_lossy(&answer)).into(),
                        );
                    }
                    Ok(())
                }
                .await;
                match outcome {
                    Ok(()) => {
                        phase.answered += 1;
                        phase.latencies.push(job.due.elapsed());
                        phase.from_release.push(job.released.elapsed());
                    }
                    Err(error) => {
                        phase.failed += 1;
                        phase
                            .first_failure
                            .get_or_insert(format!("request {}: {error}", job.seq));
                        sender = None;
                    }
                }
            }
            phase
        }));
    }
    let dispatcher = pace(
        Instant::now() + Duration::from_millis(200),
        interval,
        total,
        tx,
    );
    let pid = server.pid();
    let cpu_before = cpu_seconds(pid);
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (sampling, peak) = (sampling.clone(), peak.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(rss) = status_kib(pid, "VmRSS:") {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut phase = Phase::default();
    for task in tasks {
        let lane = task.await.unwrap_or_else(|e| die(&format!("lane: {e}")));
        phase.sent += lane.sent;
        phase.answered += lane.answered;
        phase.failed += lane.failed;
        if phase.first_failure.is_none() {
            phase.first_failure = lane.first_failure;
        }
        phase.latencies.extend(lane.latencies);
        phase.lateness.extend(lane.lateness);
        phase.from_release.extend(lane.from_release);
    }
    if dispatcher.join().is_err() {
        die("the dispatcher thread panicked");
    }
    phase.server_cpu = cpu_seconds(pid) - cpu_before;
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    phase.peak_rss_kib = peak.load(Ordering::Relaxed);
    phase
}

/// The flood's clients come from 127.0.0.2.
const FLOOD_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// A few stalled clients from an address of their own (under the per-source bound, so
/// never refused) on a runtime of their own, so that how long the server let each hold
/// its connection is timed without the flood's own queue in the way.
const OBSERVED_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
const OBSERVED_CLIENTS: usize = 32;

/// One client that keeps trying to hold a connection with half a header, until `stop`.
#[allow(clippy::too_many_arguments)]
async fn stalled_client(
    start: Duration,
    source: Ipv4Addr,
    addr: SocketAddr,
    tls: TlsConnector,
    stop: Arc<AtomicBool>,
    seen: Arc<Flood>,
    retry_after: Duration,
    observed: bool,
) {
    tokio::time::sleep(start).await;
    while !stop.load(Ordering::Relaxed) {
        let held = async {
            let tcp = tcp_from(source, addr).await.ok()?;
            let mut stream = tls
                .connect(ServerName::IpAddress(addr.ip().into()), tcp)
                .await
                .ok()?;
            stream
                .write_all(b"POST /validate HTTP/1.1\r\nHost: slo-guard\r\nContent-Ty")
                .await
                .ok()?;
            stream.flush().await.ok()?;
            Some(stream)
        }
        .await;
        let Some(mut stream) = held else {
            if !observed {
                seen.refused.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(retry_after).await;
            continue;
        };
        if !observed {
            seen.held.fetch_add(1, Ordering::Relaxed);
        }
        let since = Instant::now();
        let mut buffer = [0u8; 256];
        loop {
            tokio::select! {
                read = stream.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                },
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if stop.load(Ordering::Relaxed) {
                        if !observed {
                            seen.still_open_at_end.fetch_add(1, Ordering::Relaxed);
                        }
                        return;
                    }
                }
            }
        }
        let held_ms = since.elapsed().as_millis() as u64;
        if observed {
            seen.observed_held.fetch_add(1, Ordering::Relaxed);
            seen.observed_longest_held_ms
                .fetch_max(held_ms, Ordering::Relaxed);
        } else {
            seen.longest_held_ms.fetch_max(held_ms, Ordering::Relaxed);
        }
    }
}

/// What the flood saw.
#[derive(Default)]
struct Flood {
    held: AtomicU64,
    refused: AtomicU64,
    longest_held_ms: AtomicU64,
    /// Held connections of the observed clients, and the longest of them.
    observed_held: AtomicU64,
    observed_longest_held_ms: AtomicU64,
    still_open_at_end: AtomicU64,
    churned: AtomicU64,
}

/// `stalled` clients each trying to hold a connection with half a header, and a churn
/// client, until `stop`.
fn flood(
    o: &Options,
    runtime: &tokio::runtime::Handle,
    observer: &tokio::runtime::Handle,
    thread_start: fn(),
    addr: SocketAddr,
    tls: &TlsConnector,
    stop: Arc<AtomicBool>,
) -> (
    Arc<Flood>,
    Vec<tokio::task::JoinHandle<()>>,
    std::thread::JoinHandle<()>,
) {
    let seen = Arc::new(Flood::default());
    let mut tasks = Vec::new();
    let retry_after = Duration::from_secs_f64(o.retry_after);
    for client in 0..o.stalled {
        let (tls, stop, seen) = (tls.clone(), stop.clone(), seen.clone());
        // Spread the first connections over a second.
        let start = Duration::from_micros((client as u64 * 1_000_000) / 10_000);
        tasks.push(runtime.spawn(stalled_client(
            start,
            FLOOD_SOURCE,
            addr,
            tls,
            stop,
            seen,
            retry_after,
            false,
        )));
    }
    for client in 0..OBSERVED_CLIENTS {
        let (tls, stop, seen) = (tls.clone(), stop.clone(), seen.clone());
        let start = Duration::from_millis(client as u64 * 10);
        tasks.push(observer.spawn(stalled_client(
            start,
            OBSERVED_SOURCE,
            addr,
            tls,
            stop,
            seen,
            retry_after,
            true,
        )));
    }
    // A thread of its own: among 10,000 stalled clients on one runtime it would get a turn
    // only once per round of theirs.
    let (stop_churn, seen_churn) = (stop.clone(), seen.clone());
    let churn = std::thread::spawn(move || {
        thread_start();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| die(&format!("churn runtime: {e}")));
        runtime.block_on(async {
            while !stop_churn.load(Ordering::Relaxed) {
                if tcp_from(Ipv4Addr::new(127, 0, 0, 3), addr).await.is_ok() {
                    seen_churn.churned.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    });
    (seen, tasks, churn)
}

fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn report(name: &str, phase: &Phase) {
    println!(
        "{name:8} sent {:>6}  answered {:>6}  failed {:>4}  p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  peak RSS {:>6.1} MiB  server CPU {:>5.2} s",
        phase.sent,
        phase.answered,
        phase.failed,
        phase.percentile(0.50).as_secs_f64() * 1e3,
        phase.percentile(0.99).as_secs_f64() * 1e3,
        phase.percentile(1.0).as_secs_f64() * 1e3,
        phase.peak_rss_kib as f64 / 1024.0,
        phase.server_cpu,
    );
    println!(
        "         the dispatcher released requests late by: p50 {:.3} ms  p99 {:.3} ms; latency from release p50 {:.3} ms  p99 {:.3} ms",
        percentile(&phase.lateness, 0.50).as_secs_f64() * 1e3,
        percentile(&phase.lateness, 0.99).as_secs_f64() * 1e3,
        percentile(&phase.from_release, 0.50).as_secs_f64() * 1e3,
        percentile(&phase.from_release, 0.99).as_secs_f64() * 1e3,
    );
    if let Some(failure) = &phase.first_failure {
        println!("         first failure: {failure}");
    }
}

fn main() {
    let o = Options::parse();
    let body =
        std::fs::read(root().join(REVIEW)).unwrap_or_else(|e| die(&format!("{REVIEW}: {e}")));
    let body: serde_json::Value =
        serde_json::from_slice(&body).unwrap_or_else(|e| die(&format!("{e}")));
    let body = Bytes::from(serde_json::to_vec(&body).expect("JSON"));
    let pinned = o.cpus == Cpus::Pinned;
    if pinned {
        // Everything of this process runs on CPU 1; the server is moved to CPU 0.
        pin_to(1).unwrap_or_else(|e| die(&format!("pin to CPU 1: {e}")));
    }
    if o.fifo != Fifo::Off {
        real_time_fifo().unwrap_or_else(|e| die(&format!("--fifo: SCHED_FIFO: {e}")));
    }
    let stand_in = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| die(&format!("runtime: {e}")));
    let mut flood_runtime = tokio::runtime::Builder::new_multi_thread();
    flood_runtime.enable_all().thread_name("flood");
    if pinned {
        flood_runtime.worker_threads(1);
    }
    let flood_thread_start: fn() = if o.fifo != Fifo::Off {
        // The FIFO stand-in already comes first on CPU 1; at normal priority the flood
        // keeps its strength against other work on a shared machine.
        || normal_priority().unwrap_or_else(|e| die(&format!("SCHED_OTHER: {e}")))
    } else if pinned {
        || idle_priority().unwrap_or_else(|e| die(&format!("SCHED_IDLE: {e}")))
    } else {
        || {}
    };
    flood_runtime.on_thread_start(flood_thread_start);
    let flood_runtime = flood_runtime
        .build()
        .unwrap_or_else(|e| die(&format!("flood runtime: {e}")));
    // At normal priority, not FIFO: it does little, and must not delay the stand-in.
    let observer_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("observed")
        .on_thread_start(|| normal_priority().unwrap_or_else(|e| die(&format!("SCHED_OTHER: {e}"))))
        .build()
        .unwrap_or_else(|e| die(&format!("observer runtime: {e}")));
    stand_in.block_on(async {
        let server = Server::start(o.server_threads, pinned.then_some(0), o.fifo == Fifo::StandInOnly);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ops_get(server.ops, "/readyz")
            .await
            .is_some_and(|t| t.starts_with("HTTP/1.1 200"))
        {
            if Instant::now() > deadline {
                die("slo-guard never became ready");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let tls = tls_connector(&server.ca);
        println!(
            "hostile: {} s per phase, {} reviews/s over {} connections ({} bytes each); flood: {} stalled clients + churn; server worker threads: {}; cpus: {}{}",
            o.seconds,
            o.rate,
            o.connections,
            body.len(),
            o.stalled,
            o.server_threads,
            if pinned {
                "pinned (server on CPU 0; stand-in and flood on CPU 1)"
            } else {
                "shared (nothing pinned, flood at normal priority)"
            },
            match (o.fifo, pinned) {
                (Fifo::StandInOnly, _) => "; stand-in SCHED_FIFO, server and flood SCHED_OTHER",
                (Fifo::ServerAndStandIn, _) => "; server and stand-in SCHED_FIFO, flood SCHED_OTHER",
                (Fifo::Off, true) => "; flood SCHED_IDLE",
                (Fifo::Off, false) => "",
            }
        );
        let quiet = steady(&o, &server, &tls, body.clone()).await;
        report("quiet", &quiet);

        let stop = Arc::new(AtomicBool::new(false));
        let flood_started = Instant::now();
        let (seen, flooders, churn) = flood(
            &o,
            flood_runtime.handle(),
            observer_runtime.handle(),
            flood_thread_start,
            server.addr,
            &tls,
            stop.clone(),
        );
        // Let the flood reach the server's limits before the measured phase.
        tokio::time::sleep(Duration::from_secs(if o.full { 2 } else { 1 })).await;
        let hostile = steady(&o, &server, &tls, body.clone()).await;
        stop.store(true, Ordering::Relaxed);
        let flood_seconds = flood_started.elapsed().as_secs_f64();
        // Held connections see the stop within 200 ms and count themselves; refused
        // clients may be asleep for their whole retry interval, so they are cut short.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for task in &flooders {
            task.abort();
        }
        for task in flooders {
            let _ = task.await;
        }
        if churn.join().is_err() {
            die("the churn thread panicked");
        }
        report("hostile", &hostile);
        let metrics = ops_get(server.ops, "/metrics").await.unwrap_or_default();
        println!(
            "flood:   {:.1} s; connections held {}  refused or failed at connect {} ({:.0}/s)  longest held {} ms as the flood saw it  still open at the end {}  churn connections {} ({:.0}/s)",
            flood_seconds,
            seen.held.load(Ordering::Relaxed),
            seen.refused.load(Ordering::Relaxed),
            seen.refused.load(Ordering::Relaxed) as f64 / flood_seconds,
            seen.longest_held_ms.load(Ordering::Relaxed),
            seen.still_open_at_end.load(Ordering::Relaxed),
            seen.churned.load(Ordering::Relaxed),
            seen.churned.load(Ordering::Relaxed) as f64 / flood_seconds,
        );
        println!(
            "observed: {} stalled clients from {OBSERVED_SOURCE}: {} connections held and closed by the server, the longest {} ms (header read timeout 10000 ms)",
            OBSERVED_CLIENTS,
            seen.observed_held.load(Ordering::Relaxed),
            seen.observed_longest_held_ms.load(Ordering::Relaxed),
        );
        println!(
            "server:  refused per_source_limit {}  connection_limit {}  timeouts request_start {}  header {}  idle {}  tls_handshake {}  VmHWM {:.1} MiB",
            metric(&metrics, "slo_guard_connections_refused_total{reason=\"per_source_limit\"}"),
            metric(&metrics, "slo_guard_connections_refused_total{reason=\"connection_limit\"}"),
            metric(&metrics, "slo_guard_connection_timeouts_total{phase=\"request_start\"}"),
            metric(&metrics, "slo_guard_connection_timeouts_total{phase=\"header\"}"),
            metric(&metrics, "slo_guard_connection_timeouts_total{phase=\"idle\"}"),
            metric(&metrics, "slo_guard_connection_timeouts_total{phase=\"tls_handshake\"}"),
            status_kib(server.pid(), "VmHWM:").unwrap_or(0) as f64 / 1024.0,
        );
        for (name, phase) in [("quiet", &quiet), ("hostile", &hostile)] {
            if phase.failed > 0 || phase.answered == 0 {
                die(&format!("{name}: {} reviews failed", phase.failed));
            }
        }
    });
}
