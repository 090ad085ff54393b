//! Peer benchmark through a real kube-apiserver: what an agent feels when it writes
//! Deployments with no admission, with a ValidatingAdmissionPolicy, with slo-guard, and
//! with Kyverno doing the same checks, and with the apiserver's own policies and Kyverno
//! doing slo-guard's whole job (the checks and the stamp), side by side in one run, in a
//! namespace a policy governs and in one that no policy governs.
//!
//!     cargo bench --bench apiserver
//!     cargo bench --bench apiserver -- --seconds 8 --rounds 2 --warmup 3 \
//!         --concurrency 10,50,200 --setups none,vap,vap+map,slo-guard,kyverno,kyverno+mut \
//!         --workloads create,scale[,update] --out FILE [--apiserver-profile DIR] [--webhook-host HOST]
//!
//! Everything runs on 127.0.0.1 and stops by itself:
//! - a control plane (etcd + kube-apiserver v1.34, built from Go modules by
//!   tests/e2e/build-tools.sh and started by tests/e2e/cluster.sh in a fresh state dir);
//! - namespaces `bench-governed` (labelled `bench.slo-guard.io/governed=true`; the policy
//!   under test governs it) and `bench-open` (no policy governs it); in each, Deployments
//!   and ConfigMaps `bench-0` .. `bench-<max concurrency - 1>` created by the admin, the
//!   Deployments with an agent's
//!   decision context (`slo-guard.io/decision-id`, `reason`, `confidence: "0.9"`,
//!   `action: scale`) and 2 replicas;
//! - the agent: ServiceAccount `ai-agents/bench-agent`, a Role in both namespaces
//!   (deployments create/get/update/patch, deployments/scale and configmaps
//!   get/update/patch) and a
//!   bearer token from `kubectl create token`. The client (reqwest over rustls, one
//!   HTTP/2 connection, as client-go keeps one) sends every request as that agent;
//! - workloads, each request checked:
//!   - `create`: a server-side dry run (`?dryRun=All`) POST of a Deployment carrying the
//!     decision context, 2 replicas: 201 or a failure;
//!   - `scale`: a real merge PATCH of `deployments/bench-<worker>/scale`, alternating
//!     each worker's own Deployment between 3 and 2 replicas (a step of 1, within every
//!     cap): 200 or a failure;
//!   - `update` (only when named in `--workloads`): a real merge PATCH of the data of
//!     ConfigMap `bench-<worker>`, which no setup judges. It measures what slo-guard's
//!     `owners.slo-guard.io` costs an update it does not judge: in a governed namespace
//!     the apiserver evaluates its match conditions (an update that gives no owner is not
//!     sent); in the other, its namespaceSelector leaves the update alone;
//! - setups: every setup's processes start before the first measurement (so the
//!   background load is the same for every cell), and its admission is put in force only
//!   for its own blocks: the VAP and binding created, slo-guard's webhook configurations
//!   applied, Kyverno's policy created, and removed again after the block. After each
//!   switch a probe (a dry-run create of 50 replicas by the agent) must be denied in
//!   `bench-governed` and admitted in `bench-open` (admitted in both when none is in
//!   force), and an admitted create must come back stamped in `bench-governed` only under
//!   the setups that stamp (`vap+map`, `slo-guard`, `kyverno+mut`), so the setup measured is known to be
//!   the one in force:
//!   - `none`: no admission beyond the apiserver's built-in plugins;
//!   - `vap`: a ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1) and its
//!     binding, for `bench-governed` only (namespaceSelector), matching agents
//!     (`system:serviceaccount:ai-agents:*`) by a matchCondition, with slo-guard's checks
//!     for this policy in CEL: the decision-context annotations present, a confidence
//!     of at least 0.7, 1 to 20 replicas, a step of at most 5. A VAP cannot read the
//!     parent Deployment of a Scale, so for a scale it checks only replicas and step;
//!   - `vap+map`: the same VAP, and a MutatingAdmissionPolicy (admissionregistration.k8s.io/
//!     v1beta1; beta and off by default in 1.34, so when this setup is measured the whole
//!     run's apiserver has its feature gate and API on) that stamps an agent's Deployment
//!     with what slo-guard's mutating webhook stamps, by the same JSON Patch: the peer that
//!     does slo-guard's whole job inside the apiserver. The report shows both stamps and
//!     the run fails if they differ (but for the time of the change: CEL has no clock);
//!   - `slo-guard`: `slo-guard serve --watch-configmaps` (the binary cargo built with this
//!     bench: target/release/slo-guard under `cargo bench`) as a local process, its
//!     webhooks registered from webhooks/local/*.yaml (clientConfig.url, failurePolicy
//!     Fail; see "webhook URLs" below) and scoped by slo-guard to the namespaces its policies govern
//!     (`--webhook-scope policies`, as the chart runs it), and the policy ConfigMap `bench-governed/bench-agents`:
//!     agents `system:serviceaccount:ai-agents:*`, `minConfidence: 0.7`, the default
//!     required annotations, `scaling: {minReplicas: 1, maxReplicas: 20, maxStep: 5}`; no
//!     SLO section (no Prometheus), no cooldown or approval (no change-ledger writes).
//!     For a scale it reads the parent Deployment's annotations from its watch cache;
//!   - `kyverno`: Kyverno's admission controller (tests/e2e/build-kyverno.sh builds it
//!     from its Go module into ~/.cache/slo-guard-e2e/bin; the bench runs the script,
//!     which returns at once when the binary is up to date), with its CRDs from the
//!     module's config/crds, run out of cluster with the admin kubeconfig and its
//!     webhooks listening on 127.0.0.1 and registered by URL (`--serverIP`, see "webhook
//!     URLs" below), and a Kyverno `ValidatingPolicy` holding the
//!     VAP's CEL. A setup that cannot run is printed as `not run: <reason>`;
//!   - `kyverno+mut`: the same Kyverno process, with the ValidatingPolicy and a Kyverno
//!     `MutatingPolicy` holding `vap+map`'s mutation (its stamp is compared the same way);
//! - cells: a setup, workload, namespace and concurrency (closed loop: that many workers,
//!   each with one request in flight). Each cell is measured for `--seconds` (8) in all,
//!   in `--rounds` (2) slices of equal length, each after `--warmup` s (3) at the same
//!   concurrency and in the same namespace. The warm-up is long enough for the apiserver
//!   to work off what the cell before left (an ungoverned cell follows its setup's
//!   governed one, whose webhook calls allocate several times as much): after 0.5 s,
//!   slo-guard's ungoverned creates, where no webhook is called, measured 89-95% of
//!   `none`'s in two runs on 2026-12-01; after 3 s, 102% (and the apiserver's CPU per
//!   request 1.29 ms against 1.32 ms). A round runs, per workload, one block per setup
//!   (both namespaces, every level, alternating governed and ungoverned); odd rounds take
//!   the setups in reverse order, so a drift in the machine's load weighs on all of them
//!   alike. Latency is per
//!   request, from send to the last byte of the answer; throughput is checked requests
//!   per second of measured wall time. Defaults: 6 setups x 2 workloads x 2 namespaces x
//!   3 levels = 72 cells, 144 slices, about 19 min with the control plane's start (run 7
//!   on 2026-12-01: 1,117 s).
//!
//! Webhook URLs: kube-apiserver calls a webhook behind a Service over HTTP/1.1, but a
//! webhook registered by a URL on `localhost` or a loopback address over HTTP/2
//! (k8s.io/apiserver pkg/util/webhook/client.go, `isLocalHost`). So that slo-guard and
//! Kyverno are called as in a cluster, their URLs name the machine by its host name when
//! that resolves to loopback addresses only (as /etc/hosts has it here), and 127.0.0.1
//! otherwise; `--webhook-host HOST` chooses. The report's header says which, and the
//! protocol.
//!
//! The apiserver's own metrics, read before and after each measured cell, give the
//! admission webhook calls per request and their mean round trip as the apiserver saw
//! it, and the other API requests it served per benchmark request (those the admission
//! server under test made while judging, plus background work such as lease renewals);
//! slo-guard's `/metrics` gives its own time per review. With `--apiserver-profile DIR`
//! (and `SLO_GUARD_E2E_APISERVER_PROFILING=true`, which turns the apiserver's profiling
//! on) the apiserver's CPU profile over each measured slice is saved there
//! (`<setup>-<namespace>-<workload>-c<n>-r<round>.pprof`; read with `go tool pprof -top`). The tables go to stdout
//! (and to `--out FILE`): one row per cell with avg, p95 and p99 latency and throughput,
//! then the throughput ratios against `none`, `vap`, `vap+map` and `kyverno+mut`.
//!
//! Everything shares the machine's cores: the client (one tokio thread), the apiserver,
//! etcd, and the admission server under test.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it is a smoke run of a few
//! seconds: setups none, vap, vap+map and slo-guard (the debug binary), concurrency 2, 0.3 s
//! cells, and it fails only if a request fails or a peer stamps other than slo-guard.
//! Kyverno is left out of the smoke run, so a missing Kyverno build never fails
//! `cargo test`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use slo_guard_testkit::e2e::*;
use slo_guard_testkit::policies::policy_configmap;

const GOVERNED: &str = "bench-governed";
const OPEN: &str = "bench-open";
const AGENT_SA: &str = "bench-agent";

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Setup {
    None,
    Vap,
    VapMap,
    SloGuard,
    Kyverno,
    KyvernoMut,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::None => "none",
            Setup::Vap => "vap",
            Setup::VapMap => "vap+map",
            Setup::SloGuard => "slo-guard",
            Setup::Kyverno => "kyverno",
            Setup::KyvernoMut => "kyverno+mut",
        }
    }
    fn parse(s: &str) -> Setup {
        match s {
            "none" => Setup::None,
            "vap" => Setup::Vap,
            "vap+map" => Setup::VapMap,
            "slo-guard" | "sloguard" => Setup::SloGuard,
            "kyverno" => Setup::Kyverno,
            "kyverno+mut" => Setup::KyvernoMut,
            other => die(&format!(
                "unknown setup {other:?} (none, vap, vap+map, slo-guard, kyverno, kyverno+mut)"
            )),
        }
    }
    /// The policy objects a setup puts in force, each as its manifest and the kinds and
    /// name it is deleted by. slo-guard's webhook configurations are not among them: they
    /// need its port and CA.
    fn policies(self) -> Vec<(String, &'static str, &'static str)> {
        let vap = (
            vap_manifest(),
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            "bench-agents",
        );
        // Kyverno drops its webhook for a policy when the policy goes.
        let kyverno = (
            kyverno_policy(),
            "validatingpolicies.policies.kyverno.io",
            "bench-agents",
        );
        match self {
            Setup::None | Setup::SloGuard => Vec::new(),
            Setup::Vap => vec![vap],
            Setup::VapMap => vec![
                vap,
                (
                    map_manifest(),
                    "mutatingadmissionpolicybinding,mutatingadmissionpolicy",
                    "bench-stamp",
                ),
            ],
            Setup::Kyverno => vec![kyverno],
            Setup::KyvernoMut => vec![
                kyverno,
                (
                    kyverno_stamp_policy(),
                    "mutatingpolicies.policies.kyverno.io",
                    "bench-stamp",
                ),
            ],
        }
    }
    /// Whether an admitted agent create comes back with slo-guard's decision context
    /// stamped on it.
    fn stamps(self) -> bool {
        matches!(self, Setup::VapMap | Setup::SloGuard | Setup::KyvernoMut)
    }
    /// Whether the setup's admission runs in a server of its own, outside the apiserver.
    fn has_admission_server(self) -> bool {
        matches!(self, Setup::SloGuard | Setup::Kyverno | Setup::KyvernoMut)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Workload {
    Create,
    Scale,
    Update,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Create => "create",
            Workload::Scale => "scale",
            Workload::Update => "update",
        }
    }
}

struct Options {
    full: bool,
    seconds: f64,
    rounds: usize,
    warmup: f64,
    concurrency: Vec<usize>,
    setups: Vec<Setup>,
    workloads: Vec<Workload>,
    out: Option<PathBuf>,
    /// A folder for a CPU profile of the apiserver over each measured slice.
    apiserver_profile: Option<PathBuf>,
    /// The host in slo-guard's and Kyverno's webhook URLs; None picks one (see
    /// [`webhook_host`]).
    webhook_host: Option<String>,
}

fn die(message: &str) -> ! {
    eprintln!("apiserver: {message}");
    std::process::exit(2)
}

impl Options {
    fn parse() -> Options {
        let args: Vec<String> = std::env::args().collect();
        let full = args.iter().any(|a| a == "--bench");
        let mut o = if full {
            Options {
                full,
                seconds: 8.0,
                rounds: 2,
                warmup: 3.0,
                concurrency: vec![10, 50, 200],
                setups: vec![
                    Setup::None,
                    Setup::Vap,
                    Setup::VapMap,
                    Setup::SloGuard,
                    Setup::Kyverno,
                    Setup::KyvernoMut,
                ],
                workloads: vec![Workload::Create, Workload::Scale],
                out: None,
                apiserver_profile: None,
                webhook_host: None,
            }
        } else {
            Options {
                full,
                seconds: 0.3,
                rounds: 1,
                warmup: 0.1,
                concurrency: vec![2],
                setups: vec![Setup::None, Setup::Vap, Setup::VapMap, Setup::SloGuard],
                workloads: vec![Workload::Create, Workload::Scale],
                out: None,
                apiserver_profile: None,
                webhook_host: None,
            }
        };
        let mut it = args.iter().skip(1);
        while let Some(arg) = it.next() {
            let mut value = |name: &str| -> String {
                it.next()
                    .cloned()
                    .unwrap_or_else(|| die(&format!("{name} needs a value")))
            };
            let number = |name: &str, v: String| -> f64 {
                v.parse()
                    .unwrap_or_else(|_| die(&format!("{name} needs a number, got {v:?}")))
            };
            match arg.as_str() {
                "--seconds" => o.seconds = number("--seconds", value("--seconds")),
                "--warmup" => o.warmup = number("--warmup", value("--warmup")),
                "--rounds" => o.rounds = number("--rounds", value("--rounds")) as usize,
                "--concurrency" => {
                    o.concurrency = value("--concurrency")
                        .split(',')
                        .map(|c| number("--concurrency", c.trim().to_string()) as usize)
                        .collect()
                }
                "--setups" => {
                    o.setups = value("--setups")
                        .split(',')
                        .map(|s| Setup::parse(s.trim()))
                        .collect()
                }
                "--workloads" => {
                    o.workloads = value("--workloads")
                        .split(',')
                        .map(|w| match w.trim() {
                            "create" => Workload::Create,
                            "scale" => Workload::Scale,
                            "update" => Workload::Update,
                            other => die(&format!("unknown workload {other:?} (create, scale)")),
                        })
                        .collect()
                }
                "--out" => o.out = Some(PathBuf::from(value("--out"))),
                "--webhook-host" => o.webhook_host = Some(value("--webhook-host")),
                "--apiserver-profile" => {
                    o.apiserver_profile = Some(PathBuf::from(value("--apiserver-profile")))
                }
                _ => {}
            }
        }
        if !(0.1..=600.0).contains(&o.seconds)
            || !(0.0..=60.0).contains(&o.warmup)
            || !(1..=20).contains(&o.rounds)
        {
            die("--seconds in [0.1, 600], --warmup in [0, 60], --rounds in 1..=20");
        }
        if o.concurrency.is_empty() || o.concurrency.iter().any(|&c| c == 0 || c > 1000) {
            die("--concurrency: a comma-separated list of levels in 1..=1000");
        }
        if o.apiserver_profile.is_some()
            && std::env::var("SLO_GUARD_E2E_APISERVER_PROFILING").as_deref() != Ok("true")
        {
            die(
                "--apiserver-profile needs SLO_GUARD_E2E_APISERVER_PROFILING=true in the environment (tests/e2e/cluster.sh then starts the apiserver with --profiling)",
            );
        }
        o.setups.sort();
        o.setups.dedup();
        o.workloads.sort();
        o.workloads.dedup();
        o
    }
}

// ---------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------

fn base_manifest() -> String {
    let mut m = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: ai-agents}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: slo-guard}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {GOVERNED}, labels: {{bench.slo-guard.io/governed: "true"}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {OPEN}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {AGENT_SA}, namespace: ai-agents}}
"#
    );
    // No controller-manager aggregates the built-in `edit` ClusterRole here: spell it out.
    for ns in [GOVERNED, OPEN] {
        let _ = write!(
            m,
            r#"---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: bench-agent, namespace: {ns}}}
rules:
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, update, patch]
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [get, update, patch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: bench-agent, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: bench-agent}}
subjects:
- {{kind: ServiceAccount, name: {AGENT_SA}, namespace: ai-agents}}
"#
        );
    }
    m
}

/// A Deployment as JSON, carrying an agent's decision context.
fn deployment_json(namespace: &str, name: &str, replicas: u32) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": "bench", "bench.slo-guard.io/worker": name},
            "annotations": {
                "slo-guard.io/decision-id": format!("{name}-d1"),
                "slo-guard.io/reason": "benchmark: queue depth rising",
                "slo-guard.io/confidence": "0.9",
                "slo-guard.io/action": "scale",
            },
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "bench", "bench.slo-guard.io/worker": name}},
            "template": {
                "metadata": {"labels": {"app": "bench", "bench.slo-guard.io/worker": name}},
                "spec": {"containers": [{
                    "name": "app",
                    "image": "registry.example.com/bench/app:1.0.0",
                    "ports": [{"containerPort": 8080}],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                }]},
            },
        },
    })
}

fn slo_guard_policy_manifest() -> String {
    policy_configmap(
        "bench-governed",
        "bench-agents",
        &[
            "match: {kinds: [Deployment]}",
            "action: enforce",
            "agents:",
            "  users: [\"system:serviceaccount:ai-agents:*\"]",
            "  minConfidence: 0.7",
            "scaling: {minReplicas: 1, maxReplicas: 20, maxStep: 5, appliesTo: agents}",
        ],
    )
}

/// The CEL both the VAP and Kyverno's ValidatingPolicy evaluate: slo-guard's checks for
/// `slo_guard_policy_manifest`. `object` is a Deployment, or an autoscaling/v1 Scale for the scale
/// subresource (which carries no annotations: those checks apply to Deployments only).
const CEL_SPEC: &str = r#"  matchConstraints:
    namespaceSelector:
      matchLabels: {bench.slo-guard.io/governed: "true"}
    resourceRules:
    - apiGroups: [apps]
      apiVersions: [v1]
      operations: [CREATE, UPDATE]
      resources: [deployments, deployments/scale]
  matchConditions:
  - name: agents
    expression: request.userInfo.username.startsWith('system:serviceaccount:ai-agents:')
  variables:
  - name: isScale
    expression: object.kind == 'Scale'
  - name: annotations
    expression: "has(object.metadata.annotations) ? object.metadata.annotations : {}"
  - name: replicas
    expression: "has(object.spec.replicas) ? object.spec.replicas : 1"
  validations:
  - expression: >-
      variables.isScale || ['slo-guard.io/decision-id', 'slo-guard.io/reason',
      'slo-guard.io/confidence', 'slo-guard.io/action'].all(k, k in variables.annotations)
    message: an agent change must carry slo-guard.io/decision-id, reason, confidence and action
  - expression: >-
      variables.isScale || !('slo-guard.io/confidence' in variables.annotations) ||
      (variables.annotations['slo-guard.io/confidence'].matches('^(0(\\.[0-9]+)?|1(\\.0+)?)$')
      && double(variables.annotations['slo-guard.io/confidence']) >= 0.7)
    message: slo-guard.io/confidence must be a number in [0, 1] and at least 0.7
  - expression: variables.replicas >= 1 && variables.replicas <= 20
    messageExpression: "'replicas ' + string(variables.replicas) + ' outside [1, 20] for agent changes'"
  - expression: >-
      request.operation != 'UPDATE' || oldObject == null ||
      (variables.replicas - (has(oldObject.spec.replicas) ? oldObject.spec.replicas : 1) <= 5
      && (has(oldObject.spec.replicas) ? oldObject.spec.replicas : 1) - variables.replicas <= 5)
    message: an agent may change replicas by at most 5 in one request
"#;

fn vap_manifest() -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: bench-agents}}
spec:
  failurePolicy: Fail
{CEL_SPEC}---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: bench-agents}}
spec:
  policyName: bench-agents
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {{bench.slo-guard.io/governed: "true"}}
"#
    )
}

/// What slo-guard's mutating webhook stamps on an agent's create admitted under
/// `slo_guard_policy_manifest`, done in the apiserver by a MutatingAdmissionPolicy: the same
/// four annotations, added by the same JSON Patch operations. The agent's reason is copied
/// into `kubernetes.io/change-cause` as slo-guard does; the thresholds and the verdict are
/// the values slo-guard writes for this policy, and the time a constant of the same length
/// (CEL has no clock), so the apiserver's work is that of slo-guard's patch. Scales are
/// left out, as slo-guard's mutating webhook leaves them out while no policy clamps.
fn map_manifest() -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1beta1
kind: MutatingAdmissionPolicy
metadata: {{name: bench-stamp}}
spec:
{spec}---
apiVersion: admissionregistration.k8s.io/v1beta1
kind: MutatingAdmissionPolicyBinding
metadata: {{name: bench-stamp}}
spec:
  policyName: bench-stamp
  matchResources:
    namespaceSelector:
      matchLabels: {{bench.slo-guard.io/governed: "true"}}
"#,
        spec = stamp_spec(),
    )
}

/// The spec of `map_manifest`'s policy, which Kyverno's MutatingPolicy shares.
fn stamp_spec() -> String {
    format!(
        r#"  failurePolicy: Fail
  reinvocationPolicy: IfNeeded
  matchConstraints:
    namespaceSelector:
      matchLabels: {{bench.slo-guard.io/governed: "true"}}
    resourceRules:
    - apiGroups: [apps]
      apiVersions: [v1]
      operations: [CREATE, UPDATE]
      resources: [deployments]
  matchConditions:
  - name: agents
    expression: request.userInfo.username.startsWith('system:serviceaccount:ai-agents:')
  mutations:
  - patchType: JSONPatch
    jsonPatch:
      expression: >-
        [
          JSONPatch{{op: "add", path: "/metadata/annotations/kubernetes.io~1change-cause",
            value: object.metadata.annotations["slo-guard.io/reason"]}},
          JSONPatch{{op: "add", path: "/metadata/annotations/slo-guard.io~1last-agent-change",
            value: "2026-11-30T12:00:00Z"}},
          JSONPatch{{op: "add", path: "/metadata/annotations/slo-guard.io~1thresholds",
            value: {thresholds}}},
          JSONPatch{{op: "add", path: "/metadata/annotations/slo-guard.io~1verdict",
            value: {verdict}}}
        ]
"#,
        thresholds = cel_string(STAMPED_THRESHOLDS),
        verdict = cel_string(STAMPED_VERDICT),
    )
}

/// Kyverno's MutatingPolicy with `map_manifest`'s spec.
fn kyverno_stamp_policy() -> String {
    format!(
        r#"apiVersion: policies.kyverno.io/v1
kind: MutatingPolicy
metadata: {{name: bench-stamp}}
spec:
{spec}"#,
        spec = stamp_spec(),
    )
}

/// `slo-guard.io/thresholds` as slo-guard stamps it under `slo_guard_policy_manifest`.
const STAMPED_THRESHOLDS: &str = r#"{"bench-governed/bench-agents":{"agents.minConfidence":{"from":"policy","value":0.7},"scaling.maxReplicas":{"from":"policy","value":20},"scaling.maxStep":{"from":"policy","value":5},"scaling.minReplicas":{"from":"policy","value":1}}}"#;
/// `slo-guard.io/verdict` as slo-guard stamps it on an agent's admitted create.
const STAMPED_VERDICT: &str = r#"{"actor":"agent","class":"create","policies":["bench-governed/bench-agents"],"verdict":"allowed"}"#;

/// A CEL string literal (single-quoted) holding `value`.
fn cel_string(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn kyverno_policy() -> String {
    format!(
        r#"apiVersion: policies.kyverno.io/v1
kind: ValidatingPolicy
metadata: {{name: bench-agents}}
spec:
  validationActions: [Deny]
  failurePolicy: Fail
{CEL_SPEC}"#
    )
}

// ---------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------

struct Target {
    client: reqwest::Client,
    api: String,
}

#[derive(Default)]
struct CellResult {
    latencies: Vec<Duration>,
    failures: usize,
    failure_kinds: BTreeMap<String, usize>,
    elapsed: Duration,
}

impl CellResult {
    fn merge(&mut self, other: CellResult) {
        self.latencies.extend(other.latencies);
        self.latencies.sort();
        self.failures += other.failures;
        for (kind, n) in other.failure_kinds {
            *self.failure_kinds.entry(kind).or_default() += n;
        }
        self.elapsed += other.elapsed;
    }
    fn ok(&self) -> usize {
        self.latencies.len()
    }
    fn throughput(&self) -> f64 {
        self.ok() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn avg_ms(&self) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        self.latencies.iter().map(|d| d.as_secs_f64()).sum::<f64>() * 1000.0
            / self.latencies.len() as f64
    }
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        // Nearest rank on the sorted latencies.
        let rank =
            ((p * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1].as_secs_f64() * 1000.0
    }
}

/// One request by worker `worker`; Ok(()) only for the status the workload expects.
async fn one_request(
    target: &Target,
    workload: Workload,
    namespace: &str,
    worker: usize,
    replicas_state: &[AtomicU32],
    create_body: &bytes::Bytes,
) -> Result<(), String> {
    let (request, expected) = match workload {
        Workload::Create => (
            target
                .client
                .post(format!(
                    "{}/apis/apps/v1/namespaces/{namespace}/deployments?dryRun=All",
                    target.api
                ))
                .header("content-type", "application/json")
                .body(create_body.clone()),
            201,
        ),
        Workload::Scale => {
            let next = if replicas_state[worker].load(Ordering::Relaxed) == 2 {
                3
            } else {
                2
            };
            (
                target
                    .client
                    .patch(format!(
                        "{}/apis/apps/v1/namespaces/{namespace}/deployments/bench-{worker}/scale",
                        target.api
                    ))
                    .header("content-type", "application/merge-patch+json")
                    .body(format!(r#"{{"spec":{{"replicas":{next}}}}}"#)),
                200,
            )
        }
        Workload::Update => (
            target
                .client
                .patch(format!(
                    "{}/api/v1/namespaces/{namespace}/configmaps/bench-{worker}",
                    target.api
                ))
                .header("content-type", "application/merge-patch+json")
                .body(format!(
                    r#"{{"data":{{"sent":"{}"}}}}"#,
                    UPDATES.fetch_add(1, Ordering::Relaxed)
                )),
            200,
        ),
    };
    let response = request
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    if status == expected {
        if workload == Workload::Scale {
            let replicas_state = &replicas_state[worker];
            let now = if replicas_state.load(Ordering::Relaxed) == 2 {
                3
            } else {
                2
            };
            replicas_state.store(now, Ordering::Relaxed);
        }
        return Ok(());
    }
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    let message: String = message.chars().take(160).collect();
    Err(format!("HTTP {status}: {message}"))
}

/// Makes every update workload request change its ConfigMap, so that none is a no-op.
static UPDATES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn run_cell(
    target: Arc<Target>,
    workload: Workload,
    namespace: &'static str,
    concurrency: usize,
    duration: Duration,
    replicas_state: Arc<Vec<AtomicU32>>,
) -> CellResult {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let target = target.clone();
        let replicas_state = replicas_state.clone();
        let create_body = bytes::Bytes::from(
            serde_json::to_vec(&deployment_json(namespace, &format!("dry-{worker}"), 2))
                .expect("json"),
        );
        tasks.push(tokio::spawn(async move {
            let mut result = CellResult::default();
            while Instant::now() < deadline {
                let sent = Instant::now();
                match one_request(
                    &target,
                    workload,
                    namespace,
                    worker,
                    &replicas_state,
                    &create_body,
                )
                .await
                {
                    Ok(()) => result.latencies.push(sent.elapsed()),
                    Err(kind) => {
                        result.failures += 1;
                        *result.failure_kinds.entry(kind).or_default() += 1;
                    }
                }
            }
            result
        }));
    }
    let mut total = CellResult::default();
    for task in tasks {
        let part = task.await.expect("worker task");
        total.latencies.extend(part.latencies);
        total.failures += part.failures;
        for (kind, n) in part.failure_kinds {
            *total.failure_kinds.entry(kind).or_default() += n;
        }
    }
    total.elapsed = started.elapsed();
    total.latencies.sort();
    total
}

// ---------------------------------------------------------------------------------------
// Metrics: the apiserver's (webhook calls) and slo-guard's (its time per review)
// ---------------------------------------------------------------------------------------

/// Sum of `name{...} value` samples over all label sets, optionally only those whose
/// labels contain `label_filter`.
fn metric_sum(text: &str, name: &str, label_filter: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = if let Some(rest) = rest.strip_prefix('{') {
                let (labels, value) = rest.split_once('}')?;
                (labels, value)
            } else if rest.starts_with(' ') {
                ("", rest)
            } else {
                return None;
            };
            if !labels.contains(label_filter) {
                return None;
            }
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

#[derive(Clone, Copy, Default)]
struct Counters {
    api_requests: f64,
    webhook_calls: f64,
    webhook_seconds: f64,
    guard_reviews: f64,
    guard_seconds: f64,
    cpu: Cpu,
}

/// CPU seconds (user and system) that each process on the request path has used since it
/// started. The machine's cores are shared, so what an admission server burns itself is
/// taken from the apiserver and the client too.
#[derive(Clone, Copy, Default)]
struct Cpu {
    apiserver: f64,
    etcd: f64,
    /// slo-guard or Kyverno, for the setups that run one; 0 for the others.
    admission: f64,
    /// This process: the load generator, and the counters' reads between slices.
    client: f64,
}

impl Cpu {
    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            apiserver: self.apiserver - before.apiserver,
            etcd: self.etcd - before.etcd,
            admission: self.admission - before.admission,
            client: self.client - before.client,
        }
    }
    fn add(&mut self, other: Cpu) {
        self.apiserver += other.apiserver;
        self.etcd += other.etcd;
        self.admission += other.admission;
        self.client += other.client;
    }
    fn total(self) -> f64 {
        self.apiserver + self.etcd + self.admission + self.client
    }
}

/// The processes whose CPU is read around each slice.
#[derive(Clone, Copy)]
struct Pids {
    apiserver: Option<u32>,
    etcd: Option<u32>,
    admission: Option<u32>,
}

/// User plus system CPU seconds of process `pid` (fields 14 and 15 of /proc/<pid>/stat);
/// 0 when it cannot be read.
fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => return 0.0,
    };
    let Ok(stat) = std::fs::read_to_string(&path) else {
        return 0.0;
    };
    // The command name (field 2) is in parentheses and may hold spaces.
    let Some((_, after_name)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / per_second
}

fn read_cpu(pids: Pids) -> Cpu {
    Cpu {
        apiserver: cpu_seconds(pids.apiserver),
        etcd: cpu_seconds(pids.etcd),
        admission: cpu_seconds(pids.admission),
        client: cpu_seconds(Some(std::process::id())),
    }
}

fn apiserver_metrics(cluster: &Cluster) -> String {
    let output = cluster
        .command("kubectl")
        .args(["get", "--raw", "/metrics"])
        .output()
        .expect("kubectl runs");
    text(&output.stdout)
}

/// Starts a CPU profile of the apiserver (its `/debug/pprof/profile`, whole seconds of
/// the slice, at least one) written to `path`, for `go tool pprof -top`. The profile is
/// taken while the slice runs and waited for after it.
fn profile_apiserver(
    cluster: &Cluster,
    slice: Duration,
    path: &Path,
) -> std::thread::JoinHandle<()> {
    let seconds = slice.as_secs().max(1);
    let mut command = cluster.command("kubectl");
    command.args([
        "get",
        "--raw",
        &format!("/debug/pprof/profile?seconds={seconds}"),
    ]);
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let output = command.output().expect("kubectl runs");
        if !output.status.success() {
            eprintln!(
                "apiserver: no profile for {}: {}",
                path.display(),
                text(&output.stderr)
            );
            return;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("the profile folder");
        }
        std::fs::write(&path, &output.stdout).expect("the profile is written");
    })
}

/// The counters before a slice (`Before`) or after it: the CPU is read last before and
/// first after, so the apiserver's serving of the /metrics reads falls outside the slice.
#[derive(PartialEq)]
enum Reading {
    Before,
    After,
}

fn read_counters(
    cluster: &Cluster,
    guard_metrics: Option<u16>,
    pids: Pids,
    reading: Reading,
) -> Counters {
    let cpu_after = (reading == Reading::After).then(|| read_cpu(pids));
    let api = apiserver_metrics(cluster);
    let mut c = Counters {
        api_requests: metric_sum(&api, "apiserver_request_total", ""),
        webhook_calls: metric_sum(
            &api,
            "apiserver_admission_webhook_admission_duration_seconds_count",
            "",
        ),
        webhook_seconds: metric_sum(
            &api,
            "apiserver_admission_webhook_admission_duration_seconds_sum",
            "",
        ),
        ..Counters::default()
    };
    if let Some(port) = guard_metrics {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", "--noproxy", "*"])
            .arg(format!("http://127.0.0.1:{port}/metrics"))
            .output()
            .map(|o| text(&o.stdout))
            .unwrap_or_default();
        c.guard_reviews = metric_sum(&out, "slo_guard_admission_duration_seconds_count", "");
        c.guard_seconds = metric_sum(&out, "slo_guard_admission_duration_seconds_sum", "");
    }
    c.cpu = cpu_after.unwrap_or_else(|| read_cpu(pids));
    c
}

// ---------------------------------------------------------------------------------------
// Setups
// ---------------------------------------------------------------------------------------

/// What runs for a setup, from its installation to the end of the run (stopped when
/// dropped).
enum Running {
    Nothing,
    Guard {
        guard: SloGuard,
        port: u16,
        ca_bundle: String,
    },
    Kyverno(Child),
}

impl Running {
    fn guard_metrics(&self) -> Option<u16> {
        match self {
            Running::Guard { guard, .. } => Some(guard.metrics_port),
            _ => None,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Running::Kyverno(child) = self {
            // SAFETY: kill(2) on the pid of the child this bench started and has not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Bench {
    cluster: Cluster,
    work: tempfile::TempDir,
    kubeconfig: String,
    runtime: tokio::runtime::Runtime,
    target: Arc<Target>,
    /// Per namespace, per worker: the replicas its Deployment has now (2 or 3).
    replicas: BTreeMap<&'static str, Arc<Vec<AtomicU32>>>,
    /// The host slo-guard's and Kyverno's webhook URLs name.
    webhook_host: String,
    /// Kyverno's admission controller, once started (both Kyverno setups use it).
    kyverno_pid: Option<u32>,
    /// What each stamping setup added to an agent's admitted create, seen when it was
    /// put in force.
    stamps: BTreeMap<Setup, BTreeMap<String, String>>,
}

fn kubectl_ok(cluster: &mut Cluster, args: &[&str]) -> Result<String, String> {
    let output = cluster.kubectl(args);
    if output.status.success() {
        Ok(text(&output.stdout))
    } else {
        Err(format!(
            "kubectl {} failed: {}",
            args.join(" "),
            text(&output.stderr).trim()
        ))
    }
}

/// Deletes the objects `name` of the comma-separated `kinds`, those present.
fn delete(cluster: &mut Cluster, kinds: &str, name: &str) -> Result<(), String> {
    kubectl_ok(cluster, &["delete", kinds, name, "--ignore-not-found"]).map(|_| ())
}

fn apply(cluster: &mut Cluster, manifest: &str) -> Result<(), String> {
    let output = cluster.kubectl_with_stdin(&["apply", "-f", "-"], Some(manifest));
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "kubectl apply failed: {}",
            text(&output.stderr).trim()
        ))
    }
}

impl Bench {
    /// The probe: a dry-run create of 50 replicas by the agent. Ok(true) when admitted.
    fn probe(&self, namespace: &str) -> Result<bool, String> {
        self.dry_run_create(namespace, 50)
            .map(|answer| answer.is_some())
    }

    /// A dry-run create of `replicas` by the agent: the object the apiserver would store,
    /// or None when it was denied.
    fn dry_run_create(
        &self,
        namespace: &str,
        replicas: u32,
    ) -> Result<Option<serde_json::Value>, String> {
        let body =
            serde_json::to_vec(&deployment_json(namespace, "probe", replicas)).expect("json");
        let target = self.target.clone();
        let namespace = namespace.to_string();
        self.runtime.block_on(async move {
            let response = target
                .client
                .post(format!(
                    "{}/apis/apps/v1/namespaces/{namespace}/deployments?dryRun=All",
                    target.api
                ))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            match status {
                201 => serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|e| format!("probe answered 201 with no object ({e}): {text}")),
                400..=499 if text.contains("replicas") || text.contains("denied") => Ok(None),
                _ => Err(format!("probe answered HTTP {status}: {text}")),
            }
        })
    }

    /// Whether an agent's admitted create in `namespace` comes back stamped.
    fn stamped(&self, namespace: &str) -> Result<bool, String> {
        self.stamp_added(namespace)
            .map(|stamp| stamp.contains_key("slo-guard.io/verdict"))
    }

    /// Waits until the probe is denied in the governed namespace (or admitted, for
    /// `none`) and admitted in the open one, and an admitted create is stamped in the
    /// governed namespace only by the setups that stamp.
    fn wait_in_force(&self, setup: Setup, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let want_governed = setup == Setup::None;
        loop {
            let governed = self.probe(GOVERNED);
            let open = self.probe(OPEN);
            let stamped = (self.stamped(GOVERNED), self.stamped(OPEN));
            let last = match (&governed, &open, &stamped) {
                (Ok(g), Ok(true), (Ok(s), Ok(false)))
                    if *g == want_governed && *s == setup.stamps() =>
                {
                    return Ok(());
                }
                _ => format!(
                    "governed probe {governed:?}, open probe {open:?}, stamped (governed, open) {stamped:?}"
                ),
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "the {} setup did not come into force within {timeout:?}: {last}",
                    setup.name()
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Starts what a setup needs, without putting it in force.
    fn install(&mut self, setup: Setup, full: bool) -> Result<Running, String> {
        match setup {
            Setup::None | Setup::Vap | Setup::VapMap => Ok(Running::Nothing),
            Setup::SloGuard => {
                let certs = self.work.path().join("certs");
                let ca_bundle = make_certs_for(&self.cluster, &certs, &[&self.webhook_host]);
                let port = free_port();
                // As the chart runs it: the workload webhooks' scope follows the policies,
                // so a request in a namespace no policy governs never leaves the apiserver.
                let guard = SloGuard::start_with_env(
                    &self.cluster,
                    port,
                    &certs,
                    self.work.path().join("slo-guard.log"),
                    &[
                        ("SLO_GUARD_WEBHOOK_SCOPE", "policies"),
                        (
                            "SLO_GUARD_VALIDATING_WEBHOOK_CONFIGURATION",
                            "slo-guard-local",
                        ),
                        (
                            "SLO_GUARD_MUTATING_WEBHOOK_CONFIGURATION",
                            "slo-guard-local",
                        ),
                        ("SLO_GUARD_WEBHOOK_SCOPE_INTERVAL", "1s"),
                    ],
                );
                apply(&mut self.cluster, &slo_guard_policy_manifest())?;
                guard.wait_for_log(
                    "\"configmap\":\"bench-governed/bench-agents\"",
                    Duration::from_secs(30),
                );
                Ok(Running::Guard {
                    guard,
                    port,
                    ca_bundle,
                })
            }
            Setup::Kyverno | Setup::KyvernoMut => {
                if !full {
                    return Err("smoke run (Kyverno runs only under cargo bench)".into());
                }
                // Both Kyverno setups share one admission controller.
                if self.kyverno_pid.is_some() {
                    return Ok(Running::Nothing);
                }
                let running = self.start_kyverno()?;
                if let Running::Kyverno(child) = &running {
                    self.kyverno_pid = Some(child.id());
                }
                Ok(running)
            }
        }
    }

    /// Puts a setup in force and waits until the probe shows it.
    fn activate(&mut self, setup: Setup, running: &Running) -> Result<(), String> {
        match (setup, running) {
            (
                Setup::SloGuard,
                Running::Guard {
                    port, ca_bundle, ..
                },
            ) => {
                let manifest = webhooks(*port, ca_bundle, "Fail").replace(
                    "https://127.0.0.1:",
                    &format!("https://{}:", self.webhook_host),
                );
                apply(&mut self.cluster, &manifest)?;
                self.wait_scoped(Duration::from_secs(30))?;
            }
            (Setup::SloGuard, _) => return Err("slo-guard is not running".into()),
            _ => {
                for (manifest, _, _) in setup.policies() {
                    apply(&mut self.cluster, &manifest)?;
                }
            }
        }
        self.wait_in_force(setup, Duration::from_secs(90))?;
        if setup.stamps() {
            let stamp = self.stamp_added(GOVERNED)?;
            self.stamps.insert(setup, stamp);
        }
        Ok(())
    }

    /// The annotations an agent's admitted create gains in `namespace`.
    fn stamp_added(&self, namespace: &str) -> Result<BTreeMap<String, String>, String> {
        let sent = deployment_json(namespace, "probe", 2);
        let stored = self
            .dry_run_create(namespace, 2)?
            .ok_or_else(|| format!("a create of 2 replicas was denied in {namespace}"))?;
        let annotations = |object: &serde_json::Value| -> BTreeMap<String, String> {
            object["metadata"]["annotations"]
                .as_object()
                .map(|map| {
                    map.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let before = annotations(&sent);
        Ok(annotations(&stored)
            .into_iter()
            .filter(|(key, value)| before.get(key) != Some(value))
            .collect())
    }

    /// Waits until slo-guard has scoped the freshly applied webhook configurations to the
    /// governed namespace and taken the scale rule out of the mutating one (its
    /// reconciliation runs every second here).
    fn wait_scoped(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let output = self.cluster.kubectl(&[
                "get",
                "validatingwebhookconfiguration",
                "slo-guard-local",
                "-o",
                "jsonpath={.webhooks[0].namespaceSelector.matchExpressions[?(@.operator==\"In\")].values}",
            ]);
            // The mutating configuration is written right after: scoped too, and without
            // its scale rule, since the bench's policy does not clamp.
            let mutating = self.cluster.kubectl(&[
                "get",
                "mutatingwebhookconfiguration",
                "slo-guard-local",
                "-o",
                "jsonpath={.webhooks[?(@.name==\"mutate.slo-guard.io\")].rules[*].resources}",
            ]);
            if text(&output.stdout).contains("bench-governed")
                && !text(&mutating.stdout).contains("/scale")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "slo-guard did not scope its webhooks within {timeout:?}: {}",
                    text(&output.stdout)
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Takes a setup out of force and waits until no admission is in force.
    fn deactivate(&mut self, setup: Setup) -> Result<(), String> {
        if setup == Setup::SloGuard {
            delete(
                &mut self.cluster,
                "validatingwebhookconfiguration,mutatingwebhookconfiguration",
                "slo-guard-local",
            )?;
        }
        for (_, kinds, name) in setup.policies() {
            delete(&mut self.cluster, kinds, name)?;
        }
        self.wait_in_force(Setup::None, Duration::from_secs(90))
            .map_err(|e| format!("after taking {} out of force: {e}", setup.name()))
    }

    fn start_kyverno(&mut self) -> Result<Running, String> {
        let script = root().join("tests/e2e/build-kyverno.sh");
        eprintln!(
            "apiserver: building Kyverno if needed ({})",
            script.display()
        );
        let built = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !built.status.success() {
            let stderr = text(&built.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
            return Err(format!(
                "tests/e2e/build-kyverno.sh failed: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
        let stdout = text(&built.stdout);
        let mut lines = stdout.lines().rev();
        let module_dir = PathBuf::from(lines.next().unwrap_or_default());
        let binary = PathBuf::from(lines.next().unwrap_or_default());
        if !binary.is_file() || !module_dir.join("config/crds").is_dir() {
            return Err(format!(
                "build-kyverno.sh printed no usable binary and module dir: {stdout:?}"
            ));
        }
        let crds = module_dir.join("config/crds");
        kubectl_ok(
            &mut self.cluster,
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-R",
                "-f",
                crds.to_str().expect("utf-8 path"),
            ],
        )?;
        // `kubectl wait` fails outright on a CRD whose status is not written yet: retry.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match kubectl_ok(
                &mut self.cluster,
                &[
                    "wait",
                    "--for",
                    "condition=established",
                    "crd",
                    "--all",
                    "--timeout=60s",
                ],
            ) {
                Ok(_) => break,
                Err(error) if Instant::now() >= deadline => return Err(error),
                Err(_) => std::thread::sleep(Duration::from_secs(1)),
            }
        }
        apply(
            &mut self.cluster,
            r#"apiVersion: v1
kind: Namespace
metadata: {name: kyverno}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: kyverno, namespace: kyverno}
data: {}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: kyverno-metrics, namespace: kyverno}
data: {}
"#,
        )?;
        let port = free_port();
        let log_path = self.work.path().join("kyverno.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let child = self
            .cluster
            .command(binary.to_str().expect("utf-8 path"))
            .args(kyverno_args(port, &self.kubeconfig, &self.webhook_host))
            .env("KYVERNO_NAMESPACE", "kyverno")
            .env("INIT_CONFIG", "kyverno")
            .env("METRICS_CONFIG", "kyverno-metrics")
            .env("KYVERNO_POD_NAME", "kyverno-bench")
            .env(
                "KYVERNO_SERVICEACCOUNT_NAME",
                "kyverno-admission-controller",
            )
            .env("KYVERNO_DEPLOYMENT", "kyverno-admission-controller")
            .env("KYVERNO_SVC", "kyverno-svc")
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut running = Running::Kyverno(child);
        let kyverno_log_tail = |why: &str| {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(6).collect();
            format!(
                "{why}; kyverno's log ends: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        };
        // Ready: its webhook server answers on the loopback port.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Running::Kyverno(child) = &mut running {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(kyverno_log_tail(&format!("kyverno exited ({status})")));
                }
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(kyverno_log_tail(
                    "kyverno's webhook port did not open within 120 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(running)
    }
}

/// `webhook_host` names the machine in the URLs Kyverno registers, as for slo-guard's, so
/// that the apiserver speaks to both the same protocol.
fn kyverno_args(port: u16, kubeconfig: &str, webhook_host: &str) -> Vec<String> {
    [
        format!("--kubeconfig={kubeconfig}"),
        format!("--serverIP={webhook_host}:{port}"),
        "--webhookServerHost=127.0.0.1".to_string(),
        format!("--webhookServerPort={port}"),
        // Its metrics listener, kept on loopback (it opens one even with disableMetrics).
        "--metricsHost=127.0.0.1".to_string(),
        format!("--metricsPort={}", free_port()),
        "--controllerRuntimeMetricsAddress=0".to_string(),
        "--disableMetrics=true".to_string(),
        // The chart's names for its self-signed CA and serving pair (Secrets it writes).
        "--caSecretName=kyverno-svc.kyverno.svc.kyverno-tls-ca".to_string(),
        "--tlsSecretName=kyverno-svc.kyverno.svc.kyverno-tls-pair".to_string(),
        "--loggingFormat=json".to_string(),
        "--backgroundServiceAccountName=system:serviceaccount:kyverno:kyverno-background-controller".to_string(),
        "--reportsServiceAccountName=system:serviceaccount:kyverno:kyverno-reports-controller".to_string(),
        "--v=1".to_string(),
    ]
    .to_vec()
}

// ---------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------

/// One cell (a setup, namespace, workload and concurrency), summed over its slices.
struct Row {
    setup: Setup,
    namespace: &'static str,
    workload: Workload,
    concurrency: usize,
    result: CellResult,
    requests: f64,
    webhook_calls: f64,
    webhook_seconds: f64,
    extra_api_requests: f64,
    guarded: bool,
    guard_reviews: f64,
    guard_seconds: f64,
    cpu: Cpu,
}

impl Row {
    fn new(setup: Setup, namespace: &'static str, workload: Workload, concurrency: usize) -> Row {
        Row {
            setup,
            namespace,
            workload,
            concurrency,
            result: CellResult::default(),
            requests: 0.0,
            webhook_calls: 0.0,
            webhook_seconds: 0.0,
            extra_api_requests: 0.0,
            guarded: false,
            guard_reviews: 0.0,
            guard_seconds: 0.0,
            cpu: Cpu::default(),
        }
    }

    /// Adds one measured slice and the counters read around it.
    fn add(&mut self, result: CellResult, before: Counters, after: Counters) {
        let requests = (result.ok() + result.failures) as f64;
        self.requests += requests;
        self.webhook_calls += after.webhook_calls - before.webhook_calls;
        self.webhook_seconds += after.webhook_seconds - before.webhook_seconds;
        // The apiserver counts the bench's own requests and the one /metrics read that
        // ended the "before" reading.
        self.extra_api_requests +=
            (after.api_requests - before.api_requests - requests - 1.0).max(0.0);
        self.guard_reviews += after.guard_reviews - before.guard_reviews;
        self.guard_seconds += after.guard_seconds - before.guard_seconds;
        self.cpu.add(after.cpu.since(before.cpu));
        self.result.merge(result);
    }

    fn merge(&mut self, other: Row) {
        self.requests += other.requests;
        self.webhook_calls += other.webhook_calls;
        self.webhook_seconds += other.webhook_seconds;
        self.extra_api_requests += other.extra_api_requests;
        self.guard_reviews += other.guard_reviews;
        self.guard_seconds += other.guard_seconds;
        self.cpu.add(other.cpu);
        self.result.merge(other.result);
    }

    /// The cell's first four table columns: setup, namespace, workload, concurrency.
    fn cell(&self) -> String {
        format!(
            "{} | {} | {} | {}",
            self.setup.name(),
            ns_label(self.namespace),
            self.workload.name(),
            self.concurrency
        )
    }

    fn per_request(&self, v: f64) -> f64 {
        v / self.requests.max(1.0)
    }
    fn calls_per_request(&self) -> f64 {
        self.per_request(self.webhook_calls)
    }
    /// The mean round trip of the webhook calls the requests caused; none when they
    /// caused none (a stray call of a setup's own, e.g. Kyverno's lease webhook, is not
    /// one of them).
    fn ms_per_call(&self) -> f64 {
        if self.calls_per_request() >= 0.005 {
            1000.0 * self.webhook_seconds / self.webhook_calls
        } else {
            f64::NAN
        }
    }
    fn extra_api_requests(&self) -> f64 {
        self.per_request(self.extra_api_requests)
    }
    fn guard_reviews_per_request(&self) -> f64 {
        if self.guarded {
            self.per_request(self.guard_reviews)
        } else {
            f64::NAN
        }
    }
    fn guard_ms_per_review(&self) -> f64 {
        if self.guard_reviews > 0.0 {
            1000.0 * self.guard_seconds / self.guard_reviews
        } else {
            f64::NAN
        }
    }
}

fn ns_label(namespace: &str) -> &'static str {
    if namespace == GOVERNED {
        "governed"
    } else {
        "ungoverned"
    }
}

fn fmt_f(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "-".to_string()
    }
}

fn report(
    options: &Options,
    rows: &[Row],
    not_run: &BTreeMap<Setup, String>,
    header: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}");
    let _ = writeln!(
        out,
        "\n| setup | namespace | workload | concurrency | requests | failed | throughput (req/s) | avg (ms) | p95 (ms) | p99 (ms) | webhook calls/req | webhook ms/call | other API requests/req |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for setup in &options.setups {
        if let Some(reason) = not_run.get(setup) {
            let _ = writeln!(
                out,
                "| {} | - | - | - | - | - | not run: {} | | | | | | |",
                setup.name(),
                reason.replace('|', "/").replace('\n', " ")
            );
        }
        for row in rows.iter().filter(|r| r.setup == *setup) {
            let r = &row.result;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.cell(),
                r.ok() + r.failures,
                r.failures,
                fmt_f(r.throughput(), 1),
                fmt_f(r.avg_ms(), 2),
                fmt_f(r.percentile_ms(0.95), 2),
                fmt_f(r.percentile_ms(0.99), 2),
                fmt_f(row.calls_per_request(), 2),
                fmt_f(row.ms_per_call(), 2),
                fmt_f(row.extra_api_requests(), 2),
            );
        }
    }
    // Throughput ratios against `none` and against `vap`, per cell.
    let find = |setup: Setup, ns: &str, workload: Workload, c: usize| {
        rows.iter().find(|r| {
            r.setup == setup && r.namespace == ns && r.workload == workload && r.concurrency == c
        })
    };
    let ratio = |a: Option<&Row>, b: Option<&Row>| match (a, b) {
        (Some(a), Some(b)) if b.result.throughput() > 0.0 => {
            format!(
                "{:.1}%",
                100.0 * a.result.throughput() / b.result.throughput()
            )
        }
        _ => "-".to_string(),
    };
    let _ = writeln!(
        out,
        "\nrequests: checked requests (201 for a dry-run create, 200 for a scale or an update; anything else failed); latency from send to the answer's last byte; throughput: checked requests per second. From the apiserver's /metrics around each slice: webhook calls/req and ms/call (apiserver_admission_webhook_admission_duration_seconds, the round trip as the apiserver saw it), other API requests/req (apiserver_request_total less the bench's own requests).\n\nThroughput ratios (same namespace, workload and concurrency):\n\n| namespace | workload | concurrency | vap / none | vap+map / none | slo-guard / none | slo-guard / vap | slo-guard / vap+map | kyverno / none | kyverno / vap | kyverno+mut / none | slo-guard / kyverno+mut |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for ns in [GOVERNED, OPEN] {
        for workload in &options.workloads {
            for &c in &options.concurrency {
                let none = find(Setup::None, ns, *workload, c);
                let vap = find(Setup::Vap, ns, *workload, c);
                let vap_map = find(Setup::VapMap, ns, *workload, c);
                let guard = find(Setup::SloGuard, ns, *workload, c);
                let kyverno = find(Setup::Kyverno, ns, *workload, c);
                let kyverno_mut = find(Setup::KyvernoMut, ns, *workload, c);
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    ns_label(ns),
                    workload.name(),
                    c,
                    ratio(vap, none),
                    ratio(vap_map, none),
                    ratio(guard, none),
                    ratio(guard, vap),
                    ratio(guard, vap_map),
                    ratio(kyverno, none),
                    ratio(kyverno, vap),
                    ratio(kyverno_mut, none),
                    ratio(guard, kyverno_mut),
                );
            }
        }
    }
    // DESIGN.md's targets through the apiserver.
    let target_line = |what: &str, a: Option<&Row>, b: Option<&Row>, floor: f64| match (a, b) {
        (Some(a), Some(b)) if b.result.throughput() > 0.0 => {
            let share = 100.0 * a.result.throughput() / b.result.throughput();
            format!(
                "{what}: {share:.1}% (target >= {floor:.0}%: {})",
                if share >= floor { "met" } else { "NOT met" }
            )
        }
        _ => format!("{what}: not measured"),
    };
    let _ = writeln!(out, "\nDESIGN.md targets (throughput):\n");
    for workload in &options.workloads {
        for &c in &options.concurrency {
            let _ = writeln!(
                out,
                "- {} c={c}: {}; {}; and against the peer that also stamps, {}",
                workload.name(),
                target_line(
                    "governed slo-guard / vap",
                    find(Setup::SloGuard, GOVERNED, *workload, c),
                    find(Setup::Vap, GOVERNED, *workload, c),
                    90.0
                ),
                target_line(
                    "ungoverned slo-guard / none",
                    find(Setup::SloGuard, OPEN, *workload, c),
                    find(Setup::None, OPEN, *workload, c),
                    97.0
                ),
                target_line(
                    "governed slo-guard / vap+map",
                    find(Setup::SloGuard, GOVERNED, *workload, c),
                    find(Setup::VapMap, GOVERNED, *workload, c),
                    90.0
                ),
            );
        }
    }
    let _ = writeln!(
        out,
        "\nCPU per request (ms), from /proc/<pid>/stat (user + system) around each slice: the apiserver, etcd, the admission server under test (slo-guard or Kyverno; Kyverno's process runs, idle or not, through every setup), and this client. They share the machine's cores, so the total is what a request costs the machine:\n\n| setup | namespace | workload | concurrency | apiserver | etcd | admission server | client | total |"
    );
    let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|---:|");
    for setup in &options.setups {
        for row in rows.iter().filter(|r| r.setup == *setup) {
            let per_request = |seconds: f64| fmt_f(1000.0 * row.per_request(seconds), 3);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                row.cell(),
                per_request(row.cpu.apiserver),
                per_request(row.cpu.etcd),
                if row.setup.has_admission_server() {
                    per_request(row.cpu.admission)
                } else {
                    "-".to_string()
                },
                per_request(row.cpu.client),
                per_request(row.cpu.total()),
            );
        }
    }
    let guard_rows: Vec<&Row> = rows.iter().filter(|r| r.setup == Setup::SloGuard).collect();
    if !guard_rows.is_empty() {
        let _ = writeln!(
            out,
            "\nslo-guard's side (its /metrics): reviews per request and its own time per review, against the apiserver's round trip per webhook call:\n\n| namespace | workload | concurrency | reviews/req | slo-guard ms/review | apiserver ms/webhook call |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|");
        for row in guard_rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                ns_label(row.namespace),
                row.workload.name(),
                row.concurrency,
                fmt_f(row.guard_reviews_per_request(), 2),
                fmt_f(row.guard_ms_per_review(), 3),
                fmt_f(row.ms_per_call(), 3),
            );
        }
    }
    let failed: Vec<&Row> = rows.iter().filter(|r| r.result.failures > 0).collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\nFailures:");
        for row in failed {
            for (kind, n) in &row.result.failure_kinds {
                let _ = writeln!(
                    out,
                    "  {} {} {} c={}: {n} x {kind}",
                    row.setup.name(),
                    ns_label(row.namespace),
                    row.workload.name(),
                    row.concurrency
                );
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------

fn main() {
    let options = Options::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started_at = chrono::Utc::now();
    let load_at_start = load_average();
    let wall = Instant::now();
    let max_concurrency = *options.concurrency.iter().max().expect("a level");

    eprintln!("apiserver: starting the control plane (tests/e2e/cluster.sh)");
    // MutatingAdmissionPolicy is beta and off by default in 1.34: on for the whole run when
    // the vap+map setup is measured, so that every setup runs against the same apiserver.
    let webhook_host = webhook_host(options.webhook_host.as_deref());
    eprintln!(
        "apiserver: slo-guard's webhooks at https://{webhook_host}:<port> ({})",
        webhook_protocol(&webhook_host)
    );
    let mutating_policies = if options.setups.contains(&Setup::VapMap) {
        "true"
    } else {
        "false"
    };
    let mut cluster = Cluster::up_with_env(
        "apiserver-bench",
        &[("SLO_GUARD_E2E_MUTATING_ADMISSION_POLICY", mutating_policies)],
    );
    cluster.apply(&base_manifest());
    // The Deployments the scale workload changes and the ConfigMaps the update workload
    // changes, one each per worker and namespace, created by the admin before any
    // admission is in force.
    let mut list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": []});
    for ns in [GOVERNED, OPEN] {
        for worker in 0..max_concurrency {
            let items = list["items"].as_array_mut().expect("items");
            items.push(deployment_json(ns, &format!("bench-{worker}"), 2));
            items.push(serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": format!("bench-{worker}"), "namespace": ns},
                "data": {"sent": "none"},
            }));
        }
    }
    let output = cluster.kubectl_with_stdin(
        &["create", "-f", "-", "-o", "name"],
        Some(&list.to_string()),
    );
    assert!(
        output.status.success(),
        "creating the bench Deployments and ConfigMaps failed: {}",
        text(&output.stderr)
    );
    let token = kubectl_ok(
        &mut cluster,
        &[
            "create",
            "token",
            AGENT_SA,
            "-n",
            "ai-agents",
            "--duration",
            "3h",
        ],
    )
    .unwrap_or_else(|e| die(&e))
    .trim()
    .to_string();
    let env: BTreeMap<String, String> =
        ["SLO_GUARD_E2E_APISERVER", "SLO_GUARD_E2E_CA", "KUBECONFIG"]
            .iter()
            .map(|key| {
                let output = cluster
                    .command("sh")
                    .args(["-c", &format!("printf %s \"${key}\"")])
                    .output()
                    .expect("sh");
                (key.to_string(), text(&output.stdout))
            })
            .collect();
    let api = env["SLO_GUARD_E2E_APISERVER"].clone();
    let ca_pem = std::fs::read(Path::new(&env["SLO_GUARD_E2E_CA"])).expect("the cluster CA");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    headers.insert(
        reqwest::header::ACCEPT,
        "application/json".parse().expect("header"),
    );
    let client = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca_pem).expect("CA PEM"))
        .no_proxy()
        .default_headers(headers)
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(300))
        .build()
        .expect("client");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let replicas = [GOVERNED, OPEN]
        .into_iter()
        .map(|ns| {
            (
                ns,
                Arc::new(
                    (0..max_concurrency)
                        .map(|_| AtomicU32::new(2))
                        .collect::<Vec<_>>(),
                ),
            )
        })
        .collect();
    let mut bench = Bench {
        cluster,
        work: tempfile::tempdir().expect("work dir"),
        kubeconfig: env["KUBECONFIG"].clone(),
        runtime,
        target: Arc::new(Target { client, api }),
        replicas,
        webhook_host: webhook_host.clone(),
        kyverno_pid: None,
        stamps: BTreeMap::new(),
    };

    // Every setup's processes start before the first measurement, so the background
    // load (watches, leader election) is the same for every cell; a setup's admission is
    // switched on only for its own blocks.
    let mut not_run = BTreeMap::new();
    let mut installed: Vec<(Setup, Running)> = Vec::new();
    for &setup in &options.setups {
        eprintln!("apiserver: installing {}", setup.name());
        match bench.install(setup, options.full) {
            Ok(running) => installed.push((setup, running)),
            Err(reason) => {
                eprintln!("apiserver: {} not run: {reason}", setup.name());
                not_run.insert(setup, reason);
            }
        }
    }
    if let Err(reason) = bench.wait_in_force(Setup::None, Duration::from_secs(90)) {
        panic!("no admission should be in force yet: {reason}");
    }
    let slice = Duration::from_secs_f64(options.seconds / options.rounds as f64);
    let mut rows: Vec<Row> = Vec::new();
    for round in 0..options.rounds {
        // Odd rounds run the setups in reverse order, so a drift in the machine's load
        // over the run weighs on every setup alike.
        let mut order: Vec<usize> = (0..installed.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for &workload in &options.workloads {
            for &i in &order {
                let (setup, running) = (&installed[i].0, &installed[i].1);
                let setup = *setup;
                if not_run.contains_key(&setup) {
                    continue;
                }
                eprintln!(
                    "apiserver: round {}/{}, {} with {}",
                    round + 1,
                    options.rounds,
                    workload.name(),
                    setup.name()
                );
                if let Err(reason) = bench.activate(setup, running) {
                    eprintln!("apiserver: {} not run: {reason}", setup.name());
                    not_run.insert(setup, reason);
                    if let Err(error) = bench.deactivate(setup) {
                        // A panic, not an exit: the processes and the cluster are stopped
                        // as it unwinds.
                        panic!("{error}");
                    }
                    continue;
                }
                let guard_metrics = running.guard_metrics();
                let pids = Pids {
                    apiserver: bench.cluster.pid("kube-apiserver"),
                    etcd: bench.cluster.pid("etcd"),
                    admission: match (setup, running) {
                        (Setup::SloGuard, Running::Guard { guard, .. }) => Some(guard.pid()),
                        (Setup::Kyverno | Setup::KyvernoMut, _) => bench.kyverno_pid,
                        _ => None,
                    },
                };
                for &concurrency in &options.concurrency {
                    for namespace in [GOVERNED, OPEN] {
                        let state = bench.replicas[namespace].clone();
                        if options.warmup > 0.0 {
                            bench.runtime.block_on(run_cell(
                                bench.target.clone(),
                                workload,
                                namespace,
                                concurrency,
                                Duration::from_secs_f64(options.warmup),
                                state.clone(),
                            ));
                        }
                        let profile = options.apiserver_profile.as_ref().map(|dir| {
                            profile_apiserver(
                                &bench.cluster,
                                slice,
                                &dir.join(format!(
                                    "{}-{}-{}-c{concurrency}-r{}.pprof",
                                    setup.name(),
                                    ns_label(namespace),
                                    workload.name(),
                                    round + 1
                                )),
                            )
                        });
                        let before =
                            read_counters(&bench.cluster, guard_metrics, pids, Reading::Before);
                        let result = bench.runtime.block_on(run_cell(
                            bench.target.clone(),
                            workload,
                            namespace,
                            concurrency,
                            slice,
                            state,
                        ));
                        let after =
                            read_counters(&bench.cluster, guard_metrics, pids, Reading::After);
                        if let Some(profile) = profile {
                            profile.join().expect("the profile thread");
                        }
                        let mut part = Row::new(setup, namespace, workload, concurrency);
                        part.guarded = guard_metrics.is_some();
                        part.add(result, before, after);
                        eprintln!(
                            "apiserver: {:9} {:10} {:6} c={:<3} {:8.1} req/s  avg {:7.2} ms  p95 {:7.2}  p99 {:7.2}  failed {}  webhook calls/req {:.2}  other API requests/req {:.2}",
                            setup.name(),
                            ns_label(namespace),
                            workload.name(),
                            concurrency,
                            part.result.throughput(),
                            part.result.avg_ms(),
                            part.result.percentile_ms(0.95),
                            part.result.percentile_ms(0.99),
                            part.result.failures,
                            part.calls_per_request(),
                            part.extra_api_requests(),
                        );
                        match rows.iter_mut().find(|r| {
                            r.setup == setup
                                && r.namespace == namespace
                                && r.workload == workload
                                && r.concurrency == concurrency
                        }) {
                            Some(row) => row.merge(part),
                            None => rows.push(part),
                        }
                    }
                }
                if let Err(error) = bench.deactivate(setup) {
                    panic!("{error}");
                }
            }
        }
    }
    rows.sort_by_key(|r| (r.setup, r.workload, r.namespace, r.concurrency));
    drop(installed);

    let header = format!(
        "apiserver benchmark: {} UTC, {:.0} s, at commit {}; kube-apiserver {} + etcd on 127.0.0.1, {} CPUs; {} s per cell after {} s warm-up; agent = system:serviceaccount:ai-agents:{AGENT_SA} (bearer token, one HTTP/2 connection); slo-guard binary {}, its webhooks at https://{webhook_host}:<port> ({}); load average (1, 5, 15 min) at the start {load_at_start}, at the end {}",
        started_at.format("%Y-%m-%d %H:%M"),
        wall.elapsed().as_secs_f64(),
        git_commit(),
        kube_version(&bench.cluster),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        options.seconds,
        options.warmup,
        env!("CARGO_BIN_EXE_slo-guard"),
        webhook_protocol(&webhook_host),
        load_average()
    );
    let mut table = report(&options, &rows, &not_run, &header);
    let stamps_differ = compare_stamps(&bench.stamps, &mut table);
    println!("{table}");
    if let Some(path) = &options.out {
        std::fs::write(path, &table).unwrap_or_else(|e| die(&format!("--out: {e}")));
    }
    if stamps_differ {
        die("a peer no longer stamps what slo-guard stamps: update stamp_spec");
    }
    if !options.full {
        let failures: usize = rows.iter().map(|r| r.result.failures).sum();
        let ran: usize = rows.iter().map(|r| r.result.ok()).sum();
        assert!(
            not_run
                .keys()
                .all(|s| matches!(s, Setup::Kyverno | Setup::KyvernoMut)),
            "a setup did not run: {not_run:?}"
        );
        assert_eq!(failures, 0, "requests failed in the smoke run:\n{table}");
        assert!(ran > 0, "the smoke run made no request");
        println!("apiserver smoke run: {ran} requests checked, 0 failed");
    }
}

/// Appends the stamps the stamping setups added to the report, and whether the peer's
/// matches slo-guard's (all but the time of the change, which CEL cannot read). True
/// when they differ.
fn compare_stamps(stamps: &BTreeMap<Setup, BTreeMap<String, String>>, out: &mut String) -> bool {
    if stamps.is_empty() {
        return false;
    }
    let _ = writeln!(
        out,
        "\nWhat an agent's admitted create gained, per stamping setup:\n"
    );
    for (setup, stamp) in stamps {
        for (key, value) in stamp {
            let _ = writeln!(out, "- {}: `{key}` = `{value}`", setup.name());
        }
    }
    let Some(guard) = stamps.get(&Setup::SloGuard) else {
        return false;
    };
    let without_time = |stamp: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        let mut stamp = stamp.clone();
        if let Some(time) = stamp.get_mut("slo-guard.io/last-agent-change") {
            *time = format!("<{} characters>", time.len());
        }
        stamp
    };
    let mut differ = false;
    for (peer, stamp) in stamps.iter().filter(|(s, _)| **s != Setup::SloGuard) {
        let same = without_time(stamp) == without_time(guard);
        differ |= !same;
        let _ = writeln!(
            out,
            "\n{}'s stamp {} slo-guard's (the time of the change compared by length only).",
            peer.name(),
            if same { "matches" } else { "DIFFERS FROM" }
        );
    }
    differ
}

/// The host for slo-guard's webhook URLs. kube-apiserver calls a webhook behind a Service
/// over HTTP/1.1, but one reached by a URL on `localhost` or a loopback address over
/// HTTP/2 (k8s.io/apiserver pkg/util/webhook/client.go). So that the bench measures the
/// calls a cluster makes, it names the machine by a host name that resolves to loopback
/// only (the machine's own, from /etc/hosts); 127.0.0.1 where there is none.
fn webhook_host(chosen: Option<&str>) -> String {
    if let Some(host) = chosen {
        return host.to_string();
    }
    let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") else {
        return "127.0.0.1".to_string();
    };
    let name = name.trim();
    let loopback_only = std::net::ToSocketAddrs::to_socket_addrs(&(name, 443))
        .map(|addrs| {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        })
        .unwrap_or(false);
    if loopback_only && !name.is_empty() && !name.eq_ignore_ascii_case("localhost") {
        name.to_string()
    } else {
        "127.0.0.1".to_string()
    }
}

/// What kube-apiserver speaks to a webhook URL on `host`.
fn webhook_protocol(host: &str) -> &'static str {
    let loopback_literal = host
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    if loopback_literal || host.eq_ignore_ascii_case("localhost") {
        "HTTP/2: the apiserver's choice for a loopback URL; a Service gets HTTP/1.1"
    } else {
        "HTTP/1.1, as the apiserver calls a webhook Service"
    }
}

fn kube_version(cluster: &Cluster) -> String {
    cluster
        .command("kube-apiserver")
        .arg("--version")
        .output()
        .map(|o| text(&o.stdout).trim().replace("Kubernetes ", ""))
        .unwrap_or_default()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}

fn git_commit() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| text(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}
