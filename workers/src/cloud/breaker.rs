//! The circuit breaker of one endpoint: closed → (failure_threshold
//! consecutive unhealthy failures) → open → (open_ms) → half-open, where one
//! probe at a time is let through → closed after `half_open_probes`
//! successes, or open again after a failure. The clock is injected.

use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, Reference};

use crate::cloud::config::BreakerConfig;

/// The breaker's state, as metrics, logs and the run summary show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Requests are refused until the open time has passed.
    Open,
    /// Probes are let through one at a time.
    HalfOpen,
}

impl BreakerState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// Gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

#[derive(Debug)]
enum Inner<I> {
    Closed { failures: u32 },
    Open { since: I },
    HalfOpen { probing: bool, successes: u32 },
}

/// A circuit breaker on clock `C`.
#[derive(Debug)]
pub struct CircuitBreaker<C: Clock> {
    config: BreakerConfig,
    clock: C,
    inner: Mutex<Inner<C::Instant>>,
    /// Times the circuit opened.
    opened: std::sync::atomic::AtomicU64,
}

/// Leave to send one request; report its outcome with
/// [`CircuitBreaker::record`].
#[derive(Debug, PartialEq, Eq)]
pub struct Permit {
    probe: bool,
}

impl<C: Clock> CircuitBreaker<C> {
    /// A closed breaker.
    pub fn new(config: BreakerConfig, clock: C) -> Self {
        CircuitBreaker { config, clock, inner: Mutex::new(Inner::Closed { failures: 0 }), opened: Default::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<C::Instant>> {
        // A panic while holding this lock leaves a consistent state: every
        // update is a single assignment.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state now (an open circuit whose time is up reads half-open).
    pub fn state(&self) -> BreakerState {
        let mut inner = self.lock();
        self.advance(&mut inner);
        match *inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// How long the circuit stays open from now, or `None` when requests
    /// may go (closed, or half-open with no probe out). Takes no permit.
    pub fn open_for(&self) -> Option<Duration> {
        let mut inner = self.lock();
        self.advance(&mut inner);
        match &*inner {
            Inner::Closed { .. } | Inner::HalfOpen { probing: false, .. } => None,
            Inner::HalfOpen { probing: true, .. } => Some(Duration::ZERO),
            Inner::Open { since } => {
                let open: Duration = self.clock.now().duration_since(*since).into();
                Some(Duration::from_millis(self.config.open_ms).saturating_sub(open))
            }
        }
    }

    /// How many times the circuit has opened.
    pub fn times_opened(&self) -> u64 {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn advance(&self, inner: &mut Inner<C::Instant>) {
        if let Inner::Open { since } = *inner {
            let open: Duration = self.clock.now().duration_since(since).into();
            if open >= Duration::from_millis(self.config.open_ms) {
                *inner = Inner::HalfOpen { probing: false, successes: 0 };
            }
        }
    }

    /// Leave to send, or how long until the circuit lets a probe through
    /// (zero when half-open with a probe already out).
    pub fn permit(&self) -> Result<Permit, Duration> {
        let mut inner = self.lock();
        self.advance(&mut inner);
        match &mut *inner {
            Inner::Closed { .. } => Ok(Permit { probe: false }),
            Inner::Open { since } => {
                let open: Duration = self.clock.now().duration_since(*since).into();
                Err(Duration::from_millis(self.config.open_ms).saturating_sub(open))
            }
            Inner::HalfOpen { probing, .. } => {
                if *probing {
                    Err(Duration::ZERO)
                } else {
                    *probing = true;
                    Ok(Permit { probe: true })
                }
            }
        }
    }

    /// Reports the outcome of a permitted request. `healthy` is false for
    /// failures that say the endpoint is broken (5xx, timeouts, connection
    /// errors after retries); client errors and rate limits count as
    /// healthy.
    pub fn record(&self, permit: Permit, healthy: bool) -> BreakerState {
        let mut inner = self.lock();
        self.advance(&mut inner);
        let next = match &mut *inner {
            Inner::Closed { failures } => {
                if healthy {
                    *failures = 0;
                    None
                } else {
                    *failures += 1;
                    (*failures >= self.config.failure_threshold).then(|| Inner::Open { since: self.clock.now() })
                }
            }
            // A request let through before the circuit opened: its outcome
            // says nothing new.
            Inner::Open { .. } => None,
            Inner::HalfOpen { probing, successes } => {
                if permit.probe {
                    *probing = false;
                }
                if !healthy {
                    Some(Inner::Open { since: self.clock.now() })
                } else if permit.probe {
                    *successes += 1;
                    (*successes >= self.config.half_open_probes).then_some(Inner::Closed { failures: 0 })
                } else {
                    None
                }
            }
        };
        if let Some(n) = next {
            if matches!(n, Inner::Open { .. }) {
                self.opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            *inner = n;
        }
        match *inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn breaker(threshold: u32, probes: u32) -> (CircuitBreaker<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let cfg = BreakerConfig { failure_threshold: threshold, open_ms: 1_000, half_open_probes: probes };
        (CircuitBreaker::new(cfg, clock.clone()), clock)
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let (b, _) = breaker(3, 1);
        for _ in 0..2 {
            let p = b.permit().unwrap();
            b.record(p, false);
        }
        // A success in between resets the count.
        let p = b.permit().unwrap();
        b.record(p, true);
        for _ in 0..2 {
            let p = b.permit().unwrap();
            assert_eq!(b.record(p, false), BreakerState::Closed);
        }
        let p = b.permit().unwrap();
        assert_eq!(b.record(p, false), BreakerState::Open);
        assert_eq!(b.permit(), Err(Duration::from_millis(1_000)));
        assert_eq!(b.times_opened(), 1);
    }

    #[test]
    fn half_open_lets_one_probe_through_and_closes_on_success() {
        let (b, clock) = breaker(1, 2);
        let p = b.permit().unwrap();
        b.record(p, false);
        clock.advance(Duration::from_millis(400));
        assert_eq!(b.permit(), Err(Duration::from_millis(600)));
        clock.advance(Duration::from_millis(600));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let probe = b.permit().unwrap();
        assert_eq!(b.permit(), Err(Duration::ZERO), "one probe at a time");
        assert_eq!(b.record(probe, true), BreakerState::HalfOpen, "two probes needed");
        let probe = b.permit().unwrap();
        assert_eq!(b.record(probe, true), BreakerState::Closed);
        assert!(b.permit().is_ok());
    }

    #[test]
    fn a_failed_probe_opens_again_for_the_full_time() {
        let (b, clock) = breaker(1, 1);
        let p = b.permit().unwrap();
        b.record(p, false);
        clock.advance(Duration::from_millis(1_000));
        let probe = b.permit().unwrap();
        assert_eq!(b.record(probe, false), BreakerState::Open);
        assert_eq!(b.permit(), Err(Duration::from_millis(1_000)));
        assert_eq!(b.times_opened(), 2);
    }

    #[test]
    fn healthy_client_errors_never_open() {
        let (b, _) = breaker(2, 1);
        for _ in 0..50 {
            let p = b.permit().unwrap();
            b.record(p, true);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
