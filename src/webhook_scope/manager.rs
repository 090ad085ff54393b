//! Reads and writes the scope on slo-guard's own webhook configurations: widening while a
//! policy is admitted, and reconciling with the policies in force in the background.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};

use super::{Reach, SCOPE_ANNOTATION, ScopeRecord};
use crate::admission::POLICY_LABEL;
use crate::metrics::Metrics;
use crate::policy::{PolicyRef, parse_policy_configmap};
use crate::store::PolicyStore;

/// Conditional writes that lost to another writer are tried again this many times.
const WRITE_ROUNDS: usize = 5;

/// Why the scope could not be read or written. `what` names the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    /// A GET failed (RBAC, or the apiserver unreachable).
    #[error("cannot read {what}: {cause}")]
    Read {
        /// The configuration.
        what: String,
        /// The client's error.
        cause: String,
    },
    /// A replace failed for another reason than a conflict.
    #[error("cannot write {what}: {cause}")]
    Write {
        /// The configuration.
        what: String,
        /// The client's error.
        cause: String,
    },
    /// The configuration is not installed.
    #[error("{0} does not exist")]
    Missing(String),
    /// Every write lost to another writer.
    #[error("{0} kept changing while slo-guard wrote it ({WRITE_ROUNDS} tries)")]
    Contended(String),
}

/// Extends the webhooks' scope before a policy is admitted (the guard's side of it, so
/// tests can stand in for the cluster).
pub trait ScopeWidener: Send + Sync {
    /// Puts what a policy needs (`reach`) in the workload webhooks' scope, and returns once
    /// it is written.
    fn widen<'a>(&'a self, reach: &'a Reach) -> BoxFuture<'a, Result<(), ScopeError>>;
}

/// Which configurations and webhooks to scope, and how patiently.
#[derive(Debug, Clone)]
pub struct ScopeSettings {
    /// The ValidatingWebhookConfiguration's name; it also keeps the scope's record.
    pub validating: String,
    /// The MutatingWebhookConfiguration's name, if one is installed.
    pub mutating: Option<String>,
    /// The webhooks (by name, in either configuration) whose namespaceSelector follows the
    /// policies; in the mutating configuration, their scale rule follows the clamping
    /// policies too. Policy and reflection ConfigMap webhooks must never be listed.
    pub webhooks: Vec<String>,
    /// How long a namespace no policy governs any more stays in scope.
    pub grace: Duration,
    /// How often the scope is reconciled with the policies in force.
    pub interval: Duration,
}

/// Keeps slo-guard's own webhook configurations scoped to the namespaces its policies
/// govern: widened by admissions ([`ScopeWidener`]), reconciled and narrowed by
/// [`WebhookScope::run`].
pub struct WebhookScope {
    validating: Api<ValidatingWebhookConfiguration>,
    mutating: Api<MutatingWebhookConfiguration>,
    configmaps: Api<ConfigMap>,
    settings: ScopeSettings,
    guard_namespace: String,
    metrics: Arc<Metrics>,
}

/// What a reconciliation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// Nothing to write.
    Unchanged,
    /// Namespaces added.
    Widened,
    /// Namespaces removed (after their grace period).
    Narrowed,
}

impl WebhookScope {
    /// A manager of the configurations `settings` names, for slo-guard running in
    /// `guard_namespace`.
    pub fn new(
        client: Client,
        settings: ScopeSettings,
        guard_namespace: &str,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            validating: Api::all(client.clone()),
            mutating: Api::all(client.clone()),
            configmaps: Api::all(client),
            settings,
            guard_namespace: guard_namespace.to_string(),
            metrics,
        }
    }

    fn validating_name(&self) -> String {
        format!(
            "ValidatingWebhookConfiguration {}",
            self.settings.validating
        )
    }

    async fn read_record(
        &self,
    ) -> Result<(ValidatingWebhookConfiguration, ScopeRecord), ScopeError> {
        let what = self.validating_name();
        let configuration = self
            .validating
            .get_opt(&self.settings.validating)
            .await
            .map_err(|e| ScopeError::Read {
                what: what.clone(),
                cause: e.to_string(),
            })?
            .ok_or(ScopeError::Missing(what))?;
        let record = ScopeRecord::from_annotation(
            configuration
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SCOPE_ANNOTATION))
                .map(String::as_str),
        );
        Ok((configuration, record))
    }

    /// Writes the record `next_of` makes from the one in force (none: leave it), retrying
    /// on conflicts; then brings the mutating configuration in line. Returns the record in
    /// force afterwards.
    async fn update(
        &self,
        next_of: impl Fn(&ScopeRecord) -> Option<ScopeRecord>,
    ) -> Result<ScopeRecord, ScopeError> {
        let what = self.validating_name();
        for _ in 0..WRITE_ROUNDS {
            let (mut configuration, record) = self.read_record().await?;
            let next = next_of(&record).unwrap_or_else(|| record.clone());
            // The selectors are compared too: an installer (`helm upgrade`) may have put
            // the installed selector back under an unchanged record.
            let mut changed = next != record;
            if changed {
                configuration
                    .metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(SCOPE_ANNOTATION.to_string(), next.to_annotation());
            }
            changed |= self.scope_selectors(
                configuration
                    .webhooks
                    .iter_mut()
                    .flatten()
                    .map(|w| (w.name.as_str(), &mut w.namespace_selector)),
                &next,
            );
            if !changed {
                self.sync_mutating(&record).await?;
                return Ok(record);
            }
            let replaced = self
                .validating
                .replace(
                    &self.settings.validating,
                    &PostParams::default(),
                    &configuration,
                )
                .await;
            if landed(replaced, &what)? {
                self.sync_mutating(&next).await?;
                self.observe(&next);
                return Ok(next);
            }
        }
        Err(ScopeError::Contended(what))
    }

    async fn sync_mutating(&self, record: &ScopeRecord) -> Result<(), ScopeError> {
        let Some(name) = &self.settings.mutating else {
            return Ok(());
        };
        let what = format!("MutatingWebhookConfiguration {name}");
        for _ in 0..WRITE_ROUNDS {
            let Some(mut configuration) =
                self.mutating
                    .get_opt(name)
                    .await
                    .map_err(|e| ScopeError::Read {
                        what: what.clone(),
                        cause: e.to_string(),
                    })?
            else {
                // Installed without the mutating webhook: nothing to scope.
                return Ok(());
            };
            let mut changed = self.scope_selectors(
                configuration
                    .webhooks
                    .iter_mut()
                    .flatten()
                    .map(|w| (w.name.as_str(), &mut w.namespace_selector)),
                record,
            );
            for webhook in configuration.webhooks.iter_mut().flatten() {
                if self.is_managed(&webhook.name) {
                    let current = webhook.rules.clone().unwrap_or_default();
                    let scoped = record.apply_to_mutating_rules(&current);
                    if scoped != current {
                        webhook.rules = Some(scoped);
                        changed = true;
                    }
                }
            }
            if !changed {
                return Ok(());
            }
            let replaced = self
                .mutating
                .replace(name, &PostParams::default(), &configuration)
                .await;
            if landed(replaced, &what)? {
                return Ok(());
            }
        }
        Err(ScopeError::Contended(what))
    }

    /// Sets the namespaceSelector of each managed webhook to what `record` scopes;
    /// whether any changed.
    fn scope_selectors<'a>(
        &self,
        webhooks: impl Iterator<Item = (&'a str, &'a mut Option<LabelSelector>)>,
        record: &ScopeRecord,
    ) -> bool {
        let mut changed = false;
        for (name, selector) in webhooks {
            if self.is_managed(name) {
                let scoped = record.apply_to(selector.as_ref());
                if selector.as_ref() != Some(&scoped) {
                    *selector = Some(scoped);
                    changed = true;
                }
            }
        }
        changed
    }

    fn is_managed(&self, webhook: &str) -> bool {
        self.settings
            .webhooks
            .iter()
            .any(|managed| managed == webhook)
    }

    fn observe(&self, record: &ScopeRecord) {
        self.metrics.webhook_scope_managed.set(1);
        self.metrics
            .webhook_scope_namespaces
            .set(record.sent().map_or(-1, |names| names.len() as i64));
        self.metrics
            .webhook_scope_scale_mutations
            .set(i64::from(record.scale_mutations_since.is_some()));
    }

    /// What the policy ConfigMaps in the apiserver need now (a consistent list, not a
    /// cache): the check before anything leaves the scope. ConfigMaps
    /// that do not parse govern nothing here; the store keeps their last good version.
    async fn listed_reach(&self) -> Result<Reach, ScopeError> {
        let listed = self
            .configmaps
            .list(&ListParams::default().labels(&format!("{POLICY_LABEL}=true")))
            .await
            .map_err(|e| ScopeError::Read {
                what: "policy ConfigMaps".to_string(),
                cause: e.to_string(),
            })?;
        Ok(listed
            .items
            .iter()
            .filter_map(|configmap| {
                let id = PolicyRef {
                    namespace: configmap.metadata.namespace.clone()?,
                    name: configmap.metadata.name.clone()?,
                };
                let data = configmap.data.clone().unwrap_or_default();
                parse_policy_configmap(&id, &data).ok()
            })
            .fold(Reach::none(), |reach, policy| {
                reach.union(Reach::of_policy(&policy, &self.guard_namespace))
            }))
    }

    /// Brings the scope in line with the policies in force in `store`; a namespace leaves
    /// only if the apiserver's own list agrees that nothing governs it.
    pub async fn reconcile(
        &self,
        store: &PolicyStore,
    ) -> Result<(Reconciled, ScopeRecord), ScopeError> {
        let grace = chrono::Duration::from_std(self.settings.grace)
            .unwrap_or_else(|_| chrono::Duration::minutes(5));
        let mut reach = Reach::of_set(&store.snapshot());
        let (_, record) = self.read_record().await?;
        if record.narrows_to(&record.reconciled(&reach, Utc::now(), grace)) {
            reach = reach.union(self.listed_reach().await?);
        }
        let before = record;
        let after = self
            .update(|current| {
                let next = current.reconciled(&reach, Utc::now(), grace);
                (next != *current).then_some(next)
            })
            .await?;
        self.observe(&after);
        let outcome = if after == before {
            Reconciled::Unchanged
        } else if before.narrows_to(&after) {
            Reconciled::Narrowed
        } else {
            Reconciled::Widened
        };
        Ok((outcome, after))
    }

    /// Reconciles every `interval`, for as long as the server runs. Failures are logged and counted; the scope then stays
    /// as it is, which is never narrower than a policy admitted through this replica.
    pub async fn run(self: Arc<Self>, store: Arc<PolicyStore>) {
        let mut last_error: Option<String> = None;
        loop {
            match self.reconcile(&store).await {
                Ok((outcome, record)) => {
                    if last_error.take().is_some() {
                        tracing::info!("webhook scope managed again");
                    }
                    if outcome != Reconciled::Unchanged {
                        self.metrics
                            .webhook_scope_updates
                            .get_or_create(&crate::metrics::ResultLabels {
                                result: match outcome {
                                    Reconciled::Narrowed => "narrowed",
                                    _ => "widened",
                                }
                                .to_string(),
                            })
                            .inc();
                        tracing::info!(
                            outcome = ?outcome,
                            namespaces = %record.sent().map_or_else(|| "all".to_string(), |n| n.join(",")),
                            "webhook scope reconciled"
                        );
                    }
                }
                Err(error) => {
                    self.metrics.webhook_scope_managed.set(0);
                    self.metrics
                        .webhook_scope_updates
                        .get_or_create(&crate::metrics::ResultLabels {
                            result: "failed".to_string(),
                        })
                        .inc();
                    let message = error.to_string();
                    if last_error.as_deref() != Some(message.as_str()) {
                        tracing::error!(
                            error = %message,
                            "cannot manage the webhook scope; the webhooks keep the scope they have. \
                             Grant slo-guard get/update on its webhook configurations, or run with --webhook-scope static"
                        );
                    }
                    last_error = Some(message);
                }
            }
            tokio::time::sleep(self.settings.interval).await;
        }
    }
}

impl ScopeWidener for WebhookScope {
    fn widen<'a>(&'a self, reach: &'a Reach) -> BoxFuture<'a, Result<(), ScopeError>> {
        Box::pin(async move {
            let record = self
                .update(|current| Some(current.widened(reach, Utc::now())))
                .await?;
            self.metrics
                .webhook_scope_updates
                .get_or_create(&crate::metrics::ResultLabels {
                    result: "widened".to_string(),
                })
                .inc();
            tracing::info!(
                namespaces = %record.sent().map_or_else(|| "all".to_string(), |n| n.join(",")),
                "webhook scope widened for an admitted policy"
            );
            Ok(())
        })
    }
}

/// Whether a replace landed; false on a conflict (someone wrote in between: read again).
fn landed<T>(replaced: Result<T, kube::Error>, what: &str) -> Result<bool, ScopeError> {
    match replaced {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(ScopeError::Write {
            what: what.to_string(),
            cause: e.to_string(),
        }),
    }
}
