//! The ConfigMap watch: slo-guard's policy and reflection ConfigMaps, fed to the store
//! as they change, with each rejected version logged, counted and recorded as an Event.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Api, Client};

use super::events::{EventRecord, EventRecorder};
use super::watch::{WatchSink, follow};
use crate::admission::{ConfigKind, POLICY_LABEL, REFLECTION_LABEL};
use crate::metrics::{ConfigMapLabels, Metrics};
use crate::policy::PolicyRef;
use crate::store::{ConfigMapDocument, PolicyStore, StoreEvent};

/// A ConfigMap as a store document, or `None` (logged) when it cannot be read as one.
fn document_of(configmap: ConfigMap) -> Option<ConfigMapDocument> {
    let origin = format!(
        "configmap {}/{}",
        configmap.metadata.namespace.as_deref().unwrap_or_default(),
        configmap.metadata.name.as_deref().unwrap_or_default()
    );
    match ConfigMapDocument::from_configmap(configmap, "default", origin) {
        Ok(document) => Some(document),
        Err(error) => {
            tracing::warn!(%error, "unreadable ConfigMap");
            None
        }
    }
}

/// Logs what loading a policy or reflection ConfigMap did, and counts its rejections.
pub fn report(event: &StoreEvent, metrics: &Metrics) {
    match event {
        StoreEvent::Loaded { configmap } => tracing::info!(configmap = %configmap, "policy loaded"),
        StoreEvent::Removed { configmap } => {
            tracing::info!(configmap = %configmap, "policy removed")
        }
        StoreEvent::Rejected {
            configmap,
            error,
            kept_previous,
        } => {
            metrics
                .policy_load_errors
                .get_or_create(&ConfigMapLabels {
                    configmap: configmap.to_string(),
                })
                .inc();
            tracing::error!(configmap = %configmap, %error, kept_previous, "policy rejected");
        }
        StoreEvent::Ignored => {}
    }
}

/// The reference an Event on a ConfigMap carries: this very version of it.
fn configmap_reference(configmap: &ConfigMap) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        namespace: configmap.metadata.namespace.clone(),
        name: configmap.metadata.name.clone(),
        uid: configmap.metadata.uid.clone(),
        resource_version: configmap.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

/// Keeps the store in step with one kind of slo-guard ConfigMap, and surfaces what each
/// version did.
struct ConfigMapSink {
    kind: ConfigKind,
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    events: Option<EventRecorder>,
    /// The version of each ConfigMap last seen, for Events about it.
    references: HashMap<PolicyRef, ObjectReference>,
}

/// A relist of ConfigMaps: their documents, and the version of each for Events.
#[derive(Default)]
struct ConfigMapListing {
    documents: BTreeMap<PolicyRef, ConfigMapDocument>,
    references: HashMap<PolicyRef, ObjectReference>,
}

fn id_of(configmap: &ConfigMap) -> PolicyRef {
    PolicyRef {
        namespace: configmap.metadata.namespace.clone().unwrap_or_default(),
        name: configmap.metadata.name.clone().unwrap_or_default(),
    }
}

impl ConfigMapSink {
    /// Logs and counts a store event and, for a rejected version, records a Warning
    /// Event on the ConfigMap so its owner sees the error with `kubectl describe
    /// configmap`.
    fn surface(&self, event: &StoreEvent) {
        report(event, &self.metrics);
        let (
            Some(events),
            StoreEvent::Rejected {
                configmap,
                error,
                kept_previous,
            },
        ) = (&self.events, event)
        else {
            return;
        };
        let Some(reference) = self.references.get(configmap) else {
            return;
        };
        let consequence = if *kept_previous {
            "The last good version stays in force."
        } else {
            "No earlier version was valid, so this ConfigMap governs nothing."
        };
        events.record(EventRecord {
            regarding: reference.clone(),
            related: None,
            reason: match self.kind {
                ConfigKind::Policy => "PolicyRejected",
                ConfigKind::Reflection => "ReflectionRejected",
            },
            action: "Load",
            note: format!("{error}. {consequence} Fix it and apply again."),
        });
    }
}

impl WatchSink<ConfigMap> for ConfigMapSink {
    type Listing = ConfigMapListing;

    fn listed(&mut self, listing: &mut ConfigMapListing, configmap: ConfigMap) {
        listing
            .references
            .insert(id_of(&configmap), configmap_reference(&configmap));
        if let Some(document) = document_of(configmap) {
            let id = PolicyRef {
                namespace: document.namespace.clone(),
                name: document.name.clone(),
            };
            listing.documents.insert(id, document);
        }
    }

    fn relisted(&mut self, listing: ConfigMapListing) {
        self.references = listing.references;
        let documents: Vec<ConfigMapDocument> = listing.documents.into_values().collect();
        for event in self.store.replace_all(Some(self.kind), &documents) {
            self.surface(&event);
        }
    }

    fn applied(&mut self, configmap: ConfigMap) {
        self.references
            .insert(id_of(&configmap), configmap_reference(&configmap));
        if let Some(document) = document_of(configmap) {
            let event = self.store.apply(&document);
            self.surface(&event);
        }
    }

    fn deleted(&mut self, configmap: ConfigMap) {
        let id = id_of(&configmap);
        self.references.remove(&id);
        report(&self.store.remove(&id.namespace, &id.name), &self.metrics);
    }
}

/// Watches one kind of slo-guard ConfigMap cluster-wide and keeps the store in step.
/// Sends on `synced` after the first complete list. Rejected versions are logged,
/// counted, and recorded as Events on their ConfigMap when `events` is given.
pub async fn watch_configmaps(
    client: Client,
    kind: ConfigKind,
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    events: Option<EventRecorder>,
    synced: tokio::sync::oneshot::Sender<()>,
) {
    let label = match kind {
        ConfigKind::Policy => POLICY_LABEL,
        ConfigKind::Reflection => REFLECTION_LABEL,
    };
    let config = watcher::Config::default().labels(&format!("{label}=true"));
    let stream = watcher::watcher(Api::<ConfigMap>::all(client), config).default_backoff();
    let sink = ConfigMapSink {
        kind,
        store,
        metrics,
        events,
        references: HashMap::new(),
    };
    follow(stream, "configmaps", sink, move || {
        let _ = synced.send(());
    })
    .await;
}
