//! Fixtures shared by the fuzz targets: the guards, policies, changes and SLO readings
//! the fuzzed input is judged against. Everything is built once per process from files
//! compiled in (the repository's test fixtures and example policies), so a target needs
//! no working directory and every run is deterministic.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, TimeZone, Utc};
use slo_guard::admission::{Change, WorkloadKind, WorkloadSnapshot, classify, parse_review};
use slo_guard::guard::Guard;
use slo_guard::metrics::Metrics;
use slo_guard::policy::{Policy, PolicyRef, PolicySpec};
use slo_guard::reflection::Reflection;
use slo_guard::rules::{Decision, DecisionContext, assess_and_decide};
use slo_guard::slo::{
    CannedAnswers, GateScope, Observation, Observations, QueryPlan, QueryRole, Reading, Readings,
    SloSource,
};
use slo_guard::store::{PolicySet, PolicyStore, StoreEvent, parse_manifest_text};

/// The clock of every decision: a Wednesday morning (no weekend freeze), before the
/// example reflection expires (2027-01-31). The same instant as the crate's rule tests.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 18, 10, 0, 0).unwrap()
}

/// The baseline test policy (tests/fixtures/policies), as the test kit's
/// `fixtures::baseline_policies` loads it, embedded so the fuzz binaries run from anywhere.
const FIXTURE_POLICIES: &[(&str, &str)] = &[(
    "tests/fixtures/policies/checkout.yaml",
    include_str!("../../tests/fixtures/policies/checkout.yaml"),
)];

/// Captured AdmissionReviews whose changes the policy and reflection targets judge.
pub const CAPTURED: &[(&str, &[u8])] = &[
    (
        "deployment-create.json",
        include_bytes!("../../tests/fixtures/captured/deployment-create.json"),
    ),
    (
        "deployment-image-change.json",
        include_bytes!("../../tests/fixtures/captured/deployment-image-change.json"),
    ),
    (
        "deployment-replicas-change.json",
        include_bytes!("../../tests/fixtures/captured/deployment-replicas-change.json"),
    ),
    (
        "deployment-delete.json",
        include_bytes!("../../tests/fixtures/captured/deployment-delete.json"),
    ),
    (
        "hpa-update.json",
        include_bytes!("../../tests/fixtures/captured/hpa-update.json"),
    ),
    (
        "scale-agent.json",
        include_bytes!("../../tests/fixtures/captured/scale-agent.json"),
    ),
    (
        "scale-person.json",
        include_bytes!("../../tests/fixtures/captured/scale-person.json"),
    ),
];

pub const GUARD_NAMESPACE: &str = "slo-guard";

fn store(files: &[(&str, &str)]) -> Arc<PolicyStore> {
    let store = PolicyStore::new(GUARD_NAMESPACE);
    let mut documents = Vec::new();
    for (path, text) in files {
        documents.extend(
            parse_manifest_text(Path::new(path), text, "default")
                .unwrap_or_else(|e| panic!("fixture {path}: {e}")),
        );
    }
    for event in store.replace_all(None, &documents) {
        assert!(matches!(event, StoreEvent::Loaded { .. }), "{event:?}");
    }
    Arc::new(store)
}

/// The watch cache: the checkout Deployment as the agent created it (labels and full
/// decision context), and a `ledger` StatefulSet in `payments`.
pub fn workloads() -> BTreeMap<(WorkloadKind, String, String), WorkloadSnapshot> {
    let create: serde_json::Value = serde_json::from_slice(CAPTURED[0].1).expect("fixture JSON");
    let metadata = &create["request"]["object"]["metadata"];
    let map = |value: &serde_json::Value| -> BTreeMap<String, String> {
        serde_json::from_value(value.clone()).unwrap_or_default()
    };
    BTreeMap::from([
        (
            (
                WorkloadKind::Deployment,
                "payments".to_string(),
                "checkout".to_string(),
            ),
            WorkloadSnapshot {
                labels: map(&metadata["labels"]),
                pod_labels: BTreeMap::new(),
                annotations: map(&metadata["annotations"]),
                replicas: Some(3),
                owner_uids: Vec::new(),
            },
        ),
        (
            (
                WorkloadKind::StatefulSet,
                "payments".to_string(),
                "ledger".to_string(),
            ),
            WorkloadSnapshot {
                labels: BTreeMap::from([("app".to_string(), "ledger".to_string())]),
                pod_labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
                replicas: Some(3),
                owner_uids: Vec::new(),
            },
        ),
    ])
}

/// The changes of the captured reviews, classified against [`workloads`].
pub fn changes() -> &'static [Change] {
    static CHANGES: OnceLock<Vec<Change>> = OnceLock::new();
    CHANGES.get_or_init(|| {
        let workloads = workloads();
        CAPTURED
            .iter()
            .map(|(name, body)| {
                let request = parse_review(body).unwrap_or_else(|e| panic!("{name}: {e}"));
                classify(request, &workloads)
                    .unwrap_or_else(|e| panic!("{name}: {e}"))
                    .unwrap_or_else(|| panic!("{name}: not governed"))
            })
            .collect()
    })
}

/// The SLO weather a decision sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weather {
    /// Budget nearly untouched, no burn, traffic as last week, fresh data.
    Calm,
    /// Budget overspent, a fast burn, a 3× traffic spike and a NaN (fresh data: stale data
    /// would stop the gate before the figures are judged).
    Storm,
}

/// The reading a query of `role` gets in `weather`.
pub fn reading(role: &QueryRole, weather: Weather) -> Reading {
    let now = now().timestamp() as f64;
    Reading::from_value(Some(match (weather, role) {
        (Weather::Calm, QueryRole::Errors(_)) => 0.001,
        (Weather::Calm, QueryRole::Total(_)) => 10.0,
        (Weather::Calm, QueryRole::Current) => 10.0,
        (Weather::Calm, QueryRole::Baseline) => 9.0,
        (Weather::Calm, QueryRole::Freshness) => now - 15.0,
        // A recording rule's error ratio, as Sloth and Pyrra record it.
        (Weather::Calm, QueryRole::Recorded(_)) => 0.0001,
        (Weather::Storm, QueryRole::Errors(window)) if window == "30m" => f64::NAN,
        (Weather::Storm, QueryRole::Errors(window)) if window.ends_with('d') => 0.5,
        (Weather::Storm, QueryRole::Errors(_)) => 2.0,
        (Weather::Storm, QueryRole::Total(_)) => 10.0,
        (Weather::Storm, QueryRole::Current) => 30.0,
        (Weather::Storm, QueryRole::Baseline) => 10.0,
        (Weather::Storm, QueryRole::Freshness) => now - 30.0,
        (Weather::Storm, QueryRole::Recorded(_)) => 0.2,
    }))
}

/// Readings for every query `spec` asks about `change`'s target.
pub fn readings(id: &PolicyRef, spec: &PolicySpec, change: &Change, weather: Weather) -> Readings {
    QueryPlan::new(id, spec, &change.target, GateScope::Full)
        .queries
        .iter()
        .map(|(role, _)| (role.clone(), reading(role, weather)))
        .collect()
}

/// Observations for `policy` judging `change`.
pub fn observations(policy: &Policy, change: &Change, weather: Weather) -> Observations {
    let mut observations = Observations::new();
    observations.insert(
        policy.id.clone(),
        Observation::Readings(readings(&policy.id, &policy.spec, change, weather)),
    );
    observations
}

/// Canned answers (the `check --prometheus-answers` source) for every query the
/// policies in `store` ask about the captured changes.
fn canned(store: &PolicyStore, weather: Weather) -> SloSource {
    let policies = store.snapshot();
    let mut text = String::new();
    let mut seen = std::collections::BTreeSet::new();
    for change in changes() {
        for (policy, _) in policies.matching(&change.target) {
            let plan = QueryPlan::new(&policy.id, &policy.spec, &change.target, GateScope::Full);
            for (role, query) in &plan.queries {
                if !seen.insert(query.clone()) {
                    continue;
                }
                let value = match reading(role, weather).value() {
                    Some(v) => format!("{v:?}"),
                    None => "NaN".to_string(),
                };
                text.push_str(&format!("'{}': {value}\n", query.replace('\'', "''")));
            }
        }
    }
    let answers = CannedAnswers::parse("fuzz-answers.yaml", &text)
        .unwrap_or_else(|e| panic!("canned answers: {e}\n{text}"));
    SloSource::Canned(Arc::new(answers))
}

/// The guards every AdmissionReview is judged by.
pub struct Guards {
    /// The baseline test policy, calm SLO figures.
    pub calm: Guard,
    /// The baseline test policy, stormy SLO figures.
    pub storm: Guard,
    /// The example policies and reflection, no Prometheus (the SLO gate is off).
    pub examples: Guard,
}

pub fn guards() -> &'static Guards {
    static GUARDS: OnceLock<Guards> = OnceLock::new();
    GUARDS.get_or_init(|| {
        let workloads: Arc<dyn slo_guard::admission::WorkloadLookup> = Arc::new(workloads());
        let metrics = Arc::new(Metrics::new());
        let fixture = store(FIXTURE_POLICIES);
        let guard = |policies: &Arc<PolicyStore>, slo: SloSource| {
            Guard::new(policies.clone(), workloads.clone(), metrics.clone()).with_slo(slo)
        };
        Guards {
            calm: guard(&fixture, canned(&fixture, Weather::Calm)),
            storm: guard(&fixture, canned(&fixture, Weather::Storm)),
            // policies/ as `serve` embeds it: freeze windows, cooldown, approval, a policy
            // in slo-guard's namespace for `team-*`, a reflection that tightens a cap.
            examples: guard(&store(&slo_guard::cli::EMBEDDED_POLICIES), SloSource::Off),
        }
    })
}

/// The example directory as a policy set: its policies and its reflection.
pub fn example_set() -> Arc<PolicySet> {
    static STORE: OnceLock<Arc<PolicyStore>> = OnceLock::new();
    STORE
        .get_or_init(|| store(&slo_guard::cli::EMBEDDED_POLICIES))
        .snapshot()
}

/// The example policies, for targets that judge a fuzzed policy alongside them.
pub fn example_policies() -> Vec<Arc<Policy>> {
    example_set().policies.clone()
}

/// The example reflection (payments/checkout-reflections: checkout's cap down to 12,
/// traffic.spikeRatio 1.5, until 2027-01-31).
pub fn example_reflections() -> Vec<Arc<Reflection>> {
    example_set().reflections.clone()
}

/// A policy that sets every threshold a reflection may change, lets reflections loosen
/// each of them within bounds, and applies slo-guard's own proposals: the policy the
/// reflection target applies fuzzed reflections to, besides the baseline one.
pub const LOOSE_POLICY: &str = r#"
match: {kinds: [Deployment, StatefulSet]}
action: enforce
agents:
  users: ["system:serviceaccount:ai-agents:*"]
  minConfidence: 0.7
slo:
  objective: 99.9
  period: 30d
  errors: sum(rate(http_requests_total{job="checkout",code=~"5.."}[{{window}}]))
  total:  sum(rate(http_requests_total{job="checkout"}[{{window}}]))
  minRequestRate: 1
  budget: {freezeBelow: 0.0, agentFreezeBelow: 0.25}
  burnRate:
    - {long: 1h, short: 5m, factor: 14.4}
traffic:
  current:  sum(rate(http_requests_total{job="checkout"}[5m]))
  baseline: sum(rate(http_requests_total{job="checkout"}[5m] offset 1w))
  spikeRatio: 2.0
scaling: {minReplicas: 2, maxReplicas: 20, maxStep: 5, cooldown: 5m, appliesTo: everyone, onExceed: clamp}
reflection:
  applyProposals: true
  loosenBounds:
    scaling.maxReplicas: 40
    scaling.minReplicas: 1
    scaling.maxStep: 10
    scaling.cooldown: 1m
    traffic.spikeRatio: 4
    slo.budget.freezeBelow: -0.5
    slo.budget.agentFreezeBelow: 0.0
    slo.minRequestRate: 5
    agents.minConfidence: 0.5
"#;

/// The baseline test policy's `policy.yaml`, parsed.
pub fn baseline_policy() -> Arc<Policy> {
    static STORE: OnceLock<Arc<PolicyStore>> = OnceLock::new();
    STORE
        .get_or_init(|| store(FIXTURE_POLICIES))
        .snapshot()
        .policies[0]
        .clone()
}

/// Decides `change` against `policies` on `observations` at [`now`], without a ledger,
/// and words every finding, so the fuzzed input also reaches the messages.
pub fn decide_and_word(
    change: &Change,
    policies: &PolicySet,
    observations: &Observations,
) -> Decision {
    let decision = assess_and_decide(
        change,
        &DecisionContext {
            policies,
            now: now(),
            observations,
            ledger: None,
        },
    );
    for finding in &decision.findings {
        let _ = finding.message();
    }
    decision
}
