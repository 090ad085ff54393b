//! Least privilege, end to end (issue 7, "Reliability and security" items 6 and 7).
//!
//! The chart's ServiceAccount and RBAC (`helm template charts/slo-guard --show-only
//! templates/serviceaccount.yaml --show-only templates/rbac.yaml`) are applied to a real
//! kube-apiserver; slo-guard then runs with a token minted for that ServiceAccount
//! (`kubectl create token`) and nothing else. Asserted:
//!
//! - it becomes ready and does its whole job with those grants: watches policies and
//!   workloads, learns its identity, denies through the webhook, records the denial as an
//!   Event, records an agent's scale in its change ledger (a Lease in its own namespace);
//!   and its log has no authorization error;
//! - it holds exactly what the chart grants and nothing more: its
//!   SelfSubjectRulesReview, minus what every ServiceAccount gets (measured with a
//!   ServiceAccount bound to nothing), equals the rules in the rendered chart, in a
//!   workload namespace and in its own; `kubectl auth can-i --as` spot checks the grants
//!   and what must stay out of reach (Secrets, any write to workloads, the scale
//!   subresource, ConfigMap writes outside its namespace, Leases outside its namespace,
//!   webhook configurations, RBAC, tokens);
//! - the audit trail: every decision is a JSON log line with the request uid, actor,
//!   class, rules, figures and verdict.
//!
//! slo-guard writes no workload: the cooldown's record lives in its change ledger, so
//! its token cannot patch a Deployment at all.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use slo_guard_testkit::e2e::*;
use slo_guard_testkit::policies::policy_configmap;

const NAMESPACE: &str = "slo-guard";
const SERVICE_ACCOUNT: &str = "slo-guard";

fn identity() -> String {
    format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}")
}

/// (apiGroup, resource, verb, resource name or "" for any)
type Grant = (String, String, String, String);

fn expand(rules: &Value) -> BTreeSet<Grant> {
    let list = |rule: &Value, key: &str| -> Vec<String> {
        rule[key]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut grants = BTreeSet::new();
    for rule in rules.as_array().into_iter().flatten() {
        let mut names = list(rule, "resourceNames");
        if names.is_empty() {
            names.push(String::new());
        }
        for group in list(rule, "apiGroups") {
            for resource in list(rule, "resources") {
                for verb in list(rule, "verbs") {
                    for name in &names {
                        grants.insert((
                            group.clone(),
                            resource.clone(),
                            verb.clone(),
                            name.clone(),
                        ));
                    }
                }
            }
        }
    }
    grants
}

/// The chart's grants: cluster-wide (ClusterRole) and in the release namespace (Role).
fn chart_grants(rendered: &str) -> (BTreeSet<Grant>, BTreeSet<Grant>) {
    let mut cluster_wide = BTreeSet::new();
    let mut own_namespace = BTreeSet::new();
    let mut bindings = Vec::new();
    for document in serde_yaml::Deserializer::from_str(rendered) {
        let value: Value = match serde::Deserialize::deserialize(document) {
            Ok(value) => value,
            Err(error) => panic!("rendered chart: {error}"),
        };
        match value["kind"].as_str() {
            Some("ClusterRole") => cluster_wide.extend(expand(&value["rules"])),
            Some("Role") => {
                assert_eq!(value["metadata"]["namespace"], NAMESPACE);
                own_namespace.extend(expand(&value["rules"]));
            }
            Some("ClusterRoleBinding" | "RoleBinding") => bindings.push(value),
            _ => {}
        }
    }
    // The server's bindings (the ClusterRoleBinding, and the RoleBinding of its change
    // ledger in its own namespace) bind the chart's roles to the chart's ServiceAccount
    // only.
    assert_eq!(bindings.len(), 2, "{bindings:#?}");
    for binding in &bindings {
        assert_eq!(
            binding["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]),
        );
    }
    (cluster_wide, own_namespace)
}

/// A kubeconfig that authenticates with a token minted for `service_account`.
fn token_kubeconfig(cluster: &mut Cluster, service_account: &str, path: &Path) -> PathBuf {
    let output = cluster.kubectl(&[
        "create",
        "token",
        service_account,
        "-n",
        NAMESPACE,
        "--duration",
        "2h",
    ]);
    assert_allowed(&output);
    let token = text(&output.stdout).trim().to_string();
    let output = cluster.kubectl(&["config", "view", "--raw", "--minify", "-o", "json"]);
    assert_allowed(&output);
    let admin: Value = serde_json::from_slice(&output.stdout).expect("kubeconfig JSON");
    let server = admin["clusters"][0]["cluster"]["server"].as_str().unwrap();
    let ca = admin["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .unwrap();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {service_account}\n  user:\n    token: {token}\ncontexts:\n- name: {service_account}\n  context: {{cluster: e2e, user: {service_account}}}\ncurrent-context: {service_account}\n"
    );
    std::fs::write(path, kubeconfig).expect("kubeconfig");
    path.to_path_buf()
}

/// What the token behind `kubeconfig` may do in `namespace`, as the apiserver says.
fn rules_review(
    cluster: &mut Cluster,
    kubeconfig: &Path,
    namespace: &str,
) -> (BTreeSet<Grant>, BTreeSet<(String, String)>) {
    let review = serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": namespace},
    })
    .to_string();
    let output = cluster.kubectl_with_stdin(
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "create",
            "--raw",
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            "-f",
            "-",
        ],
        Some(&review),
    );
    assert_allowed(&output);
    let review: Value = serde_json::from_slice(&output.stdout).expect("review JSON");
    assert_eq!(review["status"]["incomplete"], false, "{review:#}");
    let mut non_resource = BTreeSet::new();
    for rule in review["status"]["nonResourceRules"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for url in rule["nonResourceURLs"].as_array().into_iter().flatten() {
            for verb in rule["verbs"].as_array().into_iter().flatten() {
                non_resource.insert((url.to_string(), verb.to_string()));
            }
        }
    }
    (expand(&review["status"]["resourceRules"]), non_resource)
}

fn policy_manifest() -> String {
    policy_configmap(
        "payments",
        "checkout-caps",
        &[
            "match: {kinds: [Deployment], names: [checkout]}",
            "agents: {users: [\"system:serviceaccount:ai-agents:*\"]}",
            "scaling: {maxReplicas: 5, cooldown: 1m}",
        ],
    )
}

fn checkout() -> String {
    agent_deployment("checkout", 2, "d-privilege-0001", "e2e: scale for load")
}

fn can_i(cluster: &mut Cluster, verb: &str, resource: &str, scope: &[&str]) -> bool {
    let user = format!("--as={}", identity());
    let mut args = vec!["auth", "can-i", verb, resource, user.as_str()];
    args.extend_from_slice(scope);
    let output = cluster.kubectl(&args);
    match text(&output.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl auth can-i {verb} {resource}: {other:?} {}",
            text(&output.stderr)
        ),
    }
}

#[test]
fn slo_guard_works_with_exactly_what_the_chart_grants() {
    let mut cluster = Cluster::up("privilege");
    let work = tempfile::tempdir().expect("work dir");
    // 00-setup.yaml makes slo-guard's namespace too.
    cluster.apply_file(&root().join("tests/e2e/capture/manifests/00-setup.yaml"));

    // The chart's ServiceAccount and RBAC, as Helm renders them.
    let rendered = cluster
        .command("helm")
        .args(["template", "slo-guard"])
        .arg(root().join("charts/slo-guard"))
        .args([
            "--namespace",
            NAMESPACE,
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
        ])
        .output()
        .expect("helm runs (is the e2e bin dir on PATH?)");
    assert!(rendered.status.success(), "{}", text(&rendered.stderr));
    let rendered = text(&rendered.stdout);
    cluster.apply(&rendered);
    let (cluster_wide, own_namespace) = chart_grants(&rendered);

    // --- Exactly what the chart grants: the rules review, minus every ServiceAccount's
    // baseline (a ServiceAccount bound to nothing), equals the chart's rules.
    assert_allowed(&cluster.kubectl(&["create", "serviceaccount", "nobody", "-n", NAMESPACE]));
    let guard_config = token_kubeconfig(&mut cluster, SERVICE_ACCOUNT, &work.path().join("sa"));
    let nobody_config = token_kubeconfig(&mut cluster, "nobody", &work.path().join("nobody"));
    for (namespace, expected) in [
        ("payments", cluster_wide.clone()),
        (NAMESPACE, &cluster_wide | &own_namespace),
    ] {
        let (granted, non_resource) = rules_review(&mut cluster, &guard_config, namespace);
        let (baseline, baseline_non_resource) =
            rules_review(&mut cluster, &nobody_config, namespace);
        let beyond_baseline: BTreeSet<Grant> = granted.difference(&baseline).cloned().collect();
        assert_eq!(
            beyond_baseline, expected,
            "in namespace {namespace}, slo-guard's grants beyond any ServiceAccount's differ from the chart's"
        );
        assert_eq!(non_resource, baseline_non_resource);
        println!(
            "{namespace}: {} grants, all from the chart",
            beyond_baseline.len()
        );
    }

    // Spot checks with kubectl auth can-i --as: the grants it needs ...
    let payments: &[&str] = &["-n", "payments"];
    let own: &[&str] = &["-n", NAMESPACE];
    let everywhere: &[&str] = &["-A"];
    let payments_scale: &[&str] = &["-n", "payments", "--subresource=scale"];
    let cluster_scoped: &[&str] = &[];
    for (verb, resource, scope) in [
        ("list", "configmaps", everywhere),
        ("watch", "configmaps", everywhere),
        ("list", "deployments.apps", everywhere),
        ("watch", "statefulsets.apps", everywhere),
        ("get", "leases.coordination.k8s.io", own),
        ("create", "leases.coordination.k8s.io", own),
        ("update", "leases.coordination.k8s.io", own),
        ("create", "events.events.k8s.io", payments),
        ("patch", "events.events.k8s.io", payments),
        // webhooks.scope=policies: its own two webhook configurations, by name.
        (
            "get",
            "validatingwebhookconfigurations/slo-guard",
            cluster_scoped,
        ),
        (
            "update",
            "validatingwebhookconfigurations/slo-guard",
            cluster_scoped,
        ),
        (
            "update",
            "mutatingwebhookconfigurations/slo-guard",
            cluster_scoped,
        ),
    ] {
        assert!(
            can_i(&mut cluster, verb, resource, scope),
            "slo-guard cannot {verb} {resource} {scope:?}"
        );
    }
    // ... and what must stay out of its reach.
    for (verb, resource, scope) in [
        ("get", "secrets", own),
        ("get", "secrets", payments),
        ("list", "secrets", everywhere),
        ("patch", "deployments.apps", payments),
        ("patch", "statefulsets.apps", payments),
        ("update", "deployments.apps", payments),
        ("update", "statefulsets.apps", payments),
        ("create", "deployments.apps", payments),
        ("delete", "deployments.apps", payments),
        ("delete", "statefulsets.apps", payments),
        ("update", "deployments.apps", payments_scale),
        ("patch", "deployments.apps", payments_scale),
        ("get", "horizontalpodautoscalers.autoscaling", payments),
        ("create", "configmaps", payments),
        ("update", "configmaps", payments),
        ("patch", "configmaps", payments),
        ("delete", "configmaps", payments),
        ("update", "configmaps", own),
        ("delete", "configmaps", own),
        // Proposals are the reflect CronJob's, under its own ServiceAccount.
        ("create", "configmaps", own),
        ("patch", "configmaps", own),
        ("create", "events", payments),
        ("list", "events", payments),
        ("delete", "events", payments),
        ("list", "pods", everywhere),
        ("create", "leases.coordination.k8s.io", payments),
        ("update", "leases.coordination.k8s.io", payments),
        ("delete", "leases.coordination.k8s.io", own),
        ("create", "pods", &["-n", "payments", "--subresource=exec"]),
        ("list", "namespaces", cluster_scoped),
        ("list", "nodes", cluster_scoped),
        ("patch", "validatingwebhookconfigurations", cluster_scoped),
        ("update", "validatingwebhookconfigurations", cluster_scoped),
        (
            "update",
            "validatingwebhookconfigurations/another",
            cluster_scoped,
        ),
        (
            "patch",
            "validatingwebhookconfigurations/slo-guard",
            cluster_scoped,
        ),
        ("delete", "validatingwebhookconfigurations", cluster_scoped),
        ("patch", "mutatingwebhookconfigurations", cluster_scoped),
        (
            "create",
            "serviceaccounts",
            &["-n", NAMESPACE, "--subresource=token"],
        ),
        ("impersonate", "users", cluster_scoped),
        ("impersonate", "serviceaccounts", own),
        ("bind", "clusterroles", cluster_scoped),
        ("escalate", "clusterroles", cluster_scoped),
        ("create", "clusterrolebindings", cluster_scoped),
        ("create", "rolebindings", own),
    ] {
        assert!(
            !can_i(&mut cluster, verb, resource, scope),
            "slo-guard can {verb} {resource} {scope:?}, which the chart must not grant"
        );
    }

    // --- With only those grants, slo-guard does its job.
    let certs = work.path().join("certs");
    let ca_bundle = make_certs(&cluster, &certs);
    let port = free_port();
    let guard_config = guard_config.to_str().expect("utf-8 path").to_string();
    let guard = SloGuard::start_with_env(
        &cluster,
        port,
        &certs,
        work.path().join("slo-guard.log"),
        &[
            ("KUBECONFIG", guard_config.as_str()),
            ("SLO_GUARD_NAMESPACE", NAMESPACE),
        ],
    );
    guard.wait_for_log(
        &format!("\"identity\":\"{}\"", identity()),
        Duration::from_secs(5),
    );
    cluster.apply(&webhooks(port, &ca_bundle, "Fail"));
    cluster.apply(&policy_manifest());
    guard.wait_for_log(
        "\"configmap\":\"payments/checkout-caps\"",
        Duration::from_secs(20),
    );
    cluster.apply(&checkout());

    // A denial through the webhook, recorded as an Event by the ServiceAccount.
    let cap = "[payments/checkout-caps:max-replicas] scale of Deployment payments/checkout blocked: 8 replicas requested, above the cap of 5";
    assert_denied(
        &cluster.kubectl(&[
            "scale",
            "deploy/checkout",
            "-n",
            "payments",
            "--replicas=8",
            "--as",
            AGENT,
        ]),
        cap,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = cluster.kubectl(&[
            "get",
            "events",
            "-n",
            "payments",
            "--field-selector",
            "involvedObject.name=checkout,reason=Denied",
            "-o",
            "json",
        ]);
        assert_allowed(&output);
        let events: Value = serde_json::from_slice(&output.stdout).unwrap();
        let recorded = events["items"].as_array().into_iter().flatten().any(|e| {
            e["message"].as_str().is_some_and(|m| m.contains(cap))
                && e["reportingComponent"] == "slo-guard.io/slo-guard"
        });
        if recorded {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no Denied Event: {events:#}\n{}",
            guard.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // An agent's scale within the cap passes, and slo-guard records it in its change
    // ledger (a Lease in its own namespace), so the next agent change waits the cooldown.
    assert_allowed(&cluster.kubectl(&[
        "scale",
        "deploy/checkout",
        "-n",
        "payments",
        "--replicas=4",
        "--as",
        AGENT,
    ]));
    let leases = cluster.kubectl(&[
        "get",
        "leases",
        "-n",
        NAMESPACE,
        "-l",
        "slo-guard.io/ledger=true",
        "-o",
        "jsonpath={.items[*].metadata.annotations.slo-guard\\.io/workload}",
    ]);
    assert_eq!(text(&leases.stdout).trim(), "Deployment payments/checkout");
    assert_denied(
        &cluster.kubectl(&[
            "scale",
            "deploy/checkout",
            "-n",
            "payments",
            "--replicas=3",
            "--as",
            AGENT,
        ]),
        "[payments/checkout-caps:cooldown]",
    );

    // The preflight works with those grants too: it authenticates the agent's token
    // (TokenReview), checks that the agent may read the workload (SubjectAccessReview),
    // reads the change ledger for the cooldown, and reads the Deployment for a restart.
    let token = cluster.kubectl(&["create", "token", "fixer", "-n", "ai-agents"]);
    assert_allowed(&token);
    let token = text(&token.stdout).trim().to_string();
    let preflight = |change: Value| {
        let body = serde_json::json!({
            "workload": {"kind": "Deployment", "namespace": "payments", "name": "checkout"},
            "change": change,
        });
        let output = std::process::Command::new("curl")
            .args(["-sS", "--noproxy", "*", "--fail-with-body"])
            .arg("--cacert")
            .arg(certs.join("ca.crt"))
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(body.to_string())
            .arg(format!("https://127.0.0.1:{port}/v1/preflight"))
            .output()
            .expect("curl runs");
        assert!(
            output.status.success(),
            "preflight: {}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).expect("a JSON answer")
    };
    let held = preflight(serde_json::json!({"action": "scale", "replicas": 3}));
    assert_eq!(held["allowed"], false, "{held:#}");
    assert_eq!(held["envelope"]["cooldown"]["active"], true, "{held:#}");
    assert!(held["nextAllowedTime"].is_string(), "{held:#}");
    let restart = preflight(serde_json::json!({"action": "restart"}));
    assert_eq!(restart["class"], "rollout", "{restart:#}");

    // No authorization error anywhere in its log.
    let log_text = guard.log_text();
    for symptom in [
        "forbidden",
        "Forbidden",
        "cannot record",
        "could not record",
        "watch error",
    ] {
        assert!(
            !log_text.contains(symptom),
            "{symptom:?} in slo-guard's log:\n{log_text}"
        );
    }

    // --- Audit trail: every decision a JSON line with uid, actor, class, rules, figures
    // and verdict.
    let decisions: Vec<Value> = guard
        .log_lines()
        .into_iter()
        .filter(|line| line["message"] == "decision")
        .collect();
    assert!(decisions.len() >= 4, "{decisions:#?}");
    for line in &decisions {
        for key in ["uid", "actor", "class", "rules", "figures", "verdict"] {
            assert!(line.get(key).is_some(), "{key} missing in {line}");
        }
        let uid = line["uid"].as_str().unwrap_or_default();
        assert_eq!(uid.len(), 36, "a request uid in {line}");
    }
    // The mutating webhook judges the same request first and logs its own line, under
    // the uid of its own call (the apiserver gives each webhook call a uid); its
    // `verdict` is the decision's, while its response admits and leaves the denial to
    // the validating webhook.
    let denial = decisions
        .iter()
        .find(|l| l["verdict"] == "denied" && l["endpoint"] == "validate")
        .expect("the denial's decision line");
    let mutate = decisions
        .iter()
        .find(|l| l["endpoint"] == "mutate" && l["new_replicas"] == 8)
        .expect("the mutating webhook's line for the same request");
    assert_eq!(mutate["rules"], denial["rules"]);
    assert_ne!(mutate["uid"], denial["uid"]);
    assert_eq!(denial["actor"], "agent");
    assert_eq!(denial["class"], "scale");
    assert_eq!(denial["user"], AGENT);
    assert_eq!(denial["object"], "Deployment payments/checkout");
    assert_eq!(
        denial["rules"],
        "payments/checkout-caps:max-replicas=enforce"
    );
    assert_eq!(denial["new_replicas"], 8);
    let admitted: Vec<&Value> = decisions
        .iter()
        .filter(|l| l["class"] == "scale" && l["new_replicas"] == 4)
        .collect();
    assert!(
        admitted
            .iter()
            .any(|l| l["endpoint"] == "validate" && l["verdict"] == "allowed"),
        "{admitted:#?}"
    );
}
