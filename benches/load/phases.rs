//! The measured phases: saturation (one request in flight per connection, as fast as
//! they go) and steady (a fixed schedule), with the server's memory and CPU alongside.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;

use crate::client::{BoxError, Requests, Sender, Tls, connect, exchange};
use crate::die;
use crate::options::{Mode, Options, Proto};
use crate::system::{Usage, status_kib, steal, usage, used_since};
use slo_guard_testkit::sched::{Job, pace};

pub(crate) struct Sample {
    /// Completion minus the reference instant (send start, or scheduled send time).
    pub(crate) latency: Duration,
    /// Steady mode: actual send start minus scheduled time.
    pub(crate) lag: Duration,
    /// Steady mode: when the dispatcher released the request minus its scheduled time.
    pub(crate) dispatch: Duration,
}

#[derive(Default)]
pub(crate) struct Outcome {
    pub(crate) samples: Vec<Sample>,
    /// Answered 200 within the measured window (the throughput).
    pub(crate) completed: u64,
    /// Answered 200 at any time, warm-up included: every connection answers at least
    /// once whatever the timing, so the smoke check on it cannot fail on a slow machine.
    pub(crate) answered: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) not_allowed: u64,
}

impl Outcome {
    pub(crate) fn merge(&mut self, other: Outcome) {
        self.samples.extend(other.samples);
        self.completed += other.completed;
        self.answered += other.answered;
        self.errors += other.errors;
        self.not_allowed += other.not_allowed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub(crate) fn record(
        &mut self,
        result: Result<(u16, Bytes), BoxError>,
        uid: &str,
        check: bool,
    ) -> bool {
        match result {
            Ok((200, body)) => {
                self.answered += 1;
                // Only a few bodies are read closely; a review is "allowed" when the body
                // carries the request's uid and `"allowed":true`.
                if check {
                    let text = String::from_utf8_lossy(&body);
                    if !(text.contains(uid) && text.contains("\"allowed\":true")) {
                        self.not_allowed += 1;
                        if self.first_error.is_none() {
                            self.first_error = Some(format!("not allowed: {}", clip(&text)));
                        }
                    }
                }
                true
            }
            Ok((status, body)) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(format!(
                        "HTTP {status}: {}",
                        clip(&String::from_utf8_lossy(&body))
                    ));
                }
                false
            }
            Err(error) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(error.to_string());
                }
                false
            }
        }
    }
}

pub(crate) fn clip(text: &str) -> String {
    text.chars().take(300).collect()
}

pub(crate) struct PhaseResult {
    pub(crate) server: &'static str,
    pub(crate) proto: Proto,
    pub(crate) mode: Mode,
    pub(crate) connections: usize,
    pub(crate) offered: Option<f64>,
    pub(crate) elapsed: Duration,
    pub(crate) outcome: Outcome,
    pub(crate) server_cpu: Option<Usage>,
    pub(crate) client_cpu: Option<Usage>,
    /// CPU time the hypervisor took from this VM during the phase (all CPUs).
    pub(crate) steal: Option<Duration>,
    pub(crate) rss_peak_kib: Option<u64>,
    pub(crate) missed: u64,
}

pub(crate) const WARMUP: u8 = 0;
pub(crate) const MEASURE: u8 = 1;
pub(crate) const STOP: u8 = 2;

pub(crate) struct Target<'a> {
    pub(crate) name: &'static str,
    pub(crate) addr: SocketAddr,
    pub(crate) pid: Option<u32>,
    pub(crate) tls: &'a Tls,
}

pub(crate) async fn open_connections(target: &Target<'_>, proto: Proto, n: usize) -> Vec<Sender> {
    let attempts = (0..n).map(|_| connect(target.tls, target.addr, proto));
    futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|e| die(&format!("{}: connect ({}): {e}", target.name, proto.name())))
        })
        .collect()
}

/// Samples the server's VmRSS every 50 ms until `stop`; the peak seen.
pub(crate) fn rss_sampler(
    pid: Option<u32>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Option<u64>> {
    tokio::spawn(async move {
        let pid = pid?;
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Some(kib) = status_kib(pid, "VmRSS:") {
                peak = peak.max(kib);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(kib) = status_kib(pid, "VmRSS:") {
            peak = peak.max(kib);
        }
        Some(peak)
    })
}

/// One keep-alive connection of a phase, and what was seen on it.
pub(crate) struct Connection {
    pub(crate) sender: Sender,
    pub(crate) tls: Tls,
    pub(crate) addr: SocketAddr,
    pub(crate) proto: Proto,
    pub(crate) uid: Arc<str>,
    pub(crate) index: usize,
    /// Requests sent so far, counted from `index`.
    pub(crate) n: usize,
    pub(crate) outcome: Outcome,
}

/// One request on a [`Connection`]: whether it was answered as expected, when it was sent
/// and answered, and whether the connection is still usable.
pub(crate) struct Exchanged {
    pub(crate) ok: bool,
    pub(crate) sent: Instant,
    pub(crate) done: Instant,
    pub(crate) connected: bool,
}

impl Connection {
    pub(crate) fn new(
        target: &Target<'_>,
        proto: Proto,
        uid: &Arc<str>,
        index: usize,
        sender: Sender,
    ) -> Self {
        Self {
            sender,
            tls: target.tls.clone(),
            addr: target.addr,
            proto,
            uid: uid.clone(),
            index,
            n: index,
            outcome: Outcome::default(),
        }
    }

    /// Sends `request` and records the answer, read in full for the first few and every
    /// 97th. A failed exchange may have broken the connection: a new one replaces it.
    pub(crate) async fn send(&mut self, request: Request<Full<Bytes>>) -> Exchanged {
        let sent = Instant::now();
        let result = exchange(&mut self.sender, request).await;
        let done = Instant::now();
        let check = self.n < self.index + 4 || self.n % 97 == 0;
        self.n += 1;
        let ok = self.outcome.record(result, &self.uid, check);
        let mut connected = true;
        if !ok {
            match connect(&self.tls, self.addr, self.proto).await {
                Ok(fresh) => self.sender = fresh,
                Err(_) => connected = false,
            }
        }
        Exchanged {
            ok,
            sent,
            done,
            connected,
        }
    }
}

/// The server's and this client's CPU time, the VM's steal time and the server's RSS peak
/// over a phase's measured part.
pub(crate) struct Meter {
    pub(crate) pid: Option<u32>,
    pub(crate) server_cpu: Option<Usage>,
    pub(crate) client_cpu: Option<Usage>,
    pub(crate) steal: Option<Duration>,
    pub(crate) stop_rss: Arc<AtomicBool>,
    pub(crate) rss: tokio::task::JoinHandle<Option<u64>>,
}

pub(crate) struct Metered {
    pub(crate) server_cpu: Option<Usage>,
    pub(crate) client_cpu: Option<Usage>,
    pub(crate) steal: Option<Duration>,
    pub(crate) rss_peak_kib: Option<u64>,
}

impl Meter {
    pub(crate) fn start(pid: Option<u32>) -> Self {
        let stop_rss = Arc::new(AtomicBool::new(false));
        Self {
            pid,
            rss: rss_sampler(pid, stop_rss.clone()),
            stop_rss,
            server_cpu: pid.and_then(|p| usage(Some(p))),
            client_cpu: usage(None),
            steal: steal(),
        }
    }

    pub(crate) async fn stop(self) -> Metered {
        let server_cpu = self.pid.and_then(|p| used_since(Some(p), self.server_cpu));
        let client_cpu = used_since(None, self.client_cpu);
        let steal = steal()
            .zip(self.steal)
            .map(|(now, before)| now.saturating_sub(before));
        self.stop_rss.store(true, Ordering::Relaxed);
        Metered {
            server_cpu,
            client_cpu,
            steal,
            rss_peak_kib: self.rss.await.ok().flatten(),
        }
    }
}

pub(crate) async fn saturation(
    target: &Target<'_>,
    proto: Proto,
    o: &Options,
    requests: &Arc<Requests>,
    uid: &Arc<str>,
) -> PhaseResult {
    let senders = open_connections(target, proto, o.connections).await;
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let mut tasks = Vec::new();
    for (index, sender) in senders.into_iter().enumerate() {
        let phase = phase.clone();
        let requests = requests.clone();
        let mut connection = Connection::new(target, proto, uid, index, sender);
        tasks.push(tokio::spawn(async move {
            loop {
                let before = phase.load(Ordering::Relaxed);
                if before == STOP {
                    break;
                }
                let request = requests.build(proto, connection.n);
                let exchanged = connection.send(request).await;
                if exchanged.ok && phase.load(Ordering::Relaxed) == MEASURE {
                    connection.outcome.completed += 1;
                    if before == MEASURE {
                        connection.outcome.samples.push(Sample {
                            latency: exchanged.done - exchanged.sent,
                            lag: Duration::ZERO,
                            dispatch: Duration::ZERO,
                        });
                    }
                }
                if !exchanged.connected {
                    break;
                }
            }
            connection.outcome
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(o.warmup)).await;
    let meter = Meter::start(target.pid);
    let started = Instant::now();
    phase.store(MEASURE, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(o.seconds)).await;
    phase.store(STOP, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let metered = meter.stop().await;
    let mut outcome = Outcome::default();
    for task in tasks {
        outcome.merge(task.await.expect("connection task"));
    }
    PhaseResult {
        server: target.name,
        proto,
        mode: Mode::Saturation,
        connections: o.connections,
        offered: None,
        elapsed,
        outcome,
        server_cpu: metered.server_cpu,
        client_cpu: metered.client_cpu,
        steal: metered.steal,
        rss_peak_kib: metered.rss_peak_kib,
        missed: 0,
    }
}

pub(crate) async fn steady(
    target: &Target<'_>,
    proto: Proto,
    o: &Options,
    requests: &Arc<Requests>,
    uid: &Arc<str>,
) -> PhaseResult {
    let senders = open_connections(target, proto, o.connections).await;
    let period = Duration::from_secs_f64(1.0 / o.rate);
    let warmup_jobs = (o.rate * o.warmup).round() as u64;
    let measured_jobs = (o.rate * o.seconds).round().max(1.0) as u64;
    let total = warmup_jobs + measured_jobs;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));

    let mut tasks = Vec::new();
    for (index, sender) in senders.into_iter().enumerate() {
        let rx = rx.clone();
        let requests = requests.clone();
        let mut connection = Connection::new(target, proto, uid, index, sender);
        tasks.push(tokio::spawn(async move {
            loop {
                let job = { rx.lock().await.recv().await };
                let Some(job) = job else { break };
                let request = requests.build(proto, job.seq as usize);
                let exchanged = connection.send(request).await;
                if job.seq >= warmup_jobs {
                    if exchanged.ok {
                        connection.outcome.completed += 1;
                    }
                    connection.outcome.samples.push(Sample {
                        latency: exchanged.done - job.due,
                        lag: exchanged.sent.saturating_duration_since(job.due),
                        dispatch: job.released.saturating_duration_since(job.due),
                    });
                }
                if !exchanged.connected {
                    break;
                }
            }
            connection.outcome
        }));
    }

    let start = Instant::now() + Duration::from_millis(20);
    let dispatcher = pace(start, period, total, tx);
    // Measuring starts with the first job after the warm-up.
    let measure_started = start + period.mul_f64(warmup_jobs as f64);
    tokio::time::sleep_until(measure_started.into()).await;
    let meter = Meter::start(target.pid);
    let mut outcome = Outcome::default();
    for task in tasks {
        outcome.merge(task.await.expect("connection task"));
    }
    let metered = meter.stop().await;
    dispatcher.join().expect("dispatcher");
    let elapsed = measure_started.elapsed();
    let missed = outcome.samples.iter().filter(|s| s.lag > period).count() as u64;
    PhaseResult {
        server: target.name,
        proto,
        mode: Mode::Steady,
        connections: o.connections,
        offered: Some(o.rate),
        elapsed,
        outcome,
        server_cpu: metered.server_cpu,
        client_cpu: metered.client_cpu,
        steal: metered.steal,
        rss_peak_kib: metered.rss_peak_kib,
        missed,
    }
}
