//! Policy ConfigMaps, as users write them, built from their `policy.yaml`.

/// A ConfigMap `namespace/name` labelled `slo-guard.io/policy: "true"` (so slo-guard
/// loads it), whose `policy.yaml` holds `policy`, one line per element. Lines keep their
/// own indentation below the top level of the policy.
pub fn policy_configmap(namespace: &str, name: &str, policy: &[&str]) -> String {
    let mut manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {{slo-guard.io/policy: \"true\"}}\ndata:\n  policy.yaml: |\n"
    );
    for line in policy {
        manifest.push_str("    ");
        manifest.push_str(line);
        manifest.push('\n');
    }
    manifest
}
