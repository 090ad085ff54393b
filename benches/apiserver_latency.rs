//! What slo-guard adds to `kubectl scale` through a real kube-apiserver: the median wall
//! time of the same command with both webhooks configured and with none, on one control
//! plane (tests/e2e/cluster.sh) and one slo-guard process.
//!
//!   cargo bench --bench apiserver_latency            # 40 scales each way
//!   cargo bench --bench apiserver_latency -- --bench --rounds 100
//!
//! Under `cargo test` (no `--bench`) it runs 3 rounds as a smoke test and asserts only
//! that every scale succeeded.

use std::time::{Duration, Instant};

use slo_guard_testkit::e2e::*;
use slo_guard_testkit::percentile;

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: latency, namespace: payments, labels: {app: latency}}
spec:
  replicas: 2
  selector: {matchLabels: {app: latency}}
  template:
    metadata: {labels: {app: latency}}
    spec:
      containers:
      - {name: app, image: "registry.example.com/payments/latency:1.0.0"}
"#;

const POLICY: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: latency, namespace: payments, labels: {slo-guard.io/policy: "true"}}
data:
  policy.yaml: |
    match: {kinds: [Deployment], names: [latency]}
    agents: {users: ["system:serviceaccount:ai-agents:*"]}
    scaling: {maxReplicas: 20, appliesTo: agents}
"#;

fn scale_times(cluster: &mut Cluster, rounds: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let replicas = format!("--replicas={}", 3 + round % 2);
        let started = Instant::now();
        let output = cluster.kubectl(&[
            "scale",
            "deploy/latency",
            "-n",
            "payments",
            &replicas,
            "--as",
            "alice@example.com",
            "--as-group",
            "sre",
        ]);
        times.push(started.elapsed());
        assert!(
            output.status.success(),
            "kubectl scale failed: {}",
            text(&output.stderr)
        );
    }
    times.sort();
    times
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(if full { 40 } else { 3 });
    let mut guarded = Guarded::start("latency");
    let cluster = &mut guarded.cluster;
    cluster.apply(POLICY);
    cluster.apply(DEPLOYMENT);
    guarded.guard().wait_for_log(
        "\"configmap\":\"payments/latency\"",
        Duration::from_secs(20),
    );
    // Interleave blocks with and without the webhooks, so drift in the machine's load
    // hits both sides alike; the first scale after each switch is discarded (it warms
    // the connection to the webhook, or the apiserver's webhook config cache).
    let webhooks = webhooks(guarded.port, &guarded.ca_bundle, "Fail");
    let cluster = &mut guarded.cluster;
    let block = 5.min(rounds);
    let (mut with, mut without) = (Vec::new(), Vec::new());
    while with.len() < rounds {
        scale_times(cluster, 1);
        with.extend(scale_times(cluster, block));
        let output = cluster.kubectl(&[
            "delete",
            "validatingwebhookconfiguration,mutatingwebhookconfiguration",
            "slo-guard-local",
        ]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        scale_times(cluster, 1);
        without.extend(scale_times(cluster, block));
        cluster.apply(&webhooks);
    }
    with.sort();
    without.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "kubectl scale through a real kube-apiserver, {rounds} rounds each (wall time of the kubectl process)"
    );
    println!(
        "  with slo-guard's webhooks   p50 {:7.1} ms  p90 {:7.1} ms",
        ms(percentile(&with, 0.5)),
        ms(percentile(&with, 0.9))
    );
    println!(
        "  without webhooks            p50 {:7.1} ms  p90 {:7.1} ms",
        ms(percentile(&without, 0.5)),
        ms(percentile(&without, 0.9))
    );
    println!(
        "  added by slo-guard (p50)    {:7.1} ms",
        ms(percentile(&with, 0.5)) - ms(percentile(&without, 0.5))
    );
}
