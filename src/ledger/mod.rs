//! The change ledger: what slo-guard admitted for each workload, kept in the cluster so
//! that every replica and every restart sees it. Cooldowns read the last agent change from
//! it, and approvals are spent in it.
//!
//! The record is read before a decision and written after it, with optimistic
//! concurrency: of two admissions racing for one workload, only one can write the record
//! its decision was based on, and the other is judged again on the record that won. The
//! types here are plain values; [`lease`] keeps them in Leases.

pub mod lease;

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::admission::{Change, WorkloadKind};
use crate::policy::AgentAnnotation;

/// How many spent approvals a record remembers per workload. An approval names one
/// change's digest, so an old spent one can only come back with that exact content.
const SPENT_APPROVALS_KEPT: usize = 32;

/// What slo-guard admitted for one workload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerRecord {
    /// The last agent change admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_agent_change: Option<AdmittedChange>,
    /// Approvals that admitted a change, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spent_approvals: Vec<SpentApproval>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmittedChange {
    pub at: DateTime<Utc>,
    /// [`fingerprint`] of the change: the same change retried has the same one.
    pub fingerprint: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    pub class: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpentApproval {
    /// The `slo-guard.io/approve` value, `<decision-id>@<digest>`.
    pub approval: String,
    /// The change it admitted.
    pub fingerprint: String,
    pub at: DateTime<Utc>,
}

impl LedgerRecord {
    /// The change that spent `approval`, if one did.
    pub fn spent(&self, approval: &str) -> Option<&SpentApproval> {
        self.spent_approvals
            .iter()
            .rev()
            .find(|spent| spent.approval == approval)
    }

    /// This record after admitting `change`, whose fingerprint is `fingerprint`, at
    /// `now`, spending `approval` if one admitted it.
    pub fn after(
        &self,
        change: &Change,
        fingerprint: &str,
        approval: Option<&str>,
        now: DateTime<Utc>,
    ) -> LedgerRecord {
        let mut next = self.clone();
        next.last_agent_change = Some(AdmittedChange {
            at: now,
            fingerprint: fingerprint.to_string(),
            user: change.requester.username.clone(),
            decision_id: decision_id(change).map(str::to_string),
            class: change.class.as_str().to_string(),
        });
        if let Some(approval) = approval
            && self.spent(approval).is_none()
        {
            next.spent_approvals.push(SpentApproval {
                approval: approval.to_string(),
                fingerprint: fingerprint.to_string(),
                at: now,
            });
            let excess = next
                .spent_approvals
                .len()
                .saturating_sub(SPENT_APPROVALS_KEPT);
            next.spent_approvals.drain(..excess);
        }
        next
    }
}

fn decision_id(change: &Change) -> Option<&str> {
    change
        .annotations
        .as_ref()?
        .get(AgentAnnotation::DecisionId.key())
        .map(String::as_str)
}

/// Who made the change, under which decision, what it sets and what it sets it over: a
/// retry of the same change (by the client, or by the apiserver after a write conflict)
/// has the same fingerprint, and any other change has another, including the same
/// content replayed after someone else changed the workload.
pub fn fingerprint(change: &Change, content_digest: &str) -> String {
    let identity = serde_json::json!({
        "user": change.requester.username,
        "decision": decision_id(change),
        "content": content_digest,
        "base": change.base_digest(),
    });
    let digest = ring::digest::digest(&ring::digest::SHA256, identity.to_string().as_bytes());
    digest.as_ref()[..12]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The workload a ledger record belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LedgerKey {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

impl LedgerKey {
    /// The ledger key of the workload `change` is judged for, if it has one.
    pub fn of(change: &Change) -> Option<Self> {
        Some(Self {
            kind: change.target.workload_kind?,
            namespace: change.target.namespace.clone(),
            name: change.target.name.clone(),
        })
    }
}

/// A record as read, with the version a write must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Versioned {
    pub record: LedgerRecord,
    /// `None` when no record exists yet: the write creates it.
    pub version: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Another admission wrote the record since it was read.
    #[error("the change ledger of {0} was written concurrently")]
    Conflict(String),
    #[error("the change ledger is unavailable: {0}")]
    Unavailable(String),
}

pub type LedgerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LedgerError>> + Send + 'a>>;

/// Where ledger records live. Implementations keep them in the cluster, shared by every
/// slo-guard replica; a write succeeds only if the record is still at `expected`.
pub trait ChangeLedger: Send + Sync {
    fn read<'a>(&'a self, key: &'a LedgerKey) -> LedgerFuture<'a, Versioned>;
    fn write<'a>(
        &'a self,
        key: &'a LedgerKey,
        record: &'a LedgerRecord,
        expected: Option<&'a str>,
    ) -> LedgerFuture<'a, ()>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{AGENT, WithAnnotations, scale_by, scale_context};

    #[test]
    fn the_same_change_has_the_same_fingerprint_and_another_change_another() {
        let change = scale_by(AGENT, Some(4), 7).with_annotations(&scale_context());
        let again = scale_by(AGENT, Some(4), 7).with_annotations(&scale_context());
        let other = scale_by(AGENT, Some(4), 8).with_annotations(&scale_context());
        let replayed = scale_by(AGENT, Some(9), 7).with_annotations(&scale_context());
        let print = |c: &Change| fingerprint(c, &c.content_digest());
        assert_eq!(print(&change), print(&again), "a retry from the same base");
        assert_ne!(print(&change), print(&other));
        assert_ne!(
            print(&change),
            print(&replayed),
            "the same content over a base someone else changed is another change"
        );
        assert_eq!(change.content_digest(), replayed.content_digest());
        let mut by_other_decision = change.clone();
        by_other_decision
            .annotations
            .as_mut()
            .expect("annotations")
            .insert("slo-guard.io/decision-id".into(), "another-decision".into());
        assert_ne!(print(&change), print(&by_other_decision));
    }

    #[test]
    fn an_approval_is_spent_once_and_old_ones_are_forgotten_in_order() {
        let change = scale_by(AGENT, Some(4), 7).with_annotations(&scale_context());
        let now = crate::rules::testing::test_now();
        let mut record = LedgerRecord::default();
        for n in 0..40 {
            record = record.after(&change, "f", Some(&format!("d@{n}")), now);
        }
        assert_eq!(record.spent_approvals.len(), SPENT_APPROVALS_KEPT);
        assert!(record.spent("d@39").is_some());
        assert!(record.spent("d@0").is_none());
        let again = record.after(&change, "g", Some("d@39"), now);
        assert_eq!(
            again.spent("d@39").map(|s| s.fingerprint.as_str()),
            Some("f")
        );
    }
}
