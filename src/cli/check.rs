use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::PolicyArgs;
use super::serve::PrometheusArgs;
use crate::admission::{WorkloadKind, WorkloadSnapshot};
use crate::guard::{Endpoint, Guard};
use crate::metrics::Metrics;
use crate::policy::{PolicyStore, StoreEvent, load_directory};
use crate::slo::{CannedAnswers, SloSource};
use crate::verdict::VALIDATING_WEBHOOK;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub policies: PolicyArgs,
    /// The AdmissionReview JSON file, as the apiserver sends it (`-` for standard input).
    #[arg(long, env = "SLO_GUARD_REVIEW")]
    pub review: PathBuf,
    /// Workload manifests (Deployment or StatefulSet) standing in for the watch cache, for
    /// scale requests and HPAs whose decision context lives on the parent workload.
    #[arg(long = "workload", env = "SLO_GUARD_WORKLOADS", value_delimiter = ',')]
    pub workloads: Vec<PathBuf>,
    /// Judge as the mutating webhook instead (prints the patch).
    #[arg(long, default_value_t = false)]
    pub mutate: bool,
    /// The time to judge at (RFC 3339), for reproducible checks; defaults to now.
    #[arg(long, env = "SLO_GUARD_NOW")]
    pub now: Option<DateTime<Utc>>,
    /// Canned Prometheus answers (YAML: PromQL query -> number, NaN, [] or {error: ...}),
    /// for offline policy tests. A query without an answer names itself in the output.
    #[arg(
        long,
        env = "SLO_GUARD_PROMETHEUS_ANSWERS",
        conflicts_with = "prometheus_url"
    )]
    pub prometheus_answers: Option<PathBuf>,
    /// Ask a live Prometheus instead (--prometheus-url and the other connection flags).
    #[command(flatten)]
    pub prometheus: PrometheusArgs,
}

const UNUSABLE: u8 = 2;

fn unusable(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(UNUSABLE)
}

fn read_workloads(
    paths: &[PathBuf],
) -> Result<BTreeMap<(WorkloadKind, String, String), WorkloadSnapshot>, String> {
    Ok(crate::reflection::learn::read_workload_manifests(paths)?
        .into_iter()
        .map(|w| {
            let snapshot = WorkloadSnapshot {
                labels: w.labels,
                pod_labels: w.pod_labels,
                annotations: w.annotations,
                replicas: w.replicas,
            };
            ((w.kind, w.namespace, w.name), snapshot)
        })
        .collect())
}

/// Exit 0 allowed, 1 denied, 2 unusable input (unreadable files, invalid policies, a
/// body that is not an AdmissionReview).
pub fn run(args: CheckArgs) -> ExitCode {
    if args.policies.policies.is_empty() {
        return unusable(
            "--policies is required: give the policy ConfigMap files or directories to judge against",
        );
    }
    let store = Arc::new(PolicyStore::new(args.policies.namespace.clone()));
    let documents = match load_directory(&args.policies.policies, "default") {
        Ok(documents) => documents,
        Err(error) => return unusable(error),
    };
    for event in store.replace_all(None, &documents) {
        if let StoreEvent::Rejected { error, .. } = event {
            return unusable(format!("invalid policy: {error}"));
        }
    }
    let workloads = match read_workloads(&args.workloads) {
        Ok(workloads) => workloads,
        Err(error) => return unusable(error),
    };
    let body = if args.review.as_os_str() == "-" {
        let mut body = Vec::new();
        if let Err(error) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut body) {
            return unusable(format!("cannot read standard input: {error}"));
        }
        body
    } else {
        match std::fs::read(&args.review) {
            Ok(body) => body,
            Err(error) => {
                return unusable(format!("cannot read {}: {error}", args.review.display()));
            }
        }
    };
    let slo = match &args.prometheus_answers {
        Some(path) => match CannedAnswers::load(path) {
            Ok(answers) => SloSource::Canned(Arc::new(answers)),
            Err(error) => return unusable(error),
        },
        None => match args.prometheus.source() {
            Ok(source) => source,
            Err(error) => return unusable(format!("{error:#}")),
        },
    };
    let guard = Guard::new(store, Arc::new(workloads), Arc::new(Metrics::new())).with_slo(slo);
    let endpoint = if args.mutate {
        Endpoint::Mutate
    } else {
        Endpoint::Validate
    };
    let now = args.now.unwrap_or_else(Utc::now);
    let judged = if guard.slo.is_live() {
        // Only a live Prometheus needs a runtime; the offline paths stay synchronous.
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(guard.review_async(endpoint, &body, now)),
            Err(error) => return unusable(format!("cannot start the async runtime: {error}")),
        }
    } else {
        guard.review(endpoint, &body, now)
    };
    let judgement = match judged {
        Ok(judgement) => judgement,
        Err(error) => return unusable(error),
    };
    let response = &judgement.response;
    let envelope: serde_json::Value =
        serde_json::from_slice(&response.to_review_json()).unwrap_or_default();
    println!(
        "{}",
        serde_json::to_string_pretty(&envelope).unwrap_or_default()
    );
    if let Some(patch) = &response.patch {
        use base64::Engine;
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(patch) {
            eprintln!("patch: {}", String::from_utf8_lossy(&bytes));
        }
    }
    for warning in &response.warnings {
        eprintln!("Warning: {warning}");
    }
    if response.allowed {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "Error from server (Forbidden): {}",
            response.kubectl_line(VALIDATING_WEBHOOK)
        );
        ExitCode::from(1)
    }
}
