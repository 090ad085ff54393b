//! The examples of docs/slo-sources.md, run as the page shows them: `lint` and `check`
//! on policies whose SLO comes from a Sloth, Pyrra or OpenSLO spec, with canned
//! Prometheus answers; and the errors of a bad or missing spec.

use std::path::Path;
use std::process::Output;

use slo_guard_testkit::{root, slo_guard};

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `slo-guard check` of a person's rollout of checkout, as the page runs it.
fn check_rollout(tool: &str) -> Output {
    slo_guard(&[
        "check",
        "--policies",
        &format!("docs/examples/slo-sources/{tool}"),
        "--object",
        "policies/tests/requests/checkout-rollout.yaml",
        "--old-object",
        "policies/tests/workloads/checkout.yaml",
        "--as",
        "alice@example.com",
        "--prometheus-answers",
        &format!("docs/examples/slo-sources/answers-{tool}.yaml"),
        "--now",
        "2026-11-18T10:00:00Z",
    ])
}

#[test]
fn lint_accepts_the_examples_specs_and_policies() {
    for (tool, spec_line) in [
        (
            "sloth",
            "ok: SLO spec PrometheusServiceLevel payments/checkout",
        ),
        (
            "pyrra",
            "ok: SLO spec ServiceLevelObjective payments/checkout-errors",
        ),
        ("openslo", "ok: SLO spec SLO payments/checkout-availability"),
    ] {
        let output = slo_guard(&["lint", &format!("docs/examples/slo-sources/{tool}")]);
        let text = text(&output);
        assert_eq!(output.status.code(), Some(0), "{tool}: {text}");
        assert!(text.contains(spec_line), "{tool}: {text}");
        assert!(
            text.contains("ok: policy payments/checkout"),
            "{tool}: {text}"
        );
    }
}

#[test]
fn check_reads_sloths_recorded_figures_and_names_them() {
    let output = check_rollout("sloth");
    let text = text(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("[payments/checkout:error-budget] rollout of Deployment payments/checkout blocked: error budget -5.0% left, below the 0% floor for all changes (SLO 99.9% over 30d from Sloth PrometheusServiceLevel payments/checkout, SLO requests-availability; figures: 30d from slo:sli_error:ratio_rate30d (Sloth's time-weighted mean of its 5m error ratios), 1h from slo:sli_error:ratio_rate1h"),
        "{text}"
    );
}

#[test]
fn check_falls_back_to_pyrras_queries_where_its_rules_are_absent_and_warns() {
    let output = check_rollout("pyrra");
    let text = text(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains(
            "Warning: slo-guard: payments/checkout: Pyrra recording rules absent (4w): figures from the spec's queries"
        ),
        "{text}"
    );
}

#[test]
fn check_judges_an_openslo_slo_by_its_queries() {
    let output = check_rollout("openslo");
    let text = text(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("[payments/checkout:burn-rate] rollout of Deployment payments/checkout blocked: the error budget burns fast: 25x over 1h and 25x over 5m, both above 14.4 (SLO 99.9% over 30d from OpenSLO SLO payments/checkout-availability; figures: 30d/1h/5m/6h/30m from the spec's queries)"),
        "{text}"
    );
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write");
}

#[test]
fn lint_names_a_bad_spec_and_a_policy_whose_spec_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = std::fs::read_to_string(root().join("docs/examples/slo-sources/pyrra/spec.yaml"))
        .expect("spec");
    write(
        dir.path(),
        "spec.yaml",
        &spec.replace("window: 4w", "window: four weeks"),
    );
    let policy =
        std::fs::read_to_string(root().join("docs/examples/slo-sources/pyrra/policy.yaml"))
            .expect("policy");
    write(dir.path(), "policy.yaml", &policy);
    let sloth_policy =
        std::fs::read_to_string(root().join("docs/examples/slo-sources/sloth/policy.yaml"))
            .expect("policy")
            .replace(
                "name: checkout\n  namespace",
                "name: checkout-sloth\n  namespace",
            );
    write(dir.path(), "sloth-policy.yaml", &sloth_policy);
    let output = slo_guard(&["lint", &dir.path().display().to_string()]);
    let text = text(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("error: SLO spec ServiceLevelObjective payments/checkout-errors: ServiceLevelObjective payments/checkout-errors (")
            && text.contains("spec.window: invalid duration \"four weeks\""),
        "{text}"
    );
    assert!(
        text.contains("error: policy payments/checkout: ")
            && text.contains("field `slo.source`: Pyrra ServiceLevelObjective payments/checkout-errors was rejected"),
        "{text}"
    );
    assert!(
        text.contains("error: policy payments/checkout-sloth: ")
            && text.contains("field `slo.source`: Sloth PrometheusServiceLevel payments/checkout not found (slo-guard has read no spec of that kind in that namespace)"),
        "{text}"
    );
    assert!(text.contains("3 of 3 documents invalid"), "{text}");
}
