//! Reflection end to end through a real kube-apiserver: the mutating patch attaches the
//! effective thresholds, a reflection that tightens the cap makes kubectl show a denial
//! that cites it, and an expired reflection no longer applies.

use std::time::Duration;

use slo_guard_testkit::e2e::*;
use slo_guard_testkit::policies::policy_configmap;

fn policy_manifest() -> String {
    policy_configmap(
        "payments",
        "checkout",
        &[
            "match: {kinds: [Deployment], names: [checkout]}",
            "agents: {users: [\"system:serviceaccount:ai-agents:*\"]}",
            "scaling: {maxReplicas: 20, appliesTo: agents}",
        ],
    )
}

fn checkout() -> String {
    agent_deployment(
        "checkout",
        4,
        "9d8c7b6a-scale-checkout",
        "checkout p99 above SLO: scale out",
    )
}

fn reflection(expires: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: checkout-reflections
  namespace: payments
  labels: {{slo-guard.io/reflection: "true"}}
data:
  checkout.yaml: |
    target: {{kind: Deployment, name: checkout}}
    thresholds: {{scaling.maxReplicas: 12}}
    reason: "INC-4711: scaling to 20 exhausted the DB pool"
    source: reflection-agent
    expires: {expires}
"#
    )
}

#[test]
fn reflections_tighten_what_kubectl_sees() {
    let mut guarded = Guarded::start("reflection");
    let cluster = &mut guarded.cluster;
    cluster.apply(&policy_manifest());
    guarded.guard.as_ref().unwrap().wait_for_log(
        "\"configmap\":\"payments/checkout\"",
        Duration::from_secs(20),
    );
    cluster.apply(&reflection("2099-01-31T00:00:00Z"));
    guarded.guard.as_ref().unwrap().wait_for_log(
        "\"configmap\":\"payments/checkout-reflections\"",
        Duration::from_secs(20),
    );

    // The agent's create gets the effective thresholds, with their provenance.
    let output =
        cluster.kubectl_with_stdin(&["create", "-f", "-", "--as", AGENT], Some(&checkout()));
    assert_allowed(&output);
    let yaml = text(
        &cluster
            .kubectl(&["get", "deploy/checkout", "-n", "payments", "-o", "yaml"])
            .stdout,
    );
    assert!(yaml.contains("slo-guard.io/thresholds:"), "{yaml}");
    let annotations: serde_json::Value = serde_json::from_slice(
        &cluster
            .kubectl(&[
                "get",
                "deploy/checkout",
                "-n",
                "payments",
                "-o",
                "jsonpath={.metadata.annotations}",
            ])
            .stdout,
    )
    .expect("annotations as JSON");
    let thresholds: serde_json::Value = serde_json::from_str(
        annotations["slo-guard.io/thresholds"]
            .as_str()
            .expect("thresholds stamped"),
    )
    .unwrap();
    assert_eq!(
        thresholds["payments/checkout"]["scaling.maxReplicas"],
        serde_json::json!({
            "value": 12, "policy": 20,
            "reflection": "payments/checkout-reflections#checkout.yaml",
            "source": "reflection-agent",
            "reason": "INC-4711: scaling to 20 exhausted the DB pool",
            "expires": "2099-01-31T00:00:00Z"
        })
    );
    let verdict: serde_json::Value = serde_json::from_str(
        annotations["slo-guard.io/verdict"]
            .as_str()
            .expect("verdict"),
    )
    .unwrap();
    assert_eq!(
        (
            verdict["verdict"].as_str(),
            verdict["class"].as_str(),
            verdict["actor"].as_str()
        ),
        (Some("allowed"), Some("create"), Some("agent"))
    );
    assert_eq!(
        annotations["kubernetes.io/change-cause"],
        "checkout p99 above SLO: scale out"
    );
    assert!(annotations["slo-guard.io/last-agent-change"].is_string());

    // Scaling to 14 is within the policy's 20 but above the reflected 12: denied, citing it.
    let scale = [
        "scale",
        "deploy/checkout",
        "-n",
        "payments",
        "--replicas=14",
        "--as",
        AGENT,
    ];
    retry_until(
        "denial citing the reflection",
        Duration::from_secs(15),
        || {
            let stderr = text(&cluster.kubectl(&scale).stderr);
            if stderr.contains("[payments/checkout:max-replicas] scale of Deployment payments/checkout blocked: 14 replicas requested, above the cap of 12 for agent changes (set by reflection payments/checkout-reflections#checkout.yaml from reflection-agent: INC-4711: scaling to 20 exhausted the DB pool; policy 20).") {
            Ok(())
        } else {
            Err(stderr)
        }
        },
    );

    // Expired, the reflection stops applying and the policy's own cap is back.
    cluster.apply(&reflection("2020-01-01T00:00:00Z"));
    retry_until(
        "expired reflection no longer applies",
        Duration::from_secs(15),
        || {
            let output = cluster.kubectl(&scale);
            if output.status.success() {
                Ok(())
            } else {
                Err(text(&output.stderr))
            }
        },
    );
    // A scale goes through the subresource, so the annotation changes at the next write
    // of the Deployment itself: then it shows the policy's own cap again.
    assert_allowed(&cluster.kubectl(&[
        "annotate",
        "deploy/checkout",
        "-n",
        "payments",
        "--overwrite",
        "--as",
        "alice@example.com",
        "--as-group",
        "sre",
        "team=payments",
    ]));
    let annotations: serde_json::Value = serde_json::from_slice(
        &cluster
            .kubectl(&[
                "get",
                "deploy/checkout",
                "-n",
                "payments",
                "-o",
                "jsonpath={.metadata.annotations}",
            ])
            .stdout,
    )
    .expect("annotations as JSON");
    let thresholds: serde_json::Value = serde_json::from_str(
        annotations["slo-guard.io/thresholds"]
            .as_str()
            .expect("thresholds stamped"),
    )
    .unwrap();
    assert_eq!(
        thresholds["payments/checkout"]["scaling.maxReplicas"],
        serde_json::json!({"value": 20, "from": "policy"})
    );
}
