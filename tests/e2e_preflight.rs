//! The preflight's authentication on a real kube-apiserver (issue 14 part 2): slo-guard
//! serves `POST /v1/preflight` and checks each caller's ServiceAccount token with a
//! TokenReview, and asking about another identity with a SubjectAccessReview for
//! `impersonate`, as `kubectl --as` would need.
//!
//! - no token: 401;
//! - A's token, asking about A: 200, and the answer judges A's change;
//! - A's token, asking about B without RBAC to impersonate B: 403;
//! - once a Role lets A impersonate B: 200, judged for B;
//! - `slo-guard preflight --server ... --token ...` prints the same answer.
//!
//! Needs the control-plane binaries (tests/e2e/build-tools.sh) on PATH or in
//! SLO_GUARD_E2E_BIN.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};
use slo_guard_testkit::e2e::*;
use slo_guard_testkit::policies::policy_configmap;

const OTHER: &str = "system:serviceaccount:ai-agents:other";

fn policy_manifest() -> String {
    policy_configmap(
        "payments",
        "checkout",
        &[
            "match: {kinds: [Deployment], selector: {matchLabels: {app: checkout}}}",
            "agents: {users: [\"system:serviceaccount:ai-agents:*\"], requireAnnotations: []}",
            "scaling: {minReplicas: 2, maxReplicas: 12, maxStep: 4, appliesTo: agents}",
        ],
    )
}

/// Lets the agent `fixer` impersonate the service account `other`, and nothing else.
const IMPERSONATE_OTHER: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: impersonate-other, namespace: ai-agents}
rules:
- apiGroups: [""]
  resources: [serviceaccounts]
  resourceNames: [other]
  verbs: [impersonate]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: fixer-impersonates-other, namespace: ai-agents}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: impersonate-other}
subjects:
- {kind: ServiceAccount, name: fixer, namespace: ai-agents}
"#;

/// POSTs `body` to the preflight with `token`; returns the status and the JSON answer.
fn preflight(guarded: &Guarded, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--noproxy", "*", "-o", "-", "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(guarded.certs.join("ca.crt"))
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(body.to_string());
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    command.arg(format!("https://127.0.0.1:{}/v1/preflight", guarded.port));
    let output = command.output().expect("curl runs");
    assert!(output.status.success(), "curl: {}", text(&output.stderr));
    let out = text(&output.stdout);
    let (answer, status) = out.rsplit_once('\n').expect("a status line");
    (
        status.trim().parse().expect("an HTTP status"),
        serde_json::from_str(answer).unwrap_or_else(|_| Value::String(answer.to_string())),
    )
}

fn token(cluster: &mut Cluster, account: &str) -> String {
    let output = cluster.kubectl(&["create", "token", account, "-n", "ai-agents"]);
    assert_allowed(&output);
    text(&output.stdout).trim().to_string()
}

fn scale_to(replicas: u32) -> Value {
    json!({
        "workload": {"kind": "Deployment", "namespace": "payments", "name": "checkout"},
        "change": {"action": "scale", "replicas": replicas},
    })
}

fn cli(guarded: &Guarded, token: &str, replicas: &str) -> Output {
    guarded
        .cluster
        .command(env!("CARGO_BIN_EXE_slo-guard"))
        .args(["preflight", "deployment/checkout", "-n", "payments"])
        .args(["--action", "scale", "--replicas", replicas])
        .args(["--server", &format!("https://127.0.0.1:{}", guarded.port)])
        .args(["--token", token])
        .arg("--ca-file")
        .arg(guarded.certs.join("ca.crt"))
        .output()
        .expect("slo-guard preflight runs")
}

#[test]
fn the_preflight_authenticates_callers_and_checks_impersonation_on_the_real_apiserver() {
    let mut guarded = Guarded::start("preflight");
    guarded.cluster.apply(&policy_manifest());
    guarded
        .cluster
        .apply(&agent_deployment("checkout", 5, "d-checkout-1", "baseline"));
    assert_allowed(&guarded.cluster.kubectl(&[
        "create",
        "serviceaccount",
        "other",
        "-n",
        "ai-agents",
    ]));
    let fixer = token(&mut guarded.cluster, "fixer");

    // No token: 401, and slo-guard asked the apiserver nothing.
    let (status, answer) = preflight(&guarded, None, &scale_to(6));
    assert_eq!(status, 401, "{answer}");
    // A token the apiserver does not know: 401.
    let (status, answer) = preflight(&guarded, Some("not-a-token"), &scale_to(6));
    assert_eq!(status, 401, "{answer}");

    // A about itself: 200. The policies load from the cluster a moment after start.
    retry_until(
        "the preflight answers the agent about itself",
        Duration::from_secs(30),
        || {
            let (status, answer) = preflight(&guarded, Some(&fixer), &scale_to(6));
            if status != 200 || answer["policies"] != json!(["payments/checkout"]) {
                return Err(format!("{status}: {answer}"));
            }
            Ok(())
        },
    );
    let (_, answer) = preflight(&guarded, Some(&fixer), &scale_to(15));
    assert_eq!(answer["subject"]["user"], AGENT, "{answer:#}");
    assert_eq!(answer["allowed"], false, "{answer:#}");
    assert_eq!(answer["actor"], "agent", "{answer:#}");
    assert_eq!(answer["envelope"]["replicas"]["current"], 5, "{answer:#}");
    assert_eq!(
        answer["envelope"]["replicas"]["largestAllowed"], 9,
        "{answer:#}"
    );
    assert_eq!(
        answer["envelope"]["replicas"]["smallestAllowed"], 2,
        "{answer:#}"
    );

    // A about B, without RBAC to impersonate B: 403.
    let mut as_other = scale_to(6);
    as_other["as"] = json!({"user": OTHER});
    let (status, answer) = preflight(&guarded, Some(&fixer), &as_other);
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("impersonate")),
        "{answer}"
    );

    // With a Role that lets A impersonate B: 200, judged for B.
    guarded.cluster.apply(IMPERSONATE_OTHER);
    retry_until(
        "the preflight answers the agent about the identity it may impersonate",
        Duration::from_secs(30),
        || {
            let (status, answer) = preflight(&guarded, Some(&fixer), &as_other);
            if status != 200 {
                return Err(format!("{status}: {answer}"));
            }
            if answer["subject"]["user"] != OTHER || answer["subject"]["askedBy"] != AGENT {
                return Err(format!("judged for the wrong identity: {answer}"));
            }
            Ok(())
        },
    );
    // The grant is for B alone: a third identity is still refused.
    let mut as_third = scale_to(6);
    as_third["as"] = json!({"user": "system:serviceaccount:ai-agents:third"});
    let (status, answer) = preflight(&guarded, Some(&fixer), &as_third);
    assert_eq!(status, 403, "{answer}");

    // The command line asks the same endpoint: exit 0 when the change would pass, 1 when
    // it would not, with the answer as JSON.
    let allowed = cli(&guarded, &fixer, "6");
    assert_eq!(
        allowed.status.code(),
        Some(0),
        "{}{}",
        text(&allowed.stdout),
        text(&allowed.stderr)
    );
    let denied = cli(&guarded, &fixer, "15");
    assert_eq!(denied.status.code(), Some(1), "{}", text(&denied.stderr));
    let answer: Value = serde_json::from_slice(&denied.stdout).expect("JSON");
    assert_eq!(answer["envelope"]["replicas"]["largestAllowed"], 9);
    let unauthenticated = cli(&guarded, "not-a-token", "6");
    assert_eq!(unauthenticated.status.code(), Some(2));
    assert!(
        text(&unauthenticated.stderr).contains("401"),
        "{}",
        text(&unauthenticated.stderr)
    );
}
