//! The spending limit of one endpoint: costs per request and per 1000 tokens
//! add up over fixed windows (`window_s`, counted from start-up); near the
//! limit a warning, at the limit requests are refused until the next window.

use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, Reference};

use crate::cloud::config::BudgetConfig;

/// Where a budget stands after a spend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BudgetLevel {
    /// Below the warning fraction.
    Ok,
    /// This spend crossed the warning fraction (reported once per window).
    CrossedWarning,
    /// The limit is reached.
    Exhausted,
}

#[derive(Debug)]
struct Window {
    index: u64,
    spent: f64,
    warned: bool,
}

/// A budget on clock `C`.
#[derive(Debug)]
pub struct Budget<C: Clock> {
    config: BudgetConfig,
    clock: C,
    start: C::Instant,
    window: Mutex<Window>,
}

impl<C: Clock> Budget<C> {
    /// A fresh budget; the first window starts now.
    pub fn new(config: BudgetConfig, clock: C) -> Self {
        let start = clock.now();
        Budget { config, clock, start, window: Mutex::new(Window { index: 0, spent: 0.0, warned: false }) }
    }

    fn window_len(&self) -> Duration {
        Duration::from_secs(self.config.window_s.max(1))
    }

    /// The current window, rolled over if its time is up; and the time until
    /// the next one.
    fn current(&self) -> (std::sync::MutexGuard<'_, Window>, Duration) {
        let since: Duration = self.clock.now().duration_since(self.start).into();
        let len = self.window_len();
        let index = (since.as_nanos() / len.as_nanos()) as u64;
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.index != index {
            *w = Window { index, spent: 0.0, warned: false };
        }
        let next = len * (index as u32 + 1);
        (w, next.saturating_sub(since))
    }

    /// The cost of a request that used `tokens` tokens.
    pub fn cost(&self, tokens: u64) -> f64 {
        self.config.cost_per_request + self.config.cost_per_1k_tokens * tokens as f64 / 1000.0
    }

    /// Whether a request may be sent now; when not, the time until the next
    /// window.
    pub fn check(&self) -> Result<(), Duration> {
        let (w, until_next) = self.current();
        if w.spent >= self.config.limit {
            Err(until_next)
        } else {
            Ok(())
        }
    }

    /// Adds `cost` to the current window.
    pub fn spend(&self, cost: f64) -> BudgetLevel {
        let (mut w, _) = self.current();
        w.spent += cost;
        if w.spent >= self.config.limit {
            BudgetLevel::Exhausted
        } else if !w.warned && w.spent >= self.config.limit * self.config.warn_fraction {
            w.warned = true;
            BudgetLevel::CrossedWarning
        } else {
            BudgetLevel::Ok
        }
    }

    /// Spent in the current window.
    pub fn spent(&self) -> f64 {
        self.current().0.spent
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;
    use crate::cloud::config::OnExhausted;

    fn budget() -> (Budget<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let cfg = BudgetConfig {
            cost_per_request: 1.0,
            cost_per_1k_tokens: 2.0,
            limit: 10.0,
            window_s: 60,
            warn_fraction: 0.8,
            on_exhausted: OnExhausted::Fallback,
        };
        (Budget::new(cfg, clock.clone()), clock)
    }

    #[test]
    fn warns_once_then_refuses_until_the_next_window() {
        let (b, clock) = budget();
        assert_eq!(b.cost(500), 2.0);
        for _ in 0..7 {
            assert_eq!(b.spend(1.0), BudgetLevel::Ok);
        }
        assert_eq!(b.spend(1.0), BudgetLevel::CrossedWarning);
        assert_eq!(b.spend(1.0), BudgetLevel::Ok, "the warning comes once per window");
        assert!(b.check().is_ok());
        assert_eq!(b.spend(1.0), BudgetLevel::Exhausted);
        clock.advance(Duration::from_secs(15));
        assert_eq!(b.check(), Err(Duration::from_secs(45)));
        clock.advance(Duration::from_secs(45));
        assert!(b.check().is_ok());
        assert_eq!(b.spent(), 0.0);
    }
}
