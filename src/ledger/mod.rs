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

/// What identifies one admitted change: who made it under which decision and what it
/// sets ([`fingerprint`]), the state it was applied to ([`Change::base_digest`]) and the
/// state it leaves ([`Change::result_digest`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeMark {
    /// Who, under which decision, setting what ([`fingerprint`]).
    pub fingerprint: String,
    /// The state the change was applied to.
    pub base: String,
    /// The state it leaves.
    pub result: String,
}

impl ChangeMark {
    /// The mark of `change`, whose content digest is `content_digest`.
    pub fn of(change: &Change, content_digest: &str) -> Self {
        Self {
            fingerprint: fingerprint(change, content_digest),
            base: change.base_digest(),
            result: change.result_digest(),
        }
    }

    /// Whether `other` is this change again: the same fingerprint, applied to the same
    /// state (the apiserver's retry after a write conflict, a second replica judging the
    /// same request) or to the state this change left (a client's retry after it
    /// landed). The same content replayed over a state someone else made is another
    /// change.
    pub fn recognizes(&self, other: &ChangeMark) -> bool {
        self.fingerprint == other.fingerprint
            && (other.base == self.base || other.base == self.result)
    }
}

/// An agent's change that was admitted: what the cooldown counts from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmittedChange {
    /// When it was admitted.
    pub at: DateTime<Utc>,
    /// Which change it was, so that a retry of it is recognized and not counted again.
    #[serde(flatten)]
    pub mark: ChangeMark,
    /// The agent's username.
    pub user: String,
    /// Its `slo-guard.io/decision-id`, if it carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    /// Its change class (`scale`, `rollout`, ...).
    pub class: String,
}

/// An approval that admitted a change, and so can admit no other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpentApproval {
    /// The `slo-guard.io/approve` value, `<decision-id>@<digest>`.
    pub approval: String,
    /// The change it admitted.
    #[serde(flatten)]
    pub mark: ChangeMark,
    /// When.
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

    /// This record after admitting `change`, marked `mark`, at `now`, spending
    /// `approval` if one admitted it.
    pub fn after(
        &self,
        change: &Change,
        mark: &ChangeMark,
        approval: Option<&str>,
        now: DateTime<Utc>,
    ) -> LedgerRecord {
        let mut next = self.clone();
        next.last_agent_change = Some(AdmittedChange {
            at: now,
            mark: mark.clone(),
            user: change.requester.username.clone(),
            decision_id: decision_id(change).map(str::to_string),
            class: change.class.as_str().to_string(),
        });
        if let Some(approval) = approval
            && self.spent(approval).is_none()
        {
            next.spent_approvals.push(SpentApproval {
                approval: approval.to_string(),
                mark: mark.clone(),
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
        .after
        .as_ref()?
        .get(AgentAnnotation::DecisionId.key())
        .map(String::as_str)
}

/// Who made the change, under which decision, and what it sets.
pub fn fingerprint(change: &Change, content_digest: &str) -> String {
    let identity = serde_json::json!({
        "user": change.requester.username,
        "decision": decision_id(change),
        "content": content_digest,
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
    /// The workload's kind.
    pub kind: WorkloadKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl LedgerKey {
    /// The ledger key of the workload `change` is judged for, if it has one.
    pub fn of(change: &Change) -> Option<Self> {
        Some(Self {
            kind: change.target.workload_kind()?,
            namespace: change.target.namespace.clone(),
            name: change.target.name.clone(),
        })
    }
}

/// A record as read, with the version a write must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Versioned {
    /// The record (empty when none exists yet).
    pub record: LedgerRecord,
    /// `None` when no record exists yet: the write creates it.
    pub version: Option<String>,
}

/// Why a ledger read or write failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Another admission wrote the record since it was read.
    #[error("the change ledger of {0} was written concurrently")]
    Conflict(String),
    /// The cluster could not be read or written (the message says why); admission then
    /// fails closed for the rules that need the ledger.
    #[error("the change ledger is unavailable: {0}")]
    Unavailable(String),
}

/// What a [`ChangeLedger`] call returns.
pub type LedgerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LedgerError>> + Send + 'a>>;

/// Where ledger records live. Implementations keep them in the cluster, shared by every
/// slo-guard replica; a write succeeds only if the record is still at `expected`.
pub trait ChangeLedger: Send + Sync {
    /// The record of `key`, with its version.
    fn read<'a>(&'a self, key: &'a LedgerKey) -> LedgerFuture<'a, Versioned>;
    /// Writes `record` for `key` if the stored one is still at version `expected`
    /// (`None`: if none exists); [`LedgerError::Conflict`] otherwise.
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
    fn a_change_is_recognized_from_its_base_or_its_result_and_not_over_anothers() {
        let mark = |old: u32, new: u32| {
            let change = scale_by(AGENT, Some(old), new).with_annotations(&scale_context());
            ChangeMark::of(&change, &change.content_digest())
        };
        let admitted = mark(4, 7);
        assert!(admitted.recognizes(&mark(4, 7)), "the apiserver's retry");
        assert!(
            admitted.recognizes(&mark(7, 7)),
            "a client's retry after it landed"
        );
        assert!(!admitted.recognizes(&mark(4, 8)), "other content");
        assert!(
            !admitted.recognizes(&mark(9, 7)),
            "the same content over a state someone else made"
        );
        let change = scale_by(AGENT, Some(4), 7).with_annotations(&scale_context());
        let mut by_other_decision = change.clone();
        by_other_decision
            .annotations
            .after
            .as_mut()
            .expect("annotations")
            .insert("slo-guard.io/decision-id".into(), "another-decision".into());
        assert!(!admitted.recognizes(&ChangeMark::of(
            &by_other_decision,
            &by_other_decision.content_digest()
        )));
    }

    #[test]
    fn an_approval_is_spent_once_and_old_ones_are_forgotten_in_order() {
        let change = scale_by(AGENT, Some(4), 7).with_annotations(&scale_context());
        let now = crate::rules::testing::test_now();
        let mark = |fingerprint: &str| ChangeMark {
            fingerprint: fingerprint.into(),
            base: "b".into(),
            result: "r".into(),
        };
        let mut record = LedgerRecord::default();
        for n in 0..40 {
            record = record.after(&change, &mark("f"), Some(&format!("d@{n}")), now);
        }
        assert_eq!(record.spent_approvals.len(), SPENT_APPROVALS_KEPT);
        assert!(record.spent("d@39").is_some());
        assert!(record.spent("d@0").is_none());
        let again = record.after(&change, &mark("g"), Some("d@39"), now);
        assert_eq!(
            again.spent("d@39").map(|s| s.mark.fingerprint.as_str()),
            Some("f")
        );
    }
}
