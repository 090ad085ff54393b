//! Sloth: `PrometheusServiceLevel` (`sloth.slok.dev/v1`, camelCase fields under `spec`)
//! and its `prometheus/v1` spec file (snake_case fields at the top level).
//!
//! Sloth's queries are Go templates with `{{.window}}`; its recording rules are
//! `slo:sli_error:ratio_rate<window>{sloth_service, sloth_slo}`, each the error ratio
//! over the window, for the alert windows of its period (5m, 30m, 1h, 2h, 6h, 1d, 3d for
//! its 30d and 28d catalogs) and for the period itself. The period's rule is not errors
//! over total: Sloth averages the 5m ratios over the period (`sum_over_time` over
//! `count_over_time`), a time-weighted mean.

use std::time::Duration;

use crate::policy::PromDuration;

use super::{
    MappedSlo, RecordedWindow, RecordingRules, RecordingTool, convert_window_template, label_value,
    prometheus_duration_text,
};

const DAY: u64 = 86_400;

/// The SLOs a Sloth spec lists, by name.
pub(super) fn slo_names(body: &serde_yaml::Value) -> Vec<String> {
    slos(body)
        .map(|slos| {
            slos.iter()
                .filter_map(|slo| slo.get("name").and_then(serde_yaml::Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The SLOs with an events SLI, the kind slo-guard reads.
pub(super) fn event_slo_names(body: &serde_yaml::Value) -> Vec<String> {
    slos(body)
        .map(|slos| {
            slos.iter()
                .filter(|slo| slo.get("sli").and_then(|sli| sli.get("events")).is_some())
                .filter_map(|slo| slo.get("name").and_then(serde_yaml::Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The spec: `spec` of a `PrometheusServiceLevel`, the document itself for a
/// `prometheus/v1` file.
fn spec(body: &serde_yaml::Value) -> &serde_yaml::Value {
    body.get("spec").unwrap_or(body)
}

fn slos(body: &serde_yaml::Value) -> Option<&Vec<serde_yaml::Value>> {
    spec(body)
        .get("slos")
        .and_then(serde_yaml::Value::as_sequence)
}

/// The windows Sloth records `slo:sli_error:ratio_rate<window>` for, with its default
/// alert-window catalogs (google-30d and google-28d): the four alerts' short and long
/// windows, then the period. Other periods need a custom catalog slo-guard cannot see.
pub fn sloth_windows(period: Duration) -> Option<Vec<Duration>> {
    if period != Duration::from_secs(30 * DAY) && period != Duration::from_secs(28 * DAY) {
        return None;
    }
    let minutes = |m: u64| Duration::from_secs(m * 60);
    Some(vec![
        minutes(5),
        minutes(30),
        minutes(60),
        minutes(120),
        minutes(360),
        minutes(24 * 60),
        minutes(3 * 24 * 60),
        period,
    ])
}

/// Maps one SLO of a Sloth spec. `place` names the document for messages; `slo` picks
/// the SLO, and may be left out when the spec lists one. A Sloth spec carries no period:
/// `period` is the one its generator uses (`--default-slo-period`, 30d by default), as
/// the policy's `slo.period` says.
pub fn map_sloth(
    body: &serde_yaml::Value,
    place: &str,
    slo: Option<&str>,
    period: &PromDuration,
) -> Result<MappedSlo, String> {
    let spec = spec(body);
    let camel = body.get("spec").is_some();
    let field = |camel_name: &'static str, snake_name: &'static str| {
        if camel { camel_name } else { snake_name }
    };
    let service = spec
        .get("service")
        .and_then(serde_yaml::Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or("has no service")?;
    let slos = slos(body)
        .filter(|s| !s.is_empty())
        .ok_or("lists no slos")?;
    let names = slo_names(body);
    let chosen = match slo {
        Some(wanted) => slos
            .iter()
            .find(|s| s.get("name").and_then(serde_yaml::Value::as_str) == Some(wanted))
            .ok_or_else(|| format!("has no SLO named {wanted:?} (it has: {})", names.join(", ")))?,
        None if slos.len() == 1 => &slos[0],
        None => {
            return Err(format!(
                "lists {} SLOs ({}): name one with slo.source.slo",
                slos.len(),
                names.join(", ")
            ));
        }
    };
    let name = chosen
        .get("name")
        .and_then(serde_yaml::Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or("has an SLO without a name")?;
    let objective = chosen
        .get("objective")
        .and_then(serde_yaml::Value::as_f64)
        .ok_or_else(|| format!("SLO {name}: objective is missing or not a number"))?;
    if !(objective.is_finite() && objective > 0.0 && objective < 100.0) {
        return Err(format!(
            "SLO {name}: objective {objective} must be a percentage strictly between 0 and 100"
        ));
    }
    let sli = chosen
        .get("sli")
        .ok_or_else(|| format!("SLO {name}: has no sli"))?;
    let Some(events) = sli.get("events") else {
        let kind = if sli.get("raw").is_some() {
            "a raw SLI (errorRatioQuery), which gives no request total"
        } else if sli.get("plugin").is_some() {
            "an SLI plugin, whose queries only Sloth knows"
        } else {
            "no events SLI"
        };
        return Err(format!(
            "SLO {name}: has {kind}; slo-guard reads events SLIs (errorQuery and totalQuery)"
        ));
    };
    let query = |key: &'static str| {
        events
            .get(key)
            .and_then(serde_yaml::Value::as_str)
            .filter(|q| !q.trim().is_empty())
            .ok_or_else(|| format!("SLO {name}: sli.events.{key} is missing"))
            .and_then(|q| {
                let converted = convert_window_template(q.trim())
                    .map_err(|e| format!("SLO {name}: sli.events.{key}: {e}"))?;
                if converted.contains("{{window}}") {
                    Ok(converted)
                } else {
                    Err(format!(
                        "SLO {name}: sli.events.{key} has no {{{{.window}}}}: slo-guard needs the range templated"
                    ))
                }
            })
    };
    let errors = query(field("errorQuery", "error_query"))?;
    let total = query(field("totalQuery", "total_query"))?;
    let recorded = sloth_recording_rules(service, name, period.duration());
    Ok(MappedSlo {
        objective,
        period: period.clone(),
        errors,
        total,
        recorded,
        origin: format!("Sloth PrometheusServiceLevel {place}, SLO {name}"),
    })
}

/// Sloth's recording rules for one SLO. `None` when Sloth's default catalogs have no
/// windows for the period.
fn sloth_recording_rules(service: &str, name: &str, period: Duration) -> Option<RecordingRules> {
    let matchers = format!(
        "{{sloth_service={},sloth_slo={}}}",
        label_value(service),
        label_value(name)
    );
    let windows = sloth_windows(period)?;
    Some(RecordingRules {
        tool: RecordingTool::Sloth,
        windows: windows
            .into_iter()
            .map(|window| {
                let rule = format!(
                    "slo:sli_error:ratio_rate{}",
                    prometheus_duration_text(window)
                );
                RecordedWindow {
                    window,
                    // One series per SLO; `max` keeps a query valid where two
                    // Prometheus replicas' series meet (Thanos, federation).
                    query: format!("max({rule}{matchers})"),
                    caveat: (window == period)
                        .then_some("Sloth's time-weighted mean of its 5m error ratios"),
                    rule,
                }
            })
            .collect(),
    })
}
