//! The router slo-guard serves, driven over real TLS on loopback with AdmissionReviews
//! captured from a real kube-apiserver.

use base64::Engine;
use serde_json::Value;
use slo_guard_testkit::fixtures::{fixture, fixture_json, guard};
use slo_guard_testkit::router::TlsServer;

fn response(body: &Value) -> &Value {
    &body["response"]
}

fn message(body: &Value) -> String {
    body["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn agent_scale_past_the_cap_is_denied_with_the_reason() {
    let server = TlsServer::start(guard()).await;
    let (status, body) = server.post("/validate", fixture("scale-agent.json")).await;
    assert_eq!(status, 200);
    let review = fixture_json("scale-agent.json");
    assert_eq!(response(&body)["uid"], review["request"]["uid"]);
    assert_eq!(response(&body)["allowed"], false);
    assert_eq!(response(&body)["status"]["code"], 403);
    let message = message(&body);
    let first = message.lines().next().unwrap();
    assert_eq!(
        first,
        "[payments/checkout:max-replicas] scale of Deployment payments/checkout blocked: 25 replicas requested, above the cap of 20 for agent changes. Request at most 20 replicas, or ask a platform engineer to raise scaling.maxReplicas in policy payments/checkout."
    );
    assert!(
        message.contains("[payments/checkout:max-step]"),
        "{message}"
    );
    // The parent's decision context was found in the cache, so no annotation finding.
    assert!(!message.contains("agent-annotations"), "{message}");
    assert_eq!(response(&body)["auditAnnotations"]["verdict"], "denied");
    assert_eq!(response(&body)["auditAnnotations"]["actor"], "agent");
    assert_eq!(response(&body)["auditAnnotations"]["class"], "scale");
}

#[tokio::test]
async fn controller_and_person_scales_are_allowed() {
    let server = TlsServer::start(guard()).await;
    for name in ["scale-hpa-controller.json", "scale-person.json"] {
        let (status, body) = server.post("/validate", fixture(name)).await;
        assert_eq!(status, 200);
        assert_eq!(response(&body)["allowed"], true, "{name}: {body}");
        assert!(response(&body).get("status").is_none());
    }
}

#[tokio::test]
async fn agent_update_without_annotations_is_denied() {
    let server = TlsServer::start(guard()).await;
    let (_, body) = server
        .post(
            "/validate",
            fixture("deployment-image-change-no-annotations.json"),
        )
        .await;
    assert_eq!(response(&body)["allowed"], false);
    let message = message(&body);
    assert!(
        message.starts_with("[payments/checkout:agent-annotations] rollout of Deployment payments/checkout blocked: agent change lacks a valid decision context: missing slo-guard.io/decision-id"),
        "{message}"
    );
}

#[tokio::test]
async fn agent_update_with_its_decision_context_is_allowed() {
    let server = TlsServer::start(guard()).await;
    let (_, body) = server
        .post("/validate", fixture("deployment-image-change.json"))
        .await;
    assert_eq!(response(&body)["allowed"], true, "{body}");
    assert_eq!(response(&body)["auditAnnotations"]["class"], "rollout");
}

#[tokio::test]
async fn dry_run_gets_the_same_verdict_as_the_real_request() {
    let server = TlsServer::start(guard()).await;
    let dry_run = fixture_json("deployment-dryrun-update.json");
    assert_eq!(dry_run["request"]["dryRun"], true);
    let (_, body) = server
        .post("/validate", fixture("deployment-dryrun-update.json"))
        .await;
    let mut real = dry_run.clone();
    real["request"]["dryRun"] = Value::Bool(false);
    let (_, real_body) = server
        .post("/validate", serde_json::to_vec(&real).unwrap())
        .await;
    assert_eq!(response(&body)["allowed"], response(&real_body)["allowed"]);
    assert_eq!(message(&body), message(&real_body));
}

#[tokio::test]
async fn agent_delete_is_forbidden() {
    let server = TlsServer::start(guard()).await;
    let review = fixture_json("deployment-delete.json");
    assert!(review["request"]["object"].is_null());
    let (_, body) = server
        .post("/validate", fixture("deployment-delete.json"))
        .await;
    assert_eq!(response(&body)["allowed"], false);
    assert!(
        message(&body).starts_with("[payments/checkout:forbidden-action] delete of Deployment payments/checkout blocked: agents may not delete Deployments"),
        "{}",
        message(&body)
    );
}

#[tokio::test]
async fn hpa_update_is_judged_against_the_caps() {
    let server = TlsServer::start(guard()).await;
    // The captured request: an agent raises the HPA's maxReplicas from 10 to 30.
    let (_, body) = server.post("/validate", fixture("hpa-update.json")).await;
    assert_eq!(response(&body)["allowed"], false);
    assert_eq!(response(&body)["auditAnnotations"]["class"], "autoscaling");
    assert!(
        message(&body).starts_with("[payments/checkout:max-replicas] autoscaling of HorizontalPodAutoscaler payments/checkout blocked: maxReplicas 30 requested, above the cap of 20 for agent changes."),
        "{}",
        message(&body)
    );
    // The same change by a person is not capped by an agents-only policy.
    let mut review = fixture_json("hpa-update.json");
    review["request"]["userInfo"]["username"] = Value::String("alice@example.com".into());
    review["request"]["userInfo"]["groups"] = serde_json::json!(["sre", "system:authenticated"]);
    let (_, body) = server
        .post("/validate", serde_json::to_vec(&review).unwrap())
        .await;
    assert_eq!(response(&body)["allowed"], true, "{body}");
}

#[tokio::test]
async fn a_bad_policy_configmap_is_rejected_with_the_parse_error() {
    let server = TlsServer::start(guard()).await;
    let (_, body) = server
        .post("/validate", fixture("configmap-policy-create.json"))
        .await;
    assert_eq!(
        response(&body)["allowed"],
        true,
        "the captured policy is valid: {body}"
    );

    let mut review = fixture_json("configmap-policy-create.json");
    review["request"]["object"]["data"]["policy.yaml"] =
        Value::String("match: {kinds: [Deployment]}\nscaling: {maxReplicas: twenty}\n".into());
    let (_, body) = server
        .post("/validate", serde_json::to_vec(&review).unwrap())
        .await;
    assert_eq!(response(&body)["allowed"], false);
    let message = message(&body);
    assert!(
        message.contains(":policy-schema] policy ConfigMap"),
        "{message}"
    );
    assert!(message.contains("field `scaling.maxReplicas`"), "{message}");
    assert!(message.contains("twenty"), "{message}");
}

#[tokio::test]
async fn mutate_attaches_a_patch_that_applies_to_the_object() {
    let server = TlsServer::start(guard()).await;
    let (_, body) = server
        .post("/mutate", fixture("deployment-image-change.json"))
        .await;
    assert_eq!(response(&body)["allowed"], true);
    assert_eq!(response(&body)["patchType"], "JSONPatch");
    let encoded = response(&body)["patch"]
        .as_str()
        .expect("the patch is a base64 string");
    let patch: json_patch::Patch = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap();
    let mut object = fixture_json("deployment-image-change.json")["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).expect("patch applies");
    let annotations = &object["metadata"]["annotations"];
    assert_eq!(
        annotations["kubernetes.io/change-cause"],
        annotations["slo-guard.io/reason"]
    );
    let verdict: Value =
        serde_json::from_str(annotations["slo-guard.io/verdict"].as_str().unwrap()).unwrap();
    assert_eq!(verdict["verdict"], "allowed");
    assert_eq!(verdict["class"], "rollout");
}

#[tokio::test]
async fn unreadable_requests_get_4xx_with_the_reason_and_the_server_keeps_serving() {
    let server = TlsServer::start(guard()).await;
    let (status, body) = server
        .post("/validate", b"{\"hello\": \"world\"".to_vec())
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("request body is not an AdmissionReview"),
        "{body}"
    );

    let (status, body) = server
        .post(
            "/validate",
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#
                .to_vec(),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    let mut no_uid = fixture_json("scale-agent.json");
    no_uid["request"]["uid"] = Value::String(String::new());
    let (status, body) = server
        .post("/validate", serde_json::to_vec(&no_uid).unwrap())
        .await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "AdmissionReview request has no uid")
    );

    let (status, body) = server
        .post("/validate", vec![b' '; 3 * 1024 * 1024 + 1])
        .await;
    assert_eq!(status, 413);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("larger than the 3145728-byte limit"),
        "{body}"
    );

    let (status, _) = server.post("/validate", fixture("scale-person.json")).await;
    assert_eq!(status, 200);
    let (status, text) = server.get("/healthz").await;
    assert_eq!((status, text.as_str()), (200, "ok"));
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("slo_guard_bad_requests_total{reason=\"not_json\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("slo_guard_bad_requests_total{reason=\"too_large\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn metrics_count_decisions_by_policy_rule_and_verdict() {
    let server = TlsServer::start(guard()).await;
    server.post("/validate", fixture("scale-agent.json")).await;
    server.post("/validate", fixture("scale-person.json")).await;
    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("slo_guard_decisions_total{policy=\"payments/checkout\",rule=\"max-replicas\",verdict=\"denied\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("slo_guard_decisions_total{policy=\"payments/checkout\",rule=\"none\",verdict=\"allowed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("slo_guard_admission_duration_seconds_count{endpoint=\"validate\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("slo_guard_policies_loaded 1"), "{metrics}");
}

#[tokio::test]
async fn readiness_follows_the_flag() {
    let ready = TlsServer::start(guard()).await;
    assert_eq!(ready.get("/readyz").await, (200, "ready".to_string()));
    let syncing = TlsServer::start_with_readiness(guard(), false).await;
    assert_eq!(syncing.get("/readyz").await, (503, "not ready".to_string()));
    // Liveness does not depend on readiness.
    assert_eq!(syncing.get("/healthz").await.0, 200);
}
