//! Where and how the benches' threads run: CPU pinning, scheduling policies, timer slack,
//! a fixed-rate schedule kept by a thread of its own, and a process's memory from /proc. Benchmarks on a shared 2-core machine need these
//! to measure the server rather than their neighbours.

#![allow(unsafe_code)]

use std::time::{Duration, Instant};

/// Keeps the calling thread, and the threads and processes it starts afterwards, on
/// `cpu`. Async-signal-safe, so it may run between fork and exec (`pre_exec`).
pub fn pin_to(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in its bounds.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// SCHED_FIFO at priority 10 for the calling thread; threads and child processes started
/// afterwards inherit it. Other processes (a build, a fuzzer at nice 19) then never delay
/// a runnable client or server thread. The kernel's RT throttling still leaves them 5%.
/// Needs root.
pub fn real_time_fifo() -> std::io::Result<()> {
    set_policy(libc::SCHED_FIFO, 10)
}

/// SCHED_OTHER, the default policy, for the calling thread (which may have inherited
/// FIFO).
pub fn normal_priority() -> std::io::Result<()> {
    set_policy(libc::SCHED_OTHER, 0)
}

/// SCHED_IDLE for the calling thread: it runs only when nothing else on its CPU wants to.
/// Lowering a thread's policy needs no privilege.
pub fn idle_priority() -> std::io::Result<()> {
    set_policy(libc::SCHED_IDLE, 0)
}

fn set_policy(policy: libc::c_int, priority: libc::c_int) -> std::io::Result<()> {
    // SAFETY: sched_param is plain data; sched_setscheduler has no other preconditions.
    unsafe {
        let param = libc::sched_param {
            sched_priority: priority,
        };
        if libc::sched_setscheduler(0, policy, &param) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Lets `std::thread::sleep` wake within microseconds instead of the default 50 µs slack.
pub fn tight_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// A `/proc/<pid>/status` field given in KiB (`VmRSS:`, `VmHWM:`).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|line| line.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// One request of a fixed-rate schedule, as the pacing thread released it.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    /// Its place in the schedule, from 0.
    pub seq: u64,
    /// When it was due: `start + seq × period`. Latency counts from here, so waiting for a
    /// connection or for the server counts (no coordinated omission).
    pub due: Instant,
    /// When the pacing thread sent it; later than `due` by the thread's own lateness.
    pub released: Instant,
}

/// Releases `total` jobs, `period` apart from `start`, into `jobs`, from a plain thread
/// that sleeps to each due time with 1 ns timer slack: tokio's timer wheel rounds to 1 ms,
/// which a steady rate of thousands a second cannot afford. Stops early when `jobs` is
/// closed.
pub fn pace(
    start: Instant,
    period: Duration,
    total: u64,
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        tight_timer_slack();
        for seq in 0..total {
            let due = start + period.mul_f64(seq as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let released = Instant::now();
            if jobs.send(Job { seq, due, released }).is_err() {
                break;
            }
        }
    })
}
