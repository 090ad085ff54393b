//! The routes around a workload that no Deployment field shows, attacked on a real
//! kube-apiserver (docs/threat-model.md, invariants 3 and 3b): an agent holding rights on
//! Services, DaemonSets, Jobs and CronJobs in its namespace tries to move a governed
//! workload's traffic, or to run its pods under another kind of object.

use std::time::Duration;

use slo_guard_testkit::e2e::*;
use slo_guard_testkit::policies::policy_configmap;

const AGENT_RIGHTS: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: agent-routes, namespace: payments}
rules:
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [apps]
  resources: [daemonsets]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [batch]
  resources: [jobs, cronjobs]
  verbs: [get, list, watch, create, update, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: agent-routes, namespace: payments}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: agent-routes}
subjects:
- {kind: ServiceAccount, name: fixer, namespace: ai-agents}
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: sre}
"#;

fn policy_manifest() -> String {
    policy_configmap(
        "payments",
        "checkout",
        &[
            "match: {kinds: [Deployment], selector: {matchLabels: {app: checkout}}}",
            "agents: {users: [\"system:serviceaccount:ai-agents:*\"]}",
            "scaling: {maxReplicas: 10}",
        ],
    )
}

fn service(name: &str, app: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: payments}}
spec:
  selector: {{app: {app}}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
    )
}

fn pod_template(app: &str, restart_policy: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"labels": {"app": app}},
        "spec": {
            "restartPolicy": restart_policy,
            "containers": [{"name": "app", "image": format!("registry.example.com/payments/{app}:1.0.0")}]
        }
    })
}

fn as_agent<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["--as", AGENT]);
    all
}

fn as_person<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["--as", "alice@example.com", "--as-group", "sre"]);
    all
}

/// An agent may not move a governed workload's traffic: no selector change on, and no
/// delete of, a Service that sends traffic to its pods, and no Service pointed at them.
/// People may; other Services and metadata changes are the agent's.
#[test]
fn an_agent_cannot_move_a_governed_workloads_traffic() {
    let mut guarded = Guarded::start("routes-services");
    let cluster = &mut guarded.cluster;
    cluster.apply(AGENT_RIGHTS);
    cluster.apply(&policy_manifest());
    cluster.apply(&agent_deployment(
        "checkout",
        3,
        "d-routes-0001",
        "e2e: routes",
    ));
    cluster.apply(&service("checkout", "checkout"));
    cluster.apply(&service("debug", "debug"));

    // Redirecting the guarded Service to other pods. The policy and the Deployment reach
    // slo-guard through its watches, so the first attempts may still pass unjudged:
    // retry until the denial, then put the selector back as a person would.
    let redirect = [
        "patch",
        "service/checkout",
        "-n",
        "payments",
        "-p",
        r#"{"spec":{"selector":{"app":"shadow"}}}"#,
    ];
    let expected = "[payments/checkout:service-route] rollout of Service payments/checkout blocked: it sends traffic to the pods of Deployment payments/checkout, which policy payments/checkout governs, and its selector changes from app=checkout to app=shadow, which moves that traffic. Ask a person to change the Service";
    retry_until("slo-guard judges Services", Duration::from_secs(20), || {
        let output = cluster.kubectl(&as_agent(&redirect));
        let stderr = text(&output.stderr);
        if stderr.contains(expected) {
            return Ok(());
        }
        if output.status.success() {
            let _ = cluster.kubectl(&[
                "patch",
                "service/checkout",
                "-n",
                "payments",
                "-p",
                r#"{"spec":{"selector":{"app":"checkout"}}}"#,
            ]);
        }
        Err(stderr)
    });
    assert_denied(&cluster.kubectl(&as_agent(&redirect)), expected);

    // Deleting it takes the traffic away.
    assert_denied(
        &cluster.kubectl(&as_agent(&["delete", "service/checkout", "-n", "payments"])),
        "[payments/checkout:service-route] delete of Service payments/checkout blocked: it sends traffic to the pods of Deployment payments/checkout, which policy payments/checkout governs, and deleting it takes that traffic away",
    );
    // Pointing another Service at the guarded pods sends them traffic they were not
    // sized for.
    assert_denied(
        &cluster.kubectl(&as_agent(&[
            "patch",
            "service/debug",
            "-n",
            "payments",
            "-p",
            r#"{"spec":{"selector":{"app":"checkout"}}}"#,
        ])),
        "[payments/checkout:service-route] rollout of Service payments/debug blocked: it sends traffic to the pods of Deployment payments/checkout",
    );

    // What the agent may still do: metadata, Services of ungoverned pods, new Services.
    assert_allowed(&cluster.kubectl(&as_agent(&[
        "label",
        "service/checkout",
        "-n",
        "payments",
        "owner=payments-team",
    ])));
    assert_allowed(&cluster.kubectl(&as_agent(&[
        "patch",
        "service/debug",
        "-n",
        "payments",
        "-p",
        r#"{"spec":{"selector":{"app":"debug-v2"}}}"#,
    ])));
    assert_allowed(&cluster.kubectl_with_stdin(
        &as_agent(&["create", "-f", "-"]),
        Some(&service("checkout-canary", "checkout")),
    ));
    // A person may move the traffic.
    assert_allowed(&cluster.kubectl(&as_person(&redirect)));
    let selector = cluster.kubectl(&[
        "get",
        "service/checkout",
        "-n",
        "payments",
        "-o",
        "jsonpath={.spec.selector.app}",
    ]);
    assert_eq!(text(&selector.stdout), "shadow");
}

/// Pods made under other kinds of objects are judged like ReplicaSets: an agent's
/// DaemonSet, Job, CronJob, or a StatefulSet the policy does not list, whose pods carry a
/// governed workload's labels is denied;
/// the same objects with their own labels, and a person's, are admitted.
#[test]
fn an_agent_cannot_run_a_governed_workloads_pods_under_another_kind() {
    let mut guarded = Guarded::start("routes-pod-makers");
    guarded.cluster.apply(AGENT_RIGHTS);
    guarded.cluster.apply(&policy_manifest());
    guarded.guard().wait_for_log(
        "\"configmap\":\"payments/checkout\"",
        Duration::from_secs(20),
    );
    let cluster = &mut guarded.cluster;

    let daemonset = |name: &str, app: &str| {
        serde_json::json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": "payments"},
            "spec": {"selector": {"matchLabels": {"app": app}}, "template": pod_template(app, "Always")}
        })
        .to_string()
    };
    let job = |name: &str, app: &str| {
        serde_json::json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "payments"},
            "spec": {"template": pod_template(app, "Never")}
        })
        .to_string()
    };
    let cronjob = |name: &str, app: &str| {
        serde_json::json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": name, "namespace": "payments"},
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": pod_template(app, "Never")}}}
        })
        .to_string()
    };
    // Another kind of workload than the policy lists, with the governed pods' labels.
    let statefulset = |name: &str, app: &str| {
        serde_json::json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": "payments", "labels": {"app": "sts"}},
            "spec": {"replicas": 50, "serviceName": name, "selector": {"matchLabels": {"app": app}}, "template": pod_template(app, "Always")}
        })
        .to_string()
    };
    assert_denied(
        &cluster.kubectl_with_stdin(
            &as_agent(&["create", "-f", "-"]),
            Some(&statefulset("checkout-sts", "checkout")),
        ),
        "[payments/checkout:pod-route] create of StatefulSet payments/checkout-sts blocked: its pods carry the pod labels of workloads policy payments/checkout governs (app=checkout), and the policy does not govern StatefulSets",
    );
    assert_allowed(&cluster.kubectl_with_stdin(
        &as_agent(&["create", "-f", "-"]),
        Some(&statefulset("ledger-sts", "ledger")),
    ));
    for (manifest, kind) in [
        (daemonset("checkout-everywhere", "checkout"), "DaemonSet"),
        (job("checkout-burst", "checkout"), "Job"),
        (cronjob("checkout-nightly", "checkout"), "CronJob"),
    ] {
        let output = cluster.kubectl_with_stdin(&as_agent(&["create", "-f", "-"]), Some(&manifest));
        assert_denied(
            &output,
            &format!("[payments/checkout:pod-route] create of {kind} payments/checkout-"),
        );
        assert_denied(
            &output,
            "it carries the pod labels of workloads policy payments/checkout governs (app=checkout)",
        );
    }
    // Their own pods are the agent's business; a person may run the guarded ones.
    assert_allowed(&cluster.kubectl_with_stdin(
        &as_agent(&["create", "-f", "-"]),
        Some(&job("report", "report")),
    ));
    assert_allowed(&cluster.kubectl_with_stdin(
        &as_agent(&["create", "-f", "-"]),
        Some(&cronjob("report-nightly", "report")),
    ));
    assert_allowed(&cluster.kubectl_with_stdin(
        &as_person(&["create", "-f", "-"]),
        Some(&job("checkout-migration", "checkout")),
    ));
    // An agent's change that gives its own Job's pods the guarded labels is denied too.
    assert_denied(
        &cluster.kubectl(&as_agent(&[
            "patch",
            "cronjob/report-nightly",
            "-n",
            "payments",
            "-p",
            r#"{"spec":{"jobTemplate":{"spec":{"template":{"metadata":{"labels":{"app":"checkout"}}}}}}}"#,
        ])),
        "[payments/checkout:pod-route] rollout of CronJob payments/report-nightly blocked",
    );
}
