//! The server's life as an operator sees it, with the real binary
//! (issue 7, "Reliability and security" items 3 to 6):
//!
//! - a Secret-volume certificate rotation under load fails no request, and new
//!   connections get the new certificate;
//! - SIGTERM under load: readiness drops first, requests keep being answered during
//!   `--shutdown-delay`, in-flight requests finish after the listener closes, exit 0;
//!   every decision is a JSON log line with uid, actor, class, rules, figures, verdict;
//! - against a real kube-apiserver (tests/e2e/cluster.sh): a bad policy that bypassed the
//!   webhook leaves the last good one in force and is surfaced in the logs, in
//!   `slo_guard_policy_load_errors_total` and in an Event on the ConfigMap; denials raise
//!   Events on the objects (dry runs do not; repeats count on one Event).
//!
//! Waits are bounded hang guards only; nothing asserts how fast anything is.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use slo_guard::certs::{CertBundle, CertRequest, generate};
use slo_guard_testkit::fixtures::fixture;
use slo_guard_testkit::prometheus::StandInPrometheus;
use slo_guard_testkit::{e2e, prometheus};

fn uid_of(review: &[u8]) -> String {
    let value: Value = serde_json::from_slice(review).expect("review JSON");
    value["request"]["uid"].as_str().expect("uid").to_string()
}

/// `slo-guard serve` as a child process of this test, killed (by its pid) when dropped.
struct Serve {
    child: Child,
    log: PathBuf,
    port: u16,
    /// The operations port: /metrics, /healthz, /readyz over plain HTTP.
    ops_port: u16,
}

impl Serve {
    fn start(work: &Path, name: &str, args: &[&str]) -> Self {
        let port = slo_guard_testkit::free_port();
        let ops_port = slo_guard_testkit::free_port();
        let log = work.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_slo-guard"))
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{ops_port}")])
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("slo-guard starts");
        let serve = Self {
            child,
            log,
            port,
            ops_port,
        };
        serve.wait_for_log("\"message\":\"ready\"", Duration::from_secs(60));
        serve
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_lines(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("slo-guard never logged {needle:?}:\n{}", self.log_text());
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn ops_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ops_port)
    }

    fn terminate(&self) {
        // The shell's builtin kill: no procps needed.
        let status = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.child.id())])
            .status()
            .expect("sh runs");
        assert!(status.success(), "kill -TERM failed");
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "slo-guard did not exit within {timeout:?} (hang guard):\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn client_trusting(cas: &[&str]) -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .tls_info(true)
        .no_proxy()
        .timeout(Duration::from_secs(20));
    for ca in cas {
        builder = builder
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA PEM"));
    }
    builder
}

fn leaf_der(bundle: &CertBundle) -> Vec<u8> {
    rustls_pemfile::certs(&mut bundle.tls_cert.as_bytes())
        .next()
        .expect("a certificate")
        .expect("PEM")
        .to_vec()
}

// ---------------------------------------------------------------------------------------
// a. Certificate rotation under load
// ---------------------------------------------------------------------------------------

/// Writes one version of a `kubernetes.io/tls` Secret as the kubelet does: a timestamped
/// directory, then `..data` swapped to it with an atomic rename.
fn write_secret_version(dir: &Path, version: &str, bundle: &CertBundle) {
    let versioned = dir.join(version);
    std::fs::create_dir(&versioned).expect("version dir");
    std::fs::write(versioned.join("tls.crt"), &bundle.tls_cert).expect("tls.crt");
    std::fs::write(versioned.join("tls.key"), &bundle.tls_key).expect("tls.key");
    std::fs::write(versioned.join("ca.crt"), &bundle.ca_cert).expect("ca.crt");
    let staged = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&staged);
    symlink(version, &staged).expect("..data_tmp");
    std::fs::rename(&staged, dir.join("..data")).expect("atomic ..data swap");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    Old,
    New,
    Other,
}

#[derive(Default)]
struct Tally {
    keepalive_ok: AtomicU64,
    fresh_ok: AtomicU64,
    failures: Mutex<Vec<String>>,
    /// The certificate each new connection presented, in order.
    fresh: Mutex<Vec<Served>>,
}

/// What every request of the rotation test sends, and the two leaf certificates the
/// server may present.
struct Probe {
    url: String,
    review: Vec<u8>,
    uid: String,
    old: Vec<u8>,
    new: Vec<u8>,
}

async fn one_request(client: &reqwest::Client, probe: &Probe) -> Result<Served, String> {
    let Probe {
        url,
        review,
        uid,
        old,
        new,
    } = probe;
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(review.clone())
        .send()
        .await
        .map_err(|e| format!("send: {e:?}"))?;
    let served = match response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
    {
        Some(der) if der == old.as_slice() => Served::Old,
        Some(der) if der == new.as_slice() => Served::New,
        _ => Served::Other,
    };
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| format!("body: {e}"))?;
    if status != 200 || body["response"]["uid"] != uid.as_str() {
        return Err(format!("status {status}: {body}"));
    }
    Ok(served)
}

async fn wait_until(what: &str, timeout: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what} (hang guard {timeout:?})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_volume_rotation_under_load_fails_no_request() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let work = tempfile::tempdir().expect("work dir");
    let secret = work.path().join("serving-cert");
    std::fs::create_dir(&secret).unwrap();
    let old = generate(&CertRequest::local(1)).expect("old certificate");
    let new = generate(&CertRequest::local(1)).expect("new certificate");
    assert_ne!(old.ca_cert, new.ca_cert, "two different CAs");
    write_secret_version(&secret, "..2025_01_01_00_00_00.000000001", &old);
    for file in ["tls.crt", "tls.key", "ca.crt"] {
        symlink(format!("..data/{file}"), secret.join(file)).expect("file symlink");
    }

    let serve = Serve::start(
        work.path(),
        "rotation",
        &[
            "--tls-cert",
            secret.join("tls.crt").to_str().unwrap(),
            "--tls-key",
            secret.join("tls.key").to_str().unwrap(),
            "--cert-reload-interval",
            "1s",
        ],
    );
    let review = fixture("scale-agent.json");
    let probe = Arc::new(Probe {
        url: serve.url("/validate"),
        uid: uid_of(&review),
        review,
        old: leaf_der(&old),
        new: leaf_der(&new),
    });
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    // Bounds the run whatever happens.
    const MAX_REQUESTS: u64 = 50_000;

    let mut workers = Vec::new();
    // Keep-alive: two h2 clients (ALPN) and one HTTP/1.1 client, each reusing its
    // connection across the swap.
    for http1 in [false, false, true] {
        let mut builder = client_trusting(&[&old.ca_cert, &new.ca_cert]);
        if http1 {
            builder = builder.http1_only();
        }
        let client = builder.build().expect("client");
        let (probe, tally, stop) = (probe.clone(), tally.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Acquire)
                && tally.keepalive_ok.load(Ordering::Acquire) < MAX_REQUESTS
            {
                match one_request(&client, &probe).await {
                    Ok(_) => {
                        tally.keepalive_ok.fetch_add(1, Ordering::AcqRel);
                    }
                    Err(e) => tally
                        .failures
                        .lock()
                        .unwrap()
                        .push(format!("keep-alive: {e}")),
                }
            }
        }));
    }
    // New connections: a fresh client, hence a fresh TLS handshake, per request.
    for _ in 0..2 {
        let (probe, tally, stop) = (probe.clone(), tally.clone(), stop.clone());
        let (old_ca, new_ca) = (old.ca_cert.clone(), new.ca_cert.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Acquire)
                && tally.fresh_ok.load(Ordering::Acquire) < MAX_REQUESTS
            {
                let client = client_trusting(&[&old_ca, &new_ca])
                    .pool_max_idle_per_host(0)
                    .build()
                    .expect("client");
                match one_request(&client, &probe).await {
                    Ok(served) => {
                        tally.fresh.lock().unwrap().push(served);
                        tally.fresh_ok.fetch_add(1, Ordering::AcqRel);
                    }
                    Err(e) => tally
                        .failures
                        .lock()
                        .unwrap()
                        .push(format!("new connection: {e}")),
                }
            }
        }));
    }

    wait_until("load before the swap", Duration::from_secs(60), || {
        tally.keepalive_ok.load(Ordering::Acquire) >= 30
            && tally.fresh_ok.load(Ordering::Acquire) >= 30
    })
    .await;

    // The Secret is updated: a new version directory and an atomic ..data swap; the old
    // version directory is then removed, as the kubelet does.
    let before_swap = tally.fresh.lock().unwrap().len();
    write_secret_version(&secret, "..2025_01_01_00_05_00.000000002", &new);
    std::fs::remove_dir_all(secret.join("..2025_01_01_00_00_00.000000001")).expect("old version");
    let keepalive_at_swap = tally.keepalive_ok.load(Ordering::Acquire);

    wait_until(
        "a new connection presents the new certificate",
        Duration::from_secs(30),
        || tally.fresh.lock().unwrap().contains(&Served::New),
    )
    .await;
    let first_new = tally
        .fresh
        .lock()
        .unwrap()
        .iter()
        .position(|s| *s == Served::New)
        .unwrap();
    wait_until("load after the rotation", Duration::from_secs(60), || {
        tally.fresh.lock().unwrap().len() >= first_new + 30
            && tally.keepalive_ok.load(Ordering::Acquire) >= keepalive_at_swap + 30
    })
    .await;
    stop.store(true, Ordering::Release);
    for worker in workers {
        worker.await.expect("worker");
    }

    let failures = tally.failures.lock().unwrap().clone();
    let fresh = tally.fresh.lock().unwrap().clone();
    let (keepalive, total_fresh) = (
        tally.keepalive_ok.load(Ordering::Acquire),
        tally.fresh_ok.load(Ordering::Acquire),
    );
    println!(
        "rotation: {keepalive} keep-alive and {total_fresh} new-connection requests, {} failed; \
         new connections: {} before the swap (old certificate), first new certificate on \
         new connection #{first_new}",
        failures.len(),
        before_swap
    );
    assert!(
        failures.is_empty(),
        "{} requests failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        fresh[..before_swap].iter().all(|s| *s == Served::Old),
        "before the swap every new connection got the old certificate"
    );
    // Once the new certificate is served, every later handshake gets it: the reload is
    // one atomic switch, never a mix.
    assert!(
        fresh[first_new..].iter().all(|s| *s == Served::New),
        "a new connection got the old (or another) certificate after the new one was served: {:?}",
        &fresh[first_new..]
    );
    assert!(fresh[..first_new].iter().all(|s| *s == Served::Old));
    serve.wait_for_log("reloaded serving certificate", Duration::from_secs(5));

    // Only the new chain is served to new connections now: a client trusting only the
    // new CA connects, one trusting only the old CA is refused.
    let only_new = client_trusting(&[&new.ca_cert]).build().unwrap();
    assert_eq!(one_request(&only_new, &probe).await, Ok(Served::New));
    let only_old = client_trusting(&[&old.ca_cert]).build().unwrap();
    let refused = only_old.post(serve.url("/validate")).send().await;
    assert!(refused.is_err(), "the old certificate is still served");
}

// ---------------------------------------------------------------------------------------
// b. SIGTERM under load
// ---------------------------------------------------------------------------------------

/// A healthy Prometheus's answer (no errors, 10 req/s, fresh samples), for a stand-in
/// that answers every query after a delay: it makes every gated decision slow, so
/// requests are in flight when SIGTERM arrives.
fn healthy_figures(query: &str) -> prometheus::Sample {
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let value = if query.contains("timestamp(") {
        format!("{now}")
    } else if query.contains("code=~\"5..\"") {
        "0".to_string()
    } else {
        "10".to_string()
    };
    (format!("{now}"), value)
}

fn closes_connection(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONNECTION)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"close"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drops_readiness_first_and_finishes_in_flight_requests() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    const IN_FLIGHT: usize = 12;
    const DELAY: Duration = Duration::from_secs(6);
    let work = tempfile::tempdir().expect("work dir");
    let stand_in = StandInPrometheus::start(DELAY, healthy_figures).await;
    let policy = work.path().join("policy.yaml");
    std::fs::write(&policy, prometheus::policy_manifest("deny", "allow", "20s")).unwrap();
    let certs = work.path().join("certs");
    let mut serve = Serve::start(
        work.path(),
        "sigterm",
        &[
            "--policies",
            policy.to_str().unwrap(),
            "--prometheus-url",
            &stand_in.url,
            "--cert-dir",
            certs.to_str().unwrap(),
            "--shutdown-delay",
            "3s",
            "--shutdown-grace",
            "30s",
        ],
    );
    let ca = std::fs::read_to_string(certs.join("ca.crt")).expect("generated CA");
    let h2 = client_trusting(&[&ca]).build().unwrap();
    let http1 = client_trusting(&[&ca]).http1_only().build().unwrap();

    // In-flight load: one rollout per workload, so each asks its own 12 queries, half
    // multiplexed on one h2 connection, half on HTTP/1.1 connections of their own.
    let mut in_flight = Vec::new();
    for i in 0..IN_FLIGHT {
        let client = if i % 2 == 0 {
            h2.clone()
        } else {
            http1.clone()
        };
        let url = serve.url("/validate");
        let review = prometheus::rollout(&format!("svc-{i}"), true);
        in_flight.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .body(review)
                .send()
                .await;
            let finished = Instant::now();
            let response = match response {
                Ok(response) => response,
                Err(error) => return Err(format!("send: {error:?}")),
            };
            let status = response.status();
            let closes = closes_connection(&response);
            let body: Value = response.json().await.map_err(|e| e.to_string())?;
            Ok((status.as_u16(), body, finished, closes))
        }));
    }
    // Every request is inside slo-guard, waiting on Prometheus.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stand_in.total() < (IN_FLIGHT * 12) as u64 {
        assert!(
            Instant::now() < deadline,
            "only {} queries reached Prometheus (hang guard)",
            stand_in.total()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    serve.terminate();

    // Readiness drops first: /readyz (on the operations port) turns 503 while the server
    // still answers reviews, on a new connection as on a kept-alive one.
    let fresh = || {
        client_trusting(&[&ca])
            .http1_only()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = fresh()
            .get(serve.ops_url("/readyz"))
            .send()
            .await
            .expect("the operations port is open during --shutdown-delay")
            .status();
        if status == 503 {
            break;
        }
        assert_eq!(status, 200);
        assert!(Instant::now() < deadline, "/readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ungoverned = fixture("scale-person.json");
    let ungoverned_uid = uid_of(&ungoverned);
    for client in [fresh(), h2.clone()] {
        let response = client
            .post(serve.url("/validate"))
            .header("content-type", "application/json")
            .body(ungoverned.clone())
            .send()
            .await
            .expect("requests are still answered while not ready");
        assert_eq!(response.status(), 200);
        // Once draining, HTTP/1 answers tell the client to dial again (elsewhere): the
        // apiserver keeps a connection to a replica for as long as it uses it.
        assert_eq!(
            closes_connection(&response),
            response.version() == reqwest::Version::HTTP_11,
            "{:?}: {:?}",
            response.version(),
            response.headers()
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["response"]["uid"], ungoverned_uid.as_str());
        assert_eq!(body["response"]["allowed"], true);
    }
    assert!(
        in_flight.iter().all(|task| !task.is_finished()),
        "the slow requests were still in flight when readiness dropped"
    );

    // After the delay the listener closes; the in-flight requests go on.
    let deadline = Instant::now() + Duration::from_secs(15);
    let closed = loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", serve.port))
            .await
            .is_err()
        {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "the listener never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let mut finished_after_close = 0;
    for (i, task) in in_flight.into_iter().enumerate() {
        let (status, body, finished, closes) = task
            .await
            .expect("task")
            .unwrap_or_else(|e| panic!("an in-flight request failed: {e}"));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["response"]["allowed"], true, "{body:#}");
        assert!(
            body["response"]["warnings"]
                .as_array()
                .is_none_or(|w| w.is_empty()),
            "answered with real figures: {body:#}"
        );
        if finished > closed {
            finished_after_close += 1;
        }
        // Answered after SIGTERM: the HTTP/1.1 ones (odd) close their connection.
        assert_eq!(closes, i % 2 == 1, "request {i}");
    }
    assert!(
        finished_after_close > 0,
        "in-flight requests were answered after the listener closed (graceful drain)"
    );
    let status = serve.wait_exit(Duration::from_secs(40));
    assert!(status.success(), "exit status {status:?}");

    // The order of the log: not ready, then stopped.
    let log = serve.log_text();
    let draining = log
        .find("shutting down: reporting not ready, then draining")
        .expect("draining logged");
    let stopped = log.find("\"message\":\"stopped\"").expect("stopped logged");
    assert!(draining < stopped);

    // Audit trail: one JSON decision line per review, with uid, actor, class, rules,
    // figures and verdict; gated ones carry the figures seen.
    let decisions: Vec<Value> = serve
        .log_lines()
        .into_iter()
        .filter(|line| line["message"] == "decision")
        .collect();
    assert_eq!(
        decisions.len(),
        IN_FLIGHT + 2,
        "one decision line per review"
    );
    for line in &decisions {
        for key in [
            "uid", "actor", "class", "rules", "figures", "verdict", "object", "user",
        ] {
            assert!(line.get(key).is_some(), "{key} missing in {line}");
        }
        assert!(
            !line["uid"].as_str().unwrap_or_default().is_empty(),
            "{line}"
        );
    }
    for i in 0..IN_FLIGHT {
        let object = format!("Deployment shop/svc-{i}");
        let line = decisions
            .iter()
            .find(|l| l["object"] == object.as_str())
            .unwrap_or_else(|| panic!("no decision line for {object}"));
        assert_eq!(line["actor"], "agent");
        assert_eq!(line["class"], "rollout");
        assert_eq!(line["verdict"], "allowed");
        assert_eq!(line["rules"], "");
        let figures = line["figures"].as_str().unwrap();
        assert!(
            figures.starts_with("shop/shop: budget 100.0% (30d); burn ")
                && figures.contains("traffic 10/10 req/s (1x)"),
            "{figures}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// c, d. In a cluster: a bad policy while running, and denial Events
// ---------------------------------------------------------------------------------------

fn caps_policy(max_replicas: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: checkout-caps
  namespace: payments
  labels: {{slo-guard.io/policy: "true"}}
data:
  policy.yaml: |
    match: {{kinds: [Deployment], names: [checkout]}}
    agents: {{users: ["system:serviceaccount:ai-agents:*"]}}
    scaling: {{maxReplicas: {max_replicas}}}
"#
    )
}

fn checkout() -> String {
    e2e::agent_deployment("checkout", 2, "d-lifecycle-0001", "e2e: scale for load")
}

const CHECKOUT_HPA: &str = r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: checkout-hpa
  namespace: payments
  annotations:
    slo-guard.io/decision-id: d-lifecycle-0002
    slo-guard.io/reason: "e2e: autoscale for load"
    slo-guard.io/confidence: "0.9"
    slo-guard.io/action: scale
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: checkout}
  minReplicas: 2
  maxReplicas: 8
"#;

/// Events (core/v1 view) on `name` in payments with `reason`.
fn events_on(cluster: &mut e2e::Cluster, kind: &str, name: &str, reason: &str) -> Vec<Value> {
    let selector = format!("involvedObject.kind={kind},involvedObject.name={name},reason={reason}");
    let output = cluster.kubectl(&[
        "get",
        "events",
        "-n",
        "payments",
        "--field-selector",
        &selector,
        "-o",
        "json",
    ]);
    assert!(output.status.success(), "{}", e2e::text(&output.stderr));
    let list: Value = serde_json::from_slice(&output.stdout).expect("event list");
    list["items"].as_array().cloned().unwrap_or_default()
}

fn wait_for_event(
    cluster: &mut e2e::Cluster,
    kind: &str,
    name: &str,
    reason: &str,
    note: &str,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = events_on(cluster, kind, name, reason);
        if let Some(event) = events
            .iter()
            .find(|e| e["message"].as_str().is_some_and(|m| m.contains(note)))
        {
            return event.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {reason} Event on {kind} {name} with {note:?}: {events:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn metrics(guarded: &e2e::Guarded) -> String {
    guarded.guard().metrics_text()
}

fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

#[test]
fn in_a_cluster_a_bad_policy_keeps_the_last_good_one_and_denials_raise_events() {
    use slo_guard_testkit::e2e::{AGENT, assert_allowed, assert_denied, text, webhooks};
    let mut guarded = e2e::Guarded::start("lifecycle");
    let scale = |replicas: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "scale",
            "deploy/checkout",
            "-n",
            "payments",
            &format!("--replicas={replicas}"),
            "--as",
            AGENT,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let run = |cluster: &mut e2e::Cluster, args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cluster.kubectl(&args)
    };

    // A good policy, through the webhook, and the workload it governs.
    guarded.cluster.apply(&caps_policy("5"));
    guarded.guard().wait_for_log(
        "\"configmap\":\"payments/checkout-caps\"",
        Duration::from_secs(20),
    );
    guarded.cluster.apply(&checkout());
    let output = guarded.cluster.kubectl(&[
        "get",
        "deploy/checkout",
        "-n",
        "payments",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let checkout_uid = text(&output.stdout);
    assert!(!checkout_uid.is_empty());

    // --- d. Denials raise an Event on the object; dry runs do not.
    let cap = "[payments/checkout-caps:max-replicas] scale of Deployment payments/checkout blocked: 8 replicas requested, above the cap of 5";
    assert_denied(
        &run(&mut guarded.cluster, scale("7", &["--dry-run=server"])),
        "[payments/checkout-caps:max-replicas]",
    );
    assert_denied(&run(&mut guarded.cluster, scale("8", &[])), cap);
    let event = wait_for_event(
        &mut guarded.cluster,
        "Deployment",
        "checkout",
        "Denied",
        cap,
    );
    println!("denial Event: {event:#}");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reportingComponent"], "slo-guard.io/slo-guard");
    assert_eq!(event["action"], "Scale");
    assert_eq!(event["involvedObject"]["uid"], checkout_uid.as_str());
    assert_eq!(event["involvedObject"]["apiVersion"], "apps/v1");
    let note = event["message"].as_str().unwrap();
    assert!(
        note.starts_with(&format!("By {AGENT} (agent): {cap}")),
        "{note}"
    );
    // The dry run was judged before the real request and its Event would have been sent
    // first: it has none.
    let denied = events_on(&mut guarded.cluster, "Deployment", "checkout", "Denied");
    assert!(
        denied.iter().all(|e| !e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("7 replicas")),
        "a dry run raised an Event: {denied:#?}"
    );

    // An agent's HPA above the cap: the Event is on the HPA it wrote, related to the
    // Deployment the HPA scales.
    let output = guarded
        .cluster
        .kubectl_with_stdin(&["apply", "-f", "-", "--as", AGENT], Some(CHECKOUT_HPA));
    assert_denied(&output, "[payments/checkout-caps:max-replicas]");
    let event = wait_for_event(
        &mut guarded.cluster,
        "HorizontalPodAutoscaler",
        "checkout-hpa",
        "Denied",
        "[payments/checkout-caps:max-replicas]",
    );
    println!("HPA denial Event: {event:#}");
    assert_eq!(event["involvedObject"]["apiVersion"], "autoscaling/v2");
    assert_eq!(event["action"], "Autoscaling");
    assert_eq!(event["related"]["kind"], "Deployment");
    assert_eq!(event["related"]["name"], "checkout");
    assert_eq!(event["related"]["uid"], checkout_uid.as_str());

    // A bad version applied through the webhook is denied, and the denial is an Event on
    // the ConfigMap too.
    let bad = caps_policy("\"twenty\"");
    let output = guarded
        .cluster
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&bad));
    assert_denied(&output, "[payments/checkout-caps:policy-schema]");
    wait_for_event(
        &mut guarded.cluster,
        "ConfigMap",
        "checkout-caps",
        "Denied",
        "[payments/checkout-caps:policy-schema]",
    );

    // --- c. The bad version reaches the running server past the webhook.
    let output = guarded.cluster.kubectl(&[
        "delete",
        "validatingwebhookconfiguration",
        "slo-guard-local",
    ]);
    assert_allowed(&output);
    guarded.cluster.apply(&bad);
    guarded
        .guard()
        .wait_for_log("\"message\":\"policy rejected\"", Duration::from_secs(20));
    let webhook_config = webhooks(guarded.port, &guarded.ca_bundle, "Fail");
    guarded.cluster.apply(&webhook_config);

    // The last good version stays in force: the agent is still capped at 5.
    assert_denied(&run(&mut guarded.cluster, scale("8", &[])), cap);

    // Logs: the error, naming the ConfigMap and the field, and that the old version stays.
    let rejected: Vec<Value> = guarded
        .guard()
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "policy rejected")
        .collect();
    assert_eq!(rejected.len(), 1, "{rejected:#?}");
    assert_eq!(rejected[0]["configmap"], "payments/checkout-caps");
    assert_eq!(rejected[0]["kept_previous"], true);
    assert_eq!(rejected[0]["level"], "ERROR");
    assert!(
        rejected[0]["error"]
            .as_str()
            .unwrap()
            .contains("field `scaling.maxReplicas`"),
        "{}",
        rejected[0]
    );

    // Metrics.
    let text_metrics = metrics(&guarded);
    assert_eq!(
        metric_value(
            &text_metrics,
            "slo_guard_policy_load_errors_total{configmap=\"payments/checkout-caps\"}"
        ),
        Some(1.0),
        "{text_metrics}"
    );
    assert_eq!(
        metric_value(&text_metrics, "slo_guard_policies_rejected"),
        Some(1.0)
    );

    // An Event on the ConfigMap, with the error.
    let event = wait_for_event(
        &mut guarded.cluster,
        "ConfigMap",
        "checkout-caps",
        "PolicyRejected",
        "field `scaling.maxReplicas`",
    );
    println!("policy Event: {event:#}");
    assert_eq!(event["type"], "Warning");
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .contains("The last good version stays in force."),
        "{event}"
    );
    let configmap_uid = text(
        &guarded
            .cluster
            .kubectl(&[
                "get",
                "configmap/checkout-caps",
                "-n",
                "payments",
                "-o",
                "jsonpath={.metadata.uid}",
            ])
            .stdout,
    );
    assert_eq!(event["involvedObject"]["uid"], configmap_uid.as_str());

    // The same denial again counts on the first Event instead of adding one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let same: Vec<Value> = events_on(&mut guarded.cluster, "Deployment", "checkout", "Denied")
            .into_iter()
            .filter(|e| e["message"].as_str().is_some_and(|m| m.contains(cap)))
            .collect();
        assert_eq!(same.len(), 1, "{same:#?}");
        if same[0]["series"]["count"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "repeat not counted: {same:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Counted once the API server has answered slo-guard, a moment after the Event is
    // visible to kubectl.
    let expected = [
        (
            "slo_guard_events_total{reason=\"Denied\",result=\"created\"}",
            3.0,
        ),
        (
            "slo_guard_events_total{reason=\"Denied\",result=\"updated\"}",
            1.0,
        ),
        (
            "slo_guard_events_total{reason=\"PolicyRejected\",result=\"created\"}",
            1.0,
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text_metrics = metrics(&guarded);
        let seen: Vec<Option<f64>> = expected
            .iter()
            .map(|(series, _)| metric_value(&text_metrics, series))
            .collect();
        if seen
            .iter()
            .zip(&expected)
            .all(|(seen, (_, want))| *seen == Some(*want))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Event counters {seen:?}, expected {expected:?}:\n{text_metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A fixed version replaces the last good one, through the webhook as usual.
    guarded.cluster.apply(&caps_policy("10"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = run(&mut guarded.cluster, scale("8", &[]));
        if output.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fixed policy never took over: {}",
            text(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        metric_value(&metrics(&guarded), "slo_guard_policies_rejected"),
        Some(0.0)
    );

    // An agent approving its own decision is denied by the mutating webhook, which
    // answers first; that denial is an Event too.
    let output = guarded.cluster.kubectl(&[
        "annotate",
        "deploy/checkout",
        "-n",
        "payments",
        "slo-guard.io/approve=d-lifecycle-0001",
        "--as",
        AGENT,
    ]);
    let stderr = assert_denied(&output, "[payments/checkout-caps:self-approval]");
    assert!(
        stderr.contains("\"mutate.slo-guard.io\" denied"),
        "{stderr}"
    );
    wait_for_event(
        &mut guarded.cluster,
        "Deployment",
        "checkout",
        "Denied",
        &format!("By {AGENT} (agent): [payments/checkout-caps:self-approval]"),
    );
}

/// RBAC that lets the agent write ConfigMaps and delete HPAs in payments, as a careless
/// cluster might: slo-guard must still keep it from its guardrails.
const AGENT_CONFIGMAP_RBAC: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: ai-agent-configmaps, namespace: payments}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: ai-agent-configmaps, namespace: payments}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: ai-agent-configmaps}
subjects:
- {kind: ServiceAccount, name: fixer, namespace: ai-agents}
"#;

#[test]
fn no_agent_can_remove_a_guardrail_whatever_rbac_allows() {
    use slo_guard_testkit::e2e::{AGENT, assert_allowed, assert_denied};
    let mut guarded = e2e::Guarded::start("policy-guard");
    guarded.cluster.apply(AGENT_CONFIGMAP_RBAC);
    guarded.cluster.apply(&caps_policy("5"));
    guarded.guard().wait_for_log(
        "\"configmap\":\"payments/checkout-caps\"",
        Duration::from_secs(20),
    );
    let denial = "[payments/checkout-caps:policy-change] policy ConfigMap payments/checkout-caps not changed: agents cannot create, change, park or delete slo-guard policies";
    let as_agent = |args: &[&str]| -> Vec<String> {
        args.iter()
            .map(|s| s.to_string())
            .chain(["--as".to_string(), AGENT.to_string()])
            .collect()
    };
    let attempts: [(&str, Vec<String>, Option<String>); 4] = [
        (
            "raise the cap",
            as_agent(&["apply", "-f", "-"]),
            Some(caps_policy("50")),
        ),
        (
            "park it",
            as_agent(&[
                "label",
                "configmap/checkout-caps",
                "-n",
                "payments",
                "slo-guard.io/policy=false",
                "--overwrite",
            ]),
            None,
        ),
        (
            "unlabel it",
            as_agent(&[
                "label",
                "configmap/checkout-caps",
                "-n",
                "payments",
                "slo-guard.io/policy-",
            ]),
            None,
        ),
        (
            "delete it",
            as_agent(&["delete", "configmap/checkout-caps", "-n", "payments"]),
            None,
        ),
    ];
    for (what, args, stdin) in attempts {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = guarded.cluster.kubectl_with_stdin(&args, stdin.as_deref());
        println!(
            "agent tries to {what}: {}",
            e2e::text(&output.stderr).trim()
        );
        assert_denied(&output, denial);
    }
    // Still there, as it was.
    let output = guarded.cluster.kubectl(&[
        "get",
        "configmap/checkout-caps",
        "-n",
        "payments",
        "-o",
        "jsonpath={.metadata.labels.slo-guard\\.io/policy} {.data.policy\\.yaml}",
    ]);
    let stored = e2e::text(&output.stdout);
    assert!(
        stored.starts_with("true ") && stored.contains("maxReplicas: 5"),
        "{stored}"
    );

    // Deleting an HPA is a `delete` too, which agents.forbidden lists by default.
    guarded.cluster.apply(&checkout());
    guarded
        .cluster
        .apply(&CHECKOUT_HPA.replace("maxReplicas: 8", "maxReplicas: 4"));
    let output = guarded.cluster.kubectl(&[
        "delete",
        "hpa/checkout-hpa",
        "-n",
        "payments",
        "--as",
        AGENT,
    ]);
    println!(
        "agent tries to delete the HPA: {}",
        e2e::text(&output.stderr).trim()
    );
    assert_denied(
        &output,
        "[payments/checkout-caps:forbidden-action] delete of HorizontalPodAutoscaler",
    );
    assert_allowed(
        &guarded
            .cluster
            .kubectl(&["delete", "hpa/checkout-hpa", "-n", "payments"]),
    );

    // A person parks the policy and deletes it.
    assert_allowed(&guarded.cluster.kubectl(&[
        "label",
        "configmap/checkout-caps",
        "-n",
        "payments",
        "slo-guard.io/policy=false",
        "--overwrite",
    ]));
    assert_allowed(&guarded.cluster.kubectl(&[
        "delete",
        "configmap/checkout-caps",
        "-n",
        "payments",
    ]));
}
