//! Agent governance end to end, through a real kube-apiserver: approvals no agent can
//! forge, stale and mismatched approvals, cooldowns that survive restarts and hold across
//! two slo-guard processes, a change window at its boundary, and every diff-scope
//! violation. Identities are impersonated with `kubectl --as`, so the requests reach
//! slo-guard exactly as an agent's or a person's would.
//!
//! The tests share one control plane and one slo-guard ([`TestNs`]), each in its own
//! namespace with its own policies; the cooldown test restarts slo-guard, so it runs alone.

use std::time::Duration;

use chrono::{Timelike, Utc};
use slo_guard_testkit::e2e::*;

const REVIEWER: &str = "system:serviceaccount:ai-agents:reviewer";
const ALICE: [&str; 4] = ["--as", "alice@example.com", "--as-group", "sre"];

/// The transcript: target/e2e-transcript-governance.txt.
const BINARY: &str = "governance";

/// A second agent identity, with the fixer's grants in `namespace`.
fn identities(namespace: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: reviewer, namespace: ai-agents}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: ai-agent-reviewer, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: ai-agent-fixer}}
subjects:
- {{kind: ServiceAccount, name: reviewer, namespace: ai-agents}}
"#
    )
}

fn policy(namespace: &str, name: &str, body: &str) -> String {
    let indented: String = body.lines().map(|line| format!("    {line}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {{slo-guard.io/policy: \"true\"}}\ndata:\n  policy.yaml: |\n{indented}"
    )
}

/// `namespace` on the shared cluster with the policy `name` (governing the Deployment of
/// that name, agents `system:serviceaccount:ai-agents:*`, and `rules`) loaded.
fn with_policy(namespace: &str, name: &str, rules: &str) -> TestNs {
    let mut test = TestNs::shared(BINARY, namespace);
    test.apply(&policy(
        namespace,
        name,
        &format!("match: {{kinds: [Deployment], names: [{name}]}}\n{AGENTS}\n{rules}"),
    ));
    test.wait_for_policies(&[name]);
    test
}

const AGENTS: &str = "agents: {users: [\"system:serviceaccount:ai-agents:*\"]}";

fn deployment(namespace: &str, name: &str, annotations: &[(&str, &str)]) -> String {
    let annotations: String = annotations
        .iter()
        .map(|(key, value)| format!("    {key}: \"{value}\"\n"))
        .collect();
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
  labels: {{app: {name}}}
  annotations:
{annotations}    team: payments
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: app
        image: registry.example.com/payments/{name}:1.0.0
        env: [{{name: LOG_LEVEL, value: info}}]
        resources: {{requests: {{memory: 256Mi}}, limits: {{memory: 512Mi}}}}
      - name: proxy
        image: registry.example.com/envoy:1.30
        resources: {{limits: {{memory: 128Mi}}}}
"#
    )
}

fn context(decision: &str, action: &str) -> Vec<(&'static str, String)> {
    vec![
        ("slo-guard.io/decision-id", decision.to_string()),
        (
            "slo-guard.io/reason",
            format!("e2e: {action} for decision {decision}"),
        ),
        ("slo-guard.io/confidence", "0.9".to_string()),
        ("slo-guard.io/action", action.to_string()),
    ]
}

/// A strategic merge patch that sets the agent's decision context and `spec`.
fn agent_patch(decision: &str, action: &str, spec: serde_json::Value) -> String {
    let annotations: serde_json::Map<String, serde_json::Value> = context(decision, action)
        .into_iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
        .collect();
    serde_json::json!({"metadata": {"annotations": annotations}, "spec": spec}).to_string()
}

fn image(name: &str, tag: &str) -> serde_json::Value {
    serde_json::json!({"template": {"spec": {"containers": [
        {"name": "app", "image": format!("registry.example.com/payments/{name}:{tag}")}
    ]}}})
}

fn annotation(test: &mut TestNs, name: &str, key: &str) -> String {
    let path = format!(
        "jsonpath={{.metadata.annotations.{}}}",
        key.replace('.', "\\.").replace('/', "\\/")
    );
    let namespace = test.name.clone();
    let output = test.kubectl(&[
        "get",
        &format!("deploy/{name}"),
        "-n",
        &namespace,
        "-o",
        &path,
    ]);
    text(&output.stdout)
}

/// The honest create of `inventory` by the agent (create needs no approval here), which
/// starts the cooldown clock.
fn create_inventory(test: &mut TestNs) {
    let namespace = test.name.clone();
    let context_d0: Vec<(&str, String)> = context("d0-inventory-create", "fix-image");
    let pairs: Vec<(&str, &str)> = context_d0.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_allowed(&test.kubectl_with_stdin(
        &["create", "-f", "-", "--as", AGENT],
        Some(&deployment(&namespace, "inventory", &pairs)),
    ));
    assert!(!annotation(test, "inventory", "slo-guard.io/last-agent-change").is_empty());
}

const INVENTORY_APPROVAL: &str = "approval: {requiredFor: [rollout], maxAge: 1h}";

#[test]
fn an_agent_cannot_write_approval_keys_into_what_it_creates() {
    let ns = "gov-forged-create";
    let mut test = with_policy(ns, "inventory", INVENTORY_APPROVAL);

    // An agent writing approval keys itself, in every way it could.
    let forged_approve = deployment(
        ns,
        "inventory",
        &[
            ("slo-guard.io/decision-id", "d1-inventory-rollout"),
            ("slo-guard.io/reason", "e2e"),
            ("slo-guard.io/confidence", "0.9"),
            ("slo-guard.io/action", "fix-image"),
            ("slo-guard.io/approve", "d1-inventory-rollout"),
        ],
    );
    let output =
        test.kubectl_with_stdin(&["create", "-f", "-", "--as", AGENT], Some(&forged_approve));
    assert_denied(
        &output,
        &format!(
            "[{ns}/inventory:self-approval] create of Deployment {ns}/inventory blocked: agents cannot approve their own changes: system:serviceaccount:ai-agents:fixer (agent) changed slo-guard.io/approve"
        ),
    );
    let forged_by = forged_approve
        .replace("slo-guard.io/approve", "slo-guard.io/approved-by")
        .replace(
            "\"d1-inventory-rollout\"\n    team",
            "\"alice@example.com\"\n    team",
        );
    assert_ne!(forged_by, forged_approve, "the approved-by forgery differs");
    let output = test.kubectl_with_stdin(&["create", "-f", "-", "--as", AGENT], Some(&forged_by));
    assert_denied(
        &output,
        "agents cannot approve their own changes: system:serviceaccount:ai-agents:fixer (agent) changed slo-guard.io/approved-by",
    );

    // The honest create passes and starts the cooldown clock.
    create_inventory(&mut test);
}

#[test]
fn only_a_person_approves_a_rollout_and_only_the_decision_named() {
    let ns = "gov-approval";
    let mut test = with_policy(ns, "inventory", INVENTORY_APPROVAL);
    test.apply(&identities(ns));
    create_inventory(&mut test);

    // A rollout needs a person's approval, and the denial says how to get one.
    let rollout_d1 = agent_patch(
        "d1-inventory-rollout",
        "fix-image",
        image("inventory", "1.0.1"),
    );
    let rollout = [
        "patch",
        "deploy/inventory",
        "-n",
        ns,
        "-p",
        rollout_d1.as_str(),
        "--as",
        AGENT,
    ];
    let denial = assert_denied(
        &test.kubectl(&rollout),
        &format!(
            "[{ns}/inventory:approval] rollout of Deployment {ns}/inventory blocked: agent rollout needs a person's approval (tier approval, approval.requiredFor): decision d1-inventory-rollout has no approval. Ask an SRE to approve this change and no other: kubectl annotate deployment/inventory -n {ns} slo-guard.io/approve=d1-inventory-rollout@"
        ),
    );
    let approval_d1 = format!("slo-guard.io/approve={}", approval_in(&denial));

    // The agent approves in a separate request; so does another agent identity.
    let approve_d1 = [
        "annotate",
        "deploy/inventory",
        "-n",
        ns,
        approval_d1.as_str(),
        "--overwrite",
    ];
    let output = test.kubectl(&[&approve_d1[..], &["--as", AGENT]].concat());
    assert_denied(
        &output,
        &format!(
            "[{ns}/inventory:self-approval] metadata of Deployment {ns}/inventory blocked: agents cannot approve their own changes"
        ),
    );
    let output = test.kubectl(&[&approve_d1[..], &["--as", REVIEWER]].concat());
    assert_denied(
        &output,
        "agents cannot approve their own changes: system:serviceaccount:ai-agents:reviewer (agent) changed slo-guard.io/approve",
    );
    let output = test.kubectl(&[
        "annotate",
        "deploy/inventory",
        "-n",
        ns,
        "slo-guard.io/approved-by=alice@example.com",
        "--as",
        AGENT,
    ]);
    assert_denied(&output, "agents cannot approve their own changes");

    // A person approves a different decision: it does not cover this one.
    assert_allowed(
        &test.kubectl(
            &[
                &[
                    "annotate",
                    "deploy/inventory",
                    "-n",
                    ns,
                    "slo-guard.io/approve=d0-inventory-create",
                    "--overwrite",
                ][..],
                &ALICE[..],
            ]
            .concat(),
        ),
    );
    assert_denied(
        &test.kubectl(&rollout),
        "the approval is for decision d0-inventory-create, not d1-inventory-rollout",
    );

    // A person approves this decision: slo-guard stamps who and when, and the rollout passes.
    assert_allowed(&test.kubectl(&[&approve_d1[..], &ALICE[..]].concat()));
    assert_eq!(
        annotation(&mut test, "inventory", "slo-guard.io/approved-by"),
        "alice@example.com"
    );
    assert!(!annotation(&mut test, "inventory", "slo-guard.io/approved-at").is_empty());
    // Writing the stamp by hand changes nothing: slo-guard puts its own value back.
    let _ = test.kubectl(
        &[
            &[
                "annotate",
                "deploy/inventory",
                "-n",
                ns,
                "slo-guard.io/approved-by=bob@example.com",
                "--overwrite",
            ][..],
            &ALICE[..],
        ]
        .concat(),
    );
    assert_eq!(
        annotation(&mut test, "inventory", "slo-guard.io/approved-by"),
        "alice@example.com"
    );
    assert_allowed(&test.kubectl(&rollout));
    let change_cause = annotation(&mut test, "inventory", "kubernetes.io/change-cause");
    assert_eq!(
        change_cause,
        "e2e: fix-image for decision d1-inventory-rollout"
    );
}

#[test]
fn an_approval_older_than_its_max_age_no_longer_counts() {
    let ns = "gov-stale";
    let mut test = with_policy(
        ns,
        "billing",
        "approval: {requiredFor: [rollout], maxAge: 2s}",
    );
    test.apply(&deployment(ns, "billing", &[]));
    let stale = agent_patch("d2-billing", "fix-image", image("billing", "1.0.1"));
    let stale_patch = [
        "patch",
        "deploy/billing",
        "-n",
        ns,
        "-p",
        stale.as_str(),
        "--as",
        AGENT,
    ];
    let denial = assert_denied(&test.kubectl(&stale_patch), "has no approval");
    let approval_d2 = format!("slo-guard.io/approve={}", approval_in(&denial));
    assert_allowed(
        &test.kubectl(
            &[
                &[
                    "annotate",
                    "deploy/billing",
                    "-n",
                    ns,
                    approval_d2.as_str(),
                    "--overwrite",
                ][..],
                &ALICE[..],
            ]
            .concat(),
        ),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_denied(&test.kubectl(&stale_patch), "old, older than the 2s limit");
}

#[test]
fn a_change_may_touch_only_what_its_declared_action_covers() {
    let ns = "gov-scope";
    let mut test = with_policy(ns, "catalog", "scope: {maxMemory: 2Gi, maxMemoryFactor: 2}");
    test.apply(&deployment(ns, "catalog", &[]));
    let scope_cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "fix-image",
            serde_json::json!({"replicas": 5, "template": {"spec": {"containers": [{"name": "app", "image": "registry.example.com/payments/catalog:1.0.1"}]}}}),
            "the declared action fix-image does not cover spec.replicas",
        ),
        (
            "increase-memory",
            serde_json::json!({"template": {"spec": {"containers": [{"name": "app", "resources": {"limits": {"memory": "1536Mi"}}}]}}}),
            "memory limits of container app grows 3.00x, above the largest factor 2",
        ),
        (
            "increase-memory",
            serde_json::json!({"template": {"spec": {"containers": [{"name": "proxy", "resources": {"limits": {"memory": "3Gi"}}}]}}}),
            "memory limits of container proxy grows 24.00x, above the largest factor 2; memory limits of container proxy 3Gi is above scope.maxMemory 2Gi",
        ),
        (
            "update-env",
            serde_json::json!({"template": {"spec": {"containers": [{"name": "app", "env": [{"name": "DB_PASSWORD", "value": "hunter2"}]}]}}}),
            "env var DB_PASSWORD gets a literal value",
        ),
        (
            "restart",
            serde_json::json!({"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-21T10:00:00Z"}}, "spec": {"containers": [{"name": "app", "image": "registry.example.com/payments/catalog:9.9.9"}]}}}),
            "the declared action restart does not cover spec.template.spec.containers[0].image",
        ),
        (
            "scale",
            image("catalog", "1.0.2"),
            "the declared action scale does not cover spec.template.spec.containers[0].image",
        ),
    ];
    for (action, spec, expected) in scope_cases {
        let patch = agent_patch("d3-catalog", action, spec);
        let output = test.kubectl(&[
            "patch",
            "deploy/catalog",
            "-n",
            ns,
            "-p",
            &patch,
            "--as",
            AGENT,
        ]);
        assert_denied(
            &output,
            &format!(
                "[{ns}/catalog:diff-scope] rollout of Deployment {ns}/catalog blocked: the change does more than its declared action: {expected}"
            ),
        );
    }
    // The decision names one container; the change rewrites both.
    let both = serde_json::json!({
        "metadata": {"annotations": {"slo-guard.io/container": "app", "slo-guard.io/action": "fix-image", "slo-guard.io/decision-id": "d4-catalog", "slo-guard.io/reason": "e2e", "slo-guard.io/confidence": "0.9"}},
        "spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "registry.example.com/payments/catalog:1.0.3"},
            {"name": "proxy", "image": "registry.example.com/envoy:1.31"}
        ]}}}
    });
    assert_denied(
        &test.kubectl(&[
            "patch",
            "deploy/catalog",
            "-n",
            ns,
            "-p",
            &both.to_string(),
            "--as",
            AGENT,
        ]),
        "the decision names container app, but the change touches every container: app, proxy",
    );
    // Within scope, it passes.
    let clean = agent_patch("d5-catalog", "fix-image", image("catalog", "1.0.4"));
    assert_allowed(&test.kubectl(&[
        "patch",
        "deploy/catalog",
        "-n",
        ns,
        "-p",
        &clean,
        "--as",
        AGENT,
    ]));

    // A scale through the subresource while the workload declares fix-image.
    let expected = format!(
        "[{ns}/catalog:diff-scope] scale of Deployment {ns}/catalog blocked: the change does more than its declared action: the declared action fix-image does not cover spec.replicas"
    );
    retry_until(
        "scale judged against the workload's declared action",
        Duration::from_secs(15),
        || {
            let stderr = text(
                &test
                    .kubectl(&[
                        "scale",
                        "deploy/catalog",
                        "-n",
                        ns,
                        "--replicas=3",
                        "--as",
                        AGENT,
                    ])
                    .stderr,
            );
            if stderr.contains(&expected) {
                Ok(())
            } else {
                Err(stderr)
            }
        },
    );
}

#[test]
fn a_cooldown_holds_across_restarts_and_processes_but_not_for_people() {
    let ns = "gov-cooldown";
    // Alone on the cluster: it restarts the shared slo-guard.
    let mut test = TestNs::exclusive(BINARY, ns);
    test.apply(&policy(
        ns,
        "search",
        &format!(
            "match: {{kinds: [Deployment], names: [search]}}\n{AGENTS}\nscaling: {{maxReplicas: 50, maxStep: 10, cooldown: 1h}}"
        ),
    ));
    test.wait_for_policies(&["search"]);

    // Stamped on the workload, so it holds across restarts and replicas.
    test.apply(&deployment(ns, "search", &[]));
    assert_allowed(&test.kubectl(&[
        "annotate",
        "deploy/search",
        "-n",
        ns,
        "--overwrite",
        "--as",
        AGENT,
        "slo-guard.io/action=scale",
        "slo-guard.io/decision-id=d6-search-scale",
        "slo-guard.io/reason=queue depth rising",
        "slo-guard.io/confidence=0.8",
    ]));
    retry_until(
        "first agent scale of search",
        Duration::from_secs(15),
        || {
            let output = test.kubectl(&[
                "scale",
                "deploy/search",
                "-n",
                ns,
                "--replicas=3",
                "--as",
                AGENT,
            ]);
            if output.status.success() {
                Ok(())
            } else {
                Err(text(&output.stderr))
            }
        },
    );
    // slo-guard records the scale in its change ledger, a Lease in its own namespace that
    // every replica reads (a Scale carries no annotations).
    let leases = test.kubectl(&[
        "get",
        "leases",
        "-n",
        "slo-guard",
        "-l",
        "slo-guard.io/ledger=true",
        "-o",
        "jsonpath={.items[*].metadata.annotations.slo-guard\\.io/workload}",
    ]);
    assert!(
        text(&leases.stdout).contains(&format!("Deployment {ns}/search")),
        "{}{}",
        text(&leases.stdout),
        text(&leases.stderr)
    );
    let second_scale = [
        "scale",
        "deploy/search",
        "-n",
        ns,
        "--replicas=4",
        "--as",
        AGENT,
    ];
    let cooldown = format!("[{ns}/search:cooldown]");
    retry_until(
        "cooldown seen through the watch cache",
        Duration::from_secs(15),
        || {
            let output = test.kubectl(&second_scale);
            let stderr = text(&output.stderr);
            if stderr.contains(&cooldown) {
                Ok(())
            } else {
                Err(stderr)
            }
        },
    );
    assert_denied(&test.kubectl(&second_scale), "inside the 1h cooldown");

    // A restarted slo-guard, and then a second process on another port, both hold it.
    let port = test.port();
    test.restart_guard(port, "slo-guard-restarted.log");
    assert_denied(
        &test.kubectl(&second_scale),
        &format!(
            "[{ns}/search:cooldown] scale of Deployment {ns}/search blocked: the last agent change was"
        ),
    );
    test.restart_guard(free_port(), "slo-guard-second.log");
    assert_denied(&test.kubectl(&second_scale), &cooldown);
    // People are not held by the agents' cooldown.
    assert_allowed(
        &test.kubectl(
            &[
                &["scale", "deploy/search", "-n", ns, "--replicas=4"][..],
                &ALICE[..],
            ]
            .concat(),
        ),
    );
}

#[test]
fn a_change_window_starts_inclusive_and_ends_exclusive() {
    let ns = "gov-window";
    let mut test = TestNs::shared(BINARY, ns);
    test.apply(&deployment(ns, "reports", &[]));
    let mut now = Utc::now();
    // Keep both windows inside one minute and one day.
    if now.second() > 45
        || (now.hour() == 23 && now.minute() >= 57)
        || (now.hour() == 0 && now.minute() < 3)
    {
        let wait = if now.hour() == 23 {
            (60 - now.minute() as u64) * 60 + 200
        } else {
            62 - now.second() as u64
        };
        std::thread::sleep(Duration::from_secs(wait));
        now = Utc::now();
    }
    let minute = now.format("%H:%M").to_string();
    let two_ago = (now - chrono::Duration::minutes(2))
        .format("%H:%M")
        .to_string();
    let two_on = (now + chrono::Duration::minutes(2))
        .format("%H:%M")
        .to_string();
    let day = now.format("%a").to_string();
    let window = |start: &str, end: &str| {
        policy(
            ns,
            "reports",
            &format!(
                "match: {{kinds: [Deployment], names: [reports]}}\nagents: {{users: [\"system:serviceaccount:ai-agents:*\"], requireAnnotations: []}}\nwindows: {{freeze: [{{days: [{day}], start: \"{start}\", end: \"{end}\", timezone: UTC, appliesTo: agents}}]}}"
            ),
        )
    };
    let scale_reports = [
        "scale",
        "deploy/reports",
        "-n",
        ns,
        "--replicas=3",
        "--as",
        AGENT,
    ];
    test.apply(&window(&minute, &two_on));
    let in_force = format!(
        "[{ns}/reports:change-window] scale of Deployment {ns}/reports blocked: change freeze {day} {minute}-{two_on} (UTC) is in force for agent changes"
    );
    retry_until(
        "a freeze starting this minute applies",
        Duration::from_secs(15),
        || {
            let stderr = text(&test.kubectl(&scale_reports).stderr);
            if stderr.contains(&in_force) {
                Ok(())
            } else {
                Err(stderr)
            }
        },
    );
    test.apply(&window(&two_ago, &minute));
    retry_until(
        "a freeze that ended this minute no longer applies",
        Duration::from_secs(15),
        || {
            let output = test.kubectl(&scale_reports);
            if output.status.success() {
                Ok(())
            } else {
                Err(text(&output.stderr))
            }
        },
    );
}

/// The approval value (`<decision-id>@<digest>`) in a denial's remedy, which names the
/// exact command that approves the denied change.
fn approval_in(denial: &str) -> String {
    let start = denial
        .find("slo-guard.io/approve=")
        .map(|at| at + "slo-guard.io/approve=".len())
        .unwrap_or_else(|| panic!("no approve command in: {denial}"));
    denial[start..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}
