//! Dated change freezes and freeze exceptions end to end, through a real kube-apiserver:
//! an agent's change in a holiday freeze is denied with the freeze's name, its end and
//! the command that lifts it; a person runs that command and the agent's change passes;
//! an agent cannot grant, extend, withdraw or forge an exception; an expired exception
//! lifts nothing; an exception bound to one change lifts the freeze for it alone. Identities are impersonated with `kubectl --as`.

use std::time::Duration;

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use slo_guard_testkit::e2e::*;

const ALICE: [&str; 4] = ["--as", "alice@example.com", "--as-group", "sre"];

fn rfc3339(time: DateTime<Utc>) -> String {
    time.with_timezone(&FixedOffset::east_opt(3600).expect("+01:00"))
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn annotation(cluster: &mut Cluster, key: &str) -> String {
    let path = format!(
        "jsonpath={{.metadata.annotations.{}}}",
        key.replace('.', "\\.").replace('/', "\\/")
    );
    text(
        &cluster
            .kubectl(&["get", "deploy/ledger", "-n", "payments", "-o", &path])
            .stdout,
    )
}

fn as_alice<'a>(args: &[&'a str]) -> Vec<&'a str> {
    [args, &ALICE[..]].concat()
}

fn as_agent<'a>(args: &[&'a str]) -> Vec<&'a str> {
    [args, &["--as", AGENT][..]].concat()
}

#[test]
fn a_holiday_freeze_holds_agents_until_a_person_lifts_it() {
    let mut guarded = Guarded::start("freeze");
    let now = Utc::now();
    let from = rfc3339(now - chrono::Duration::hours(1));
    let until = rfc3339(now + chrono::Duration::days(10));
    let policy = format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: ledger
  namespace: payments
  labels: {{slo-guard.io/policy: "true"}}
data:
  policy.yaml: |
    match: {{kinds: [Deployment], names: [ledger]}}
    agents: {{users: ["system:serviceaccount:ai-agents:*"], requireAnnotations: []}}
    windows:
      maxException: 2h
      freeze:
        - {{name: holiday-freeze, from: "{from}", until: "{until}", appliesTo: agents}}
"#
    );
    guarded.cluster.apply(&policy);
    guarded
        .guard()
        .wait_for_log("\"configmap\":\"payments/ledger\"", Duration::from_secs(20));
    let cluster = &mut guarded.cluster;
    cluster.apply(&agent_deployment(
        "ledger",
        2,
        "d-ledger-0",
        "created by a person",
    ));

    // --- An agent's change in the freeze: denied, naming the freeze, its end, and the
    // command a person runs to lift it.
    let scale = |replicas: &'static str| -> Vec<&'static str> {
        as_agent(&["scale", "deploy/ledger", "-n", "payments", replicas])
    };
    let denial = assert_denied(
        &cluster.kubectl(&scale("--replicas=3")),
        &format!(
            "[payments/ledger:change-window] scale of Deployment payments/ledger blocked: change freeze holiday-freeze ({from} to {until}) is in force for agent changes; it ends at {until}. Wait until {until}, or ask a person to make the change, or to lift the freeze for this workload (at most 2h): kubectl annotate deployment/ledger -n payments slo-guard.io/freeze-exception='holiday-freeze;until="
        ),
    );
    let start = denial
        .find("slo-guard.io/freeze-exception='")
        .expect("the command")
        + "slo-guard.io/freeze-exception='".len();
    let suggested = &denial[start..start + denial[start..].find('\'').expect("closing quote")];
    assert!(suggested.ends_with(";reason=<why>"), "{suggested}");

    // --- An agent cannot grant itself one, in any way it could try.
    let own_until = rfc3339(Utc::now() + chrono::Duration::hours(1));
    let own = format!(
        "slo-guard.io/freeze-exception=holiday-freeze;until={own_until};reason=agent says so"
    );
    let output = cluster.kubectl(&as_agent(&[
        "annotate",
        "deploy/ledger",
        "-n",
        "payments",
        &own,
        "--overwrite",
    ]));
    assert_denied(
        &output,
        "[payments/ledger:freeze-exception] metadata of Deployment payments/ledger blocked: agents cannot grant, extend or withdraw freeze exceptions: system:serviceaccount:ai-agents:fixer (agent) changed slo-guard.io/freeze-exception",
    );
    // Forgery: the agent writes the stamp slo-guard would write, alone or with the
    // exception, by annotate or by patch.
    let output = cluster.kubectl(&as_agent(&[
        "annotate",
        "deploy/ledger",
        "-n",
        "payments",
        "slo-guard.io/freeze-exception-by=alice@example.com",
    ]));
    assert_denied(
        &output,
        "agents cannot grant, extend or withdraw freeze exceptions: system:serviceaccount:ai-agents:fixer (agent) changed slo-guard.io/freeze-exception-by",
    );
    let forged = serde_json::json!({"metadata": {"annotations": {
        "slo-guard.io/freeze-exception": format!("holiday-freeze;until={own_until};reason=forged"),
        "slo-guard.io/freeze-exception-by": "alice@example.com",
        "slo-guard.io/freeze-exception-at": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
    }}})
    .to_string();
    let output = cluster.kubectl(&as_agent(&[
        "patch",
        "deploy/ledger",
        "-n",
        "payments",
        "-p",
        &forged,
    ]));
    assert_denied(
        &output,
        "changed slo-guard.io/freeze-exception, slo-guard.io/freeze-exception-by, slo-guard.io/freeze-exception-at",
    );
    assert_eq!(annotation(cluster, "slo-guard.io/freeze-exception"), "");
    assert_eq!(annotation(cluster, "slo-guard.io/freeze-exception-by"), "");

    // --- A person's exception longer than windows.maxException is refused at once.
    let too_long = format!(
        "slo-guard.io/freeze-exception=holiday-freeze;until={};reason=all week",
        rfc3339(Utc::now() + chrono::Duration::hours(5))
    );
    assert_denied(
        &cluster.kubectl(&as_alice(&[
            "annotate",
            "deploy/ledger",
            "-n",
            "payments",
            &too_long,
            "--overwrite",
        ])),
        "longer than windows.maxException 2h",
    );

    // --- A person runs the command from the denial, with a reason; slo-guard stamps who
    // and when, and the agent's change passes.
    let granted = suggested.replace("<why>", "INC-9 ledger hotfix");
    let grant = format!("slo-guard.io/freeze-exception={granted}");
    assert_allowed(&cluster.kubectl(&as_alice(&[
        "annotate",
        "deploy/ledger",
        "-n",
        "payments",
        &grant,
        "--overwrite",
    ])));
    assert_eq!(
        annotation(cluster, "slo-guard.io/freeze-exception-by"),
        "alice@example.com"
    );
    let stamped_at = annotation(cluster, "slo-guard.io/freeze-exception-at");
    assert!(
        DateTime::parse_from_rfc3339(&stamped_at).is_ok(),
        "{stamped_at:?}"
    );
    retry_until(
        "the person's exception lifts the freeze",
        Duration::from_secs(15),
        || {
            let output = cluster.kubectl(&scale("--replicas=3"));
            if output.status.success() {
                Ok(())
            } else {
                Err(text(&output.stderr))
            }
        },
    );

    // --- The agent cannot extend it, nor withdraw it, nor re-stamp it.
    let extended = format!(
        "slo-guard.io/freeze-exception={}",
        granted.replace(
            granted.split(';').nth(1).expect("until"),
            &format!("until={}", rfc3339(Utc::now() + chrono::Duration::days(3))),
        )
    );
    for attempt in [
        vec![
            "annotate",
            "deploy/ledger",
            "-n",
            "payments",
            &extended,
            "--overwrite",
        ],
        vec![
            "annotate",
            "deploy/ledger",
            "-n",
            "payments",
            "slo-guard.io/freeze-exception-",
        ],
        vec![
            "annotate",
            "deploy/ledger",
            "-n",
            "payments",
            "slo-guard.io/freeze-exception-at=2099-01-01T00:00:00Z",
            "--overwrite",
        ],
    ] {
        assert_denied(
            &cluster.kubectl(&as_agent(&attempt)),
            "[payments/ledger:freeze-exception]",
        );
    }
    assert_eq!(
        annotation(cluster, "slo-guard.io/freeze-exception"),
        granted
    );

    // --- An expired exception lifts nothing.
    let short_until = Utc::now() + chrono::Duration::seconds(20);
    let short = format!(
        "slo-guard.io/freeze-exception=holiday-freeze;until={};reason=one quick fix",
        rfc3339(short_until)
    );
    assert_allowed(&cluster.kubectl(&as_alice(&[
        "annotate",
        "deploy/ledger",
        "-n",
        "payments",
        &short,
        "--overwrite",
    ])));
    let wait = (short_until - Utc::now())
        .to_std()
        .unwrap_or_default()
        .saturating_add(Duration::from_secs(1));
    std::thread::sleep(wait);
    retry_until(
        "an expired exception lifts nothing",
        Duration::from_secs(15),
        || {
            let stderr = text(&cluster.kubectl(&scale("--replicas=4")).stderr);
            if stderr.contains(&format!(
                "change freeze holiday-freeze ({from} to {until}) is in force for agent changes; it ends at {until}; the freeze exception on the workload does not count: it expired at {}",
                rfc3339(short_until)
            )) {
                Ok(())
            } else {
                Err(stderr)
            }
        },
    );

    // --- An exception bound to one change: the denial names the change; a person grants
    // it for that change; that change passes and another one does not.
    let denial = assert_denied(
        &cluster.kubectl(&scale("--replicas=4")),
        "; for this change only, put ;change=d-ledger-0@",
    );
    let start = denial.find(";change=").expect("the binding") + 1;
    let binding = denial[start..]
        .split_whitespace()
        .next()
        .expect("change=<decision>@<digest>");
    let bound = format!(
        "slo-guard.io/freeze-exception=holiday-freeze;until={};{binding};reason=just this scale",
        rfc3339(Utc::now() + chrono::Duration::minutes(30))
    );
    assert_allowed(&cluster.kubectl(&as_alice(&[
        "annotate",
        "deploy/ledger",
        "-n",
        "payments",
        &bound,
        "--overwrite",
    ])));
    retry_until(
        "an exception for one change lifts the freeze for it",
        Duration::from_secs(15),
        || {
            let output = cluster.kubectl(&scale("--replicas=4"));
            if output.status.success() {
                Ok(())
            } else {
                Err(text(&output.stderr))
            }
        },
    );
    assert_denied(
        &cluster.kubectl(&scale("--replicas=5")),
        &format!(
            "the freeze exception on the workload does not count: it is for change {}",
            binding.trim_start_matches("change=")
        ),
    );

    // People are not held by a freeze for agents.
    assert_allowed(&cluster.kubectl(&as_alice(&[
        "scale",
        "deploy/ledger",
        "-n",
        "payments",
        "--replicas=6",
    ])));
}
