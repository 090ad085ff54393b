//! End to end through a real kube-apiserver + etcd (built from Go modules by
//! tests/e2e/build-tools.sh and started by tests/e2e/cluster.sh): slo-guard runs as a
//! local process, the apiserver reaches it through webhook configurations with
//! `clientConfig.url`, and every scenario is driven with kubectl and asserted on
//! kubectl's exit code and output, as a user would see it.
//!
//! The tools must have been built (tests/run-all.sh does it); a missing tool fails the
//! test, it never skips. The kubectl transcript is written to target/e2e-transcript-<test>.txt.

use std::process::Output;
use std::time::{Duration, Instant};

use slo_guard_testkit::e2e::*;
use slo_guard_testkit::policies::policy_configmap;

fn bad_policy_manifest() -> String {
    policy_configmap(
        "payments",
        "checkout-bad",
        &[
            "match: {kinds: [Deployment], selector: {matchLabels: {app: checkout}}}",
            "scaling: {maxReplicas: twenty}",
        ],
    )
}

const CANARY: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: checkout-canary
  namespace: payments
  labels: {app: checkout}
spec:
  replicas: 2
  selector: {matchLabels: {app: checkout-canary}}
  template:
    metadata: {labels: {app: checkout-canary}}
    spec:
      containers:
      - {name: checkout, image: "registry.example.com/payments/checkout:1.41.0"}
"#;

#[test]
fn kubectl_against_a_real_apiserver() {
    let mut guarded = Guarded::start("kubectl");
    let (port, ca_bundle) = (guarded.port, guarded.ca_bundle.clone());
    let guard = guarded.guard.take().expect("slo-guard runs");
    let cluster = &mut guarded.cluster;
    cluster.apply_file(&root().join("tests/fixtures/policies/checkout.yaml"));
    guard.wait_for_log(
        "\"configmap\":\"payments/checkout\"",
        Duration::from_secs(20),
    );

    // A bad policy is rejected at apply time, with the parse error in kubectl's stderr.
    let output = cluster.kubectl_with_stdin(&["apply", "-f", "-"], Some(&bad_policy_manifest()));
    assert_denied(
        &output,
        "admission webhook \"config.slo-guard.io\" denied the request: [payments/checkout-bad:policy-schema] policy ConfigMap payments/checkout-bad rejected: policy.yaml: field `scaling.maxReplicas`",
    );

    // The agent creates checkout with its decision context; the mutating patch
    // (base64 JSON Patch) is applied by the real apiserver.
    let manifest = root().join("tests/e2e/capture/manifests/deployment-checkout.yaml");
    let output = cluster.kubectl(&["create", "-f", manifest.to_str().unwrap(), "--as", AGENT]);
    assert_allowed(&output);
    let output = cluster.kubectl(&["get", "deploy/checkout", "-n", "payments", "-o", "yaml"]);
    let yaml = text(&output.stdout);
    assert!(
        yaml.contains("slo-guard.io/verdict: '{\"actor\":\"agent\",\"class\":\"create\""),
        "{yaml}"
    );
    assert!(
        yaml.contains("kubernetes.io/change-cause: 'CrashLoopBackOff on checkout-7d9f"),
        "{yaml}"
    );

    // Before scaling, the agent records its new decision on the workload (a Scale
    // carries no annotations); then a scale within the caps passes once the watch cache
    // holds that context (it arrives within moments).
    let output = cluster.kubectl(&[
        "annotate",
        "deploy/checkout",
        "-n",
        "payments",
        "--overwrite",
        "--as",
        AGENT,
        "slo-guard.io/action=scale",
        "slo-guard.io/decision-id=1c2d3e4f-scale-out-checkout",
        "slo-guard.io/reason=p99 latency above SLO under load: scale out",
    ]);
    assert_allowed(&output);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let output = cluster.kubectl(&[
            "scale",
            "deploy/checkout",
            "-n",
            "payments",
            "--replicas=5",
            "--as",
            AGENT,
        ]);
        if output.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline
                && (text(&output.stderr).contains("decision context unavailable")
                    || text(&output.stderr).contains("does not cover spec.replicas")),
            "agent scale 3->5 denied: {}",
            text(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Past the cap: kubectl prints the denial and the reason.
    let output = cluster.kubectl(&[
        "scale",
        "deploy/checkout",
        "-n",
        "payments",
        "--replicas=25",
        "--as",
        AGENT,
    ]);
    assert_denied(
        &output,
        "admission webhook \"validate.slo-guard.io\" denied the request: [payments/checkout:max-replicas] scale of Deployment payments/checkout blocked: 25 replicas requested, above the cap of 20 for agent changes.",
    );

    // The HPA controller is a controller, never capped by agent rules; a person is
    // allowed by this policy (its caps apply to agents).
    // The HPA controller may only read and write the scale subresource, so it goes
    // through it directly, as the controller does: GET the Scale, PUT it back.
    let scale_url = "/apis/apps/v1/namespaces/payments/deployments/checkout/scale";
    let output = cluster.kubectl(&["get", "--raw", scale_url, "--as", HPA_CONTROLLER]);
    assert_allowed(&output);
    let mut scale: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a Scale");
    scale["spec"]["replicas"] = serde_json::Value::from(25);
    let output = cluster.kubectl_with_stdin(
        &[
            "replace",
            "--raw",
            scale_url,
            "-f",
            "-",
            "--as",
            HPA_CONTROLLER,
        ],
        Some(&scale.to_string()),
    );
    assert_allowed(&output);
    assert_allowed(&cluster.kubectl(&[
        "scale",
        "deploy/checkout",
        "-n",
        "payments",
        "--replicas=4",
        "--as",
        "alice@example.com",
        "--as-group",
        "sre",
    ]));

    // An agent update without its decision context is denied, and a server-side dry run
    // gets the same verdict without persisting anything.
    cluster.apply(CANARY);
    let set_image = [
        "set",
        "image",
        "deploy/checkout-canary",
        "-n",
        "payments",
        "checkout=registry.example.com/payments/checkout:1.41.1",
        "--as",
        AGENT,
    ];
    let expected = "[payments/checkout:agent-annotations] rollout of Deployment payments/checkout-canary blocked: agent change lacks a valid decision context: missing slo-guard.io/decision-id";
    let real = assert_denied(&cluster.kubectl(&set_image), expected);
    let mut dry_run = set_image.to_vec();
    dry_run.push("--dry-run=server");
    let dry = assert_denied(&cluster.kubectl(&dry_run), expected);
    let denial = |stderr: &str| {
        stderr
            .lines()
            .find(|l| l.contains("denied the request"))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(denial(&real), denial(&dry));
    let output = cluster.kubectl(&[
        "scale",
        "deploy/checkout-canary",
        "-n",
        "payments",
        "--replicas=3",
        "--dry-run=server",
    ]);
    assert_allowed(&output);
    let output = cluster.kubectl(&[
        "get",
        "deploy/checkout-canary",
        "-n",
        "payments",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(text(&output.stdout), "2", "a dry run must not persist");

    // Agents may not delete.
    assert_denied(
        &cluster.kubectl(&["delete", "deploy/checkout", "-n", "payments", "--as", AGENT]),
        "[payments/checkout:forbidden-action] delete of Deployment payments/checkout blocked: agents may not delete Deployments",
    );

    // With slo-guard stopped: failurePolicy Fail refuses the change, Ignore lets it
    // through unguarded.
    guard.stop();
    let output = cluster.kubectl(&[
        "scale",
        "deploy/checkout",
        "-n",
        "payments",
        "--replicas=6",
        "--as",
        "alice@example.com",
        "--as-group",
        "sre",
    ]);
    let stderr = assert_denied(&output, "failed calling webhook");
    assert!(
        stderr.contains(".slo-guard.io\": failed to call webhook"),
        "{stderr}"
    );
    cluster.apply(&webhooks(port, &ca_bundle, "Ignore"));
    let output = cluster.kubectl(&[
        "scale",
        "deploy/checkout",
        "-n",
        "payments",
        "--replicas=30",
        "--as",
        AGENT,
    ]);
    assert_allowed(&output);

    // Back up: the guard enforces again.
    let guard = SloGuard::start(
        cluster,
        port,
        &guarded.certs,
        guarded.work.path().join("slo-guard-2.log"),
    );
    cluster.apply(&webhooks(port, &ca_bundle, "Fail"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let output = cluster.kubectl(&[
            "scale",
            "deploy/checkout",
            "-n",
            "payments",
            "--replicas=40",
            "--as",
            AGENT,
        ]);
        let stderr = text(&output.stderr);
        if stderr.contains("[payments/checkout:max-replicas]") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "guard did not come back: {stderr}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(guard);
}

#[test]
fn helm_chart_lints_and_renders_what_the_apiserver_accepts() {
    let mut cluster = Cluster::up("helm");
    let helm = |cluster: &Cluster, args: &[&str]| -> Output {
        cluster
            .command("helm")
            .args(args)
            .current_dir(root())
            .output()
            .expect("helm runs (is the e2e bin dir on PATH?)")
    };
    let lint = helm(&cluster, &["lint", "--strict", "charts/slo-guard"]);
    assert!(
        lint.status.success(),
        "{}{}",
        text(&lint.stdout),
        text(&lint.stderr)
    );
    cluster.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: slo-guard}\n");
    for values in ["selfsigned-values.yaml", "existingsecret-values.yaml"] {
        let rendered = helm(
            &cluster,
            &[
                "template",
                "slo-guard",
                "charts/slo-guard",
                "--namespace",
                "slo-guard",
                "-f",
                &format!("charts/slo-guard/ci/{values}"),
            ],
        );
        assert!(
            rendered.status.success(),
            "{values}: {}",
            text(&rendered.stderr)
        );
        let output = cluster.kubectl_with_stdin(
            &["apply", "--dry-run=server", "-f", "-"],
            Some(&text(&rendered.stdout)),
        );
        assert!(
            output.status.success(),
            "{values}: {}",
            text(&output.stderr)
        );
    }
    // The NetworkPolicy: the webhook port from the sources a user names (anywhere by
    // default), the metrics port from Prometheus only; and none when disabled.
    let network_policy = |sets: &[&str]| -> Option<serde_json::Value> {
        let mut args = vec![
            "template",
            "slo-guard",
            "charts/slo-guard",
            "--namespace",
            "slo-guard",
            "--show-only",
            "templates/networkpolicy.yaml",
        ];
        for set in sets {
            args.extend(["--set", set]);
        }
        let rendered = helm(&cluster, &args);
        if !rendered.status.success() {
            assert!(
                text(&rendered.stderr).contains("could not find template"),
                "{}",
                text(&rendered.stderr)
            );
            return None;
        }
        Some(serde_yaml::from_str(&text(&rendered.stdout)).expect("a NetworkPolicy"))
    };
    let default = network_policy(&[]).expect("on by default");
    let ingress = &default["spec"]["ingress"];
    assert_eq!(ingress[0]["ports"][0]["port"], "https");
    assert!(ingress[0].get("from").is_none(), "{ingress}");
    assert_eq!(ingress[1]["ports"][0]["port"], "metrics");
    assert_eq!(
        ingress[1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    let restricted = network_policy(&["networkPolicy.webhookFrom[0].ipBlock.cidr=10.0.0.0/28"])
        .expect("rendered");
    assert_eq!(
        restricted["spec"]["ingress"][0]["from"][0]["ipBlock"]["cidr"],
        "10.0.0.0/28"
    );
    assert!(network_policy(&["networkPolicy.enabled=false"]).is_none());

    // The plain manifests are the chart's render, and the apiserver accepts them.
    let check = cluster
        .command("bash")
        .args(["webhooks/generate.sh", "--check"])
        .current_dir(root())
        .output()
        .expect("generate.sh runs");
    assert!(
        check.status.success(),
        "webhooks/ drifted from the chart: {}{}",
        text(&check.stdout),
        text(&check.stderr)
    );
    let ca_bundle = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==";
    let plain: Vec<String> = [
        "namespace",
        "rbac",
        "deployment",
        "service",
        "pdb",
        "networkpolicy",
        "validating-webhook",
        "mutating-webhook",
        "reflect-cronjob",
    ]
    .iter()
    .map(|name| {
        std::fs::read_to_string(root().join(format!("webhooks/{name}.yaml")))
            .expect("plain manifest")
            .replace("${CA_BUNDLE}", ca_bundle)
    })
    .collect();
    let output = cluster.kubectl_with_stdin(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&plain.join("\n---\n")),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
}
