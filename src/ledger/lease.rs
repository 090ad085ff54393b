//! The change ledger in Leases (coordination.k8s.io/v1) in slo-guard's own namespace:
//! one per workload, its record in an annotation, every write conditional on the
//! resourceVersion that was read. Agents hold no rights in that namespace, so they can
//! neither read nor rewrite what was admitted.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};

use super::{ChangeLedger, LedgerError, LedgerFuture, LedgerKey, LedgerRecord, Versioned};

/// The annotation the record lives in, as JSON.
pub const RECORD_ANNOTATION: &str = "slo-guard.io/ledger";
/// The workload a Lease records, as `Deployment payments/checkout`, for people reading it.
pub const WORKLOAD_ANNOTATION: &str = "slo-guard.io/workload";
/// Marks ledger Leases (`kubectl get leases -l slo-guard.io/ledger=true`).
pub const LEDGER_LABEL: &str = "slo-guard.io/ledger";

/// The change ledger kept in Leases of slo-guard's own namespace, one per workload, so
/// that every replica reads and writes the same records, with the apiserver's
/// resourceVersion as the guard against concurrent writes.
pub struct LeaseLedger {
    leases: Api<Lease>,
}

impl LeaseLedger {
    /// A ledger in `namespace` (slo-guard's own, where agents have no rights).
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            leases: Api::namespaced(client, namespace),
        }
    }
}

/// The Lease name of a workload's record: a digest, since namespace and name together
/// can be longer than a name may be.
pub fn lease_name(key: &LedgerKey) -> String {
    let identity = format!("{}/{}/{}", key.kind.as_str(), key.namespace, key.name);
    let digest = ring::digest::digest(&ring::digest::SHA256, identity.as_bytes());
    let hex: String = digest.as_ref()[..12]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("slo-guard-ledger-{hex}")
}

fn unavailable(error: kube::Error) -> LedgerError {
    LedgerError::Unavailable(error.to_string())
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

impl ChangeLedger for LeaseLedger {
    fn read<'a>(&'a self, key: &'a LedgerKey) -> LedgerFuture<'a, Versioned> {
        Box::pin(async move {
            let Some(lease) = self
                .leases
                .get_opt(&lease_name(key))
                .await
                .map_err(unavailable)?
            else {
                return Ok(Versioned::default());
            };
            let record = match lease
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(RECORD_ANNOTATION))
            {
                Some(text) => serde_json::from_str(text).map_err(|error| {
                    LedgerError::Unavailable(format!(
                        "Lease {} holds an unreadable record: {error}",
                        lease_name(key)
                    ))
                })?,
                None => LedgerRecord::default(),
            };
            Ok(Versioned {
                record,
                version: lease.metadata.resource_version,
            })
        })
    }

    fn write<'a>(
        &'a self,
        key: &'a LedgerKey,
        record: &'a LedgerRecord,
        expected: Option<&'a str>,
    ) -> LedgerFuture<'a, ()> {
        Box::pin(async move {
            let text = serde_json::to_string(record)
                .map_err(|error| LedgerError::Unavailable(error.to_string()))?;
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(lease_name(key)),
                    resource_version: expected.map(str::to_string),
                    labels: Some(BTreeMap::from([
                        (LEDGER_LABEL.to_string(), "true".to_string()),
                        (
                            "app.kubernetes.io/managed-by".to_string(),
                            "slo-guard".to_string(),
                        ),
                    ])),
                    annotations: Some(BTreeMap::from([
                        (RECORD_ANNOTATION.to_string(), text),
                        (
                            WORKLOAD_ANNOTATION.to_string(),
                            format!("{} {}/{}", key.kind.as_str(), key.namespace, key.name),
                        ),
                    ])),
                    ..ObjectMeta::default()
                },
                spec: None,
            };
            let params = PostParams::default();
            let written = match expected {
                None => self.leases.create(&params, &lease).await.map(|_| ()),
                Some(_) => self
                    .leases
                    .replace(&lease_name(key), &params, &lease)
                    .await
                    .map(|_| ()),
            };
            match written {
                Ok(()) => Ok(()),
                // 409: AlreadyExists on create, a stale resourceVersion on replace.
                Err(error) if is_status(&error, 409) => Err(LedgerError::Conflict(format!(
                    "{} {}/{}",
                    key.kind.as_str(),
                    key.namespace,
                    key.name
                ))),
                Err(error) => Err(unavailable(error)),
            }
        })
    }
}
