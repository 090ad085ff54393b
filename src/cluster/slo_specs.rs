//! The SLO spec watch: the Sloth, Pyrra and OpenSLO objects policies name in
//! `slo.source`, for the kinds whose CRDs the cluster serves, fed to the store's catalog.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Api, Client};

use super::configmaps::report;
use super::watch::{WatchSink, follow};
use crate::metrics::Metrics;
use crate::slo_spec::{CatalogEvent, DocumentKind, SloSpecDocument, SloSpecKind};
use crate::store::{PolicyStore, StoreEvent};

/// The SLO spec kinds slo-guard reads from the cluster: the API version, kind and
/// plural of each CRD, and the kind of document it holds.
const SLO_SPEC_RESOURCES: [(&str, &str, &str, &str, DocumentKind); 4] = [
    (
        "sloth.slok.dev",
        "v1",
        "PrometheusServiceLevel",
        "prometheusservicelevels",
        DocumentKind::Spec(SloSpecKind::PrometheusServiceLevel),
    ),
    (
        "pyrra.dev",
        "v1alpha1",
        "ServiceLevelObjective",
        "servicelevelobjectives",
        DocumentKind::Spec(SloSpecKind::ServiceLevelObjective),
    ),
    (
        "openslo",
        "v1",
        "SLO",
        "slos",
        DocumentKind::Spec(SloSpecKind::Slo),
    ),
    ("openslo", "v1", "SLI", "slis", DocumentKind::OpenSloSli),
];

/// The SLO spec CRDs this cluster serves: those whose group and version the API server
/// lists with the kind. A cluster without Sloth, Pyrra or OpenSLO has none, and
/// slo-guard does without them.
async fn served_slo_spec_resources(client: &Client) -> Vec<(ApiResource, DocumentKind)> {
    let mut served = Vec::new();
    for (group, version, kind, plural, document_kind) in SLO_SPEC_RESOURCES {
        let api_version = format!("{group}/{version}");
        match client.list_api_group_resources(&api_version).await {
            Ok(list)
                if list
                    .resources
                    .iter()
                    .any(|r| r.kind == kind && r.name == plural) =>
            {
                let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
                served.push((
                    ApiResource::from_gvk_with_plural(&gvk, plural),
                    document_kind,
                ));
            }
            Ok(_) | Err(_) => {}
        }
    }
    served
}

/// An SLO spec object as a document, or why it is not one.
fn spec_document_of(object: &DynamicObject) -> Option<SloSpecDocument> {
    let value = serde_json::to_value(object)
        .ok()
        .and_then(|json| serde_yaml::to_value(json).ok())?;
    match SloSpecDocument::recognize(&value, "", "cluster") {
        Ok(document) => document,
        Err(error) => {
            tracing::error!(%error, "SLO spec unreadable");
            None
        }
    }
}

/// Logs what adding an SLO spec did.
pub fn report_slo_spec(event: &CatalogEvent) {
    match event {
        CatalogEvent::Loaded(key) => tracing::info!(spec = %key, "SLO spec loaded"),
        CatalogEvent::Rejected {
            key,
            error,
            kept_previous,
        } => tracing::error!(spec = %key, %error, kept_previous, "SLO spec rejected"),
    }
}

/// Lists the SLO specs of every served kind once (for `reflect`, which judges past
/// changes and needs no watch).
pub async fn list_slo_specs(client: &Client) -> Vec<SloSpecDocument> {
    let mut documents = Vec::new();
    let served = served_slo_spec_resources(client).await;
    log_unserved_slo_specs(&served);
    for (resource, _) in served {
        let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
        match api.list(&Default::default()).await {
            Ok(list) => documents.extend(list.items.iter().filter_map(spec_document_of)),
            Err(error) => {
                tracing::warn!(kind = resource.kind, %error, "cannot list SLO specs");
            }
        }
    }
    documents
}

/// Watches the SLO spec kinds whose CRDs the cluster serves, and keeps the store's
/// catalog in step; policies that name a spec are resolved again when it changes, and
/// keep their last good version when it goes bad or away. Sends on `synced` once every
/// kind served at start has been listed (at once when none is). The kinds not served
/// are looked for again every `recheck`, so a CRD installed later (Sloth after
/// slo-guard) is watched without a restart.
pub async fn watch_slo_specs(
    client: Client,
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    synced: tokio::sync::oneshot::Sender<()>,
    recheck: Duration,
) {
    let served = served_slo_spec_resources(&client).await;
    log_unserved_slo_specs(&served);
    let mut watched: Vec<String> = served.iter().map(|(r, _)| r.kind.clone()).collect();
    let remaining = Arc::new(AtomicUsize::new(served.len()));
    let synced = Arc::new(std::sync::Mutex::new(Some(synced)));
    let signal = move || {
        if let Some(sender) = synced
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        {
            let _ = sender.send(());
        }
    };
    if served.is_empty() {
        signal();
    }
    let spawn = |resource: ApiResource, kind: DocumentKind, listed: Box<dyn FnOnce() + Send>| {
        tokio::spawn(watch_slo_spec_kind(
            client.clone(),
            store.clone(),
            metrics.clone(),
            resource,
            kind,
            listed,
        ))
    };
    for (resource, kind) in served {
        let remaining = remaining.clone();
        let signal = signal.clone();
        spawn(
            resource,
            kind,
            Box::new(move || {
                if remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
                    signal();
                }
            }),
        );
    }
    while watched.len() < SLO_SPEC_RESOURCES.len() {
        tokio::time::sleep(recheck).await;
        for (resource, kind) in served_slo_spec_resources(&client).await {
            if watched.contains(&resource.kind) {
                continue;
            }
            tracing::info!(
                api_version = resource.api_version,
                kind = resource.kind,
                "SLO spec CRD now served: watching it"
            );
            watched.push(resource.kind.clone());
            spawn(resource, kind, Box::new(|| {}));
        }
    }
}

fn log_unserved_slo_specs(served: &[(ApiResource, DocumentKind)]) {
    for (group, version, kind, _, _) in SLO_SPEC_RESOURCES {
        if !served.iter().any(|(r, _)| r.kind == kind) {
            tracing::info!(
                api_version = format!("{group}/{version}"),
                kind,
                "SLO spec CRD not served: policies cannot name this kind in slo.source until it is"
            );
        }
    }
}

/// Keeps the store's catalog in step with one served SLO spec kind.
struct SloSpecSink {
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    kind: DocumentKind,
}

impl SloSpecSink {
    fn report_policies(&self, policies: &[StoreEvent]) {
        policies
            .iter()
            .for_each(|event| report(event, &self.metrics));
    }
}

impl WatchSink<DynamicObject> for SloSpecSink {
    type Listing = Vec<SloSpecDocument>;

    fn listed(&mut self, listing: &mut Vec<SloSpecDocument>, object: DynamicObject) {
        listing.extend(spec_document_of(&object));
    }

    fn relisted(&mut self, listing: Vec<SloSpecDocument>) {
        let (catalog, policies) = self.store.replace_slo_specs(&[self.kind], listing);
        catalog.iter().for_each(report_slo_spec);
        self.report_policies(&policies);
    }

    fn applied(&mut self, object: DynamicObject) {
        if let Some(document) = spec_document_of(&object) {
            let (catalog, policies) = self.store.apply_slo_spec(document);
            report_slo_spec(&catalog);
            self.report_policies(&policies);
        }
    }

    fn deleted(&mut self, object: DynamicObject) {
        if let Some(document) = spec_document_of(&object) {
            let policies = self.store.remove_slo_spec(&document.key());
            self.report_policies(&policies);
        }
    }
}

/// Keeps the store's catalog in step with one served SLO spec kind; calls `listed` after
/// its first list.
async fn watch_slo_spec_kind(
    client: Client,
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    resource: ApiResource,
    kind: DocumentKind,
    listed: impl FnOnce(),
) {
    let api = Api::<DynamicObject>::all_with(client, &resource);
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let sink = SloSpecSink {
        store,
        metrics,
        kind,
    };
    follow(stream, "SLO specs", sink, listed).await;
}

/// How long `serve` waits for the SLO specs' first list before it watches the policies.
pub const SLO_SPEC_SYNC_WAIT: Duration = Duration::from_secs(5);
