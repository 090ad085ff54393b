//! Learning from outcomes against the real Prometheus harness: a rollout followed by a
//! burn yields a proposal (with its evidence), a good rollout yields none, and the
//! proposal is a reflection the webhook accepts.

use std::process::Command;

use chrono::{TimeZone, Utc};
use slo_guard_testkit::prometheus::{Harness, harness_dir, policy_manifest};

fn workload(name: &str, rollout_at: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: shop
  annotations:
    slo-guard.io/last-rollout: '{{"at":"{rollout_at}","actor":"agent","user":"system:serviceaccount:ai-agents:fixer"}}'
spec:
  replicas: 4
"#
    )
}

#[test]
fn a_rollout_followed_by_a_burn_yields_a_proposal_and_a_good_one_does_not() {
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let harness = Harness::start(&harness_dir(tmp, "reflect"));
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, policy_manifest("deny-agents", "allow", "2s")).unwrap();
    // burn-both starts failing at anchor - 2h; a rollout 5 minutes before that is followed
    // by the burn, and the same rollout time on the healthy service is not.
    let anchor = Utc.timestamp_opt(harness.anchor, 0).unwrap();
    let rollout_at = (anchor - chrono::Duration::minutes(125))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mut args = vec![
        "reflect".to_string(),
        "--dry-run".into(),
        "--policies".into(),
        policy.display().to_string(),
        "--prometheus-url".into(),
        harness.url.clone(),
        "--observe".into(),
        "30m".into(),
    ];
    for name in ["burn-both", "healthy"] {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, workload(name, &rollout_at)).unwrap();
        args.push("--workload".into());
        args.push(path.display().to_string());
    }
    let output = Command::new(env!("CARGO_BIN_EXE_slo-guard"))
        .args(&args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");

    let burn_line = stdout
        .lines()
        .find(|line| line.starts_with("Deployment shop/burn-both:"))
        .unwrap_or_else(|| panic!("no line for burn-both:\n{stdout}"));
    assert!(
        burn_line.contains(&format!(
            "the rollout at {rollout_at} by system:serviceaccount:ai-agents:fixer (agent): propose slo.budget.agentFreezeBelow 0.35 (policy shop/shop): burn rate 0.20x in the 30m before"
        )),
        "{burn_line}"
    );
    // 25 of the 30 minutes after the rollout ran at 2.5% errors: about 20.9x.
    let after: f64 = burn_line
        .rsplit("0.20x in the 30m before the rollout")
        .next()
        .and_then(|rest| rest.split(", ").nth(1))
        .and_then(|s| s.split('x').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no after-burn figure in {burn_line}"));
    assert!((19.0..23.0).contains(&after), "{burn_line}");

    let healthy_line = stdout
        .lines()
        .find(|line| line.starts_with("Deployment shop/healthy:"))
        .unwrap_or_else(|| panic!("no line for healthy:\n{stdout}"));
    assert!(
        healthy_line.contains("no proposal (burn 0.20x before, 0.20x after"),
        "{healthy_line}"
    );
    assert!(
        stdout.contains("judged 2 change(s) on 2 workload(s); 1 proposal(s)"),
        "{stdout}"
    );

    // The dry run prints the ConfigMap it would write; it is a valid reflection.
    let manifest = stdout
        .split("---\n")
        .nth(1)
        .expect("the proposals ConfigMap");
    assert!(manifest.contains("name: slo-guard-proposals"), "{manifest}");
    let file = dir.path().join("proposals.yaml");
    std::fs::write(&file, manifest).unwrap();
    let lint = Command::new(env!("CARGO_BIN_EXE_slo-guard"))
        .args(["lint", "--namespace", "slo-guard"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    harness.stop();
}
