//! Prometheus for the tests: the real-Prometheus harness (tests/prometheus), a policy over
//! its scenarios, AdmissionReviews for them, the proxies the tests put in front of it
//! (counting, delaying), and a stand-in that answers every query without Prometheus.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use slo_guard::guard::Guard;
use slo_guard::metrics::Metrics;
use slo_guard::slo::{Prometheus, PrometheusConfig, SloSource};
use slo_guard::store::{PolicyStore, StoreEvent, parse_manifest_text};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::fixtures::fixture_json;
use crate::http::{content_length, query_param, read_head};
use crate::root;

/// A running harness Prometheus (see tests/prometheus/README.md).
pub struct Harness {
    /// `http://IP:PORT` of its HTTP API.
    pub url: String,
    /// Its data and pid folder.
    pub dir: PathBuf,
    /// The Unix time the scenario data is written relative to.
    pub anchor: i64,
    /// Until when (Unix time) the burn-short-only scenario still burns only its short
    /// windows.
    pub burn_short_only_valid_until: i64,
}

impl Harness {
    /// Starts Prometheus with the scenario data in `dir`. It stops when this process
    /// exits (`--parent-pid`). Fails loudly, never skips, when Prometheus is missing.
    pub fn start(dir: &Path) -> Harness {
        let script = root().join("tests/prometheus/start.sh");
        let output = Command::new(&script)
            .arg(dir)
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "the Prometheus harness did not start (exit {:?}). Install Prometheus with \
             `apt-get update && apt-get install -y --no-install-recommends prometheus`.\n{stderr}",
            output.status.code()
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let env: BTreeMap<&str, &str> = stdout
            .lines()
            .filter_map(|line| line.split_once('='))
            .collect();
        let number = |key: &str| -> i64 {
            env.get(key)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("harness printed no {key}: {stdout}"))
        };
        Harness {
            url: env
                .get("PROM_URL")
                .unwrap_or_else(|| panic!("harness printed no PROM_URL: {stdout}"))
                .to_string(),
            dir: dir.to_path_buf(),
            anchor: number("PROM_ANCHOR"),
            burn_short_only_valid_until: number("PROM_BURN_SHORT_ONLY_VALID_UNTIL"),
        }
    }

    /// Stops it (tests/prometheus/stop.sh).
    pub fn stop(&self) {
        let status = Command::new(root().join("tests/prometheus/stop.sh"))
            .arg(&self.dir)
            .status()
            .expect("stop.sh runs");
        assert!(status.success(), "stop.sh failed");
    }

    /// Its address, from its URL.
    pub fn address(&self) -> SocketAddr {
        self.url
            .trim_start_matches("http://")
            .parse()
            .expect("PROM_URL is http://IP:PORT")
    }
}

/// A fresh directory for one harness under Cargo's target tmp dir. Directories left by
/// earlier runs whose Prometheus is gone are removed first, so runs do not pile up.
pub fn harness_dir(tmp_root: &Path, name: &str) -> PathBuf {
    let base = tmp_root.join("prometheus-harness");
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let pid_alive = entry
                .file_name()
                .to_str()
                .and_then(|n| n.rsplit('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !pid_alive {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("harness dir");
    dir
}

/// The policy the tests judge with: every Deployment in namespace `shop`, its queries
/// templated with `{{name}}`, so a workload named after a scenario reads that scenario.
pub fn policy_manifest(on_error: &str, on_no_traffic: &str, timeout: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: shop, namespace: shop, labels: {{slo-guard.io/policy: "true"}}}}
data:
  policy.yaml: |
    match: {{kinds: [Deployment]}}
    agents: {{users: ["system:serviceaccount:ai-agents:*"]}}
    slo:
      objective: 99.9
      period: 30d
      errors: sum(rate(http_requests_total{{job="{{{{name}}}}",code=~"5.."}}[{{{{window}}}}]))
      total:  sum(rate(http_requests_total{{job="{{{{name}}}}"}}[{{{{window}}}}]))
      minRequestRate: 1
      onNoTraffic: {on_no_traffic}
      budget: {{freezeBelow: 0.0, agentFreezeBelow: 0.25}}
      burnRate:
        - {{long: 1h, short: 5m, factor: 14.4}}
        - {{long: 6h, short: 30m, factor: 6}}
    traffic:
      current:  sum(rate(http_requests_total{{job="{{{{name}}}}"}}[5m]))
      baseline: sum(rate(http_requests_total{{job="{{{{name}}}}"}}[5m] offset 1w))
      spikeRatio: 2.0
    prometheus: {{onError: {on_error}, timeout: {timeout}, maxStaleness: 2m}}
"#
    )
}

/// A guard with one policy manifest and an SLO source.
pub fn guard_with(policy: &str, slo: SloSource) -> Guard {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = PolicyStore::new("slo-guard");
    let documents =
        parse_manifest_text(Path::new("test-policy.yaml"), policy, "default").expect("policy");
    for event in store.replace_all(None, &documents) {
        assert!(matches!(event, StoreEvent::Loaded { .. }), "{event:?}");
    }
    Guard::new(Arc::new(store), Arc::new(()), Arc::new(Metrics::new())).with_slo(slo)
}

/// A live Prometheus source at `url` refreshed every `refresh`, and its client.
pub fn live(url: &str, refresh: Duration) -> (Arc<Prometheus>, SloSource) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = PrometheusConfig::new(url);
    config.refresh_interval = refresh;
    let prometheus = Arc::new(Prometheus::new(&config).expect("client"));
    (prometheus.clone(), SloSource::Live(prometheus))
}

fn retarget(review: &mut Value, workload: &str) {
    let request = &mut review["request"];
    request["namespace"] = Value::from("shop");
    request["name"] = Value::from(workload);
    for side in ["object", "oldObject"] {
        if request[side].is_object() {
            request[side]["metadata"]["namespace"] = Value::from("shop");
            request[side]["metadata"]["name"] = Value::from(workload);
        }
    }
}

fn as_person(review: &mut Value) {
    review["request"]["userInfo"] = serde_json::json!({
        "username": "alice@example.com",
        "groups": ["sre", "system:authenticated"],
    });
}

/// An image change of Deployment shop/`workload`, captured from a real apiserver: by
/// the agent (with its full decision context) or by a person.
pub fn rollout(workload: &str, by_agent: bool) -> Vec<u8> {
    let mut review = fixture_json("deployment-image-change.json");
    retarget(&mut review, workload);
    if !by_agent {
        as_person(&mut review);
    }
    serde_json::to_vec(&review).expect("JSON")
}

/// A person's `kubectl scale` of Deployment shop/`workload` from `old` to `new`.
pub fn scale(workload: &str, old: u32, new: u32) -> Vec<u8> {
    let mut review = fixture_json("scale-person.json");
    retarget(&mut review, workload);
    review["request"]["oldObject"]["spec"]["replicas"] = Value::from(old);
    review["request"]["object"]["spec"]["replicas"] = Value::from(new);
    serde_json::to_vec(&review).expect("JSON")
}

/// Queries seen, by PromQL, shared with the task that sees them.
type QueryCounts = Arc<Mutex<BTreeMap<String, u64>>>;

/// Queries seen, all together, shared with the task that sees them.
type QueryTotal = Arc<AtomicU64>;

/// A listener on a free loopback port, and its `http://` URL.
async fn loopback_listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    (listener, format!("http://{address}"))
}

/// An HTTP proxy in front of Prometheus that counts each `/api/v1/query` by its PromQL,
/// to prove how many queries reached Prometheus.
pub struct CountingProxy {
    /// `http://IP:PORT` to give slo-guard instead of Prometheus's.
    pub url: String,
    counts: QueryCounts,
    total: QueryTotal,
}

impl CountingProxy {
    /// Listens on a loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let (listener, url) = loopback_listener().await;
        let (counts, total) = <(QueryCounts, QueryTotal)>::default();
        let (counts_task, total_task) = (counts.clone(), total.clone());
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let (counts, total) = (counts_task.clone(), total_task.clone());
                tokio::spawn(async move {
                    let _ = forward_counting(inbound, target, counts, total).await;
                });
            }
        });
        Self { url, counts, total }
    }

    /// Queries seen so far, by PromQL.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().expect("counts").clone()
    }

    /// Queries seen so far, all together.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    /// Forgets the queries seen so far.
    pub fn reset(&self) {
        self.counts.lock().expect("counts").clear();
        self.total.store(0, Ordering::SeqCst);
    }
}

/// Forwards HTTP/1.1 requests on one connection, one at a time, counting queries. The
/// client (reqwest) sends GETs without bodies; responses are relayed by Content-Length.
async fn forward_counting(
    mut inbound: TcpStream,
    target: SocketAddr,
    counts: QueryCounts,
    total: QueryTotal,
) -> std::io::Result<()> {
    let mut outbound = TcpStream::connect(target).await?;
    loop {
        let Some(head) = read_head(&mut inbound).await? else {
            return Ok(());
        };
        if let Some(query) = query_param(&head, "query") {
            total.fetch_add(1, Ordering::SeqCst);
            *counts.lock().expect("counts").entry(query).or_insert(0) += 1;
        }
        outbound.write_all(&head).await?;
        let Some(response_head) = read_head(&mut outbound).await? else {
            return Ok(());
        };
        let length = content_length(&response_head).unwrap_or(0);
        let mut body = vec![0u8; length];
        outbound.read_exact(&mut body).await?;
        inbound.write_all(&response_head).await?;
        inbound.write_all(&body).await?;
    }
}

/// A TCP proxy that holds each connection for `delay` before connecting it through:
/// Prometheus made slow, without touching Prometheus.
pub async fn delaying_proxy(target: SocketAddr, delay: Duration) -> String {
    let (listener, url) = loopback_listener().await;
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    url
}

/// The denial message of an AdmissionReview response (empty when allowed).
pub fn message(response: &serde_json::Value) -> String {
    response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The warnings of an AdmissionReview response.
pub fn warnings(response: &serde_json::Value) -> Vec<String> {
    response["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A stand-in Prometheus: answers every instant query, GET or POSTed form, after `delay`
/// with one sample, and counts the queries it is asked by PromQL. For tests that need
/// slo-guard to reach a Prometheus, but not the figures of a real one.
pub struct StandInPrometheus {
    /// `http://IP:PORT` to give slo-guard as its Prometheus.
    pub url: String,
    counts: QueryCounts,
    total: QueryTotal,
}

/// What a [`StandInPrometheus`] answers a query with: the sample's time and its value,
/// both as the JSON answer writes them (the time bare, the value quoted).
pub type Sample = (String, String);

impl StandInPrometheus {
    /// Listens on a loopback port; `answer` gives each query's sample.
    pub async fn start(delay: Duration, answer: fn(&str) -> Sample) -> Self {
        let (listener, url) = loopback_listener().await;
        let (counts, total) = <(QueryCounts, QueryTotal)>::default();
        let (counts_task, total_task) = (counts.clone(), total.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (counts, total) = (counts_task.clone(), total_task.clone());
                tokio::spawn(answer_queries(stream, delay, answer, counts, total));
            }
        });
        Self { url, counts, total }
    }

    /// The queries asked since the last `take`, by PromQL; forgets them.
    pub fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.counts.lock().expect("counts"))
    }

    /// Queries asked so far, all together (`take` does not reset it).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Acquire)
    }
}

/// Answers the queries on one connection, one at a time, until the client closes it.
async fn answer_queries(
    mut stream: TcpStream,
    delay: Duration,
    answer: fn(&str) -> Sample,
    counts: QueryCounts,
    total: QueryTotal,
) {
    while let Ok(Some(head)) = read_head(&mut stream).await {
        let mut query = query_param(&head, "query");
        if query.is_none() {
            // A POSTed form: the query is in the body.
            let mut body = vec![0u8; content_length(&head).unwrap_or(0)];
            if stream.read_exact(&mut body).await.is_err() {
                return;
            }
            let line = format!("POST /?{} HTTP/1.1\r\n", String::from_utf8_lossy(&body));
            query = query_param(line.as_bytes(), "query");
        }
        let query = query.unwrap_or_default();
        *counts
            .lock()
            .expect("counts")
            .entry(query.clone())
            .or_insert(0) += 1;
        total.fetch_add(1, Ordering::AcqRel);
        tokio::time::sleep(delay).await;
        let (at, value) = answer(&query);
        let body = format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[{at},"{value}"]}}]}}}}"#
        );
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
