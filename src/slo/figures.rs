//! The SLO figures, from query readings: budget left, burn rates, traffic ratio. Pure
//! arithmetic; a figure that cannot be computed says why instead of becoming zero.

use super::plan::{QueryRole, Reading, Readings};

/// Why a figure could not be computed, for the message ("errors over 30d: no series").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(pub String);

/// The error budget the objective allows, as a ratio: 99.9 (%) allows 0.001.
pub fn allowed_error_ratio(objective_percent: f64) -> f64 {
    1.0 - objective_percent / 100.0
}

fn reading(readings: &Readings, role: &QueryRole) -> Result<f64, Missing> {
    match readings.get(role) {
        Some(Reading::Value(v)) => Ok(*v),
        Some(Reading::NoData(why)) => Err(Missing(format!("{role}: {why}"))),
        None => Err(Missing(format!("{role}: not queried"))),
    }
}

/// Where the error ratio over a window came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatioOrigin {
    /// The tool's recording rule.
    Recorded,
    /// The queries, because the recording rule had no series.
    QueriesRuleAbsent,
    /// The queries; no recording rule covers the window.
    Queries,
}

/// Where `error_ratio(readings, window)` takes its figure from.
pub fn ratio_origin(readings: &Readings, window: &str) -> RatioOrigin {
    match readings.get(&QueryRole::Recorded(window.to_string())) {
        Some(Reading::NoData(super::plan::NoData::Empty)) => RatioOrigin::QueriesRuleAbsent,
        Some(_) => RatioOrigin::Recorded,
        None => RatioOrigin::Queries,
    }
}

/// The error ratio over `window`: a recording rule's, when one was read and has a
/// series; otherwise errors / total. No requests in the window means no ratio, not 0.
pub fn error_ratio(readings: &Readings, window: &str) -> Result<f64, Missing> {
    if ratio_origin(readings, window) == RatioOrigin::Recorded {
        let ratio = reading(readings, &QueryRole::Recorded(window.to_string()))?;
        if ratio < 0.0 {
            return Err(Missing(format!(
                "negative recorded error ratio over {window} ({ratio})"
            )));
        }
        return Ok(ratio);
    }
    raw_error_ratio(readings, window)
}

/// errors / total over `window`.
fn raw_error_ratio(readings: &Readings, window: &str) -> Result<f64, Missing> {
    let errors = reading(readings, &QueryRole::Errors(window.to_string()));
    let total = reading(readings, &QueryRole::Total(window.to_string()));
    let (errors, total) = match (errors, total) {
        (Ok(e), Ok(t)) => (e, t),
        (Err(a), Err(b)) => return Err(Missing(format!("{}; {}", a.0, b.0))),
        (Err(m), _) | (_, Err(m)) => return Err(m),
    };
    if errors < 0.0 || total < 0.0 {
        return Err(Missing(format!(
            "negative rate over {window} (errors {errors}, total {total})"
        )));
    }
    if total == 0.0 {
        return Err(Missing(format!("no requests over {window}")));
    }
    Ok(errors / total)
}

/// Budget left, traffic-weighted over the period as Pyrra computes it:
/// 1 − (errors/total over the period) / (1 − objective). 1.0 is untouched, 0 is spent,
/// below 0 is overspent.
pub fn budget_left(
    readings: &Readings,
    period: &str,
    objective_percent: f64,
) -> Result<f64, Missing> {
    let ratio = error_ratio(readings, period)?;
    Ok(1.0 - ratio / allowed_error_ratio(objective_percent))
}

/// How fast the budget burns over `window`: the error ratio over the allowed ratio. 1.0
/// spends exactly the budget over the period.
pub fn burn_rate(
    readings: &Readings,
    window: &str,
    objective_percent: f64,
) -> Result<f64, Missing> {
    Ok(error_ratio(readings, window)? / allowed_error_ratio(objective_percent))
}

/// Current traffic over its baseline. A zero baseline gives no ratio (a new service has
/// no history to compare with).
pub fn traffic_ratio(readings: &Readings) -> Result<(f64, f64, f64), Missing> {
    let current = reading(readings, &QueryRole::Current)?;
    let baseline = reading(readings, &QueryRole::Baseline)?;
    if baseline <= 0.0 {
        return Err(Missing(format!(
            "baseline traffic is {} req/s, so there is no ratio",
            number(baseline)
        )));
    }
    Ok((current, baseline, current / baseline))
}

/// A number as messages print it: at most two decimals, no trailing zeros.
pub fn number(value: f64) -> String {
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_string()
    } else {
        text.to_string()
    }
}

/// A budget fraction as a percentage with one decimal: 0.042 → "4.2%".
pub fn percent(fraction: f64) -> String {
    let text = format!("{:.1}%", fraction * 100.0);
    if text == "-0.0%" {
        "0.0%".to_string()
    } else {
        text
    }
}

/// A threshold fraction as a percentage without needless decimals: 0.25 → "25%".
pub fn threshold_percent(fraction: f64) -> String {
    format!("{}%", number(fraction * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slo::plan::NoData;

    fn readings(pairs: &[(QueryRole, Reading)]) -> Readings {
        pairs.iter().cloned().collect()
    }

    fn window(errors: f64, total: f64, w: &str) -> Vec<(QueryRole, Reading)> {
        vec![
            (QueryRole::Errors(w.into()), Reading::Value(errors)),
            (QueryRole::Total(w.into()), Reading::Value(total)),
        ]
    }

    #[test]
    fn budget_left_is_traffic_weighted_over_the_period() {
        // 0.02% errors against a 0.1% budget: 80% left (the harness's healthy service).
        let r = readings(&window(0.002, 10.0, "30d"));
        assert!((budget_left(&r, "30d", 99.9).unwrap() - 0.8).abs() < 1e-9);
        // 0.105% errors: overspent by 5%.
        let r = readings(&window(0.0105, 10.0, "30d"));
        assert!((budget_left(&r, "30d", 99.9).unwrap() + 0.05).abs() < 1e-9);
        // No errors at all: the whole budget.
        let r = readings(&window(0.0, 10.0, "30d"));
        assert_eq!(budget_left(&r, "30d", 99.9).unwrap(), 1.0);
    }

    #[test]
    fn burn_rate_is_the_error_ratio_over_the_allowed_ratio() {
        let r = readings(&window(0.25, 10.0, "1h"));
        assert!((burn_rate(&r, "1h", 99.9).unwrap() - 25.0).abs() < 1e-9);
        let r = readings(&window(0.3, 10.0, "5m"));
        assert!((burn_rate(&r, "5m", 99.0).unwrap() - 3.0).abs() < 1e-9);
    }

    #[test]
    fn missing_data_is_never_zero() {
        let r = readings(&[
            (
                QueryRole::Errors("30d".into()),
                Reading::NoData(NoData::Empty),
            ),
            (QueryRole::Total("30d".into()), Reading::Value(10.0)),
        ]);
        assert_eq!(
            budget_left(&r, "30d", 99.9).unwrap_err(),
            Missing("errors over 30d: no series".into())
        );
        let r = readings(&window(0.0, 0.0, "5m"));
        assert_eq!(
            burn_rate(&r, "5m", 99.9).unwrap_err(),
            Missing("no requests over 5m".into())
        );
        let r = readings(&[
            (QueryRole::Errors("1h".into()), Reading::NoData(NoData::NaN)),
            (QueryRole::Total("1h".into()), Reading::NoData(NoData::Inf)),
        ]);
        assert_eq!(
            burn_rate(&r, "1h", 99.9).unwrap_err().0,
            "errors over 1h: NaN; total over 1h: Inf"
        );
        assert!(burn_rate(&Readings::new(), "6h", 99.9).is_err());
    }

    #[test]
    fn traffic_ratio_needs_a_baseline() {
        let r = readings(&[
            (QueryRole::Current, Reading::Value(30.0)),
            (QueryRole::Baseline, Reading::Value(10.0)),
        ]);
        assert_eq!(traffic_ratio(&r).unwrap(), (30.0, 10.0, 3.0));
        let r = readings(&[
            (QueryRole::Current, Reading::Value(30.0)),
            (QueryRole::Baseline, Reading::Value(0.0)),
        ]);
        assert_eq!(
            traffic_ratio(&r).unwrap_err().0,
            "baseline traffic is 0 req/s, so there is no ratio"
        );
        let r = readings(&[
            (QueryRole::Current, Reading::NoData(NoData::Empty)),
            (QueryRole::Baseline, Reading::Value(10.0)),
        ]);
        assert_eq!(
            traffic_ratio(&r).unwrap_err().0,
            "current traffic: no series"
        );
    }

    #[test]
    fn numbers_print_compactly() {
        assert_eq!(number(25.0), "25");
        assert_eq!(number(8.4712), "8.47");
        assert_eq!(number(0.2), "0.2");
        assert_eq!(number(-0.001), "0");
        assert_eq!(percent(0.042), "4.2%");
        assert_eq!(percent(-0.0501), "-5.0%");
        assert_eq!(threshold_percent(0.25), "25%");
        assert_eq!(threshold_percent(0.0), "0%");
        assert!((allowed_error_ratio(99.9) - 0.001).abs() < 1e-12);
    }
}
