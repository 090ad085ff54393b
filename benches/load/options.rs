//! The bench's command line, parsed with clap. `cargo bench` passes `--bench`, which
//! selects the full run and its defaults; without it (`cargo test --all-targets`) the
//! same options apply to a smoke run of about a second, whose defaults are small.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Parser, ValueEnum};

use crate::die;

/// The HTTP version a connection speaks, chosen by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Proto {
    /// HTTP/1.1.
    #[value(name = "h1", alias = "http1", alias = "http/1.1")]
    H1,
    /// HTTP/2.
    #[value(name = "h2")]
    H2,
}

impl Proto {
    /// The name the report prints.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Proto::H1 => "http/1.1",
            Proto::H2 => "h2",
        }
    }
}

/// How the client drives the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// One request in flight per connection, as fast as they go: throughput.
    Saturation,
    /// A fixed schedule of `--rate` reviews a second: latency without coordinated omission.
    Steady,
}

/// Where the servers and this client run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Cpus {
    /// Servers on CPU 0, this client on CPU 1 (the default with 2 or more CPUs).
    Pinned,
    /// Nothing pinned: the same threads float over all CPUs.
    Shared,
}

/// What the command line says; [`Options::parse`] fills in the mode's defaults.
#[derive(Debug, Parser)]
#[command(
    name = "load",
    about = "Load benchmark: slo-guard serve's /validate and /mutate over loopback TLS, \
             against a do-nothing axum+rustls server (the ceiling)",
    override_usage = "cargo bench --bench load -- [OPTIONS]"
)]
struct CommandLine {
    /// The full run, as `cargo bench` asks for it; without it, a smoke run.
    #[arg(long)]
    bench: bool,
    /// Seconds each phase measures, in (0, 600].
    #[arg(long)]
    seconds: Option<f64>,
    /// Seconds each phase runs before it measures, in [0, 60].
    #[arg(long)]
    warmup: Option<f64>,
    /// Connections, in 1..=1024.
    #[arg(long)]
    connections: Option<usize>,
    /// The steady phase's reviews a second, in (0, 200000].
    #[arg(long)]
    rate: Option<f64>,
    /// Comma-separated protocols.
    #[arg(long, value_delimiter = ',')]
    protocols: Option<Vec<Proto>>,
    /// Comma-separated modes.
    #[arg(long, value_delimiter = ',')]
    modes: Option<Vec<Mode>>,
    /// Whether the servers and this client are pinned to CPUs.
    #[arg(long)]
    cpus: Option<Cpus>,
    /// Worker threads of the servers.
    #[arg(long)]
    server_threads: Option<usize>,
    /// How many times slo-guard is started, to time its start.
    #[arg(long)]
    starts: Option<usize>,
    /// Leaves the ceiling server out.
    #[arg(long)]
    no_ceiling: bool,
    /// How the ceiling reads the review: kube-rs's `AdmissionReview<DynamicObject>`, or
    /// slo-guard's own reader.
    #[arg(long, value_parser = ["kube", "slo-guard"])]
    ceiling_parse: Option<String>,
    /// SCHED_FIFO for this client and the servers it starts (a diagnostic; needs root).
    #[arg(long)]
    fifo: bool,
    /// An extra argument for `slo-guard serve` (repeatable).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// An already running server on loopback, instead of one started here.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// The CA that signed the certificate of the server at `--addr`.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The process id of the server at `--addr`, for its memory and CPU figures.
    #[arg(long)]
    pid: Option<u32>,
    /// The filter `cargo bench <filter>` hands every bench; it means nothing here.
    #[arg(hide = true)]
    filter: Vec<String>,
}

/// The options of one run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) full: bool,
    pub(crate) seconds: f64,
    pub(crate) warmup: f64,
    pub(crate) connections: usize,
    pub(crate) rate: f64,
    pub(crate) protocols: Vec<Proto>,
    pub(crate) modes: Vec<Mode>,
    pub(crate) pinned: bool,
    /// SCHED_FIFO for this client and the servers it starts (a diagnostic; needs root).
    pub(crate) fifo: bool,
    pub(crate) server_threads: usize,
    pub(crate) starts: usize,
    pub(crate) ceiling: bool,
    /// How the ceiling reads the review: `kube` (kube-rs's `AdmissionReview<DynamicObject>`,
    /// what a do-nothing kube-rs webhook does) or `slo-guard` (slo-guard's own reader).
    pub(crate) ceiling_parse: String,
    pub(crate) server_args: Vec<String>,
    /// An already running server instead of one started here (with `--ca` and `--pid`).
    pub(crate) external: Option<(SocketAddr, PathBuf, Option<u32>)>,
}

impl Options {
    /// The options `args` (the process's arguments, program name first) give, with the
    /// full run's defaults under `--bench` and the smoke run's otherwise. Exits with
    /// status 2 and a message on a bad option.
    pub(crate) fn parse(args: &[String]) -> Options {
        let full = args.iter().any(|a| a == "--bench");
        let line = command_line(args, full);
        let multi_cpu = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
        let (seconds, warmup, connections, rate, pinned, starts) = if full {
            (10.0, 2.0, 64, 2000.0, multi_cpu, 5)
        } else {
            (0.1, 0.03, 4, 200.0, false, 1)
        };
        let external = line.addr.map(|addr| {
            if !addr.ip().is_loopback() {
                die("--addr must be a loopback address");
            }
            let ca = line
                .ca
                .clone()
                .unwrap_or_else(|| die("--addr needs --ca (the CA that signed its certificate)"));
            (addr, ca, line.pid)
        });
        let o = Options {
            full,
            seconds: line.seconds.unwrap_or(seconds),
            warmup: line.warmup.unwrap_or(warmup),
            connections: line.connections.unwrap_or(connections),
            rate: line.rate.unwrap_or(rate),
            protocols: line.protocols.unwrap_or_else(|| vec![Proto::H1, Proto::H2]),
            modes: line
                .modes
                .unwrap_or_else(|| vec![Mode::Saturation, Mode::Steady]),
            pinned: line.cpus.map_or(pinned, |cpus| cpus == Cpus::Pinned),
            fifo: line.fifo,
            server_threads: line.server_threads.unwrap_or(1).max(1),
            starts: line.starts.unwrap_or(starts),
            ceiling: !line.no_ceiling,
            ceiling_parse: line.ceiling_parse.unwrap_or_else(|| "kube".to_string()),
            server_args: line.server_args,
            external,
        };
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
        o
    }
}

/// Parses `args`. The smoke run drops options it does not know and parses the rest:
/// `cargo test -- <flags>` hands the test harness's flags (`--nocapture`, ...) to every
/// bench too, and they mean nothing here. The full run refuses them.
fn command_line(args: &[String], full: bool) -> CommandLine {
    let mut args = args.to_vec();
    loop {
        let error = match CommandLine::try_parse_from(&args) {
            Ok(line) => return line,
            Err(error) => error,
        };
        if full || error.kind() != ErrorKind::UnknownArgument {
            error.exit();
        }
        let Some(ContextValue::String(unknown)) = error.get(ContextKind::InvalidArg) else {
            error.exit();
        };
        let flag = unknown.split('=').next().unwrap_or(unknown);
        match args
            .iter()
            .skip(1)
            .position(|arg| arg == unknown || arg.split('=').next() == Some(flag))
        {
            Some(at) => {
                args.remove(at + 1);
            }
            None => error.exit(),
        }
    }
}
