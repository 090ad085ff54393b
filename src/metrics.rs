//! Prometheus metrics served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The labels of `slo_guard_decisions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `namespace/name` of the policy, or `none` when no policy governed the request.
    pub policy: String,
    /// The failed rule, or `none` when every rule passed.
    pub rule: String,
    /// allowed, denied, warned or audited.
    pub verdict: String,
}

/// A route's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// `validate`, `mutate`, `preflight`.
    pub endpoint: String,
}

/// Why something was refused or failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// A short snake_case reason (`not_json`, `connection_limit`).
    pub reason: String,
}

/// The ConfigMap a policy failed to load from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigMapLabels {
    /// `namespace/name`.
    pub configmap: String,
}

/// The labels of `slo_guard_events_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// The Event's reason: `Denied`, `PolicyRejected`.
    pub reason: String,
    /// created, updated (a repeat counted on an earlier Event), dropped (the queue was
    /// full) or failed (the API server refused it).
    pub result: String,
}

/// Every metric slo-guard serves, registered under the `slo_guard_` prefix.
pub struct Metrics {
    /// What `/metrics` encodes.
    pub registry: Registry,
    /// Admission decisions by policy, failed rule and verdict.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Time to answer a review, by endpoint.
    pub latency: Family<EndpointLabels, Histogram>,
    /// Requests that were not reviews slo-guard can judge, by reason.
    pub bad_requests: Family<ReasonLabels, Counter>,
    /// Policy ConfigMaps that failed to load, by ConfigMap.
    pub policy_load_errors: Family<ConfigMapLabels, Counter>,
    /// Policies in force.
    pub policies_loaded: Gauge,
    /// Policy ConfigMaps rejected (the last good version of each stays in force).
    pub policies_rejected: Gauge,
    /// Kubernetes Events written, by reason and result.
    pub events: Family<EventLabels, Counter>,
    /// Connections closed unserved, by reason: `connection_limit` (`--max-connections`
    /// were open), `per_source_limit` (`--max-connections-per-ip` from its address).
    pub connections_refused: Family<ReasonLabels, Counter>,
    /// Connections open on the webhook port.
    pub open_connections: Gauge,
    /// Connections closed for taking too long, by phase (`tls_handshake`,
    /// `request_start`, `header`, `idle`).
    pub connection_timeouts: Family<PhaseLabels, Counter>,
    /// Requests not read and answered within `--request-timeout`.
    pub request_timeouts: Counter,
    /// 1 while slo-guard keeps its webhooks' scope in step with the policies, 0 when it
    /// cannot (or is not asked to: `--webhook-scope static`).
    pub webhook_scope_managed: Gauge,
    /// Namespaces the workload webhooks are sent for; -1 for all of them.
    pub webhook_scope_namespaces: Gauge,
    /// 1 while scale requests are sent to the mutating webhook (a policy clamps, or the
    /// scope is not managed), 0 while they are left out.
    pub webhook_scope_scale_mutations: Gauge,
    /// Scope changes written (widened, narrowed) and failed attempts.
    pub webhook_scope_updates: Family<ResultLabels, Counter>,
}

/// An outcome's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `widened`, `narrowed`, `failed`, ...
    pub result: String,
}

/// A connection phase's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// `tls_handshake`, `request_start`, `header`, `idle`.
    pub phase: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, at zero, in a registry of its own.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("slo_guard");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Admission decisions by policy, failed rule and verdict",
            decisions.clone(),
        );
        // Buckets from 50µs to 2.5s: decisions are sub-millisecond unless Prometheus is asked.
        let latency = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 0.5, 1.0, 2.5,
            ])
        });
        registry.register(
            "admission_duration_seconds",
            "Time to answer an AdmissionReview, by endpoint",
            latency.clone(),
        );
        let bad_requests = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "bad_requests",
            "Requests refused before judging, by reason",
            bad_requests.clone(),
        );
        let policy_load_errors = Family::<ConfigMapLabels, Counter>::default();
        registry.register(
            "policy_load_errors",
            "Policy or reflection ConfigMap versions rejected at load",
            policy_load_errors.clone(),
        );
        let policies_loaded = Gauge::default();
        registry.register(
            "policies_loaded",
            "Policies in force",
            policies_loaded.clone(),
        );
        let policies_rejected = Gauge::default();
        registry.register(
            "policies_rejected",
            "ConfigMaps whose latest version is rejected (a last good version may be in force)",
            policies_rejected.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Kubernetes Events recorded on judged objects and policy ConfigMaps, by reason and result",
            events.clone(),
        );
        let connections_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed unserved, by the limit reached: connection_limit, per_source_limit",
            connections_refused.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Connections open on the webhook port",
            open_connections.clone(),
        );
        let connection_timeouts = Family::<PhaseLabels, Counter>::default();
        registry.register(
            "connection_timeouts",
            "Connections closed for not finishing a phase in time: tls_handshake, request_start",
            connection_timeouts.clone(),
        );
        let request_timeouts = Counter::default();
        registry.register(
            "request_timeouts",
            "Requests not read and answered within the request timeout",
            request_timeouts.clone(),
        );
        let webhook_scope_managed = Gauge::default();
        registry.register(
            "webhook_scope_managed",
            "1 while the workload webhooks' namespaceSelector follows the policies in force, 0 when it cannot or is static",
            webhook_scope_managed.clone(),
        );
        let webhook_scope_namespaces = Gauge::default();
        registry.register(
            "webhook_scope_namespaces",
            "Namespaces the workload webhooks are sent for (-1: all)",
            webhook_scope_namespaces.clone(),
        );
        webhook_scope_namespaces.set(-1);
        let webhook_scope_scale_mutations = Gauge::default();
        registry.register(
            "webhook_scope_scale_mutations",
            "1 while scale requests are sent to the mutating webhook (a policy clamps, or the scope is static), 0 while they are left out",
            webhook_scope_scale_mutations.clone(),
        );
        webhook_scope_scale_mutations.set(1);
        let webhook_scope_updates = Family::<ResultLabels, Counter>::default();
        registry.register(
            "webhook_scope_updates",
            "Webhook scope changes written (widened, narrowed) and failed attempts",
            webhook_scope_updates.clone(),
        );
        Self {
            registry,
            decisions,
            latency,
            bad_requests,
            policy_load_errors,
            policies_loaded,
            policies_rejected,
            events,
            connections_refused,
            open_connections,
            connection_timeouts,
            request_timeouts,
            webhook_scope_managed,
            webhook_scope_namespaces,
            webhook_scope_scale_mutations,
            webhook_scope_updates,
        }
    }

    /// Counts one Event outcome.
    pub fn event(&self, reason: &str, result: &str) {
        self.events
            .get_or_create(&EventLabels {
                reason: reason.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Counts a connection closed for not finishing `phase` in time.
    pub fn connection_timeout(&self, phase: &str) {
        self.connection_timeouts
            .get_or_create(&PhaseLabels {
                phase: phase.to_string(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
