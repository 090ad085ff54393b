//! The machine and the processes the bench starts: CPU pinning and SCHED_FIFO, memory
//! and CPU time from /proc, the servers under test with their logs, and certificates.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::die;

pub(crate) use slo_guard_testkit::sched::{pin_to, real_time_fifo, status_kib};

/// CPU time and run-queue wait of a process, summed over its threads
/// (`/proc/<pid>/task/*/schedstat`), in seconds. The wait is time a thread was runnable
/// but not running: CPU taken by someone else.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    pub(crate) cpu: f64,
    pub(crate) wait: f64,
}

pub(crate) fn usage(pid: Option<u32>) -> Option<Usage> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}/task"),
        None => "/proc/self/task".to_string(),
    };
    let mut total = Usage::default();
    for entry in std::fs::read_dir(dir).ok()? {
        let Ok(entry) = entry else { continue };
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        let mut fields = text
            .split_whitespace()
            .map(|f| f.parse::<f64>().unwrap_or(0.0));
        total.cpu += fields.next().unwrap_or(0.0) / 1e9;
        total.wait += fields.next().unwrap_or(0.0) / 1e9;
    }
    Some(total)
}

pub(crate) fn used_since(pid: Option<u32>, before: Option<Usage>) -> Option<Usage> {
    let (now, before) = (usage(pid)?, before?);
    Some(Usage {
        cpu: now.cpu - before.cpu,
        wait: now.wait - before.wait,
    })
}

/// Steal time of the whole machine (`/proc/stat`): CPU the hypervisor gave to others.
pub(crate) fn steal() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: f64 = line.split_whitespace().nth(8)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(Duration::from_secs_f64(ticks / per_second))
}

pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A server process this bench started. Its stderr (slo-guard's JSON log, one line per
/// decision) is drained by a thread that counts lines and keeps the few it needs.
pub(crate) struct Server {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) log: Arc<LogTap>,
}

#[derive(Default)]
pub(crate) struct LogTap {
    pub(crate) lines: AtomicU64,
    pub(crate) kept: Mutex<Vec<String>>,
    pub(crate) tail: Mutex<Vec<String>>,
}

impl Server {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn stop(mut self) {
        // SAFETY: kill with a pid of a child we own.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
            }
        }
    }

    pub(crate) fn ready_ms_logged(&self) -> Option<u64> {
        let kept = self.log.kept.lock().unwrap();
        let line = kept.iter().find(|l| l.contains("\"message\":\"ready\""))?;
        let after = &line[line.find("\"ready_ms\":")? + 11..];
        after
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    }
}

pub(crate) fn spawn_logged(
    name: &'static str,
    mut command: Command,
    cpu: Option<usize>,
    addr: SocketAddr,
) -> Server {
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    if let Some(cpu) = cpu {
        use std::os::unix::process::CommandExt;
        // SAFETY: only sched_setaffinity, async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(move || pin_to(cpu));
        }
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| die(&format!("cannot start {name}: {e}")));
    let stderr = child.stderr.take().expect("piped stderr");
    let log = Arc::new(LogTap::default());
    let tap = log.clone();
    std::thread::spawn(move || {
        let mut reader = BufReader::with_capacity(1 << 16, stderr);
        let mut line = Vec::with_capacity(1024);
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let n = tap.lines.fetch_add(1, Ordering::Relaxed);
                    let keep = n < 64 || !line.windows(10).any(|w| w == b"\"decision\"");
                    if keep {
                        let text = String::from_utf8_lossy(&line).trim_end().to_string();
                        let mut kept = tap.kept.lock().unwrap();
                        if kept.len() < 256 {
                            kept.push(text.clone());
                        }
                        let mut tail = tap.tail.lock().unwrap();
                        tail.push(text);
                        if tail.len() > 20 {
                            tail.remove(0);
                        }
                    }
                }
            }
        }
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
    });
    Server {
        name,
        child,
        addr,
        log,
    }
}

pub(crate) struct Certs {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

pub(crate) fn make_certs(bin: &Path) -> Certs {
    let dir = tempfile::tempdir().unwrap_or_else(|e| die(&format!("tempdir: {e}")));
    let out = dir.path().join("certs");
    let status = Command::new(bin)
        .args(["certs", "--out-dir"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| die(&format!("{}: {e}", bin.display())));
    if !status.success() {
        die(&format!("slo-guard certs failed: {status}"));
    }
    Certs {
        ca: out.join("ca.crt"),
        cert: out.join("tls.crt"),
        key: out.join("tls.key"),
        _dir: dir,
    }
}
