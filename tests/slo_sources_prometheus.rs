//! Policies that name a Sloth spec (`slo.source`) against a real Prometheus holding
//! Sloth's own recording rules: the rules come from `sloth generate` on
//! tests/fixtures/slo-sources/sloth-shop.yaml, and their history from
//! `promtool tsdb create-blocks-from rules`, one pass per level of rules that read
//! recorded rules (four for Sloth), over the harness's raw scenario series. The sourced
//! policies must give the same verdicts as the hand-written policy on the same history,
//! say which figure came from which rule, and fall back to the spec's queries (with a
//! warning) where the rules are absent.
//!
//! Needs Prometheus and promtool (Debian's 2.42, as tests/prometheus_gate.rs) and the
//! sloth binary that tests/e2e/build-sloth.sh builds. A missing tool fails the test; it
//! never skips.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use slo_guard::guard::Guard;
use slo_guard::metrics::Metrics;
use slo_guard::slo_spec::CatalogEvent;
use slo_guard::store::{PolicyStore, StoreEvent, parse_sources_text};
use slo_guard_testkit::prometheus::{
    harness_dir, live, message, policy_manifest, rollout, warnings,
};
use slo_guard_testkit::root;
use slo_guard_testkit::router::TlsServer;

/// The scenarios of tests/prometheus/README.md that decide a rollout by budget or burn.
const JOBS: [&str; 4] = ["healthy", "budget-low", "exhausted", "burn-both"];
/// Hours of data after the anchor; the test runs well within them.
const HORIZON_HOURS: i64 = 3;
const HOUR: i64 = 3600;

fn tmp() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

fn tool(name: &str, hint: &str) -> PathBuf {
    let cache = std::env::var_os("SLO_GUARD_E2E_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/slo-guard-e2e"))
        })
        .expect("HOME or SLO_GUARD_E2E_CACHE is set");
    let cached = cache.join("bin").join(name);
    if cached.is_file() {
        return cached;
    }
    let on_path = Path::new("/usr/bin").join(name);
    assert!(on_path.is_file(), "{name} is missing: {hint}");
    on_path
}

fn run(command: &mut Command, what: &str) -> String {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({:?}):\n{}{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A Prometheus on the harness's raw series plus Sloth's backfilled rules.
struct RecordedHarness {
    url: String,
}

struct Server {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    /// Stops Prometheus when this test binary exits; it ends when Prometheus does.
    watchdog: Option<Child>,
}

impl Server {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts Prometheus on `dir/data`, with a watchdog that stops it when this test
    /// binary exits, and waits until `series` raw series are queryable.
    fn start(&mut self, valid_until: i64) {
        let data = self.dir.join("data");
        let config = self.dir.join("prometheus.yml");
        std::fs::write(
            &config,
            "global: {scrape_interval: 1m}\nscrape_configs: []\n",
        )
        .expect("config");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("prometheus.log"))
            .expect("log");
        let child = Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg("--storage.tsdb.retention.time=3650d")
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("prometheus starts (apt-get install -y prometheus)");
        let pid = child.id();
        self.child = Some(child);
        let watchdog = Command::new("python3")
            .arg(root().join("tests/prometheus/harness.py"))
            .args([
                "_watchdog",
                &self.dir.display().to_string(),
                &pid.to_string(),
            ])
            .arg(valid_until.to_string())
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("watchdog starts");
        self.watchdog = Some(watchdog);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(count) = instant(&self.url(), "count(http_requests_total)")
                && count == (JOBS.len() * 2) as f64
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus on {} did not become ready; see {}",
                self.url(),
                self.dir.join("prometheus.log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // The watchdog sees Prometheus gone within a second and exits.
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.wait();
        }
    }
}

/// An instant query's single value, if it has one.
fn instant(url: &str, query: &str) -> Option<f64> {
    let output = Command::new("curl")
        .args(["-sf", "--max-time", "5", "--get"])
        .arg(format!("{url}/api/v1/query"))
        .arg("--data-urlencode")
        .arg(format!("query={query}"))
        .output()
        .ok()?;
    let body: Value = serde_json::from_slice(&output.stdout).ok()?;
    body["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
}

/// One recording rule of `sloth generate`'s output, with its group.
#[derive(Clone)]
struct RecordingRule {
    group: String,
    rule: serde_yaml::Value,
    record: String,
    expr: String,
}

/// Whether `expr` reads the series `name` (not a longer name that starts with it).
fn reads(expr: &str, name: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = expr[from..].find(name) {
        let end = from + found + name.len();
        let next = expr[end..].chars().next();
        if !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            return Some(end);
        }
        from = end;
    }
    None
}

/// The longest range over which `reader` reads the series `name` (`name{..}[30d]`), in
/// seconds; 0 for an instant read.
fn lookback(reader: &str, name: &str) -> i64 {
    let Some(end) = reads(reader, name) else {
        return 0;
    };
    let rest = &reader[end..];
    let rest = match rest.strip_prefix('{') {
        Some(inner) => &inner[inner.find('}').map_or(inner.len(), |i| i + 1)..],
        None => rest,
    };
    let Some(range) = rest.trim_start().strip_prefix('[') else {
        return 0;
    };
    let text: String = range.chars().take_while(|c| *c != ']').collect();
    slo_guard::policy::PromDuration::parse(&text)
        .map(|d| d.duration().as_secs() as i64)
        .unwrap_or(0)
}

/// Sloth's rules split into levels: level 1 reads only raw series, level n reads rules
/// of level n − 1 at most. Each rule comes with how far back its history must reach.
fn levels(rules: &[RecordingRule]) -> Vec<Vec<(RecordingRule, i64)>> {
    let names: BTreeSet<&str> = rules.iter().map(|r| r.record.as_str()).collect();
    let mut level: BTreeMap<&str, usize> = BTreeMap::new();
    while level.len() < names.len() {
        let before = level.len();
        for rule in rules {
            let deps: Vec<&str> = names
                .iter()
                .copied()
                .filter(|name| *name != rule.record && reads(&rule.expr, name).is_some())
                .collect();
            if deps.iter().all(|d| level.contains_key(d)) {
                let own = 1 + deps.iter().map(|d| level[d]).max().unwrap_or(0);
                let entry = level.entry(rule.record.as_str()).or_insert(own);
                *entry = (*entry).max(own);
            }
        }
        assert!(level.len() > before, "the rules read each other in a cycle");
    }
    let deepest = level.values().copied().max().unwrap_or(0);
    (1..=deepest)
        .map(|n| {
            rules
                .iter()
                .filter(|rule| level[rule.record.as_str()] == n)
                .map(|rule| {
                    let back = rules
                        .iter()
                        .map(|reader| lookback(&reader.expr, &rule.record))
                        .max()
                        .unwrap_or(0);
                    (rule.clone(), back)
                })
                .collect()
        })
        .collect()
}

fn rule_file(rules: &[&RecordingRule]) -> String {
    let mut groups: BTreeMap<&str, Vec<serde_yaml::Value>> = BTreeMap::new();
    for rule in rules {
        groups
            .entry(&rule.group)
            .or_default()
            .push(rule.rule.clone());
    }
    let groups: Vec<serde_yaml::Value> = groups
        .into_iter()
        .map(|(name, rules)| {
            serde_yaml::to_value(BTreeMap::from([
                ("name", serde_yaml::Value::from(name)),
                ("rules", serde_yaml::Value::Sequence(rules)),
            ]))
            .expect("group")
        })
        .collect();
    serde_yaml::to_string(&BTreeMap::from([("groups", groups)])).expect("rule file")
}

fn harness() -> &'static RecordedHarness {
    static HARNESS: OnceLock<RecordedHarness> = OnceLock::new();
    HARNESS.get_or_init(start_recorded_harness)
}

fn start_recorded_harness() -> RecordedHarness {
    let started = Instant::now();
    let sloth = tool("sloth", "build it with tests/e2e/build-sloth.sh");
    let promtool = tool(
        "promtool",
        "apt-get install -y --no-install-recommends prometheus",
    );
    let dir = harness_dir(tmp(), "recorded");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let anchor = now / 15 * 15;
    let valid_until = anchor + HORIZON_HOURS * HOUR;

    // The raw series, at one sample a minute over the whole history: Sloth's 30d rule
    // averages the 5m ratios, and a 5m rate needs samples less than 5m apart.
    let history = dir.join("history.om");
    run(
        Command::new("python3")
            .arg(root().join("tests/prometheus/gen_history.py"))
            .arg(format!("--anchor={anchor}"))
            .arg(format!("--horizon-hours={HORIZON_HOURS}"))
            .arg("--coarse-step=60")
            .arg(format!("--jobs={}", JOBS.join(",")))
            .arg(format!("--out={}", history.display())),
        "gen_history.py",
    );
    let data = dir.join("data");
    run(
        Command::new(&promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
            .arg("--max-block-duration=1500h")
            .arg(&history)
            .arg(&data),
        "promtool tsdb create-blocks-from openmetrics",
    );
    let _ = std::fs::remove_file(&history);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut server = Server {
        dir: dir.clone(),
        port,
        child: None,
        watchdog: None,
    };
    server.start(valid_until);

    // Sloth's rules for the spec, as its users deploy them.
    let generated = dir.join("sloth-rules.yaml");
    run(
        Command::new(&sloth)
            .args(["generate", "--no-log", "-i"])
            .arg(root().join("tests/fixtures/slo-sources/sloth-shop.yaml"))
            .arg("-o")
            .arg(&generated),
        "sloth generate",
    );
    let text = std::fs::read_to_string(&generated).expect("generated rules");
    let mut rules = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(document)
            .expect("sloth writes YAML");
        // A PrometheusRule (from a PrometheusServiceLevel) or plain rule groups.
        let groups = value
            .get("spec")
            .and_then(|spec| spec.get("groups"))
            .or_else(|| value.get("groups"))
            .and_then(|g| g.as_sequence())
            .cloned()
            .unwrap_or_default();
        for group in groups {
            let name = group["name"].as_str().expect("group name").to_string();
            for rule in group["rules"].as_sequence().cloned().unwrap_or_default() {
                let Some(record) = rule.get("record").and_then(|r| r.as_str()) else {
                    continue; // alerts are not backfilled
                };
                rules.push(RecordingRule {
                    group: name.clone(),
                    record: record.to_string(),
                    expr: rule["expr"].as_str().expect("expr").to_string(),
                    rule: rule.clone(),
                });
            }
        }
    }
    assert!(rules.len() >= 4 * 8, "sloth wrote {} rules", rules.len());

    let end = anchor + HORIZON_HOURS * HOUR;
    let levels = levels(&rules);
    assert_eq!(
        levels.len(),
        4,
        "Sloth's rules read recorded rules four levels deep"
    );
    for (index, level) in levels.iter().enumerate() {
        // A rule another reads over 30d needs 30d of history; the rest need only the
        // hour around now.
        let mut batches: BTreeMap<i64, Vec<&RecordingRule>> = BTreeMap::new();
        for (rule, back) in level {
            batches.entry(*back).or_default().push(rule);
        }
        let out = dir.join(format!("rules-level-{}", index + 1));
        for (batch, (back, rules)) in batches.iter().enumerate() {
            let file = dir.join(format!("rules-level-{}-{batch}.yaml", index + 1));
            std::fs::write(&file, rule_file(rules)).expect("rule file");
            let start = anchor - back - HOUR;
            run(
                Command::new(&promtool)
                    .args(["tsdb", "create-blocks-from", "rules", "--quiet"])
                    .arg(format!("--url={}", server.url()))
                    .arg(format!("--start={start}"))
                    .arg(format!("--end={end}"))
                    .arg("--eval-interval=60s")
                    .arg(format!("--output-dir={}", out.display()))
                    .arg(&file),
                "promtool tsdb create-blocks-from rules",
            );
        }
        // Prometheus reads new blocks when it starts.
        server.stop();
        for block in std::fs::read_dir(&out).expect("blocks").flatten() {
            std::fs::rename(block.path(), data.join(block.file_name())).expect("move block");
        }
        server.start(valid_until);
    }
    let url = server.url();
    let check = |query: &str| {
        instant(&url, query).unwrap_or_else(|| panic!("no answer to {query} after the backfill"))
    };
    let period = check(r#"slo:sli_error:ratio_rate30d{sloth_slo="budget-low"}"#);
    assert!(
        (0.00085..0.00095).contains(&period),
        "budget-low 30d ratio {period}"
    );
    check(r#"slo:period_error_budget_remaining:ratio{sloth_slo="budget-low"}"#);
    eprintln!(
        "recorded harness ready in {:.1}s at {url} ({})",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    // Held for the binary's lifetime; the watchdog stops Prometheus when it exits.
    static KEPT: OnceLock<Mutex<Option<Server>>> = OnceLock::new();
    KEPT.get_or_init(|| Mutex::new(Some(server)));
    RecordedHarness { url }
}

/// One policy per scenario, reading its SLO from the Sloth spec named `spec`.
fn sourced_policies(spec: &str) -> String {
    JOBS.iter()
        .map(|job| {
            format!(
                r#"---
apiVersion: v1
kind: ConfigMap
metadata: {{name: shop-{job}, namespace: shop, labels: {{slo-guard.io/policy: "true"}}}}
data:
  policy.yaml: |
    match: {{kinds: [Deployment], names: [{job}]}}
    agents: {{users: ["system:serviceaccount:ai-agents:*"]}}
    slo:
      source: {{kind: PrometheusServiceLevel, name: {spec}, slo: {job}}}
      minRequestRate: 1
      onNoTraffic: allow
      budget: {{freezeBelow: 0.0, agentFreezeBelow: 0.25}}
      burnRate:
        - {{long: 1h, short: 5m, factor: 14.4}}
        - {{long: 6h, short: 30m, factor: 6}}
    traffic:
      current:  sum(rate(http_requests_total{{job="{job}"}}[5m]))
      baseline: sum(rate(http_requests_total{{job="{job}"}}[5m] offset 1w))
      spikeRatio: 2.0
    prometheus: {{onError: deny-agents, timeout: 2s, maxStaleness: 2m}}
"#
            )
        })
        .collect()
}

/// A guard over the manifests in `text` (specs and policies), all of which must load.
fn guard_over(text: &str) -> Guard {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = PolicyStore::new("slo-guard");
    let sources = parse_sources_text(Path::new("test.yaml"), text, "default").expect("manifests");
    let (specs, policies) = store.replace_sources(&sources);
    for event in specs {
        assert!(matches!(event, CatalogEvent::Loaded(_)), "{event:?}");
    }
    for event in policies {
        assert!(matches!(event, StoreEvent::Loaded { .. }), "{event:?}");
    }
    let (_, slo) = live(&harness().url, Duration::from_secs(10));
    Guard::new(Arc::new(store), Arc::new(()), Arc::new(Metrics::new())).with_slo(slo)
}

fn spec_text(file: &str) -> String {
    std::fs::read_to_string(root().join("tests/fixtures/slo-sources").join(file)).expect("spec")
}

/// The verdict and the failed rules of a response: `(allowed, ["error-budget"])`.
fn verdict(response: &Value) -> (bool, Vec<String>) {
    let allowed = response["allowed"].as_bool().expect("allowed");
    let rules = message(response)
        .lines()
        .filter_map(|line| {
            let inner = line.strip_prefix('[')?.split(']').next()?;
            Some(inner.rsplit(':').next()?.to_string())
        })
        .collect();
    (allowed, rules)
}

async fn validate(server: &TlsServer, review: Vec<u8>) -> Value {
    let (status, body) = server.post("/validate", review).await;
    assert_eq!(status, 200, "{body}");
    body["response"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn sloth_sourced_policies_judge_as_the_hand_written_one_from_sloths_recorded_rules() {
    tokio::task::spawn_blocking(harness).await.expect("harness");
    let hand_written =
        TlsServer::start(guard_over(&policy_manifest("deny-agents", "allow", "2s"))).await;
    let sourced = TlsServer::start(guard_over(
        &(spec_text("sloth-shop.yaml") + &sourced_policies("shop")),
    ))
    .await;
    let expected: BTreeMap<(&str, bool), (bool, Vec<&str>)> = BTreeMap::from([
        (("healthy", true), (true, vec![])),
        (("healthy", false), (true, vec![])),
        (("budget-low", true), (false, vec!["error-budget"])),
        (("budget-low", false), (true, vec![])),
        (("exhausted", true), (false, vec!["error-budget"])),
        (("exhausted", false), (false, vec!["error-budget"])),
        (("burn-both", true), (false, vec!["burn-rate"])),
        (("burn-both", false), (false, vec!["burn-rate"])),
    ]);
    for ((job, by_agent), (allowed, rules)) in &expected {
        let by_hand = validate(&hand_written, rollout(job, *by_agent)).await;
        let from_spec = validate(&sourced, rollout(job, *by_agent)).await;
        let want = (
            *allowed,
            rules.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        );
        assert_eq!(
            verdict(&by_hand),
            want,
            "hand-written, {job}, agent {by_agent}: {by_hand:#}"
        );
        assert_eq!(
            verdict(&from_spec),
            want,
            "from the Sloth spec, {job}, agent {by_agent}: {from_spec:#}"
        );
        assert!(
            warnings(&from_spec).is_empty(),
            "the rules are there, so nothing falls back: {from_spec:#}"
        );
    }

    // The denial names the figures' sources: Sloth's rules, and what the period's means.
    let response = validate(&sourced, rollout("budget-low", true)).await;
    let text = message(&response);
    println!("sourced denial: {text}");
    assert!(
        text.starts_with("[shop/shop-budget-low:error-budget] rollout of Deployment shop/budget-low blocked: error budget ")
            && text.contains("(SLO 99.9% over 30d from Sloth PrometheusServiceLevel shop/shop, SLO budget-low; figures: 30d from slo:sli_error:ratio_rate30d (Sloth's time-weighted mean of its 5m error ratios), 1h from slo:sli_error:ratio_rate1h, 5m from slo:sli_error:ratio_rate5m, 6h from slo:sli_error:ratio_rate6h, 30m from slo:sli_error:ratio_rate30m)"),
        "{text}"
    );
    let budget: f64 = text
        .split("error budget ")
        .nth(1)
        .and_then(|rest| rest.split('%').next())
        .and_then(|n| n.parse().ok())
        .expect("a budget figure");
    assert!((9.0..=11.0).contains(&budget), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_sloths_rules_the_specs_queries_give_the_same_verdicts_and_say_so() {
    tokio::task::spawn_blocking(harness).await.expect("harness");
    // The same SLOs under another service name: `sloth generate` never ran for it, so
    // Prometheus has none of its recorded series.
    let unrecorded = spec_text("sloth-shop.yaml")
        .replace(
            "name: shop\n  namespace: shop",
            "name: shop-unrecorded\n  namespace: shop",
        )
        .replace("service: shop", "service: shop-unrecorded");
    let sourced = TlsServer::start(guard_over(
        &(unrecorded + &sourced_policies("shop-unrecorded")),
    ))
    .await;
    for (job, by_agent, allowed, rule) in [
        ("healthy", true, true, None),
        ("budget-low", true, false, Some("error-budget")),
        ("budget-low", false, true, None),
        ("exhausted", false, false, Some("error-budget")),
        ("burn-both", true, false, Some("burn-rate")),
    ] {
        let response = validate(&sourced, rollout(job, by_agent)).await;
        let want = (
            allowed,
            rule.into_iter().map(str::to_string).collect::<Vec<_>>(),
        );
        assert_eq!(
            verdict(&response),
            want,
            "{job}, agent {by_agent}: {response:#}"
        );
        if allowed {
            let warnings = warnings(&response);
            assert!(
                warnings.iter().any(|w| w.starts_with(&format!(
                    "slo-guard: shop/shop-{job}: Sloth recording rules absent (30d, 1h, 5m, 6h, 30m): figures from the spec's queries"
                ))),
                "{warnings:?}"
            );
        }
    }
    let response = validate(&sourced, rollout("budget-low", true)).await;
    let text = message(&response);
    assert!(
        text.contains("figures: 30d from the spec's queries (slo:sli_error:ratio_rate30d absent), 1h from the spec's queries (slo:sli_error:ratio_rate1h absent)"),
        "{text}"
    );
}
