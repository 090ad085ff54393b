//! Which namespaces the apiserver sends to the workload webhooks: the ones the policies
//! in force govern, so that a change no policy can judge never leaves the apiserver, and
//! an outage of slo-guard blocks only the namespaces it guards.
//!
//! The scope is kept on the ValidatingWebhookConfiguration itself, as the namespaceSelector
//! term `kubernetes.io/metadata.name In [...]` of the scoped webhooks, with a record in the
//! annotation [`SCOPE_ANNOTATION`] of when each namespace was last known to be governed.
//!
//! Safety: a policy must never exist while its namespace is out of scope.
//! - **Widening comes first.** The config webhook widens the scope while it admits a policy
//!   ConfigMap, before the apiserver stores it: by the time any replica loads the policy,
//!   the webhook configuration sent to the apiserver already covers its namespaces. A
//!   policy whose scope cannot be written is not admitted.
//! - **Narrowing waits.** A namespace leaves the scope only when no policy governs it, in
//!   this replica's store and in a fresh list of the policy ConfigMaps, and it was last
//!   widened longer than the grace period ago. The grace covers a policy admitted (and
//!   widened for) whose write has not reached the store or the list yet: an admission
//!   reaches etcd within the apiserver's request timeout (60 s by default), far within the
//!   grace (5 minutes by default).
//!
//! The mutating webhook's scale rule follows the policies the same way. A Scale carries no
//! annotations to stamp, so the only thing the mutating side does for a scale is lower its
//! replicas to a cap (`scaling.onExceed: clamp`). While no policy clamps, scale requests
//! are not sent to the mutating webhook at all: one webhook call per scale, not two. The
//! rule comes back before a clamping policy is stored, and leaves a grace period after the
//! last one, like a namespace.
//!
//! This module is the pure part: what the scope is and how it changes. `manager` reads and
//! writes the webhook configurations.

/// Reads and writes slo-guard's webhook configurations.
pub mod manager;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use k8s_openapi::api::admissionregistration::v1::RuleWithOperations;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use serde::{Deserialize, Serialize};

use crate::policy::{OnExceed, Policy};
use crate::store::PolicySet;

/// The annotation on the ValidatingWebhookConfiguration holding the [`ScopeRecord`].
pub const SCOPE_ANNOTATION: &str = "slo-guard.io/webhook-scope";
/// The label every namespace carries with its own name (Kubernetes 1.21+).
pub const NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The selector value when no namespace is governed: no namespace can be named this (a
/// namespace name has no dots), and `In` needs at least one value.
pub const NO_NAMESPACE: &str = "none.slo-guard.io";

/// The namespaces some policies govern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Governed {
    /// Every namespace: a policy in slo-guard's namespace lists a pattern (`team-*`, `*`),
    /// which a namespaceSelector cannot express.
    All,
    /// These namespaces.
    Namespaces(BTreeSet<String>),
}

impl Governed {
    /// No namespace.
    pub fn none() -> Self {
        Governed::Namespaces(BTreeSet::new())
    }

    /// The namespaces `policy` governs: its own, or those it lists when it lives in
    /// slo-guard's namespace.
    pub fn of_policy(policy: &Policy, guard_namespace: &str) -> Self {
        let listed = &policy.spec.matcher.namespaces;
        if listed.is_empty() || policy.id.namespace != guard_namespace {
            return Governed::Namespaces(BTreeSet::from([policy.id.namespace.clone()]));
        }
        let mut names = BTreeSet::new();
        for pattern in listed {
            if pattern.as_str().contains('*') {
                return Governed::All;
            }
            names.insert(pattern.as_str().to_string());
        }
        Governed::Namespaces(names)
    }

    /// Both together (all, if either is).
    pub fn union(self, other: Governed) -> Self {
        match (self, other) {
            (Governed::Namespaces(mut a), Governed::Namespaces(b)) => {
                a.extend(b);
                Governed::Namespaces(a)
            }
            _ => Governed::All,
        }
    }

    fn contains(&self, namespace: &str) -> bool {
        match self {
            Governed::All => true,
            Governed::Namespaces(names) => names.contains(namespace),
        }
    }
}

/// What the policies need the workload webhooks to be sent: the namespaces they govern,
/// and whether scale requests must reach the mutating webhook (a policy clamps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// The namespaces governed.
    pub namespaces: Governed,
    /// Some policy lowers scales to its cap (`scaling.onExceed: clamp`), which only the
    /// mutating webhook can do.
    pub clamps_scales: bool,
}

impl Reach {
    /// Nothing: no namespace, no clamp.
    pub fn none() -> Self {
        Reach {
            namespaces: Governed::none(),
            clamps_scales: false,
        }
    }

    /// What `policy` needs.
    pub fn of_policy(policy: &Policy, guard_namespace: &str) -> Self {
        Reach {
            namespaces: Governed::of_policy(policy, guard_namespace),
            clamps_scales: policy
                .spec
                .scaling
                .as_ref()
                .is_some_and(|scaling| scaling.on_exceed == OnExceed::Clamp),
        }
    }

    /// What every policy of `policies` needs, together.
    pub fn of_set(policies: &PolicySet) -> Self {
        policies
            .policies
            .iter()
            .fold(Reach::none(), |reach, policy| {
                reach.union(Reach::of_policy(policy, &policies.guard_namespace))
            })
    }

    /// Both together.
    pub fn union(self, other: Reach) -> Self {
        Reach {
            namespaces: self.namespaces.union(other.namespaces),
            clamps_scales: self.clamps_scales || other.clamps_scales,
        }
    }
}

/// The scope as recorded on the webhook configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScopeRecord {
    /// Every namespace is sent, since then (the last time a policy needed all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_since: Option<DateTime<Utc>>,
    /// The namespaces sent, each with the last time a policy for it was admitted, or
    /// found governing it when it was not yet in scope.
    #[serde(default)]
    pub namespaces: BTreeMap<String, DateTime<Utc>>,
    /// Scale requests are sent to the mutating webhook, since then (the last time a
    /// clamping policy was admitted or found). A record written before slo-guard managed
    /// the scale rule has no such field and reads as sending them, as installed.
    #[serde(default = "installed_since")]
    pub scale_mutations_since: Option<DateTime<Utc>>,
}

fn installed_since() -> Option<DateTime<Utc>> {
    Some(DateTime::<Utc>::UNIX_EPOCH)
}

impl ScopeRecord {
    /// A webhook configuration slo-guard has not scoped yet: as installed, it sends every
    /// namespace (less the installer's exclusions).
    pub fn as_installed() -> Self {
        ScopeRecord {
            all_since: installed_since(),
            namespaces: BTreeMap::new(),
            scale_mutations_since: installed_since(),
        }
    }

    /// Reads the record from the annotation's value; none means as installed, and so does
    /// a record that does not parse (someone edited it), which is the safe reading.
    pub fn from_annotation(value: Option<&str>) -> Self {
        value
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_else(Self::as_installed)
    }

    /// The record as the configuration's annotation keeps it (JSON).
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The scope once a policy needing `reach` is admitted: its namespaces are sent (and
    /// scales to the mutating webhook, if it clamps), marked with `now` even when already
    /// sent, so that narrowing leaves them alone for a grace period whatever the stores say
    /// meanwhile.
    pub fn widened(&self, reach: &Reach, now: DateTime<Utc>) -> Self {
        let mut next = self.clone();
        match &reach.namespaces {
            Governed::All => next.all_since = Some(now),
            Governed::Namespaces(names) => {
                for name in names {
                    next.namespaces.insert(name.clone(), now);
                }
            }
        }
        if reach.clamps_scales {
            next.scale_mutations_since = Some(now);
        }
        next
    }

    /// The scope the policies in force (`reach`) call for: every governed namespace is
    /// sent (newly found ones marked `now`); a namespace no policy governs is kept until
    /// `grace` after it was last marked, and so are "every namespace" and the scales sent
    /// to the mutating webhook.
    pub fn reconciled(&self, reach: &Reach, now: DateTime<Utc>, grace: chrono::Duration) -> Self {
        let recent = |since: &DateTime<Utc>| *since > now - grace;
        let kept = |needed: bool, since: Option<DateTime<Utc>>| match (needed, since) {
            (true, Some(since)) => Some(since),
            (true, None) => Some(now),
            (false, Some(since)) if recent(&since) => Some(since),
            (false, _) => None,
        };
        let governed = &reach.namespaces;
        let all_since = kept(*governed == Governed::All, self.all_since);
        let mut namespaces: BTreeMap<String, DateTime<Utc>> = self
            .namespaces
            .iter()
            .filter(|(name, since)| governed.contains(name) || recent(since))
            .map(|(name, since)| (name.clone(), *since))
            .collect();
        if let Governed::Namespaces(names) = governed {
            for name in names {
                namespaces.entry(name.clone()).or_insert(now);
            }
        }
        ScopeRecord {
            all_since,
            namespaces,
            scale_mutations_since: kept(reach.clamps_scales, self.scale_mutations_since),
        }
    }

    /// Whether going from `self` to `next` stops sending some namespace, or scales to the
    /// mutating webhook.
    pub fn narrows_to(&self, next: &ScopeRecord) -> bool {
        (self.all_since.is_some() && next.all_since.is_none())
            || (self.scale_mutations_since.is_some() && next.scale_mutations_since.is_none())
            || self
                .namespaces
                .keys()
                .any(|name| !next.namespaces.contains_key(name))
    }

    /// The namespaces sent, or `None` for all of them.
    pub fn sent(&self) -> Option<Vec<String>> {
        if self.all_since.is_some() {
            return None;
        }
        Some(self.namespaces.keys().cloned().collect())
    }

    /// `selector` with the scope's term: any earlier `In` term on the namespace's name is
    /// replaced (it is ours), every other term is kept (the installer's exclusions).
    pub fn apply_to(&self, selector: Option<&LabelSelector>) -> LabelSelector {
        let mut selector = selector.cloned().unwrap_or_default();
        let mut expressions: Vec<LabelSelectorRequirement> = selector
            .match_expressions
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|term| !(term.key == NAME_LABEL && term.operator == "In"))
            .collect();
        if let Some(mut names) = self.sent() {
            if names.is_empty() {
                names.push(NO_NAMESPACE.to_string());
            }
            expressions.push(LabelSelectorRequirement {
                key: NAME_LABEL.to_string(),
                operator: "In".to_string(),
                values: Some(names),
            });
        }
        selector.match_expressions = (!expressions.is_empty()).then_some(expressions);
        selector
    }
}

/// Whether a rule's resource is a workload's scale subresource.
fn is_scale(resource: &str) -> bool {
    resource.ends_with("/scale")
}

/// The mutating webhook's rule for scales, as the chart installs it.
fn scale_rule() -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(vec!["apps".to_string()]),
        api_versions: Some(vec!["v1".to_string()]),
        operations: Some(vec!["UPDATE".to_string()]),
        resources: Some(vec![
            "deployments/scale".to_string(),
            "statefulsets/scale".to_string(),
        ]),
        scope: Some("Namespaced".to_string()),
    }
}

impl ScopeRecord {
    /// A mutating webhook's `rules` as the scope wants them: with the scale subresource
    /// while scales are sent to it, without it otherwise. Every other rule is kept as the
    /// installer wrote it; a rule left with no resource is dropped.
    pub fn apply_to_mutating_rules(&self, rules: &[RuleWithOperations]) -> Vec<RuleWithOperations> {
        let has_scale = rules
            .iter()
            .any(|rule| rule.resources.iter().flatten().any(|r| is_scale(r)));
        match (self.scale_mutations_since.is_some(), has_scale) {
            (true, true) => rules.to_vec(),
            (true, false) => {
                let mut rules = rules.to_vec();
                rules.push(scale_rule());
                rules
            }
            (false, _) => rules
                .iter()
                .filter_map(|rule| {
                    let resources: Vec<String> = rule
                        .resources
                        .iter()
                        .flatten()
                        .filter(|r| !is_scale(r))
                        .cloned()
                        .collect();
                    (!resources.is_empty()).then(|| RuleWithOperations {
                        resources: Some(resources),
                        ..rule.clone()
                    })
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{PolicyRef, parse_policy};
    use chrono::TimeZone;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 12, minute, 0).unwrap()
    }

    fn grace() -> chrono::Duration {
        chrono::Duration::minutes(5)
    }

    fn names(list: &[&str]) -> Governed {
        Governed::Namespaces(list.iter().map(|n| n.to_string()).collect())
    }

    /// What policies governing `list` without clamping need.
    fn sending(list: &[&str]) -> Reach {
        Reach {
            namespaces: names(list),
            clamps_scales: false,
        }
    }

    fn every_namespace() -> Reach {
        Reach {
            namespaces: Governed::All,
            clamps_scales: false,
        }
    }

    fn policy(namespace: &str, yaml: &str) -> Policy {
        Policy {
            id: PolicyRef {
                namespace: namespace.to_string(),
                name: "p".to_string(),
            },
            spec: parse_policy("policy.yaml", yaml).expect("policy"),
        }
    }

    #[test]
    fn a_policy_governs_its_namespace_or_the_names_it_lists_from_the_guard_namespace() {
        let own = policy("payments", "match: {kinds: [Deployment]}\n");
        assert_eq!(Governed::of_policy(&own, "slo-guard"), names(&["payments"]));
        let listed = policy(
            "slo-guard",
            "match: {kinds: [Deployment], namespaces: [orders, shop]}\n",
        );
        assert_eq!(
            Governed::of_policy(&listed, "slo-guard"),
            names(&["orders", "shop"])
        );
        let pattern = policy(
            "slo-guard",
            "match: {kinds: [Deployment], namespaces: [orders, team-*]}\n",
        );
        assert_eq!(Governed::of_policy(&pattern, "slo-guard"), Governed::All);
        // A list outside the guard's namespace governs nothing beyond its own namespace.
        let elsewhere = policy(
            "payments",
            "match: {kinds: [Deployment], namespaces: [orders]}\n",
        );
        assert_eq!(
            Governed::of_policy(&elsewhere, "slo-guard"),
            names(&["payments"])
        );
    }

    #[test]
    fn an_installed_configuration_is_narrowed_to_the_governed_namespaces() {
        let record = ScopeRecord::as_installed();
        assert_eq!(record.sent(), None);
        let next = record.reconciled(&sending(&["payments"]), at(0), grace());
        assert_eq!(next.sent(), Some(vec!["payments".to_string()]));
        assert!(record.narrows_to(&next));
    }

    #[test]
    fn a_widened_namespace_outlives_a_stale_store_for_the_grace_period() {
        // Another replica admitted a policy for "orders" at minute 0; this replica's store
        // has not seen it yet.
        let widened = ScopeRecord::as_installed()
            .reconciled(&sending(&["payments"]), at(0), grace())
            .widened(&sending(&["orders"]), at(0));
        let stale = sending(&["payments"]);
        let kept = widened.reconciled(&stale, at(4), grace());
        assert_eq!(
            kept.sent(),
            Some(vec!["orders".to_string(), "payments".to_string()])
        );
        assert!(!widened.narrows_to(&kept));
        // After the grace, a namespace nothing governs leaves.
        let narrowed = widened.reconciled(&stale, at(6), grace());
        assert_eq!(narrowed.sent(), Some(vec!["payments".to_string()]));
    }

    #[test]
    fn widening_marks_namespaces_already_in_scope_and_all_namespaces() {
        let record =
            ScopeRecord::as_installed().reconciled(&sending(&["payments"]), at(0), grace());
        let again = record.widened(&sending(&["payments"]), at(3));
        assert_eq!(again.namespaces["payments"], at(3));
        let all = record.widened(&every_namespace(), at(3));
        assert_eq!(all.sent(), None);
        // A pattern policy removed: all namespaces stay for the grace, then narrow.
        assert_eq!(
            all.reconciled(&sending(&["payments"]), at(7), grace())
                .sent(),
            None
        );
        assert_eq!(
            all.reconciled(&sending(&["payments"]), at(9), grace())
                .sent(),
            Some(vec!["payments".to_string()])
        );
        // Even the installed "all" is marked by a widening during the first narrowing.
        let installed = ScopeRecord::as_installed().widened(&sending(&["orders"]), at(1));
        assert_eq!(
            installed
                .reconciled(&sending(&["payments"]), at(2), grace())
                .sent(),
            Some(vec!["orders".to_string(), "payments".to_string()])
        );
    }

    #[test]
    fn the_selector_keeps_the_installers_terms_and_replaces_its_own() {
        let installed = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: NAME_LABEL.to_string(),
                operator: "NotIn".to_string(),
                values: Some(vec!["kube-system".to_string(), "slo-guard".to_string()]),
            }]),
            match_labels: Some(BTreeMap::from([("team".to_string(), "a".to_string())])),
        };
        let record =
            ScopeRecord::as_installed().reconciled(&sending(&["payments"]), at(0), grace());
        let scoped = record.apply_to(Some(&installed));
        let terms = scoped.match_expressions.clone().unwrap();
        assert_eq!(terms.len(), 2);
        assert_eq!(terms[0].operator, "NotIn");
        assert_eq!(terms[1].operator, "In");
        assert_eq!(terms[1].values, Some(vec!["payments".to_string()]));
        assert_eq!(scoped.match_labels, installed.match_labels);
        // Applied twice, the same; with nothing governed, a value no namespace has.
        assert_eq!(record.apply_to(Some(&scoped)), scoped);
        let empty = ScopeRecord::as_installed().reconciled(&Reach::none(), at(0), grace());
        let none = empty.apply_to(Some(&installed));
        assert_eq!(
            none.match_expressions.unwrap()[1].values,
            Some(vec![NO_NAMESPACE.to_string()])
        );
        // Back to all: only the installer's terms.
        assert_eq!(
            ScopeRecord::as_installed().apply_to(Some(&scoped)),
            installed
        );
    }

    #[test]
    fn a_record_round_trips_and_an_unreadable_one_reads_as_installed() {
        let record = ScopeRecord::as_installed()
            .reconciled(&sending(&["payments"]), at(0), grace())
            .widened(&every_namespace(), at(1));
        let text = record.to_annotation();
        assert_eq!(ScopeRecord::from_annotation(Some(&text)), record);
        assert_eq!(
            ScopeRecord::from_annotation(Some("{not json")),
            ScopeRecord::as_installed()
        );
        assert_eq!(
            ScopeRecord::from_annotation(None),
            ScopeRecord::as_installed()
        );
    }

    fn rule(resources: &[&str]) -> RuleWithOperations {
        RuleWithOperations {
            api_groups: Some(vec!["apps".to_string()]),
            api_versions: Some(vec!["v1".to_string()]),
            operations: Some(vec!["UPDATE".to_string()]),
            resources: Some(resources.iter().map(|r| r.to_string()).collect()),
            scope: Some("Namespaced".to_string()),
        }
    }

    fn resources(rules: &[RuleWithOperations]) -> Vec<Vec<String>> {
        rules
            .iter()
            .map(|rule| rule.resources.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn scales_reach_the_mutating_webhook_only_while_a_policy_clamps() {
        let clamping = Reach {
            namespaces: names(&["payments"]),
            clamps_scales: true,
        };
        let installed = ScopeRecord::as_installed();
        // As installed, scales are sent; with no clamping policy they stop at once.
        let unclamped = installed.reconciled(&sending(&["payments"]), at(0), grace());
        assert_eq!(unclamped.scale_mutations_since, None);
        assert!(installed.narrows_to(&unclamped));
        // A clamping policy admitted: sent from then on, and for the grace after it goes.
        let widened = unclamped.widened(&clamping, at(1));
        assert_eq!(widened.scale_mutations_since, Some(at(1)));
        assert!(!unclamped.narrows_to(&widened));
        let kept = widened.reconciled(&sending(&["payments"]), at(5), grace());
        assert_eq!(kept.scale_mutations_since, Some(at(1)));
        let dropped = widened.reconciled(&sending(&["payments"]), at(7), grace());
        assert_eq!(dropped.scale_mutations_since, None);
        assert!(widened.narrows_to(&dropped));
        // Found in force without a widening (another replica's store): sent from now.
        assert_eq!(
            unclamped
                .reconciled(&clamping, at(8), grace())
                .scale_mutations_since,
            Some(at(8))
        );
        // A record written before the scale rule was managed reads as sending scales.
        let older = ScopeRecord::from_annotation(Some(r#"{"namespaces":{}}"#));
        assert_eq!(
            older.scale_mutations_since,
            Some(DateTime::<Utc>::UNIX_EPOCH)
        );
        let text = unclamped.to_annotation();
        assert_eq!(ScopeRecord::from_annotation(Some(&text)), unclamped);
    }

    #[test]
    fn the_mutating_rules_lose_and_regain_the_scale_subresource() {
        let workloads = rule(&["deployments", "statefulsets"]);
        let installed = vec![
            workloads.clone(),
            rule(&["deployments/scale", "statefulsets/scale"]),
        ];
        let off = ScopeRecord::as_installed().reconciled(&sending(&["payments"]), at(0), grace());
        let without = off.apply_to_mutating_rules(&installed);
        assert_eq!(
            resources(&without),
            vec![vec!["deployments", "statefulsets"]]
        );
        assert_eq!(off.apply_to_mutating_rules(&without), without);
        let on = off.widened(
            &Reach {
                namespaces: names(&["payments"]),
                clamps_scales: true,
            },
            at(1),
        );
        let with = on.apply_to_mutating_rules(&without);
        assert_eq!(with, installed);
        assert_eq!(on.apply_to_mutating_rules(&with), with);
        // A rule mixing both keeps its other resources.
        let mixed = vec![rule(&["deployments", "deployments/scale"])];
        assert_eq!(
            resources(&off.apply_to_mutating_rules(&mixed)),
            vec![vec!["deployments"]]
        );
        assert_eq!(on.apply_to_mutating_rules(&mixed), mixed);
    }
}
