//! `slo-guard test` and `slo-guard check` with manifests, as a platform team runs them in
//! CI: the example suite in policies/tests, every suite field and check flag, and the
//! errors a typo or a missing file gives.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use slo_guard_testkit::{AGENT, root, text};

fn slo_guard(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_slo-guard"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("slo-guard runs");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("slo-guard exits")
}

const POLICIES: &str = "policies/checkout.yaml,policies/platform-defaults.yaml";
const STORED: &str = "policies/tests/workloads/checkout.yaml";
const WEDNESDAY: &str = "2026-11-18T10:00:00Z";

#[test]
fn the_example_suite_passes_and_writes_junit() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let output = slo_guard(
        &["test", "policies/tests", "--junit", junit.to_str().unwrap()],
        None,
    );
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert!(stdout.starts_with("CASE"), "{stdout}");
    assert!(
        stdout.contains("agent scales checkout past the cap")
            && stdout.contains("max-replicas,max-step"),
        "{stdout}"
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(summary.ends_with("passed, 0 failed"), "{stdout}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("failures=\"0\""), "{xml}");
    assert!(
        xml.contains("name=\"a person approves the rollout\""),
        "{xml}"
    );
}

/// A suite in a temporary directory next to copies of the example inputs.
fn suite_dir(suite: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["workloads", "requests"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        for entry in std::fs::read_dir(root().join("policies/tests").join(sub)).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.path().join(sub).join(path.file_name().unwrap())).unwrap();
        }
    }
    let policies = root().join("policies");
    let suite = suite.replace(
        "POLICIES",
        &format!(
            "[{}/checkout.yaml, {}/platform-defaults.yaml]",
            policies.display(),
            policies.display()
        ),
    );
    std::fs::write(dir.path().join("slo-guard-test.yaml"), suite).unwrap();
    dir
}

fn run_suite(dir: &Path) -> (Option<i32>, String, String) {
    let output = slo_guard(&["test", dir.to_str().unwrap()], None);
    (
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

const SCALE_25: &str = "  request:\n    object: requests/checkout-25.yaml\n    oldObject: workloads/checkout.yaml\n    subresource: scale\n    as: system:serviceaccount:ai-agents:fixer\n";

#[test]
fn a_mismatch_fails_the_run_and_names_what_differs() {
    let dir = suite_dir(&format!(
        "policies: POLICIES\nworkloads: workloads/checkout.yaml\nnow: {WEDNESDAY}\ncases:\n- name: wrong verdict\n{SCALE_25}  expect: {{verdict: allowed}}\n- name: wrong rules and words\n{SCALE_25}  expect:\n    verdict: denied\n    rules: [max-replicas]\n    message: [\"no such words\"]\n- name: wrong annotation\n  request:\n    object: requests/checkout-approved.yaml\n    oldObject: workloads/checkout.yaml\n    as: alice@example.com\n  expect:\n    verdict: allowed\n    annotations: {{slo-guard.io/approved-by: bob@example.com, slo-guard.io/verdict: null}}\n"
    ));
    let (code, stdout, stderr) = run_suite(dir.path());
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("expected allowed, got denied"), "{stdout}");
    assert!(
        stdout.contains("rules: expected [max-replicas], fired [max-replicas, max-step]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("message lacks \"no such words\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("annotation slo-guard.io/approved-by: expected \"bob@example.com\", got \"alice@example.com\""),
        "{stdout}"
    );
    assert!(stdout.contains("3 cases, 0 passed, 3 failed"), "{stdout}");
}

#[test]
fn canned_prometheus_answers_inline_or_from_a_file_reach_the_gate() {
    // A person's rollout of checkout, gated by the SLO: with no answer for a query the
    // policy's onError (deny-agents) lets a person through with a warning naming it.
    let case = |prometheus: &str| {
        format!(
            "policies: POLICIES\nnow: {WEDNESDAY}\n{prometheus}cases:\n- name: person rollout\n  request:\n    object: requests/checkout-rollout.yaml\n    oldObject: workloads/checkout.yaml\n    as: alice@example.com\n  expect:\n    verdict: allowed\n    message: [\"no canned answer\"]\n"
        )
    };
    let dir = suite_dir(&case("prometheus: {answers: {'up': 1}}\n"));
    let (code, stdout, stderr) = run_suite(dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");

    let dir = suite_dir(&case("prometheus: {answers: answers.yaml}\n"));
    std::fs::write(dir.path().join("answers.yaml"), "'up': 1\n").unwrap();
    let (code, stdout, stderr) = run_suite(dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");

    let dir = suite_dir(&case("prometheus: {answers: missing.yaml}\n"));
    let (code, _, stderr) = run_suite(dir.path());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("case \"person rollout\": field `prometheus.answers`"),
        "{stderr}"
    );

    let dir = suite_dir(&case(
        "prometheus: {answers: {'up': 1}, url: 'http://127.0.0.1:1'}\n",
    ));
    let (code, _, stderr) = run_suite(dir.path());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("field `prometheus`: give answers or url, not both"),
        "{stderr}"
    );
}

#[test]
fn suite_errors_name_the_file_the_case_and_the_field() {
    let cases: [(&str, &str); 7] = [
        (
            "policies: POLICIES\nnow: 2026-11-18T10:00:00Z\ncases:\n- name: typo\n  request: {object: requests/checkout-6.yaml, as: x}\n  expect: {verdict: allowed, rule: []}\n",
            "case \"typo\": field `expect",
        ),
        (
            "policies: POLICIES\nnow: 2026-11-18T10:00:00Z\ncases:\n- name: missing file\n  request: {object: requests/nope.yaml, oldObject: workloads/checkout.yaml, as: x}\n  expect: {verdict: allowed}\n",
            "case \"missing file\": field `request.object`: cannot read",
        ),
        (
            "policies: POLICIES\nnow: 2026-11-18T10:00:00Z\ncases:\n- name: no user\n  request: {object: requests/checkout-6.yaml, oldObject: workloads/checkout.yaml}\n  expect: {verdict: allowed}\n",
            "case \"no user\": field `request.as`",
        ),
        (
            "policies: POLICIES\ncases:\n- name: no time\n  request: {object: requests/checkout-6.yaml, oldObject: workloads/checkout.yaml, as: x}\n  expect: {verdict: allowed}\n",
            "case \"no time\": field `now`",
        ),
        (
            "policies: POLICIES\nnow: 2026-11-18T10:00:00Z\ncases:\n- name: twice\n  request: {review: r.json}\n  expect: {verdict: allowed}\n- name: twice\n  request: {review: r.json}\n  expect: {verdict: allowed}\n",
            "case \"twice\": field `name`: two cases have this name",
        ),
        (
            "policies: missing-policies.yaml\nnow: 2026-11-18T10:00:00Z\ncases:\n- name: no policies\n  request: {review: r.json}\n  expect: {verdict: allowed}\n",
            "case \"no policies\": field `policies`: cannot read",
        ),
        (
            "policies: POLICIES\nnow: 2026-11-18T10:00:00Z\ncases:\n- name: bad workload\n  workloads: requests\n  request: {object: requests/checkout-6.yaml, oldObject: workloads/checkout.yaml, as: x, operation: PATCH}\n  expect: {verdict: allowed}\n",
            "case \"bad workload\": field `request.operation`",
        ),
    ];
    for (suite, expected) in cases {
        let dir = suite_dir(suite);
        let (code, stdout, stderr) = run_suite(dir.path());
        assert_eq!(code, Some(2), "{suite}\n{stdout}{stderr}");
        assert!(stderr.contains("slo-guard-test.yaml: "), "{stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr}"
        );
    }
    let empty = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run_suite(empty.path());
    assert_eq!(code, Some(2));
    assert!(stderr.contains("no slo-guard-test.yaml found"), "{stderr}");
}

#[test]
fn check_follows_the_apiservers_order_and_prints_both_answers() {
    let approve = [
        "check",
        "--policies",
        POLICIES,
        "--object",
        "policies/tests/requests/checkout-approved.yaml",
        "--old-object",
        STORED,
        "--as",
        "alice@example.com",
        "--groups",
        "sre",
        "--now",
        WEDNESDAY,
    ];
    let output = slo_guard(&approve, None);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("mutate.slo-guard.io (mutate): allowed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("slo-guard.io~1approved-by\",\"value\":\"alice@example.com\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("validate.slo-guard.io (validate): allowed"),
        "{stderr}"
    );

    // One side alone: the validating webhook without the stamp denies, as it must.
    let output = slo_guard(&[&approve[..], &["--webhook", "validate"]].concat(), None);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("(mutate)"), "{stderr}");
    assert!(
        stderr.contains("mutating webhook is not running"),
        "{stderr}"
    );

    let output = slo_guard(&[&approve[..], &["--webhook", "mutate"]].concat(), None);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("(validate)"), "{stderr}");
    let response: serde_json::Value = serde_json::from_slice(&output.stdout).expect("review JSON");
    assert!(response["response"]["patch"].is_string(), "{response}");
}

#[test]
fn check_builds_the_request_from_every_flag() {
    // --subresource scale, from stdin, with the field manager making the request an agent's.
    let six =
        std::fs::read_to_string(root().join("policies/tests/requests/checkout-6.yaml")).unwrap();
    let twenty_five = six.replace("replicas: 6", "replicas: 25");
    let scale = |user: &str, extra: &[&str], object: &str| {
        slo_guard(
            &[
                &[
                    "check",
                    "--policies",
                    POLICIES,
                    "--object",
                    "-",
                    "--old-object",
                    STORED,
                    "--subresource",
                    "scale",
                    "--as",
                    user,
                    "--now",
                    WEDNESDAY,
                ][..],
                extra,
            ]
            .concat(),
            Some(object),
        )
    };
    let output = scale(AGENT, &[], &twenty_five);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr)
            .contains("scale of Deployment payments/checkout blocked: 25 replicas requested")
    );
    // A person is not capped; the same person through an agent's field manager is.
    let output = scale("alice@example.com", &[], &twenty_five);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let output = scale(
        "alice@example.com",
        &["--field-manager", "kagent-controller"],
        &twenty_five,
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    // --groups: a person in a group a policy names as agents is an agent.
    let dir = tempfile::tempdir().unwrap();
    let by_group = dir.path().join("by-group.yaml");
    std::fs::write(&by_group, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: by-group, namespace: payments, labels: {slo-guard.io/policy: \"true\"}}\ndata:\n  policy.yaml: |\n    match: {kinds: [Deployment]}\n    agents: {groups: [ai-agents], requireAnnotations: []}\n    scaling: {maxReplicas: 5}\n").unwrap();
    let grouped = |groups: &[&str]| {
        slo_guard(
            &[
                &[
                    "check",
                    "--policies",
                    by_group.to_str().unwrap(),
                    "--object",
                    "policies/tests/requests/checkout-6.yaml",
                    "--old-object",
                    STORED,
                    "--subresource",
                    "scale",
                    "--as",
                    "bob@example.com",
                    "--now",
                    WEDNESDAY,
                ][..],
                groups,
            ]
            .concat(),
            None,
        )
    };
    assert_eq!(grouped(&[]).status.code(), Some(0));
    let output = grouped(&["--groups", "sre,ai-agents"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("[payments/by-group:max-replicas]"),
        "{}",
        text(&output.stderr)
    );
    // --dry-run is passed on, and judged the same.
    let output = scale(AGENT, &["--dry-run"], &twenty_five);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));

    // --operation DELETE of the stored object.
    let output = slo_guard(
        &[
            "check",
            "--policies",
            POLICIES,
            "--object",
            STORED,
            "--operation",
            "DELETE",
            "--as",
            AGENT,
            "--now",
            WEDNESDAY,
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("forbidden-action"),
        "{}",
        text(&output.stderr)
    );

    // --operation CREATE is the default without --old-object; several objects in one
    // file are judged one by one.
    let dir = tempfile::tempdir().unwrap();
    let both = dir.path().join("both.yaml");
    std::fs::write(
        &both,
        format!(
            "{six}\n---\n{}",
            six.replace("name: checkout\n", "name: checkout-canary\n")
        ),
    )
    .unwrap();
    let output = slo_guard(
        &[
            "check",
            "--policies",
            POLICIES,
            "--object",
            both.to_str().unwrap(),
            "--as",
            "alice@example.com",
            "--now",
            WEDNESDAY,
        ],
        None,
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr
            .matches("validate.slo-guard.io (validate): allowed")
            .count(),
        2,
        "{stderr}"
    );
}

#[test]
fn check_input_errors_exit_2_and_name_the_input() {
    // `slo-guard check --policies POLICIES` with `args`: its exit code and stderr.
    let check = |args: &[&str]| {
        let mut all = vec!["check", "--policies", POLICIES];
        all.extend(args);
        let output = slo_guard(&all, None);
        (output.status.code(), text(&output.stderr))
    };
    let (code, stderr) = check(&["--object", "nope.yaml", "--as", AGENT]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("cannot read nope.yaml"), "{stderr}");
    let (code, stderr) = check(&["--object", "policies/tests/requests/checkout-6.yaml"]);
    assert_eq!(code, Some(2), "--as is required with --object: {stderr}");
    let (code, stderr) = check(&[
        "--object",
        "policies/tests/requests/checkout-6.yaml",
        "--old-object",
        "policies/tests/workloads/checkout-approved.yaml",
        "--as",
        AGENT,
        "--operation",
        "CREATE",
    ]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("CREATE takes no --old-object"), "{stderr}");
    let (code, stderr) = check(&[
        "--object",
        "policies/tests/requests/checkout-6.yaml",
        "--as",
        AGENT,
        "--operation",
        "UPDATE",
    ]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("UPDATE needs --old-object"), "{stderr}");
    let (code, stderr) = check(&["--review", "x.json", "--object", STORED, "--as", AGENT]);
    assert_eq!(code, Some(2), "--review and --object conflict: {stderr}");
    let (code, stderr) = check(&[
        "--object",
        STORED,
        "--as",
        AGENT,
        "--webhook",
        "both",
        "--mutate",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
}

#[test]
fn workload_flags_read_multi_document_files_directories_and_stdin() {
    // A file holding the Deployment and its Service: the Deployment is the cache entry
    // the scale request's decision context is read from.
    let dir = tempfile::tempdir().unwrap();
    let stored = std::fs::read_to_string(root().join(STORED)).unwrap();
    let with_service = dir.path().join("checkout-and-service.yaml");
    std::fs::write(&with_service, format!("{stored}---\napiVersion: v1\nkind: Service\nmetadata: {{name: checkout, namespace: payments}}\nspec: {{selector: {{app: checkout}}}}\n")).unwrap();
    let check = |workload: &str, stdin: Option<&str>| {
        slo_guard(
            &[
                "check",
                "--policies",
                "tests/fixtures/policies",
                "--review",
                "tests/fixtures/captured/scale-agent.json",
                "--workload",
                workload,
            ],
            stdin,
        )
    };
    for (workload, stdin) in [
        (with_service.to_str().unwrap(), None),
        (dir.path().to_str().unwrap(), None),
        ("-", Some(stored.as_str())),
    ] {
        let output = check(workload, stdin);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{workload}: {stderr}");
        assert!(
            stderr.contains("[payments/checkout:max-replicas]"),
            "{workload}: {stderr}"
        );
        assert!(
            !stderr.contains("decision context unavailable"),
            "{workload}: {stderr}"
        );
    }
    // reflect --workload reads the same files: a file of no workload is refused by name,
    // the Deployment-and-Service file is read (reflect then fails only on Prometheus,
    // which listens nowhere here).
    let reflect = |workload: &str| {
        let output = slo_guard(
            &[
                "reflect",
                "--dry-run",
                "--policies",
                "policies",
                "--workload",
                workload,
                "--prometheus-url",
                "http://127.0.0.1:1",
                "--now",
                WEDNESDAY,
            ],
            None,
        );
        text(&output.stderr)
    };
    let service_only = dir.path().join("service-only.yml");
    std::fs::write(
        &service_only,
        "apiVersion: v1\nkind: Service\nmetadata: {name: checkout}\n",
    )
    .unwrap();
    let stderr = reflect(service_only.to_str().unwrap());
    assert!(
        stderr.contains("expected a Deployment or StatefulSet, found Service"),
        "{stderr}"
    );
    let stderr = reflect(with_service.to_str().unwrap());
    assert!(!stderr.contains("more than one document"), "{stderr}");
    assert!(
        !stderr.contains("expected a Deployment or StatefulSet"),
        "{stderr}"
    );
    assert!(!stderr.contains("document has no kind"), "{stderr}");
}

/// The suite fields the example suite does not use each change what is judged: a field
/// manager can make a person's request an agent's; a case's own policies replace the
/// suite's; and the suite's `namespace` decides which policies may govern other
/// namespaces.
#[test]
fn field_manager_case_policies_and_namespace_change_the_verdict() {
    let scale_as = |name: &str, who: &str, extra: &str, expect: &str| {
        format!(
            "- name: {name}\n  request:\n    object: requests/checkout-25.yaml\n    oldObject: workloads/checkout.yaml\n    subresource: scale\n    as: {who}\n{extra}  expect: {expect}\n"
        )
    };
    let statefulset = |replicas: u32| {
        format!(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: ledger\n  namespace: team-a\n  labels: {{app: ledger}}\n  annotations:\n    slo-guard.io/decision-id: d-ledger-0001\n    slo-guard.io/reason: queue depth\n    slo-guard.io/confidence: \"0.9\"\n    slo-guard.io/action: scale\nspec:\n  replicas: {replicas}\n  serviceName: ledger\n  selector: {{matchLabels: {{app: ledger}}}}\n  template:\n    metadata: {{labels: {{app: ledger}}}}\n    spec:\n      containers: [{{name: ledger, image: registry.example.com/ledger:1}}]\n"
        )
    };
    let team_scale = "- name: agent scales ledger in team-a to 12\n  policies: PLATFORM\n  request:\n    object: ledger-12.yaml\n    oldObject: ledger-8.yaml\n    as: system:serviceaccount:ai-agents:fixer\n";
    let suite = |namespace: &str, team_expect: &str| {
        let mut suite = format!("policies: POLICIES\nnow: {WEDNESDAY}\n{namespace}cases:\n");
        suite.push_str(&scale_as(
            "alice scales",
            "alice@example.com",
            "",
            "{verdict: allowed, rules: []}",
        ));
        suite.push_str(&scale_as(
            "alice through kagent",
            "alice@example.com",
            "    fieldManager: kagent-remediator\n",
            "{verdict: denied, rules: [max-replicas, max-step]}",
        ));
        suite.push_str(
            &scale_as(
                "agent under the platform policy alone",
                AGENT,
                "",
                "{verdict: allowed, rules: []}",
            )
            .replace("  request:", "  policies: PLATFORM\n  request:"),
        );
        suite.push_str(team_scale);
        suite.push_str(&format!("  expect: {team_expect}\n"));
        suite.replace(
            "PLATFORM",
            &format!(
                "[{}]",
                root().join("policies/platform-defaults.yaml").display()
            ),
        )
    };
    let write_ledgers = |dir: &Path| {
        std::fs::write(dir.join("ledger-8.yaml"), statefulset(8)).unwrap();
        std::fs::write(dir.join("ledger-12.yaml"), statefulset(12)).unwrap();
    };

    // slo-guard's namespace is `slo-guard` by default, where the platform policy lives:
    // it governs team-a, and caps the agent at 10.
    let dir = suite_dir(&suite("", "{verdict: denied, rules: [max-replicas]}"));
    write_ledgers(dir.path());
    let (code, stdout, stderr) = run_suite(dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("4 cases, 4 passed, 0 failed"), "{stdout}");

    // Another namespace for slo-guard: a policy in `slo-guard` may no longer govern other
    // namespaces, so the suite says why instead of judging without it.
    let dir = suite_dir(&suite(
        "namespace: platform\n",
        "{verdict: denied, rules: [max-replicas]}",
    ));
    write_ledgers(dir.path());
    let (code, stdout, stderr) = run_suite(dir.path());
    assert_ne!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("only policies in slo-guard's namespace \"platform\" may govern other namespaces; this one is in \"slo-guard\""),
        "{stdout}{stderr}"
    );
}
