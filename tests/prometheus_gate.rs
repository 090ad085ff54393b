//! The SLO gate against a real Prometheus (Debian's 2.42, started by
//! tests/prometheus/start.sh with backfilled scenarios), asserted through the HTTPS
//! endpoints. The test fails, never skips, when Prometheus is not installed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use slo_guard::slo::{Prometheus, PrometheusConfig, QueryError, SloSource};
use slo_guard_testkit::http::read_head;
use slo_guard_testkit::prometheus::{
    CountingProxy, Harness, delaying_proxy, guard_with, harness_dir, live, message,
    policy_manifest, rollout, scale, warnings,
};
use slo_guard_testkit::router::TlsServer;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// One harness for the whole test binary; it stops when the binary exits.
fn shared() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| Harness::start(&harness_dir(tmp(), "shared")))
}

fn tmp() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// The checkout-like policy with `onError: deny-agents` and a 2s timeout.
fn standard_policy() -> String {
    policy_manifest("deny-agents", "allow", "2s")
}

async fn server_for(policy: &str, slo: SloSource) -> TlsServer {
    TlsServer::start(guard_with(policy, slo)).await
}

async fn live_server(policy: &str) -> TlsServer {
    let (_, source) = live(&shared().url, Duration::from_secs(10));
    server_for(policy, source).await
}

/// POSTs a review to /validate and returns `response`.
async fn validate(server: &TlsServer, review: Vec<u8>) -> Value {
    let (status, body) = server.post("/validate", review).await;
    assert_eq!(status, 200, "{body}");
    body["response"].clone()
}

fn assert_allowed(response: &Value) {
    assert_eq!(response["allowed"], true, "{response:#}");
}

fn assert_denied(response: &Value, prefix: &str) -> String {
    assert_eq!(response["allowed"], false, "{response:#}");
    let message = message(response);
    assert!(
        message.starts_with(prefix),
        "expected {prefix:?}…, got:\n{message}"
    );
    message
}

/// The number after `marker` in `text`: "error budget -5.0% left" → -5.0.
fn number_after(text: &str, marker: &str) -> f64 {
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} not in {text}"))
        + marker.len();
    let digits: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {marker:?} in {text}"))
}

#[tokio::test]
async fn a_healthy_budget_admits_agent_rollouts_with_no_warning() {
    let server = live_server(&standard_policy()).await;
    let response = validate(&server, rollout("healthy", true)).await;
    assert_allowed(&response);
    assert!(warnings(&response).is_empty(), "{response:#}");
    // The mutating side admits it too, within the same figures.
    let (status, body) = server.post("/mutate", rollout("healthy", true)).await;
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"]["patch"].is_string(), "{body:#}");
}

#[tokio::test]
async fn a_low_budget_stops_agents_but_not_people() {
    let server = live_server(&standard_policy()).await;
    let response = validate(&server, rollout("budget-low", true)).await;
    let message = assert_denied(
        &response,
        "[shop/shop:error-budget] rollout of Deployment shop/budget-low blocked: error budget ",
    );
    println!("low-budget denial: {message}");
    let left = number_after(&message, "error budget ");
    assert!((9.0..=11.0).contains(&left), "{message}");
    assert!(
        message.contains("% left, below the 25% floor for agent changes (SLO 99.9% over 30d). Ask an SRE to approve decision 7f3a9c2e-1b4d-4e8a-9c6f-2d1e0b7a5c3f (kubectl annotate deployment/budget-low -n shop slo-guard.io/approve=7f3a9c2e-1b4d-4e8a-9c6f-2d1e0b7a5c3f@")
            && message.contains(" --overwrite) or wait for the budget to recover above 25%."),
        "{message}"
    );
    assert_allowed(&validate(&server, rollout("budget-low", false)).await);
}

#[tokio::test]
async fn an_exhausted_budget_stops_every_rollout() {
    let server = live_server(&standard_policy()).await;
    let response = validate(&server, rollout("exhausted", false)).await;
    let message = assert_denied(
        &response,
        "[shop/shop:error-budget] rollout of Deployment shop/exhausted blocked: error budget -",
    );
    println!("exhausted-budget denial: {message}");
    let left = number_after(&message, "error budget ");
    assert!((-6.0..=-4.0).contains(&left), "{message}");
    assert!(
        message.contains("% left, below the 0% floor for all changes (SLO 99.9% over 30d). Wait for the error budget to recover above 0%."),
        "{message}"
    );
    assert_eq!(
        response["auditAnnotations"]["rules"],
        "shop/shop:error-budget=enforce"
    );
    // No burn: exhausted is an old incident, not a current one.
    assert!(!message.contains("burn-rate"), "{message}");
}

#[tokio::test]
async fn a_fast_burn_in_the_short_windows_only_does_not_fire() {
    let harness = shared();
    let now = chrono::Utc::now().timestamp();
    assert!(
        now < harness.burn_short_only_valid_until,
        "burn-short-only is only valid for 15 minutes after the harness starts (see tests/prometheus/README.md)"
    );
    let server = live_server(&standard_policy()).await;
    let response = validate(&server, rollout("burn-short-only", true)).await;
    assert_allowed(&response);
    assert!(warnings(&response).is_empty(), "{response:#}");
}

#[tokio::test]
async fn a_fast_burn_in_both_windows_fires_with_the_burn_per_window() {
    let server = live_server(&standard_policy()).await;
    let response = validate(&server, rollout("burn-both", false)).await;
    let message = assert_denied(
        &response,
        "[shop/shop:burn-rate] rollout of Deployment shop/burn-both blocked: the error budget burns fast: ",
    );
    println!("burn denial: {message}");
    for (marker, low, high) in [
        ("burns fast: ", 23.0, 27.0),
        ("over 1h and ", 23.0, 27.0),
        ("14.4; ", 8.0, 27.0),
        ("over 6h and ", 23.0, 27.0),
    ] {
        let value = number_after(&message, marker);
        assert!(
            (low..=high).contains(&value),
            "{marker}: {value} in {message}"
        );
    }
    assert!(message.contains("x over 5m, both above 14.4"), "{message}");
    assert!(
        message.contains("x over 30m, both above 6 (SLO 99.9% over 30d)"),
        "{message}"
    );
}

#[tokio::test]
async fn a_spike_denies_rollouts_and_scale_downs_and_allows_scale_ups() {
    let server = live_server(&standard_policy()).await;
    let response = validate(&server, rollout("spike", true)).await;
    let message = assert_denied(
        &response,
        "[shop/shop:traffic-spike] rollout of Deployment shop/spike blocked: traffic spike: ",
    );
    println!("spike denial: {message}");
    let ratio = number_after(&message, "req/s, ");
    assert!((2.85..=3.15).contains(&ratio), "{message}");
    assert!(
        message.contains("at or above the spike ratio 2."),
        "{message}"
    );

    let up = validate(&server, scale("spike", 10, 15)).await;
    assert_allowed(&up);
    assert!(warnings(&up).is_empty(), "{up:#}");

    let down = validate(&server, scale("spike", 10, 8)).await;
    let message = assert_denied(
        &down,
        "[shop/shop:traffic-spike] scale of Deployment shop/spike blocked: scale-down from 10 to 8 replicas during a traffic spike: ",
    );
    println!("spike scale-down denial: {message}");
    assert!(message.contains("scaling up is allowed"), "{message}");
}

#[tokio::test]
async fn no_traffic_applies_the_policys_choice() {
    let server = live_server(&standard_policy()).await;
    let response = validate(&server, rollout("no-traffic", true)).await;
    assert_allowed(&response);
    assert_eq!(
        warnings(&response),
        vec![
            "slo-guard: shop/shop: no traffic (0.01 < 1 req/s), SLO checks skipped (onNoTraffic: allow)"
        ]
    );
    // idle: the counters never move; current traffic is 0, not NaN.
    let idle = validate(&server, rollout("idle", true)).await;
    assert_allowed(&idle);
    assert!(
        warnings(&idle)[0].contains("no traffic (0 < 1 req/s)"),
        "{idle:#}"
    );

    let strict = live_server(&policy_manifest("deny-agents", "deny", "2s")).await;
    let response = validate(&strict, rollout("no-traffic", false)).await;
    assert_denied(
        &response,
        "[shop/shop:no-traffic] rollout of Deployment shop/no-traffic blocked: no traffic: 0.01 req/s, below slo.minRequestRate 1 req/s, and slo.onNoTraffic is deny.",
    );
}

#[tokio::test]
async fn a_service_prometheus_has_never_seen_is_no_data_not_zero() {
    let server = live_server(&standard_policy()).await;
    let response = validate(&server, rollout("does-not-exist", true)).await;
    assert_denied(
        &response,
        "[shop/shop:slo-data] rollout of Deployment shop/does-not-exist blocked: SLO figures unavailable (stale data: no sample of the SLO's series in Prometheus's last 5 minutes), and prometheus.onError is deny-agents.",
    );
}

#[tokio::test]
async fn prometheus_stopped_mid_test_falls_back_to_on_error() {
    let harness = Harness::start(&harness_dir(tmp(), "stopped"));
    let (_, source) = live(&harness.url, Duration::from_millis(200));
    let server = server_for(&standard_policy(), source).await;
    assert_allowed(&validate(&server, rollout("healthy", true)).await);

    harness.stop();
    // Past the refresh interval, so nothing cached can answer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let response = validate(&server, rollout("healthy", true)).await;
    let elapsed = started.elapsed();
    let message = assert_denied(
        &response,
        "[shop/shop:slo-data] rollout of Deployment shop/healthy blocked: SLO figures unavailable (connection refused by http://127.0.0.1:",
    );
    println!("Prometheus-stopped denial: {message}");
    assert!(
        message.contains("prometheus.onError is deny-agents"),
        "{message}"
    );
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    // People pass under deny-agents, told why.
    let person = validate(&server, rollout("healthy", false)).await;
    assert_allowed(&person);
    let warning = &warnings(&person)[0];
    assert!(
        warning.starts_with("slo-guard: shop/shop allowed without SLO data (onError: deny-agents): connection refused by http://127.0.0.1:"),
        "{warning}"
    );
    assert!(warning.chars().count() <= 120, "{warning}");
}

#[tokio::test]
async fn a_slow_prometheus_is_cut_off_at_the_policy_timeout_on_both_endpoints() {
    let slow = delaying_proxy(shared().address(), Duration::from_secs(3)).await;
    let (_, source) = live(&slow, Duration::from_secs(10));
    let server = server_for(&policy_manifest("deny", "allow", "400ms"), source).await;

    let started = Instant::now();
    let response = validate(&server, rollout("healthy", false)).await;
    let elapsed = started.elapsed();
    assert_denied(
        &response,
        "[shop/shop:slo-data] rollout of Deployment shop/healthy blocked: SLO figures unavailable (no answer within the 400ms timeout), and prometheus.onError is deny.",
    );
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_millis(1500),
        "validate took {elapsed:?}; the timeout is 400ms and Prometheus answers after 3s"
    );

    let started = Instant::now();
    let (status, body) = server.post("/mutate", rollout("healthy", false)).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 200);
    // The mutating webhook leaves the denial to the validating one, and does not wait
    // on Prometheus longer either.
    assert_eq!(body["response"]["allowed"], true, "{body:#}");
    assert!(
        elapsed < Duration::from_millis(1500),
        "mutate took {elapsed:?}"
    );
}

/// A tiny HTTP server answering `/<kind>/api/v1/query` with one kind of garbage.
async fn garbage_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Ok(Some(head)) = read_head(&mut stream).await else {
                    return;
                };
                let head = String::from_utf8_lossy(&head).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let kind = path.trim_start_matches('/').split('/').next().unwrap_or("");
                let json = "application/json";
                let (status, content_type, body, declared): (&str, &str, String, Option<usize>) =
                    match kind {
                        "html" => ("200 OK", "text/html; charset=utf-8", "<html><head><title>Sign in - Example SSO</title></head><body>Please log in</body></html>".into(), None),
                        "badjson" => ("200 OK", json, r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.5"]"#.into(), None),
                        "500" => ("500 Internal Server Error", "text/plain", "upstream exploded\n".into(), None),
                        "503" => ("503 Service Unavailable", json, r#"{"status":"error","errorType":"unavailable","error":"too many concurrent queries"}"#.into(), None),
                        "warnings" => ("200 OK", json, r#"{"status":"success","warnings":["No StoreAPIs matched for this query"],"data":{"resultType":"vector","result":[{"metric":{},"value":[1,"10"]}]}}"#.into(), None),
                        "partial" => ("200 OK", json, r#"{"status":"success","data":{"resultType":"vector","res"#.into(), Some(400)),
                        _ => ("404 Not Found", "text/plain", "not found\n".into(), None),
                    };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    declared.unwrap_or(body.len())
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    address
}

#[tokio::test]
async fn garbage_from_prometheus_is_no_data_with_the_cause_named() {
    let address = garbage_server().await;
    let cases = [
        (
            "html",
            "HTTP 200 text/html instead of JSON: Sign in - Example SSO",
        ),
        ("badjson", "bad JSON from Prometheus: EOF while parsing"),
        (
            "500",
            "HTTP 500 text/plain instead of JSON: upstream exploded",
        ),
        (
            "503",
            "Prometheus error (HTTP 503, unavailable): too many concurrent queries",
        ),
        (
            "warnings",
            "degraded data, Prometheus warned: No StoreAPIs matched for this query",
        ),
        ("partial", "response cut off after"),
    ];
    for (kind, cause) in cases {
        let url = format!("http://{address}/{kind}");
        let (_, source) = live(&url, Duration::from_secs(10));
        let deny = server_for(&policy_manifest("deny", "allow", "1s"), source.clone()).await;
        let response = validate(&deny, rollout("healthy", false)).await;
        let message = assert_denied(
            &response,
            "[shop/shop:slo-data] rollout of Deployment shop/healthy blocked: SLO figures unavailable (",
        );
        assert!(message.contains(cause), "{kind}: {message}");

        let allow = server_for(&policy_manifest("allow", "allow", "1s"), source).await;
        let response = validate(&allow, rollout("healthy", true)).await;
        assert_allowed(&response);
        let warning = &warnings(&response)[0];
        assert!(
            warning.starts_with("slo-guard: shop/shop allowed without SLO data (onError: allow): "),
            "{kind}: {warning}"
        );
        assert!(warning.chars().count() <= 120, "{warning}");
    }
}

/// One request as the server saw it: its headers and its query string.
type SeenRequest = (BTreeMap<String, String>, String);

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<SeenRequest>>>);

/// An HTTPS "Prometheus" that records headers and query strings and answers `1`.
async fn recording_tls_prometheus() -> (String, Seen, tempfile::TempDir) {
    use axum::extract::{RawQuery, State};
    use axum::http::HeaderMap;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bundle =
        slo_guard::certs::generate(&slo_guard::certs::CertRequest::local(1)).expect("certs");
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("ca.crt"), &bundle.ca_cert).expect("ca");
    let seen = Seen::default();
    let app = axum::Router::new()
        .route(
            "/prefix/api/v1/query",
            axum::routing::get(
                |State(seen): State<Seen>, headers: HeaderMap, RawQuery(query): RawQuery| async move {
                    let headers = headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    seen.0.lock().unwrap().push((headers, query.unwrap_or_default()));
                    (
                        [("content-type", "application/json")],
                        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]}]}}"#,
                    )
                },
            ),
        )
        .with_state(seen.clone());
    let config = axum_server::tls_rustls::RustlsConfig::from_pem(
        bundle.tls_cert.into_bytes(),
        bundle.tls_key.into_bytes(),
    )
    .await
    .expect("tls");
    let handle: axum_server::Handle<SocketAddr> = axum_server::Handle::new();
    tokio::spawn(
        axum_server::bind_rustls("127.0.0.1:0".parse().unwrap(), config)
            .handle(handle.clone())
            .serve(app.into_make_service()),
    );
    let address = handle.listening().await.expect("listening");
    (
        format!("https://localhost:{}/prefix", address.port()),
        seen,
        dir,
    )
}

#[tokio::test]
async fn thanos_and_mimir_options_reach_the_server() {
    let (url, seen, dir) = recording_tls_prometheus().await;
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let mut config = PrometheusConfig::new(url.clone());
    config.ca_file = Some(dir.path().join("ca.crt"));
    config.headers = vec![("X-Scope-OrgID".into(), "tenant-a".into())];
    config.bearer_token_file = Some(token.clone());
    let prometheus = Prometheus::new(&config).expect("client");
    let answer = prometheus.fetch("sum(up)", Duration::from_secs(2)).await;
    assert_eq!(answer.expect("answer").value, Some(1.0));
    {
        let seen = seen.0.lock().unwrap();
        let (headers, query) = seen.last().expect("a request");
        assert_eq!(headers["x-scope-orgid"], "tenant-a");
        assert_eq!(headers["authorization"], "Bearer s3cret-token");
        assert!(query.contains("partial_response=false"), "{query}");
        assert!(query.contains("query=sum%28up%29"), "{query}");
        assert!(query.contains("timeout=2000ms"), "{query}");
    }
    // A rotated token is read on the next call.
    std::fs::write(&token, "rotated").unwrap();
    prometheus
        .fetch("sum(up)", Duration::from_secs(2))
        .await
        .expect("answer");
    assert_eq!(
        seen.0.lock().unwrap().last().unwrap().0["authorization"],
        "Bearer rotated"
    );

    let password = dir.path().join("password");
    std::fs::write(&password, "hunter2").unwrap();
    let mut basic = PrometheusConfig::new(url.clone());
    basic.ca_file = Some(dir.path().join("ca.crt"));
    basic.basic_auth_user = Some("slo-guard".into());
    basic.basic_auth_password_file = Some(password);
    basic.deny_partial_response = false;
    Prometheus::new(&basic)
        .expect("client")
        .fetch("sum(up)", Duration::from_secs(2))
        .await
        .expect("answer");
    {
        let seen = seen.0.lock().unwrap();
        let (headers, query) = seen.last().unwrap();
        // base64("slo-guard:hunter2")
        assert_eq!(headers["authorization"], "Basic c2xvLWd1YXJkOmh1bnRlcjI=");
        assert!(!query.contains("partial_response"), "{query}");
    }

    // Without the custom CA the server is not trusted, and the error says so.
    let untrusted = Prometheus::new(&PrometheusConfig::new(url)).expect("client");
    let error = untrusted
        .fetch("sum(up)", Duration::from_secs(2))
        .await
        .expect_err("an unknown CA is refused");
    assert!(
        matches!(error, QueryError::Connect { .. } | QueryError::Transport(_)),
        "{error:?}"
    );
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_admissions_share_one_query_per_promql() {
    let proxy = CountingProxy::start(shared().address()).await;
    let (prometheus, source) = live(&proxy.url, Duration::from_secs(30));
    let server = Arc::new(server_for(&standard_policy(), source).await);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            validate(&server, rollout("healthy", true)).await
        }));
    }
    for task in tasks {
        assert_allowed(&task.await.expect("task"));
    }
    let counts = proxy.counts();
    // Each admission asks 13 questions: errors and total over 30d and the four burn
    // windows, current and baseline traffic, and the freshness probe. Current traffic is
    // the same PromQL as total over 5m, so 12 distinct queries, each sent once.
    assert_eq!(counts.len(), 12, "{counts:#?}");
    assert!(counts.values().all(|&n| n == 1), "{counts:#?}");
    let stats = prometheus.stats();
    assert_eq!(stats.fetches, 12);
    assert_eq!(stats.fetches + stats.hits + stats.joined, 200 * 13);
}

#[test]
fn check_reads_live_prometheus_or_canned_answers() {
    let harness = shared();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, standard_policy()).unwrap();
    let review = dir.path().join("review.json");
    std::fs::write(&review, rollout("exhausted", false)).unwrap();
    let run = |extra: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_slo-guard"))
            .args(["check", "--policies", policy.to_str().unwrap(), "--review"])
            .arg(&review)
            .args(extra)
            .output()
            .expect("slo-guard runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["--prometheus-url", &harness.url]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("denied the request: [shop/shop:error-budget] rollout of Deployment shop/exhausted blocked: error budget -"),
        "{stderr}"
    );

    // Canned answers: the same decision offline, then a missing answer named.
    let q = |template: &str, window: &str| {
        template
            .replace("{{name}}", "exhausted")
            .replace("{{window}}", window)
    };
    let errors = r#"sum(rate(http_requests_total{job="{{name}}",code=~"5.."}[{{window}}]))"#;
    let total = r#"sum(rate(http_requests_total{job="{{name}}"}[{{window}}]))"#;
    let mut answers = String::new();
    for window in ["30d", "1h", "5m", "6h", "30m"] {
        let error_rate = if window == "30d" { 0.0105 } else { 0.002 };
        answers.push_str(&format!(
            "'{}': {error_rate}\n'{}': 10\n",
            q(errors, window),
            q(total, window)
        ));
    }
    // traffic.current is the same PromQL as total over 5m, so one answer serves both.
    answers.push_str(&format!(
        "'{}': 10\n",
        q(
            r#"sum(rate(http_requests_total{job="{{name}}"}[5m] offset 1w))"#,
            ""
        )
    ));
    let canned = dir.path().join("answers.yaml");
    std::fs::write(&canned, &answers).unwrap();
    let (code, stderr) = run(&["--prometheus-answers", canned.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("[shop/shop:error-budget] rollout of Deployment shop/exhausted blocked: error budget -5.0% left, below the 0% floor for all changes (SLO 99.9% over 30d)."),
        "{stderr}"
    );
    let partial: String = answers.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(&canned, partial).unwrap();
    // An agent under deny-agents: denied, with the missing query named in full.
    std::fs::write(&review, rollout("exhausted", true)).unwrap();
    let (code, stderr) = run(&["--prometheus-answers", canned.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(r#"[shop/shop:slo-data] rollout of Deployment shop/exhausted blocked: SLO figures unavailable (no canned answer for `sum(rate(http_requests_total{job="exhausted",code=~"5.."}[30d]))`)"#),
        "{stderr}"
    );
}

/// `slo-guard test` with `prometheus: {url: ...}`: a suite judged on the live figures of
/// the real Prometheus, the way a platform team tests against its own.
#[test]
fn a_policy_suite_asks_a_live_prometheus() {
    let dir = tempfile::tempdir().expect("suite dir");
    std::fs::write(dir.path().join("policy.yaml"), standard_policy()).expect("policy");
    std::fs::write(
        dir.path().join("budget-low.json"),
        rollout("budget-low", true),
    )
    .expect("review");
    std::fs::write(dir.path().join("healthy.json"), rollout("healthy", true)).expect("review");
    std::fs::write(
        dir.path().join("slo-guard-test.yaml"),
        format!(
            "policies: policy.yaml\nprometheus: {{url: '{}'}}\nnow: {}\ncases:\n\
             - name: low budget\n  request: {{review: budget-low.json}}\n  webhook: validate\n  expect: {{verdict: denied, rules: [error-budget], message: [\"below the 25% floor for agent changes\"]}}\n\
             - name: healthy\n  request: {{review: healthy.json}}\n  webhook: validate\n  expect: {{verdict: allowed, rules: []}}\n",
            shared().url,
            chrono::Utc::now().to_rfc3339(),
        ),
    )
    .expect("suite");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_slo-guard"))
        .arg("test")
        .arg(dir.path())
        .output()
        .expect("slo-guard test runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("2 cases, 2 passed, 0 failed"), "{stdout}");
}
