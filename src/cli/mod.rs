//! The `slo-guard` command line. Every flag has an environment variable.

mod certs;
pub mod check;
mod lint;
pub mod manifests;
mod preflight;
mod reflect;
pub mod request;
mod serve;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "slo-guard",
    version,
    about = "Admission webhook that guards SLOs against risky changes by people, CI and AI agents"
)]
pub struct Cli {
    #[arg(
        long,
        global = true,
        env = "SLO_GUARD_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,
    /// A tracing filter, e.g. `info` or `slo_guard=debug`.
    #[arg(long, global = true, env = "SLO_GUARD_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve /validate, /mutate, /healthz, /readyz and /metrics over HTTPS.
    Serve(serve::ServeArgs),
    /// Judge a change offline in the apiserver's order (mutate, patch, validate), from an
    /// AdmissionReview file or manifests; exit 0 allowed, 1 denied, 2 unusable input.
    Check(check::CheckArgs),
    /// Run declarative policy test suites (slo-guard-test.yaml); exit 0 when every case
    /// gets what it expects, 1 on a mismatch, 2 on a suite that cannot be read.
    Test(test::TestArgs),
    /// Validate policy and reflection ConfigMap manifests.
    Lint(lint::LintArgs),
    /// Make a CA and a serving certificate (and optionally install them in the cluster).
    Certs(certs::CertsArgs),
    /// Judge the outcomes of recent rollouts and agent scales through Prometheus, and
    /// propose tighter thresholds where a change was followed by a burn.
    Reflect(reflect::ReflectArgs),
    /// Ask what a change would get now, and the envelope around it (replica bounds,
    /// cooldown, freeze windows, SLO figures, approval), from a running slo-guard with a
    /// bearer token or offline against policy files; exit 0 it would pass, 1 it would be
    /// denied, 2 no answer.
    Preflight(preflight::PreflightArgs),
}

/// Parses the command line, sets up logging and runs the subcommand; its exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    let level = cli.log_level.as_deref().unwrap_or(default_level);
    if let Err(error) = init_logging(cli.log_format, level) {
        // Falling back to a default would hide the operator's typo; a filter that cannot
        // be read is a usage error, like any other bad flag.
        eprintln!("error: invalid --log-level {level:?}: {error}");
        return ExitCode::from(2);
    }
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Check(args) => check::run(args),
        Command::Test(args) => test::run(args),
        Command::Lint(args) => lint::run(args),
        Command::Certs(args) => certs::run(args),
        Command::Reflect(args) => reflect::run(args),
        Command::Preflight(args) => preflight::run(args),
    }
}

/// A single-threaded runtime for a one-shot command; on failure, the exit code after
/// saying why.
fn current_thread_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        })
}

fn init_logging(
    format: LogFormat,
    filter: &str,
) -> Result<(), tracing_subscriber::filter::ParseError> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

/// Policy sources shared by `serve` and `check`.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// Files or directories of policy and reflection ConfigMap manifests.
    #[arg(long = "policies", env = "SLO_GUARD_POLICIES", value_delimiter = ',')]
    pub policies: Vec<PathBuf>,
    /// slo-guard's own namespace, whose policies may govern other namespaces.
    #[arg(long, env = "SLO_GUARD_NAMESPACE", default_value = "slo-guard")]
    pub namespace: String,
}

/// The example policies shipped in `policies/`, used when `serve` is given no source.
pub const EMBEDDED_POLICIES: [(&str, &str); 3] = [
    (
        "policies/checkout.yaml",
        include_str!("../../policies/checkout.yaml"),
    ),
    (
        "policies/platform-defaults.yaml",
        include_str!("../../policies/platform-defaults.yaml"),
    ),
    (
        "policies/reflection-checkout.yaml",
        include_str!("../../policies/reflection-checkout.yaml"),
    ),
];
