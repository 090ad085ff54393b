use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::admission::ChangeClass;
use crate::store::*;

fn design_example() -> ConfigMapDocument {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/checkout.yaml");
    let mut documents = read_manifests(&path, "default").expect("example policy reads");
    assert_eq!(documents.len(), 1);
    documents.remove(0)
}

fn with_policy(document: &ConfigMapDocument, yaml: &str) -> ConfigMapDocument {
    ConfigMapDocument {
        data: BTreeMap::from([(POLICY_KEY.to_string(), yaml.to_string())]),
        ..document.clone()
    }
}

#[test]
fn the_design_example_parses_with_every_section() {
    let document = design_example();
    let id = PolicyRef {
        namespace: document.namespace.clone(),
        name: document.name.clone(),
    };
    let policy = parse_policy_configmap(&id, &document.data).unwrap();
    let spec = &policy.spec;
    assert_eq!(policy.id.to_string(), "payments/checkout");
    assert_eq!(spec.action, Mode::Enforce);
    assert_eq!(spec.scaling.as_ref().unwrap().max_replicas, Some(20));
    assert_eq!(
        spec.scaling.as_ref().unwrap().max_step,
        Some(Step::Replicas(5))
    );
    let slo = spec.slo.as_ref().unwrap();
    assert_eq!(slo.objective, 99.9);
    assert_eq!(slo.period.as_str(), "30d");
    assert_eq!(slo.burn_rate.len(), 2);
    assert_eq!(slo.budget.agent_freeze_below, Some(0.25));
    assert_eq!(spec.prometheus.on_error, OnError::DenyAgents);
    assert_eq!(
        spec.windows.as_ref().unwrap().freeze[0].timezone,
        Some(chrono_tz::Europe::Berlin)
    );
    assert_eq!(
        spec.approval.as_ref().unwrap().required_for,
        vec![ChangeClass::Rollout]
    );
}

#[test]
fn every_example_in_policies_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let store = PolicyStore::new("slo-guard");
    let documents = read_manifests(&dir, "default").unwrap();
    assert!(documents.len() >= 3);
    for event in store.replace_all(None, &documents) {
        assert!(matches!(event, StoreEvent::Loaded { .. }), "{event:?}");
    }
}

#[test]
fn errors_name_the_field_and_the_bad_value() {
    let cases = [
        (
            "match: {kinds: [Deployment]}\nscaling: {maxReplicas: -3}",
            "field `scaling.maxReplicas`",
            "-3",
        ),
        (
            "match: {kinds: [Deployment]}\nscaling: {maxReplicas: 5, minReplicas: 9}",
            "field `scaling.minReplicas`",
            "9 is above scaling.maxReplicas 5",
        ),
        (
            "match: {kinds: [Deployment]}\nscalling: {maxReplicas: 5}",
            "unknown field `scalling`",
            "",
        ),
        (
            "match: {kinds: [Deploymnet]}",
            "field `match.kinds[0]`",
            "Deploymnet",
        ),
        (
            "match: {kinds: [Deployment]}\naction: block",
            "field `action`",
            "block",
        ),
        (
            "match: {kinds: [Deployment]}\nagents: {minConfidence: 7}",
            "field `agents.minConfidence`",
            "7 is outside 0..1",
        ),
        (
            "match: {kinds: [Deployment]}\nslo: {objective: 99.9, period: 30d, errors: 'sum(rate(x[5m]))', total: 'sum(rate(y[{{window}}]))'}",
            "field `slo.errors`",
            "{{window}}",
        ),
        (
            "match: {kinds: [Deployment]}\nslo: {objective: 100, period: 30d, errors: 'x[{{window}}]', total: 'y[{{window}}]'}",
            "field `slo.objective`",
            "100",
        ),
        (
            "match: {kinds: [Deployment]}\nslo: {objective: 99, period: 30 days, errors: 'x[{{window}}]', total: 'y[{{window}}]'}",
            "field `slo.period`",
            "30 days",
        ),
        (
            "match: {kinds: [Deployment]}\nslo: {objective: 99, period: 30d, errors: 'x[{{window}}]', total: 'y[{{window}}]', burnRate: [{long: 5m, short: 1h, factor: 14.4}]}",
            "field `slo.burnRate[0].short`",
            "1h must be shorter than long 5m",
        ),
        (
            "match: {kinds: [Deployment]}\ntraffic: {current: a, baseline: b, spikeRatio: 0.5}",
            "field `traffic.spikeRatio`",
            "0.5",
        ),
        (
            "match: {kinds: [Deployment]}\nwindows: {freeze: [{days: [Sat], timezone: Mars/Olympus}]}",
            "field `windows.freeze[0].timezone`",
            "Mars/Olympus",
        ),
        (
            "match: {kinds: [Deployment]}\nwindows: {freeze: [{days: [Sat], start: '25:00', timezone: UTC}]}",
            "field `windows.freeze[0].start`",
            "25:00",
        ),
        (
            "match: {kinds: [Deployment]}\nprometheus: {onError: maybe}",
            "field `prometheus.onError`",
            "maybe",
        ),
        (
            "match: {kinds: [Deployment]}\nprometheus: {timeout: 40s}",
            "field `prometheus.timeout`",
            "40s",
        ),
        (
            "match: {kinds: [Deployment]}\nscaling: {appliesTo: robots}",
            "field `scaling.appliesTo`",
            "robots",
        ),
        (
            "match: {kinds: [Deployment]}\nagents: {forbidden: [explode]}",
            "field `agents.forbidden[0]`",
            "explode",
        ),
        (
            "match: {kinds: [Deployment]}\nwindows: {freeze: [{from: '2026-12-20T00:00:00+01:00', until: '2026-12-19T00:00:00+01:00'}]}",
            "field `windows.freeze[0].until`",
            "2026-12-19T00:00:00+01:00 is not after from 2026-12-20T00:00:00+01:00",
        ),
        (
            "match: {kinds: [Deployment]}\nwindows: {freeze: [{from: '2026-12-20T00:00:00+01:00', until: '2026-12-20T00:00:00+01:00'}]}",
            "field `windows.freeze[0].until`",
            "is not after from",
        ),
        (
            "match: {kinds: [Deployment]}\nwindows: {freeze: [{from: '2026-12-20T00:00:00', until: '2027-01-04T00:00:00+01:00'}]}",
            "field `windows.freeze[0].from`",
            "\"2026-12-20T00:00:00\" is not an RFC 3339 time with an offset",
        ),
        (
            "match: {kinds: [Deployment]}\nwindows: {freeze: [{from: '2026-12-20T00:00:00Z'}]}",
            "field `windows.freeze[0].until`",
            "a dated freeze needs both from and until",
        ),
        (
            "match: {kinds: [Deployment]}\nwindows: {freeze: [{days: [Sat], timezone: UTC, from: '2026-12-20T00:00:00Z', until: '2026-12-21T00:00:00Z'}]}",
            "field `windows.freeze[0].days`",
            "either weekly (days, start, end, timezone) or dated (from, until), not both: this one sets from/until and days, timezone",
        ),
        (
            "match: {kinds: [Deployment]}\nwindows: {freeze: [{days: [Sat]}]}",
            "field `windows.freeze[0].timezone`",
            "a weekly freeze needs an IANA time zone",
        ),
        (
            "match: {kinds: [Deployment]}\nwindows: {freeze: [{name: x, days: [Sat], timezone: UTC}, {name: x, from: '2026-12-20T00:00:00Z', until: '2026-12-21T00:00:00Z'}]}",
            "field `windows.freeze[1].name`",
            "names another freeze too",
        ),
        (
            "match: {kinds: [Deployment]}\nwindows: {freeze: [{name: 'holiday freeze', days: [Sat], timezone: UTC}]}",
            "field `windows.freeze[0].name`",
            "\"holiday freeze\" is not a name",
        ),
        (
            "match: {kinds: [Deployment]}\nwindows: {maxException: 0s}",
            "field `windows.maxException`",
            "must be greater than zero",
        ),
        (
            "match: {kinds: [Deployment]}\nwindows: {freeze: [{from: '2026-12-20T00:00:00Z', until: '2026-12-21T00:00:00Z', tz: UTC}]}",
            "unknown field `tz`",
            "",
        ),
        ("[not, a, map]", "", "invalid type"),
        ("", "policy.yaml: is empty", ""),
    ];
    for (yaml, field, value) in cases {
        let error = parse_policy(POLICY_KEY, yaml).unwrap_err().to_string();
        assert!(
            error.contains(field) && error.contains(value),
            "{yaml:?} gave {error:?}"
        );
    }
}

#[test]
fn a_configmap_with_stray_or_missing_keys_is_rejected() {
    let id = PolicyRef {
        namespace: "payments".into(),
        name: "checkout".into(),
    };
    let stray = BTreeMap::from([("polcy.yaml".to_string(), "match: {}".to_string())]);
    let error = parse_policy_configmap(&id, &stray).unwrap_err().to_string();
    assert!(error.contains("unexpected key `polcy.yaml`"), "{error}");
    let error = parse_policy_configmap(&id, &BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("has no `policy.yaml` key (found: no keys)"),
        "{error}"
    );
}

#[test]
fn a_bad_update_keeps_the_last_good_version_in_force() {
    let store = PolicyStore::new("slo-guard");
    let good = design_example();
    assert!(matches!(store.apply(&good), StoreEvent::Loaded { .. }));
    let bad = with_policy(
        &good,
        "match: {kinds: [Deployment]}\nscaling: {maxReplicas: lots}",
    );
    match store.apply(&bad) {
        StoreEvent::Rejected {
            error,
            kept_previous,
            ..
        } => {
            assert!(kept_previous);
            assert!(error.contains("scaling.maxReplicas"), "{error}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    let snapshot = store.snapshot();
    assert_eq!(snapshot.policies.len(), 1);
    assert_eq!(
        snapshot.policies[0]
            .spec
            .scaling
            .as_ref()
            .unwrap()
            .max_replicas,
        Some(20)
    );
    assert_eq!(store.errors().len(), 1);

    // Fixing it clears the error and takes the new version.
    let fixed = with_policy(
        &good,
        "match: {kinds: [Deployment]}\nscaling: {maxReplicas: 8}",
    );
    assert!(matches!(store.apply(&fixed), StoreEvent::Loaded { .. }));
    assert_eq!(
        store.snapshot().policies[0]
            .spec
            .scaling
            .as_ref()
            .unwrap()
            .max_replicas,
        Some(8)
    );
    assert!(store.errors().is_empty());
}

#[test]
fn a_new_configmap_that_never_validated_is_not_in_force() {
    let store = PolicyStore::new("slo-guard");
    let bad = with_policy(
        &design_example(),
        "match: {kinds: [Deployment]}\naction: maybe",
    );
    assert!(matches!(
        store.apply(&bad),
        StoreEvent::Rejected {
            kept_previous: false,
            ..
        }
    ));
    assert!(store.snapshot().policies.is_empty());
}

#[test]
fn removing_the_label_or_the_configmap_withdraws_it() {
    let store = PolicyStore::new("slo-guard");
    let good = design_example();
    store.apply(&good);
    let unlabelled = ConfigMapDocument {
        labels: BTreeMap::new(),
        ..good.clone()
    };
    assert!(matches!(
        store.apply(&unlabelled),
        StoreEvent::Removed { .. }
    ));
    assert!(store.snapshot().policies.is_empty());
    store.apply(&good);
    assert!(matches!(
        store.remove("payments", "checkout"),
        StoreEvent::Removed { .. }
    ));
    assert!(store.snapshot().policies.is_empty());
}

#[test]
fn only_the_guard_namespace_may_govern_other_namespaces() {
    let store = PolicyStore::new("slo-guard");
    let document = with_policy(
        &design_example(),
        "match: {kinds: [Deployment], namespaces: [\"*\"]}",
    );
    match store.apply(&document) {
        StoreEvent::Rejected { error, .. } => {
            assert!(error.contains("match.namespaces"), "{error}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

mod matching {
    use super::*;
    use crate::admission::{Target, TargetKind, WorkloadKind};

    fn target(namespace: &str, name: &str, labels: &[(&str, &str)], labels_known: bool) -> Target {
        Target {
            kind: TargetKind::Workload(WorkloadKind::Deployment),
            namespace: namespace.into(),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            labels_known,
            pod_labels: Default::default(),
            before: None,
            owners: Vec::new(),
        }
    }

    fn set() -> PolicySet {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let store = PolicyStore::new("slo-guard");
        store.replace_all(None, &read_manifests(&dir, "default").unwrap());
        let snapshot = store.snapshot();
        PolicySet {
            policies: snapshot.policies.clone(),
            reflections: Vec::new(),
            guard_namespace: "slo-guard".into(),
            slo_specs: Default::default(),
        }
    }

    fn matched(set: &PolicySet, target: &Target) -> Vec<(String, MatchBasis)> {
        set.matching(target)
            .map(|(p, basis)| (p.id.to_string(), basis))
            .collect()
    }

    #[test]
    fn by_namespace_kind_and_selector() {
        let set = set();
        let checkout = target("payments", "checkout", &[("app", "checkout")], true);
        assert_eq!(
            matched(&set, &checkout),
            vec![("payments/checkout".to_string(), MatchBasis::Labels)]
        );
        assert!(matched(&set, &target("payments", "cart", &[("app", "cart")], true)).is_empty());
        assert!(
            matched(
                &set,
                &target("shipping", "checkout", &[("app", "checkout")], true)
            )
            .is_empty()
        );
    }

    #[test]
    fn unknown_labels_match_conservatively() {
        let set = set();
        let scale_target = target("payments", "cart", &[], false);
        assert_eq!(
            matched(&set, &scale_target),
            vec![("payments/checkout".to_string(), MatchBasis::Assumed)]
        );
    }

    #[test]
    fn guard_namespace_policies_govern_listed_namespaces() {
        let set = set();
        let mut db = target("team-data", "postgres", &[], true);
        db.kind = TargetKind::Workload(WorkloadKind::StatefulSet);
        assert_eq!(matched(&set, &db).len(), 1);
        db.namespace = "other".into();
        assert!(matched(&set, &db).is_empty());
    }
}

#[test]
fn a_freeze_is_weekly_or_dated() {
    let spec = parse_policy(
        POLICY_KEY,
        "match: {kinds: [Deployment]}\nwindows:\n  maxException: 12h\n  freeze:\n    - {name: weekend, days: [Sat, Sun], timezone: Europe/Berlin}\n    - {name: holiday-freeze, from: 2026-12-20T00:00:00+01:00, until: 2027-01-04T00:00:00+01:00, appliesTo: agents}\n",
    )
    .expect("valid");
    let windows = spec.windows.expect("windows");
    assert_eq!(
        windows.max_exception(),
        std::time::Duration::from_secs(12 * 3600)
    );
    assert!(!windows.freeze[0].is_dated());
    let holiday = &windows.freeze[1];
    assert!(holiday.is_dated());
    assert_eq!(
        holiday.until.map(|t| t.to_rfc3339()),
        Some("2027-01-04T00:00:00+01:00".to_string())
    );
    let default = parse_policy(
        POLICY_KEY,
        "match: {kinds: [Deployment]}\nwindows: {freeze: []}",
    )
    .expect("valid");
    assert_eq!(
        default.windows.expect("windows").max_exception(),
        std::time::Duration::from_secs(24 * 3600)
    );
}

mod slo_sources {
    use super::*;
    use crate::slo_spec::SloSpecDocument;

    use crate::policy::fixtures::SLOTH_CHECKOUT as SLOTH;

    const SOURCED: &str = "match: {kinds: [Deployment]}\nslo:\n  source: {kind: PrometheusServiceLevel, name: checkout, slo: availability}\n  budget: {agentFreezeBelow: 0.25}\n  burnRate: [{long: 1h, short: 5m, factor: 14.4}]\n";

    fn spec_document(text: &str) -> SloSpecDocument {
        let value: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
        SloSpecDocument::recognize(&value, "payments", "sloth.yaml#1")
            .unwrap()
            .unwrap()
    }

    fn policy_document(yaml: &str) -> ConfigMapDocument {
        ConfigMapDocument {
            namespace: "payments".into(),
            name: "checkout".into(),
            labels: BTreeMap::from([("slo-guard.io/policy".to_string(), "true".to_string())]),
            data: BTreeMap::from([(POLICY_KEY.to_string(), yaml.to_string())]),
            origin: "policy.yaml".into(),
        }
    }

    #[test]
    fn slo_takes_either_a_source_or_the_inline_fields() {
        let both = SOURCED.replace("  budget:", "  objective: 99.9\n  budget:");
        let error = parse_policy("policy.yaml", &both).unwrap_err().to_string();
        assert!(
            error.contains("sets both source (PrometheusServiceLevel checkout) and objective"),
            "{error}"
        );
        let neither = "match: {kinds: [Deployment]}\nslo:\n  objective: 99.9\n  period: 30d\n";
        let error = parse_policy("policy.yaml", neither)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("field `slo`: needs either source")
                && error.contains("missing: errors, total"),
            "{error}"
        );
        let unknown = SOURCED.replace("PrometheusServiceLevel", "Dashboard");
        let error = parse_policy("policy.yaml", &unknown)
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown variant `Dashboard`"), "{error}");
        // Parsing alone leaves the source to resolve.
        let spec = parse_policy("policy.yaml", SOURCED).unwrap();
        assert!(spec.slo.unwrap().awaits_source());
    }

    #[test]
    fn the_store_resolves_a_source_and_keeps_the_last_good_policy_when_its_spec_goes() {
        let store = PolicyStore::new("slo-guard");
        let event = store.apply(&policy_document(SOURCED));
        let StoreEvent::Rejected { error, .. } = event else {
            panic!("{event:?}");
        };
        assert!(
            error.contains(
                "field `slo.source`: Sloth PrometheusServiceLevel payments/checkout not found"
            ),
            "{error}"
        );
        // The spec comes: the waiting policy is resolved again.
        let (_, events) = store.apply_slo_spec(spec_document(SLOTH));
        assert!(
            matches!(events.as_slice(), [StoreEvent::Loaded { .. }]),
            "{events:?}"
        );
        let snapshot = store.snapshot();
        let slo = snapshot.policies[0].spec.slo.as_ref().unwrap();
        assert_eq!(slo.objective, 99.9);
        assert_eq!(slo.period.as_str(), "30d");
        assert!(slo.errors.contains("[{{window}}]"), "{}", slo.errors);
        let resolved = slo.resolved.as_ref().unwrap();
        assert_eq!(
            resolved.origin,
            "Sloth PrometheusServiceLevel payments/checkout, SLO availability"
        );
        assert!(resolved.recorded.is_some());

        // A bad new version of the spec: the spec's and the policy's last good stay.
        let bad = SLOTH.replace("objective: 99.9", "objective: 100");
        let (catalog_event, _) = store.apply_slo_spec(spec_document(&bad));
        assert!(
            matches!(
                catalog_event,
                crate::slo_spec::CatalogEvent::Rejected {
                    kept_previous: true,
                    ..
                }
            ),
            "{catalog_event:?}"
        );
        assert_eq!(
            store.snapshot().policies[0]
                .spec
                .slo
                .as_ref()
                .unwrap()
                .objective,
            99.9
        );
        // The spec goes away: the policy keeps its last good version and reports why.
        let events = store.remove_slo_spec(&spec_document(SLOTH).key());
        assert!(
            matches!(
                events.as_slice(),
                [StoreEvent::Rejected {
                    kept_previous: true,
                    ..
                }]
            ),
            "{events:?}"
        );
        assert_eq!(store.snapshot().policies.len(), 1);
        assert_eq!(store.errors().len(), 1);
    }

    #[test]
    fn a_spec_that_does_not_pass_as_a_policy_is_a_policy_error() {
        let store = PolicyStore::new("slo-guard");
        let windowless = SLOTH.replace(
            r#"sum(rate(http_requests_total{job="checkout"}[{{.window}}]))"#,
            r#"sum(rate(http_requests_total{job="checkout"}[5m]))"#,
        );
        let (event, _) = store.apply_slo_spec(spec_document(&windowless));
        let crate::slo_spec::CatalogEvent::Rejected { error, .. } = event else {
            panic!("{event:?}");
        };
        assert!(
            error.contains("sli.events.totalQuery has no {{.window}}"),
            "{error}"
        );
        let event = store.apply(&policy_document(SOURCED));
        let StoreEvent::Rejected { error, .. } = event else {
            panic!("{event:?}");
        };
        assert!(error.contains("was rejected"), "{error}");
    }

    #[test]
    fn policy_files_hold_specs_next_to_configmaps() {
        let text = format!(
            "{SLOTH}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: checkout, namespace: payments, labels: {{slo-guard.io/policy: \"true\"}}}}\ndata:\n  policy.yaml: |\n{}",
            SOURCED
                .lines()
                .map(|line| format!("    {line}\n"))
                .collect::<String>()
        );
        let sources = parse_sources_text(Path::new("both.yaml"), &text, "default").unwrap();
        assert_eq!(sources.slo_specs.len(), 1);
        assert_eq!(sources.configmaps.len(), 1);
        assert_eq!(
            parse_manifest_text(Path::new("both.yaml"), &text, "default")
                .unwrap()
                .len(),
            1,
            "ConfigMap readers pass specs over"
        );
        let store = PolicyStore::new("slo-guard");
        let (specs, policies) = store.replace_sources(&sources);
        assert!(
            matches!(specs.as_slice(), [crate::slo_spec::CatalogEvent::Loaded(_)]),
            "{specs:?}"
        );
        assert!(
            matches!(policies.as_slice(), [StoreEvent::Loaded { .. }]),
            "{policies:?}"
        );
        let error = parse_sources_text(
            Path::new("x.yaml"),
            "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n",
            "default",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("expected a ConfigMap or an SLO spec"),
            "{error}"
        );
    }

    #[test]
    fn specs_are_read_from_lists_and_sloth_spec_files() {
        let list = format!(
            "apiVersion: v1\nkind: List\nitems:\n{}",
            SLOTH
                .lines()
                .enumerate()
                .map(|(i, line)| if i == 0 {
                    format!("- {line}\n")
                } else {
                    format!("  {line}\n")
                })
                .collect::<String>()
        );
        let sources = parse_sources_text(Path::new("list.yaml"), &list, "default").unwrap();
        assert_eq!(sources.slo_specs.len(), 1, "{sources:?}");
        assert!(sources.configmaps.is_empty());

        let file = "version: prometheus/v1\nservice: checkout\nslos: []\n";
        let sources = parse_sources_text(Path::new("sloth.yaml"), file, "default").unwrap();
        let spec = &sources.slo_specs[0];
        assert_eq!(
            (spec.namespace.as_deref(), spec.name.as_str()),
            (None, "checkout")
        );
        let unnamed = "version: prometheus/v1\nslos: []\n";
        let error = parse_sources_text(Path::new("sloth.yaml"), unnamed, "default")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("a prometheus/v1 spec file needs a `service`"),
            "{error}"
        );
    }
}

#[test]
fn quantities_and_threshold_bounds_are_parsed_at_load_naming_the_field() {
    let cases = [
        (
            "match: {kinds: [Deployment]}\nscope: {maxMemory: lots}",
            "policy.yaml: field `scope.maxMemory`: \"lots\" is not a memory quantity such as 4Gi",
        ),
        (
            "match: {kinds: [Deployment]}\nreflection: {loosenBounds: {scaling.maxReplica: 30}}",
            "policy.yaml: field `reflection.loosenBounds.scaling.maxReplica`: unknown threshold",
        ),
        (
            "match: {kinds: [Deployment]}\nreflection: {loosenBounds: {traffic.spikeRatio: 0.5}}",
            "policy.yaml: field `reflection.loosenBounds.traffic.spikeRatio`: Number(0.5) must be a number above 1",
        ),
        (
            "match: {kinds: [Deployment]}\nscaling: {maxReplicas: 20}\nreflection: {loosenBounds: {scaling.maxReplicas: 10}}",
            "policy.yaml: field `reflection.loosenBounds.scaling.maxReplicas`: 10 is stricter than the policy's own 20: a loosening bound must be at least as loose",
        ),
    ];
    for (yaml, expected) in cases {
        let error = parse_policy(POLICY_KEY, yaml).unwrap_err().to_string();
        assert!(error.starts_with(expected), "{yaml:?} gave {error:?}");
    }
    let spec = parse_policy(
        POLICY_KEY,
        "match: {kinds: [Deployment]}\nscope: {maxMemory: 4Gi}\nreflection: {loosenBounds: {scaling.maxStep: \"50%\"}}",
    )
    .unwrap();
    let max_memory = spec.scope.max_memory.expect("maxMemory is set");
    assert_eq!(max_memory.bytes(), 4.0 * 1024.0 * 1024.0 * 1024.0);
    assert_eq!(max_memory.to_string(), "4Gi");
    assert_eq!(
        spec.reflection.loosen_bounds[&ThresholdPath::ScalingMaxStep],
        Threshold::Step(Step::Percent(50.0))
    );
}
