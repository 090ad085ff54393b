//! The same changes judged twice: offline by `slo-guard check` (from the stored object
//! and the object after the change, as manifests) and through a real kube-apiserver with
//! `kubectl replace --as`. The verdicts and the rules that fire must be the same, for a
//! person's approval flow above all (issue 17: offline, the approval used to be denied).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use slo_guard_testkit::e2e::*;
use slo_guard_testkit::policies::policy_configmap;

fn policy_manifest() -> String {
    policy_configmap(
        "payments",
        "parity",
        &[
            "match: {kinds: [Deployment], names: [parity]}",
            "agents: {users: [\"system:serviceaccount:ai-agents:*\"]}",
            "approval: {requiredFor: [rollout], maxAge: 1h}",
        ],
    )
}

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: parity, namespace: payments, labels: {app: parity}}
spec:
  replicas: 2
  selector: {matchLabels: {app: parity}}
  template:
    metadata: {labels: {app: parity}}
    spec:
      containers: [{name: app, image: "registry.example.com/payments/parity:1.0.0"}]
"#;

const ALICE: &str = "alice@example.com";

/// The rule tags (`[payments/parity:approval]`) in what was printed, in order.
fn rules_in(text: &str) -> Vec<String> {
    text.match_indices("[payments/")
        .filter_map(|(at, _)| {
            text[at..]
                .find(']')
                .map(|end| text[at..at + end + 1].to_string())
        })
        .collect()
}

struct Verdict {
    allowed: bool,
    rules: Vec<String>,
    printed: String,
}

fn offline(
    dir: &Path,
    policy: &Path,
    new: &Value,
    old: &Value,
    user: &str,
    groups: &[&str],
) -> Verdict {
    let new_file = dir.join("new.json");
    let old_file = dir.join("old.json");
    std::fs::write(&new_file, new.to_string()).unwrap();
    std::fs::write(&old_file, old.to_string()).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_slo-guard"));
    command
        .args(["check", "--policies"])
        .arg(policy)
        .arg("--object")
        .arg(&new_file)
        .arg("--old-object")
        .arg(&old_file)
        .args(["--as", user]);
    if !groups.is_empty() {
        command.args(["--groups", &groups.join(",")]);
    }
    let output = command.output().expect("slo-guard check runs");
    let printed = text(&output.stderr);
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "unusable: {printed}"
    );
    Verdict {
        allowed: output.status.success(),
        rules: rules_in(&printed),
        printed,
    }
}

fn through_apiserver(cluster: &mut Cluster, new: &Value, user: &str, groups: &[&str]) -> Verdict {
    let mut args = vec!["replace", "-f", "-", "--as", user];
    for group in groups {
        args.extend(["--as-group", group]);
    }
    let output = cluster.kubectl_with_stdin(&args, Some(&new.to_string()));
    let printed = text(&output.stderr);
    Verdict {
        allowed: output.status.success(),
        rules: rules_in(&printed),
        printed,
    }
}

fn stored(cluster: &mut Cluster) -> Value {
    let output = cluster.kubectl(&["get", "deploy/parity", "-n", "payments", "-o", "json"]);
    assert_allowed(&output);
    serde_json::from_slice(&output.stdout).expect("the stored Deployment")
}

fn annotate(object: &Value, pairs: &[(&str, &str)]) -> Value {
    let mut object = object.clone();
    let annotations = object["metadata"]
        .as_object_mut()
        .expect("metadata")
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    for (key, value) in pairs {
        annotations[*key] = Value::from(*value);
    }
    object
}

fn agent_rollout(stored: &Value) -> Value {
    let mut rollout = annotate(
        stored,
        &[
            ("slo-guard.io/decision-id", "d1-parity-rollout"),
            ("slo-guard.io/reason", "e2e parity: new image"),
            ("slo-guard.io/confidence", "0.9"),
            ("slo-guard.io/action", "fix-image"),
        ],
    );
    rollout["spec"]["template"]["spec"]["containers"][0]["image"] =
        Value::from("registry.example.com/payments/parity:1.0.1");
    rollout
}

#[test]
fn a_persons_approval_flow_gets_the_same_verdicts_offline_and_through_the_apiserver() {
    let mut guarded = Guarded::start("offline-parity");
    guarded.cluster.apply(&policy_manifest());
    guarded
        .guard()
        .wait_for_log("\"configmap\":\"payments/parity\"", Duration::from_secs(20));
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, policy_manifest()).unwrap();
    let cluster = &mut guarded.cluster;
    cluster.apply(DEPLOYMENT);

    let compare = |cluster: &mut Cluster, new: &Value, user: &str, groups: &[&str]| {
        let old = stored(cluster);
        let judged_offline = offline(dir.path(), &policy, new, &old, user, groups);
        let judged_online = through_apiserver(cluster, new, user, groups);
        assert_eq!(
            (judged_offline.allowed, &judged_offline.rules),
            (judged_online.allowed, &judged_online.rules),
            "offline:\n{}\napiserver:\n{}",
            judged_offline.printed,
            judged_online.printed
        );
        (judged_offline, judged_online)
    };

    // 1. The agent's rollout needs a person's approval; both print the same command.
    let rollout = agent_rollout(&stored(cluster));
    let (offline_denial, online_denial) = compare(cluster, &rollout, AGENT, &[]);
    assert!(!offline_denial.allowed);
    let approve_command = |printed: &str| {
        let at = printed
            .find("slo-guard.io/approve=")
            .expect("the approve command");
        printed[at..]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        approve_command(&offline_denial.printed),
        approve_command(&online_denial.printed),
        "the same change, the same digest"
    );
    let approval = approve_command(&online_denial.printed);
    let approval = approval.trim_start_matches("slo-guard.io/approve=");

    // 2. An agent cannot approve; 3. a person can: offline, as on the apiserver, the
    // mutating webhook stamps approved-by before the validating webhook looks.
    let approved = annotate(&stored(cluster), &[("slo-guard.io/approve", approval)]);
    let (forged, _) = compare(cluster, &approved, AGENT, &[]);
    assert!(!forged.allowed, "{}", forged.printed);
    let (approved_offline, approved_online) = compare(cluster, &approved, ALICE, &["sre"]);
    assert!(approved_offline.allowed, "{}", approved_offline.printed);
    assert!(approved_online.allowed, "{}", approved_online.printed);
    let after = stored(cluster);
    assert_eq!(
        after["metadata"]["annotations"]["slo-guard.io/approved-by"],
        ALICE
    );

    // 4. The agent's rollout on top of the approval passes in both.
    let (rolled, _) = compare(cluster, &agent_rollout(&after), AGENT, &[]);
    assert!(rolled.allowed, "{}", rolled.printed);
}
