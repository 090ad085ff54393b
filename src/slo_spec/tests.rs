//! The mapping from each tool's spec, on plain values.

use std::time::Duration;

use super::*;

fn yaml(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).expect("test YAML parses")
}

fn document(text: &str) -> SloSpecDocument {
    SloSpecDocument::recognize(&yaml(text), "payments", "test.yaml#1")
        .expect("recognized")
        .expect("an SLO spec")
}

fn catalog(texts: &[&str]) -> SloSpecCatalog {
    let mut catalog = SloSpecCatalog::default();
    for text in texts {
        let event = catalog.insert(document(text));
        assert!(matches!(event, CatalogEvent::Loaded(_)), "{event:?}");
    }
    catalog
}

/// What a policy in `namespace` that names `kind` `name` (one SLO, no
/// `slo.source.slo`) gets at the default period.
fn resolve(
    catalog: &SloSpecCatalog,
    kind: SloSpecKind,
    name: &str,
    namespace: &str,
) -> Result<MappedSlo, SpecError> {
    catalog.resolve(&source(kind, name, None), namespace, None)
}

/// A catalog of `texts` and what a policy in `namespace` that names `kind` `name` gets
/// from it at the default period; fails the test when it gets an error.
fn resolved(
    texts: &[&str],
    kind: SloSpecKind,
    name: &str,
    namespace: &str,
) -> (SloSpecCatalog, MappedSlo) {
    let catalog = catalog(texts);
    let mapped = resolve(&catalog, kind, name, namespace).expect("the spec resolves");
    (catalog, mapped)
}

/// Fails unless `mapped` has this objective, period and error query.
fn assert_figures(mapped: &MappedSlo, objective: f64, period: &str, errors: &str) {
    assert_eq!(mapped.objective, objective);
    assert_eq!(mapped.period.as_str(), period);
    assert_eq!(mapped.errors, errors);
}

/// Fails unless a policy in `namespace` that names `source` is refused with `expected`
/// in the message.
fn assert_refused(catalog: &SloSpecCatalog, source: &SourceRef, namespace: &str, expected: &str) {
    let error = catalog
        .resolve(source, namespace, None)
        .unwrap_err()
        .to_string();
    assert!(error.contains(expected), "{error}");
}

fn source(kind: SloSpecKind, name: &str, slo: Option<&str>) -> SourceRef {
    SourceRef {
        kind,
        name: name.into(),
        slo: slo.map(str::to_string),
    }
}

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

/// Sloth's own getting-started example, a `prometheus/v1` spec file.
const SLOTH_FILE: &str = r#"
version: "prometheus/v1"
service: "myservice"
labels: {owner: "myteam"}
slos:
  - name: "requests-availability"
    objective: 99.9
    sli:
      events:
        error_query: sum(rate(http_request_duration_seconds_count{job="myservice",code=~"(5..|429)"}[{{.window}}]))
        total_query: sum(rate(http_request_duration_seconds_count{job="myservice"}[{{ .window }}]))
    alerting: {page_alert: {disable: true}, ticket_alert: {disable: true}}
"#;

/// The checkout spec at 99.5%, with a second SLO, `latency`, written as a raw ratio.
fn sloth_crd() -> String {
    crate::policy::fixtures::SLOTH_CHECKOUT.replace("objective: 99.9", "objective: 99.5")
        + r#"    - name: latency
      objective: 99
      sli:
        raw:
          errorRatioQuery: 1 - histogram_quantile(0.99, rate(x[{{.window}}]))
      alerting: {pageAlert: {disable: true}, ticketAlert: {disable: true}}
"#
}

const PYRRA: &str = r#"
apiVersion: pyrra.dev/v1alpha1
kind: ServiceLevelObjective
metadata: {name: api-errors, namespace: payments}
spec:
  target: "99.9"
  window: 4w
  indicator:
    ratio:
      errors:
        metric: http_requests_total{job="api",code=~"5.."}
      total:
        metric: http_requests_total{job="api"}
"#;

const OPENSLO_INLINE: &str = r#"
apiVersion: openslo/v1
kind: SLO
metadata: {name: search}
spec:
  service: search
  budgetingMethod: Occurrences
  timeWindow: [{duration: 28d, isRolling: true}]
  objectives: [{displayName: good-requests, target: 0.995}]
  indicator:
    metadata: {name: search-ratio}
    spec:
      ratioMetric:
        counter: true
        good:
          metricSource: {type: Prometheus, spec: {query: 'search_requests_total{code!~"5.."}'}}
        total:
          metricSource: {type: Prometheus, spec: {query: search_requests_total}}
"#;

const OPENSLO_BY_REF: &str = r#"
apiVersion: openslo/v1
kind: SLO
metadata: {name: search-ref, namespace: payments}
spec:
  service: search
  timeWindow: [{duration: 7d, isRolling: true}]
  objectives: [{targetPercent: 99}]
  indicatorRef: search-errors
"#;

const OPENSLO_SLI: &str = r#"
apiVersion: openslo/v1
kind: SLI
metadata: {name: search-errors, namespace: payments}
spec:
  ratioMetric:
    counter: true
    bad:
      metricSource: {type: Prometheus, spec: {query: 'sum(rate(search_requests_total{code=~"5.."}[{{.window}}]))'}}
    total:
      metricSource: {type: Prometheus, spec: {query: 'sum(rate(search_requests_total[{{.window}}]))'}}
"#;

#[test]
fn a_sloth_spec_file_maps_to_window_queries_and_its_recording_rules() {
    // A prometheus/v1 file has no namespace: any policy may name it, by its service.
    let (_, mapped) = resolved(
        &[SLOTH_FILE],
        SloSpecKind::PrometheusServiceLevel,
        "myservice",
        "shop",
    );
    assert_eq!(mapped.objective, 99.9);
    assert_eq!(mapped.period.as_str(), "30d", "Sloth's default period");
    assert_eq!(
        mapped.errors,
        r#"sum(rate(http_request_duration_seconds_count{job="myservice",code=~"(5..|429)"}[{{window}}]))"#
    );
    assert_eq!(
        mapped.total,
        r#"sum(rate(http_request_duration_seconds_count{job="myservice"}[{{window}}]))"#
    );
    assert_eq!(
        mapped.origin,
        "Sloth PrometheusServiceLevel myservice, SLO requests-availability"
    );
    let rules = mapped.recorded.expect("Sloth records its windows");
    assert_eq!(rules.tool, RecordingTool::Sloth);
    let names: Vec<&str> = rules.windows.iter().map(|w| w.rule.as_str()).collect();
    assert_eq!(
        names,
        [
            "slo:sli_error:ratio_rate5m",
            "slo:sli_error:ratio_rate30m",
            "slo:sli_error:ratio_rate1h",
            "slo:sli_error:ratio_rate2h",
            "slo:sli_error:ratio_rate6h",
            "slo:sli_error:ratio_rate1d",
            "slo:sli_error:ratio_rate3d",
            "slo:sli_error:ratio_rate30d",
        ]
    );
    let hour = rules.window(Duration::from_secs(HOUR)).unwrap();
    assert_eq!(
        hour.query,
        r#"max(slo:sli_error:ratio_rate1h{sloth_service="myservice",sloth_slo="requests-availability"})"#
    );
    assert_eq!(hour.caveat, None);
    let period = rules.window(Duration::from_secs(30 * DAY)).unwrap();
    assert_eq!(
        period.caveat,
        Some("Sloth's time-weighted mean of its 5m error ratios"),
        "the period's rule is a mean of 5m ratios, not errors over total"
    );
    assert!(rules.window(Duration::from_secs(4 * HOUR)).is_none());
}

#[test]
fn a_sloth_crd_names_its_slo_and_takes_the_generators_period() {
    let catalog = catalog(&[&sloth_crd()]);
    let wanted = |slo: Option<&str>| source(SloSpecKind::PrometheusServiceLevel, "checkout", slo);
    assert_refused(
        &catalog,
        &wanted(None),
        "payments",
        "lists 2 SLOs (availability, latency): name one with slo.source.slo",
    );
    assert_refused(
        &catalog,
        &wanted(Some("nope")),
        "payments",
        "has no SLO named \"nope\" (it has: availability, latency)",
    );
    assert_refused(
        &catalog,
        &wanted(Some("latency")),
        "payments",
        "a raw SLI (errorRatioQuery)",
    );

    let period = PromDuration::parse("28d").unwrap();
    let mapped = catalog
        .resolve(&wanted(Some("availability")), "payments", Some(&period))
        .unwrap();
    assert_eq!(mapped.objective, 99.5);
    assert_eq!(mapped.period.as_str(), "28d");
    let rules = mapped.recorded.unwrap();
    assert_eq!(
        rules.window(Duration::from_secs(28 * DAY)).unwrap().rule,
        "slo:sli_error:ratio_rate4w",
        "Prometheus prints 28d as 4w, and so does Sloth"
    );
    // Another namespace's policy does not see it.
    let error = catalog
        .resolve(&wanted(Some("availability")), "shop", None)
        .unwrap_err();
    assert!(matches!(error, SpecError::NotFound { .. }), "{error}");
    // Sloth's default catalogs know only 30d and 28d.
    let week = PromDuration::parse("7d").unwrap();
    let mapped = catalog
        .resolve(&wanted(Some("availability")), "payments", Some(&week))
        .unwrap();
    assert_eq!(mapped.recorded, None);
}

#[test]
fn a_pyrra_ratio_indicator_maps_counters_to_rates_and_burnrate_rules() {
    let (catalog, mapped) = resolved(
        &[PYRRA],
        SloSpecKind::ServiceLevelObjective,
        "api-errors",
        "payments",
    );
    assert_figures(
        &mapped,
        99.9,
        "4w",
        r#"(sum(rate(http_requests_total{job="api",code=~"5.."}[{{window}}])) or vector(0))"#,
    );
    assert_eq!(
        mapped.total,
        r#"sum(rate(http_requests_total{job="api"}[{{window}}]))"#
    );
    let rules = mapped.recorded.unwrap();
    assert_eq!(rules.tool, RecordingTool::Pyrra);
    let hour = rules.window(Duration::from_secs(HOUR)).unwrap();
    assert_eq!(hour.rule, "http_requests:burnrate1h");
    // The burnrate series are error ratios, filtered by the total's equalities.
    assert_eq!(
        hour.query,
        r#"sum(http_requests:burnrate1h{job="api",slo="api-errors"})"#
    );
    let period = rules.window(Duration::from_secs(28 * DAY)).unwrap();
    assert_eq!(
        period.query,
        r#"(sum(http_requests:increase4w{job="api",code=~"5..",slo="api-errors"}) or vector(0)) / sum(http_requests:increase4w{job="api",slo="api-errors"})"#
    );
    assert_eq!(period.rule, "http_requests:increase4w");

    // A policy may not restate the period of a spec that has one.
    let error = catalog
        .resolve(
            &source(SloSpecKind::ServiceLevelObjective, "api-errors", None),
            "payments",
            Some(&PromDuration::parse("30d").unwrap()),
        )
        .unwrap_err()
        .to_string();
    assert!(error.contains("only a Sloth spec"), "{error}");
}

#[test]
fn pyrra_windows_scale_from_28_days_and_round_to_the_minute() {
    let minutes = |list: &[u64]| -> Vec<Duration> {
        list.iter()
            .map(|m| Duration::from_secs(m * MINUTE))
            .collect()
    };
    assert_eq!(
        pyrra_windows(Duration::from_secs(28 * DAY)),
        minutes(&[5, 30, 60, 120, 360, 24 * 60, 4 * 24 * 60])
    );
    // 30d: 1h4m17s rounds to 1h4m, 5m21s to 5m, as Pyrra's Windows does.
    let thirty = pyrra_windows(Duration::from_secs(30 * DAY));
    assert!(
        thirty.contains(&Duration::from_secs(64 * MINUTE)),
        "{thirty:?}"
    );
    assert!(
        thirty.contains(&Duration::from_secs(5 * MINUTE)),
        "{thirty:?}"
    );
    assert_eq!(
        prometheus_duration_text(Duration::from_secs(64 * MINUTE)),
        "1h4m"
    );
}

#[test]
fn pyrra_rejects_what_it_cannot_read() {
    let latency = PYRRA.replace("ratio:", "latency:");
    let mut catalog = SloSpecCatalog::default();
    let event = catalog.insert(document(&latency));
    let CatalogEvent::Rejected { error, .. } = event else {
        panic!("{event:?}");
    };
    assert!(
        error.contains("slo-guard reads ratio indicators"),
        "{error}"
    );
    let bad = PYRRA.replace(r#"http_requests_total{job="api"}"#, "sum(rate(x[5m]))");
    let event = catalog.insert(document(&bad));
    assert!(matches!(event, CatalogEvent::Rejected { .. }), "{event:?}");
}

#[test]
fn openslo_inline_ratio_metrics_take_good_from_total() {
    // No metadata.namespace: the namespace it was read in (kubectl's default).
    let (_, mapped) = resolved(&[OPENSLO_INLINE], SloSpecKind::Slo, "search", "payments");
    assert!((mapped.objective - 99.5).abs() < 1e-9);
    assert_eq!(mapped.period.as_str(), "28d");
    assert_eq!(mapped.total, "sum(rate(search_requests_total[{{window}}]))");
    assert_eq!(
        mapped.errors,
        r#"(sum(rate(search_requests_total[{{window}}]))) - (sum(rate(search_requests_total{code!~"5.."}[{{window}}])))"#
    );
    assert_eq!(mapped.recorded, None, "OpenSLO has no recording rules");
}

#[test]
fn openslo_reads_a_referenced_sli_among_the_loaded_specs() {
    let (_, mapped) = resolved(
        &[OPENSLO_BY_REF, OPENSLO_SLI],
        SloSpecKind::Slo,
        "search-ref",
        "payments",
    );
    assert_figures(
        &mapped,
        99.0,
        "7d",
        r#"sum(rate(search_requests_total{code=~"5.."}[{{window}}]))"#,
    );

    let alone = self::catalog(&[OPENSLO_BY_REF]);
    let error = resolve(&alone, SloSpecKind::Slo, "search-ref", "payments")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(
            "spec.indicatorRef \"search-errors\": that SLI is not among the specs slo-guard read"
        ),
        "{error}"
    );
}

#[test]
fn openslo_rejects_time_slices_calendars_and_windowless_queries() {
    for (change, expected) in [
        (
            (
                "budgetingMethod: Occurrences",
                "budgetingMethod: Timeslices",
            ),
            "not time slices",
        ),
        (("isRolling: true", "isRolling: false"), "calendar-aligned"),
        (
            (
                "{query: search_requests_total}",
                "{query: 'sum(rate(search_requests_total[5m]))'}",
            ),
            "has no {{.window}} placeholder",
        ),
    ] {
        let text = OPENSLO_INLINE.replace(change.0, change.1);
        let mut catalog = SloSpecCatalog::default();
        let event = catalog.insert(document(&text));
        let CatalogEvent::Rejected { error, .. } = event else {
            panic!("{change:?} was accepted");
        };
        assert!(error.contains(expected), "{error}");
    }
}

#[test]
fn a_rejected_spec_keeps_the_last_good_version_and_says_why() {
    let mut catalog = catalog(&[PYRRA]);
    let broken = PYRRA.replace(r#"target: "99.9""#, r#"target: "120""#);
    let event = catalog.insert(document(&broken));
    assert!(
        matches!(&event, CatalogEvent::Rejected { kept_previous: true, error, .. } if error.contains("strictly between 0 and 100")),
        "{event:?}"
    );
    let mapped = resolve(
        &catalog,
        SloSpecKind::ServiceLevelObjective,
        "api-errors",
        "payments",
    )
    .unwrap();
    assert_eq!(mapped.objective, 99.9, "the last good version stays");

    let mut fresh = SloSpecCatalog::default();
    fresh.insert(document(&broken));
    let error = resolve(
        &fresh,
        SloSpecKind::ServiceLevelObjective,
        "api-errors",
        "payments",
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("was rejected"), "{error}");
    let error = resolve(
        &fresh,
        SloSpecKind::ServiceLevelObjective,
        "other",
        "payments",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("Pyrra ServiceLevelObjective payments/other not found"),
        "{error}"
    );
}

#[test]
fn documents_of_other_kinds_and_versions_are_told_apart() {
    let configmap = yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
    assert_eq!(
        SloSpecDocument::recognize(&configmap, "default", "x").unwrap(),
        None
    );
    let alpha = yaml("apiVersion: openslo/v1alpha\nkind: SLO\nmetadata: {name: x}\n");
    let error = SloSpecDocument::recognize(&alpha, "default", "x").unwrap_err();
    assert!(
        error.to_string().contains("slo-guard reads openslo/v1"),
        "{error}"
    );
}

#[test]
fn window_templates_and_durations_convert() {
    assert_eq!(
        convert_window_template("rate(x[{{.window}}]) / rate(y[{{ .window }}])").unwrap(),
        "rate(x[{{window}}]) / rate(y[{{window}}])"
    );
    assert!(convert_window_template("rate(x[{{.Window}}])").is_err());
    assert!(convert_window_template("rate(x[{{.window}])").is_err());
    for (seconds, text) in [
        (5 * MINUTE, "5m"),
        (DAY, "1d"),
        (3 * DAY, "3d"),
        (7 * DAY, "1w"),
        (30 * DAY, "30d"),
        (28 * DAY, "4w"),
        (90 * MINUTE, "1h30m"),
    ] {
        assert_eq!(prometheus_duration_text(Duration::from_secs(seconds)), text);
    }
}
