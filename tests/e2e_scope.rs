//! The workload webhooks' scope follows the policies in force (`--webhook-scope
//! policies`), on a real kube-apiserver: requests in namespaces no policy governs never
//! leave the apiserver, a new policy's namespace is in scope before the policy is stored,
//! and a namespace leaves only a grace period after its last policy. Scales reach the
//! mutating webhook only while a policy clamps them.

use std::time::{Duration, Instant};

use slo_guard_testkit::e2e::*;
use slo_guard_testkit::policies::policy_configmap;

fn policy_manifest() -> String {
    policy_configmap(
        "payments",
        "checkout",
        &[
            "match: {kinds: [Deployment], selector: {matchLabels: {app: checkout}}}",
            "agents: {users: [\"system:serviceaccount:ai-agents:*\"]}",
            "scaling: {maxReplicas: 10, appliesTo: agents}",
        ],
    )
}

const GRACE: &str = "4s";

fn scope_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("SLO_GUARD_WEBHOOK_SCOPE", "policies"),
        (
            "SLO_GUARD_VALIDATING_WEBHOOK_CONFIGURATION",
            "slo-guard-local",
        ),
        (
            "SLO_GUARD_MUTATING_WEBHOOK_CONFIGURATION",
            "slo-guard-local",
        ),
        ("SLO_GUARD_WEBHOOK_SCOPE_GRACE", GRACE),
        ("SLO_GUARD_WEBHOOK_SCOPE_INTERVAL", "1s"),
    ]
}

/// The namespaces a webhook is sent, from its `In` term; `None` when it has none (every
/// namespace the installer's terms allow).
fn scope_of(cluster: &mut Cluster, kind: &str, webhook: &str) -> Option<Vec<String>> {
    let output = cluster.kubectl(&["get", kind, "slo-guard-local", "-o", "json"]);
    assert_allowed(&output);
    let configuration: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("webhook configuration JSON");
    let hook = configuration["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .find(|hook| hook["name"] == webhook)
        .unwrap_or_else(|| panic!("no webhook {webhook}"));
    hook["namespaceSelector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|term| term["key"] == "kubernetes.io/metadata.name" && term["operator"] == "In")
        .map(|term| {
            term["values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|v| v.as_str().expect("a name").to_string())
                .collect()
        })
}

/// The scope of the four workload webhooks, which must agree.
fn workload_scope(cluster: &mut Cluster) -> Result<Option<Vec<String>>, String> {
    let validate = scope_of(
        cluster,
        "validatingwebhookconfiguration",
        "validate.slo-guard.io",
    );
    let pods = scope_of(
        cluster,
        "validatingwebhookconfiguration",
        "pods.slo-guard.io",
    );
    let owners = scope_of(
        cluster,
        "validatingwebhookconfiguration",
        "owners.slo-guard.io",
    );
    let mutate = scope_of(
        cluster,
        "mutatingwebhookconfiguration",
        "mutate.slo-guard.io",
    );
    if validate != pods || validate != owners || validate != mutate {
        return Err(format!(
            "validate {validate:?}, pods {pods:?}, owners {owners:?}, mutate {mutate:?} disagree"
        ));
    }
    let config = scope_of(
        cluster,
        "validatingwebhookconfiguration",
        "config.slo-guard.io",
    );
    if config.is_some() {
        return Err(format!(
            "the policy ConfigMap webhook was scoped: {config:?}"
        ));
    }
    Ok(validate)
}

/// A policy that lowers agents' scales of `clamped` to 3 instead of denying them.
fn clamping_policy() -> String {
    policy_configmap(
        "payments",
        "clamped",
        &[
            "match: {kinds: [Deployment], selector: {matchLabels: {app: clamped}}}",
            "agents: {users: [\"system:serviceaccount:ai-agents:*\"], requireAnnotations: []}",
            "scaling: {maxReplicas: 3, onExceed: clamp}",
        ],
    )
}

/// Whether the mutating webhook is sent scale requests (has a `*/scale` rule).
fn mutating_scales(cluster: &mut Cluster) -> bool {
    let output = cluster.kubectl(&[
        "get",
        "mutatingwebhookconfiguration",
        "slo-guard-local",
        "-o",
        "json",
    ]);
    assert_allowed(&output);
    let configuration: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("webhook configuration JSON");
    configuration["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .filter(|hook| hook["name"] == "mutate.slo-guard.io")
        .flat_map(|hook| hook["rules"].as_array().into_iter().flatten())
        .flat_map(|rule| rule["resources"].as_array().into_iter().flatten())
        .any(|resource| resource.as_str().is_some_and(|r| r.ends_with("/scale")))
}

fn wait_for_no_scale_rule(cluster: &mut Cluster) {
    retry_until("the scale rule to leave", Duration::from_secs(10), || {
        if mutating_scales(cluster) {
            Err("the mutating webhook still has its scale rule".to_string())
        } else {
            Ok(())
        }
    });
}

fn names(list: &[&str]) -> Option<Vec<String>> {
    Some(list.iter().map(|n| n.to_string()).collect())
}

fn wait_for_scope(cluster: &mut Cluster, expected: Option<Vec<String>>, timeout: Duration) {
    retry_until("the webhook scope", timeout, || {
        let scope = workload_scope(cluster)?;
        if scope == expected {
            Ok(())
        } else {
            Err(format!("scope {scope:?}, expected {expected:?}"))
        }
    });
}

#[test]
fn the_workload_webhooks_follow_the_policies_in_force() {
    let env = scope_env();
    let mut guarded = Guarded::start_with_env("e2e-scope", &env);
    let cluster = &mut guarded.cluster;
    assert_allowed(&cluster.kubectl(&["create", "namespace", "scratch"]));
    assert_allowed(&cluster.kubectl(&["create", "namespace", "orders"]));

    // As installed, every namespace is sent; with no policy, none is. No policy clamps,
    // so scales no longer reach the mutating webhook: one webhook call each, not two.
    assert!(mutating_scales(cluster), "installed without the scale rule");
    wait_for_scope(
        cluster,
        names(&["none.slo-guard.io"]),
        Duration::from_secs(30),
    );
    wait_for_no_scale_rule(cluster);

    // Widened while the policy is admitted: in scope when `kubectl apply` returns, no wait.
    // The 1 s reconcile loop could widen it too; the log says the admission did.
    cluster.apply(&policy_manifest());
    assert_eq!(workload_scope(cluster), Ok(names(&["payments"])));
    let log = guarded.guard.as_ref().expect("slo-guard runs").log_text();
    assert!(
        log.contains("webhook scope widened for an admitted policy"),
        "the policy's admission did not widen the scope:\n{log}"
    );

    // A dry run widens nothing.
    let dry_run = cluster.kubectl_with_stdin(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&policy_manifest().replace("namespace: payments", "namespace: orders")),
    );
    assert_allowed(&dry_run);
    assert_eq!(workload_scope(cluster), Ok(names(&["payments"])));

    // A governed workload is judged; an ungoverned namespace is never sent.
    assert_allowed(&cluster.kubectl(&[
        "create",
        "deployment",
        "checkout",
        "-n",
        "payments",
        "--image",
        "registry.example.com/checkout:1",
    ]));
    assert_allowed(&cluster.kubectl(&[
        "create",
        "deployment",
        "scratch",
        "-n",
        "scratch",
        "--image",
        "registry.example.com/scratch:1",
    ]));
    let over_cap = cluster.kubectl(&[
        "scale",
        "deployment/checkout",
        "-n",
        "payments",
        "--replicas",
        "20",
        "--as",
        "system:serviceaccount:ai-agents:fixer",
    ]);
    assert_denied(&over_cap, "[payments/checkout:max-replicas]");

    // slo-guard down: fail closed where it governs, nothing changes elsewhere.
    if let Some(guard) = guarded.guard.take() {
        guard.stop();
    }
    let cluster = &mut guarded.cluster;
    let governed = cluster.kubectl(&[
        "scale",
        "deployment/checkout",
        "-n",
        "payments",
        "--replicas",
        "3",
    ]);
    // No policy clamps, so the scale is sent to the validating webhook only.
    assert_denied(
        &governed,
        "failed calling webhook \"validate.slo-guard.io\"",
    );
    let ungoverned = cluster.kubectl(&[
        "scale",
        "deployment/scratch",
        "-n",
        "scratch",
        "--replicas",
        "3",
    ]);
    assert_allowed(&ungoverned);

    // Restarted: an installer puts the rendered (static) configuration back, and the
    // guard scopes it again.
    let port = free_port();
    let guard = SloGuard::start_with_env(
        &guarded.cluster,
        port,
        &guarded.certs,
        guarded.work.path().join("slo-guard-1.log"),
        &env,
    );
    guarded.guard = Some(guard);
    guarded.port = port;
    let cluster = &mut guarded.cluster;
    cluster.apply(&webhooks(port, &guarded.ca_bundle, "Fail"));
    wait_for_scope(cluster, names(&["payments"]), Duration::from_secs(30));

    // A policy in slo-guard's namespace that lists namespaces widens to them; one with a
    // pattern sends every namespace.
    let listed = policy_manifest()
        .replace("name: checkout\n  namespace: payments", "name: orders\n  namespace: slo-guard")
        .replace(
            "match: {kinds: [Deployment], selector: {matchLabels: {app: checkout}}}",
            "match: {kinds: [Deployment], namespaces: [orders], selector: {matchLabels: {app: orders}}}",
        );
    cluster.apply(&listed);
    assert_eq!(workload_scope(cluster), Ok(names(&["orders", "payments"])));
    let pattern = listed
        .replace("name: orders\n", "name: teams\n")
        .replace("namespaces: [orders]", "namespaces: [team-*]");
    cluster.apply(&pattern);
    assert_eq!(workload_scope(cluster), Ok(None));

    // A clamping policy brings the scale rule back before it is stored, and an agent's
    // scale above its cap is lowered to it rather than denied.
    assert!(
        !mutating_scales(cluster),
        "the scale rule came back unasked"
    );
    cluster.apply(&clamping_policy());
    assert!(
        mutating_scales(cluster),
        "the clamping policy was stored before the scale rule was back"
    );
    assert_allowed(&cluster.kubectl(&[
        "create",
        "deployment",
        "clamped",
        "-n",
        "payments",
        "--image",
        "registry.example.com/clamped:1",
    ]));
    let clamped = cluster.kubectl(&[
        "scale",
        "deployment/clamped",
        "-n",
        "payments",
        "--replicas",
        "8",
        "--as",
        "system:serviceaccount:ai-agents:fixer",
    ]);
    assert_allowed(&clamped);
    let replicas = cluster.kubectl(&[
        "get",
        "deployment/clamped",
        "-n",
        "payments",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&replicas.stdout),
        "3",
        "not clamped"
    );

    // Removed: every namespace stays sent for the grace period, then only what the
    // remaining policies govern.
    assert_allowed(&cluster.kubectl(&["delete", "configmap", "teams", "-n", "slo-guard"]));
    assert_allowed(&cluster.kubectl(&["delete", "configmap", "checkout", "-n", "payments"]));
    assert_allowed(&cluster.kubectl(&["delete", "configmap", "clamped", "-n", "payments"]));
    let removed = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        workload_scope(cluster),
        Ok(None),
        "narrowed before the grace"
    );
    assert!(
        mutating_scales(cluster),
        "the scale rule left before the grace"
    );
    wait_for_scope(cluster, names(&["orders"]), Duration::from_secs(30));
    wait_for_no_scale_rule(cluster);
    let waited = removed.elapsed();
    assert!(
        waited >= Duration::from_secs(3),
        "narrowed after {waited:?}, before the grace of {GRACE}"
    );

    let metrics = guarded.guard().metrics_text();
    assert!(
        metrics.contains("slo_guard_webhook_scope_managed 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("slo_guard_webhook_scope_namespaces 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("slo_guard_webhook_scope_scale_mutations 0"),
        "{metrics}"
    );
}
