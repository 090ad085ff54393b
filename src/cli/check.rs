//! `slo-guard check`: judges one change offline in the apiserver's order. The mutating
//! webhook answers first, its patch is applied, and the validating webhook judges the
//! patched object, as kube-apiserver does. The change comes as an AdmissionReview file or
//! as manifests, from which the review is built as the apiserver would build it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::PolicyArgs;
use super::manifests::{self, Manifest, ManifestError, Stdin};
use super::request::{self, ManifestChange, Operation, Requester, Subresource};
use super::serve::PrometheusArgs;
use crate::admission::{ReviewResponse, WorkloadKind, WorkloadSnapshot};
use crate::guard::{Endpoint, Guard};
use crate::metrics::Metrics;
use crate::reflection::learn::WorkloadState;
use crate::rules::Decision;
use crate::slo::{CannedAnswers, SloSource};
use crate::store::{ConfigMapDocument, PolicyStore, StoreEvent};

/// Which webhooks judge: both in the apiserver's order, or one alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Webhooks {
    /// Mutate, apply the patch, then validate the patched object (the apiserver's order).
    Both,
    Validate,
    Mutate,
}

/// The flags of `slo-guard check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The policies to judge with.
    #[command(flatten)]
    pub policies: PolicyArgs,
    /// The AdmissionReview JSON file, as the apiserver sends it (`-` for standard input).
    #[arg(long, env = "SLO_GUARD_REVIEW", required_unless_present = "object", conflicts_with_all = ["object", "old_object"])]
    pub review: Option<PathBuf>,
    /// The object after the change: manifests (files, directories, `-`), one request per
    /// object. For `--operation DELETE`, the object deleted.
    #[arg(long, value_delimiter = ',')]
    pub object: Vec<PathBuf>,
    /// The objects as stored before the change, matched to `--object` by kind, namespace
    /// and name; given, the operation is UPDATE.
    #[arg(long, value_delimiter = ',', requires = "object")]
    pub old_object: Vec<PathBuf>,
    /// The user the request comes from, as `kubectl --as`.
    #[arg(long = "as", required_unless_present = "review")]
    pub as_user: Option<String>,
    /// The user's groups, as `kubectl --as-group`; without it a service account gets its
    /// own groups. `system:authenticated` is always added, as the apiserver does.
    #[arg(long, value_delimiter = ',', requires = "object")]
    pub groups: Vec<String>,
    /// The field manager (`options.fieldManager`), which may make a request an agent's.
    #[arg(long, requires = "object")]
    pub field_manager: Option<String>,
    /// CREATE without --old-object, UPDATE with one, unless given.
    #[arg(long, value_enum, ignore_case = true, requires = "object")]
    pub operation: Option<Operation>,
    /// Judge the request to the object's subresource (`scale`: a Scale is built from the
    /// workload manifests).
    #[arg(long, value_enum, requires = "object")]
    pub subresource: Option<Subresource>,
    /// A server-side dry run (`kubectl --dry-run=server`).
    #[arg(long, default_value_t = false, requires = "object")]
    pub dry_run: bool,
    /// Workload manifests (Deployment or StatefulSet) standing in for the watch cache, for
    /// scale requests and HPAs whose decision context lives on the parent workload. The old
    /// objects of the change are in it too, as they are in a cluster.
    #[arg(long = "workload", env = "SLO_GUARD_WORKLOADS", value_delimiter = ',')]
    pub workloads: Vec<PathBuf>,
    /// Which webhooks judge: `both` (mutate, patch, validate, as the apiserver), or one.
    #[arg(long, value_enum, default_value = "both")]
    pub webhook: Webhooks,
    /// Same as `--webhook mutate` (kept for scripts written before --webhook).
    #[arg(long, default_value_t = false, hide = true, conflicts_with = "webhook")]
    pub mutate: bool,
    /// The time to judge at (RFC 3339), for reproducible checks; defaults to now.
    #[arg(long, env = "SLO_GUARD_NOW")]
    pub now: Option<DateTime<Utc>>,
    /// Where the SLO figures come from: canned answers or a live Prometheus.
    #[command(flatten)]
    pub slo: SloArgs,
}

/// Where an offline judgement's SLO figures come from: canned answers, or a live
/// Prometheus. `check` and `preflight` share these flags; `preflight` words the
/// `--prometheus-answers` help its own way (see [`super::preflight::PreflightArgs`]).
#[derive(Debug, clap::Args)]
pub struct SloArgs {
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

impl SloArgs {
    /// The canned answers when given, else the live Prometheus (or none: the gate is off).
    pub fn source(&self) -> Result<SloSource, CheckError> {
        match &self.prometheus_answers {
            Some(path) => CannedAnswers::load(path)
                .map(|a| SloSource::Canned(Arc::new(a)))
                .map_err(|e| CheckError::Input(e.to_string())),
            None => self
                .prometheus
                .source()
                .map_err(|e| CheckError::Input(format!("{e:#}"))),
        }
    }
}

/// Why `check` cannot judge: its input is unusable (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The manifests cannot be read.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// No request can be built from them.
    #[error(transparent)]
    Request(#[from] request::RequestError),
    /// A policy is invalid.
    #[error("invalid policy: {0}")]
    Policy(String),
    /// The AdmissionReview cannot be judged.
    #[error("{0}")]
    Review(#[from] crate::admission::AdmissionError),
    /// Some other input is unusable.
    #[error("{0}")]
    Input(String),
}

const UNUSABLE: u8 = 2;

/// One webhook's answer.
#[derive(Debug)]
pub struct Answer {
    /// The webhook's registered name, which kubectl prints in a denial.
    pub webhook: &'static str,
    /// The webhook's endpoint: validate or mutate.
    pub endpoint: Endpoint,
    /// The response as the apiserver gets it.
    pub response: ReviewResponse,
    /// The decision behind it, when the rules were reached.
    pub decision: Option<Decision>,
}

impl Answer {
    /// The JSON Patch the answer carries, as JSON.
    pub fn patch(&self) -> Option<Value> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.response.patch.as_ref()?)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// What the apiserver's admission chain made of one request.
#[derive(Debug)]
pub struct Outcome {
    /// The mutating webhook's answer; None when it was not asked (one side only, or a
    /// request the mutating webhook is not registered for, such as a DELETE).
    pub mutate: Option<Answer>,
    /// The validating webhook's answer; None when it was not asked, or when the mutating
    /// webhook denied (the apiserver stops there).
    pub validate: Option<Answer>,
    /// The object after the mutating patch: what would be stored if admitted.
    pub object: Value,
}

impl Outcome {
    /// The answer that decided: a denial, else the last one given.
    pub fn deciding(&self) -> Option<&Answer> {
        match (&self.mutate, &self.validate) {
            (Some(mutate), _) if !mutate.response.allowed => Some(mutate),
            (_, Some(validate)) => Some(validate),
            (mutate, None) => mutate.as_ref(),
        }
    }

    /// Whether the change would be admitted.
    pub fn allowed(&self) -> bool {
        self.deciding().is_none_or(|a| a.response.allowed)
    }

    /// The decision behind the deciding answer, for the rules that fired.
    pub fn decision(&self) -> Option<&Decision> {
        self.validate
            .as_ref()
            .and_then(|a| a.decision.as_ref())
            .or_else(|| self.mutate.as_ref().and_then(|a| a.decision.as_ref()))
    }
}

fn resource(review: &Value) -> &str {
    review
        .pointer("/request/resource/resource")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn has_label(review: &Value, label: &str) -> bool {
    [
        "/request/object/metadata/labels",
        "/request/oldObject/metadata/labels",
    ]
    .iter()
    .any(|p| review.pointer(p).and_then(|l| l.get(label)).is_some())
}

/// Whether slo-guard's MutatingWebhookConfiguration sends this request to `/mutate`:
/// CREATE and UPDATE of Deployments, StatefulSets, their scale and HPAs, and of reflection
/// ConfigMaps (webhooks/mutating-webhook.yaml).
pub fn mutating_webhook_for(review: &Value) -> Option<&'static str> {
    let operation = review.pointer("/request/operation").and_then(Value::as_str);
    if !matches!(operation, Some("CREATE" | "UPDATE")) {
        return None;
    }
    match resource(review) {
        "deployments" | "statefulsets" | "horizontalpodautoscalers" => Some("mutate.slo-guard.io"),
        "configmaps" if has_label(review, crate::admission::REFLECTION_LABEL) => {
            Some("author.slo-guard.io")
        }
        _ => None,
    }
}

/// The name of the validating webhook that sends this request (webhooks/validating-webhook.yaml).
pub fn validating_webhook_for(review: &Value) -> &'static str {
    let deletes = review.pointer("/request/operation").and_then(Value::as_str) == Some("DELETE");
    match resource(review) {
        "configmaps" if has_label(review, crate::admission::POLICY_LABEL) => "config.slo-guard.io",
        "configmaps" if has_label(review, crate::admission::REFLECTION_LABEL) || !deletes => {
            "reflection.config.slo-guard.io"
        }
        "services" => "pods.slo-guard.io",
        "deployments" | "statefulsets" | "horizontalpodautoscalers" => {
            crate::verdict::VALIDATING_WEBHOOK
        }
        // Every other delete may be of a governed workload's owner.
        _ if deletes => "owners.slo-guard.io",
        "pods" | "replicasets" | "daemonsets" | "jobs" | "cronjobs" | "replicationcontrollers" => {
            "pods.slo-guard.io"
        }
        _ => crate::verdict::VALIDATING_WEBHOOK,
    }
}

/// Judges `review` with `guard` as the apiserver's admission chain would: the mutating
/// webhook, its patch applied to the object, then the validating webhook.
pub fn judge_in_apiserver_order(
    guard: &Guard,
    review: &Value,
    webhooks: Webhooks,
    now: DateTime<Utc>,
) -> Result<Outcome, CheckError> {
    let runtime = if guard.slo.is_live() {
        // Only a live Prometheus needs a runtime; the offline paths stay synchronous.
        Some(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| CheckError::Input(format!("cannot start the async runtime: {e}")))?,
        )
    } else {
        None
    };
    let ask = |endpoint: Endpoint, review: &Value, webhook: &'static str| {
        let body = serde_json::to_vec(review).map_err(|e| CheckError::Input(e.to_string()))?;
        let judgement = match &runtime {
            Some(runtime) => runtime.block_on(guard.review_async(endpoint, &body, now)),
            None => guard.review(endpoint, &body, now),
        }?;
        Ok::<_, CheckError>(Answer {
            webhook,
            endpoint,
            response: judgement.response,
            decision: judgement.decision,
        })
    };
    let mut review = review.clone();
    let mut mutate = None;
    let mutating = match webhooks {
        Webhooks::Both => mutating_webhook_for(&review),
        Webhooks::Mutate => Some(mutating_webhook_for(&review).unwrap_or("mutate.slo-guard.io")),
        Webhooks::Validate => None,
    };
    if let Some(webhook) = mutating {
        let answer = ask(Endpoint::Mutate, &review, webhook)?;
        if let Some(patch) = answer.patch() {
            let patch: json_patch::Patch = serde_json::from_value(patch).map_err(|e| {
                CheckError::Input(format!("the mutating patch is not a JSON Patch: {e}"))
            })?;
            if let Some(object) = review.pointer_mut("/request/object") {
                json_patch::patch(object, &patch).map_err(|e| {
                    CheckError::Input(format!("the mutating patch does not apply: {e}"))
                })?;
            }
        }
        let denied = !answer.response.allowed;
        mutate = Some(answer);
        if denied {
            return Ok(Outcome {
                mutate,
                validate: None,
                object: review["request"]["object"].clone(),
            });
        }
    }
    let validate = match webhooks {
        Webhooks::Mutate => None,
        _ => Some(ask(
            Endpoint::Validate,
            &review,
            validating_webhook_for(&review),
        )?),
    };
    Ok(Outcome {
        mutate,
        validate,
        object: review["request"]["object"].clone(),
    })
}

/// What the judging needs besides the request: the policies, the workloads in the watch
/// cache, the SLO answers.
pub struct Setting {
    /// The policy ConfigMaps.
    pub policies: Vec<ConfigMapDocument>,
    /// The SLO specs the policies may name in `slo.source`.
    pub slo_specs: Vec<crate::slo_spec::SloSpecDocument>,
    /// slo-guard's own namespace, where cluster-wide policies live.
    pub namespace: String,
    /// The workloads standing in for the watch cache.
    pub workloads: Vec<WorkloadState>,
    /// Where SLO figures come from.
    pub slo: SloSource,
}

impl Setting {
    /// A guard over this setting, with `extra` workloads (the old objects of the change,
    /// which a cluster's watch cache holds) under the given ones.
    pub fn guard(&self, extra: &[WorkloadState]) -> Result<Guard, CheckError> {
        let store = Arc::new(PolicyStore::new(self.namespace.clone()));
        let sources = crate::store::PolicySources {
            configmaps: self.policies.clone(),
            slo_specs: self.slo_specs.clone(),
        };
        let (spec_events, events) = store.replace_sources(&sources);
        for event in spec_events {
            if let crate::slo_spec::CatalogEvent::Rejected { error, .. } = event {
                return Err(CheckError::Policy(error));
            }
        }
        for event in events {
            if let StoreEvent::Rejected { error, .. } = event {
                return Err(CheckError::Policy(error.to_string()));
            }
        }
        let mut cache: BTreeMap<(WorkloadKind, String, String), WorkloadSnapshot> = BTreeMap::new();
        for workload in extra.iter().chain(&self.workloads) {
            cache.insert(
                (
                    workload.kind,
                    workload.namespace.clone(),
                    workload.name.clone(),
                ),
                WorkloadSnapshot {
                    labels: workload.labels.clone(),
                    pod_labels: workload.pod_labels.clone(),
                    annotations: workload.annotations.clone(),
                    replicas: workload.replicas,
                    owner_uids: workload.owner_uids.clone(),
                },
            );
        }
        Ok(Guard::new(store, Arc::new(cache), Arc::new(Metrics::new())).with_slo(self.slo.clone()))
    }
}

/// The changes `--object` and `--old-object` describe: one per object, each with the old
/// object of the same kind, namespace and name.
pub fn pair_changes(
    objects: Vec<Manifest>,
    mut olds: Vec<Manifest>,
    operation: Option<Operation>,
    subresource: Option<Subresource>,
) -> Result<Vec<ManifestChange>, CheckError> {
    let key = |m: &Manifest| {
        (
            m.kind().to_string(),
            m.namespace().to_string(),
            m.name().to_string(),
        )
    };
    let mut changes = Vec::new();
    for object in objects {
        let old = olds
            .iter()
            .position(|o| key(o) == key(&object))
            .map(|at| olds.remove(at));
        changes.push(ManifestChange {
            object: Some(object),
            old,
            operation,
            subresource,
            propagation_policy: None,
        });
    }
    if let Some(unmatched) = olds.first() {
        let (kind, namespace, name) = key(unmatched);
        return Err(CheckError::Input(format!(
            "{}: old object {kind} {namespace}/{name} matches no --object",
            unmatched.origin
        )));
    }
    Ok(changes)
}

/// The workloads an old object stands for in the watch cache, the parent of a Scale
/// included.
pub fn stored_workloads(change: &ManifestChange) -> Vec<WorkloadState> {
    change
        .old
        .iter()
        .chain(
            change
                .object
                .iter()
                .filter(|_| change.subresource.is_some() && change.old.is_none()),
        )
        .filter_map(manifests::workload_state)
        .collect()
}

fn print_answer(answer: &Answer) {
    let verdict = if answer.response.allowed {
        "allowed"
    } else {
        "denied"
    };
    eprintln!(
        "{} ({}): {verdict}",
        answer.webhook,
        answer.endpoint.as_str()
    );
    if let Some(patch) = answer
        .patch()
        .filter(|p| p.as_array().is_some_and(|a| !a.is_empty()))
    {
        eprintln!("patch: {patch}");
    }
    for warning in &answer.response.warnings {
        eprintln!("Warning: {warning}");
    }
    if !answer.response.allowed {
        eprintln!(
            "Error from server (Forbidden): {}",
            answer.response.kubectl_line(answer.webhook)
        );
    }
}

fn unusable(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(UNUSABLE)
}

/// The reviews to judge, each with the workloads its old objects put in the cache.
fn reviews(
    args: &CheckArgs,
    stdin: &mut Stdin,
) -> Result<Vec<(Value, Vec<WorkloadState>)>, CheckError> {
    if let Some(path) = &args.review {
        let text = if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| CheckError::Input(format!("cannot read standard input: {e}")))?;
            text
        } else {
            std::fs::read_to_string(path)
                .map_err(|e| CheckError::Input(format!("cannot read {}: {e}", path.display())))?
        };
        let review: Value = serde_json::from_str(&text).map_err(|e| {
            CheckError::Input(format!("{}: not an AdmissionReview: {e}", path.display()))
        })?;
        return Ok(vec![(review, Vec::new())]);
    }
    let requester = Requester {
        user: args.as_user.clone().unwrap_or_default(),
        groups: args.groups.clone(),
        field_manager: args.field_manager.clone(),
        dry_run: args.dry_run,
    };
    let objects = manifests::read_manifests(&args.object, stdin)?;
    let olds = if args.old_object.is_empty() {
        Vec::new()
    } else {
        manifests::read_manifests(&args.old_object, stdin)?
    };
    pair_changes(objects, olds, args.operation, args.subresource)?
        .iter()
        .map(|change| {
            Ok((
                request::build_review(change, &requester)?,
                stored_workloads(change),
            ))
        })
        .collect()
}

/// Exit 0 allowed, 1 denied, 2 unusable input (unreadable files, invalid policies, a
/// body that is not an AdmissionReview).
pub fn run(args: CheckArgs) -> ExitCode {
    if args.policies.policies.is_empty() {
        return unusable(
            "--policies is required: give the policy ConfigMap files or directories to judge against",
        );
    }
    let mut stdin = Stdin::default();
    let setting = (|| {
        let sources = manifests::read_policy_sources(&args.policies.policies, &mut stdin)?;
        Ok::<_, CheckError>(Setting {
            policies: sources.configmaps,
            slo_specs: sources.slo_specs,
            namespace: args.policies.namespace.clone(),
            workloads: manifests::workloads_of(&args.workloads, &mut stdin)?,
            slo: args.slo.source()?,
        })
    })();
    let setting = match setting {
        Ok(setting) => setting,
        Err(error) => return unusable(error),
    };
    let reviews = match reviews(&args, &mut stdin) {
        Ok(reviews) => reviews,
        Err(error) => return unusable(error),
    };
    let webhooks = if args.mutate {
        Webhooks::Mutate
    } else {
        args.webhook
    };
    let now = args.now.unwrap_or_else(Utc::now);
    let mut all_allowed = true;
    for (review, stored) in &reviews {
        let outcome = setting
            .guard(stored)
            .and_then(|guard| judge_in_apiserver_order(&guard, review, webhooks, now));
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => return unusable(error),
        };
        for answer in outcome.mutate.iter().chain(&outcome.validate) {
            print_answer(answer);
        }
        // stdout: the deciding answer as the apiserver received it, for scripts.
        if let Some(answer) = outcome.deciding() {
            let envelope: Value =
                serde_json::from_slice(&answer.response.to_review_json()).unwrap_or_default();
            println!(
                "{}",
                serde_json::to_string_pretty(&envelope).unwrap_or_default()
            );
        }
        all_allowed &= outcome.allowed();
    }
    if all_allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
