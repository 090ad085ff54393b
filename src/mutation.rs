//! The mutating side: a JSON Patch (RFC 6902) that stamps the decision onto admitted
//! workloads and keeps the annotations only slo-guard may write out of clients' hands.

use std::collections::BTreeMap;

use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, jsonptr::PointerBuf};
use serde_json::{Value, json};

use chrono::{DateTime, SecondsFormat, Utc};

use crate::admission::{ActorKind, Change, ChangeClass, ConfigKind, TargetKind};
use crate::annotations::{
    APPROVE, APPROVED_AT, APPROVED_BY, FREEZE_EXCEPTION, FREEZE_EXCEPTION_AT, FREEZE_EXCEPTION_BY,
    GUARD_OWNED, LAST_AGENT_CHANGE, LAST_ROLLOUT, THRESHOLDS, WRITTEN_BY,
};
use crate::policy::AgentAnnotation;
use crate::rules::Decision;
use crate::verdict::verdict_word;

pub use crate::annotations::{
    CHANGE_CAUSE as CHANGE_CAUSE_ANNOTATION, VERDICT as VERDICT_ANNOTATION,
};

/// What the patch needs besides the request and the decision.
#[derive(Debug, Clone, Copy)]
pub struct StampContext<'a> {
    /// The time stamps carry.
    pub now: DateTime<Utc>,
    /// slo-guard's own identity in the cluster, whose writes of guard-owned annotations
    /// (the cooldown stamp on a scaled workload) are its own and stand.
    pub own_username: Option<&'a str>,
}

/// Builds the patch for an admitted change. Changes that are not to a workload object
/// itself (a Scale, an HPA, a delete, a ConfigMap) get none.
pub fn patch_for(change: &Change, decision: &Decision, context: StampContext<'_>) -> Patch {
    if change.config_after() == Some(ConfigKind::Reflection) && change.object.is_some() {
        // Who wrote the reflection in force, so that agents may change only their own.
        let current = change.annotations.after.clone().unwrap_or_default();
        let mut desired = current.clone();
        desired.insert(WRITTEN_BY.to_string(), change.requester.username.clone());
        return annotation_patch(change.annotations.map_present, &current, &desired);
    }
    if context.own_username == Some(change.requester.username.as_str()) {
        return Patch(Vec::new());
    }
    let workload = matches!(change.target.kind, TargetKind::Workload(_));
    // Works on a Deployment, a StatefulSet and a Scale alike: all keep it at spec.replicas.
    let clamp = decision.clamp.as_ref().filter(|_| workload).map(|clamp| {
        PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["spec", "replicas"]),
            value: Value::from(clamp.cap),
        })
    });
    if change.is_scale_subresource() {
        return Patch(clamp.into_iter().collect());
    }
    if !workload
        || matches!(change.class, ChangeClass::Delete | ChangeClass::Config)
        || change.object.is_none()
    {
        return Patch(Vec::new());
    }
    let now = context.now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let current = change.annotations.after.clone().unwrap_or_default();
    let mut desired = current.clone();
    let old = &change.annotations.before;
    let restore = |desired: &mut BTreeMap<String, String>, key: &str| {
        match old.get(key) {
            Some(previous) => desired.insert(key.to_string(), previous.clone()),
            None => desired.remove(key),
        };
    };

    for key in GUARD_OWNED {
        restore(&mut desired, key);
    }
    // Only people approve, and only people grant freeze exceptions: a value written by
    // anyone else is put back as it was (both webhooks deny the request too). A person's
    // is stamped with who and when; withdrawing it withdraws the stamps.
    for (key, by, at) in [
        (APPROVE, APPROVED_BY, APPROVED_AT),
        (FREEZE_EXCEPTION, FREEZE_EXCEPTION_BY, FREEZE_EXCEPTION_AT),
    ] {
        if decision.actor != ActorKind::Person {
            restore(&mut desired, key);
        } else if current.get(key) != old.get(key) {
            if current.contains_key(key) {
                desired.insert(by.to_string(), change.requester.username.clone());
                desired.insert(at.to_string(), now.clone());
            } else {
                desired.remove(by);
                desired.remove(at);
            }
        }
    }
    if change.class == ChangeClass::Rollout {
        let record = json!({
            "at": now,
            "actor": decision.actor.as_str(),
            "user": change.requester.username,
        });
        desired.insert(LAST_ROLLOUT.to_string(), record.to_string());
    }
    if decision.actor == ActorKind::Agent
        && matches!(
            change.class,
            ChangeClass::Rollout | ChangeClass::Scale | ChangeClass::Create
        )
    {
        desired.insert(LAST_AGENT_CHANGE.to_string(), now.clone());
    }
    if !decision.policies.is_empty() {
        if decision.thresholds.is_empty() {
            desired.remove(THRESHOLDS);
        } else {
            let thresholds: serde_json::Map<String, Value> = decision
                .thresholds
                .iter()
                .map(|t| (t.policy.clone(), Value::Object(t.to_json())))
                .collect();
            desired.insert(
                THRESHOLDS.to_string(),
                Value::Object(thresholds).to_string(),
            );
        }
    }
    // No timestamp in the verdict: re-admitting an unchanged object must produce the
    // same annotations, or every GitOps sync would rewrite the object.
    if !decision.policies.is_empty() && change.class != ChangeClass::Metadata {
        let verdict = json!({
            "verdict": verdict_word(decision),
            "class": decision.class.as_str(),
            "actor": decision.actor.as_str(),
            "policies": decision.policies,
        });
        desired.insert(VERDICT_ANNOTATION.to_string(), verdict.to_string());
    }
    if decision.actor == ActorKind::Agent
        && let Some(reason) = current
            .get(AgentAnnotation::Reason.key())
            .filter(|r| !r.trim().is_empty())
    {
        desired.insert(CHANGE_CAUSE_ANNOTATION.to_string(), reason.clone());
    }
    let mut patch = annotation_patch(change.annotations.map_present, &current, &desired);
    patch.0.extend(clamp);
    patch
}

/// The operations that turn `current` annotations into `desired`. When the object has
/// no annotations map at all, one `add` creates it whole, since adding a key under a
/// missing parent is an error in RFC 6902.
fn annotation_patch(
    map_exists: bool,
    current: &BTreeMap<String, String>,
    desired: &BTreeMap<String, String>,
) -> Patch {
    if current == desired {
        return Patch(Vec::new());
    }
    if !map_exists {
        return Patch(vec![PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations"]),
            value: json!(desired),
        })]);
    }
    let mut operations = Vec::new();
    for key in current.keys().filter(|key| !desired.contains_key(*key)) {
        operations.push(PatchOperation::Remove(RemoveOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations", key.as_str()]),
        }));
    }
    for (key, value) in desired {
        if current.get(key) != Some(value) {
            // `add` on an existing member replaces it (RFC 6902 4.1).
            operations.push(PatchOperation::Add(AddOperation {
                path: PointerBuf::from_tokens(["metadata", "annotations", key.as_str()]),
                value: Value::String(value.clone()),
            }));
        }
    }
    Patch(operations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::*;

    const POLICY: &str =
        "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"]}";

    fn deployment(annotations: Option<&BTreeMap<String, String>>) -> Value {
        let mut object = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "checkout", "namespace": "payments"},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "app", "image": "checkout:1.4.1"}]}}}
        });
        if let Some(annotations) = annotations {
            object["metadata"]["annotations"] = json!(annotations);
        }
        object
    }

    fn agent_rollout(annotations: Option<BTreeMap<String, String>>) -> Change {
        let mut change = rollout_by(AGENT);
        change.object = Some(deployment(annotations.as_ref()));
        change.annotations.map_present = annotations.is_some();
        change.annotations.after = Some(annotations.unwrap_or_default());
        change
    }

    fn stamp() -> StampContext<'static> {
        StampContext {
            now: chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, 18, 10, 0, 0).unwrap(),
            own_username: None,
        }
    }

    fn apply(change: &Change, patch: &Patch) -> Value {
        let mut object = change.object.clone().unwrap();
        json_patch::patch(&mut object, patch).expect("the patch applies cleanly");
        object
    }

    #[test]
    fn stamps_verdict_and_change_cause_escaping_slashes() {
        let change = agent_rollout(Some(full_context()));
        let decision = judge(POLICY, &change);
        let patch = patch_for(&change, &decision, stamp());
        let text = serde_json::to_string(&patch).unwrap();
        assert!(
            text.contains("/metadata/annotations/slo-guard.io~1verdict"),
            "{text}"
        );
        assert!(
            text.contains("/metadata/annotations/kubernetes.io~1change-cause"),
            "{text}"
        );
        let patched = apply(&change, &patch);
        let annotations = &patched["metadata"]["annotations"];
        assert_eq!(
            annotations[CHANGE_CAUSE_ANNOTATION],
            full_context()["slo-guard.io/reason"]
        );
        let verdict: Value =
            serde_json::from_str(annotations[VERDICT_ANNOTATION].as_str().unwrap()).unwrap();
        assert_eq!(verdict["verdict"], "allowed");
        assert_eq!(verdict["actor"], "agent");
        assert_eq!(verdict["policies"], json!(["payments/checkout"]));
    }

    #[test]
    fn works_when_the_annotations_map_is_absent() {
        let mut change = rollout_by(PERSON);
        change.object = Some(deployment(None));
        change.annotations.after = None;
        change.annotations.map_present = false;
        let decision = judge(POLICY, &change);
        let patch = patch_for(&change, &decision, stamp());
        assert_eq!(patch.0.len(), 1);
        let patched = apply(&change, &patch);
        assert!(patched["metadata"]["annotations"][VERDICT_ANNOTATION].is_string());
    }

    #[test]
    fn is_idempotent() {
        let change = agent_rollout(Some(full_context()));
        let decision = judge(POLICY, &change);
        let patched = apply(&change, &patch_for(&change, &decision, stamp()));
        let mut again = change.clone();
        let annotations: BTreeMap<String, String> =
            serde_json::from_value(patched["metadata"]["annotations"].clone()).unwrap();
        again.object = Some(patched.clone());
        again.annotations.after = Some(annotations);
        let second = patch_for(&again, &decision, stamp());
        assert!(second.0.is_empty(), "{second:?}");
    }

    #[test]
    fn clients_cannot_set_guard_owned_annotations() {
        let mut forged = full_context();
        forged.insert(
            "slo-guard.io/approved-by".into(),
            "alice@example.com".into(),
        );
        forged.insert(
            VERDICT_ANNOTATION.into(),
            "{\"verdict\":\"allowed\"}".into(),
        );
        let mut change = agent_rollout(Some(forged));
        change.annotations.before = BTreeMap::from([(
            "slo-guard.io/approved-at".to_string(),
            "2026-11-18T09:00:00Z".to_string(),
        )]);
        let decision = judge(POLICY, &change);
        let patched = apply(&change, &patch_for(&change, &decision, stamp()));
        let annotations = &patched["metadata"]["annotations"];
        assert!(annotations.get("slo-guard.io/approved-by").is_none());
        assert_eq!(
            annotations["slo-guard.io/approved-at"],
            "2026-11-18T09:00:00Z"
        );
        assert_ne!(annotations[VERDICT_ANNOTATION], "{\"verdict\":\"allowed\"}");
    }

    #[test]
    fn scale_requests_and_deletes_get_no_patch() {
        let change = scale_by(AGENT, Some(3), 4);
        assert!(
            patch_for(&change, &judge(POLICY, &change), stamp())
                .0
                .is_empty()
        );
        let change = delete_by(PERSON);
        assert!(
            patch_for(&change, &judge(POLICY, &change), stamp())
                .0
                .is_empty()
        );
    }

    #[test]
    fn a_persons_approval_is_stamped_with_who_and_when() {
        let mut change = rollout_by(PERSON);
        change.class = ChangeClass::Metadata;
        let approve = BTreeMap::from([(APPROVE.to_string(), "7f3a9c2e".to_string())]);
        change.object = Some(deployment(Some(&approve)));
        change.annotations.after = Some(approve.clone());
        change.annotations.map_present = true;
        let decision = judge(POLICY, &change);
        let patched = apply(&change, &patch_for(&change, &decision, stamp()));
        let annotations = &patched["metadata"]["annotations"];
        assert_eq!(annotations[APPROVED_BY], PERSON);
        assert_eq!(annotations[APPROVED_AT], "2026-11-18T10:00:00Z");
        // A metadata change leaves the last real verdict alone.
        assert!(annotations.get(VERDICT_ANNOTATION).is_none());

        // Withdrawing the approval withdraws the stamps.
        let mut withdrawn = rollout_by(PERSON);
        withdrawn.class = ChangeClass::Metadata;
        withdrawn.annotations.before = BTreeMap::from([
            (APPROVE.to_string(), "7f3a9c2e".to_string()),
            (APPROVED_BY.to_string(), PERSON.to_string()),
            (APPROVED_AT.to_string(), "2026-11-18T09:00:00Z".to_string()),
        ]);
        let remaining = BTreeMap::from([
            (APPROVED_BY.to_string(), PERSON.to_string()),
            (APPROVED_AT.to_string(), "2026-11-18T09:00:00Z".to_string()),
        ]);
        withdrawn.object = Some(deployment(Some(&remaining)));
        withdrawn.annotations.after = Some(remaining);
        let decision = judge(POLICY, &withdrawn);
        let patched = apply(&withdrawn, &patch_for(&withdrawn, &decision, stamp()));
        assert_eq!(patched["metadata"]["annotations"], json!({}));
    }

    #[test]
    fn an_agents_approval_is_put_back() {
        let mut annotations = full_context();
        annotations.insert(APPROVE.into(), "7f3a9c2e".into());
        let change = agent_rollout(Some(annotations));
        let decision = judge(POLICY, &change);
        let patched = apply(&change, &patch_for(&change, &decision, stamp()));
        let annotations = &patched["metadata"]["annotations"];
        assert!(annotations.get(APPROVE).is_none());
        assert!(annotations.get(APPROVED_BY).is_none());
    }

    #[test]
    fn a_persons_freeze_exception_is_stamped_and_an_agents_put_back() {
        let value = "holiday-freeze;until=2026-11-18T18:00:00+01:00;reason=INC-4711";
        let granted = BTreeMap::from([
            (FREEZE_EXCEPTION.to_string(), value.to_string()),
            // Forged stamps are replaced by slo-guard's.
            (
                FREEZE_EXCEPTION_BY.to_string(),
                "bob@example.com".to_string(),
            ),
        ]);
        let mut change = rollout_by(PERSON);
        change.class = ChangeClass::Metadata;
        change.object = Some(deployment(Some(&granted)));
        change.annotations.after = Some(granted.clone());
        let decision = judge(POLICY, &change);
        let patched = apply(&change, &patch_for(&change, &decision, stamp()));
        let annotations = &patched["metadata"]["annotations"];
        assert_eq!(annotations[FREEZE_EXCEPTION], value);
        assert_eq!(annotations[FREEZE_EXCEPTION_BY], PERSON);
        assert_eq!(annotations[FREEZE_EXCEPTION_AT], "2026-11-18T10:00:00Z");

        // An agent writing or extending one gets the stored value back, stamps and all.
        let stored = BTreeMap::from([
            (FREEZE_EXCEPTION.to_string(), value.to_string()),
            (FREEZE_EXCEPTION_BY.to_string(), PERSON.to_string()),
            (
                FREEZE_EXCEPTION_AT.to_string(),
                "2026-11-18T09:00:00Z".to_string(),
            ),
        ]);
        let mut extended = full_context();
        extended.insert(
            FREEZE_EXCEPTION.into(),
            "*;until=2026-11-30T00:00:00Z;reason=mine".into(),
        );
        extended.insert(FREEZE_EXCEPTION_BY.into(), PERSON.into());
        extended.insert(FREEZE_EXCEPTION_AT.into(), "2026-11-18T10:00:00Z".into());
        let mut change = agent_rollout(Some(extended));
        change.annotations.before = stored.clone();
        let decision = judge(POLICY, &change);
        let patched = apply(&change, &patch_for(&change, &decision, stamp()));
        let annotations = &patched["metadata"]["annotations"];
        for (key, value) in &stored {
            assert_eq!(annotations[key.as_str()], value.as_str(), "{key}");
        }
    }

    #[test]
    fn agent_changes_record_their_time_for_the_cooldown() {
        let change = agent_rollout(Some(full_context()));
        let decision = judge(POLICY, &change);
        let patched = apply(&change, &patch_for(&change, &decision, stamp()));
        assert_eq!(
            patched["metadata"]["annotations"][LAST_AGENT_CHANGE],
            "2026-11-18T10:00:00Z"
        );
        // A person's change does not start an agent cooldown.
        let mut person = rollout_by(PERSON);
        person.object = Some(deployment(None));
        person.annotations.after = None;
        person.annotations.map_present = false;
        let decision = judge(POLICY, &person);
        let patched = apply(&person, &patch_for(&person, &decision, stamp()));
        assert!(
            patched["metadata"]["annotations"]
                .get(LAST_AGENT_CHANGE)
                .is_none()
        );
    }

    #[test]
    fn slo_guards_own_writes_are_left_alone() {
        let mut change = rollout_by("system:serviceaccount:slo-guard:slo-guard");
        change.class = ChangeClass::Metadata;
        let stamp_only = BTreeMap::from([(
            LAST_AGENT_CHANGE.to_string(),
            "2026-11-18T10:00:00Z".to_string(),
        )]);
        change.object = Some(deployment(Some(&stamp_only)));
        change.annotations.after = Some(stamp_only);
        let decision = judge(POLICY, &change);
        let own = StampContext {
            own_username: Some("system:serviceaccount:slo-guard:slo-guard"),
            ..stamp()
        };
        assert!(patch_for(&change, &decision, own).0.is_empty());
        // Anyone else writing the same key has it put back.
        assert!(!patch_for(&change, &decision, stamp()).0.is_empty());
    }

    #[test]
    fn clamp_lowers_a_scale_to_the_cap() {
        let policy = "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"]}\nscaling: {maxReplicas: 20, onExceed: clamp}";
        let change = scale_by(AGENT, Some(18), 23);
        let patch = patch_for(&change, &judge(policy, &change), stamp());
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!([{"op": "add", "path": "/spec/replicas", "value": 20}])
        );
        let mut scale = json!({"spec": {"replicas": 23}});
        json_patch::patch(&mut scale, &patch).unwrap();
        assert_eq!(scale["spec"]["replicas"], 20);
    }

    #[test]
    fn effective_thresholds_are_stamped_with_provenance() {
        let reflection = "target: {kind: Deployment, name: checkout}\nthresholds: {scaling.maxReplicas: 12}\nreason: INC-4711\nsource: reflection-agent\nexpires: 2027-01-31T00:00:00Z";
        let policy = "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"]}\nscaling: {maxReplicas: 20}";
        let change = agent_rollout(Some(full_context()));
        let decision = judge_with_reflections(policy, &[("checkout.yaml", reflection)], &change);
        let patched = apply(&change, &patch_for(&change, &decision, stamp()));
        let thresholds: Value = serde_json::from_str(
            patched["metadata"]["annotations"][THRESHOLDS]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            thresholds["payments/checkout"]["scaling.maxReplicas"],
            json!({"value": 12, "policy": 20, "reflection": "payments/checkout-reflections#checkout.yaml", "source": "reflection-agent", "reason": "INC-4711", "expires": "2027-01-31T00:00:00Z"})
        );
    }
}
