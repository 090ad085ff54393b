//! The chart's observability objects (issue 12, "Also in the chart"): the Grafana
//! dashboard ConfigMap (`grafanaDashboard`) and the PrometheusRule (`prometheusRule`).
//!
//! Both are rendered with the real `helm template`. The metric names and label names in
//! every dashboard query and every alert are compared with what slo-guard really exposes:
//! the `/metrics` text of the library's routers after real reviews (allowed, denied by a
//! cap, denied on `prometheus.onError` with Prometheus unreachable, refused as not JSON)
//! and a rejected policy. The queries are parsed by `promtool check rules`, and the
//! alerts fire in `promtool test rules` (tests/prometheus/slo-guard-alerts.test.yaml).
//!
//! Needs helm (tests/e2e/build-tools.sh builds it into ~/.cache/slo-guard-e2e/bin;
//! `SLO_GUARD_E2E_BIN` names another directory) and promtool (`apt-get install
//! prometheus`; `PROMTOOL_BIN` overrides). A missing tool fails the test, never skips it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use slo_guard::guard::Guard;
use slo_guard::metrics::{Metrics, ReasonLabels};
use slo_guard::store::{PolicyStore, StoreEvent, parse_manifest_text, read_manifests};
use slo_guard_testkit::fixtures::{checkout_workload, fixture};
use slo_guard_testkit::prometheus;
use slo_guard_testkit::router::TlsServer;
use slo_guard_testkit::{root, text};

const RELEASE: &str = "slo-guard";
const NAMESPACE: &str = "slo-guard";
const CHART: &str = "charts/slo-guard";
const DASHBOARD_FILE: &str = "charts/slo-guard/dashboards/slo-guard.json";
const ALERT_TESTS: &str = "tests/prometheus/slo-guard-alerts.test.yaml";
const PROMETHEUS_RULE_API: &str = "monitoring.coreos.com/v1/PrometheusRule";

/// Labels a scrape adds to every series: Prometheus's own (`job`, `instance`) and the
/// Prometheus Operator's target labels for a ServiceMonitor endpoint.
const TARGET_LABELS: [&str; 7] = [
    "job",
    "instance",
    "namespace",
    "service",
    "pod",
    "container",
    "endpoint",
];

/// Series Prometheus itself writes for every target (not slo-guard's).
const SCRAPE_SERIES: [&str; 1] = ["up"];

/// Grafana's built-in variables a query may use.
const GRAFANA_BUILTINS: [&str; 4] = ["__rate_interval", "__interval", "__range", "__range_s"];

// ---------------------------------------------------------------------------------------
// Tools

fn helm_binary() -> PathBuf {
    let bin = std::env::var_os("SLO_GUARD_E2E_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("SLO_GUARD_E2E_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/slo-guard-e2e")
                })
                .join("bin")
        });
    let helm = bin.join("helm");
    if helm.is_file() {
        helm
    } else {
        PathBuf::from("helm")
    }
}

fn run(program: &Path, args: &[&str], dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}). helm: build it with tests/e2e/build-tools.sh (or set \
                 SLO_GUARD_E2E_BIN); promtool: apt-get install prometheus (or set PROMTOOL_BIN)",
                program.display()
            )
        })
}

fn helm(args: &[&str]) -> Output {
    run(&helm_binary(), args, &root())
}

fn promtool(args: &[&str], dir: &Path) -> Output {
    let program = std::env::var_os("PROMTOOL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("promtool"));
    run(&program, args, dir)
}

/// `helm template` of the chart as release "slo-guard" in namespace "slo-guard", with
/// the PrometheusRule API announced, and the documents it printed.
fn render(sets: &[&str]) -> Vec<Yaml> {
    let mut values = Vec::new();
    for set in sets {
        values.extend(["--set", set]);
    }
    render_with(&values)
}

/// [`render`] with `values`: `--set` and `-f` arguments.
fn render_with(values: &[&str]) -> Vec<Yaml> {
    let mut args = vec![
        "template",
        RELEASE,
        CHART,
        "--namespace",
        NAMESPACE,
        "--api-versions",
        PROMETHEUS_RULE_API,
    ];
    args.extend(values);
    rendered(&args)
}

fn rendered(args: &[&str]) -> Vec<Yaml> {
    let output = helm(args);
    assert!(
        output.status.success(),
        "helm {}: {}",
        args.join(" "),
        text(&output.stderr)
    );
    serde_yaml::Deserializer::from_str(&text(&output.stdout))
        .map(|document| Yaml::deserialize(document).expect("helm printed YAML"))
        .filter(|document| !document.is_null())
        .collect()
}

/// The chart with the dashboard and the rule on.
fn render_observability(sets: &[&str]) -> Vec<Yaml> {
    let mut all = vec![
        "grafanaDashboard.enabled=true",
        "prometheusRule.enabled=true",
    ];
    all.extend_from_slice(sets);
    render(&all)
}

fn find<'a>(documents: &'a [Yaml], kind: &str, name: &str) -> Option<&'a Yaml> {
    documents
        .iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
}

fn dashboard_configmap(documents: &[Yaml]) -> &Yaml {
    find(documents, "ConfigMap", "slo-guard-dashboard").expect("the dashboard ConfigMap")
}

fn prometheus_rule(documents: &[Yaml]) -> &Yaml {
    find(documents, "PrometheusRule", "slo-guard").expect("the PrometheusRule")
}

// ---------------------------------------------------------------------------------------
// What slo-guard exposes

/// Series names (as Prometheus stores them) with their label names and values.
#[derive(Debug, Default)]
struct Exposed {
    /// Sample name (`slo_guard_decisions_total`, `..._bucket`) to its label names.
    labels: BTreeMap<String, BTreeSet<String>>,
    /// (sample name, label name) to the values seen.
    values: BTreeMap<(String, String), BTreeSet<String>>,
    /// Upper bounds of `slo_guard_admission_duration_seconds`' finite buckets.
    latency_buckets: Vec<f64>,
}

impl Exposed {
    fn names(&self) -> String {
        self.labels.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// A policy ConfigMap whose policy does not parse (`maxReplicas` is not a number).
const BROKEN_POLICY: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: broken, namespace: shop, labels: {slo-guard.io/policy: "true"}}
data:
  policy.yaml: |
    match: {kinds: [StatefulSet]}
    scaling: {maxReplicas: many}
"#;

/// The `/metrics` text of slo-guard's ops router after real traffic.
fn scrape() -> String {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // Prometheus on a port nothing listens on: connection refused.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let (prometheus, slo) =
            prometheus::live(&format!("http://{closed}"), Duration::from_millis(1));
        // As `serve` does: the query cache's counters on the same /metrics.
        let mut metrics = Metrics::new();
        metrics
            .registry
            .register_collector(Box::new(prometheus.collector()));
        let metrics = Arc::new(metrics);
        // The baseline policy (payments/checkout), an SLO-gated one (shop/shop, onError:
        // deny) and one that does not parse, reported as `serve` reports them.
        let store = PolicyStore::new("slo-guard");
        let mut documents = read_manifests(&root().join("tests/fixtures/policies"), "default")
            .expect("baseline policies");
        documents.extend(
            parse_manifest_text(
                Path::new("shop.yaml"),
                &prometheus::policy_manifest("deny", "allow", "2s"),
                "default",
            )
            .expect("shop policy"),
        );
        documents.extend(
            parse_manifest_text(Path::new("broken.yaml"), BROKEN_POLICY, "default")
                .expect("a ConfigMap"),
        );
        let events = store.replace_all(None, &documents);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, StoreEvent::Rejected { .. })),
            "the broken policy is rejected: {events:?}"
        );
        for event in &events {
            slo_guard::cluster::report(event, &metrics);
        }
        let guard = Guard::new(
            Arc::new(store),
            Arc::new(checkout_workload()),
            metrics.clone(),
        )
        .with_slo(slo);
        let server = TlsServer::start(guard).await;

        let (_, denied) = server.post("/validate", fixture("scale-agent.json")).await;
        assert_eq!(denied["response"]["allowed"], false, "{denied}");
        let (_, allowed) = server.post("/validate", fixture("scale-person.json")).await;
        assert_eq!(allowed["response"]["allowed"], true, "{allowed}");
        server.post("/mutate", fixture("scale-person.json")).await;
        let (_, no_data) = server
            .post("/validate", prometheus::rollout("web", true))
            .await;
        assert!(
            prometheus::message(&no_data["response"]).starts_with("[shop/shop:slo-data]"),
            "an agent rollout with Prometheus unreachable is denied on onError: {no_data}"
        );
        let (status, _) = server.post("/validate", b"not json".to_vec()).await;
        assert_eq!(status, 400);

        // What needs the serve listener or a cluster (hostile_clients.rs and the e2e
        // tests drive those for real), counted through the same calls those paths make.
        metrics.event("Denied", "created");
        metrics.connection_timeout("tls_handshake");
        metrics
            .connections_refused
            .get_or_create(&ReasonLabels {
                reason: "per_source_limit".to_string(),
            })
            .inc();

        let (status, body) = server.get("/metrics").await;
        assert_eq!(status, 200, "{body}");
        body
    })
}

/// Parses the OpenMetrics text: `# TYPE` lines name every family (with or without
/// samples), the samples give their label names and values.
fn parse_exposition(body: &str) -> Exposed {
    let mut exposed = Exposed::default();
    for line in body.lines() {
        if let Some(declaration) = line.strip_prefix("# TYPE ") {
            let mut words = declaration.split_whitespace();
            let (Some(family), Some(kind)) = (words.next(), words.next()) else {
                panic!("bad TYPE line: {line}");
            };
            let samples: Vec<String> = match kind {
                "counter" => vec![format!("{family}_total")],
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .map(|suffix| format!("{family}{suffix}"))
                    .collect(),
                _ => vec![family.to_string()],
            };
            for sample in samples {
                exposed.labels.entry(sample).or_default();
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        assert!(
            exposed.labels.contains_key(name),
            "sample {name} of no declared family: {line}"
        );
        if line[name_end..].starts_with('{') {
            let close = line.rfind('}').expect("labels close");
            for (label, value) in parse_label_pairs(&line[name_end + 1..close]) {
                if name == "slo_guard_admission_duration_seconds_bucket"
                    && label == "le"
                    && value != "+Inf"
                {
                    exposed
                        .latency_buckets
                        .push(value.parse().expect("a bucket bound"));
                }
                exposed
                    .labels
                    .get_mut(name)
                    .expect("declared")
                    .insert(label.clone());
                exposed
                    .values
                    .entry((name.to_string(), label))
                    .or_default()
                    .insert(value);
            }
        }
    }
    exposed
}

/// `a="x",b="y\"z"` as pairs.
fn parse_label_pairs(inner: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek() == Some(&',') || chars.peek() == Some(&' ') {
            chars.next();
        }
        let label: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if label.is_empty() {
            return pairs;
        }
        assert_eq!(chars.next(), Some('"'), "a quoted value in {inner}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.push(chars.next().unwrap_or('\\')),
                '"' => break,
                c => value.push(c),
            }
        }
        pairs.push((label.trim().to_string(), value));
    }
}

fn exposed() -> &'static Exposed {
    static EXPOSED: OnceLock<Exposed> = OnceLock::new();
    EXPOSED.get_or_init(|| {
        let exposed = parse_exposition(&scrape());
        // The scrape is what the checks stand on: it must hold the samples they use.
        for (sample, label, value) in [
            ("slo_guard_decisions_total", "rule", "slo-data"),
            ("slo_guard_decisions_total", "verdict", "denied"),
            (
                "slo_guard_admission_duration_seconds_bucket",
                "endpoint",
                "mutate",
            ),
            (
                "slo_guard_policy_load_errors_total",
                "configmap",
                "shop/broken",
            ),
        ] {
            assert!(
                exposed
                    .values
                    .get(&(sample.to_string(), label.to_string()))
                    .is_some_and(|values| values.contains(value)),
                "the scrape has no {sample}{{{label}=\"{value}\"}}: {exposed:#?}"
            );
        }
        exposed
    })
}

// ---------------------------------------------------------------------------------------
// PromQL: the metrics and labels an expression names

/// A label matcher: (label, operator, value).
type Matcher = (String, String, String);

/// One vector selector: the metric and its matchers.
#[derive(Debug)]
struct Selector {
    metric: String,
    matchers: Vec<Matcher>,
}

#[derive(Debug, Default)]
struct Usage {
    selectors: Vec<Selector>,
    /// Labels of `by`, `without`, `on`, `ignoring`, `group_left`, `group_right`.
    grouping: Vec<String>,
}

const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Words that are not metric names when not followed by `(`: operators, modifiers,
/// aggregations written `sum by (...) (...)`, and number literals.
const KEYWORDS: [&str; 21] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "inf",
    "nan",
];

fn is_word_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Index past the string literal starting at `i`, and its content.
fn string_literal(b: &[u8], i: usize) -> Result<(usize, String), String> {
    let quote = b[i];
    let mut value = Vec::new();
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' if quote != b'`' => {
                value.push(*b.get(j + 1).ok_or("unterminated escape")?);
                j += 2;
            }
            c if c == quote => return Ok((j + 1, String::from_utf8_lossy(&value).into())),
            c => {
                value.push(c);
                j += 1;
            }
        }
    }
    Err("unterminated string".to_string())
}

/// `{label op "value", ...}` starting at `i`; index past the `}`.
fn matchers(b: &[u8], mut i: usize) -> Result<(usize, Vec<Matcher>), String> {
    let mut found = Vec::new();
    i += 1;
    loop {
        i = skip_spaces(b, i);
        match b.get(i) {
            None => return Err("unterminated {".to_string()),
            Some(b'}') => return Ok((i + 1, found)),
            Some(b',') => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let start = i;
        while i < b.len() && is_word(b[i]) {
            i += 1;
        }
        let label = String::from_utf8_lossy(&b[start..i]).to_string();
        if label.is_empty() {
            return Err(format!("a label name expected at {start}"));
        }
        i = skip_spaces(b, i);
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| b[i..].starts_with(op.as_bytes()))
            .ok_or(format!("a matcher operator expected after {label}"))?;
        i = skip_spaces(b, i + op.len());
        if !matches!(b.get(i), Some(b'"' | b'\'' | b'`')) {
            return Err(format!("a quoted value expected for {label}"));
        }
        let (next, value) = string_literal(b, i)?;
        i = next;
        found.push((label, op.to_string(), value));
    }
}

/// Scans a PromQL expression (Grafana variables allowed) for its selectors and grouping
/// labels. Not a full parser: `promtool check rules` checks the syntax.
fn scan(expr: &str) -> Result<Usage, String> {
    let b = expr.as_bytes();
    let mut usage = Usage::default();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if matches!(c, b'"' | b'\'' | b'`') {
            i = string_literal(b, i)?.0;
        } else if c == b'[' {
            // A range or a subquery: durations and $__rate_interval.
            i += b[i..]
                .iter()
                .position(|&c| c == b']')
                .ok_or("unterminated [")?
                + 1;
        } else if c == b'{' {
            let (next, found) = matchers(b, i)?;
            usage.selectors.push(Selector {
                metric: String::new(),
                matchers: found,
            });
            i = next;
        } else if c == b'$' {
            i += 1;
            if b.get(i) == Some(&b'{') {
                i += b[i..]
                    .iter()
                    .position(|&c| c == b'}')
                    .ok_or("unterminated ${")?
                    + 1;
            } else {
                while i < b.len() && is_word(b[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            // Numbers (1e3, 0x1f, 2.5) and durations (after offset).
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else if is_word_start(c) {
            let start = i;
            while i < b.len() && is_word(b[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let next = skip_spaces(b, i);
            if GROUPING.contains(&word) {
                if b.get(next) == Some(&b'(') {
                    let close = next
                        + b[next..]
                            .iter()
                            .position(|&c| c == b')')
                            .ok_or("unterminated (")?;
                    for label in expr[next + 1..close].split(',') {
                        let label = label.trim();
                        if !label.is_empty() {
                            usage.grouping.push(label.to_string());
                        }
                    }
                    i = close + 1;
                }
            } else if KEYWORDS.contains(&word) || b.get(next) == Some(&b'(') {
                // An operator, or a function or aggregation call.
            } else {
                let mut selector = Selector {
                    metric: word.to_string(),
                    matchers: Vec::new(),
                };
                if b.get(next) == Some(&b'{') {
                    let (after, found) = matchers(b, next)?;
                    selector.matchers = found;
                    i = after;
                }
                usage.selectors.push(selector);
            }
        } else {
            i += 1;
        }
    }
    Ok(usage)
}

/// Checks that `expr` names only series slo-guard exposes (or `up`), with labels they
/// carry; the labels it may group by or show are returned. Errors name the metric.
fn check_expr(place: &str, expr: &str, exposed: &Exposed) -> Result<BTreeSet<String>, Vec<String>> {
    let usage = scan(expr).map_err(|e| vec![format!("{place}: cannot scan {expr:?}: {e}")])?;
    let mut errors = Vec::new();
    let mut available: BTreeSet<String> = BTreeSet::new();
    if usage.selectors.is_empty() {
        errors.push(format!("{place}: no metric in {expr:?}"));
    }
    for selector in &usage.selectors {
        let metric = &selector.metric;
        let own: BTreeSet<String> = if SCRAPE_SERIES.contains(&metric.as_str()) {
            BTreeSet::new()
        } else if let Some(labels) = exposed.labels.get(metric) {
            labels.clone()
        } else {
            errors.push(format!(
                "{place}: metric {metric:?} is not exposed by slo-guard (it exposes: {})",
                exposed.names()
            ));
            continue;
        };
        let allowed: BTreeSet<String> = own
            .iter()
            .cloned()
            .chain(TARGET_LABELS.iter().map(|l| l.to_string()))
            .collect();
        for (label, op, value) in &selector.matchers {
            if !allowed.contains(label) {
                errors.push(format!(
                    "{place}: {metric} has no label {label:?} (it has {own:?}, and the scrape adds {TARGET_LABELS:?})"
                ));
            } else if op == "=" && own.contains(label) && !value.contains('$') {
                let seen = exposed.values.get(&(metric.clone(), label.clone()));
                if !seen.is_some_and(|values| values.contains(value)) {
                    errors.push(format!(
                        "{place}: {metric}{{{label}=\"{value}\"}} never appears in slo-guard's exposition (values seen: {seen:?})"
                    ));
                }
            }
        }
        available.extend(allowed);
    }
    for label in &usage.grouping {
        if !available.contains(label) {
            errors.push(format!(
                "{place}: groups by {label:?}, which none of its series carries ({available:?})"
            ));
        }
    }
    if errors.is_empty() {
        Ok(available)
    } else {
        Err(errors)
    }
}

fn assert_no_errors(errors: Vec<String>) {
    assert!(errors.is_empty(), "\n{}", errors.join("\n"));
}

#[test]
fn the_scanner_finds_metrics_and_labels_and_flags_what_slo_guard_does_not_expose() {
    let usage = scan(
        r#"histogram_quantile(0.99, sum by (endpoint, le) (rate(slo_guard_admission_duration_seconds_bucket{namespace=~"$namespace", job=~"$job"}[$__rate_interval]))) >= 2.5 or absent(up{job="x"} offset 5m)"#,
    )
    .expect("scans");
    let metrics: Vec<&str> = usage.selectors.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(
        metrics,
        ["slo_guard_admission_duration_seconds_bucket", "up"]
    );
    assert_eq!(usage.grouping, ["endpoint", "le"]);
    assert_eq!(usage.selectors[0].matchers[1].0, "job");

    let exposed = exposed();
    let errors = check_expr(
        "made up",
        r#"sum by (policy) (rate(slo_guard_prometheus_errors_total[5m]))"#,
        exposed,
    )
    .expect_err("an unknown metric");
    assert!(
        errors[0].contains("\"slo_guard_prometheus_errors_total\" is not exposed"),
        "{errors:?}"
    );
    // A counter is stored with _total; its family name alone is not a series.
    assert!(check_expr("bare", "rate(slo_guard_decisions[5m])", exposed).is_err());
    let errors = check_expr(
        "wrong label",
        r#"sum by (reason) (rate(slo_guard_decisions_total{verdict="rejected"}[5m]))"#,
        exposed,
    )
    .expect_err("a label value and a grouping label it does not have");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        check_expr(
            "real",
            r#"sum by (rule, verdict) (rate(slo_guard_decisions_total{job=~"$job"}[5m]))"#,
            exposed
        )
        .is_ok()
    );
}

// ---------------------------------------------------------------------------------------
// The dashboard

fn variables_in(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let braced = b.get(i + 1) == Some(&b'{');
            let start = i + 1 + usize::from(braced);
            let mut j = start;
            while j < b.len() && is_word(b[j]) {
                j += 1;
            }
            if j > start {
                names.push(text[start..j].to_string());
            }
            i = j;
        } else {
            i += 1;
        }
    }
    names
}

/// `{{label}}` references of a legend.
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|part| part.split_once("}}"))
        .map(|(label, _)| label.trim().to_string())
        .collect()
}

/// The dashboard's queries: (where, expr, legend).
fn dashboard_queries(dashboard: &Json) -> Vec<(String, String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push((
                format!(
                    "panel {} {:?} target {}",
                    panel["id"],
                    panel["title"].as_str().unwrap_or_default(),
                    target["refId"].as_str().unwrap_or_default()
                ),
                target["expr"].as_str().unwrap_or_default().to_string(),
                target["legendFormat"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ));
        }
    }
    queries
}

#[test]
fn dashboard_is_grafana_json_whose_queries_use_only_what_slo_guard_exposes() {
    let documents = render_observability(&[]);
    let configmap = dashboard_configmap(&documents);
    assert_eq!(configmap["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        configmap["metadata"]["labels"]["grafana_dashboard"], "1",
        "the Grafana sidecar's default label"
    );
    let data = configmap["data"]
        .as_mapping()
        .expect("data")
        .iter()
        .map(|(key, value)| (key.as_str().unwrap(), value.as_str().unwrap()))
        .collect::<Vec<_>>();
    assert_eq!(data.len(), 1, "one dashboard: {data:?}");
    let (key, json) = data[0];
    assert!(key.ends_with(".json"), "{key}");
    let file = std::fs::read_to_string(root().join(DASHBOARD_FILE)).expect("the dashboard file");
    assert_eq!(
        json,
        file.trim(),
        "the ConfigMap carries the chart's file as is"
    );
    let dashboard: Json = serde_json::from_str(json).expect("the dashboard is JSON");

    let mut errors = Vec::new();
    for key in ["title", "uid"] {
        if dashboard[key].as_str().is_none_or(str::is_empty) {
            errors.push(format!("no {key}"));
        }
    }
    if !dashboard["schemaVersion"].is_u64() {
        errors.push("no schemaVersion".to_string());
    }

    // Variables: a Prometheus datasource picker, and namespace/job from slo-guard's series.
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let variable = |name: &str| variables.iter().find(|v| v["name"] == name);
    match variable("datasource") {
        Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
        other => errors.push(format!(
            "no datasource variable of type datasource, query prometheus: {other:?}"
        )),
    }
    let exposed = exposed();
    for name in ["namespace", "job"] {
        let Some(v) = variable(name) else {
            errors.push(format!("no {name} variable"));
            continue;
        };
        if v["datasource"]["uid"] != "${datasource}" {
            errors.push(format!("variable {name} does not use $datasource"));
        }
        // label_values(<selector>, <label>)
        let query = v["definition"].as_str().unwrap_or_default();
        let Some((selector, label)) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
        else {
            errors.push(format!("variable {name}: not label_values(...): {query:?}"));
            continue;
        };
        match check_expr(&format!("variable {name}"), selector, exposed) {
            Ok(labels) if labels.contains(label.trim()) => {}
            Ok(labels) => errors.push(format!(
                "variable {name}: {selector} has no label {label:?} ({labels:?})"
            )),
            Err(e) => errors.extend(e),
        }
    }
    let defined: BTreeSet<String> = variables
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .chain(GRAFANA_BUILTINS.iter().map(|b| b.to_string()))
        .collect();

    // Panels: unique ids, inside the 24-column grid, and every non-row panel with
    // queries on $datasource.
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut with_queries = 0;
    for panel in panels {
        let Some(id) = panel["id"].as_u64() else {
            errors.push(format!("a panel without an id: {}", panel["title"]));
            continue;
        };
        if !ids.insert(id) {
            errors.push(format!("panel id {id} is used twice"));
        }
        let grid = &panel["gridPos"];
        let (x, w, h) = (grid["x"].as_u64(), grid["w"].as_u64(), grid["h"].as_u64());
        if !matches!((x, w, h, grid["y"].as_u64()), (Some(x), Some(w), Some(h), Some(_)) if x + w <= 24 && w > 0 && h > 0)
        {
            errors.push(format!("panel {id}: gridPos {grid}"));
        }
        if panel["title"].as_str().is_none_or(str::is_empty) {
            errors.push(format!("panel {id} has no title"));
        }
        if panel["type"] == "row" {
            continue;
        }
        if panel["datasource"]["uid"] != "${datasource}" {
            errors.push(format!("panel {id} does not query $datasource"));
        }
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if targets.is_empty() {
            errors.push(format!("panel {id} {:?} has no targets", panel["title"]));
        }
        let mut refs = BTreeSet::new();
        for target in targets {
            if !refs.insert(target["refId"].as_str().unwrap_or_default()) {
                errors.push(format!("panel {id}: refId {} twice", target["refId"]));
            }
            if target["expr"].as_str().is_none_or(str::is_empty) {
                errors.push(format!("panel {id}: a target without expr"));
            }
            if !target["datasource"].is_null() && target["datasource"]["uid"] != "${datasource}" {
                errors.push(format!("panel {id}: a target not on $datasource"));
            }
        }
        with_queries += 1;
    }
    if with_queries < 8 {
        errors.push(format!("only {with_queries} panels with queries"));
    }

    // Every query: slo-guard's metrics and labels, defined variables, legends that name
    // labels the query has.
    let queries = dashboard_queries(&dashboard);
    let mut metrics_used = BTreeSet::new();
    for (place, expr, legend) in &queries {
        for name in variables_in(expr) {
            if !defined.contains(&name) {
                errors.push(format!("{place}: undefined variable ${name}"));
            }
        }
        match check_expr(place, expr, exposed) {
            Ok(labels) => {
                for label in legend_labels(legend) {
                    if !labels.contains(&label) {
                        errors.push(format!(
                            "{place}: legend names {label:?}, not a label of {expr}"
                        ));
                    }
                }
            }
            Err(e) => errors.extend(e),
        }
        if let Ok(usage) = scan(expr) {
            metrics_used.extend(usage.selectors.into_iter().map(|s| s.metric));
        }
    }
    // What the issue asks the dashboard to show.
    for metric in [
        "slo_guard_decisions_total",
        "slo_guard_admission_duration_seconds_bucket",
        "slo_guard_policy_load_errors_total",
        "slo_guard_connections_refused_total",
        "slo_guard_connection_timeouts_total",
    ] {
        if !metrics_used.contains(metric) {
            errors.push(format!("no panel shows {metric}"));
        }
    }
    for (panel, quantile) in [("Admission latency", "0.5"), ("Admission latency", "0.99")] {
        if !queries.iter().any(|(place, expr, _)| {
            place.contains(panel) && expr.starts_with(&format!("histogram_quantile({quantile},"))
        }) {
            errors.push(format!("{panel} has no p{quantile} quantile"));
        }
    }
    assert_no_errors(errors);
}

#[test]
fn dashboard_queries_are_promql_that_promtool_accepts() {
    let file = std::fs::read_to_string(root().join(DASHBOARD_FILE)).expect("the dashboard file");
    let dashboard: Json = serde_json::from_str(&file).expect("JSON");
    // Each query as a recording rule, with Grafana's variables as Grafana would fill them.
    let rules: Vec<Yaml> = dashboard_queries(&dashboard)
        .iter()
        .enumerate()
        .map(|(n, (_, expr, _))| {
            let expr = expr
                .replace("$__rate_interval", "2m")
                .replace("$namespace", ".*")
                .replace("$job", ".*");
            serde_yaml::to_value(BTreeMap::from([
                ("record", format!("slo_guard_dashboard:query_{n}")),
                ("expr", expr),
            ]))
            .unwrap()
        })
        .collect();
    assert!(rules.len() >= 8, "{rules:?}");
    let groups = serde_yaml::to_value(BTreeMap::from([(
        "groups",
        vec![BTreeMap::from([
            ("name", Yaml::from("dashboard")),
            ("rules", Yaml::Sequence(rules)),
        ])],
    )]))
    .unwrap();
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("dashboard-queries.yaml");
    std::fs::write(&path, serde_yaml::to_string(&groups).unwrap()).unwrap();
    let output = promtool(&["check", "rules", "dashboard-queries.yaml"], dir.path());
    assert!(
        output.status.success(),
        "promtool check rules on the dashboard's queries:\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// The PrometheusRule

const ALERTS: [&str; 5] = [
    "SloGuardUnavailable",
    "SloGuardLatencyNearTimeout",
    "SloGuardSloDataUnavailable",
    "SloGuardPrometheusErrors",
    "SloGuardPolicyRejected",
];

fn alert_rules(rule: &Yaml) -> Vec<&Yaml> {
    rule["spec"]["groups"]
        .as_sequence()
        .expect("spec.groups")
        .iter()
        .flat_map(|group| group["rules"].as_sequence().expect("rules"))
        .collect()
}

#[test]
fn alerts_use_only_what_slo_guard_exposes_and_fire_in_promtool_tests() {
    let documents = render_observability(&[]);
    let rule = prometheus_rule(&documents);
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["namespace"], NAMESPACE);
    let rules = alert_rules(rule);
    let names: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    assert_eq!(names, ALERTS);

    let exposed = exposed();
    let mut errors = Vec::new();
    for alert in &rules {
        let name = alert["alert"].as_str().unwrap();
        let expr = alert["expr"].as_str().unwrap_or_default();
        if let Err(e) = check_expr(&format!("alert {name}"), expr, exposed) {
            errors.extend(e);
        }
        if !expr.contains(&format!(r#"job="{RELEASE}",namespace="{NAMESPACE}""#)) {
            errors.push(format!(
                "alert {name} does not select this release's job: {expr}"
            ));
        }
        if alert["labels"]["severity"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            errors.push(format!("alert {name} has no severity"));
        }
        for annotation in ["summary", "description"] {
            if alert["annotations"][annotation]
                .as_str()
                .is_none_or(str::is_empty)
            {
                errors.push(format!("alert {name} has no {annotation}"));
            }
        }
    }
    assert_no_errors(errors);

    // The groups as a Prometheus rule file: promtool parses them, then fires them on
    // synthetic series.
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("slo-guard-rules.yaml"),
        serde_yaml::to_string(&rule["spec"]).unwrap(),
    )
    .unwrap();
    let check = promtool(&["check", "rules", "slo-guard-rules.yaml"], dir.path());
    assert!(
        check.status.success()
            && text(&check.stdout).contains(&format!("SUCCESS: {} rules found", ALERTS.len())),
        "promtool check rules:\n{}{}",
        text(&check.stdout),
        text(&check.stderr)
    );

    let tests = std::fs::read_to_string(root().join(ALERT_TESTS)).expect("the alert tests");
    // Every alert is shown firing at least once.
    let suite: Yaml = serde_yaml::from_str(&tests).expect("YAML");
    let fired: BTreeSet<&str> = suite["tests"]
        .as_sequence()
        .expect("tests")
        .iter()
        .flat_map(|test| test["alert_rule_test"].as_sequence().into_iter().flatten())
        .filter(|case| {
            case["exp_alerts"]
                .as_sequence()
                .is_some_and(|a| !a.is_empty())
        })
        .filter_map(|case| case["alertname"].as_str())
        .collect();
    assert_eq!(
        fired,
        ALERTS.into_iter().collect::<BTreeSet<_>>(),
        "alerts the unit tests fire"
    );
    std::fs::write(dir.path().join("slo-guard-alerts.test.yaml"), tests).unwrap();
    let test = promtool(&["test", "rules", "slo-guard-alerts.test.yaml"], dir.path());
    assert!(
        test.status.success(),
        "promtool test rules {ALERT_TESTS}:\n{}{}",
        text(&test.stdout),
        text(&test.stderr)
    );
}

/// The number an alert compares the p99 with.
fn latency_threshold(documents: &[Yaml]) -> f64 {
    let rules = alert_rules(prometheus_rule(documents));
    let latency = rules
        .iter()
        .find(|r| r["alert"] == "SloGuardLatencyNearTimeout")
        .expect("the latency alert");
    let expr = latency["expr"].as_str().unwrap();
    let (_, threshold) = expr.rsplit_once(">=").expect("p99 >= threshold");
    threshold.trim().parse().expect("a number")
}

#[test]
fn latency_alert_threshold_follows_the_webhook_timeout_within_the_histogram() {
    let buckets = &exposed().latency_buckets;
    let top = buckets.iter().copied().fold(f64::NAN, f64::max);
    assert!(top.is_finite(), "buckets {buckets:?}");
    for (timeout, ratio) in [
        (1, "0.8"),
        (2, "0.8"),
        (3, "0.8"),
        (5, "0.8"),
        (30, "0.8"),
        (2, "0.5"),
    ] {
        let documents = render_observability(&[
            &format!("webhooks.timeoutSeconds={timeout}"),
            &format!("prometheusRule.latency.timeoutRatio={ratio}"),
        ]);
        let threshold = latency_threshold(&documents);
        let expected = (ratio.parse::<f64>().unwrap() * f64::from(timeout)).min(top);
        assert!(
            (threshold - expected).abs() < 1e-9,
            "timeout {timeout}s x {ratio}: threshold {threshold}, expected {expected} (the \
             histogram's last finite bucket is {top}s: a p99 past it reads as {top})"
        );
    }
}

#[test]
fn dashboard_and_rule_are_off_by_default_and_follow_their_values() {
    let defaults = render(&[]);
    assert!(
        !defaults.iter().any(
            |d| d["kind"] == "PrometheusRule" || d["metadata"]["name"] == "slo-guard-dashboard"
        ),
        "off by default"
    );
    // Without the PrometheusRule API, no PrometheusRule (as for the ServiceMonitor).
    let without_api = rendered(&[
        "template",
        RELEASE,
        CHART,
        "--namespace",
        NAMESPACE,
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "grafanaDashboard.enabled=true",
    ]);
    assert!(!without_api.iter().any(|d| d["kind"] == "PrometheusRule"));
    dashboard_configmap(&without_api);

    let documents = render_observability(&[
        "grafanaDashboard.namespace=monitoring",
        "grafanaDashboard.labels.grafana_dashboard=null",
        "grafanaDashboard.labels.dashboards=slo",
        "grafanaDashboard.annotations.grafana_folder=SLO",
        "prometheusRule.labels.release=kube-prometheus-stack",
        "prometheusRule.additionalLabels.team=platform",
        "prometheusRule.runbookUrl=https://runbooks.example/slo-guard",
        "prometheusRule.latency.enabled=false",
        "prometheusRule.unavailable.severity=page",
    ]);
    let configmap = dashboard_configmap(&documents);
    assert_eq!(configmap["metadata"]["namespace"], "monitoring");
    assert_eq!(configmap["metadata"]["labels"]["dashboards"], "slo");
    assert!(configmap["metadata"]["labels"]["grafana_dashboard"].is_null());
    assert_eq!(
        configmap["metadata"]["annotations"]["grafana_folder"],
        "SLO"
    );
    let rule = prometheus_rule(&documents);
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let rules = alert_rules(rule);
    let names: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    assert_eq!(
        names,
        [
            "SloGuardUnavailable",
            "SloGuardSloDataUnavailable",
            "SloGuardPrometheusErrors",
            "SloGuardPolicyRejected"
        ]
    );
    for alert in &rules {
        let name = alert["alert"].as_str().unwrap();
        assert_eq!(alert["labels"]["team"], "platform", "{name}");
        assert_eq!(
            alert["annotations"]["runbook_url"],
            format!("https://runbooks.example/slo-guard#{}", name.to_lowercase()).as_str()
        );
    }
    assert_eq!(rules[0]["labels"]["severity"], "page");

    // Another scrape job: the selector replaces the default everywhere.
    let dir = tempfile::tempdir().expect("tmp");
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        "prometheusRule:\n  enabled: true\n  selector: 'job=\"kubernetes-pods\",app=\"slo-guard\"'\n",
    )
    .unwrap();
    let custom = render_with(&["-f", values.to_str().unwrap()]);
    for alert in alert_rules(prometheus_rule(&custom)) {
        let expr = alert["expr"].as_str().unwrap();
        assert!(
            expr.contains(r#"{job="kubernetes-pods",app="slo-guard""#)
                && !expr.contains("namespace=\"slo-guard\""),
            "{expr}"
        );
    }

    // The schema knows the new values: a misspelt one is refused.
    let typo = helm(&[
        "template",
        RELEASE,
        CHART,
        "--set",
        "prometheusRule.latency.timeoutRatoi=0.5",
    ]);
    assert!(
        !typo.status.success() && text(&typo.stderr).contains("timeoutRatoi"),
        "{}",
        text(&typo.stderr)
    );
    let lint = helm(&[
        "lint",
        "--strict",
        CHART,
        "--set",
        "grafanaDashboard.enabled=true",
        "--set",
        "prometheusRule.enabled=true",
    ]);
    assert!(
        lint.status.success(),
        "{}{}",
        text(&lint.stdout),
        text(&lint.stderr)
    );
}
