//! The spending limit of one endpoint: costs per request and per 1000 tokens
//! add up over fixed windows (`window_s`, counted from start-up); near the
//! limit a warning, at the limit requests are refused until the next window.
//! Requests in flight hold a reservation of their estimated cost, so
//! concurrent requests cannot together overshoot the limit. Shared through a
//! [`SpendLedger`], windows are aligned to the Unix epoch (so that every
//! process agrees on them) and what the other processes of the group spent
//! (and this one before a restart) counts too.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use governor::clock::{Clock, Reference};

use crate::cloud::config::BudgetConfig;
use crate::cloud::ledger::SpendLedger;

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
    /// Estimated cost of requests in flight.
    reserved: f64,
    warned: bool,
}

/// The estimated cost of a request in flight; released when dropped
/// unless [`Reservation::settle`]d with the actual cost.
#[derive(Debug)]
pub struct Reservation<'a, C: Clock> {
    budget: &'a Budget<C>,
    index: u64,
    amount: f64,
    done: bool,
}

impl<C: Clock> Reservation<'_, C> {
    /// Replaces the reservation by the actual cost.
    pub fn settle(mut self, cost: f64) -> BudgetLevel {
        self.release();
        self.budget.spend(cost)
    }

    fn release(&mut self) {
        if !self.done {
            self.done = true;
            let (mut w, _) = self.budget.current();
            if w.index == self.index {
                w.reserved = (w.reserved - self.amount).max(0.0);
            }
        }
    }
}

impl<C: Clock> Drop for Reservation<'_, C> {
    fn drop(&mut self) {
        self.release();
    }
}

/// A budget on clock `C`.
#[derive(Debug)]
pub struct Budget<C: Clock> {
    config: BudgetConfig,
    clock: C,
    start: C::Instant,
    window: Mutex<Window>,
    /// Where the group's spend is shared.
    shared: OnceLock<Shared>,
}

/// A budget's place in a [`SpendLedger`].
#[derive(Debug)]
struct Shared {
    ledger: Arc<SpendLedger>,
    /// The endpoint's name in the ledger.
    endpoint: String,
    /// Time since the Unix epoch at the budget's start.
    epoch: Duration,
}

impl<C: Clock> Budget<C> {
    /// A fresh budget; the first window starts now.
    pub fn new(config: BudgetConfig, clock: C) -> Self {
        let start = clock.now();
        Budget {
            config,
            clock,
            start,
            window: Mutex::new(Window { index: 0, spent: 0.0, reserved: 0.0, warned: false }),
            shared: OnceLock::new(),
        }
    }

    /// Counts the spend that other processes record in `ledger` under
    /// `endpoint` against this budget, records this one's there, and aligns
    /// the windows to the Unix epoch; `now` is the time since the epoch now.
    /// Call before the first request; only the first call takes effect.
    pub fn share_through(&self, ledger: Arc<SpendLedger>, endpoint: &str, now: Duration) {
        let since: Duration = self.clock.now().duration_since(self.start).into();
        let epoch = now.saturating_sub(since);
        let _ = self.shared.set(Shared { ledger, endpoint: endpoint.to_string(), epoch });
    }

    /// What the other processes spent in window `index`.
    fn others(&self, index: u64) -> f64 {
        let len = self.config.window_s.max(1);
        self.shared.get().map_or(0.0, |s| s.ledger.others(&s.endpoint, index * len, len))
    }

    fn window_len(&self) -> Duration {
        Duration::from_secs(self.config.window_s.max(1))
    }

    /// The current window, rolled over if its time is up; and the time until
    /// the next one.
    fn current(&self) -> (std::sync::MutexGuard<'_, Window>, Duration) {
        let since: Duration = self.clock.now().duration_since(self.start).into();
        let since = since + self.shared.get().map_or(Duration::ZERO, |s| s.epoch);
        let len = self.window_len();
        let index = (since.as_nanos() / len.as_nanos()) as u64;
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.index != index {
            *w = Window { index, spent: 0.0, reserved: 0.0, warned: false };
        }
        let next = Duration::from_secs(self.config.window_s.max(1).saturating_mul(index + 1));
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
        if w.spent + self.others(w.index) >= self.config.limit {
            Err(until_next)
        } else {
            Ok(())
        }
    }

    /// Reserves `estimate` for a request about to be sent: refused (with
    /// the time until the next window) when what is spent plus what is in
    /// flight plus `estimate` would pass the limit.
    pub fn reserve(&self, estimate: f64) -> Result<Reservation<'_, C>, Duration> {
        let (mut w, until_next) = self.current();
        // A relative tolerance, so that n × cost reaches a limit of n × cost.
        let limit = self.config.limit * (1.0 + 1e-9);
        let spent = w.spent + self.others(w.index);
        if spent >= self.config.limit || spent + w.reserved + estimate > limit {
            return Err(until_next);
        }
        w.reserved += estimate;
        Ok(Reservation { budget: self, index: w.index, amount: estimate, done: false })
    }

    /// Adds `cost` to the current window.
    pub fn spend(&self, cost: f64) -> BudgetLevel {
        let (mut w, _) = self.current();
        w.spent += cost;
        if let Some(s) = self.shared.get() {
            let len = self.config.window_s.max(1);
            s.ledger.record(&s.endpoint, w.index * len, len, w.spent);
        }
        let spent = w.spent + self.others(w.index);
        if spent >= self.config.limit {
            BudgetLevel::Exhausted
        } else if !w.warned && spent >= self.config.limit * self.config.warn_fraction {
            w.warned = true;
            BudgetLevel::CrossedWarning
        } else {
            BudgetLevel::Ok
        }
    }

    /// Spent in the current window, by this process and (with a ledger)
    /// the others.
    pub fn spent(&self) -> f64 {
        let w = self.current().0;
        w.spent + self.others(w.index)
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

    #[test]
    fn requests_in_flight_cannot_overshoot_the_limit() {
        let (b, clock) = budget();
        // Ten requests of cost 1 may be in flight at once against a limit of 10…
        let held: Vec<_> = (0..10).map(|_| b.reserve(1.0).expect("within the limit")).collect();
        // …but not an eleventh, though nothing is spent yet.
        assert_eq!(b.spent(), 0.0);
        assert!(b.reserve(1.0).is_err());
        // A failed request releases its reservation without spending.
        let mut held = held.into_iter();
        drop(held.next());
        let again = b.reserve(1.0).expect("released room");
        // Settling spends the actual cost, which may differ from the estimate.
        assert_eq!(again.settle(0.5), BudgetLevel::Ok);
        assert_eq!(b.spent(), 0.5);
        assert!(b.reserve(0.5).is_ok(), "0.5 spent + 9 in flight + 0.5 = 10");
        for r in held {
            r.settle(1.0);
        }
        assert_eq!(b.spent(), 9.5);
        assert!(b.reserve(1.0).is_err());
        // A new window starts empty, and a reservation from the old one
        // does not count against it.
        let old = b.reserve(0.5).unwrap();
        clock.advance(Duration::from_secs(60));
        assert_eq!(old.settle(0.5), BudgetLevel::Ok);
        assert_eq!(b.spent(), 0.5);
        assert!(b.reserve(9.5).is_ok());
    }

    #[test]
    fn windows_align_to_the_epoch_and_a_ledger_adds_the_others_spend() {
        let dir = tempfile::tempdir().unwrap();
        let clock = FakeRelativeClock::default();
        let cfg = BudgetConfig {
            cost_per_request: 1.0,
            cost_per_1k_tokens: 0.0,
            limit: 10.0,
            window_s: 60,
            warn_fraction: 0.8,
            on_exhausted: OnExhausted::Fallback,
        };
        // 50 s into a window: the next one is 10 s away.
        let start = crate::cloud::ledger::now().as_secs() / 60 * 60;
        let b = Budget::new(cfg.clone(), clock.clone());
        // Another process (or this one before a restart) spent 8.
        let other = SpendLedger::open(&dir.path().into(), "other").unwrap();
        other.record("cloud", start, 60, 8.0);
        other.sync();
        b.share_through(SpendLedger::open(&dir.path().into(), "me").unwrap(), "cloud", Duration::from_secs(start + 50));
        assert_eq!(b.spent(), 8.0);
        let held = b.reserve(2.0).expect("8 + 2 is within the limit");
        assert!(b.reserve(1.0).is_err(), "8 spent elsewhere + 2 in flight");
        assert_eq!(held.settle(2.0), BudgetLevel::Exhausted);
        assert_eq!(b.check(), Err(Duration::from_secs(10)));
        // The next window starts empty for everyone.
        clock.advance(Duration::from_secs(10));
        assert!(b.check().is_ok());
        assert_eq!(b.spent(), 0.0);
        // This process's own spend reached the ledger for the others.
        b.shared.get().unwrap().ledger.sync();
        other.sync();
        assert_eq!(other.others("cloud", start, 60), 2.0);
    }
}
