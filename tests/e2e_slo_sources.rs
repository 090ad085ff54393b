//! SLO specs in the cluster, end to end through a real kube-apiserver: slo-guard does
//! without the spec CRDs when the cluster has none; with Pyrra's CRD it watches
//! ServiceLevelObjectives; `kubectl apply` of a policy that names a missing spec is
//! rejected with the error, and admitted once the spec exists; a bad new version of the
//! spec, or its deletion, leaves the last good policy in force.

use std::time::Duration;

use slo_guard_testkit::e2e::*;

/// Pyrra's CRD, reduced to what the apiserver needs to serve the kind.
const PYRRA_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicelevelobjectives.pyrra.dev
spec:
  group: pyrra.dev
  names:
    kind: ServiceLevelObjective
    listKind: ServiceLevelObjectiveList
    plural: servicelevelobjectives
    singular: servicelevelobjective
  scope: Namespaced
  versions:
    - name: v1alpha1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"#;

fn spec(target: &str) -> String {
    std::fs::read_to_string(root().join("docs/examples/slo-sources/pyrra/spec.yaml"))
        .expect("example spec")
        .replace("target: \"99.9\"", &format!("target: \"{target}\""))
}

/// Waits for a log line that holds every one of `needles`, and returns it.
fn wait_for_line(guarded: &Guarded, needles: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = guarded.guard().log_text();
        if let Some(line) = log
            .lines()
            .find(|line| needles.iter().all(|needle| line.contains(needle)))
        {
            return line.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slo-guard never logged a line with {needles:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn policy() -> String {
    std::fs::read_to_string(root().join("docs/examples/slo-sources/pyrra/policy.yaml"))
        .expect("example policy")
}

#[test]
fn policies_name_pyrra_objects_in_the_cluster_and_keep_the_last_good_version() {
    let mut guarded =
        Guarded::start_with_env("slo-sources", &[("SLO_GUARD_SLO_SPEC_CRD_INTERVAL", "1s")]);
    // No SLO spec CRD: slo-guard started and is ready all the same.
    assert!(
        guarded
            .guard()
            .log_text()
            .contains("SLO spec CRD not served"),
        "{}",
        guarded.guard().log_text()
    );

    // Pyrra's CRD installed after slo-guard started: it is watched once served, with
    // no restart (the CRDs not served are looked for again every second here).
    guarded.cluster.apply(PYRRA_CRD);
    retry_until("the CRD is served", Duration::from_secs(30), || {
        let output = guarded
            .cluster
            .kubectl(&["get", "servicelevelobjectives.pyrra.dev", "-A"]);
        output
            .status
            .success()
            .then_some(())
            .ok_or_else(|| text(&output.stderr))
    });
    wait_for_line(
        &guarded,
        &["SLO spec CRD now served", "ServiceLevelObjective"],
    );

    // A policy that names a spec the cluster does not have is rejected on apply.
    let policy = policy();
    let output = guarded
        .cluster
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&policy));
    assert_denied(
        &output,
        "field `slo.source`: Pyrra ServiceLevelObjective payments/checkout-errors not found",
    );

    // The spec comes; then the policy is admitted and loaded.
    guarded.cluster.apply(&spec("99.9"));
    wait_for_line(&guarded, &["SLO spec loaded", "payments/checkout-errors"]);
    retry_until("the policy is admitted", Duration::from_secs(30), || {
        let output = guarded
            .cluster
            .kubectl_with_stdin(&["apply", "-f", "-"], Some(&policy));
        output
            .status
            .success()
            .then_some(())
            .ok_or_else(|| text(&output.stderr))
    });
    wait_for_line(&guarded, &["policy loaded", "payments/checkout"]);

    // A bad new version of the spec: rejected, the last good one stays.
    guarded.cluster.apply(&spec("120"));
    let rejected = wait_for_line(&guarded, &["SLO spec rejected", "payments/checkout-errors"]);
    assert!(
        rejected.contains("\"kept_previous\":true") && rejected.contains("spec.target 120"),
        "{rejected}"
    );

    // The spec goes away: the policy keeps its last good version and says why.
    let output = guarded.cluster.kubectl(&[
        "delete",
        "servicelevelobjectives.pyrra.dev",
        "checkout-errors",
        "-n",
        "payments",
    ]);
    assert_allowed(&output);
    let rejected = wait_for_line(
        &guarded,
        &["policy rejected", "payments/checkout", "not found"],
    );
    assert!(
        rejected.contains("\"kept_previous\":true") && rejected.contains("not found"),
        "{rejected}"
    );
}
