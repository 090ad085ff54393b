//! The report: quantiles, the per-phase rows and the machine's description.

use std::time::Duration;

use crate::options::Mode;
use crate::phases::PhaseResult;
use crate::system::{Usage, mib};

pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank: the smallest value with at least q of the samples at or below it.
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

pub(crate) struct Row {
    pub(crate) throughput: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) p999: Duration,
}

pub(crate) fn print_phase(r: &PhaseResult) -> Row {
    let mut latencies: Vec<Duration> = r.outcome.samples.iter().map(|s| s.latency).collect();
    latencies.sort_unstable();
    let throughput = r.outcome.completed as f64 / r.elapsed.as_secs_f64();
    let row = Row {
        throughput,
        p50: quantile(&latencies, 0.50),
        p99: quantile(&latencies, 0.99),
        p999: quantile(&latencies, 0.999),
    };
    let wall = r.elapsed.as_secs_f64();
    let cpu = |c: Option<Usage>| {
        c.map(|c| format!("{:.0}%/{:.0}%", 100.0 * c.cpu / wall, 100.0 * c.wait / wall))
            .unwrap_or_else(|| "-".into())
    };
    let mode = match (r.mode, r.offered) {
        (Mode::Saturation, _) => "saturation".to_string(),
        (Mode::Steady, Some(rate)) => format!("steady {rate:.0}/s"),
        (Mode::Steady, None) => "steady".to_string(),
    };
    println!(
        "{:<10} {:<8} {:<13} {:>5} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6} {:>9} {:>9} {:>10} {:>8}",
        r.server,
        r.proto.name(),
        mode,
        r.connections,
        throughput,
        ms(row.p50),
        ms(row.p99),
        ms(row.p999),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
        r.outcome.completed,
        r.outcome.errors + r.outcome.not_allowed,
        cpu(r.server_cpu),
        cpu(r.client_cpu),
        r.rss_peak_kib.map(mib).unwrap_or_else(|| "-".into()),
        r.steal
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0))
            .unwrap_or_else(|| "-".into()),
    );
    row
}

pub(crate) fn print_steady_detail(r: &PhaseResult) {
    let mut lags: Vec<Duration> = r.outcome.samples.iter().map(|s| s.lag).collect();
    let mut dispatch: Vec<Duration> = r.outcome.samples.iter().map(|s| s.dispatch).collect();
    // Latency from when the dispatcher released the request: the scheduled-time latency
    // without the dispatcher's own lateness (a stalled client), still with every wait for
    // a connection or for the server.
    let mut released: Vec<Duration> = r
        .outcome
        .samples
        .iter()
        .map(|s| s.latency.saturating_sub(s.dispatch))
        .collect();
    lags.sort_unstable();
    dispatch.sort_unstable();
    released.sort_unstable();
    println!(
        "  {} {}: {} of {} requests missed their slot (sent > {} ms after the scheduled time); send lag p50 {} p99 {} max {} ms; dispatcher lateness p50 {} p99 {} max {} ms; latency from release p99 {} p99.9 {} ms",
        r.server,
        r.proto.name(),
        r.missed,
        r.outcome.samples.len(),
        ms(Duration::from_secs_f64(1.0 / r.offered.unwrap_or(1.0))),
        ms(quantile(&lags, 0.5)),
        ms(quantile(&lags, 0.99)),
        ms(*lags.last().unwrap_or(&Duration::ZERO)),
        ms(quantile(&dispatch, 0.5)),
        ms(quantile(&dispatch, 0.99)),
        ms(*dispatch.last().unwrap_or(&Duration::ZERO)),
        ms(quantile(&released, 0.99)),
        ms(quantile(&released, 0.999)),
    );
}

pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
