//! The SLO gate end to end: a real kube-apiserver calls slo-guard, which asks the real
//! Prometheus harness; kubectl shows the figures. Covers an exhausted budget, a traffic
//! spike (rollout and scale-down denied, scale-up allowed), a healthy service, and
//! Prometheus stopped mid-test (the policy's onError: deny-agents).

use std::time::Duration;

use slo_guard_testkit::e2e::*;
use slo_guard_testkit::prometheus::{Harness, harness_dir, policy_manifest};

const SHOP: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: ai-agent-fixer, namespace: shop}
rules:
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, update, patch]
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [get, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: ai-agent-fixer, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: ai-agent-fixer}
subjects:
- {kind: ServiceAccount, name: fixer, namespace: ai-agents}
"#;

fn deployment(name: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: shop, labels: {{app: {name}}}}}
spec:
  replicas: 4
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - {{name: app, image: "registry.example.com/shop/{name}:1.0.0"}}
"#
    )
}

fn rollout_patch(name: &str, tag: &str) -> String {
    serde_json::json!({
        "metadata": {"annotations": {
            "slo-guard.io/decision-id": format!("e2e-slo-{name}-{tag}"),
            "slo-guard.io/reason": "roll forward",
            "slo-guard.io/confidence": "0.9",
            "slo-guard.io/action": "fix-image"
        }},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": format!("registry.example.com/shop/{name}:{tag}")}]}}}
    })
    .to_string()
}

#[test]
fn kubectl_shows_the_slo_figures() {
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let harness = Harness::start(&harness_dir(tmp, "e2e-slo"));
    let mut guarded = Guarded::start_with_env(
        "slo",
        &[
            ("SLO_GUARD_PROMETHEUS_URL", harness.url.as_str()),
            // Cached answers are reused this long; short, so the outage below is seen soon.
            ("SLO_GUARD_PROMETHEUS_REFRESH_INTERVAL", "1s"),
        ],
    );
    let cluster = &mut guarded.cluster;
    cluster.apply(SHOP);
    cluster.apply(&policy_manifest("deny-agents", "allow", "2s"));
    guarded
        .guard
        .as_ref()
        .unwrap()
        .wait_for_log("\"configmap\":\"shop/shop\"", Duration::from_secs(20));
    let cluster = &mut guarded.cluster;
    for name in ["exhausted", "spike", "healthy"] {
        cluster.apply(&deployment(name));
    }

    let rollout = |cluster: &mut Cluster, name: &str, tag: &str| {
        let patch = rollout_patch(name, tag);
        cluster.kubectl(&[
            "patch",
            &format!("deploy/{name}"),
            "-n",
            "shop",
            "-p",
            &patch,
            "--as",
            AGENT,
        ])
    };

    // An exhausted budget freezes rollouts for everyone, with the figures.
    assert_denied(
        &rollout(cluster, "exhausted", "1.0.1"),
        "[shop/shop:error-budget] rollout of Deployment shop/exhausted blocked: error budget -5.0% left, below the 0% floor for all changes (SLO 99.9% over 30d). Wait for the error budget to recover above 0%.",
    );

    // A spike blocks the rollout and a scale-down, never the scale-up it needs.
    assert_denied(
        &rollout(cluster, "spike", "1.0.1"),
        "[shop/shop:traffic-spike] rollout of Deployment shop/spike blocked: traffic spike: 30 req/s, 3x the baseline of 10 req/s, at or above the spike ratio 2.",
    );
    assert_allowed(&cluster.kubectl(&[
        "annotate",
        "deploy/spike",
        "-n",
        "shop",
        "--overwrite",
        "--as",
        AGENT,
        "slo-guard.io/action=scale",
        "slo-guard.io/decision-id=e2e-slo-spike-scale",
        "slo-guard.io/reason=absorb the spike",
        "slo-guard.io/confidence=0.9",
    ]));
    retry_until("scale-up during the spike", Duration::from_secs(15), || {
        let output = cluster.kubectl(&[
            "scale",
            "deploy/spike",
            "-n",
            "shop",
            "--replicas=6",
            "--as",
            AGENT,
        ]);
        if output.status.success() {
            Ok(())
        } else {
            Err(text(&output.stderr))
        }
    });
    assert_denied(
        &cluster.kubectl(&[
            "scale",
            "deploy/spike",
            "-n",
            "shop",
            "--replicas=2",
            "--as",
            AGENT,
        ]),
        "[shop/shop:traffic-spike] scale of Deployment shop/spike blocked: scale-down from 6 to 2 replicas during a traffic spike",
    );

    // A healthy service lets the agent through.
    assert_allowed(&rollout(cluster, "healthy", "1.0.1"));

    // Prometheus stops: onError deny-agents names the cause; people pass with a warning.
    harness.stop();
    // Answers already cached stay in use for the refresh interval.
    std::thread::sleep(Duration::from_millis(1500));
    let stderr = assert_denied(
        &rollout(cluster, "healthy", "1.0.2"),
        "[shop/shop:slo-data] rollout of Deployment shop/healthy blocked:",
    );
    assert!(
        stderr.contains("127.0.0.1"),
        "the cause names Prometheus: {stderr}"
    );
    let person = rollout_patch("healthy", "1.0.3");
    let output = cluster.kubectl(&["patch", "deploy/healthy", "-n", "shop", "-p", &person]);
    assert_allowed(&output);
    assert!(
        text(&output.stderr).contains("Warning: "),
        "a warning names the outage: {}",
        text(&output.stderr)
    );
}
