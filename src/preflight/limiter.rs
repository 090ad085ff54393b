//! A fixed window of requests per caller: a preflight is cheap but not free (a
//! TokenReview, SubjectAccessReviews, a read of the workload, decisions), and an agent
//! polling it in a loop must not crowd out admission.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::PreflightError;

/// Callers tracked at most; past it, callers whose window has ended are forgotten.
const MAX_TRACKED: usize = 10_000;

/// Preflight requests per caller in a fixed window, so one caller cannot make slo-guard
/// ask the apiserver and Prometheus without bound.
pub struct RateLimiter {
    per_window: u32,
    window: Duration,
    /// Caller -> (start of its window, requests in it).
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimiter {
    /// `per_window` requests per caller in each `window`.
    pub fn new(per_window: u32, window: Duration) -> Self {
        Self {
            per_window,
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request from `caller`, or says when it may ask again.
    pub fn admit(&self, caller: &str) -> Result<(), PreflightError> {
        self.admit_at(caller, Instant::now())
    }

    /// [`RateLimiter::admit`] at `now`, for tests.
    pub fn admit_at(&self, caller: &str, now: Instant) -> Result<(), PreflightError> {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if windows.len() >= MAX_TRACKED && !windows.contains_key(caller) {
            let window = self.window;
            windows.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = windows.entry(caller.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.per_window {
            let left = self.window.saturating_sub(now.duration_since(entry.0));
            // Retry-After is in whole seconds; rounding down would invite an early retry.
            let retry_after_secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            return Err(PreflightError::RateLimited {
                caller: caller.to_string(),
                retry_after_secs: retry_after_secs.max(1),
            });
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_past_the_rate_waits_for_the_window() {
        let limiter = RateLimiter::new(3, Duration::from_secs(60));
        let start = Instant::now();
        for _ in 0..3 {
            limiter.admit_at("agent", start).expect("within the rate");
        }
        match limiter.admit_at("agent", start + Duration::from_millis(30_500)) {
            Err(PreflightError::RateLimited {
                retry_after_secs, ..
            }) => assert_eq!(retry_after_secs, 30),
            other => panic!("expected a refusal, got {other:?}"),
        }
        limiter
            .admit_at("another", start)
            .expect("each caller has its own rate");
        limiter
            .admit_at("agent", start + Duration::from_secs(60))
            .expect("a new window");
    }
}
