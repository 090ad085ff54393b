//! Diff scope: an agent's declared `action` must match the fields its change touches.

use serde_json::Value;

use super::{Finding, Rule, RuleInput};
use crate::admission::{ActorKind, ChangeClass};
use crate::annotations::{CONTAINER, RESTARTED_AT};
use crate::policy::AgentAction;
use crate::policy::quantity::parse_bytes;

/// Every leaf path (`spec.template.spec.containers[0].image`) where `old` and `new`
/// differ. Arrays are compared index by index; an array whose length changed is reported
/// as a whole, since elements were added or removed.
pub(crate) fn changed_paths(old: &Value, new: &Value, path: &str, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(old_fields), Value::Object(new_fields)) => {
            for (key, old_value) in old_fields {
                let child = join(path, key);
                match new_fields.get(key) {
                    Some(new_value) => changed_paths(old_value, new_value, &child, out),
                    None => leaves(old_value, &child, out),
                }
            }
            for (key, new_value) in new_fields
                .iter()
                .filter(|(key, _)| !old_fields.contains_key(*key))
            {
                leaves(new_value, &join(path, key), out);
            }
        }
        (Value::Array(old_items), Value::Array(new_items))
            if old_items.len() == new_items.len() =>
        {
            for (index, (old_item, new_item)) in old_items.iter().zip(new_items).enumerate() {
                changed_paths(old_item, new_item, &format!("{path}[{index}]"), out);
            }
        }
        _ if old != new => out.push(path.to_string()),
        _ => {}
    }
}

/// The leaf paths under an added or removed value, so that adding a whole map (the first
/// `restartedAt` creates the template's annotations) is judged by what it holds.
fn leaves(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            for (key, child) in fields {
                leaves(child, &join(path, key), out);
            }
        }
        _ => out.push(path.to_string()),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The container index a pod-template path is about, with which list it is in.
fn container_of(path: &str) -> Option<(&'static str, usize)> {
    for list in ["containers", "initContainers"] {
        let prefix = format!("spec.template.spec.{list}[");
        if let Some(rest) = path.strip_prefix(&prefix) {
            let index = rest.split(']').next()?.parse().ok()?;
            return Some((
                if list == "containers" {
                    "containers"
                } else {
                    "initContainers"
                },
                index,
            ));
        }
    }
    None
}

/// The part of a container path after `containers[i].`.
fn container_field(path: &str) -> Option<&str> {
    let (_, rest) = path.split_once("].")?;
    Some(rest)
}

fn allowed(action: AgentAction, path: &str) -> bool {
    match action {
        AgentAction::Scale => path == "spec.replicas",
        AgentAction::FixImage => {
            container_of(path).is_some() && container_field(path) == Some("image")
        }
        AgentAction::IncreaseMemory => {
            container_of(path).is_some()
                && matches!(
                    container_field(path),
                    Some("resources.requests.memory" | "resources.limits.memory")
                )
        }
        AgentAction::UpdateEnv => {
            container_of(path).is_some()
                && container_field(path).is_some_and(|f| f == "env" || f.starts_with("env["))
        }
        AgentAction::Restart => {
            path == format!("spec.template.metadata.annotations.{RESTARTED_AT}")
        }
        AgentAction::Rollback | AgentAction::Patch => true,
    }
}

fn container<'a>(object: &'a Value, list: &str, index: usize) -> Option<&'a Value> {
    object.pointer(&format!("/spec/template/spec/{list}/{index}"))
}

fn container_name(object: &Value, list: &str, index: usize) -> String {
    container(object, list, index)
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string()
}

/// Memory (new over old) for each container whose request or limit changed.
pub(crate) fn memory_changes(old: &Value, new: &Value, paths: &[String]) -> Vec<MemoryChange> {
    paths
        .iter()
        .filter_map(|path| {
            let (list, index) = container_of(path)?;
            let field = container_field(path)?;
            let kind = match field {
                "resources.requests.memory" => "requests",
                "resources.limits.memory" => "limits",
                _ => return None,
            };
            let read = |object: &Value| {
                container(object, list, index)?
                    .pointer(&format!("/resources/{kind}/memory"))?
                    .as_str()
                    .and_then(parse_bytes)
                    .or_else(|| {
                        container(object, list, index)?
                            .pointer(&format!("/resources/{kind}/memory"))?
                            .as_f64()
                    })
            };
            Some(MemoryChange {
                container: container_name(new, list, index),
                field: kind,
                old: read(old),
                new: read(new),
                new_text: container(new, list, index)
                    .and_then(|c| c.pointer(&format!("/resources/{kind}/memory")))
                    .map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

pub(crate) struct MemoryChange {
    pub container: String,
    pub field: &'static str,
    pub old: Option<f64>,
    pub new: Option<f64>,
    pub new_text: String,
}

impl MemoryChange {
    pub fn factor(&self) -> Option<f64> {
        match (self.old, self.new) {
            (Some(old), Some(new)) if old > 0.0 => Some(new / old),
            _ => None,
        }
    }
}

fn secret_like_literals(input: &RuleInput<'_>, old: &Value, new: &Value) -> Vec<String> {
    let patterns = &input.policy.spec.scope.secret_names;
    let mut found = Vec::new();
    for list in ["containers", "initContainers"] {
        let Some(containers) = new
            .pointer(&format!("/spec/template/spec/{list}"))
            .and_then(Value::as_array)
        else {
            continue;
        };
        for (index, new_container) in containers.iter().enumerate() {
            let old_env = container(old, list, index)
                .and_then(|c| c.get("env"))
                .and_then(Value::as_array);
            for var in new_container
                .get("env")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let (Some(name), Some(value)) =
                    (var.get("name").and_then(Value::as_str), var.get("value"))
                else {
                    continue;
                };
                let upper = name.to_ascii_uppercase();
                let unchanged = old_env.is_some_and(|env| env.iter().any(|old| old == var));
                if !unchanged && patterns.iter().any(|p| p.matches(&upper)) && !value.is_null() {
                    found.push(name.to_string());
                }
            }
        }
    }
    found
}

/// A workload stays under the policies that governed it: an agent's change after which
/// a policy's selector no longer matches the workload's labels or its pods' labels would
/// take it (and every later change to it) out of that policy's reach. People may relabel.
pub(super) fn check_policy_scope(input: &RuleInput<'_>) -> Option<Finding> {
    if input.actor != ActorKind::Agent {
        return None;
    }
    let target = &input.change.target;
    let show = |labels: &std::collections::BTreeMap<String, String>| {
        if labels.is_empty() {
            "none".to_string()
        } else {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    let before = target.before.as_ref()?;
    Some(input.finding(
        Rule::PolicyScope,
        format!(
            "the change takes it out of policy {}: its labels go from {} to {} and its pods' labels from {} to {}, which the policy's selector no longer matches",
            input.policy.id,
            show(&before.labels),
            show(&target.labels),
            show(&before.pod_labels),
            show(&target.pod_labels)
        ),
        format!(
            "Keep the labels policy {} selects; a person may relabel the workload",
            input.policy.id
        ),
        format!("agents may not move a workload out of policy {}", input.policy.id),
    ))
}

pub(super) fn check(input: &RuleInput<'_>) -> Option<Finding> {
    let change = input.change;
    if input.actor != ActorKind::Agent
        || !matches!(change.class, ChangeClass::Rollout | ChangeClass::Scale)
    {
        return None;
    }
    let action = input.agent_context.action?;
    let mut problems = Vec::new();
    let scaled = ["spec.replicas".to_string()];
    let paths: &[String] = if change.is_scale_subresource() {
        &scaled
    } else {
        input.spec_diff.paths()?
    };
    let outside: Vec<&str> = paths
        .iter()
        .map(String::as_str)
        .filter(|p| !allowed(action, p))
        .collect();
    if !outside.is_empty() {
        problems.push(format!(
            "the declared action {} does not cover {}",
            action.as_str(),
            outside.join(", ")
        ));
    }
    if let (Some(old), Some(new)) = (&change.old_object, &change.object) {
        if action == AgentAction::IncreaseMemory {
            let scope = &input.policy.spec.scope;
            let ceiling = scope.max_memory.as_ref().map(|max| max.bytes());
            for memory in memory_changes(old, new, paths) {
                let what = format!("memory {} of container {}", memory.field, memory.container);
                match (memory.old, memory.new, memory.factor()) {
                    (_, None, _) => problems.push(format!(
                        "{what} {:?} is not a memory quantity",
                        memory.new_text
                    )),
                    (Some(old), Some(new), _) if new < old => {
                        problems.push(format!("{what} goes down, not up"))
                    }
                    (_, _, Some(factor)) if factor > scope.max_memory_factor => {
                        problems.push(format!(
                            "{what} grows {factor:.2}x, above the largest factor {}",
                            scope.max_memory_factor
                        ))
                    }
                    _ => {}
                }
                if let (Some(new), Some(ceiling)) = (memory.new, ceiling)
                    && new > ceiling
                {
                    problems.push(format!(
                        "{what} {} is above scope.maxMemory {}",
                        memory.new_text,
                        scope.max_memory.as_ref().map_or("", |max| max.as_str())
                    ));
                }
            }
        }
        if action == AgentAction::UpdateEnv {
            for name in secret_like_literals(input, old, new) {
                problems.push(format!(
                    "env var {name} gets a literal value, and its name looks like a secret (use valueFrom.secretKeyRef)"
                ));
            }
        }
        if let Some(named) = change
            .annotations
            .after
            .as_ref()
            .and_then(|a| a.get(CONTAINER))
        {
            let mut touched: Vec<String> = paths
                .iter()
                .filter_map(|p| container_of(p))
                .map(|(list, index)| container_name(new, list, index))
                .collect();
            touched.sort();
            touched.dedup();
            let others: Vec<&String> = touched.iter().filter(|name| *name != named).collect();
            if !others.is_empty() {
                let every = new
                    .pointer("/spec/template/spec/containers")
                    .and_then(Value::as_array)
                    .is_some_and(|all| all.len() > 1 && touched.len() >= all.len());
                problems.push(format!(
                    "the decision names container {named}, but the change touches {}{}",
                    if every { "every container: " } else { "" },
                    touched.join(", ")
                ));
            }
        }
    }
    if problems.is_empty() {
        return None;
    }
    Some(input.finding(
        Rule::DiffScope,
        format!("the change does more than its declared action: {}", problems.join("; ")),
        format!(
            "Change only what {} covers, or declare the action that matches (patch for a general change)",
            action.as_str()
        ),
        format!("outside the declared action {}: {}", action.as_str(), problems.join("; ")),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rules::testing::*;

    const POLICY: &str = "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"]}\nscope: {maxMemory: 2Gi, maxMemoryFactor: 2}";

    fn deployment() -> Value {
        json!({"spec": {"replicas": 3, "template": {
        "metadata": {"labels": {"app": "checkout"}},
        "spec": {"containers": [
            {"name": "checkout", "image": "checkout:1.41.0",
             "env": [{"name": "LOG_LEVEL", "value": "info"}],
             "resources": {"requests": {"memory": "256Mi"}, "limits": {"memory": "512Mi"}}},
            {"name": "proxy", "image": "envoy:1.30", "resources": {"limits": {"memory": "128Mi"}}}
        ]}}}})
    }

    fn agent_change(action: &str, edit: impl Fn(&mut Value)) -> crate::admission::Change {
        let mut annotations = full_context();
        annotations.insert("slo-guard.io/action".into(), action.into());
        let mut change = rollout_by(AGENT).with_annotations(&annotations);
        let old = deployment();
        let mut new = old.clone();
        edit(&mut new);
        change.old_object = Some(old);
        change.object = Some(new);
        change
    }

    fn scope_problem(change: &crate::admission::Change) -> Option<String> {
        let decision = judge(POLICY, change);
        decision
            .findings
            .iter()
            .find(|f| f.rule == Rule::DiffScope)
            .map(|f| f.headline.clone())
    }

    #[test]
    fn each_action_may_touch_only_its_fields() {
        let image = |o: &mut Value| {
            o["spec"]["template"]["spec"]["containers"][0]["image"] = json!("checkout:1.41.1")
        };
        let replicas = |o: &mut Value| o["spec"]["replicas"] = json!(5);
        let env = |o: &mut Value| {
            o["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = json!("debug")
        };
        let restart = |o: &mut Value| {
            o["spec"]["template"]["metadata"]["annotations"] =
                json!({"kubectl.kubernetes.io/restartedAt": "2026-11-18T10:00:00Z"})
        };
        let memory = |o: &mut Value| {
            o["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] =
                json!("768Mi")
        };
        assert_eq!(scope_problem(&agent_change("fix-image", image)), None);
        assert_eq!(scope_problem(&agent_change("update-env", env)), None);
        assert_eq!(scope_problem(&agent_change("restart", restart)), None);
        assert_eq!(
            scope_problem(&agent_change("increase-memory", memory)),
            None
        );
        assert_eq!(
            scope_problem(&agent_change("patch", |o| {
                image(o);
                replicas(o)
            })),
            None
        );

        let mixed = scope_problem(&agent_change("fix-image", |o| {
            image(o);
            replicas(o)
        }))
        .unwrap();
        assert!(
            mixed.ends_with("the declared action fix-image does not cover spec.replicas"),
            "{mixed}"
        );
        let sneaky = scope_problem(&agent_change("restart", |o| {
            restart(o);
            image(o)
        }))
        .unwrap();
        assert!(
            sneaky.contains("restart does not cover spec.template.spec.containers[0].image"),
            "{sneaky}"
        );
        let env_and_image = scope_problem(&agent_change("update-env", |o| {
            env(o);
            image(o)
        }))
        .unwrap();
        assert!(
            env_and_image
                .contains("update-env does not cover spec.template.spec.containers[0].image")
        );
        let scaled_by_rollout = scope_problem(&agent_change("scale", image)).unwrap();
        assert!(
            scaled_by_rollout
                .contains("scale does not cover spec.template.spec.containers[0].image")
        );
    }

    #[test]
    fn memory_increases_are_bounded() {
        let set = |value: &'static str| {
            move |o: &mut Value| {
                o["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] =
                    json!(value)
            }
        };
        let too_much = scope_problem(&agent_change("increase-memory", set("1100Mi"))).unwrap();
        assert!(
            too_much.contains(
                "memory limits of container checkout grows 2.15x, above the largest factor 2"
            ),
            "{too_much}"
        );
        let lower = scope_problem(&agent_change("increase-memory", set("256Mi"))).unwrap();
        assert!(lower.contains("goes down, not up"), "{lower}");
        let garbage = scope_problem(&agent_change("increase-memory", set("lots"))).unwrap();
        assert!(
            garbage.contains("\"lots\" is not a memory quantity"),
            "{garbage}"
        );
        let ceiling = |o: &mut Value| {
            o["spec"]["template"]["spec"]["containers"][1]["resources"]["limits"]["memory"] =
                json!("3Gi");
        };
        let policy_without_factor = POLICY.replace("maxMemoryFactor: 2", "maxMemoryFactor: 100");
        let decision = judge(
            &policy_without_factor,
            &agent_change("increase-memory", ceiling),
        );
        let finding = decision
            .findings
            .iter()
            .find(|f| f.rule == Rule::DiffScope)
            .expect("above maxMemory");
        assert!(
            finding
                .headline
                .contains("memory limits of container proxy 3Gi is above scope.maxMemory 2Gi"),
            "{}",
            finding.headline
        );
    }

    #[test]
    fn literal_secrets_in_env_are_refused() {
        let add = |o: &mut Value| {
            o["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "DB_PASSWORD", "value": "hunter2"}))
        };
        let problem = scope_problem(&agent_change("update-env", add)).unwrap();
        assert!(
            problem.contains("env var DB_PASSWORD gets a literal value"),
            "{problem}"
        );
        let from_secret = |o: &mut Value| {
            o["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}}))
        };
        assert_eq!(
            scope_problem(&agent_change("update-env", from_secret)),
            None
        );
        let lower_case = |o: &mut Value| {
            o["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "stripe_secret_key", "value": "sk_live_x"}))
        };
        assert!(scope_problem(&agent_change("update-env", lower_case)).is_some());
    }

    #[test]
    fn touching_every_container_when_one_was_named_is_flagged() {
        let mut change = agent_change("fix-image", |o| {
            o["spec"]["template"]["spec"]["containers"][0]["image"] = json!("checkout:1.41.1");
            o["spec"]["template"]["spec"]["containers"][1]["image"] = json!("envoy:1.31");
        });
        change
            .annotations
            .after
            .as_mut()
            .unwrap()
            .insert("slo-guard.io/container".into(), "checkout".into());
        let problem = scope_problem(&change).unwrap();
        assert!(problem.contains("the decision names container checkout, but the change touches every container: checkout, proxy"), "{problem}");
    }

    #[test]
    fn a_scale_subresource_request_is_a_replicas_change() {
        let change = scale_by(AGENT, Some(3), 4).with_annotations(&full_context());
        let problem = scope_problem(&change).unwrap();
        assert!(
            problem.contains("fix-image does not cover spec.replicas"),
            "{problem}"
        );
        assert_eq!(
            scope_problem(&scale_by(AGENT, Some(3), 4).with_annotations(&scale_context())),
            None
        );
    }
}
