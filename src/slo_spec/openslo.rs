//! OpenSLO v1: an `SLO` whose indicator is a `ratioMetric`, inline
//! (`spec.indicator.spec.ratioMetric`) or an `SLI` named by `spec.indicatorRef`, with
//! Prometheus metric sources (`metricSource.spec.query`).
//!
//! A query may carry a window placeholder (`{{.window}}`, as Sloth's OpenSLO support
//! writes it). Without one, a `counter: true` ratio metric's query must be a plain
//! counter selector, and slo-guard takes its rate over the window. `good` gives the
//! errors as total minus good. OpenSLO has no recording-rule convention, so the figures
//! always come from the queries.

use super::{MappedSlo, convert_window_template};
use crate::policy::PromDuration;

type Lookup<'a> = dyn Fn(&str) -> Option<&'a serde_yaml::Value> + 'a;

fn text<'a>(value: &'a serde_yaml::Value, path: &[&str]) -> Option<&'a str> {
    let mut current = value;
    for key in path {
        current = current.get(*key)?;
    }
    current.as_str()
}

/// Maps an OpenSLO `SLO`. `objective` picks one of its objectives by `displayName` (or
/// `name`) when it has several; `sli` finds an `SLI` document by name.
pub fn map_openslo<'a>(
    body: &'a serde_yaml::Value,
    place: &str,
    objective: Option<&str>,
    sli: &Lookup<'a>,
) -> Result<MappedSlo, String> {
    let spec = body.get("spec").ok_or("has no spec")?;
    match spec
        .get("budgetingMethod")
        .and_then(serde_yaml::Value::as_str)
    {
        Some("Occurrences") | None => {}
        Some(other) => {
            return Err(format!(
                "spec.budgetingMethod {other}: slo-guard judges occurrences (errors over total), not time slices"
            ));
        }
    }
    let period = period(spec)?;
    let (target, chosen_name) = pick_objective(spec, objective)?;
    let ratio = match (spec.get("indicator"), text(spec, &["indicatorRef"])) {
        (Some(indicator), None) => indicator
            .get("spec")
            .and_then(|s| s.get("ratioMetric"))
            .ok_or("spec.indicator has no spec.ratioMetric: slo-guard reads ratio metrics")?,
        (None, Some(reference)) => sli(reference)
            .ok_or_else(|| {
                format!(
                    "spec.indicatorRef {reference:?}: that SLI is not among the specs slo-guard read"
                )
            })?
            .get("spec")
            .and_then(|s| s.get("ratioMetric"))
            .ok_or_else(|| {
                format!("SLI {reference} has no spec.ratioMetric: slo-guard reads ratio metrics")
            })?,
        (Some(_), Some(_)) => return Err("has both spec.indicator and spec.indicatorRef".into()),
        (None, None) => return Err("has neither spec.indicator nor spec.indicatorRef".into()),
    };
    let (errors, total) = ratio_queries(ratio)?;
    let objective_text = chosen_name
        .map(|n| format!(", objective {n}"))
        .unwrap_or_default();
    Ok(MappedSlo {
        objective: target,
        period,
        errors,
        total,
        recorded: None,
        origin: format!("OpenSLO SLO {place}{objective_text}"),
    })
}

/// Checks an `SLO` document on its own: every objective, and its inline indicator (a
/// referenced SLI may be in a document read later).
pub(super) fn check_slo(body: &serde_yaml::Value) -> Result<(), String> {
    let spec = body.get("spec").ok_or("has no spec")?;
    let objectives = spec
        .get("objectives")
        .and_then(serde_yaml::Value::as_sequence)
        .map(Vec::len)
        .unwrap_or(0);
    let names: Vec<Option<String>> = (0..objectives.max(1))
        .map(|index| {
            spec.get("objectives")
                .and_then(|o| o.get(index))
                .and_then(|o| text(o, &["displayName"]).or_else(|| text(o, &["name"])))
                .map(str::to_string)
        })
        .collect();
    for name in names {
        let picked = if objectives > 1 {
            name.as_deref()
        } else {
            None
        };
        match map_openslo(body, "", picked, &|_| None) {
            Err(error) if error.contains("is not among the specs") => {}
            other => {
                other?;
            }
        }
    }
    Ok(())
}

/// Checks an `SLI` document on its own, for `lint`.
pub(super) fn check_sli(body: &serde_yaml::Value) -> Result<(), String> {
    let ratio = body
        .get("spec")
        .and_then(|s| s.get("ratioMetric"))
        .ok_or("has no spec.ratioMetric: slo-guard reads ratio metrics")?;
    ratio_queries(ratio).map(|_| ())
}

fn period(spec: &serde_yaml::Value) -> Result<PromDuration, String> {
    let windows = spec
        .get("timeWindow")
        .and_then(serde_yaml::Value::as_sequence)
        .filter(|w| !w.is_empty())
        .ok_or("has no spec.timeWindow")?;
    let window = &windows[0];
    if window.get("calendar").is_some()
        || window.get("isRolling").and_then(serde_yaml::Value::as_bool) == Some(false)
    {
        return Err(
            "spec.timeWindow is calendar-aligned: slo-guard judges rolling windows".to_string(),
        );
    }
    let duration = text(window, &["duration"]).ok_or("spec.timeWindow[0] has no duration")?;
    PromDuration::parse(duration).map_err(|e| format!("spec.timeWindow[0].duration: {e}"))
}

/// The objective's target as a percentage, and its name when it was picked by name.
fn pick_objective(
    spec: &serde_yaml::Value,
    wanted: Option<&str>,
) -> Result<(f64, Option<String>), String> {
    let objectives = spec
        .get("objectives")
        .and_then(serde_yaml::Value::as_sequence)
        .filter(|o| !o.is_empty())
        .ok_or("has no spec.objectives")?;
    let name_of = |o: &serde_yaml::Value| {
        text(o, &["displayName"])
            .or_else(|| text(o, &["name"]))
            .map(str::to_string)
    };
    let chosen = match wanted {
        Some(wanted) => objectives
            .iter()
            .find(|o| name_of(o).as_deref() == Some(wanted))
            .ok_or_else(|| {
                let names: Vec<String> = objectives.iter().filter_map(name_of).collect();
                format!(
                    "has no objective named {wanted:?} (it has: {})",
                    names.join(", ")
                )
            })?,
        None if objectives.len() == 1 => &objectives[0],
        None => {
            let names: Vec<String> = objectives.iter().filter_map(name_of).collect();
            return Err(format!(
                "has {} objectives ({}): name one with slo.source.slo",
                objectives.len(),
                names.join(", ")
            ));
        }
    };
    let percent = match (
        chosen.get("target").and_then(serde_yaml::Value::as_f64),
        chosen
            .get("targetPercent")
            .and_then(serde_yaml::Value::as_f64),
    ) {
        (Some(target), None) => target * 100.0,
        (None, Some(percent)) => percent,
        (Some(_), Some(_)) => return Err("an objective has both target and targetPercent".into()),
        (None, None) => return Err("an objective has neither target nor targetPercent".into()),
    };
    if !(percent.is_finite() && percent > 0.0 && percent < 100.0) {
        return Err(format!(
            "objective target {percent}% must be strictly between 0% and 100%"
        ));
    }
    Ok((percent, wanted.map(str::to_string)))
}

/// The errors and total templates of a ratio metric.
fn ratio_queries(ratio: &serde_yaml::Value) -> Result<(String, String), String> {
    if ratio.get("raw").is_some() {
        return Err(
            "ratioMetric.raw is a precomputed ratio with no request total; slo-guard reads good or bad, and total"
                .to_string(),
        );
    }
    let counter = ratio
        .get("counter")
        .and_then(serde_yaml::Value::as_bool)
        .unwrap_or(false);
    let total = metric_query(ratio, "total", counter)?;
    let errors = match (ratio.get("bad"), ratio.get("good")) {
        (Some(_), None) => metric_query(ratio, "bad", counter)?,
        (None, Some(_)) => format!("({total}) - ({})", metric_query(ratio, "good", counter)?),
        (Some(_), Some(_)) => return Err("ratioMetric has both good and bad".into()),
        (None, None) => return Err("ratioMetric has neither good nor bad".into()),
    };
    Ok((errors, total))
}

fn metric_query(ratio: &serde_yaml::Value, key: &str, counter: bool) -> Result<String, String> {
    let source = ratio
        .get(key)
        .and_then(|m| m.get("metricSource"))
        .ok_or_else(|| format!("ratioMetric.{key} has no metricSource"))?;
    if let Some(kind) = text(source, &["type"])
        && !kind.eq_ignore_ascii_case("prometheus")
    {
        return Err(format!(
            "ratioMetric.{key}.metricSource.type is {kind}: slo-guard reads Prometheus sources"
        ));
    }
    let query = text(source, &["spec", "query"])
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .ok_or_else(|| format!("ratioMetric.{key}.metricSource.spec.query is missing"))?;
    let converted = convert_window_template(query)
        .map_err(|e| format!("ratioMetric.{key}.metricSource.spec.query: {e}"))?;
    if converted.contains("{{window}}") {
        return Ok(converted);
    }
    if counter && is_plain_selector(query) {
        return Ok(format!("sum(rate({query}[{{{{window}}}}]))"));
    }
    Err(format!(
        "ratioMetric.{key}.metricSource.spec.query {query:?} has no {{{{.window}}}} placeholder and is not a plain counter selector (with counter: true): slo-guard cannot take it over a window"
    ))
}

/// `name` or `name{matchers}`, nothing else.
fn is_plain_selector(query: &str) -> bool {
    let name_len = query
        .bytes()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
        .count();
    let rest = query[name_len..].trim();
    name_len > 0
        && (rest.is_empty()
            || (rest.starts_with('{') && rest.ends_with('}') && rest.matches('{').count() == 1))
}
