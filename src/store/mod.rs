//! The policies in force, above both `policy` (what one policy says) and `reflection`
//! (what updates its thresholds). Readers take a lock-free snapshot per request; writers
//! (the directory loader, the ConfigMap watch) replace it. A ConfigMap whose new version
//! does not validate keeps its last good version in force. [`source`] reads the
//! ConfigMaps and SLO specs from files.

mod source;

pub use source::{
    ConfigMapDocument, PolicySources, SourceError, load_directory, load_sources, manifest_files,
    parse_manifest_text, parse_sources_text, read_manifests, read_sources,
};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use crate::admission::{ConfigKind, POLICY_LABEL, REFLECTION_LABEL, Target};
use crate::policy::{LabelSelector, Policy, PolicyError, PolicyRef, parse_policy_configmap};
use crate::reflection::{Reflection, parse_reflection_configmap};
use crate::slo_spec::{CatalogEvent, DocumentKind, SloSpecCatalog, SloSpecDocument, SpecKey};

/// An immutable view of the policies and reflections in force.
#[derive(Debug, Default)]
pub struct PolicySet {
    /// The policies in force: each ConfigMap's last good version.
    pub policies: Vec<Arc<Policy>>,
    /// The reflections loaded; each applies until its `expires`.
    pub reflections: Vec<Arc<Reflection>>,
    /// slo-guard's own namespace, whose policies may govern other namespaces.
    pub guard_namespace: String,
    /// The SLO specs (Sloth, Pyrra, OpenSLO) policies may name in `slo.source`.
    pub slo_specs: Arc<SloSpecCatalog>,
}

/// How a policy matched a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchBasis {
    /// The target's labels were read and satisfy the selector (or there is none).
    Labels,
    /// The selector could not be checked because the target's labels are unknown; the
    /// policy is applied anyway, since guarding too much is safer than too little.
    Assumed,
    /// Only the labels the target had before the change satisfy the selector: the change
    /// would carry it out of the policy.
    Before,
}

impl PolicySet {
    /// The first policy with an SLO that governs `target`: whose figures the learning
    /// loop measures a change's outcome by.
    pub fn first_slo_policy(&self, target: &Target) -> Option<&Policy> {
        // `matching` borrows the target too: look the policy up again by its id.
        let id = self
            .matching(target)
            .map(|(policy, _)| policy)
            .find(|policy| policy.spec.slo.is_some())?
            .id
            .clone();
        self.policies
            .iter()
            .find(|policy| policy.id == id)
            .map(|policy| policy.as_ref())
    }
}

impl PolicySet {
    /// A set of `policies` without reflections or SLO specs.
    pub fn new(policies: Vec<Policy>, guard_namespace: impl Into<String>) -> Self {
        Self {
            policies: policies.into_iter().map(Arc::new).collect(),
            reflections: Vec::new(),
            guard_namespace: guard_namespace.into(),
            slo_specs: Arc::default(),
        }
    }

    /// The policies that govern `target`, in a stable order: those whose selector its
    /// labels or its pods' labels satisfy, after the change or before it.
    pub fn matching<'a>(
        &'a self,
        target: &'a Target,
    ) -> impl Iterator<Item = (&'a Policy, MatchBasis)> + 'a {
        self.policies.iter().filter_map(move |policy| {
            let kind = target.workload_kind()?;
            if !policy.spec.matcher.kinds.contains(&kind) {
                return None;
            }
            self.governs_by_labels(policy, target)
                .map(|basis| (policy.as_ref(), basis))
        })
    }

    /// Whether `policy` governs `target`'s namespace and name, and by which labels; the
    /// workload kind is the caller's to check.
    pub fn governs_by_labels(&self, policy: &Policy, target: &Target) -> Option<MatchBasis> {
        let matcher = &policy.spec.matcher;
        if !self.governs_namespace(policy, &target.namespace)
            || (!matcher.names.is_empty() && !matcher.names.contains(&target.name))
        {
            return None;
        }
        match &matcher.selector {
            None => Some(MatchBasis::Labels),
            Some(selector) => label_basis(selector, target),
        }
    }

    /// Like [`PolicySet::governs_by_labels`], for objects policies do not name (Pods,
    /// ReplicaSets): the namespace and the labels decide. A policy that names its
    /// workloads and has no selector governs no such object by its labels.
    pub fn governs_by_labels_only(&self, policy: &Policy, target: &Target) -> Option<MatchBasis> {
        let matcher = &policy.spec.matcher;
        if !self.governs_namespace(policy, &target.namespace) {
            return None;
        }
        match &matcher.selector {
            None => matcher.names.is_empty().then_some(MatchBasis::Labels),
            Some(selector) => label_basis(selector, target),
        }
    }

    /// Whether `policy` governs workloads in `namespace`: its own, or those it lists when
    /// it lives in slo-guard's namespace.
    pub fn governs_namespace(&self, policy: &Policy, namespace: &str) -> bool {
        let matcher = &policy.spec.matcher;
        if matcher.namespaces.is_empty() {
            policy.id.namespace == namespace
        } else {
            policy.id.namespace == self.guard_namespace
                && matcher.namespaces.iter().any(|p| p.matches(namespace))
        }
    }
}

/// Which of `target`'s label sets satisfy `selector`: its own or its pods', after the
/// change or only before it.
fn label_basis(selector: &LabelSelector, target: &Target) -> Option<MatchBasis> {
    if !target.labels_known {
        return Some(MatchBasis::Assumed);
    }
    // An empty pod label set is no label set: a selector of only NotIn terms must not
    // match a ConfigMap or an HPA through it.
    let matches = |labels: &BTreeMap<String, String>, pod_labels: &BTreeMap<String, String>| {
        selector.matches(labels) || (!pod_labels.is_empty() && selector.matches(pod_labels))
    };
    if matches(&target.labels, &target.pod_labels) {
        Some(MatchBasis::Labels)
    } else if target
        .before
        .as_ref()
        .is_some_and(|before| matches(&before.labels, &before.pod_labels))
    {
        Some(MatchBasis::Before)
    } else {
        None
    }
}

/// The outcome of applying one ConfigMap to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// The new version is in force.
    Loaded {
        /// The ConfigMap.
        configmap: PolicyRef,
    },
    /// The new version was rejected; `kept_previous` says whether an older good version
    /// stays in force.
    Rejected {
        /// The ConfigMap.
        configmap: PolicyRef,
        /// Why, as its owner sees it.
        error: String,
        /// Whether an older good version stays in force.
        kept_previous: bool,
    },
    /// The ConfigMap no longer governs anything (deleted, or its label removed).
    Removed {
        /// The ConfigMap.
        configmap: PolicyRef,
    },
    /// The ConfigMap carries neither label.
    Ignored,
}

#[derive(Debug, Default)]
struct Entries {
    policies: BTreeMap<PolicyRef, Arc<Policy>>,
    reflections: BTreeMap<PolicyRef, Vec<Arc<Reflection>>>,
    errors: BTreeMap<PolicyRef, (ConfigKind, String)>,
    /// The latest version of each policy ConfigMap, good or not, so that a policy can
    /// be resolved again when a spec it names comes, changes or goes.
    policy_documents: BTreeMap<PolicyRef, ConfigMapDocument>,
    slo_specs: Arc<SloSpecCatalog>,
}

/// The policies, reflections and SLO specs in force, as ConfigMaps and specs come and
/// go: a bad version is rejected and the last good one stays. Requests read a
/// [`PolicySet`] snapshot without locking; writers take a lock and publish a new one.
#[derive(Debug)]
pub struct PolicyStore {
    guard_namespace: String,
    entries: Mutex<Entries>,
    current: ArcSwap<PolicySet>,
}

impl PolicyStore {
    /// An empty store; policies in `guard_namespace` may govern other namespaces.
    pub fn new(guard_namespace: impl Into<String>) -> Self {
        let guard_namespace = guard_namespace.into();
        Self {
            current: ArcSwap::from_pointee(PolicySet {
                guard_namespace: guard_namespace.clone(),
                ..PolicySet::default()
            }),
            guard_namespace,
            entries: Mutex::new(Entries::default()),
        }
    }

    /// slo-guard's own namespace.
    pub fn guard_namespace(&self) -> &str {
        &self.guard_namespace
    }

    /// What is in force now; it does not change under the caller.
    pub fn snapshot(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// ConfigMaps whose latest version was rejected, with the reason.
    pub fn errors(&self) -> Vec<(PolicyRef, String)> {
        self.lock()
            .errors
            .iter()
            .map(|(id, (_, error))| (id.clone(), error.clone()))
            .collect()
    }

    /// Takes in a new version of a ConfigMap, and says what became of it.
    pub fn apply(&self, document: &ConfigMapDocument) -> StoreEvent {
        let mut entries = self.lock();
        let event = self.apply_locked(&mut entries, document);
        if event != StoreEvent::Ignored {
            self.publish(&entries);
        }
        event
    }

    fn apply_locked(&self, entries: &mut Entries, document: &ConfigMapDocument) -> StoreEvent {
        let id = PolicyRef {
            namespace: document.namespace.clone(),
            name: document.name.clone(),
        };
        let kind = if document.has_label(POLICY_LABEL) {
            ConfigKind::Policy
        } else {
            ConfigKind::Reflection
        };
        let outcome = if document.has_label(POLICY_LABEL) {
            entries
                .policy_documents
                .insert(id.clone(), document.clone());
            validate_policy_with_specs(&self.guard_namespace, &entries.slo_specs, &id, document)
                .map(|policy| {
                    entries.policies.insert(id.clone(), Arc::new(policy));
                })
        } else if document.has_label(REFLECTION_LABEL) {
            parse_reflection_configmap(&id, &document.data)
                .and_then(|reflections| {
                    match reflections.iter().find(|r| r.spec.target.namespace.is_some()) {
                        Some(r) if id.namespace != self.guard_namespace => Err(PolicyError::Field {
                            key: r.key.clone(),
                            field: "target.namespace".to_string(),
                            message: format!(
                                "only reflections in slo-guard's namespace {:?} may name another namespace",
                                self.guard_namespace
                            ),
                        }),
                        _ => Ok(reflections),
                    }
                })
                .map(|reflections| {
                entries
                    .reflections
                    .insert(id.clone(), reflections.into_iter().map(Arc::new).collect());
            })
        } else {
            // A label removed from a ConfigMap we knew withdraws it.
            entries.policy_documents.remove(&id);
            let known =
                entries.policies.remove(&id).is_some() | entries.reflections.remove(&id).is_some();
            entries.errors.remove(&id);
            if known {
                return StoreEvent::Removed { configmap: id };
            }
            return StoreEvent::Ignored;
        };
        match outcome {
            Ok(()) => {
                entries.errors.remove(&id);
                StoreEvent::Loaded { configmap: id }
            }
            Err(error) => {
                let kept_previous =
                    entries.policies.contains_key(&id) || entries.reflections.contains_key(&id);
                let error = format!("{}: {error}", document.origin);
                entries.errors.insert(id.clone(), (kind, error.clone()));
                StoreEvent::Rejected {
                    configmap: id,
                    error,
                    kept_previous,
                }
            }
        }
    }

    /// Adds or replaces an SLO spec, then resolves again the policies that name a
    /// source, each keeping its last good version if it no longer resolves.
    pub fn apply_slo_spec(&self, document: SloSpecDocument) -> (CatalogEvent, Vec<StoreEvent>) {
        let mut entries = self.lock();
        let mut specs = (*entries.slo_specs).clone();
        let event = specs.insert(document);
        entries.slo_specs = Arc::new(specs);
        let events = self.resolve_sourced_policies(&mut entries);
        self.publish(&entries);
        (event, events)
    }

    /// Removes an SLO spec; the policies that named it keep their last good version and
    /// report the error.
    pub fn remove_slo_spec(&self, key: &SpecKey) -> Vec<StoreEvent> {
        let mut entries = self.lock();
        let mut specs = (*entries.slo_specs).clone();
        if !specs.remove(key) {
            return Vec::new();
        }
        entries.slo_specs = Arc::new(specs);
        let events = self.resolve_sourced_policies(&mut entries);
        self.publish(&entries);
        events
    }

    /// Replaces every spec of the given kinds, as after a watch re-list.
    pub fn replace_slo_specs(
        &self,
        kinds: &[DocumentKind],
        documents: Vec<SloSpecDocument>,
    ) -> (Vec<CatalogEvent>, Vec<StoreEvent>) {
        let mut entries = self.lock();
        let mut specs = (*entries.slo_specs).clone();
        let present: Vec<SpecKey> = documents.iter().map(SloSpecDocument::key).collect();
        let stale: Vec<SpecKey> = specs
            .keys()
            .chain(specs.errors().map(|(key, _)| key))
            .filter(|key| kinds.contains(&key.kind) && !present.contains(key))
            .cloned()
            .collect();
        for key in &stale {
            specs.remove(key);
        }
        let catalog_events = documents.into_iter().map(|d| specs.insert(d)).collect();
        entries.slo_specs = Arc::new(specs);
        let events = self.resolve_sourced_policies(&mut entries);
        self.publish(&entries);
        (catalog_events, events)
    }

    /// Loads what a policy directory holds: its SLO specs first, so that its policies
    /// can name them, then its ConfigMaps (each set replaces the one before).
    pub fn replace_sources(&self, sources: &PolicySources) -> (Vec<CatalogEvent>, Vec<StoreEvent>) {
        let all_kinds = [
            DocumentKind::Spec(crate::slo_spec::SloSpecKind::PrometheusServiceLevel),
            DocumentKind::Spec(crate::slo_spec::SloSpecKind::ServiceLevelObjective),
            DocumentKind::Spec(crate::slo_spec::SloSpecKind::Slo),
            DocumentKind::OpenSloSli,
        ];
        // The policies resolved again here are replaced next, so their events would
        // only repeat.
        let (catalog_events, _) = self.replace_slo_specs(&all_kinds, sources.slo_specs.clone());
        let events = self.replace_all(None, &sources.configmaps);
        (catalog_events, events)
    }

    /// The SLO specs in force, and the errors of those rejected.
    pub fn slo_specs(&self) -> Arc<SloSpecCatalog> {
        self.lock().slo_specs.clone()
    }

    fn resolve_sourced_policies(&self, entries: &mut Entries) -> Vec<StoreEvent> {
        let sourced: Vec<ConfigMapDocument> = entries
            .policy_documents
            .iter()
            .filter(|(id, document)| {
                parse_policy_configmap(id, &document.data)
                    .ok()
                    .and_then(|policy| policy.spec.slo)
                    .is_some_and(|slo| slo.source.is_some())
            })
            .map(|(_, document)| document.clone())
            .collect();
        sourced
            .iter()
            .map(|document| self.apply_locked(entries, document))
            .collect()
    }

    /// Withdraws the ConfigMap `namespace/name` (deleted, or its label removed).
    pub fn remove(&self, namespace: &str, name: &str) -> StoreEvent {
        let id = PolicyRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        let mut entries = self.lock();
        entries.policy_documents.remove(&id);
        let known =
            entries.policies.remove(&id).is_some() | entries.reflections.remove(&id).is_some();
        entries.errors.remove(&id);
        if !known {
            return StoreEvent::Ignored;
        }
        self.publish(&entries);
        StoreEvent::Removed { configmap: id }
    }

    /// Replaces every ConfigMap of one kind (policies or reflections), as after a watch
    /// re-list: those not in `documents` are removed, and each one in it is applied
    /// with last-good semantics. `None` replaces both kinds.
    pub fn replace_all(
        &self,
        scope: Option<ConfigKind>,
        documents: &[ConfigMapDocument],
    ) -> Vec<StoreEvent> {
        let present: Vec<PolicyRef> = documents
            .iter()
            .map(|d| PolicyRef {
                namespace: d.namespace.clone(),
                name: d.name.clone(),
            })
            .collect();
        let in_scope = |kind: ConfigKind| scope.is_none_or(|scope| scope == kind);
        let stale: Vec<PolicyRef> = {
            let entries = self.lock();
            let policies = entries
                .policies
                .keys()
                .filter(|_| in_scope(ConfigKind::Policy));
            let reflections = entries
                .reflections
                .keys()
                .filter(|_| in_scope(ConfigKind::Reflection));
            let errors = entries
                .errors
                .iter()
                .filter(|(_, (kind, _))| in_scope(*kind))
                .map(|(id, _)| id);
            policies
                .chain(reflections)
                .chain(errors)
                .filter(|id| !present.contains(id))
                .cloned()
                .collect()
        };
        let mut events: Vec<StoreEvent> = stale
            .iter()
            .map(|id| self.remove(&id.namespace, &id.name))
            .filter(|event| *event != StoreEvent::Ignored)
            .collect();
        events.extend(documents.iter().map(|document| self.apply(document)));
        events
    }

    fn publish(&self, entries: &Entries) {
        self.current.store(Arc::new(PolicySet {
            policies: entries.policies.values().cloned().collect(),
            reflections: entries.reflections.values().flatten().cloned().collect(),
            guard_namespace: self.guard_namespace.clone(),
            slo_specs: entries.slo_specs.clone(),
        }));
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // A panic while holding the lock cannot leave the maps half-updated (every
        // update is a single insert or remove), so a poisoned lock is safe to reuse.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Validates a policy ConfigMap, including the rules that depend on where it lives. A
/// policy with an `slo.source` fails here: it needs the specs, which
/// [`validate_policy_with_specs`] takes.
pub fn validate_policy_document(
    guard_namespace: &str,
    id: &PolicyRef,
    document: &ConfigMapDocument,
) -> Result<Policy, PolicyError> {
    validate_policy_with_specs(guard_namespace, &SloSpecCatalog::default(), id, document)
}

/// Validates a policy ConfigMap and resolves its `slo.source` against `specs`.
pub fn validate_policy_with_specs(
    guard_namespace: &str,
    specs: &SloSpecCatalog,
    id: &PolicyRef,
    document: &ConfigMapDocument,
) -> Result<Policy, PolicyError> {
    let mut policy = parse_policy_configmap(id, &document.data)?;
    crate::policy::resolve_slo_source(
        crate::policy::POLICY_KEY,
        &mut policy.spec,
        &id.namespace,
        specs,
    )?;
    if !policy.spec.matcher.namespaces.is_empty() && id.namespace != guard_namespace {
        return Err(PolicyError::Field {
            key: crate::policy::POLICY_KEY.to_string(),
            field: "match.namespaces".to_string(),
            message: format!(
                "only policies in slo-guard's namespace {guard_namespace:?} may govern other namespaces; this one is in {:?}",
                id.namespace
            ),
        });
    }
    Ok(policy)
}
