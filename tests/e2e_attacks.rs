//! Adversarial end-to-end tests: what an AI agent with generous RBAC would try in order to
//! get a change past slo-guard, each next to the legitimate flow that must keep working.
//!
//! Every request is a real `kubectl` call against a real kube-apiserver
//! (tests/e2e/cluster.sh), impersonating the agent
//! (`--as system:serviceaccount:ai-agents:fixer`) or a person
//! (`--as alice@example.com --as-group sre`). The agent holds an edit-like Role in
//! `payments` (workloads, ReplicaSets, Pods, HPAs, ConfigMaps, every verb, and the scale
//! subresources), so nothing here is stopped by RBAC: only slo-guard stands in the way.
//!
//! One control plane per invariant:
//! - [`an_approved_rollout_passes_once_after_a_dry_run`],
//!   [`switching_the_decision_id_brings_no_approval_back`] and
//!   [`an_approved_scale_passes_once_with_the_approval_on_the_workload`]: rule `approval`,
//!   on one control plane they share, each in its own namespace;
//! - [`a_relabelled_workload_is_still_held_by_its_policy`],
//!   [`a_shadow_deployment_is_governed_by_its_pods_labels`] and
//!   [`an_agent_cannot_drop_the_label_its_policy_selects`]: rule `policy-scope`, and the
//!   template labels, on one control plane they share, each in its own namespace;
//! - [`every_object_that_makes_pods_is_judged`]: rule `pod-route`;
//! - [`a_change_is_judged_by_what_it_was_and_what_it_becomes`]: HPA retargeting, policy
//!   ConfigMap turned reflection;
//! - [`a_reflection_keeps_its_author`]: rule `reflection-author`;
//! - [`one_agent_change_per_cooldown_across_two_processes`]: `cooldown` under concurrent
//!   requests answered by two slo-guard processes, and a change a later admission step
//!   refused.
//!
//! A refused expectation does not end a test: each is printed when it happens and the
//! test fails at its end with all of them ([`Verdicts`]), so one run names every attack
//! that got through. Transcripts: target/e2e-transcript-attacks-*.txt.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use slo_guard_testkit::e2e::*;

const AS_AGENT: [&str; 2] = ["--as", AGENT];
const ALICE: &str = "alice@example.com";
const AS_ALICE: [&str; 4] = ["--as", ALICE, "--as-group", "sre"];
/// The cluster admin (system:masters): sets the stage.
const AS_ADMIN: [&str; 0] = [];
const RS_CONTROLLER: &str = "system:serviceaccount:kube-system:replicaset-controller";

/// An edit-like Role in payments for the agent's ServiceAccount and for the people of
/// group `sre`; the ServiceAccount `default` that Pods need without a controller-manager;
/// pods create for the ReplicaSet controller's identity (its bootstrap ClusterRole may
/// grant it already).
const RBAC: &str = r#"apiVersion: v1
kind: ServiceAccount
metadata: {name: default, namespace: payments}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: attack-editor, namespace: payments}
rules:
- apiGroups: [apps]
  resources: [deployments, statefulsets, replicasets]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [apps]
  resources: [deployments/scale, statefulsets/scale, replicasets/scale]
  verbs: [get, update, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, update, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: attack-editor, namespace: payments}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: attack-editor}
subjects:
- {kind: ServiceAccount, name: fixer, namespace: ai-agents}
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: sre}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: attack-pod-maker, namespace: payments}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, update, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: attack-pod-maker, namespace: payments}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: attack-pod-maker}
subjects:
- {kind: ServiceAccount, name: replicaset-controller, namespace: kube-system}
"#;

/// [`RBAC`] in `namespace`.
fn rbac(namespace: &str) -> String {
    RBAC.replace("namespace: payments", &format!("namespace: {namespace}"))
}

const AGENTS: &str = "agents: {users: [\"system:serviceaccount:ai-agents:*\"]}";
const CHECKOUT_MATCH: &str =
    "match: {kinds: [Deployment, StatefulSet], selector: {matchLabels: {app: checkout}}}";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A policy ConfigMap `name` in `namespace`.
fn policy(namespace: &str, name: &str, body: &str) -> String {
    let indented: String = body.lines().map(|line| format!("    {line}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {{slo-guard.io/policy: \"true\"}}\ndata:\n  policy.yaml: |\n{indented}"
    )
}

fn policy_loads(guard: &SloGuard, namespace: &str, name: &str) -> usize {
    let configmap = format!("{namespace}/{name}");
    guard
        .log_lines()
        .iter()
        .filter(|line| {
            line["message"] == "policy loaded" && line["configmap"] == configmap.as_str()
        })
        .count()
}

/// Applies a policy as the admin in the session's namespace and waits until every given
/// slo-guard has loaded it.
fn apply_policy(cluster: &mut Session, guards: &[&SloGuard], name: &str, body: &str) {
    let namespace = cluster.namespace().to_string();
    let before: Vec<usize> = guards
        .iter()
        .map(|g| policy_loads(g, &namespace, name))
        .collect();
    cluster.apply(&policy(&namespace, name, body));
    wait_loaded(guards, &namespace, name, &before);
}

/// [`apply_policy`] on a test's namespace of the shared cluster, with its slo-guard.
fn apply_shared_policy(test: &mut TestNs, name: &str, body: &str) {
    let namespace = test.namespace().to_string();
    let before = policy_loads(test.guard(), &namespace, name);
    test.apply(&policy(&namespace, name, body));
    wait_loaded(&[test.guard()], &namespace, name, &[before]);
}

/// Waits until each of `guards` has loaded policy `namespace/name` more often than the
/// `before` counts.
fn wait_loaded(guards: &[&SloGuard], namespace: &str, name: &str, before: &[usize]) {
    retry_until(
        &format!("slo-guard loads policy {namespace}/{name}"),
        Duration::from_secs(30),
        || {
            for (guard, before) in guards.iter().zip(before) {
                if policy_loads(guard, namespace, name) <= *before {
                    return Err(format!("not loaded yet:\n{}", guard.log_text()));
                }
            }
            Ok(())
        },
    );
}

/// kubectl as `who` (AS_AGENT, AS_ALICE, AS_ADMIN).
fn run(cluster: &mut Session, who: &[&str], args: &[&str]) -> Output {
    let all: Vec<&str> = args.iter().chain(who.iter()).copied().collect();
    cluster.kubectl(&all)
}

fn run_stdin(cluster: &mut Session, who: &[&str], args: &[&str], stdin: &str) -> Output {
    let all: Vec<&str> = args.iter().chain(who.iter()).copied().collect();
    cluster.kubectl_with_stdin(&all, Some(stdin))
}

/// `kubectl create` in the session's namespace.
fn create(cluster: &mut Session, who: &[&str], manifest: &str) -> Output {
    let namespace = cluster.namespace().to_string();
    run_stdin(
        cluster,
        who,
        &["create", "-f", "-", "-n", &namespace],
        manifest,
    )
}

/// `kubectl get <what> -n <the session's namespace> -o jsonpath=<path>` as the admin;
/// what kubectl said if it failed, so that a comparison with the expected value fails
/// and says why.
fn get(cluster: &mut Session, what: &str, path: &str) -> String {
    let namespace = cluster.namespace().to_string();
    let output = cluster.kubectl(&[
        "get",
        what,
        "-n",
        &namespace,
        "-o",
        &format!("jsonpath={path}"),
    ]);
    if output.status.success() {
        text(&output.stdout)
    } else {
        format!(
            "<kubectl get {what} failed: {}>",
            text(&output.stderr).trim()
        )
    }
}

/// The jsonpath of an annotation or label key with dots and slashes.
fn key_path(field: &str, key: &str) -> String {
    format!(
        "{{.metadata.{field}.{}}}",
        key.replace('.', "\\.").replace('/', "\\/")
    )
}

fn annotation(cluster: &mut Session, what: &str, key: &str) -> String {
    get(cluster, what, &key_path("annotations", key))
}

fn exists(cluster: &mut Session, what: &str) -> bool {
    let namespace = cluster.namespace().to_string();
    cluster
        .kubectl(&["get", what, "-n", &namespace, "-o", "name"])
        .status
        .success()
}

fn say(what: &str, output: &Output) {
    let stderr = text(&output.stderr);
    let shown = if output.status.success() {
        format!("allowed: {}", text(&output.stdout).trim())
    } else {
        stderr.trim().to_string()
    };
    println!("{what}: {shown}");
}

/// The expectations of one test: each attack's outcome is checked and printed as it
/// happens, and a failed one is collected rather than ending the run, so that one run
/// reports every attack that got through. [`Verdicts::finish`] fails the test if any did.
#[derive(Default)]
struct Verdicts {
    failures: Vec<String>,
}

impl Verdicts {
    fn fail(&mut self, failure: String) {
        println!("EXPECTATION FAILED: {failure}");
        self.failures.push(failure);
    }

    /// Expects a denial whose message contains `expected`; returns kubectl's stderr.
    fn denied(&mut self, what: &str, output: &Output, expected: &str) -> String {
        say(what, output);
        let stderr = text(&output.stderr);
        if output.status.success() {
            self.fail(format!(
                "{what}: expected a denial with {expected:?}, kubectl succeeded: {}",
                text(&output.stdout).trim()
            ));
        } else if !stderr.contains(expected) {
            self.fail(format!(
                "{what}: expected {expected:?} in: {}",
                stderr.trim()
            ));
        }
        stderr
    }

    fn allowed(&mut self, what: &str, output: &Output) {
        say(what, output);
        if !output.status.success() {
            self.fail(format!(
                "{what}: expected success, kubectl failed: {}",
                text(&output.stderr).trim()
            ));
        }
    }

    fn check(&mut self, what: &str, ok: bool, detail: &str) {
        if !ok {
            self.fail(format!("{what}: {detail}"));
        }
    }

    fn eq(&mut self, what: &str, got: &str, want: &str) {
        if got != want {
            self.fail(format!("{what}: got {got:?}, want {want:?}"));
        }
    }

    fn state(&mut self, what: &str, got: String, want: &str) {
        self.eq(what, &got, want);
    }

    /// Like [`Verdicts::denied`], retried while the request is refused for another reason
    /// (a watch cache catching up); an admitted request is not retried.
    fn retry_denied(
        &mut self,
        cluster: &mut Session,
        what: &str,
        args: &[&str],
        expected: &str,
    ) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let output = cluster.kubectl(args);
            let stderr = text(&output.stderr);
            if output.status.success()
                || stderr.contains(expected)
                || std::time::Instant::now() >= deadline
            {
                return self.denied(what, &output, expected);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} expectation(s) failed:\n- {}",
            self.failures.len(),
            self.failures.join("\n- ")
        );
    }
}

/// The agent's decision context as annotations.
fn context(decision: &str, action: &str) -> Value {
    json!({
        "slo-guard.io/decision-id": decision,
        "slo-guard.io/reason": format!("e2e attack: {action} for {decision}"),
        "slo-guard.io/confidence": "0.9",
        "slo-guard.io/action": action,
    })
}

/// A Deployment with the agent's decision context, in no namespace ([`create`] puts it in
/// the session's).
fn workload(
    name: &str,
    labels: &str,
    pod_labels: &str,
    replicas: u32,
    decision: &str,
    action: &str,
) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {labels}
  annotations:
    slo-guard.io/decision-id: "{decision}"
    slo-guard.io/reason: "e2e attack: {action} for {decision}"
    slo-guard.io/confidence: "0.9"
    slo-guard.io/action: {action}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {pod_labels}}}
  template:
    metadata: {{labels: {pod_labels}}}
    spec:
      containers:
      - {{name: app, image: registry.example.com/payments/checkout:1.0.0}}
"#
    )
}

fn image(tag: &str) -> String {
    format!("registry.example.com/payments/checkout:{tag}")
}

/// The `slo-guard.io/approve=` value an approval denial tells a person to set, checked to
/// be `<decision>@<16 hex digits>`, with the remedy command printed in full.
fn approval_in(denial: &str, namespace: &str, workload: &str, decision: &str) -> String {
    let marker = "slo-guard.io/approve=";
    let start = denial
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in the denial:\n{denial}"))
        + marker.len();
    let token: String = denial[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    let value = token
        .trim_end_matches('.')
        .trim_end_matches("--overwrite")
        .to_string();
    let (named, digest) = value
        .split_once('@')
        .unwrap_or_else(|| panic!("approval {value:?} is not <decision>@<digest>:\n{denial}"));
    assert_eq!(
        named, decision,
        "the approval names the decision:\n{denial}"
    );
    assert!(
        digest.len() == 16 && digest.chars().all(|c| c.is_ascii_hexdigit()),
        "the approval binds the change with 16 hex digits, got {digest:?}:\n{denial}"
    );
    let command = format!(
        "kubectl annotate deployment/{workload} -n {namespace} slo-guard.io/approve={value} --overwrite"
    );
    assert!(
        denial.contains(&command),
        "the denial gives the exact command {command:?}:\n{denial}"
    );
    value
}

fn approve(cluster: &mut Session, workload: &str, value: &str) {
    let namespace = cluster.namespace().to_string();
    let output = run(
        cluster,
        &AS_ALICE,
        &[
            "annotate",
            &format!("deployment/{workload}"),
            "-n",
            &namespace,
            &format!("slo-guard.io/approve={value}"),
            "--overwrite",
        ],
    );
    say(&format!("alice approves {value}"), &output);
    assert_allowed(&output);
}

fn decisions(guard: &SloGuard) -> Vec<Value> {
    guard
        .log_lines()
        .into_iter()
        .filter(|line| line["message"] == "decision")
        .collect()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn retry_denied(cluster: &mut Session, what: &str, args: &[&str], expected: &str) -> String {
    let mut last = String::new();
    retry_until(what, Duration::from_secs(20), || {
        let output = cluster.kubectl(args);
        let stderr = text(&output.stderr);
        if !output.status.success() && stderr.contains(expected) {
            last = stderr;
            Ok(())
        } else if output.status.success() {
            // Admitted: nothing to retry, and the assertion below says so.
            last = format!("ADMITTED: {}", text(&output.stdout));
            Ok(())
        } else {
            Err(stderr)
        }
    });
    assert!(
        !last.starts_with("ADMITTED"),
        "{what}: expected a denial with {expected:?}, kubectl succeeded: {last}"
    );
    last
}

fn retry_allowed(cluster: &mut Session, what: &str, args: &[&str]) {
    retry_until(what, Duration::from_secs(20), || {
        let output = cluster.kubectl(args);
        if output.status.success() {
            Ok(())
        } else {
            Err(text(&output.stderr))
        }
    });
}

// ---------------------------------------------------------------------------------------
// 1. Approval
// ---------------------------------------------------------------------------------------

/// **An approval admits exactly one change, once.** Under `approval.requiredFor`, an
/// agent's rollout or scale is denied with the command a person runs to approve *that*
/// change (`<decision-id>@<digest of the change>`). Three tests, one namespace each on a
/// cluster they share: the rollout ([`an_approved_rollout_passes_once_after_a_dry_run`]),
/// the decision-id switch ([`switching_the_decision_id_brings_no_approval_back`]) and the
/// scale subresource ([`an_approved_scale_passes_once_with_the_approval_on_the_workload`]).
///
/// `namespace` with the attack RBAC, the `checkout` policy (approval for rollouts and
/// scales) loaded, and the Deployment `checkout` at 3 replicas, image 1.0.0, under
/// decision [`D1`] (fix-image); and the start of the denial an unapproved change gets.
fn approval_stage(namespace: &str) -> (TestNs, String) {
    let mut test = TestNs::shared("attacks-approval", namespace);
    test.apply(&rbac(namespace));
    apply_shared_policy(
        &mut test,
        "checkout",
        &format!(
            "{CHECKOUT_MATCH}\n{AGENTS}\nscaling: {{minReplicas: 2, maxReplicas: 20, maxStep: 5}}\napproval: {{requiredFor: [rollout, scale], maxAge: 1h}}"
        ),
    );
    assert_allowed(&create(
        &mut test,
        &AS_ADMIN,
        &workload(
            "checkout",
            "{app: checkout}",
            "{app: checkout}",
            3,
            D1,
            "fix-image",
        ),
    ));
    (test, format!("[{namespace}/checkout:approval]"))
}

/// The decision the approval tests' `checkout` is created under.
const D1: &str = "d-approve-0001";

const DEPLOY: &str = "deployment/checkout";
const IMAGE_PATH: &str = "{.spec.template.spec.containers[0].image}";

/// `kubectl set image` of checkout's app container to `tag` in `namespace`.
fn set_image(namespace: &str, tag: &str) -> Vec<String> {
    vec![
        "set".into(),
        "image".into(),
        DEPLOY.into(),
        "-n".into(),
        namespace.into(),
        format!("app={}", image(tag)),
    ]
}

/// The approval of the rollout is the person's to give: the agent cannot write it (d); a
/// dry run of the approved change passes, changes nothing and does not spend the
/// approval (e); the approval covers no other change under the same decision (a), and
/// once spent does not admit the same content again after a person rolled elsewhere (b).
#[test]
fn an_approved_rollout_passes_once_after_a_dry_run() {
    let ns = "approval-rollout";
    let (mut test, refused) = approval_stage(ns);
    let cluster = &mut *test;
    let mut v = Verdicts::default();
    let self_approval = format!("[{ns}/checkout:self-approval]");
    let agent_approves = |value: &str| -> Vec<String> {
        vec![
            "annotate".into(),
            DEPLOY.into(),
            "-n".into(),
            ns.into(),
            format!("slo-guard.io/approve={value}"),
            "--overwrite".into(),
        ]
    };

    // --- The agent's rollout under decision d1 needs a person's approval of this change.
    let rollout_101 = set_image(ns, "1.0.1");
    let output = run(cluster, &AS_AGENT, &args(&rollout_101));
    say("agent rolls out 1.0.1 unapproved", &output);
    let denial = assert_denied(&output, &refused);
    let a1 = approval_in(&denial, ns, "checkout", D1);

    // (d) The agent cannot approve it itself, with exactly the value the denial printed.
    let output = run(cluster, &AS_AGENT, &args(&agent_approves(&a1)));
    v.denied(
        "(d) agent writes the approval itself",
        &output,
        &self_approval,
    );

    approve(cluster, "checkout", &a1);
    assert_eq!(
        annotation(cluster, DEPLOY, "slo-guard.io/approved-by"),
        ALICE
    );

    // (e) A dry run of the approved change is admitted and changes nothing, and does not
    // spend the approval: the real change passes afterwards.
    let mut dry = rollout_101.clone();
    dry.push("--dry-run=server".into());
    let output = run(cluster, &AS_AGENT, &args(&dry));
    v.allowed("(e) agent dry-runs the approved rollout", &output);
    let now = get(cluster, DEPLOY, IMAGE_PATH);
    v.eq("(e) image after the dry run", &now, &image("1.0.0"));
    let output = run(cluster, &AS_AGENT, &args(&rollout_101));
    assert_allowed(&output);
    say("agent retries the approved rollout", &output);
    assert_eq!(get(cluster, DEPLOY, IMAGE_PATH), image("1.0.1"));

    // (a) Another change under the same decision: the approval was for 1.0.1.
    let rollout_102 = set_image(ns, "1.0.2");
    let output = run(cluster, &AS_AGENT, &args(&rollout_102));
    let denial = v.denied(
        "(a) agent rolls out 1.0.2 under the same decision",
        &output,
        &refused,
    );
    if denial.contains("slo-guard.io/approve=") {
        let a2 = approval_in(&denial, ns, "checkout", D1);
        v.check(
            "(a) an approval names one change",
            a1 != a2,
            &format!("1.0.1 and 1.0.2 got the same approval {a1}"),
        );
        // (d) Writing the approval of that second change itself.
        let output = run(cluster, &AS_AGENT, &args(&agent_approves(&a2)));
        v.denied(
            "(d) agent approves its second change itself",
            &output,
            &self_approval,
        );
    }
    let now = get(cluster, DEPLOY, IMAGE_PATH);
    v.eq("(a) image after the denied 1.0.2", &now, &image("1.0.1"));
    let stored = annotation(cluster, DEPLOY, "slo-guard.io/approve");
    v.eq(
        "the stored approval after the agent's attempts",
        &stored,
        &a1,
    );

    // (b) A person rolls to something else; the agent re-applies the approved 1.0.1
    // content, whose approval is still the stored one, already spent.
    let output = run(cluster, &AS_ALICE, &args(&set_image(ns, "1.0.9")));
    say("alice rolls to 1.0.9", &output);
    assert_allowed(&output);
    let output = run(cluster, &AS_AGENT, &args(&rollout_101));
    let denial = v.denied(
        "(b) agent re-applies the approved 1.0.1 after alice rolled to 1.0.9",
        &output,
        &refused,
    );
    if !output.status.success() {
        v.check(
            "(b) the denial says the approval was used",
            denial.contains("used"),
            denial.trim(),
        );
    }
    let now = get(cluster, DEPLOY, IMAGE_PATH);
    v.eq("(b) image after the replay", &now, &image("1.0.9"));
    v.finish();
}

/// (c) A new decision d2 is approved and used. The agent then moves on to decision d3,
/// is refused its next change, and switches its decision-id back to d2 (whose approval
/// is the one stored on the workload), then to d1: neither admits the change.
#[test]
fn switching_the_decision_id_brings_no_approval_back() {
    let ns = "approval-switch";
    let (mut test, refused) = approval_stage(ns);
    let cluster = &mut *test;
    let mut v = Verdicts::default();
    let d2 = "d-approve-0002";
    let d3 = "d-approve-0003";
    let patch = |decision: &str, tag: &str| -> Vec<String> {
        let body = json!({
            "metadata": {"annotations": context(decision, "fix-image")},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image(tag)}]}}}
        });
        vec![
            "patch".into(),
            DEPLOY.into(),
            "-n".into(),
            ns.into(),
            "-p".into(),
            body.to_string(),
        ]
    };
    let output = run(cluster, &AS_AGENT, &args(&patch(d2, "1.0.5")));
    say("agent rolls out 1.0.5 under d2", &output);
    let denial = assert_denied(&output, &refused);
    let a3 = approval_in(&denial, ns, "checkout", d2);
    approve(cluster, "checkout", &a3);
    let output = run(cluster, &AS_AGENT, &args(&patch(d2, "1.0.5")));
    say("agent rolls out 1.0.5 under d2, approved", &output);
    assert_allowed(&output);
    assert_eq!(get(cluster, DEPLOY, IMAGE_PATH), image("1.0.5"));
    // The decision context moves on to d3 (a metadata change, which agents may make).
    let output = run(
        cluster,
        &AS_AGENT,
        &[
            "annotate",
            DEPLOY,
            "-n",
            ns,
            &format!("slo-guard.io/decision-id={d3}"),
            "--overwrite",
        ],
    );
    say("agent moves its decision-id to d3", &output);
    assert_allowed(&output);
    let output = run(cluster, &AS_AGENT, &args(&patch(d3, "1.0.6")));
    v.denied(
        "(c) agent rolls out 1.0.6 under d3, unapproved",
        &output,
        &refused,
    );
    let output = run(cluster, &AS_AGENT, &args(&patch(d2, "1.0.6")));
    v.denied(
        "(c) agent switches its decision-id back to the approved d2 for 1.0.6",
        &output,
        &refused,
    );
    let output = run(cluster, &AS_AGENT, &args(&patch(D1, "1.0.6")));
    v.denied(
        "(c) agent switches its decision-id back to d1 for 1.0.6",
        &output,
        &refused,
    );
    let now = get(cluster, DEPLOY, IMAGE_PATH);
    v.eq("(c) image after the switches", &now, &image("1.0.5"));
    v.finish();
}

/// The scale subresource: the decision context and the approval are read from the
/// workload. The approved scale passes after its dry run (e), the approval covers no
/// other scale (a) nor a scale back (b), the approved scale re-sent passes, and people
/// are not held by approvals.
#[test]
fn an_approved_scale_passes_once_with_the_approval_on_the_workload() {
    let ns = "approval-scale";
    let (mut test, refused) = approval_stage(ns);
    let cluster = &mut *test;
    let mut v = Verdicts::default();
    let d4 = "d-approve-scale-0004";
    let output = run(
        cluster,
        &AS_AGENT,
        &[
            "annotate",
            DEPLOY,
            "-n",
            ns,
            "--overwrite",
            &format!("slo-guard.io/decision-id={d4}"),
            "slo-guard.io/action=scale",
            "slo-guard.io/reason=e2e attack: queue depth",
            "slo-guard.io/confidence=0.9",
        ],
    );
    say("agent annotates its scale decision", &output);
    assert_allowed(&output);
    let scale_to = |n: u32| -> Vec<String> {
        vec![
            "scale".into(),
            DEPLOY.into(),
            "-n".into(),
            ns.into(),
            format!("--replicas={n}"),
            "--as".into(),
            AGENT.into(),
        ]
    };
    let scale_5 = scale_to(5);
    let denial = retry_denied(
        cluster,
        "the agent's scale is judged under decision d4 (watch cache)",
        &args(&scale_5),
        &format!("slo-guard.io/approve={d4}@"),
    );
    println!("agent scales to 5 unapproved: {}", denial.trim());
    assert!(denial.contains(&refused), "{denial}");
    let a4 = approval_in(&denial, ns, "checkout", d4);
    approve(cluster, "checkout", &a4);
    let mut dry_scale = scale_5.clone();
    dry_scale.push("--dry-run=server".into());
    retry_allowed(
        cluster,
        "(e) the approved scale's dry run (once the watch cache has the approval)",
        &args(&dry_scale),
    );
    let replicas = get(cluster, DEPLOY, "{.spec.replicas}");
    v.eq("(e) replicas after the scale's dry run", &replicas, "3");
    let output = cluster.kubectl(&args(&scale_5));
    v.allowed("(e) agent scales to 5, approved, after a dry run", &output);
    let replicas = get(cluster, DEPLOY, "{.spec.replicas}");
    v.eq("replicas after the approved scale", &replicas, "5");
    let output = cluster.kubectl(&args(&scale_to(6)));
    v.denied(
        "(a) agent scales to 6 under the same approval",
        &output,
        &refused,
    );
    let output = cluster.kubectl(&args(&scale_to(3)));
    v.denied(
        "(b) agent scales back to 3 under the same approval",
        &output,
        &refused,
    );
    let output = cluster.kubectl(&args(&scale_to(5)));
    v.allowed(
        "the approved scale re-sent: the change that spent the approval, retried",
        &output,
    );
    let replicas = get(cluster, DEPLOY, "{.spec.replicas}");
    v.eq("replicas after the agent's scale attempts", &replicas, "5");
    // People are not held by approvals.
    let output = run(
        cluster,
        &AS_ALICE,
        &["scale", DEPLOY, "-n", ns, "--replicas=6"],
    );
    v.allowed("alice scales to 6", &output);
    v.finish();
}

// ---------------------------------------------------------------------------------------
// 2. Policy scope
// ---------------------------------------------------------------------------------------

/// **A workload cannot leave its policy.** An agent may not relabel a governed workload
/// out of its policy's selector (`policy-scope`): not `app=checkout` on the Deployment
/// (a), nor a selected label on the workload and its pods together, nor one only the
/// workload carried (d). A change that relabels and scales at once is judged under the
/// policy it leaves (b). Nor can it dodge the selector with a new Deployment whose own
/// labels look unrelated while its pods carry the governed labels: the pod template's
/// labels bring it under the policy, at create and on the scale subresource (c). People
/// may relabel. Three tests on one control plane they share, each in its own namespace.
///
/// `namespace` with the attack RBAC, the `checkout` policy (max 20 replicas) loaded, and
/// the Deployment `checkout` at 4 replicas; and the start of the denial of a scale above
/// the policy's maximum.
fn scope_stage(namespace: &str) -> (TestNs, String) {
    let mut test = TestNs::shared("attacks-scope", namespace);
    test.apply(&rbac(namespace));
    apply_shared_policy(
        &mut test,
        "checkout",
        &format!(
            "{CHECKOUT_MATCH}\n{AGENTS}\nscaling: {{minReplicas: 2, maxReplicas: 20, maxStep: 5}}"
        ),
    );
    assert_allowed(&create(
        &mut test,
        &AS_ADMIN,
        &workload(
            "checkout",
            "{app: checkout}",
            "{app: checkout}",
            4,
            "d-scope-0001",
            "scale",
        ),
    ));
    (test, format!("[{namespace}/checkout:max-replicas]"))
}

/// (b) A relabel and a scale in one patch are judged under the policy the relabel
/// leaves; (a) a relabel of the metadata alone leaves the pods, and so the workload,
/// under the policy, whose caps still hold after it.
#[test]
fn a_relabelled_workload_is_still_held_by_its_policy() {
    let ns = "scope-relabel";
    let (mut test, above_max) = scope_stage(ns);
    let cluster = &mut *test;
    let mut v = Verdicts::default();
    let deploy = "deployment/checkout";

    // (b) Relabel and scale to 50 in one patch: judged under the policy it leaves.
    let both =
        json!({"metadata": {"labels": {"app": "elsewhere"}}, "spec": {"replicas": 50}}).to_string();
    let output = run(
        cluster,
        &AS_AGENT,
        &["patch", deploy, "-n", ns, "-p", &both],
    );
    v.denied(
        "agent relabels and scales to 50 in one patch",
        &output,
        &above_max,
    );
    v.state(
        "checkout replicas after the relabel-and-scale",
        get(cluster, deploy, "{.spec.replicas}"),
        "4",
    );

    // (a) Relabel alone. checkout's pods keep app=checkout (a Deployment's selector is
    // immutable, and its template must match it), so the policy, which also selects by
    // the pods' labels, still governs it: the relabel moves nothing out of the guard,
    // and is the agent's to make. What counts is that the caps still hold after it.
    let relabel = ["label", deploy, "-n", ns, "app=elsewhere", "--overwrite"];
    let output = run(cluster, &AS_AGENT, &relabel);
    v.allowed(
        "agent relabels checkout's metadata (its pods keep app=checkout)",
        &output,
    );
    let output = run(
        cluster,
        &AS_AGENT,
        &["scale", deploy, "-n", ns, "--replicas=50"],
    );
    v.denied(
        "agent scales the relabelled checkout to 50",
        &output,
        &above_max,
    );
    v.state(
        "checkout replicas after the scale of the relabelled workload",
        get(cluster, deploy, "{.spec.replicas}"),
        "4",
    );
    let output = run(
        cluster,
        &AS_ALICE,
        &["label", deploy, "-n", ns, "app=checkout", "--overwrite"],
    );
    v.allowed("alice puts checkout's label back", &output);
    v.finish();
}

/// (c) A shadow Deployment: unrelated metadata labels, governed pods. Its template
/// labels bring it under the policy at create and on the scale subresource.
#[test]
fn a_shadow_deployment_is_governed_by_its_pods_labels() {
    let (mut test, above_max) = scope_stage("scope-shadow");
    let cluster = &mut *test;
    let mut v = Verdicts::default();
    let ns = cluster.namespace().to_string();
    let shadow = |replicas: u32| {
        workload(
            "checkout-shadow",
            "{app: shadow}",
            "{app: checkout}",
            replicas,
            "d-scope-0002",
            "scale",
        )
    };
    let output = create(cluster, &AS_AGENT, &shadow(50));
    v.denied(
        "agent creates checkout-shadow (pods app=checkout) at 50",
        &output,
        &above_max,
    );
    v.check(
        "deployment/checkout-shadow",
        !exists(cluster, "deployment/checkout-shadow"),
        "exists after the denial",
    );
    let output = create(cluster, &AS_AGENT, &shadow(3));
    v.allowed("agent creates checkout-shadow at 3", &output);
    v.retry_denied(
        cluster,
        "agent scales checkout-shadow to 50 (matched by its template labels, through the watch cache)",
        &[
            "scale",
            "deployment/checkout-shadow",
            "-n",
            &ns,
            "--replicas=50",
            "--as",
            AGENT,
        ],
        &above_max,
    );
    if exists(cluster, "deployment/checkout-shadow") {
        v.state(
            "checkout-shadow replicas",
            get(cluster, "deployment/checkout-shadow", "{.spec.replicas}"),
            "3",
        );
    }
    v.finish();
}

/// (d) Leaving for real: policy gold selects `slo: gold`, a label outside the
/// Deployment's (immutable) selector, so the agent could drop it from the workload and
/// from its pods in one change, or from a workload whose pods never carried it. Both are
/// refused; a person may do both.
#[test]
fn an_agent_cannot_drop_the_label_its_policy_selects() {
    let ns = "scope-unlabel";
    let mut test = TestNs::shared("attacks-scope", ns);
    test.apply(&rbac(ns));
    apply_shared_policy(
        &mut test,
        "gold",
        &format!(
            "match: {{kinds: [Deployment], selector: {{matchLabels: {{slo: gold}}}}}}\n{AGENTS}\nscaling: {{maxReplicas: 20, maxStep: 5}}"
        ),
    );
    let cluster = &mut *test;
    let mut v = Verdicts::default();
    let dropped = format!("[{ns}/gold:policy-scope]");
    assert_allowed(&create(
        cluster,
        &AS_ADMIN,
        &workload(
            "ledger",
            "{app: ledger, slo: gold}",
            "{app: ledger, slo: gold}",
            4,
            "d-scope-0003",
            "patch",
        )
        .replace(
            "selector: {matchLabels: {app: ledger, slo: gold}}",
            "selector: {matchLabels: {app: ledger}}",
        ),
    ));
    assert_allowed(&create(
        cluster,
        &AS_ADMIN,
        &workload(
            "audit",
            "{app: audit, slo: gold}",
            "{app: audit}",
            4,
            "d-scope-0004",
            "patch",
        ),
    ));
    let unlabel_both = json!({
        "metadata": {"labels": {"slo": null}},
        "spec": {"template": {"metadata": {"labels": {"slo": null}}}}
    })
    .to_string();
    let unlabel_ledger = [
        "patch",
        "deployment/ledger",
        "-n",
        ns,
        "-p",
        unlabel_both.as_str(),
    ];
    let output = run(cluster, &AS_AGENT, &unlabel_ledger);
    v.denied(
        "(d) agent drops slo=gold from ledger and its pods",
        &output,
        &dropped,
    );
    v.state(
        "ledger's slo label after the agent's patch",
        get(cluster, "deployment/ledger", "{.metadata.labels.slo}"),
        "gold",
    );
    let unlabel_audit = ["label", "deployment/audit", "-n", ns, "slo-"];
    let output = run(cluster, &AS_AGENT, &unlabel_audit);
    v.denied(
        "(d) agent drops slo=gold from audit (its pods never had it)",
        &output,
        &dropped,
    );
    v.state(
        "audit's slo label after the agent's relabel",
        get(cluster, "deployment/audit", "{.metadata.labels.slo}"),
        "gold",
    );
    let output = run(cluster, &AS_ALICE, &unlabel_ledger);
    v.allowed("(d) alice drops slo=gold from ledger and its pods", &output);
    let output = run(cluster, &AS_ALICE, &unlabel_audit);
    v.allowed("(d) alice drops slo=gold from audit", &output);
    v.finish();
}

// ---------------------------------------------------------------------------------------
// 3. Pod routes
// ---------------------------------------------------------------------------------------

fn replicaset(name: &str, labels: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: {name}
  namespace: payments
  labels: {labels}
  annotations:
    slo-guard.io/decision-id: "d-pods-0001"
    slo-guard.io/reason: "e2e attack: more capacity"
    slo-guard.io/confidence: "0.9"
    slo-guard.io/action: scale
spec:
  replicas: {replicas}
  selector: {{matchLabels: {labels}}}
  template:
    metadata: {{labels: {labels}}}
    spec:
      automountServiceAccountToken: false
      containers:
      - {{name: app, image: registry.example.com/payments/checkout:1.0.0}}
"#
    )
}

fn pod(name: &str, labels: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: payments
  labels: {labels}
  annotations:
    slo-guard.io/decision-id: "d-pods-0002"
    slo-guard.io/reason: "e2e attack: one more"
    slo-guard.io/confidence: "0.9"
    slo-guard.io/action: scale
spec:
  automountServiceAccountToken: false
  containers:
  - {{name: app, image: registry.example.com/payments/checkout:1.0.0}}
"#
    )
}

/// **Every object that makes pods is judged** (`pod-route`). A policy governs the pods of
/// its workloads, not just the Deployment object: an agent may not create a ReplicaSet or
/// a bare Pod whose pods carry governed labels, relabel someone else's Pod into the
/// governed set, or scale any ReplicaSet in a governed namespace. People may create the
/// same objects; a controller's Pod never reaches slo-guard (the webhooks' matchConditions
/// leave controllers out); an agent's Pod with unrelated labels passes.
#[test]
fn every_object_that_makes_pods_is_judged() {
    let mut guarded = Guarded::start("attacks-pods");
    guarded.cluster.apply(RBAC);
    let guard = guarded.guard.take().expect("slo-guard");
    let cluster = &mut guarded.cluster;
    let mut v = Verdicts::default();
    apply_policy(
        cluster,
        &[&guard],
        "checkout",
        &format!(
            "{CHECKOUT_MATCH}\n{AGENTS}\nscaling: {{minReplicas: 2, maxReplicas: 20, maxStep: 5}}"
        ),
    );
    assert_allowed(&create(
        cluster,
        &AS_ADMIN,
        &workload(
            "checkout",
            "{app: checkout}",
            "{app: checkout}",
            4,
            "d-pods-0000",
            "scale",
        ),
    ));

    // A ReplicaSet making checkout pods.
    let rs = replicaset("checkout-rs", "{app: checkout}", 2);
    let output = create(cluster, &AS_AGENT, &rs);
    v.denied(
        "agent creates a ReplicaSet of checkout pods",
        &output,
        ":pod-route]",
    );
    v.check(
        "replicaset/checkout-rs",
        !exists(cluster, "replicaset/checkout-rs"),
        "exists after the denial",
    );
    let output = create(cluster, &AS_ALICE, &rs);
    v.allowed("alice creates the same ReplicaSet", &output);

    // A bare checkout Pod.
    let bare = pod("checkout-bare", "{app: checkout}");
    let output = create(cluster, &AS_AGENT, &bare);
    v.denied("agent creates a bare checkout Pod", &output, ":pod-route]");
    v.check(
        "pod/checkout-bare",
        !exists(cluster, "pod/checkout-bare"),
        "exists after the denial",
    );
    let output = create(cluster, &AS_ALICE, &bare);
    v.allowed("alice creates the same Pod", &output);

    // Relabelling a person's debug Pod into the checkout set.
    let output = create(cluster, &AS_ALICE, &pod("debug", "{app: debug}"));
    assert_allowed(&output);
    let output = run(
        cluster,
        &AS_AGENT,
        &[
            "label",
            "pod/debug",
            "-n",
            "payments",
            "app=checkout",
            "--overwrite",
        ],
    );
    v.denied(
        "agent relabels pod debug to app=checkout",
        &output,
        ":pod-route]",
    );
    v.state(
        "pod debug's app label",
        get(cluster, "pod/debug", "{.metadata.labels.app}"),
        "debug",
    );

    // Scaling any ReplicaSet in payments, governed pods or not.
    let output = create(cluster, &AS_ALICE, &replicaset("misc-rs", "{app: misc}", 1));
    assert_allowed(&output);
    for name in ["misc-rs", "checkout-rs"] {
        let what = format!("replicaset/{name}");
        let output = run(
            cluster,
            &AS_AGENT,
            &["scale", &what, "-n", "payments", "--replicas=30"],
        );
        v.denied(
            &format!("agent scales {what} to 30"),
            &output,
            ":pod-route]",
        );
    }
    v.state(
        "misc-rs replicas",
        get(cluster, "replicaset/misc-rs", "{.spec.replicas}"),
        "1",
    );
    if exists(cluster, "replicaset/checkout-rs") {
        v.state(
            "checkout-rs replicas",
            get(cluster, "replicaset/checkout-rs", "{.spec.replicas}"),
            "2",
        );
    }

    // A controller's Pod never reaches slo-guard.
    let controller_pod = "checkout-from-controller";
    let output = create(
        cluster,
        &["--as", RS_CONTROLLER],
        &pod(controller_pod, "{app: checkout}"),
    );
    v.allowed("the ReplicaSet controller creates a checkout Pod", &output);
    // Let any request in flight be logged before reading the log.
    std::thread::sleep(Duration::from_secs(1));
    let seen: Vec<Value> = decisions(&guard)
        .into_iter()
        .filter(|line| {
            line["user"] == RS_CONTROLLER
                || line["object"]
                    .as_str()
                    .is_some_and(|object| object.contains(controller_pod))
        })
        .collect();
    // The log does show Pod requests slo-guard received: the agent's bare Pod.
    let judged_pods = decisions(&guard)
        .iter()
        .filter(|line| {
            line["object"]
                .as_str()
                .is_some_and(|object| object.contains("checkout-bare"))
        })
        .count();
    v.check(
        "slo-guard's log has decision lines for the Pods it judged",
        judged_pods > 0,
        "no decision line for Pod checkout-bare",
    );
    v.check(
        "the controller's Pod never reaches slo-guard",
        seen.is_empty(),
        &format!("slo-guard judged it: {seen:?}"),
    );
    let log = guard.log_text();
    v.check(
        "slo-guard's log does not mention the controller's Pod",
        !log.contains(controller_pod),
        &log.lines()
            .filter(|line| line.contains(controller_pod))
            .collect::<Vec<_>>()
            .join("\n"),
    );

    // An agent's Pod outside every policy.
    let output = create(cluster, &AS_AGENT, &pod("agent-debug", "{app: debug}"));
    v.allowed("agent creates a debug Pod", &output);
    drop(guard);
    v.finish();
}

// ---------------------------------------------------------------------------------------
// 4. Old and new
// ---------------------------------------------------------------------------------------

const CHECKOUT_HPA: &str = r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: checkout-hpa
  namespace: payments
  annotations:
    slo-guard.io/decision-id: d-hpa-0001
    slo-guard.io/reason: "e2e attack: autoscale"
    slo-guard.io/confidence: "0.9"
    slo-guard.io/action: scale
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: checkout}
  minReplicas: 2
  maxReplicas: 8
"#;

/// **A change is judged by what it was and what it becomes.** Retargeting an HPA away
/// from a governed workload removes that workload's autoscaler, a delete, which agents
/// may not do by default (`forbidden-action`); a change of the HPA that stays on its
/// target is judged normally. Turning a policy ConfigMap into a reflection removes a
/// policy (`policy-change`).
#[test]
fn a_change_is_judged_by_what_it_was_and_what_it_becomes() {
    let mut guarded = Guarded::start("attacks-transitions");
    guarded.cluster.apply(RBAC);
    let guard = guarded.guard.take().expect("slo-guard");
    let cluster = &mut guarded.cluster;
    let mut v = Verdicts::default();
    apply_policy(
        cluster,
        &[&guard],
        "checkout",
        &format!(
            "{CHECKOUT_MATCH}\n{AGENTS}\nscaling: {{minReplicas: 2, maxReplicas: 20, maxStep: 5}}"
        ),
    );
    assert_allowed(&create(
        cluster,
        &AS_ADMIN,
        &workload(
            "checkout",
            "{app: checkout}",
            "{app: checkout}",
            4,
            "d-old-new-0001",
            "scale",
        ),
    ));
    let output = create(cluster, &AS_ALICE, CHECKOUT_HPA);
    v.allowed("alice creates checkout-hpa", &output);
    let hpa = "hpa/checkout-hpa";
    let target = "{.spec.scaleTargetRef.name}";

    // (a) Retargeting away from checkout.
    let retarget = json!({"spec": {"scaleTargetRef": {"name": "other"}}}).to_string();
    let output = run(
        cluster,
        &AS_AGENT,
        &[
            "patch", hpa, "-n", "payments", "--type", "merge", "-p", &retarget,
        ],
    );
    v.denied(
        "agent retargets checkout-hpa to other",
        &output,
        "[payments/checkout:forbidden-action]",
    );
    v.state(
        "checkout-hpa target after the agent's retarget",
        get(cluster, hpa, target),
        "checkout",
    );
    // The same agent may still change the HPA within the policy while it stays on target.
    let within = json!({"spec": {"maxReplicas": 10}}).to_string();
    let output = run(
        cluster,
        &AS_AGENT,
        &[
            "patch", hpa, "-n", "payments", "--type", "merge", "-p", &within,
        ],
    );
    v.allowed("agent raises checkout-hpa maxReplicas to 10", &output);
    // A person may retarget.
    let output = run(
        cluster,
        &AS_ALICE,
        &[
            "patch", hpa, "-n", "payments", "--type", "merge", "-p", &retarget,
        ],
    );
    v.allowed("alice retargets checkout-hpa to other", &output);
    v.state(
        "checkout-hpa target after alice's retarget",
        get(cluster, hpa, target),
        "other",
    );

    // (b) The policy ConfigMap relabelled as a reflection.
    let output = run(
        cluster,
        &AS_AGENT,
        &[
            "label",
            "configmap/checkout",
            "-n",
            "payments",
            "slo-guard.io/policy-",
            "slo-guard.io/reflection=true",
        ],
    );
    v.denied(
        "agent turns the policy into a reflection",
        &output,
        "[payments/checkout:policy-change]",
    );
    let labels = get(cluster, "configmap/checkout", "{.metadata.labels}");
    v.check(
        "the policy ConfigMap keeps its labels",
        labels.contains("\"slo-guard.io/policy\":\"true\"") && !labels.contains("reflection"),
        &labels,
    );
    // The policy is still enforced.
    let output = run(
        cluster,
        &AS_AGENT,
        &[
            "scale",
            "deployment/checkout",
            "-n",
            "payments",
            "--replicas=25",
        ],
    );
    v.denied(
        "agent scales checkout to 25: the policy is still in force",
        &output,
        "[payments/checkout:max-replicas]",
    );
    drop(guard);
    v.finish();
}

// ---------------------------------------------------------------------------------------
// 5. Reflection authors
// ---------------------------------------------------------------------------------------

fn reflection(name: &str, max_replicas: u32, source: &str, annotations: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
  namespace: payments
  labels: {{slo-guard.io/reflection: "true"}}
  annotations: {{{annotations}}}
data:
  checkout.yaml: |
    target: {{kind: Deployment, name: checkout}}
    thresholds: {{scaling.maxReplicas: {max_replicas}}}
    reason: "INC-1: pool"
    source: {source}
    expires: 2027-06-01T00:00:00Z
"#
    )
}

fn reflection_data(max_replicas: u32, source: &str) -> String {
    json!({"data": {"checkout.yaml": format!(
        "target: {{kind: Deployment, name: checkout}}\nthresholds: {{scaling.maxReplicas: {max_replicas}}}\nreason: \"INC-1: pool\"\nsource: {source}\nexpires: 2027-06-01T00:00:00Z\n"
    )}})
    .to_string()
}

/// **A reflection keeps its author** (`reflection-author`). slo-guard stamps who wrote a
/// reflection ConfigMap (`slo-guard.io/written-by`); an agent may not change, re-apply,
/// unlabel or delete a reflection someone else wrote, nor claim another author for its
/// own. It may write, change and delete its own reflections.
#[test]
fn a_reflection_keeps_its_author() {
    let mut guarded = Guarded::start("attacks-reflection");
    guarded.cluster.apply(RBAC);
    let guard = guarded.guard.take().expect("slo-guard");
    let cluster = &mut guarded.cluster;
    let mut v = Verdicts::default();
    apply_policy(
        cluster,
        &[&guard],
        "checkout",
        &format!(
            "{CHECKOUT_MATCH}\n{AGENTS}\nscaling: {{minReplicas: 2, maxReplicas: 20, maxStep: 5}}"
        ),
    );
    assert_allowed(&create(
        cluster,
        &AS_ADMIN,
        &workload(
            "checkout",
            "{app: checkout}",
            "{app: checkout}",
            4,
            "d-reflect-0001",
            "scale",
        ),
    ));
    let written_by = "slo-guard.io/written-by";
    let alices = "configmap/checkout-reflections";

    let output = run_stdin(
        cluster,
        &AS_ALICE,
        &["apply", "-f", "-"],
        &reflection("checkout-reflections", 12, "alice", ""),
    );
    v.allowed("alice writes checkout-reflections", &output);
    v.state(
        "written-by on alice's reflection",
        annotation(cluster, alices, written_by),
        ALICE,
    );

    // The agent changes alice's reflection: a patch, an apply, an unlabel, a delete.
    let output = run(
        cluster,
        &AS_AGENT,
        &[
            "patch",
            alices,
            "-n",
            "payments",
            "--type",
            "merge",
            "-p",
            &reflection_data(11, "fixer"),
        ],
    );
    v.denied(
        "agent patches alice's reflection",
        &output,
        "[payments/checkout-reflections:reflection-author]",
    );
    let output = run_stdin(
        cluster,
        &AS_AGENT,
        &["apply", "-f", "-"],
        &reflection("checkout-reflections", 30, "fixer", ""),
    );
    v.denied(
        "agent applies over alice's reflection",
        &output,
        "reflection-author",
    );
    let output = run(
        cluster,
        &AS_AGENT,
        &[
            "label",
            alices,
            "-n",
            "payments",
            "slo-guard.io/reflection-",
        ],
    );
    v.denied(
        "agent unlabels alice's reflection",
        &output,
        "reflection-author",
    );
    let output = run(cluster, &AS_AGENT, &["delete", alices, "-n", "payments"]);
    v.denied(
        "agent deletes alice's reflection",
        &output,
        "reflection-author",
    );
    let data = get(cluster, alices, "{.data.checkout\\.yaml}");
    v.check(
        "alice's reflection is unchanged",
        data.contains("scaling.maxReplicas: 12"),
        &data,
    );
    v.state(
        "written-by on alice's reflection after the agent's attempts",
        annotation(cluster, alices, written_by),
        ALICE,
    );
    // Alice may change her own.
    let output = run(
        cluster,
        &AS_ALICE,
        &[
            "patch",
            alices,
            "-n",
            "payments",
            "--type",
            "merge",
            "-p",
            &reflection_data(11, "alice"),
        ],
    );
    v.allowed("alice tightens her reflection", &output);
    v.state(
        "written-by after alice's own change",
        annotation(cluster, alices, written_by),
        ALICE,
    );

    // The agent's own reflection, claiming alice wrote it.
    let mine = "configmap/agent-reflections";
    let forged = reflection(
        "agent-reflections",
        10,
        "fixer",
        &format!("\"{written_by}\": \"{ALICE}\""),
    );
    let output = create(cluster, &AS_AGENT, &forged);
    say(
        "agent creates a reflection claiming alice wrote it",
        &output,
    );
    if output.status.success() {
        v.state(
            "the claimed author is replaced by the real one",
            annotation(cluster, mine, written_by),
            AGENT,
        );
    } else {
        let stderr = text(&output.stderr);
        v.check(
            "the forged authorship is refused as such",
            stderr.contains("reflection-author") || stderr.contains(written_by),
            &stderr,
        );
        let output = create(
            cluster,
            &AS_AGENT,
            &reflection("agent-reflections", 10, "fixer", ""),
        );
        v.allowed("agent creates its own reflection", &output);
        v.state(
            "written-by on the agent's reflection",
            annotation(cluster, mine, written_by),
            AGENT,
        );
    }
    // Claiming authorship afterwards.
    let output = run(
        cluster,
        &AS_AGENT,
        &[
            "annotate",
            mine,
            "-n",
            "payments",
            &format!("{written_by}={ALICE}"),
            "--overwrite",
        ],
    );
    say("agent re-annotates its reflection as alice's", &output);
    v.state(
        "written-by after the agent claimed alice wrote it",
        annotation(cluster, mine, written_by),
        AGENT,
    );

    // Its own: change and delete.
    let output = run(
        cluster,
        &AS_AGENT,
        &[
            "patch",
            mine,
            "-n",
            "payments",
            "--type",
            "merge",
            "-p",
            &reflection_data(9, "fixer"),
        ],
    );
    v.allowed("agent changes its own reflection", &output);
    let data = get(cluster, mine, "{.data.checkout\\.yaml}");
    v.check(
        "the agent's reflection changed",
        data.contains("scaling.maxReplicas: 9"),
        &data,
    );
    let output = run(cluster, &AS_AGENT, &["delete", mine, "-n", "payments"]);
    v.allowed("agent deletes its own reflection", &output);
    v.check(
        mine,
        !exists(cluster, mine),
        "still exists after its delete",
    );
    v.check(alices, exists(cluster, alices), "is gone");
    drop(guard);
    v.finish();
}

// ---------------------------------------------------------------------------------------
// 6. Cooldown across two processes
// ---------------------------------------------------------------------------------------

/// slo-guard's serving certificate (for 127.0.0.1), offering HTTP/1.1 only.
fn server_tls(certs: &Path) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pem = |name: &str| std::fs::read(certs.join(name)).expect("certificate file");
    let chain = rustls_pemfile::certs(&mut pem("tls.crt").as_slice())
        .collect::<Result<Vec<_>, _>>()
        .expect("tls.crt");
    let key = rustls_pemfile::private_key(&mut pem("tls.key").as_slice())
        .expect("tls.key")
        .expect("a private key in tls.key");
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("serving certificate");
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(server)
}

/// A client trusting slo-guard's CA, asking for HTTP/1.1.
fn client_tls(certs: &Path) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pem = std::fs::read(certs.join("ca.crt")).expect("ca.crt");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.expect("ca.crt")).expect("CA certificate");
    }
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(client)
}

/// A TLS-terminating round-robin balancer on loopback, in front of several slo-guard
/// processes: each connection the apiserver opens goes to the next backend.
///
/// Why not a plain TCP pass-through: for a webhook URL on a loopback address the
/// apiserver's webhook client keeps HTTP/2 on (k8s.io/apiserver
/// pkg/util/webhook/client.go forces `http/1.1` only for Service webhooks and non-local
/// URLs), so every call would be multiplexed on one connection to one process. Offering
/// only `http/1.1` here, as a Service webhook would be reached in a cluster, makes the
/// apiserver open a connection per concurrent call, and those alternate between the
/// processes. The serving certificate is slo-guard's own, so the webhooks' caBundle is
/// unchanged.
struct Balancer {
    port: u16,
    connections: Arc<Vec<AtomicUsize>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Balancer {
    fn start(certs: &Path, backends: Vec<u16>) -> Self {
        let acceptor = tokio_rustls::TlsAcceptor::from(server_tls(certs));
        let connector = tokio_rustls::TlsConnector::from(client_tls(certs));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("balancer port");
        let port = listener.local_addr().expect("address").port();
        listener.set_nonblocking(true).expect("non-blocking");
        let connections: Arc<Vec<AtomicUsize>> =
            Arc::new(backends.iter().map(|_| AtomicUsize::new(0)).collect());
        let counts = connections.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("balancer runtime");
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let mut next = 0usize;
            loop {
                let Ok((front, _)) = listener.accept().await else {
                    continue;
                };
                let index = next % backends.len();
                next += 1;
                counts[index].fetch_add(1, Ordering::SeqCst);
                let backend = backends[index];
                let acceptor = acceptor.clone();
                let connector = connector.clone();
                tokio::spawn(async move {
                    let _ = front.set_nodelay(true);
                    let Ok(mut front) = acceptor.accept(front).await else {
                        return;
                    };
                    let Ok(back) =
                        tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, backend)).await
                    else {
                        return;
                    };
                    let _ = back.set_nodelay(true);
                    let name = rustls::pki_types::ServerName::IpAddress(
                        std::net::IpAddr::V4(Ipv4Addr::LOCALHOST).into(),
                    );
                    let Ok(mut back) = connector.connect(name, back).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut front, &mut back).await;
                });
            }
        });
        Self {
            port,
            connections,
            runtime: Some(runtime),
        }
    }

    fn connections(&self) -> Vec<usize> {
        self.connections
            .iter()
            .map(|count| count.load(Ordering::SeqCst))
            .collect()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A validating webhook of the test's own that refuses any object whose `spec.replicas`
/// is `replicas`, and admits everything else: an admission step that refuses a change
/// slo-guard admitted. The apiserver calls validating webhooks in parallel, so slo-guard's
/// validating webhook judges (and records) the change this one refuses.
struct DenyWebhook {
    port: u16,
    refused: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl DenyWebhook {
    fn start(certs: &Path, replicas: i64) -> Self {
        let acceptor = tokio_rustls::TlsAcceptor::from(server_tls(certs));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("webhook port");
        let port = listener.local_addr().expect("address").port();
        listener.set_nonblocking(true).expect("non-blocking");
        let refused = Arc::new(AtomicUsize::new(0));
        let count = refused.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("webhook runtime");
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        answer_reviews(stream, replicas, count).await;
                    }
                });
            }
        });
        Self {
            port,
            refused,
            runtime: Some(runtime),
        }
    }

    /// Its ValidatingWebhookConfiguration: UPDATE of Deployments and their scale in
    /// payments.
    fn configuration(&self, ca_bundle: &str, replicas: i64) -> String {
        format!(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: e2e-deny-{replicas}}}
webhooks:
- name: deny-{replicas}.e2e.test
  admissionReviewVersions: ["v1"]
  clientConfig:
    url: https://127.0.0.1:{port}/validate
    caBundle: {ca_bundle}
  failurePolicy: Fail
  matchPolicy: Equivalent
  sideEffects: None
  timeoutSeconds: 5
  namespaceSelector:
    matchLabels: {{kubernetes.io/metadata.name: payments}}
  rules:
  - apiGroups: [apps]
    apiVersions: [v1]
    operations: [UPDATE]
    resources: [deployments, deployments/scale]
    scope: Namespaced
"#,
            port = self.port
        )
    }
}

impl Drop for DenyWebhook {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Answers AdmissionReviews on one HTTP/1.1 connection until it closes.
async fn answer_reviews<S>(mut stream: S, replicas: i64, refused: Arc<AtomicUsize>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
        let length = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let review: Value =
            serde_json::from_slice(&buffer[head_end..head_end + length]).unwrap_or_default();
        buffer.drain(..head_end + length);
        let request = &review["request"];
        let deny = request["object"]["spec"]["replicas"].as_i64() == Some(replicas);
        let mut response = json!({"uid": request["uid"], "allowed": !deny});
        if deny {
            refused.fetch_add(1, Ordering::SeqCst);
            response["status"] = json!({
                "code": 403,
                "reason": "Forbidden",
                "message": format!("e2e webhook: {replicas} replicas are not allowed"),
            });
        }
        let body = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": response,
        })
        .to_string();
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(reply.as_bytes()).await.is_err() || stream.flush().await.is_err() {
            return;
        }
    }
}

/// Runs kubectl `args` in parallel (all started before any is awaited), recording each.
fn parallel(cluster: &mut Cluster, runs: &[Vec<String>]) -> Vec<Output> {
    let children: Vec<_> = runs
        .iter()
        .map(|args| {
            cluster
                .command("kubectl")
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("kubectl runs")
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|child| child.wait_with_output().expect("kubectl finishes"))
        .collect();
    for (args, output) in runs.iter().zip(&outputs) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cluster.record(&args, output);
    }
    outputs
}

fn scale_args(name: &str, replicas: u32) -> Vec<String> {
    vec![
        "scale".into(),
        format!("deployment/{name}"),
        "-n".into(),
        "payments".into(),
        format!("--replicas={replicas}"),
        "--as".into(),
        AGENT.into(),
    ]
}

const VAP: &str = r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: no-thirteen}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [apps]
      apiVersions: [v1]
      operations: [UPDATE]
      resources: [deployments, deployments/scale]
  validations:
  - expression: "!has(object.spec.replicas) || object.spec.replicas != 13"
    message: "e2e VAP: 13 replicas are not allowed"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: no-thirteen}
spec:
  policyName: no-thirteen
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {kubernetes.io/metadata.name: payments}
"#;

/// **One agent change per cooldown, whoever answers and however the requests race.**
/// Two slo-guard processes behind a round-robin balancer (failurePolicy Fail), both
/// judging the bursts.
///
/// - Eight concurrent agent scales of checkout, 4 -> 5..=9: one replica count is
///   admitted, every request for another count is denied `cooldown`, and the Deployment
///   holds the admitted count. Eight requests over five counts means some are identical
///   (same count, same decision): one identical to the admitted change is that change,
///   which its own record never refuses, so it may be admitted too.
/// - Eight concurrent scales of another Deployment to eight different counts: exactly
///   one is admitted.
/// - The admitted change re-sent, alone or four times at once, is admitted; a different
///   one is denied `cooldown`.
/// - An admission step refuses a change: (1) a ValidatingAdmissionPolicy, which
///   kube-apiserver runs before any validating webhook, so slo-guard never judges (nor
///   records) that change, the retry meets no cooldown, and the next different change is
///   the one admitted; (2) another validating webhook, called beside slo-guard's: slo-guard
///   admits and records the change, the retry of it is refused by the other webhook only,
///   and a different change meets the cooldown the admitted one holds.
#[test]
fn one_agent_change_per_cooldown_across_two_processes() {
    let mut guarded = Guarded::start("attacks-concurrency");
    guarded.cluster.apply(RBAC);
    let first = guarded.guard.take().expect("slo-guard");
    let policy_body = format!(
        "match: {{kinds: [Deployment], names: [checkout, distinct, ledger-demo, ledger-hook]}}\n{AGENTS}\nscaling: {{maxReplicas: 20, maxStep: 5, cooldown: 10m}}"
    );
    apply_policy(&mut guarded.cluster, &[&first], "checkout", &policy_body);
    for manifest in [
        agent_deployment("checkout", 4, "d-burst-0001", "e2e attack: burst"),
        agent_deployment("distinct", 10, "d-distinct-0001", "e2e attack: burst"),
        agent_deployment("ledger-demo", 10, "d-ledger-0001", "e2e attack: ledger"),
        agent_deployment("ledger-hook", 10, "d-ledger-0002", "e2e attack: ledger"),
        agent_deployment("vap-probe", 1, "d-probe-0001", "e2e attack: probe"),
    ] {
        assert_allowed(&create(&mut guarded.cluster, &AS_ADMIN, &manifest));
    }
    // The second process starts with the policy and the workloads already in the
    // cluster: its first lists carry them.
    let second_port = free_port();
    let second = SloGuard::start(
        &guarded.cluster,
        second_port,
        &guarded.certs,
        guarded.work.path().join("slo-guard-1.log"),
    );
    retry_until(
        "the second slo-guard loads the policy",
        Duration::from_secs(30),
        || {
            if policy_loads(&second, "payments", "checkout") > 0 {
                Ok(())
            } else {
                Err(second.log_text())
            }
        },
    );
    let cluster = &mut guarded.cluster;
    // The first process has checkout in its watch cache: a dry run is judged on it.
    let mut dry = scale_args("checkout", 5);
    dry.push("--dry-run=server".into());
    retry_allowed(
        cluster,
        "the first slo-guard's cache holds checkout",
        &dry.iter().map(String::as_str).collect::<Vec<_>>(),
    );

    let balancer = Balancer::start(&guarded.certs, vec![guarded.port, second_port]);
    cluster.apply(&webhooks(balancer.port, &guarded.ca_bundle, "Fail"));
    // The apiserver reloads webhook configurations asynchronously.
    retry_until(
        "the webhooks go through the balancer",
        Duration::from_secs(20),
        || {
            let output = cluster.kubectl(&[
                "annotate",
                "deployment/vap-probe",
                "-n",
                "payments",
                "e2e/probe=1",
                "--overwrite",
                "--dry-run=server",
            ]);
            if !output.status.success() {
                return Err(text(&output.stderr));
            }
            if balancer.connections().iter().sum::<usize>() > 0 {
                Ok(())
            } else {
                Err("no connection through the balancer yet".into())
            }
        },
    );
    let first_before = decisions(&first).len();
    let second_before = decisions(&second).len();
    let mut v = Verdicts::default();

    // --- Eight concurrent agent scales, 4 -> 5..=9.
    let counts: Vec<u32> = (0..8).map(|i| 5 + (i % 5)).collect();
    let runs: Vec<Vec<String>> = counts.iter().map(|&k| scale_args("checkout", k)).collect();
    let outputs = parallel(cluster, &runs);
    let mut admitted: Vec<u32> = Vec::new();
    let mut cooled = 0;
    for (&k, output) in counts.iter().zip(&outputs) {
        let stderr = text(&output.stderr);
        say(&format!("burst: scale to {k}"), output);
        if output.status.success() {
            admitted.push(k);
        } else if stderr.contains("[payments/checkout:cooldown]") {
            cooled += 1;
        } else {
            v.fail(format!(
                "burst: the scale to {k} failed for a reason other than the cooldown: {}",
                stderr.trim()
            ));
        }
    }
    let mut distinct = admitted.clone();
    distinct.sort_unstable();
    distinct.dedup();
    println!(
        "burst: {} requests, {} admitted ({admitted:?}), {cooled} denied cooldown; balancer connections per process {:?}",
        counts.len(),
        admitted.len(),
        balancer.connections()
    );
    v.check(
        "burst: exactly one replica count is admitted",
        distinct.len() == 1,
        &format!("admitted {admitted:?}"),
    );
    // Every request for another count met the cooldown. With eight requests over five
    // counts, a request identical to the admitted one (same count, same decision) is the
    // same change, which its own record never refuses: it may be admitted too.
    if let [winner] = distinct[..] {
        let same_as_winner = counts.iter().filter(|&&k| k == winner).count();
        v.check(
            "burst: only requests identical to the admitted one are admitted",
            admitted.len() <= same_as_winner,
            &format!("admitted {admitted:?}"),
        );
        v.state(
            "burst: checkout's replicas are the admitted count",
            get(cluster, "deployment/checkout", "{.spec.replicas}"),
            &winner.to_string(),
        );
    }
    // Both processes judged the burst.
    let burst_lines = |lines: Vec<Value>, before: usize| -> usize {
        lines
            .into_iter()
            .skip(before)
            .filter(|line| {
                line["object"] == "Deployment payments/checkout"
                    && line["user"] == AGENT
                    && line["class"] == "scale"
            })
            .count()
    };
    let first_burst = burst_lines(decisions(&first), first_before);
    let second_burst = burst_lines(decisions(&second), second_before);
    println!(
        "burst: decision lines for the agent's checkout scales: first process {first_burst}, second process {second_burst}"
    );
    v.check(
        "both processes logged decisions",
        !decisions(&first).is_empty() && !decisions(&second).is_empty(),
        "one log has no decision line",
    );
    v.check(
        "both processes judged the burst",
        first_burst > 0 && second_burst > 0,
        &format!("{first_burst} and {second_burst} decision lines"),
    );
    let Some(&winner) = admitted.first() else {
        v.finish();
        return;
    };

    // --- The admitted change re-sent: alone, then four at once.
    let output = cluster.kubectl(&args(&scale_args("checkout", winner)));
    v.allowed(&format!("agent re-sends the scale to {winner}"), &output);
    let again: Vec<Vec<String>> = (0..4).map(|_| scale_args("checkout", winner)).collect();
    let outputs = parallel(cluster, &again);
    let admitted_again = outputs.iter().filter(|o| o.status.success()).count();
    println!("re-sent {winner} four times at once: {admitted_again} of 4 admitted");
    for output in &outputs {
        v.allowed(
            &format!("agent re-sends {winner} (one of four at once)"),
            output,
        );
    }
    let other = if winner == 9 { 8 } else { winner + 1 };
    let output = cluster.kubectl(&args(&scale_args("checkout", other)));
    v.denied(
        &format!("agent scales to {other}"),
        &output,
        "[payments/checkout:cooldown]",
    );
    v.state(
        "checkout's replicas after the re-sends",
        get(cluster, "deployment/checkout", "{.spec.replicas}"),
        &winner.to_string(),
    );

    // --- Eight concurrent agent scales of another Deployment, each to a different count
    // (10 -> 6..=9, 11..=14): exactly one is admitted.
    let counts: Vec<u32> = vec![6, 7, 8, 9, 11, 12, 13, 14];
    let runs: Vec<Vec<String>> = counts.iter().map(|&k| scale_args("distinct", k)).collect();
    let outputs = parallel(cluster, &runs);
    let mut admitted: Vec<u32> = Vec::new();
    for (&k, output) in counts.iter().zip(&outputs) {
        say(&format!("distinct burst: scale to {k}"), output);
        if output.status.success() {
            admitted.push(k);
        } else if !text(&output.stderr).contains("[payments/checkout:cooldown]") {
            v.fail(format!(
                "distinct burst: the scale to {k} failed for a reason other than the cooldown: {}",
                text(&output.stderr).trim()
            ));
        }
    }
    println!(
        "distinct burst: {} requests, {} admitted ({admitted:?}), {} denied",
        counts.len(),
        admitted.len(),
        counts.len() - admitted.len()
    );
    v.check(
        "distinct burst: exactly one request is admitted",
        admitted.len() == 1,
        &format!("admitted {admitted:?}"),
    );
    if let [winner] = admitted[..] {
        v.state(
            "distinct burst: the Deployment holds the admitted count",
            get(cluster, "deployment/distinct", "{.spec.replicas}"),
            &winner.to_string(),
        );
    }

    // --- An admission step that refuses the change slo-guard admitted.
    //
    // (1) A ValidatingAdmissionPolicy. kube-apiserver runs it *before* the validating
    // webhooks (plugin order: MutatingAdmissionWebhook, ValidatingAdmissionPolicy,
    // ValidatingAdmissionWebhook), so slo-guard's validating webhook, which judges and
    // records agent changes, never sees a change the policy refuses: only its mutating
    // webhook does. Nothing holds the slot afterwards.
    cluster.apply(VAP);
    retry_until(
        "the ValidatingAdmissionPolicy is in force",
        Duration::from_secs(30),
        || {
            let output = cluster.kubectl(&[
                "scale",
                "deployment/vap-probe",
                "-n",
                "payments",
                "--replicas=13",
                "--dry-run=server",
            ]);
            let stderr = text(&output.stderr);
            if stderr.contains("no-thirteen") {
                Ok(())
            } else {
                Err(format!("{}{stderr}", text(&output.stdout)))
            }
        },
    );
    let to_13 = scale_args("ledger-demo", 13);
    let output = cluster.kubectl(&args(&to_13));
    let denial = v.denied(
        "VAP: agent scales ledger-demo 10 -> 13",
        &output,
        "e2e VAP: 13 replicas are not allowed",
    );
    v.check(
        "VAP: the 13 is refused by the ValidatingAdmissionPolicy, not slo-guard",
        denial.contains("no-thirteen") && !denial.contains("slo-guard.io\" denied"),
        denial.trim(),
    );
    let output = cluster.kubectl(&args(&to_13));
    let denial = v.denied(
        "VAP: agent retries 13",
        &output,
        "e2e VAP: 13 replicas are not allowed",
    );
    v.check(
        "VAP: the retry is not refused by a cooldown",
        !denial.contains("cooldown"),
        denial.trim(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let seen_13 = |endpoint: &str| -> usize {
        [&first, &second]
            .iter()
            .flat_map(|guard| decisions(guard))
            .filter(|line| {
                line["object"] == "Deployment payments/ledger-demo"
                    && line["new_replicas"] == 13
                    && line["endpoint"] == endpoint
            })
            .count()
    };
    let (mutated, validated) = (seen_13("mutate"), seen_13("validate"));
    println!(
        "VAP: slo-guard's decision lines for ledger-demo at 13: mutate {mutated}, validate {validated}"
    );
    v.check(
        "VAP: slo-guard's validating webhook never judged the 13 the policy refused first",
        validated == 0,
        &format!("{validated} validate decision lines"),
    );
    // So the first agent change slo-guard admits for ledger-demo is the next one, and it
    // then holds the slot.
    let output = cluster.kubectl(&args(&scale_args("ledger-demo", 12)));
    v.allowed(
        "VAP: agent scales ledger-demo to 12 (slo-guard never admitted the 13)",
        &output,
    );
    let output = cluster.kubectl(&args(&scale_args("ledger-demo", 11)));
    v.denied(
        "VAP: agent scales ledger-demo to 11 after the 12",
        &output,
        "[payments/checkout:cooldown]",
    );
    v.state(
        "ledger-demo's replicas",
        get(cluster, "deployment/ledger-demo", "{.spec.replicas}"),
        "12",
    );

    // (2) Another validating webhook, called beside slo-guard's: slo-guard admits and
    // records the 14, the other webhook refuses it.
    let deny = DenyWebhook::start(&guarded.certs, 14);
    cluster.apply(&deny.configuration(&guarded.ca_bundle, 14));
    retry_until(
        "the e2e webhook is in force",
        Duration::from_secs(30),
        || {
            let output = cluster.kubectl(&[
                "scale",
                "deployment/vap-probe",
                "-n",
                "payments",
                "--replicas=14",
                "--dry-run=server",
            ]);
            let stderr = text(&output.stderr);
            if stderr.contains("e2e webhook: 14 replicas are not allowed") {
                Ok(())
            } else {
                Err(format!("{}{stderr}", text(&output.stdout)))
            }
        },
    );
    let to_14 = scale_args("ledger-hook", 14);
    let output = cluster.kubectl(&args(&to_14));
    let denial = v.denied(
        "webhook: agent scales ledger-hook 10 -> 14",
        &output,
        "e2e webhook: 14 replicas are not allowed",
    );
    v.check(
        "webhook: the 14 is refused by the other webhook, not slo-guard",
        !denial.contains("slo-guard.io\" denied"),
        denial.trim(),
    );
    let output = cluster.kubectl(&args(&to_14));
    let denial = v.denied(
        "webhook: agent retries 14",
        &output,
        "e2e webhook: 14 replicas are not allowed",
    );
    v.check(
        "webhook: the retry is refused by the other webhook only, not by a cooldown",
        !denial.contains("cooldown"),
        denial.trim(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let judged_14: Vec<Value> = [&first, &second]
        .iter()
        .flat_map(|guard| decisions(guard))
        .filter(|line| {
            line["object"] == "Deployment payments/ledger-hook"
                && line["new_replicas"] == 14
                && line["endpoint"] == "validate"
        })
        .collect();
    println!(
        "webhook: slo-guard's validate decisions for ledger-hook at 14: {:?}; the e2e webhook refused {} request(s)",
        judged_14
            .iter()
            .map(|line| line["answered"].as_str().unwrap_or("?").to_string())
            .collect::<Vec<_>>(),
        deny.refused.load(Ordering::SeqCst)
    );
    v.check(
        "webhook: slo-guard judged both 14s and admitted both (its own record does not refuse the retry)",
        judged_14.len() >= 2 && judged_14.iter().all(|line| line["answered"] == "allowed"),
        &format!("{judged_14:?}"),
    );
    let output = cluster.kubectl(&args(&scale_args("ledger-hook", 12)));
    v.denied(
        "webhook: agent scales ledger-hook to 12 while the admitted 14 holds the slot",
        &output,
        "[payments/checkout:cooldown]",
    );
    v.state(
        "ledger-hook's replicas",
        get(cluster, "deployment/ledger-hook", "{.spec.replicas}"),
        "10",
    );
    println!(
        "balancer connections per process at the end: {:?}; decision lines: first {}, second {}",
        balancer.connections(),
        decisions(&first).len(),
        decisions(&second).len()
    );
    drop(deny);
    drop(balancer);
    drop(second);
    drop(first);
    v.finish();
}
