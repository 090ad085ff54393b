//! Storm benchmark: 1,000 concurrent admissions of one workload against a real
//! Prometheus must cost one Prometheus query per distinct PromQL per refresh interval.
//! Also measures what a cache miss adds to an admission against the time Prometheus
//! takes to answer the same queries.
//!
//!     cargo bench --bench storm
//!
//! Needs Debian's `prometheus` (tests/prometheus/README.md); fails, never skips, without
//! it. Under `cargo test --all-targets` it runs a small smoke version of the same checks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slo_guard::guard::{Endpoint, Guard};
use slo_guard::slo::{Prometheus, SloSource};
use slo_guard_testkit::percentile;
use slo_guard_testkit::prometheus::{
    CountingProxy, Harness, guard_with, harness_dir, live, policy_manifest, rollout,
};
use slo_guard_testkit::router::TlsServer;

struct Sizes {
    storm: usize,
    samples: usize,
    hits: usize,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = if full {
        Sizes {
            storm: 1000,
            samples: 200,
            hits: 5000,
        }
    } else {
        Sizes {
            storm: 100,
            samples: 10,
            hits: 100,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(&sizes, full));
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn summary(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let (p50, p90, p99) = (
        percentile(&samples, 0.5),
        percentile(&samples, 0.9),
        percentile(&samples, 0.99),
    );
    println!(
        "  {name:<44} n={:<5} p50 {:>10}  p90 {:>10}  p99 {:>10}  max {:>10}",
        samples.len(),
        ms(p50),
        ms(p90),
        ms(p99),
        ms(*samples.last().unwrap_or(&Duration::ZERO))
    );
    (p50, p90)
}

/// `prometheus_http_requests_total{handler="/api/v1/query"}`, summed over codes, read
/// from Prometheus's own /metrics: the count at Prometheus itself.
async fn prometheus_query_count(url: &str) -> u64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .filter(|l| {
            l.starts_with("prometheus_http_requests_total{")
                && l.contains("handler=\"/api/v1/query\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn check_storm(name: &str, counts: &BTreeMap<String, u64>, at_prometheus: u64, expected: usize) {
    let total: u64 = counts.values().sum();
    println!(
        "  {name}: {} distinct PromQL, {total} queries at the counting proxy, {at_prometheus} at Prometheus (prometheus_http_requests_total)",
        counts.len()
    );
    assert_eq!(counts.len(), expected, "{counts:#?}");
    assert!(
        counts.values().all(|&n| n == 1),
        "a query was sent more than once: {counts:#?}"
    );
    assert_eq!(
        at_prometheus, total,
        "Prometheus saw a different number of queries"
    );
}

async fn storm_at_the_guard(guard: Arc<Guard>, body: Arc<Vec<u8>>, size: usize) -> Vec<Duration> {
    let barrier = Arc::new(tokio::sync::Barrier::new(size));
    let mut tasks = Vec::with_capacity(size);
    for _ in 0..size {
        let (guard, body, barrier) = (guard.clone(), body.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let started = Instant::now();
            let judgement = guard
                .review_async(Endpoint::Validate, &body, chrono::Utc::now())
                .await
                .expect("review");
            assert!(judgement.response.allowed, "{:?}", judgement.response);
            started.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(size);
    for task in tasks {
        latencies.push(task.await.expect("task"));
    }
    latencies
}

async fn run(sizes: &Sizes, full: bool) {
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let harness = Harness::start(&harness_dir(tmp, "storm"));
    let policy = policy_manifest("deny-agents", "allow", "2s");
    let body = Arc::new(rollout("healthy", true));
    let refresh = Duration::from_secs(10);
    println!(
        "\nslo-guard storm benchmark ({} mode): Prometheus 2.42 at {}, refresh interval {refresh:?}, {} CPUs",
        if full { "full" } else { "smoke" },
        harness.url,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // 1. A storm at the guard: every admission released at once by a barrier.
    let proxy = CountingProxy::start(harness.address()).await;
    let (prometheus, source) = live(&proxy.url, refresh);
    let guard = Arc::new(guard_with(&policy, source));
    println!(
        "\n{} concurrent admissions of Deployment shop/healthy (agent rollout):",
        sizes.storm
    );
    let before = prometheus_query_count(&harness.url).await;
    let wave_started = Instant::now();
    let latencies = storm_at_the_guard(guard.clone(), body.clone(), sizes.storm).await;
    let wall = wave_started.elapsed();
    let at_prometheus = prometheus_query_count(&harness.url).await - before;
    check_storm("wave 1 (cold cache)", &proxy.counts(), at_prometheus, 12);
    let stats = prometheus.stats();
    println!(
        "  client: {} calls sent, {} joined a call in flight, {} cache hits; wave took {}",
        stats.fetches,
        stats.joined,
        stats.hits,
        ms(wall)
    );
    summary("admission latency, wave 1", latencies);

    proxy.reset();
    let before = prometheus_query_count(&harness.url).await;
    let latencies = storm_at_the_guard(guard.clone(), body.clone(), sizes.storm).await;
    let at_prometheus = prometheus_query_count(&harness.url).await - before;
    let sent = proxy.total();
    println!(
        "  wave 2 (within the refresh interval): {sent} queries at the proxy, {at_prometheus} at Prometheus"
    );
    assert_eq!((sent, at_prometheus), (0, 0));
    summary("admission latency, wave 2", latencies);

    if full {
        tokio::time::sleep(
            refresh.saturating_sub(wave_started.elapsed()) + Duration::from_millis(200),
        )
        .await;
        proxy.reset();
        let before = prometheus_query_count(&harness.url).await;
        let latencies = storm_at_the_guard(guard.clone(), body.clone(), sizes.storm).await;
        let at_prometheus = prometheus_query_count(&harness.url).await - before;
        check_storm(
            "wave 3 (after the refresh interval)",
            &proxy.counts(),
            at_prometheus,
            12,
        );
        summary("admission latency, wave 3", latencies);
    }

    // 2. The same storm through the HTTPS endpoint, with a fresh cache.
    let proxy = CountingProxy::start(harness.address()).await;
    let (_, source) = live(&proxy.url, refresh);
    let server = Arc::new(TlsServer::start(guard_with(&policy, source)).await);
    assert_eq!(server.get("/healthz").await.0, 200);
    let before = prometheus_query_count(&harness.url).await;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(sizes.storm);
    for _ in 0..sizes.storm {
        let (server, body) = (server.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let (status, response) = server.post("/validate", body.to_vec()).await;
            assert_eq!(status, 200);
            assert_eq!(response["response"]["allowed"], true, "{response}");
            started.elapsed()
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.push(task.await.expect("task"));
    }
    let wall = started.elapsed();
    let at_prometheus = prometheus_query_count(&harness.url).await - before;
    println!(
        "\n{} concurrent POST /validate over TLS (one client, HTTP/2):",
        sizes.storm
    );
    check_storm(
        "HTTPS storm (cold cache)",
        &proxy.counts(),
        at_prometheus,
        12,
    );
    println!("  storm took {}", ms(wall));
    summary("request latency (client side)", latencies);

    // 3. What a cache miss adds, against Prometheus's own time for the same queries.
    //    Direct to Prometheus, no proxy.
    let (direct, source) = live(&harness.url, refresh);
    let guard = guard_with(&policy, source);
    let queries: Vec<String> = {
        let mut seen = proxy.counts().into_keys().collect::<Vec<_>>();
        seen.sort();
        seen
    };
    let mut parallel = Vec::new();
    let mut slowest_query = Vec::new();
    let mut misses = Vec::new();
    let mut hits = Vec::new();
    for _ in 0..sizes.samples {
        let started = Instant::now();
        let timed = futures::future::join_all(queries.iter().map(|q| {
            let direct: &Prometheus = &direct;
            async move {
                let started = Instant::now();
                direct
                    .fetch(q, Duration::from_secs(2))
                    .await
                    .expect("query");
                started.elapsed()
            }
        }))
        .await;
        parallel.push(started.elapsed());
        slowest_query.push(timed.into_iter().max().unwrap_or_default());

        direct.clear_cache();
        let started = Instant::now();
        guard
            .review_async(Endpoint::Validate, &body, chrono::Utc::now())
            .await
            .expect("review");
        misses.push(started.elapsed());
    }
    for _ in 0..sizes.hits {
        let started = Instant::now();
        guard
            .review_async(Endpoint::Validate, &body, chrono::Utc::now())
            .await
            .expect("review");
        hits.push(started.elapsed());
    }
    // The offline path (no Prometheus at all), for the cost of deciding itself.
    let offline = guard_with(&policy, SloSource::Off);
    let mut decide_only = Vec::new();
    for _ in 0..sizes.hits {
        let started = Instant::now();
        offline
            .review(Endpoint::Validate, &body, chrono::Utc::now())
            .expect("review");
        decide_only.push(started.elapsed());
    }
    println!(
        "\nCache miss vs Prometheus ({} distinct queries per admission, direct, sequential samples):",
        queries.len()
    );
    let (prom_p50, _) = summary("Prometheus: all queries in parallel", parallel);
    summary("Prometheus: slowest single query", slowest_query);
    let (miss_p50, _) = summary("admission, cache miss (queries + decide)", misses);
    let (hit_p50, _) = summary("admission, cache hit", hits);
    summary("admission, SLO gate off (parse + decide)", decide_only);
    println!(
        "  added by a cache miss (p50 miss - p50 hit): {}; Prometheus's own time (p50): {}; overhead beyond Prometheus: {}",
        ms(miss_p50.saturating_sub(hit_p50)),
        ms(prom_p50),
        ms(miss_p50.saturating_sub(hit_p50).saturating_sub(prom_p50))
    );
    harness.stop();
}
