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

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use slo_guard_testkit::{free_port, root};

use crate::client::{ReadyProbe, Requests, Tls, connect, exchange, wait_ready};
use crate::options::{Mode, Options, Proto};
use crate::phases::{Outcome, PhaseResult, Target, saturation, steady};
use crate::report::{Row, cpu_model, loadavg, ms, print_phase, print_steady_detail, quantile};
use crate::stand_in::{ceiling_server, start_prometheus};
use crate::system::{Server, make_certs, mib, pin_to, real_time_fifo, spawn_logged, status_kib};

// The same allocator as `slo-guard serve`, for the ceiling (this binary, re-executed) and
// the client alike: the comparison is of the work, not of the allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub(crate) const REVIEW: &str = "tests/fixtures/captured/deployment-create.json";
pub(crate) const POLICIES: &str = "tests/load/policies";
pub(crate) const ANSWERS: &str = "tests/load/prometheus-answers.yaml";
pub(crate) const CEILING_FLAG: &str = "--ceiling-server";

mod client;
mod options;
mod phases;
mod report;
mod stand_in;
mod system;

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
        pin_to(cpu).unwrap_or_else(|e| die(&format!("pin to CPU {cpu}: {e}")));
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

pub(crate) fn die(message: &str) -> ! {
    eprintln!("load: {message}");
    std::process::exit(2);
}
