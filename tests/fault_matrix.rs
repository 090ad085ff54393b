//! The fault matrix (issue 7, "Reliability and security" item 2): every way the SLO data
//! can fail, against the real Prometheus harness (tests/prometheus/start.sh), under each
//! `prometheus.onError`, for an agent's rollout and a person's rollout, through
//! `/validate` and `/mutate` over TLS.
//!
//! Each fault row has a control: the same policy and workload without the fault is
//! admitted with no warning, so the verdict in the row comes from the fault alone.
//!
//! Asserted per cell: the verdict follows `onError` (`allow` admits everyone, `deny`
//! denies everyone, `deny-agents` denies the agent only); a denial is the `slo-data` rule
//! alone, naming the cause and the setting; an admission carries a warning of at most 120
//! characters naming the cause; and both endpoints answer. The answer arriving at all is
//! the correctness property (a decision lands within its timeout); the bound used to wait
//! for it (the policy's timeout + 3 s) is only a hang guard, never a performance check.
//!
//! Run: `cargo test --test fault_matrix -- --nocapture` (prints the matrix).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use slo_guard_testkit::http::{content_length, query_param, read_head};
use slo_guard_testkit::prometheus::{
    Harness, delaying_proxy, guard_with, harness_dir, live, message, rollout, warnings,
};
use slo_guard_testkit::router::TlsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ON_ERRORS: [&str; 3] = ["allow", "deny", "deny-agents"];

/// The policy timeout for rows whose fault is not slowness: generous, so a loaded
/// machine never turns a NaN into a timeout.
const TIMEOUT: &str = "5s";
const TIMEOUT_SECS: u64 = 5;
/// The slow row's policy timeout, far below the delaying proxy's 30 s.
const SLOW_TIMEOUT: &str = "1s";
const SLOW_TIMEOUT_SECS: u64 = 1;

/// Cells judged at once: enough to overlap, few enough not to slow the harness down.
const CONCURRENCY: usize = 6;

fn tmp() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// One harness for the binary (it stops when the binary exits).
fn shared() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| Harness::start(&harness_dir(tmp(), "fault-matrix")))
}

const ERRORS: &str = r#"sum(rate(http_requests_total{job="{{name}}",code=~"5.."}[{{window}}]))"#;
const TOTAL: &str = r#"sum(rate(http_requests_total{job="{{name}}"}[{{window}}]))"#;
/// Errors written as the error ratio times the total, as a recording rule of the ratio
/// would give them: for a service with no requests Prometheus answers 0/0 = NaN.
const ERRORS_VIA_RATIO: &str = r#"(sum(rate(http_requests_total{job="{{name}}",code=~"5.."}[{{window}}])) / sum(rate(http_requests_total{job="{{name}}"}[{{window}}]))) * sum(rate(http_requests_total{job="{{name}}"}[{{window}}]))"#;
/// Errors counted in a series that does not exist (a service that never failed has no
/// 5xx series): an empty result.
const ERRORS_NO_SERIES: &str = r#"sum(rate(http_errors_total{job="{{name}}"}[{{window}}]))"#;
/// The fix docs/slo-gate.md gives for a service without 5xx series.
const ERRORS_NO_SERIES_FIXED: &str =
    r#"(sum(rate(http_errors_total{job="{{name}}"}[{{window}}])) or vector(0))"#;

/// The harness policy (SLO 99.9 % over 30d, two burn rows, traffic spike), with the
/// errors query and the `prometheus` section given. No `minRequestRate`, so an idle
/// service reaches the figures instead of `onNoTraffic`.
fn policy(on_error: &str, timeout: &str, errors: &str) -> String {
    r#"apiVersion: v1
kind: ConfigMap
metadata: {name: shop, namespace: shop, labels: {slo-guard.io/policy: "true"}}
data:
  policy.yaml: |
    match: {kinds: [Deployment]}
    agents: {users: ["system:serviceaccount:ai-agents:*"]}
    slo:
      objective: 99.9
      period: 30d
      errors: 'ERRORS'
      total: 'TOTAL'
      budget: {freezeBelow: 0.0, agentFreezeBelow: 0.25}
      burnRate:
        - {long: 1h, short: 5m, factor: 14.4}
        - {long: 6h, short: 30m, factor: 6}
    traffic:
      current:  'sum(rate(http_requests_total{job="{{name}}"}[5m]))'
      baseline: 'sum(rate(http_requests_total{job="{{name}}"}[5m] offset 1w))'
      spikeRatio: 2.0
    prometheus: {onError: ON_ERROR, timeout: TIMEOUT, maxStaleness: 2m}
"#
    .replace("ERRORS", errors)
    .replace("TOTAL", TOTAL)
    .replace("ON_ERROR", on_error)
    .replace("TIMEOUT", timeout)
}

/// What a broken Prometheus, or what stands in front of it, answers.
#[derive(Debug, Clone, Copy)]
enum Garbage {
    /// Prometheus overloaded: 503 with its own error envelope.
    Overloaded,
    /// A gateway in front of Prometheus: 502 with an HTML page.
    BadGateway,
    /// 500 with a plain-text body.
    Internal,
    /// An SSO proxy's login page, with status 200.
    LoginPage,
    /// JSON cut short by a proxy that buffers badly, with a consistent Content-Length.
    TruncatedJson,
}

impl Garbage {
    fn response(self) -> String {
        let (status, content_type, body) = match self {
            Garbage::Overloaded => (
                "503 Service Unavailable",
                "application/json",
                r#"{"status":"error","errorType":"unavailable","error":"too many concurrent queries"}"#,
            ),
            Garbage::BadGateway => (
                "502 Bad Gateway",
                "text/html",
                "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>",
            ),
            Garbage::Internal => (
                "500 Internal Server Error",
                "text/plain",
                "upstream exploded\n",
            ),
            Garbage::LoginPage => (
                "200 OK",
                "text/html; charset=utf-8",
                "<html><head><title>Sign in - Example SSO</title></head><body>Please log in</body></html>",
            ),
            Garbage::TruncatedJson => (
                "200 OK",
                "application/json",
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.5"]"#,
            ),
        };
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }
}

/// An HTTP proxy in front of the real Prometheus that answers `garbage` for every query
/// containing `only` (every query when `None`) and forwards the rest.
async fn fault_proxy(target: SocketAddr, garbage: Garbage, only: Option<&'static str>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = serve_faults(inbound, target, garbage, only).await;
            });
        }
    });
    format!("http://{address}")
}

async fn serve_faults(
    mut inbound: TcpStream,
    target: SocketAddr,
    garbage: Garbage,
    only: Option<&'static str>,
) -> std::io::Result<()> {
    let mut outbound: Option<TcpStream> = None;
    loop {
        let Some(head) = read_head(&mut inbound).await? else {
            return Ok(());
        };
        let query = query_param(&head, "query").unwrap_or_default();
        if only.is_none_or(|needle| query.contains(needle)) {
            inbound.write_all(garbage.response().as_bytes()).await?;
            inbound.shutdown().await?;
            return Ok(());
        }
        if outbound.is_none() {
            outbound = Some(TcpStream::connect(target).await?);
        }
        let prometheus = outbound.as_mut().expect("connected");
        prometheus.write_all(&head).await?;
        let Some(response_head) = read_head(prometheus).await? else {
            return Ok(());
        };
        let mut body = vec![0u8; content_length(&response_head).unwrap_or(0)];
        prometheus.read_exact(&mut body).await?;
        inbound.write_all(&response_head).await?;
        inbound.write_all(&body).await?;
    }
}

/// One row of the matrix.
struct Fault {
    name: &'static str,
    /// Where the faulty answers come from.
    url: String,
    /// The workload (a harness scenario) and the errors query.
    workload: &'static str,
    errors: &'static str,
    timeout: (&'static str, u64),
    /// Named in the denial.
    cause: &'static str,
    /// Named in the warning (which is cut at 120 characters).
    short_cause: &'static str,
    /// The same thing without the fault: URL, workload, errors query.
    control: (String, &'static str, &'static str),
}

/// The result of one cell, for the printed matrix and the failure list.
struct Cell {
    fault: &'static str,
    on_error: &'static str,
    agent: bool,
    outcome: Result<String, String>,
}

async fn answer(server: &TlsServer, path: &str, review: Vec<u8>, guard: Duration) -> Value {
    match tokio::time::timeout(guard, server.post(path, review)).await {
        Ok((200, body)) => body["response"].clone(),
        Ok((status, body)) => panic!("{path} answered {status}: {body}"),
        Err(_) => panic!("{path} gave no answer within {guard:?} (hang guard)"),
    }
}

/// Judges one cell and checks it; Ok carries what the cell printed (for the matrix).
async fn judge(fault: &Fault, on_error: &'static str, agent: bool) -> Result<String, String> {
    let (_, source) = live(&fault.url, Duration::from_millis(1));
    let server = TlsServer::start(guard_with(
        &policy(on_error, fault.timeout.0, fault.errors),
        source,
    ))
    .await;
    let hang_guard = Duration::from_secs(fault.timeout.1 + 3);
    let response = answer(
        &server,
        "/validate",
        rollout(fault.workload, agent),
        hang_guard,
    )
    .await;
    let denies = match on_error {
        "allow" => false,
        "deny" => true,
        _ => agent,
    };
    let workload = fault.workload;
    let result = if denies {
        let message = message(&response);
        let prefix = format!(
            "[shop/shop:slo-data] rollout of Deployment shop/{workload} blocked: SLO figures unavailable ("
        );
        let setting = format!(", and prometheus.onError is {on_error}.");
        if response["allowed"] != false {
            Err(format!("expected a denial, got {response:#}"))
        } else if !message.starts_with(&prefix) {
            Err(format!("denial does not start with {prefix:?}: {message}"))
        } else if !message.contains(fault.cause) {
            Err(format!("cause {:?} not named: {message}", fault.cause))
        } else if !message.contains(&setting) {
            Err(format!("setting not named: {message}"))
        } else if response["auditAnnotations"]["rules"] != "shop/shop:slo-data=enforce" {
            Err(format!(
                "a rule other than slo-data fired: {}",
                response["auditAnnotations"]
            ))
        } else {
            Ok(format!("denied: {message}"))
        }
    } else {
        let prefix =
            format!("slo-guard: shop/shop allowed without SLO data (onError: {on_error}): ");
        let warnings = warnings(&response);
        let warning = warnings.iter().find(|w| w.starts_with(&prefix));
        match warning {
            _ if response["allowed"] != true => {
                Err(format!("expected an admission, got {response:#}"))
            }
            None => Err(format!("no warning starting {prefix:?}: {warnings:?}")),
            Some(w) if !w.contains(fault.short_cause) => {
                Err(format!("cause {:?} not named: {w}", fault.short_cause))
            }
            Some(w) if w.chars().count() > 120 => Err(format!("warning over 120 characters: {w}")),
            Some(w) => Ok(format!("allowed: {w}")),
        }
    };
    // The mutating webhook asks the same questions; it too answers, and leaves the
    // denial to the validating webhook.
    let mutated = answer(
        &server,
        "/mutate",
        rollout(fault.workload, agent),
        hang_guard,
    )
    .await;
    if mutated["allowed"] != true {
        return Err(format!("/mutate did not admit: {mutated:#}"));
    }
    result
}

/// The control of a row: no fault, so admitted without a warning.
async fn control(fault: &Fault) -> Result<(), String> {
    let (url, workload, errors) = &fault.control;
    for on_error in ON_ERRORS {
        let (_, source) = live(url, Duration::from_millis(1));
        let server = TlsServer::start(guard_with(&policy(on_error, TIMEOUT, errors), source)).await;
        for agent in [true, false] {
            let response = answer(
                &server,
                "/validate",
                rollout(workload, agent),
                Duration::from_secs(TIMEOUT_SECS + 3),
            )
            .await;
            if response["allowed"] != true || !warnings(&response).is_empty() {
                return Err(format!(
                    "control of {} ({on_error}, agent {agent}) is not a clean admission: {response:#}",
                    fault.name
                ));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_under_every_on_error_follows_the_policy_and_names_the_cause() {
    let prometheus = shared();
    let direct = prometheus.url.clone();
    let target = prometheus.address();

    // Prometheus down: a harness of its own, checked working, then stopped.
    let stopped = Harness::start(&harness_dir(tmp(), "fault-matrix-down"));
    let down_url = stopped.url.clone();
    let down_control = (down_url.clone(), "healthy", ERRORS);
    control(&Fault {
        name: "down (before the stop)",
        url: down_url.clone(),
        workload: "healthy",
        errors: ERRORS,
        timeout: (TIMEOUT, TIMEOUT_SECS),
        cause: "",
        short_cause: "",
        control: down_control,
    })
    .await
    .expect("the harness to be stopped answers first");
    stopped.stop();

    let slow = delaying_proxy(target, Duration::from_secs(30)).await;
    let clean = || (direct.clone(), "healthy", ERRORS);
    let row = |name, url, cause, short_cause| Fault {
        name,
        url,
        workload: "healthy",
        errors: ERRORS,
        timeout: (TIMEOUT, TIMEOUT_SECS),
        cause,
        short_cause,
        control: clean(),
    };
    let faults = vec![
        row(
            "down",
            down_url,
            "connection refused by http://127.0.0.1:",
            "connection refused by http://127.0.0.1:",
        ),
        Fault {
            timeout: (SLOW_TIMEOUT, SLOW_TIMEOUT_SECS),
            ..row(
                "slow",
                slow,
                "no answer within the 1s timeout",
                "no answer within the 1s timeout",
            )
        },
        row(
            "5xx: 503 from an overloaded Prometheus",
            fault_proxy(target, Garbage::Overloaded, None).await,
            "Prometheus error (HTTP 503, unavailable): too many concurrent queries",
            "HTTP 503",
        ),
        row(
            "5xx: 502 HTML from a gateway",
            fault_proxy(target, Garbage::BadGateway, None).await,
            "HTTP 502 text/html instead of JSON: 502 Bad Gateway",
            "HTTP 502 text/html",
        ),
        row(
            "5xx: 500 on the 30d queries only",
            fault_proxy(target, Garbage::Internal, Some("[30d]")).await,
            // Both 30d queries fail the same way, so the message names the cause but not
            // the queries (src/slo/source.rs describe_failures compares the failures only).
            "HTTP 500 text/plain instead of JSON: upstream exploded",
            "HTTP 500",
        ),
        row(
            "garbage: an SSO login page",
            fault_proxy(target, Garbage::LoginPage, None).await,
            "HTTP 200 text/html instead of JSON: Sign in - Example SSO",
            "HTTP 200 text/html",
        ),
        row(
            "garbage: truncated JSON",
            fault_proxy(target, Garbage::TruncatedJson, None).await,
            "bad JSON from Prometheus: EOF while parsing",
            "bad JSON from Prometheus",
        ),
        Fault {
            workload: "idle",
            errors: ERRORS_VIA_RATIO,
            control: (direct.clone(), "healthy", ERRORS_VIA_RATIO),
            ..row(
                "NaN (0/0 of an idle service)",
                direct.clone(),
                "no data: errors over 30d: NaN",
                "no data: errors over 30d: NaN",
            )
        },
        Fault {
            errors: ERRORS_NO_SERIES,
            control: (direct.clone(), "healthy", ERRORS_NO_SERIES_FIXED),
            ..row(
                "empty result (no 5xx series)",
                direct.clone(),
                "no data: errors over 30d: no series",
                "no data: errors over 30d: no series",
            )
        },
        Fault {
            workload: "does-not-exist",
            ..row(
                "stale (no sample in the lookback)",
                direct.clone(),
                "stale data: no sample of the SLO's series in Prometheus's last 5 minutes",
                "stale data",
            )
        },
    ];

    for fault in &faults {
        control(fault).await.expect("the row's control admits");
    }

    let cells: Vec<(&Fault, &'static str, bool)> = faults
        .iter()
        .flat_map(|fault| {
            ON_ERRORS
                .into_iter()
                .flat_map(move |on_error| [true, false].map(|agent| (fault, on_error, agent)))
        })
        .collect();
    let results: Vec<Cell> = futures::stream::iter(cells)
        .map(|(fault, on_error, agent)| async move {
            Cell {
                fault: fault.name,
                on_error,
                agent,
                outcome: judge(fault, on_error, agent).await,
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;

    let mut failures = Vec::new();
    for cell in &results {
        let who = if cell.agent { "agent " } else { "person" };
        match &cell.outcome {
            Ok(what) => println!("{:<38} {:<11} {who}  {what}", cell.fault, cell.on_error),
            Err(error) => {
                println!(
                    "{:<38} {:<11} {who}  FAILED: {error}",
                    cell.fault, cell.on_error
                );
                failures.push(format!(
                    "{} / onError {} / {who}: {error}",
                    cell.fault, cell.on_error
                ));
            }
        }
    }
    assert_eq!(results.len(), faults.len() * ON_ERRORS.len() * 2);
    assert!(
        failures.is_empty(),
        "{} of {} cells failed:\n{}",
        failures.len(),
        results.len(),
        failures.join("\n")
    );
}
