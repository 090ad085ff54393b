//! The preflight (`POST /v1/preflight`, issue 14 part 2): it never disagrees with
//! admission, its envelope is what the decision core says of neighbouring changes, and
//! the endpoint authenticates and rate-limits its callers. Authentication against a real
//! kube-apiserver is in tests/e2e_preflight.rs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use slo_guard::admission::{WorkloadKind, WorkloadSnapshot};
use slo_guard::cli::request::Requester;
use slo_guard::guard::{Endpoint, Guard};
use slo_guard::metrics::Metrics;
use slo_guard::preflight::request::merge_diff;
use slo_guard::preflight::{
    Authenticator, Caller, PreflightError, PreflightRequest, PreflightService, RateLimiter,
    Subject, WorkloadRef, answer_offline, prepare,
};
use slo_guard::rules::Decision;
use slo_guard::slo::{CannedAnswers, SloSource};
use slo_guard::store::{PolicyStore, StoreEvent, read_manifests};
use slo_guard_testkit::fixtures::{checkout_workload, fixture, fixture_json, fixture_names, guard};
use slo_guard_testkit::policies::policy_configmap;
use slo_guard_testkit::prometheus::{Sample, StandInPrometheus};
use slo_guard_testkit::router::TlsServer;
use slo_guard_testkit::{AGENT, root};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// The preflight request that stands for a captured review: the same identity, the same
/// object, and the same change, said the way an agent would say it (a scale with its
/// replicas, a merge patch on the stored object, a create with the object, a delete).
fn equivalent(review: &Value) -> (PreflightRequest, Requester) {
    let request = &review["request"];
    let user = &request["userInfo"];
    let requester = Requester {
        user: user["username"].as_str().unwrap_or_default().to_string(),
        groups: serde_json::from_value(user["groups"].clone()).unwrap_or_default(),
        field_manager: request
            .pointer("/options/fieldManager")
            .and_then(Value::as_str)
            .map(str::to_string),
        dry_run: false,
    };
    let resource = request["resource"]["resource"].as_str().unwrap_or_default();
    let namespace = request["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = request["name"].as_str().unwrap_or_default().to_string();
    let old = &request["oldObject"];
    let new = &request["object"];
    let (kind, api_version) = if request.get("subResource").is_some() {
        match resource {
            "deployments" => ("Deployment".to_string(), "apps/v1".to_string()),
            "statefulsets" => ("StatefulSet".to_string(), "apps/v1".to_string()),
            other => panic!("no workload kind for {other}"),
        }
    } else {
        let subject = if new.is_null() { old } else { new };
        (
            subject["kind"].as_str().unwrap_or_default().to_string(),
            subject["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    };
    let mut change = json!({});
    let mut current = None;
    match (request["operation"].as_str(), request.get("subResource")) {
        (Some("UPDATE"), Some(_)) => {
            change = json!({"action": "scale", "replicas": new["spec"]["replicas"]});
            // What the user holds of the workload: its replica count before the scale.
            current = Some(json!({"spec": {"replicas": old["spec"]["replicas"]}}));
        }
        (Some("CREATE"), _) => change = json!({"action": "create", "object": new}),
        (Some("UPDATE"), None) => {
            change = json!({"patch": merge_diff(old, new)});
            current = Some(old.clone());
        }
        (Some("DELETE"), _) => {
            change = json!({"action": "delete", "propagationPolicy": request["options"]["propagationPolicy"]});
            current = Some(old.clone());
        }
        other => panic!("no equivalent for {other:?}"),
    }
    let preflight = serde_json::from_value(json!({
        "workload": {"apiVersion": api_version, "kind": kind, "namespace": namespace, "name": name},
        "change": change,
        "current": current,
    }))
    .expect("a preflight request");
    (preflight, requester)
}

/// The decision the validating webhook takes on `body`.
fn admitted(guard: &Guard, body: &[u8], now: DateTime<Utc>) -> (bool, Option<Decision>) {
    let judgement = guard
        .review(Endpoint::Validate, body, now)
        .expect("the webhook judges the fixture");
    (judgement.response.allowed, judgement.decision)
}

/// The parts of a decision an answer is made of (the ledger record to write is the
/// webhook's business alone).
fn comparable(decision: &Decision) -> Decision {
    Decision {
        record: None,
        ..decision.clone()
    }
}

/// Every captured review, judged by the webhook and asked of the preflight as the
/// equivalent change: the same verdict and the same decision, rule for rule.
/// Returns how many were compared, and how many of those admission denies.
fn assert_agreement(guard: &Guard, now: DateTime<Utc>, setting: &str) -> (usize, usize) {
    let names = fixture_names();
    assert!(names.len() >= 10, "the captured fixtures: {names:?}");
    let (mut compared, mut denied) = (0, 0);
    for name in &names {
        let review = fixture_json(name);
        let (allowed, decision) = admitted(guard, &fixture(name), now);
        let (request, requester) = equivalent(&review);
        let prepared = prepare(guard, &request, &requester, request.current.as_ref(), now)
            .unwrap_or_else(|e| panic!("{setting} {name}: {e}"));
        let assessment = guard
            .assess_now(&prepared.bodies[..1], now)
            .unwrap_or_else(|e| panic!("{setting} {name}: {e}"))
            .remove(0);
        match (&decision, &assessment) {
            (Some(decision), Some(assessment)) => assert_eq!(
                comparable(decision),
                comparable(&assessment.decision),
                "{setting} {name}: the preflight decides otherwise than the webhook"
            ),
            (None, None) => {}
            (webhook, preflight) => panic!(
                "{setting} {name}: governed by the webhook {} but by the preflight {}",
                webhook.is_some(),
                preflight.is_some()
            ),
        }
        let answer = answer_offline(guard, &request, &requester, now)
            .unwrap_or_else(|e| panic!("{setting} {name}: {e}"));
        assert_eq!(
            answer["allowed"].as_bool(),
            Some(allowed),
            "{setting} {name}: the preflight's verdict differs from the webhook's: {answer:#}"
        );
        compared += 1;
        denied += usize::from(!allowed);
    }
    (compared, denied)
}

#[test]
fn the_preflight_agrees_with_admission_on_every_captured_review() {
    let now = Utc.with_ymd_and_hms(2026, 11, 18, 10, 0, 0).unwrap();
    let (compared, denied) = assert_agreement(&guard(), now, "baseline");
    assert_eq!(compared, fixture_names().len());
    assert!(
        denied > 0 && denied < compared,
        "both verdicts are compared: {denied} of {compared} denied"
    );
}

/// The example policies with every section (SLO figures from canned answers, cooldowns,
/// weekly and dated freezes, approvals, a reflection), at times inside and outside the
/// freezes.
fn example_guard(answers: &str) -> Guard {
    let answers = CannedAnswers::parse("answers.yaml", answers).expect("answers");
    example_guard_with(SloSource::Canned(Arc::new(answers)))
}

fn example_guard_with(slo: SloSource) -> Guard {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = PolicyStore::new("slo-guard");
    let mut documents = Vec::new();
    for file in [
        "policies/checkout.yaml",
        "policies/platform-defaults.yaml",
        "policies/reflection-checkout.yaml",
    ] {
        documents.extend(read_manifests(&root().join(file), "default").expect("policies"));
    }
    for event in store.replace_all(None, &documents) {
        assert!(matches!(event, StoreEvent::Loaded { .. }), "{event:?}");
    }
    Guard::new(
        Arc::new(store),
        Arc::new(checkout_workload()),
        Arc::new(Metrics::new()),
    )
    .with_slo(slo)
}

const ERRORS: &str = r#"sum(rate(http_requests_total{job="checkout",code=~"5.."}"#;
const TOTAL: &str = r#"sum(rate(http_requests_total{job="checkout"}"#;

/// Canned answers for the example policy: `error_ratio` over every window, 100 req/s,
/// traffic `spike` times its baseline.
fn answers(error_ratio: f64, spike: f64) -> String {
    let mut text = String::new();
    for window in ["30d", "1h", "5m", "6h", "30m"] {
        text.push_str(&format!(
            "'{ERRORS}[{window}]))': {}\n",
            error_ratio * 100.0
        ));
        text.push_str(&format!("'{TOTAL}[{window}]))': 100\n"));
    }
    text.push_str(&format!("'{TOTAL}[5m] offset 1w))': {}\n", 100.0 / spike));
    text
}

#[test]
fn the_preflight_agrees_with_admission_under_every_section_of_the_example_policy() {
    for (figures, error_ratio, spike) in [
        ("healthy", 0.0002, 1.0),
        ("budget spent, burning, spiking", 0.02, 3.0),
    ] {
        let guard = example_guard(&answers(error_ratio, spike));
        for now in [
            "2026-11-18T10:00:00Z", // a Wednesday
            "2026-11-21T10:00:00Z", // a Saturday: the weekend freeze
            "2026-12-24T10:00:00Z", // the holiday freeze
        ] {
            let (compared, denied) =
                assert_agreement(&guard, at(now), &format!("{figures} at {now}"));
            assert!(
                denied > 0 && denied < compared,
                "{figures} at {now}: {denied} of {compared} denied"
            );
        }
    }
}

/// A policy with caps, a step, a cooldown, a weekly freeze and approvals, for the envelope.
fn envelope_policy_manifest() -> String {
    policy_configmap(
        "payments",
        "checkout",
        &[
            "match: {kinds: [Deployment], selector: {matchLabels: {app: checkout}}}",
            "agents: {users: [\"system:serviceaccount:ai-agents:*\"], requireAnnotations: []}",
            "scaling: {minReplicas: 2, maxReplicas: 12, maxStep: 4, cooldown: 10m, appliesTo: agents}",
            "windows:",
            "  freeze:",
            "    - {name: weekend, days: [Sat, Sun], timezone: UTC, appliesTo: agents}",
            "approval: {requiredFor: [rollout], maxAge: 1h}",
        ],
    )
}

fn envelope_guard(last_agent_change: Option<&str>) -> Guard {
    let store = PolicyStore::new("slo-guard");
    let documents = slo_guard::store::parse_manifest_text(
        std::path::Path::new("envelope.yaml"),
        &envelope_policy_manifest(),
        "default",
    )
    .expect("policy");
    for event in store.replace_all(None, &documents) {
        assert!(matches!(event, StoreEvent::Loaded { .. }), "{event:?}");
    }
    let mut annotations = BTreeMap::new();
    if let Some(at) = last_agent_change {
        annotations.insert("slo-guard.io/last-agent-change".to_string(), at.to_string());
    }
    let labels = BTreeMap::from([("app".to_string(), "checkout".to_string())]);
    let cache = BTreeMap::from([(
        (
            WorkloadKind::Deployment,
            "payments".to_string(),
            "checkout".to_string(),
        ),
        WorkloadSnapshot {
            labels: labels.clone(),
            pod_labels: labels,
            annotations,
            replicas: Some(5),
            owner_uids: Vec::new(),
        },
    )]);
    Guard::new(Arc::new(store), Arc::new(cache), Arc::new(Metrics::new()))
}

fn scale_request(replicas: u32) -> PreflightRequest {
    serde_json::from_value(json!({
        "workload": {"kind": "Deployment", "namespace": "payments", "name": "checkout"},
        "change": {"action": "scale", "replicas": replicas},
    }))
    .expect("request")
}

fn agent() -> Requester {
    Requester {
        user: AGENT.into(),
        ..Requester::default()
    }
}

#[test]
fn the_envelope_gives_the_replica_bounds_the_webhook_enforces() {
    let guard = envelope_guard(None);
    let now = at("2026-11-18T10:00:00Z");
    let answer = answer_offline(&guard, &scale_request(15), &agent(), now).expect("answer");
    assert_eq!(answer["allowed"], false, "{answer:#}");
    let replicas = &answer["envelope"]["replicas"];
    assert_eq!(replicas["current"], 5, "{answer:#}");
    // Up: the step of 4 binds before the cap of 12. Down: the floor of 2 before the step.
    assert_eq!(replicas["largestAllowed"], 9, "{answer:#}");
    assert_eq!(replicas["smallestAllowed"], 2, "{answer:#}");
    assert_eq!(replicas["step"][0]["maxStep"], 4, "{answer:#}");
    // Each bound holds at the webhook, and one past it does not.
    for (replicas, allowed) in [(9, true), (10, false), (2, true), (1, false), (15, false)] {
        let verdict = answer_offline(&guard, &scale_request(replicas), &agent(), now)
            .expect("answer")["allowed"]
            .as_bool();
        assert_eq!(verdict, Some(allowed), "scale to {replicas}");
    }
    // Each rule's result, with the value seen and the threshold.
    let rules = answer["rules"].as_array().expect("rules");
    let rule = |name: &str| {
        rules
            .iter()
            .find(|r| r["rule"] == name)
            .unwrap_or_else(|| panic!("no {name} in {rules:#?}"))
    };
    assert_eq!(rule("max-replicas")["seen"], 15);
    assert_eq!(rule("max-replicas")["threshold"]["value"], 12);
    assert_eq!(rule("max-replicas")["result"], "denied");
    assert_eq!(rule("max-step")["seen"], 10);
    assert_eq!(rule("min-replicas")["result"], "passed");
    // Time alone does not let a scale past the cap through.
    assert_eq!(answer["nextAllowedTime"], Value::Null);
}

#[test]
fn a_cooldown_names_its_end_and_the_time_the_change_passes() {
    let guard = envelope_guard(Some("2026-11-18T09:55:00Z"));
    let now = at("2026-11-18T10:00:00Z");
    let answer = answer_offline(&guard, &scale_request(6), &agent(), now).expect("answer");
    assert_eq!(answer["allowed"], false, "{answer:#}");
    assert_eq!(
        answer["envelope"]["cooldown"]["endsAt"], "2026-11-18T10:05:00Z",
        "{answer:#}"
    );
    assert_eq!(answer["nextAllowedTime"], "2026-11-18T10:05:00Z");
    // Inside the cooldown no scale is allowed: both bounds are the current count.
    assert_eq!(answer["envelope"]["replicas"]["largestAllowed"], 5);
    assert_eq!(answer["envelope"]["replicas"]["smallestAllowed"], 5);
    // And at that time the webhook admits it.
    let later = answer_offline(
        &guard,
        &scale_request(6),
        &agent(),
        at("2026-11-18T10:05:00Z"),
    )
    .expect("answer");
    assert_eq!(later["allowed"], true, "{later:#}");
}

#[test]
fn a_freeze_names_when_it_closes_and_a_cooldown_inside_it_waits_for_it() {
    // Saturday 23:58, last agent change 23:55: the cooldown ends inside the freeze, so
    // the change passes when the freeze ends, on Monday at 00:00.
    let guard = envelope_guard(Some("2026-11-21T23:55:00Z"));
    let now = at("2026-11-21T23:58:00Z");
    let answer = answer_offline(&guard, &scale_request(6), &agent(), now).expect("answer");
    assert_eq!(answer["allowed"], false, "{answer:#}");
    let window = &answer["envelope"]["windows"][0];
    assert_eq!(window["inForce"], true, "{answer:#}");
    assert_eq!(window["closesAt"], "2026-11-23T00:00:00Z", "{answer:#}");
    // Next time, after this run of it: the Saturday after.
    assert_eq!(window["nextOpensAt"], "2026-11-28T00:00:00Z", "{answer:#}");
    assert_eq!(answer["nextAllowedTime"], "2026-11-23T00:00:00Z");
    // On a Wednesday, the freeze is not in force and next opens on Saturday.
    let wednesday = envelope_guard(None);
    let answer = answer_offline(
        &wednesday,
        &scale_request(6),
        &agent(),
        at("2026-11-18T10:00:00Z"),
    )
    .expect("answer");
    assert_eq!(answer["allowed"], true, "{answer:#}");
    let window = &answer["envelope"]["windows"][0];
    assert_eq!(window["inForce"], false);
    assert_eq!(window["nextOpensAt"], "2026-11-21T00:00:00Z", "{answer:#}");
    assert_eq!(answer["nextAllowedTime"], Value::Null);
}

#[test]
fn a_rollout_that_needs_approval_names_the_exact_command() {
    let guard = envelope_guard(None);
    let now = at("2026-11-18T10:00:00Z");
    let current = fixture_json("deployment-image-change.json")["request"]["oldObject"].clone();
    let request: PreflightRequest = serde_json::from_value(json!({
        "workload": {"kind": "Deployment", "namespace": "payments", "name": "checkout"},
        "change": {
            "action": "fix-image",
            "patch": {"spec": {"template": {"spec": {"containers": [{"name": "checkout", "image": "registry.example.com/payments/checkout:1.4.3"}]}}}},
            "annotations": {"slo-guard.io/decision-id": "7f3a"}
        },
        "current": current,
    }))
    .expect("request");
    let answer = answer_offline(&guard, &request, &agent(), now).expect("answer");
    assert_eq!(answer["allowed"], false, "{answer:#}");
    let approval = &answer["envelope"]["approval"];
    assert_eq!(approval["required"], true, "{answer:#}");
    let command = approval["command"].as_str().expect("command");
    assert!(
        command.starts_with(
            "kubectl annotate deployment/checkout -n payments slo-guard.io/approve=7f3a@"
        ) && command.ends_with(" --overwrite"),
        "{command}"
    );
    // The webhook's denial names the same command.
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains(command),
        "{answer:#}"
    );
}

/// Callers by token, and who may impersonate whom, without a cluster.
struct FakeCluster {
    asked: AtomicUsize,
}

impl Authenticator for FakeCluster {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, PreflightError>> {
        Box::pin(async move {
            self.asked.fetch_add(1, Ordering::Relaxed);
            match token {
                "agent-token" => Ok(Caller {
                    username: AGENT.into(),
                    groups: vec![
                        "system:serviceaccounts".into(),
                        "system:authenticated".into(),
                    ],
                    ..Caller::default()
                }),
                _ => Err(PreflightError::Unauthenticated("token not accepted".into())),
            }
        })
    }

    fn may_impersonate<'a>(
        &'a self,
        caller: &'a Caller,
        subject: &'a Subject,
    ) -> BoxFuture<'a, Result<(), PreflightError>> {
        Box::pin(async move {
            Err(PreflightError::Forbidden(format!(
                "{} may not impersonate {}",
                caller.username, subject.user
            )))
        })
    }

    fn may_read<'a>(
        &'a self,
        _: &'a Caller,
        _: &'a WorkloadRef,
    ) -> BoxFuture<'a, Result<(), PreflightError>> {
        Box::pin(async { Ok(()) })
    }
}

async fn ask(
    server: &TlsServer,
    token: Option<&str>,
    body: &Value,
) -> (u16, Option<String>, Value) {
    let mut request = server.client.post(server.url("/v1/preflight")).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.text().await.expect("body");
    (
        status,
        retry_after,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn the_endpoint_authenticates_and_holds_each_caller_to_its_rate() {
    let cluster = Arc::new(FakeCluster {
        asked: AtomicUsize::new(0),
    });
    let service = Arc::new(PreflightService {
        authenticator: cluster.clone(),
        reader: None,
        limiter: RateLimiter::new(3, Duration::from_secs(60)),
    });
    let server = TlsServer::start_with_preflight(envelope_guard(None), service).await;
    let body = serde_json::to_value(scale_request(6)).expect("body");

    let (status, _, answer) = ask(&server, None, &body).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(
        cluster.asked.load(Ordering::Relaxed),
        0,
        "no token, no TokenReview"
    );
    let (status, _, answer) = ask(&server, Some("forged"), &body).await;
    assert_eq!(status, 401, "{answer}");

    for _ in 0..3 {
        let (status, _, answer) = ask(&server, Some("agent-token"), &body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["subject"]["user"], AGENT);
        assert!(answer["allowed"].is_boolean(), "{answer}");
    }
    let (status, retry_after, answer) = ask(&server, Some("agent-token"), &body).await;
    assert_eq!(status, 429, "{answer}");
    let retry_after: u64 = retry_after
        .expect("a Retry-After header")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");

    // Asking about another identity needs the RBAC to impersonate it (here: none).
    let server = TlsServer::start_with_preflight(
        envelope_guard(None),
        Arc::new(PreflightService {
            authenticator: cluster,
            reader: None,
            limiter: RateLimiter::new(10, Duration::from_secs(60)),
        }),
    )
    .await;
    let mut other = body.clone();
    other["as"] = json!({"user": "system:serviceaccount:ai-agents:other"});
    let (status, _, answer) = ask(&server, Some("agent-token"), &other).await;
    assert_eq!(status, 403, "{answer}");
    let mut itself = body.clone();
    itself["as"] = json!({"user": AGENT});
    let (status, _, answer) = ask(&server, Some("agent-token"), &itself).await;
    assert_eq!(status, 200, "{answer}");
    let (status, _, answer) = ask(&server, Some("agent-token"), &json!({"workload": {}})).await;
    assert_eq!(status, 400, "{answer}");
}

#[tokio::test]
async fn without_a_cluster_the_endpoint_says_it_is_not_served() {
    let server = TlsServer::start(guard()).await;
    let (status, _, answer) = ask(&server, Some("any"), &json!({})).await;
    assert_eq!(status, 503, "{answer}");
}

/// What the stand-in Prometheus answers: fresh samples, a few errors, steady traffic.
fn steady_figures(query: &str) -> Sample {
    let now = Utc::now().timestamp();
    let value = if query.contains("timestamp(") {
        now.to_string()
    } else if query.contains("5..") {
        "0.01".to_string()
    } else {
        "100".to_string()
    };
    (now.to_string(), value)
}

/// A guard over the example policies with its own Prometheus client (and cache), asking
/// `prometheus`.
fn guard_asking(prometheus: &StandInPrometheus) -> Guard {
    let config = slo_guard::slo::PrometheusConfig {
        refresh_interval: Duration::from_secs(60),
        ..slo_guard::slo::PrometheusConfig::new(prometheus.url.clone())
    };
    let prometheus = slo_guard::slo::Prometheus::new(&config).expect("client");
    example_guard_with(SloSource::Live(Arc::new(prometheus)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preflight_asks_prometheus_what_admission_asks_through_the_same_cache() {
    let prometheus = StandInPrometheus::start(Duration::ZERO, steady_figures).await;
    let now = Utc::now();
    // The agent scales checkout down, 3 to 2: burn rates and the spike are gathered.
    let request = scale_request(2);
    let admission_guard = guard_asking(&prometheus);
    let prepared = prepare(&admission_guard, &request, &agent(), None, now).expect("reviews");
    admission_guard
        .review_async(Endpoint::Validate, &prepared.bodies[0], now)
        .await
        .expect("admission");
    let admission = prometheus.take();
    assert!(
        !admission.is_empty(),
        "a scale-down is gated on the SLO figures"
    );

    // The preflight on a guard with a cold cache: the same queries, each asked once,
    // though it decides the change and its envelope (scales up and down) on them.
    let guard = guard_asking(&prometheus);
    let prepared = prepare(&guard, &request, &agent(), None, now).expect("reviews");
    assert!(
        prepared.bodies.len() >= 3,
        "the change and its replica probes"
    );
    let assessments = guard.assess(&prepared.bodies, now).await.expect("assess");
    let answer = prepared.answer(assessments, &json!({"user": AGENT}), now);
    assert!(
        answer["envelope"]["slo"][0]["burnRates"].is_array(),
        "{answer:#}"
    );
    let asked = prometheus.take();
    assert_eq!(
        asked.keys().collect::<Vec<_>>(),
        admission.keys().collect::<Vec<_>>(),
        "the preflight asks exactly what admission of the change asks"
    );
    assert!(asked.values().all(|count| *count == 1), "{asked:#?}");

    // Admission after the preflight finds every answer in the cache they share.
    guard
        .review_async(Endpoint::Validate, &prepared.bodies[0], now)
        .await
        .expect("admission");
    assert_eq!(
        prometheus.take(),
        BTreeMap::new(),
        "no query is asked twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preflight_asks_prometheus_nothing_admission_of_its_change_would_not() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let prometheus = StandInPrometheus::start(Duration::ZERO, steady_figures).await;
    let now = Utc::now();
    let guard = guard_asking(&prometheus);
    // A scale-up, 3 to 4: admission asks Prometheus nothing, and neither does the
    // preflight, though its scale-down probe is judged on the burn and the spike.
    let up = scale_request(4);
    let prepared = prepare(&guard, &up, &agent(), None, now).expect("reviews");
    let assessments = guard.assess(&prepared.bodies, now).await.expect("assess");
    let answer = prepared.answer(assessments, &json!({"user": AGENT}), now);
    assert_eq!(prometheus.take(), BTreeMap::new(), "{answer:#}");
    let replicas = &answer["envelope"]["replicas"];
    assert_eq!(replicas["smallestAllowed"], Value::Null, "{answer:#}");
    assert_eq!(
        replicas["unknown"],
        json!(["smallestAllowed"]),
        "{answer:#}"
    );
    assert!(replicas["largestAllowed"].is_u64(), "{answer:#}");

    // Once a scale-down was judged (here, a preflight of it), its figures are cached, and
    // the scale-up's envelope knows its bound below without asking again.
    let down = scale_request(2);
    let prepared = prepare(&guard, &down, &agent(), None, now).expect("reviews");
    guard.assess(&prepared.bodies, now).await.expect("assess");
    assert!(!prometheus.take().is_empty(), "a scale-down is gated");
    let prepared = prepare(&guard, &up, &agent(), None, now).expect("reviews");
    let assessments = guard.assess(&prepared.bodies, now).await.expect("assess");
    let answer = prepared.answer(assessments, &json!({"user": AGENT}), now);
    assert_eq!(prometheus.take(), BTreeMap::new());
    assert!(
        answer["envelope"]["replicas"]["smallestAllowed"].is_u64(),
        "{answer:#}"
    );
    assert!(answer["envelope"]["replicas"].get("unknown").is_none());
}

/// The offline command line of docs/preflight.md: exit 1 for a change that would be
/// denied, with the envelope as JSON; exit 0 for one that would pass.
#[test]
fn the_command_line_judges_offline_against_policy_files() {
    let run = |replicas: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_slo-guard"))
            .current_dir(root())
            .args(["preflight", "deployment/checkout", "-n", "payments"])
            .args(["--action", "scale", "--replicas", replicas])
            .args(["--as", AGENT])
            .args([
                "--policies",
                "policies/checkout.yaml,policies/platform-defaults.yaml",
            ])
            .args(["--workload", "policies/tests/workloads/checkout.yaml"])
            .args(["--now", "2026-11-18T10:00:00Z"])
            .output()
            .expect("slo-guard preflight runs")
    };
    let denied = run("25");
    assert_eq!(
        denied.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let answer: Value = serde_json::from_slice(&denied.stdout).expect("JSON");
    assert_eq!(answer["envelope"]["replicas"]["current"], 4, "{answer:#}");
    assert_eq!(
        answer["envelope"]["replicas"]["largestAllowed"], 9,
        "{answer:#}"
    );
    assert_eq!(
        answer["envelope"]["replicas"]["smallestAllowed"], 2,
        "{answer:#}"
    );
    let allowed = run("6");
    assert_eq!(
        allowed.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&allowed.stdout),
        String::from_utf8_lossy(&allowed.stderr)
    );
    let unusable = std::process::Command::new(env!("CARGO_BIN_EXE_slo-guard"))
        .args(["preflight", "deployment/checkout", "--action", "scale"])
        .output()
        .expect("runs");
    assert_eq!(unusable.status.code(), Some(2));
}
