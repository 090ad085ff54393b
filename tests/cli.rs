//! The `slo-guard` binary as users run it: `check`, `lint` and `certs`.

use std::process::Output;

use slo_guard_testkit::{slo_guard, text};

const CHECKOUT: &str = "tests/fixtures/workloads/checkout.yaml";

/// `slo-guard check` of the AdmissionReview file `review` against the baseline test
/// policies (tests/fixtures/policies), with `extra` flags.
fn check_baseline(review: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "check",
        "--policies",
        "tests/fixtures/policies",
        "--review",
        review,
    ];
    args.extend(extra);
    slo_guard(&args)
}

#[test]
fn check_denies_with_exit_1_and_prints_what_kubectl_would() {
    let output = check_baseline(
        "tests/fixtures/captured/scale-agent.json",
        &["--workload", CHECKOUT],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let response: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("stdout is the review JSON");
    assert_eq!(response["response"]["allowed"], false);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("Error from server (Forbidden): admission webhook \"validate.slo-guard.io\" denied the request: [payments/checkout:max-replicas] scale of Deployment payments/checkout blocked: 25 replicas requested, above the cap of 20 for agent changes."),
        "{stderr}"
    );
}

#[test]
fn check_allows_with_exit_0() {
    let output = check_baseline("tests/fixtures/captured/scale-hpa-controller.json", &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
}

#[test]
fn check_without_the_parent_workload_cannot_prove_an_agents_context() {
    let output = check_baseline("tests/fixtures/captured/scale-agent.json", &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("decision context unavailable"), "{stderr}");
}

#[test]
fn check_reports_unusable_input_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "not json").unwrap();
    let output = check_baseline(garbage.to_str().unwrap(), &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("not an AdmissionReview"),
        "{}",
        text(&output.stderr)
    );

    let bad_policy = dir.path().join("bad.yaml");
    std::fs::write(
        &bad_policy,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad, namespace: payments, labels: {slo-guard.io/policy: \"true\"}}\ndata:\n  policy.yaml: |\n    match: {kinds: [Deployment]}\n    action: block\n",
    )
    .unwrap();
    let output = slo_guard(&[
        "check",
        "--policies",
        bad_policy.to_str().unwrap(),
        "--review",
        "tests/fixtures/captured/scale-agent.json",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("field `action`"),
        "{}",
        text(&output.stderr)
    );

    let output = check_baseline("/nonexistent.json", &[]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn lint_accepts_the_examples_and_names_the_bad_field() {
    let output = slo_guard(&["lint", "policies"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    assert!(text(&output.stdout).contains("ok: policy payments/checkout"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad, namespace: payments, labels: {slo-guard.io/policy: \"true\"}}\ndata:\n  policy.yaml: |\n    match: {kinds: [Deployment]}\n    scaling: {maxStep: lots}\n",
    )
    .unwrap();
    let output = slo_guard(&["lint", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("error: policy payments/bad:")
            && stdout.contains("field `scaling.maxStep`"),
        "{stdout}"
    );
}

#[test]
fn certs_writes_a_ca_and_prints_the_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let output = slo_guard(&[
        "certs",
        "--out-dir",
        out.to_str().unwrap(),
        "--service",
        "slo-guard",
        "--namespace",
        "slo-guard",
        "--ip",
        "127.0.0.1",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    use base64::Engine;
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(text(&output.stdout).trim())
        .expect("stdout is the base64 caBundle");
    let ca = std::fs::read(out.join("ca.crt")).unwrap();
    assert_eq!(bundle, ca);
    assert!(text(&output.stderr).contains("slo-guard.slo-guard.svc"));
}

#[test]
fn an_unreadable_log_level_is_a_usage_error_not_a_silent_default() {
    let output = slo_guard(&["--log-level", "slo_guard=[bad", "lint", "policies"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stdout));
    assert!(
        text(&output.stderr).starts_with("error: invalid --log-level \"slo_guard=[bad\""),
        "{}",
        text(&output.stderr)
    );
    let output = slo_guard(&["--log-level", "slo_guard=debug", "lint", "policies"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
}
