//! `slo-guard test`: declarative policy tests, as `kyverno test` runs a kyverno-test.yaml.
//! A suite file (`slo-guard-test.yaml`) lists cases; each is judged as `check` judges a
//! change (in the apiserver's order) and compared with what the case expects.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::check::{self, Outcome, Setting, Webhooks};
use super::manifests::{self, Stdin};
use super::request::{self, ManifestChange, Operation, Requester, Subresource};
use super::serve::PrometheusArgs;
use crate::slo::{CannedAnswers, SloSource};

/// The file a directory's suite is kept in.
pub const SUITE_FILE: &str = "slo-guard-test.yaml";

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Suite files, or directories searched (recursively) for slo-guard-test.yaml.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Also write the results as JUnit XML to this file, for CI systems.
    #[arg(long, env = "SLO_GUARD_TEST_JUNIT")]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: String },
    #[error("{path}: no {SUITE_FILE} found")]
    NoSuite { path: String },
    #[error("{file}: {place}field `{field}`: {message}")]
    Field {
        file: String,
        /// `case "name": ` or empty for the suite's own fields.
        place: String,
        field: String,
        message: String,
    },
}

/// One or several paths: `object: a.yaml` or `object: [a.yaml, b.yaml]`.
fn paths<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(path) => vec![path],
        OneOrMany::Many(paths) => paths,
    })
}

fn optional_paths<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<PathBuf>>, D::Error> {
    paths(deserializer).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SuiteSpec {
    /// Policy and reflection ConfigMaps for every case (files or directories).
    #[serde(default, deserialize_with = "paths")]
    policies: Vec<PathBuf>,
    /// Workloads in the watch cache for every case.
    #[serde(default, deserialize_with = "paths")]
    workloads: Vec<PathBuf>,
    prometheus: Option<PrometheusSpec>,
    now: Option<DateTime<Utc>>,
    /// slo-guard's own namespace.
    namespace: Option<String>,
    cases: Vec<CaseSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PrometheusSpec {
    /// A file of canned answers, or the answers inline (PromQL -> number, NaN, [], {error}).
    answers: Option<serde_yaml::Value>,
    /// A live Prometheus, Thanos or Mimir.
    url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CaseSpec {
    name: String,
    request: RequestSpec,
    #[serde(default, deserialize_with = "optional_paths")]
    policies: Option<Vec<PathBuf>>,
    #[serde(default, deserialize_with = "optional_paths")]
    workloads: Option<Vec<PathBuf>>,
    prometheus: Option<PrometheusSpec>,
    now: Option<DateTime<Utc>>,
    webhook: Option<Webhooks>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RequestSpec {
    /// An AdmissionReview file, instead of manifests.
    review: Option<PathBuf>,
    #[serde(default, deserialize_with = "paths")]
    object: Vec<PathBuf>,
    #[serde(default, deserialize_with = "paths")]
    old_object: Vec<PathBuf>,
    #[serde(rename = "as")]
    as_user: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    field_manager: Option<String>,
    operation: Option<Operation>,
    subresource: Option<Subresource>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Verdict {
    Allowed,
    Denied,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Expect {
    verdict: Verdict,
    /// Exactly the rules that fire, in any order; not checked when left out.
    rules: Option<Vec<String>>,
    /// Words that must appear in what kubectl prints (the denial and the warnings).
    #[serde(default)]
    message: Vec<String>,
    /// Annotations the object must have after the mutating patch; null: must not have.
    #[serde(default)]
    annotations: BTreeMap<String, Option<String>>,
}

/// A case ready to run: its inputs read and checked.
struct Case {
    name: String,
    review: Value,
    stored: Vec<crate::reflection::learn::WorkloadState>,
    setting: Setting,
    now: DateTime<Utc>,
    webhooks: Webhooks,
    expect: Expect,
}

/// What one case got, and where it differs from what it expects.
struct Result_ {
    suite: String,
    name: String,
    expected: &'static str,
    got: String,
    rules: Vec<String>,
    mismatches: Vec<String>,
    seconds: f64,
}

fn case_place(name: &str) -> String {
    format!("case {name:?}: ")
}

/// The suite's fields, with errors that name the file, the case and the field.
fn parse_suite(file: &Path, text: &str) -> Result<SuiteSpec, SuiteError> {
    let shown = file.display().to_string();
    let raw: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| SuiteError::Field {
        file: shown.clone(),
        place: String::new(),
        field: ".".into(),
        message: e.to_string(),
    })?;
    serde_path_to_error::deserialize(raw.clone()).map_err(|error| {
        let path = error.path().to_string();
        // "cases[2].expect.verdict": name the case by its name where it has one.
        let (place, field) = match path
            .strip_prefix("cases[")
            .and_then(|rest| rest.split_once(']'))
        {
            Some((index, field)) => {
                let name = index
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| {
                        raw.get("cases")?
                            .get(i)?
                            .get("name")?
                            .as_str()
                            .map(String::from)
                    })
                    .unwrap_or_else(|| format!("#{}", index.parse::<usize>().map_or(0, |i| i + 1)));
                (case_place(&name), field.trim_start_matches('.').to_string())
            }
            None => (String::new(), path),
        };
        SuiteError::Field {
            file: shown.clone(),
            place,
            field,
            message: error.into_inner().to_string(),
        }
    })
}

fn live_prometheus(url: &str) -> PrometheusArgs {
    PrometheusArgs {
        prometheus_url: Some(url.to_string()),
        prometheus_headers: Vec::new(),
        prometheus_bearer_token_file: None,
        prometheus_basic_auth_user: None,
        prometheus_basic_auth_password_file: None,
        prometheus_ca_file: None,
        prometheus_allow_partial_response: false,
        prometheus_refresh_interval: Duration::from_secs(10),
        prometheus_connect_timeout: Duration::from_secs(2),
    }
}

fn slo_of(spec: Option<&PrometheusSpec>, base: &Path) -> Result<SloSource, (String, String)> {
    let Some(spec) = spec else {
        return Ok(SloSource::Off);
    };
    match (&spec.answers, &spec.url) {
        (Some(_), Some(_)) => Err(("prometheus".into(), "give answers or url, not both".into())),
        (None, None) => Err(("prometheus".into(), "give answers or url".into())),
        (None, Some(url)) => live_prometheus(url)
            .source()
            .map_err(|e| ("prometheus.url".into(), format!("{e:#}"))),
        (Some(serde_yaml::Value::String(file)), None) => CannedAnswers::load(&base.join(file))
            .map(|a| SloSource::Canned(Arc::new(a)))
            .map_err(|e| ("prometheus.answers".into(), e.to_string())),
        (Some(inline @ serde_yaml::Value::Mapping(_)), None) => {
            let text = serde_yaml::to_string(inline)
                .map_err(|e| ("prometheus.answers".into(), e.to_string()))?;
            CannedAnswers::parse("prometheus.answers", &text)
                .map(|a| SloSource::Canned(Arc::new(a)))
                .map_err(|e| ("prometheus.answers".into(), e.to_string()))
        }
        (Some(_), None) => Err((
            "prometheus.answers".into(),
            "a file name, or a mapping of PromQL to answers".into(),
        )),
    }
}

fn resolve(base: &Path, paths: &[PathBuf]) -> Vec<PathBuf> {
    paths
        .iter()
        .map(|p| {
            if p.as_os_str() == "-" {
                p.clone()
            } else {
                base.join(p)
            }
        })
        .collect()
}

/// Reads every input a case names, so a missing file or a bad manifest is reported
/// before anything runs, with the file, the case and the field.
fn prepare(file: &Path, suite: &SuiteSpec, spec: CaseSpec) -> Result<Case, SuiteError> {
    let base = file.parent().unwrap_or(Path::new("."));
    let fail = |field: &str, message: String| SuiteError::Field {
        file: file.display().to_string(),
        place: case_place(&spec.name),
        field: field.into(),
        message,
    };
    // A suite reads no standard input: its cases run unattended in CI.
    let mut stdin = Stdin::default();
    let policies = resolve(base, spec.policies.as_ref().unwrap_or(&suite.policies));
    if policies.is_empty() {
        return Err(fail(
            "policies",
            "no policies for this case (set policies in the suite or the case)".into(),
        ));
    }
    let policy_sources = manifests::read_policy_sources(&policies, &mut stdin)
        .map_err(|e| fail("policies", e.to_string()))?;
    let workloads = manifests::workloads_of(
        &resolve(base, spec.workloads.as_ref().unwrap_or(&suite.workloads)),
        &mut stdin,
    )
    .map_err(|e| fail("workloads", e.to_string()))?;
    let slo = slo_of(spec.prometheus.as_ref().or(suite.prometheus.as_ref()), base)
        .map_err(|(field, message)| fail(&field, message))?;
    let request = &spec.request;
    let (review, stored) = match (&request.review, request.object.is_empty()) {
        (Some(_), false) => {
            return Err(fail("request", "give review or object, not both".into()));
        }
        (None, true) => {
            return Err(fail(
                "request",
                "give review (a file) or object (manifests)".into(),
            ));
        }
        (Some(review), true) => {
            let path = base.join(review);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                fail(
                    "request.review",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let review: Value = serde_json::from_str(&text).map_err(|e| {
                fail(
                    "request.review",
                    format!("{}: not an AdmissionReview: {e}", path.display()),
                )
            })?;
            (review, Vec::new())
        }
        (None, false) => {
            let Some(user) = &request.as_user else {
                return Err(fail(
                    "request.as",
                    "who makes the request (a user name, as kubectl --as)".into(),
                ));
            };
            let objects = manifests::read_manifests(&resolve(base, &request.object), &mut stdin)
                .map_err(|e| fail("request.object", e.to_string()))?;
            let olds = if request.old_object.is_empty() {
                Vec::new()
            } else {
                manifests::read_manifests(&resolve(base, &request.old_object), &mut stdin)
                    .map_err(|e| fail("request.oldObject", e.to_string()))?
            };
            if objects.len() != 1 {
                return Err(fail(
                    "request.object",
                    format!(
                        "a case is one request, for one object; found {}",
                        objects.len()
                    ),
                ));
            }
            let change: ManifestChange =
                check::pair_changes(objects, olds, request.operation, request.subresource)
                    .map_err(|e| fail("request.oldObject", e.to_string()))?
                    .remove(0);
            let requester = Requester {
                user: user.clone(),
                groups: request.groups.clone(),
                field_manager: request.field_manager.clone(),
                dry_run: request.dry_run,
            };
            let review = request::build_review(&change, &requester)
                .map_err(|e| fail("request", e.to_string()))?;
            (review, check::stored_workloads(&change))
        }
    };
    let now = spec
        .now
        .or(suite.now)
        .ok_or_else(|| fail("now", "the time to judge at (RFC 3339), in the suite or the case, so the case gives the same answer every day".into()))?;
    Ok(Case {
        name: spec.name,
        review,
        stored,
        setting: Setting {
            policies: policy_sources.configmaps,
            slo_specs: policy_sources.slo_specs,
            namespace: suite
                .namespace
                .clone()
                .unwrap_or_else(|| "slo-guard".into()),
            workloads,
            slo,
        },
        now,
        webhooks: spec.webhook.unwrap_or(Webhooks::Both),
        expect: spec.expect,
    })
}

/// Reads a suite file and prepares its cases.
fn load_suite(file: &Path) -> Result<Vec<Case>, SuiteError> {
    let text = std::fs::read_to_string(file).map_err(|e| SuiteError::Read {
        path: file.display().to_string(),
        cause: e.to_string(),
    })?;
    let mut suite = parse_suite(file, &text)?;
    let specs = std::mem::take(&mut suite.cases);
    let mut names = BTreeSet::new();
    for spec in &specs {
        if !names.insert(spec.name.clone()) {
            return Err(SuiteError::Field {
                file: file.display().to_string(),
                place: case_place(&spec.name),
                field: "name".into(),
                message: "two cases have this name".into(),
            });
        }
    }
    specs
        .into_iter()
        .map(|spec| prepare(file, &suite, spec))
        .collect()
}

fn kubectl_text(outcome: &Outcome) -> String {
    let mut lines = Vec::new();
    for answer in outcome.mutate.iter().chain(&outcome.validate) {
        lines.extend(answer.response.warnings.iter().cloned());
        if !answer.response.allowed {
            lines.push(answer.response.kubectl_line(answer.webhook));
        }
    }
    lines.join("\n")
}

fn run_case(suite: &str, case: &Case) -> Result_ {
    let started = std::time::Instant::now();
    let mut result = Result_ {
        suite: suite.to_string(),
        name: case.name.clone(),
        expected: case.expect.verdict.as_str(),
        got: String::new(),
        rules: Vec::new(),
        mismatches: Vec::new(),
        seconds: 0.0,
    };
    let outcome = case.setting.guard(&case.stored).and_then(|guard| {
        check::judge_in_apiserver_order(&guard, &case.review, case.webhooks, case.now)
    });
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            result.got = "error".into();
            result.mismatches.push(format!("cannot judge: {error}"));
            result.seconds = started.elapsed().as_secs_f64();
            return result;
        }
    };
    let got = if outcome.allowed() {
        Verdict::Allowed
    } else {
        Verdict::Denied
    };
    result.got = got.as_str().into();
    if got != case.expect.verdict {
        result.mismatches.push(format!(
            "expected {}, got {}",
            case.expect.verdict.as_str(),
            got.as_str()
        ));
    }
    let fired: BTreeSet<String> = outcome
        .decision()
        .map(|d| {
            d.findings
                .iter()
                .map(|f| f.rule.as_str().to_string())
                .collect()
        })
        .unwrap_or_default();
    result.rules = fired.iter().cloned().collect();
    if let Some(expected) = &case.expect.rules {
        let expected: BTreeSet<String> = expected.iter().cloned().collect();
        if expected != fired {
            result.mismatches.push(format!(
                "rules: expected [{}], fired [{}]",
                expected.into_iter().collect::<Vec<_>>().join(", "),
                result.rules.join(", ")
            ));
        }
    }
    let printed = kubectl_text(&outcome);
    for words in &case.expect.message {
        if !printed.contains(words.as_str()) {
            result.mismatches.push(format!(
                "message lacks {words:?}; kubectl would print: {printed}"
            ));
        }
    }
    for (key, expected) in &case.expect.annotations {
        let actual = outcome
            .object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str);
        if actual != expected.as_deref() {
            result.mismatches.push(format!(
                "annotation {key}: expected {}, got {}",
                expected
                    .as_deref()
                    .map_or("none".to_string(), |v| format!("{v:?}")),
                actual.map_or("none".to_string(), |v| format!("{v:?}"))
            ));
        }
    }
    result.seconds = started.elapsed().as_secs_f64();
    result
}

/// The suite files a path stands for: itself, or every slo-guard-test.yaml under it.
fn suite_files(path: &Path) -> Result<Vec<PathBuf>, SuiteError> {
    if !path.is_dir() {
        if !path.exists() {
            return Err(SuiteError::Read {
                path: path.display().to_string(),
                cause: "no such file or directory".into(),
            });
        }
        return Ok(vec![path.to_path_buf()]);
    }
    let mut found = Vec::new();
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| SuiteError::Read {
            path: dir.display().to_string(),
            cause: e.to_string(),
        })?;
        for entry in entries.flatten() {
            let entry_path = entry.path();
            if entry_path.is_dir() {
                pending.push(entry_path);
            } else if entry_path.file_name().is_some_and(|n| n == SUITE_FILE) {
                found.push(entry_path);
            }
        }
    }
    found.sort();
    if found.is_empty() {
        return Err(SuiteError::NoSuite {
            path: path.display().to_string(),
        });
    }
    Ok(found)
}

fn print_table(results: &[Result_]) {
    let header = ["CASE", "EXPECTED", "GOT", "RULES", "RESULT"];
    let rows: Vec<[String; 5]> = results
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.expected.to_string(),
                r.got.clone(),
                if r.rules.is_empty() {
                    "-".into()
                } else {
                    r.rules.join(",")
                },
                if r.mismatches.is_empty() {
                    "pass".into()
                } else {
                    "FAIL".into()
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3], &row[4]]);
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// JUnit XML: one testsuite per suite file, one testcase per case, a failure per mismatch.
fn junit(results: &[Result_]) -> String {
    let mut suites: BTreeMap<&str, Vec<&Result_>> = BTreeMap::new();
    for result in results {
        suites
            .entry(result.suite.as_str())
            .or_default()
            .push(result);
    }
    let failures = results.iter().filter(|r| !r.mismatches.is_empty()).count();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"slo-guard\" tests=\"{}\" failures=\"{failures}\">\n",
        results.len()
    );
    for (suite, cases) in suites {
        let failed = cases.iter().filter(|r| !r.mismatches.is_empty()).count();
        xml.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failed}\">\n",
            xml_escape(suite),
            cases.len()
        ));
        for case in cases {
            xml.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                xml_escape(suite),
                xml_escape(&case.name),
                case.seconds
            ));
            if case.mismatches.is_empty() {
                xml.push_str("/>\n");
            } else {
                xml.push_str(&format!(
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                    xml_escape(&case.mismatches[0]),
                    xml_escape(&case.mismatches.join("\n"))
                ));
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// Exit 0 when every case gets what it expects, 1 on a mismatch, 2 when a suite cannot
/// be read.
pub fn run(args: TestArgs) -> ExitCode {
    let mut suites = Vec::new();
    for path in &args.paths {
        let files = match suite_files(path) {
            Ok(files) => files,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(2);
            }
        };
        for file in files {
            match load_suite(&file) {
                Ok(cases) => suites.push((file, cases)),
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(2);
                }
            }
        }
    }
    let mut results = Vec::new();
    for (file, cases) in &suites {
        let suite = file.display().to_string();
        results.extend(cases.iter().map(|case| run_case(&suite, case)));
    }
    print_table(&results);
    let failed: Vec<&Result_> = results
        .iter()
        .filter(|r| !r.mismatches.is_empty())
        .collect();
    for result in &failed {
        println!("\n{} ({}):", result.name, result.suite);
        for mismatch in &result.mismatches {
            println!("  - {mismatch}");
        }
    }
    println!(
        "\n{} cases, {} passed, {} failed",
        results.len(),
        results.len() - failed.len(),
        failed.len()
    );
    if let Some(path) = &args.junit
        && let Err(error) = std::fs::write(path, junit(&results))
    {
        eprintln!("error: cannot write {}: {error}", path.display());
        return ExitCode::from(2);
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_names_the_file_the_case_and_the_field() {
        let text = "now: 2026-11-18T10:00:00Z\npolicies: p.yaml\ncases:\n- name: first\n  request: {review: r.json}\n  expect: {verdict: allowed}\n- name: second\n  request: {review: r.json}\n  expect: {verdikt: denied}\n";
        let error = parse_suite(Path::new("suite.yaml"), text)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("suite.yaml: case \"second\": field `expect"),
            "{error}"
        );
        assert!(error.contains("unknown field `verdikt`"), "{error}");

        let bad_verdict = text.replace("verdikt: denied", "verdict: maybe");
        let error = parse_suite(Path::new("suite.yaml"), &bad_verdict)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("suite.yaml: case \"second\": field `expect.verdict`"),
            "{error}"
        );

        let top = "polices: p.yaml\ncases: []\n";
        let error = parse_suite(Path::new("suite.yaml"), top)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("suite.yaml: field ``") || error.contains("unknown field `polices`"),
            "{error}"
        );
    }

    #[test]
    fn junit_escapes_and_counts_failures() {
        let results = [
            Result_ {
                suite: "s".into(),
                name: "a <b>".into(),
                expected: "allowed",
                got: "allowed".into(),
                rules: vec![],
                mismatches: vec![],
                seconds: 0.0,
            },
            Result_ {
                suite: "s".into(),
                name: "c".into(),
                expected: "allowed",
                got: "denied".into(),
                rules: vec![],
                mismatches: vec!["expected allowed, got denied & more".into()],
                seconds: 0.0,
            },
        ];
        let xml = junit(&results);
        assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");
        assert!(
            xml.contains("name=\"a &lt;b&gt;\" time=\"0.000\"/>"),
            "{xml}"
        );
        assert!(
            xml.contains("<failure message=\"expected allowed, got denied &amp; more\">"),
            "{xml}"
        );
    }
}
