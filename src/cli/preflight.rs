//! `slo-guard preflight`: what a change would get now, and the envelope around it.
//! With `--server`, asks a running slo-guard (`POST /v1/preflight`) with a bearer token;
//! with `--policies`, judges offline against policy files, as `check` does.
//! Prints the answer as JSON; exit 0 when the change would pass now, 1 when it would be
//! denied, 2 when no answer could be had.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::PolicyArgs;
use super::check::{CheckError, Setting, SloArgs};
use super::manifests::{self, Stdin};
use super::request::Requester;
use crate::preflight::{IntendedChange, PreflightRequest, Subject, WorkloadRef};

#[derive(Debug, clap::Args)]
// `--prometheus-answers` comes from `check`'s flags ([`SloArgs`]) with this command's help.
#[command(mut_arg("prometheus_answers", |arg| arg.help("Offline: canned Prometheus answers, as for `check`")))]
pub struct PreflightArgs {
    /// The object the change is about, as `<kind>/<name>` (`deployment/checkout`).
    pub target: Option<String>,
    /// The namespace of the object.
    #[arg(short = 'n', long = "target-namespace", default_value = "default")]
    pub target_namespace: String,
    /// The action: `scale` (with --replicas), `restart`, `delete`, or an agent action
    /// (`update-env`, `fix-image`, ...) with --patch.
    #[arg(long)]
    pub action: Option<String>,
    #[arg(long)]
    pub replicas: Option<u32>,
    /// A JSON merge patch on the object as stored.
    #[arg(long)]
    pub patch: Option<String>,
    /// Annotations the change sets (the decision context), `key=value`, repeatable.
    #[arg(long = "annotation", value_parser = parse_annotation)]
    pub annotations: Vec<(String, String)>,
    /// The whole request as JSON (a file, or `-`), instead of the flags above.
    #[arg(long, conflicts_with_all = ["target", "action", "replicas", "patch"])]
    pub request: Option<PathBuf>,
    /// Ask about another identity, as `kubectl --as` (the caller needs RBAC to
    /// impersonate it). Offline, the identity judged.
    #[arg(long = "as")]
    pub as_user: Option<String>,
    #[arg(long = "as-group", value_delimiter = ',')]
    pub as_groups: Vec<String>,
    #[arg(long)]
    pub field_manager: Option<String>,

    /// A running slo-guard's webhook address (`https://slo-guard.slo-guard.svc:443`).
    #[arg(long, env = "SLO_GUARD_SERVER", conflicts_with = "policies")]
    pub server: Option<String>,
    /// The bearer token to ask with (a ServiceAccount token: `kubectl create token`).
    #[arg(long, env = "SLO_GUARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the token, such as a pod's projected ServiceAccount token.
    #[arg(long, env = "SLO_GUARD_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// The CA that signed slo-guard's serving certificate (PEM).
    #[arg(long, env = "SLO_GUARD_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    #[command(flatten)]
    pub policies: PolicyArgs,
    /// Offline: the object as stored now (a manifest); else looked up among --workload.
    #[arg(long)]
    pub current: Option<PathBuf>,
    /// Offline: workload manifests standing in for the watch cache.
    #[arg(long = "workload", env = "SLO_GUARD_WORKLOADS", value_delimiter = ',')]
    pub workloads: Vec<PathBuf>,
    /// Offline: canned answers (`--prometheus-answers`, worded for preflight above) or a
    /// live Prometheus, as for `check`.
    #[command(flatten)]
    pub slo: SloArgs,
    /// Offline: the time to judge at (RFC 3339).
    #[arg(long, env = "SLO_GUARD_NOW")]
    pub now: Option<DateTime<Utc>>,
}

fn parse_annotation(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got {text:?}"))
}

const UNUSABLE: u8 = 2;

fn unusable(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(UNUSABLE)
}

fn capitalized_kind(kind: &str) -> String {
    match kind.to_ascii_lowercase().as_str() {
        "deployment" | "deployments" | "deploy" => "Deployment".into(),
        "statefulset" | "statefulsets" | "sts" => "StatefulSet".into(),
        "horizontalpodautoscaler" | "horizontalpodautoscalers" | "hpa" => {
            "HorizontalPodAutoscaler".into()
        }
        "configmap" | "configmaps" | "cm" => "ConfigMap".into(),
        _ => kind.to_string(),
    }
}

/// The request the flags describe.
fn request_of(args: &PreflightArgs, stdin: &mut Stdin) -> Result<PreflightRequest, CheckError> {
    if let Some(path) = &args.request {
        let text = if path.as_os_str() == "-" {
            stdin.read().map_err(|e| CheckError::Input(e.to_string()))?
        } else {
            std::fs::read_to_string(path)
                .map_err(|e| CheckError::Input(format!("cannot read {}: {e}", path.display())))?
        };
        return serde_json::from_str(&text).map_err(|e| {
            CheckError::Input(format!("{}: not a preflight request: {e}", path.display()))
        });
    }
    let target = args.target.as_deref().ok_or_else(|| {
        CheckError::Input("name the object as <kind>/<name>, or give --request".into())
    })?;
    let (kind, name) = target
        .split_once('/')
        .ok_or_else(|| CheckError::Input(format!("{target}: expected <kind>/<name>")))?;
    let patch = args
        .patch
        .as_deref()
        .map(serde_json::from_str::<Value>)
        .transpose()
        .map_err(|e| CheckError::Input(format!("--patch is not JSON: {e}")))?;
    Ok(PreflightRequest {
        workload: WorkloadRef {
            api_version: None,
            kind: capitalized_kind(kind),
            namespace: args.target_namespace.clone(),
            name: name.to_string(),
        },
        change: IntendedChange {
            action: args.action.clone(),
            replicas: args.replicas,
            patch,
            object: None,
            annotations: args.annotations.iter().cloned().collect::<BTreeMap<_, _>>(),
            // Orphaning is asked with --request (change.propagationPolicy).
            propagation_policy: None,
        },
        subject: args.as_user.clone().map(|user| Subject {
            user,
            groups: args.as_groups.clone(),
        }),
        field_manager: args.field_manager.clone(),
        current: None,
    })
}

fn print_and_exit(answer: &Value) -> ExitCode {
    match serde_json::to_string_pretty(answer) {
        Ok(text) => println!("{text}"),
        Err(error) => return unusable(error),
    }
    if answer.get("allowed").and_then(Value::as_bool) == Some(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub fn run(args: PreflightArgs) -> ExitCode {
    let mut stdin = Stdin::default();
    let request = match request_of(&args, &mut stdin) {
        Ok(request) => request,
        Err(error) => return unusable(error),
    };
    match &args.server {
        Some(server) => remote(&args, server, &request),
        None => offline(&args, request, &mut stdin),
    }
}

fn remote(args: &PreflightArgs, server: &str, request: &PreflightRequest) -> ExitCode {
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => token.trim().to_string(),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(token) => token.trim().to_string(),
            Err(e) => return unusable(format!("cannot read {}: {e}", path.display())),
        },
        (None, None) => {
            return unusable("--token or --token-file is needed to ask a running slo-guard");
        }
    };
    let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
    if let Some(path) = &args.ca_file {
        let pem = match std::fs::read(path) {
            Ok(pem) => pem,
            Err(e) => return unusable(format!("cannot read {}: {e}", path.display())),
        };
        match reqwest::Certificate::from_pem(&pem) {
            Ok(ca) => builder = builder.add_root_certificate(ca),
            Err(e) => return unusable(format!("{}: not a PEM certificate: {e}", path.display())),
        }
    }
    let client = match builder.build() {
        Ok(client) => client,
        Err(e) => return unusable(format!("cannot make an HTTPS client: {e}")),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return unusable(format!("cannot start the async runtime: {e}")),
    };
    let url = format!("{}/v1/preflight", server.trim_end_matches('/'));
    let answer = runtime.block_on(async {
        let response = client
            .post(&url)
            .bearer_auth(&token)
            .json(request)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = response.text().await.map_err(|e| format!("{url}: {e}"))?;
        if !status.is_success() {
            let retry = retry_after.map_or_else(String::new, |s| format!(" (retry after {s}s)"));
            return Err(format!("{url}: {status}{retry}: {text}"));
        }
        serde_json::from_str::<Value>(&text).map_err(|e| format!("{url}: not JSON: {e}"))
    });
    match answer {
        Ok(answer) => print_and_exit(&answer),
        Err(error) => unusable(error),
    }
}

fn offline(args: &PreflightArgs, mut request: PreflightRequest, stdin: &mut Stdin) -> ExitCode {
    if args.policies.policies.is_empty() {
        return unusable(
            "give --server (ask a running slo-guard) or --policies (judge offline against policy files)",
        );
    }
    let Some(user) = args.as_user.clone() else {
        return unusable("offline, --as names the identity the change is judged for");
    };
    let prepared = (|| {
        let sources = manifests::read_policy_sources(&args.policies.policies, stdin)?;
        let setting = Setting {
            policies: sources.configmaps,
            slo_specs: sources.slo_specs,
            namespace: args.policies.namespace.clone(),
            workloads: manifests::workloads_of(&args.workloads, stdin)?,
            slo: args.slo.source()?,
        };
        let guard = setting.guard(&[])?;
        if request.current.is_none() {
            let candidates = match &args.current {
                Some(path) => manifests::read_manifests(std::slice::from_ref(path), stdin)?,
                None => manifests::read_manifests(&args.workloads, stdin).unwrap_or_default(),
            };
            request.current = candidates
                .into_iter()
                .find(|m| {
                    m.kind() == request.workload.kind
                        && m.name() == request.workload.name
                        && m.namespace() == request.workload.namespace
                })
                .map(|m| m.value);
            if args.current.is_some() && request.current.is_none() {
                return Err(CheckError::Input(format!(
                    "--current holds no {} {}/{}",
                    request.workload.kind, request.workload.namespace, request.workload.name
                )));
            }
        }
        Ok::<_, CheckError>(guard)
    })();
    let guard = match prepared {
        Ok(guard) => guard,
        Err(error) => return unusable(error),
    };
    let requester = Requester {
        user,
        groups: args.as_groups.clone(),
        field_manager: args.field_manager.clone(),
        dry_run: false,
    };
    let now = args.now.unwrap_or_else(Utc::now);
    let answer = if guard.slo.is_live() {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => return unusable(format!("cannot start the async runtime: {e}")),
        };
        crate::preflight::prepare(&guard, &request, &requester, request.current.as_ref(), now)
            .and_then(|prepared| {
                let assessments = runtime.block_on(guard.assess(&prepared.bodies, now))?;
                let subject = serde_json::json!({"user": requester.user});
                Ok(prepared.answer(assessments, &subject, now))
            })
    } else {
        crate::preflight::answer_offline(&guard, &request, &requester, now)
    };
    match answer {
        Ok(answer) => print_and_exit(&answer),
        Err(error) => unusable(error),
    }
}
