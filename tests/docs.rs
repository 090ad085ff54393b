//! Keeps the README and docs/ from drifting away from the code and from each other:
//! the README stays a front door, every relative link leads somewhere, the policy
//! schema page names every field the example policies use, and the command-line page
//! names every flag of `src/cli/`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use slo_guard_testkit::root;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The files in `dir` whose name ends with `suffix`, sorted.
fn files_in(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file() && path.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
}

/// README.md and every page of docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    pages.extend(files_in(&root().join("docs"), ".md"));
    pages
}

/// The lines of a markdown text outside fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut in_fence = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if !in_fence {
            lines.push(line);
        }
    }
    lines
}

/// The targets of the inline links (`[text](target)`) of a markdown text.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            targets.push(after[..end].trim().to_string());
            rest = &after[end + 1..];
        }
    }
    targets
}

/// The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces
/// turned into hyphens, and `-1`, `-2`, ... on repeats.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    for line in prose_lines(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let slug: String = heading
            .trim()
            .trim_end_matches('#')
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                '-' | '_' => Some(c),
                c if c.is_alphanumeric() => Some(c),
                _ => None,
            })
            .collect();
        let mut unique = slug.clone();
        let mut n = 0;
        while anchors.contains(&unique) {
            n += 1;
            unique = format!("{slug}-{n}");
        }
        anchors.insert(unique);
    }
    anchors
}

#[test]
fn readme_is_a_front_door_under_150_lines() {
    let readme = read(&root().join("README.md"));
    let lines = readme.lines().count();
    assert!(
        lines < 150,
        "README.md has {lines} lines; it is the front door and stays under 150: move reference to docs/"
    );
    // .ci/run and tests/run-all.sh name the README's commands.
    for command in ["cargo run --release -- serve", "bash tests/run-all.sh"] {
        assert!(
            readme.contains(command),
            "README.md no longer shows `{command}`"
        );
    }
}

#[test]
fn relative_links_lead_to_files_and_headings_that_exist() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = read(&page);
        let name = page
            .strip_prefix(root())
            .unwrap_or(&page)
            .display()
            .to_string();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                page.clone()
            } else {
                page.parent().expect("a page has a directory").join(path)
            };
            if !file.exists() {
                broken.push(format!(
                    "{name}: ({target}): {} does not exist",
                    file.display()
                ));
                continue;
            }
            if let Some(anchor) = anchor.filter(|_| file.extension().is_some_and(|e| e == "md")) {
                if !anchors(&read(&file)).contains(anchor) {
                    broken.push(format!(
                        "{name}: ({target}): no heading with the anchor #{anchor}"
                    ));
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} relative links found: is the parser broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// Maps whose keys are data (label names, threshold paths), not schema fields.
const FREE_FORM: [&str; 2] = ["match.selector.matchLabels", "reflection.loosenBounds"];

/// The key paths of a policy that name a value: `slo.objective`, `windows.freeze[].days`.
/// A list of maps adds `[]` to the path; a free-form map is a value itself.
fn leaf_paths(value: &serde_yaml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        serde_yaml::Value::Mapping(map) if !FREE_FORM.contains(&prefix) => {
            for (key, value) in map {
                let key = key.as_str().expect("policy keys are strings");
                let path = if prefix.is_empty() {
                    key.to_string()
                } else {
                    format!("{prefix}.{key}")
                };
                leaf_paths(value, &path, out);
            }
        }
        serde_yaml::Value::Sequence(items) if items.iter().any(|item| item.is_mapping()) => {
            for item in items {
                leaf_paths(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

#[test]
fn policy_schema_names_every_field_of_the_example_policies() {
    let mut paths = BTreeSet::new();
    for file in files_in(&root().join("policies"), ".yaml") {
        let text = read(&file);
        for document in serde_yaml::Deserializer::from_str(&text) {
            let manifest = serde_yaml::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let is_policy =
                manifest["metadata"]["labels"]["slo-guard.io/policy"].as_str() == Some("true");
            if !is_policy {
                continue;
            }
            let policy = manifest["data"]["policy.yaml"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: no data[policy.yaml]", file.display()));
            let policy: serde_yaml::Value = serde_yaml::from_str(policy)
                .unwrap_or_else(|e| panic!("{}: policy.yaml: {e}", file.display()));
            leaf_paths(&policy, "", &mut paths);
        }
    }
    for expected in [
        "scaling.maxReplicas",
        "slo.objective",
        "windows.freeze[].days",
    ] {
        assert!(
            paths.contains(expected),
            "the example policies no longer have {expected}: {paths:?}"
        );
    }
    let doc = read(&root().join("docs/policy.md"));
    let missing: Vec<&String> = paths
        .iter()
        .filter(|path| !doc.contains(&format!("`{path}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/policy.md does not name these fields of policies/*.yaml (as `path`): {missing:?}"
    );
}

/// The `--flags` of the `#[arg(long ...)]` fields of a clap source file.
fn long_flags(source: &str) -> Vec<String> {
    let mut flags = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find("#[arg(") {
        let attribute_start = &rest[start + "#[arg(".len()..];
        let end = attribute_start
            .find(")]")
            .expect("an #[arg(...)] attribute is closed");
        let attribute = &attribute_start[..end];
        rest = &attribute_start[end + 2..];
        let long = attribute
            .split(',')
            .map(str::trim)
            .find(|part| *part == "long" || part.starts_with("long ") || part.starts_with("long="));
        let Some(long) = long else { continue };
        let explicit = long
            .split_once('=')
            .map(|(_, name)| name.trim().trim_matches('"').to_string());
        let name = explicit.unwrap_or_else(|| {
            // The field the attribute is on: the next `name:` after other attributes
            // and doc comments.
            let field = rest
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty() && !line.starts_with("#[") && !line.starts_with("//"))
                .expect("an #[arg] attribute is on a field");
            let field = field.strip_prefix("pub ").unwrap_or(field);
            let field = field.strip_prefix("pub(crate) ").unwrap_or(field);
            let (field, _) = field.split_once(':').expect("a field is `name: Type`");
            field.trim().replace('_', "-")
        });
        flags.push(format!("--{name}"));
    }
    flags
}

#[test]
fn cli_reference_names_every_long_flag() {
    let mut flags = BTreeSet::new();
    for file in files_in(&root().join("src/cli"), ".rs") {
        flags.extend(long_flags(&read(&file)));
    }
    for expected in [
        "--listen",
        "--as",
        "--prometheus-header",
        "--h2-max-header-list-size",
    ] {
        assert!(
            flags.contains(expected),
            "{expected} not found in src/cli/: is the parser broken? {flags:?}"
        );
    }
    let doc = read(&root().join("docs/cli.md"));
    let missing: Vec<&String> = flags
        .iter()
        .filter(|flag| !doc.contains(&format!("`{flag}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/cli.md does not name these flags of src/cli/ (as `--flag`): {missing:?}"
    );
}
