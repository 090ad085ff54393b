//! How slo-guard's cost grows with the cluster (issue 13, part 4): a real kube-apiserver
//! (tests/e2e/cluster.sh) holding N Deployments and P policy ConfigMaps, and a real
//! Prometheus (tests/prometheus). For each N and P, slo-guard is started afresh with
//! `--watch-configmaps` and measured:
//! - the time from start to ready (its watches have listed every policy and workload);
//! - its RSS when ready, and after the decisions (VmRSS, and the peak VmHWM);
//! - the decision latency: agent scales (the workload cache's path) and agent rollouts
//!   (policy matching and the SLO gate's queries) sent to /validate one at a time over
//!   TLS, avg, p50 and p99;
//! - the Prometheus queries per refresh: calls to Prometheus for the rollouts' distinct
//!   workloads within one refresh interval (`slo_guard_prometheus_lookups_total{result=
//!   "fetched"}`).
//!
//! Workload i is `w-<i>` in namespace `scale-<i % 10>`, labelled `group: g-<i % 1000>`.
//! Policy j lives in `scale-<j % 10>` and selects `group: g-<j>`: with 1,000 policies
//! every workload is governed by exactly one. The decisions are always about the
//! workloads of group g-0 (policy 0, present in every configuration), so the same
//! requests are judged with 1, 100 or 1,000 policies loaded.
//!
//!   cargo bench --bench scale                      # N = 10,000 and 50,000; P = 1, 100, 1,000
//!   cargo bench --bench scale -- --bench --workloads 10000 --policies 1,1000 --samples 1000
//!
//! Under `cargo test` (no `--bench`) it runs N = 200, P = 1 and 10, 40 samples, as a smoke
//! test that asserts only that every decision came back.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use slo_guard_testkit::e2e::*;
use slo_guard_testkit::prometheus::{Harness, harness_dir};

const NAMESPACES: usize = 10;
const GROUPS: usize = 1000;

struct Options {
    full: bool,
    workloads: Vec<usize>,
    policies: Vec<usize>,
    samples: usize,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let list = |flag: &str, default: &[usize]| -> Vec<usize> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_else(|| default.to_vec())
    };
    Options {
        full,
        workloads: list("--workloads", if full { &[10_000, 50_000] } else { &[200] }),
        policies: list("--policies", if full { &[1, 100, 1000] } else { &[1, 10] }),
        samples: list("--samples", if full { &[2000] } else { &[40] })[0],
    }
}

fn workload(i: usize) -> Deployment {
    let name = format!("w-{i}");
    let group = format!("g-{}", i % GROUPS);
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": format!("scale-{}", i % NAMESPACES),
                     "labels": {"app": name, "group": group}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "group": group}},
                "spec": {"containers": [{"name": "app", "image": "registry.example.com/scale/app:1.0.0"}]}
            }
        }
    }))
    .expect("a Deployment")
}

fn policy(j: usize) -> ConfigMap {
    let yaml = format!(
        r#"match: {{kinds: [Deployment], selector: {{matchLabels: {{group: g-{j}}}}}}}
agents: {{users: ["system:serviceaccount:ai-agents:*"]}}
scaling: {{maxReplicas: 50, maxStep: 5, appliesTo: agents}}
slo:
  objective: 99.9
  period: 30d
  errors: sum(rate(http_requests_total{{namespace="{{{{namespace}}}}",job="{{{{name}}}}",code=~"5.."}}[{{{{window}}}}]))
  total: sum(rate(http_requests_total{{namespace="{{{{namespace}}}}",job="{{{{name}}}}"}}[{{{{window}}}}]))
  burnRate:
    - {{long: 1h, short: 5m, factor: 14.4}}
prometheus: {{onError: deny-agents, timeout: 2s}}
"#
    );
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": format!("policy-{j}"), "namespace": format!("scale-{}", j % NAMESPACES),
                     "labels": {"slo-guard.io/policy": "true", "slo-guard.io/bench": "scale"}},
        "data": {"policy.yaml": yaml}
    }))
    .expect("a ConfigMap")
}

async fn client(cluster: &Cluster) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(cluster.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("client config");
    Client::try_from(config).expect("client")
}

/// Creates workloads `from..to`, 64 at a time; returns the creates per second.
async fn create_workloads(client: &Client, from: usize, to: usize) -> f64 {
    let started = Instant::now();
    let created = futures::stream::iter(from..to)
        .map(|i| {
            let api: Api<Deployment> =
                Api::namespaced(client.clone(), &format!("scale-{}", i % NAMESPACES));
            async move { api.create(&PostParams::default(), &workload(i)).await }
        })
        .buffer_unordered(64)
        .filter(|result| futures::future::ready(result.is_ok()))
        .count()
        .await;
    assert_eq!(created, to - from, "every Deployment was created");
    (to - from) as f64 / started.elapsed().as_secs_f64()
}

async fn set_policies(client: &Client, count: usize) {
    let all: Api<ConfigMap> = Api::all(client.clone());
    let existing = all
        .list(&ListParams::default().labels("slo-guard.io/bench=scale"))
        .await
        .expect("list policies");
    for configmap in existing.items {
        let api: Api<ConfigMap> = Api::namespaced(
            client.clone(),
            configmap.metadata.namespace.as_deref().unwrap_or_default(),
        );
        api.delete(
            configmap.metadata.name.as_deref().unwrap_or_default(),
            &DeleteParams::default(),
        )
        .await
        .expect("delete policy");
    }
    let created = futures::stream::iter(0..count)
        .map(|j| {
            let api: Api<ConfigMap> =
                Api::namespaced(client.clone(), &format!("scale-{}", j % NAMESPACES));
            async move { api.create(&PostParams::default(), &policy(j)).await }
        })
        .buffer_unordered(32)
        .filter(|result| futures::future::ready(result.is_ok()))
        .count()
        .await;
    assert_eq!(created, count, "every policy was created");
}

/// An agent's AdmissionReview for workload `i`: a scale through the subresource (its
/// labels come from slo-guard's workload cache) or a rollout of the whole object.
fn review(template: &Value, i: usize, uid: usize) -> Vec<u8> {
    let mut review = template.clone();
    let name = format!("w-{i}");
    let namespace = format!("scale-{}", i % NAMESPACES);
    let group = format!("g-{}", i % GROUPS);
    let request = &mut review["request"];
    request["uid"] = json!(format!("00000000-0000-0000-0000-{uid:012}"));
    request["name"] = json!(name);
    request["namespace"] = json!(namespace);
    for side in ["object", "oldObject"] {
        let object = &mut request[side];
        object["metadata"]["name"] = json!(name);
        object["metadata"]["namespace"] = json!(namespace);
        if object["kind"] == "Deployment" {
            let labels = json!({"app": name, "group": group});
            object["metadata"]["labels"] = labels.clone();
            object["spec"]["selector"] = json!({"matchLabels": {"app": name}});
            object["spec"]["template"]["metadata"]["labels"] = labels;
        }
    }
    serde_json::to_vec(&review).expect("JSON")
}

fn fixture(name: &str) -> Value {
    let path = root().join("tests/fixtures/captured").join(name);
    serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("fixture JSON")
}

fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or(0.0)
}

struct Latency {
    avg: Duration,
    p50: Duration,
    p99: Duration,
}

async fn judge(http: &reqwest::Client, url: &str, bodies: &[Vec<u8>]) -> Latency {
    let mut times = Vec::with_capacity(bodies.len());
    for body in bodies {
        let started = Instant::now();
        let response = http
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("slo-guard answers");
        assert!(response.status().is_success(), "{}", response.status());
        let answer: Value = response.json().await.expect("a review");
        assert!(
            answer["response"]["allowed"].is_boolean(),
            "no verdict: {answer}"
        );
        times.push(started.elapsed());
    }
    times.sort();
    let at = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    Latency {
        avg: times.iter().sum::<Duration>() / times.len() as u32,
        p50: at(0.5),
        p99: at(0.99),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = options();
    let mut cluster = Cluster::up("scale");
    for n in 0..NAMESPACES {
        assert_allowed(&cluster.kubectl(&["create", "namespace", &format!("scale-{n}")]));
    }
    let work = tempfile::tempdir().expect("work dir");
    let certs = work.path().join("certs");
    make_certs(&cluster, &certs);
    let ca = std::fs::read(certs.join("ca.crt")).expect("ca.crt");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA"))
        .no_proxy()
        .build()
        .expect("HTTP client");
    let prometheus_dir = harness_dir(work.path(), "scale");
    let prometheus = Harness::start(&prometheus_dir);
    let kube = client(&cluster).await;
    let scale_template = fixture("scale-agent.json");
    let rollout_template = fixture("deployment-image-change.json");

    println!(
        "slo-guard scale bench: {} samples per cell, decisions about group g-0 (policy 0)",
        options.samples
    );
    println!(
        "| workloads | policies | ready s | RSS ready MiB | RSS after MiB | peak MiB | scale avg/p50/p99 ms | rollout avg/p50/p99 ms | Prometheus calls per refresh (workloads) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut created = 0;
    let mut p99_by_policies: Vec<(usize, usize, Duration, Duration)> = Vec::new();
    for &workloads in &options.workloads {
        if workloads > created {
            let rate = create_workloads(&kube, created, workloads).await;
            eprintln!("created Deployments {created}..{workloads} at {rate:.0}/s");
            created = workloads;
        }
        // The governed workloads the decisions are about: group g-0.
        let governed: Vec<usize> = (0..workloads).step_by(GROUPS).collect();
        for &policies in &options.policies {
            set_policies(&kube, policies).await;
            let port = free_port();
            let started = Instant::now();
            let guard = SloGuard::start_with_env(
                &cluster,
                port,
                &certs,
                work.path()
                    .join(format!("slo-guard-{workloads}-{policies}.log")),
                &[("SLO_GUARD_PROMETHEUS_URL", prometheus.url.as_str())],
            );
            let ready = started.elapsed();
            // Ready means listed; the policy count confirms the watch saw them all.
            guard.wait_for_log(&format!("\"policies\":{policies},"), Duration::from_secs(5));
            let pid = guard.pid();
            let rss_ready = proc_kib(pid, "VmRSS:");
            let url = format!("https://127.0.0.1:{port}/validate");
            let bodies = |template: &Value, offset: usize| -> Vec<Vec<u8>> {
                (0..options.samples)
                    .map(|k| review(template, governed[k % governed.len()], offset + k))
                    .collect()
            };
            // One warm-up pass fills the SLO cache's first refresh; then the rollouts
            // are timed against cached answers, as a steady state is.
            let before = guard.metrics_text();
            judge(
                &http,
                &url,
                &bodies(&rollout_template, 0)[..governed.len().min(options.samples)],
            )
            .await;
            let after = guard.metrics_text();
            let fetched = metric(
                &after,
                "slo_guard_prometheus_lookups_total{result=\"fetched\"}",
            ) - metric(
                &before,
                "slo_guard_prometheus_lookups_total{result=\"fetched\"}",
            );
            let scale = judge(&http, &url, &bodies(&scale_template, 1_000_000)).await;
            let rollout = judge(&http, &url, &bodies(&rollout_template, 2_000_000)).await;
            let rss_after = proc_kib(pid, "VmRSS:");
            let peak = proc_kib(pid, "VmHWM:");
            println!(
                "| {workloads} | {policies} | {:.2} | {:.1} | {:.1} | {:.1} | {}/{}/{} | {}/{}/{} | {fetched:.0} ({}) |",
                ready.as_secs_f64(),
                rss_ready as f64 / 1024.0,
                rss_after as f64 / 1024.0,
                peak as f64 / 1024.0,
                ms(scale.avg),
                ms(scale.p50),
                ms(scale.p99),
                ms(rollout.avg),
                ms(rollout.p50),
                ms(rollout.p99),
                governed.len().min(options.samples),
            );
            p99_by_policies.push((workloads, policies, scale.p99, rollout.p99));
            guard.stop();
        }
    }
    for &workloads in &options.workloads {
        let cells: Vec<_> = p99_by_policies
            .iter()
            .filter(|(w, ..)| *w == workloads)
            .collect();
        if let (Some(first), Some(last)) = (cells.first(), cells.last())
            && first.1 != last.1
        {
            println!(
                "{workloads} workloads: p99 with {} policies / with {}: scale {:.2}x, rollout {:.2}x",
                last.1,
                first.1,
                last.2.as_secs_f64() / first.2.as_secs_f64(),
                last.3.as_secs_f64() / first.3.as_secs_f64()
            );
        }
    }
    if !options.full {
        println!("(smoke run: pass --bench for the full sizes)");
    }
    prometheus.stop();
}
