//! Rate limits of one endpoint: requests per second and tokens per minute,
//! GCRA through `governor`, on an injected clock. One limiter is shared by
//! every request to the endpoint. Cells are taken before a request is sent,
//! so the limit is never exceeded; waiting for a cell is what turns excess
//! demand into backpressure.

use std::num::NonZeroU32;
use std::sync::RwLock;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::cloud::config::RateLimitConfig;

type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The governor limiters for one share of the endpoint's quota.
struct Limiters<C: Clock> {
    /// `None`: no request limit. With a share of 0, `Some(None)`: nothing
    /// may be sent.
    requests: Option<Option<Direct<C>>>,
    tokens: Option<(Direct<C>, u32)>,
    share: f64,
}

/// Requests-per-second and tokens-per-minute limiters of one endpoint.
///
/// A process in a consumer group uses a share of the endpoint's quota
/// ([`EndpointLimiter::set_share`]): the fraction of the input partitions
/// it owns. A partition has one owner at a time, so the shares of a group
/// add up to at most 1.
pub struct EndpointLimiter<C: Clock> {
    config: RateLimitConfig,
    inner: RwLock<Limiters<C>>,
    clock: C,
}

impl<C: Clock + Clone> std::fmt::Debug for EndpointLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointLimiter")
            .field("requests", &self.config.requests_per_second)
            .field("tokens", &self.config.tokens_per_minute)
            .field("share", &self.share())
            .finish()
    }
}

/// The default burst: 50 ms worth of requests, at least 1. A timer wakes a
/// waiting request up to a millisecond late; with no slack at all (burst 1)
/// each late wake-up is lost for good, which costs a fifth of the rate at
/// 200 requests/s. With 50 ms of slack the lateness is made up, and no window
/// sees more than its share plus 50 ms worth.
pub fn default_burst(rps: f64) -> u32 {
    (rps * 0.05).ceil().clamp(1.0, f64::from(u32::MAX)) as u32
}

/// How long a caller with a share of 0 waits before asking again.
const NO_SHARE_WAIT: Duration = Duration::from_millis(100);

impl<C: Clock + Clone> EndpointLimiter<C> {
    /// The limiters `config` asks for (validated: positive values), with
    /// the whole quota.
    pub fn new(config: &RateLimitConfig, clock: C) -> Self {
        let inner = RwLock::new(Self::build(config, 1.0, &clock));
        EndpointLimiter { config: config.clone(), inner, clock }
    }

    /// Limiters for `share` (0–1) of `config`: the rate, the burst and the
    /// tokens per minute scaled by it (a burst and a token bucket of at
    /// least 1).
    fn build(config: &RateLimitConfig, share: f64, clock: &C) -> Limiters<C> {
        let requests = config.requests_per_second.filter(|r| *r > 0.0 && r.is_finite()).map(|rps| {
            let rate = rps * share;
            if rate <= 0.0 {
                return None;
            }
            let burst = f64::from(config.burst.unwrap_or_else(|| default_burst(rps)).max(1));
            let burst = NonZeroU32::new((burst * share).ceil().clamp(1.0, f64::from(u32::MAX)) as u32)
                .unwrap_or(NonZeroU32::MIN);
            let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
            let quota = Quota::with_period(period).unwrap_or(Quota::per_second(NonZeroU32::MAX)).allow_burst(burst);
            Some(RateLimiter::direct_with_clock(quota, clock.clone()))
        });
        let tokens = config.tokens_per_minute.filter(|t| *t > 0).and_then(|tpm| {
            // OpenAI's token limits are per-minute buckets: a minute's worth
            // may be spent at once.
            let tpm = NonZeroU32::new((f64::from(tpm) * share).ceil().max(1.0) as u32)?;
            Some((RateLimiter::direct_with_clock(Quota::per_minute(tpm), clock.clone()), tpm.get()))
        });
        Limiters { requests, tokens, share }
    }

    /// Uses `share` (clamped to 0–1) of the quota from now on. Limiters are
    /// rebuilt only when the share changes; a rebuilt limiter starts with
    /// its (scaled) burst available.
    pub fn set_share(&self, share: f64) {
        let share = if share.is_finite() { share.clamp(0.0, 1.0) } else { 1.0 };
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if (inner.share - share).abs() > 1e-12 {
            *inner = Self::build(&self.config, share, &self.clock);
        }
    }

    /// The share of the quota in use.
    pub fn share(&self) -> f64 {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).share
    }

    /// Takes `tokens` token cells now, or says how long until they could be
    /// taken. A request larger than a minute's tokens is let through alone
    /// (as the whole bucket).
    pub fn try_tokens(&self, tokens: u32) -> Result<(), Duration> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let Some((limiter, per_minute)) = &inner.tokens else { return Ok(()) };
        let n = NonZeroU32::new(tokens.clamp(1, *per_minute)).unwrap_or(NonZeroU32::MIN);
        match limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(self.clock.now())),
            Err(_) => Ok(()), // n ≤ burst by construction
        }
    }

    /// Takes one request cell now, or says how long until one is free.
    pub fn try_request(&self) -> Result<(), Duration> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        match &inner.requests {
            None => Ok(()),
            Some(None) => Err(NO_SHARE_WAIT),
            Some(Some(limiter)) => limiter.check().map_err(|not_until| not_until.wait_time_from(self.clock.now())),
        }
    }
}

impl<C: Clock + Clone> EndpointLimiter<C> {
    /// Waits (real time) until `tokens` tokens and one request may go, and
    /// takes them.
    pub async fn acquire(&self, tokens: u32) {
        while let Err(wait) = self.try_tokens(tokens) {
            tokio::time::sleep(wait.max(Duration::from_micros(50))).await;
        }
        while let Err(wait) = self.try_request() {
            tokio::time::sleep(wait.max(Duration::from_micros(50))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    /// Simulates a caller with unlimited demand on a fake clock: it sends
    /// whenever the limiter lets it, else advances the clock by the wait
    /// the limiter names. Returns send times in ns.
    fn saturate(
        limiter: &EndpointLimiter<FakeRelativeClock>,
        clock: &FakeRelativeClock,
        horizon: Duration,
    ) -> Vec<u64> {
        saturate_late(limiter, clock, horizon, Duration::ZERO)
    }

    /// As `saturate`, but every wait ends `late` after the limiter's time,
    /// as a real timer's does.
    fn saturate_late(
        limiter: &EndpointLimiter<FakeRelativeClock>,
        clock: &FakeRelativeClock,
        horizon: Duration,
        late: Duration,
    ) -> Vec<u64> {
        let mut sent = Vec::new();
        let start = clock.now();
        loop {
            let now: Duration = clock.now().duration_since(start).into();
            if now >= horizon {
                return sent;
            }
            match limiter.try_request() {
                Ok(()) => sent.push(now.as_nanos() as u64),
                Err(wait) => clock.advance(wait.max(Duration::from_nanos(1)) + late),
            }
        }
    }

    use governor::clock::Reference;

    #[test]
    fn under_excess_demand_the_limit_is_used_and_never_exceeded() {
        for rps in [1.0, 7.5, 50.0, 333.0, 2_000.0] {
            let clock = FakeRelativeClock::default();
            let cfg = RateLimitConfig { requests_per_second: Some(rps), burst: None, tokens_per_minute: None };
            let limiter = EndpointLimiter::new(&cfg, clock.clone());
            let horizon = Duration::from_secs(20);
            let sent = saturate(&limiter, &clock, horizon);
            let allowed = rps * horizon.as_secs_f64();
            let used = sent.len() as f64 / allowed;
            assert!(used >= 0.95, "rps {rps}: used {used:.3} of the limit");
            // Every window of one second holds at most its share plus the
            // default burst a window may start with.
            let per_window = rps.floor() as usize + default_burst(rps) as usize;
            for (i, &t) in sent.iter().enumerate() {
                let in_window = sent[i..].iter().take_while(|&&u| u < t + 1_000_000_000).count();
                assert!(in_window <= per_window, "rps {rps}: {in_window} requests in 1 s from {t} ns");
            }
        }
    }

    #[test]
    fn late_timers_do_not_lose_rate_with_the_default_burst() {
        let horizon = Duration::from_secs(20);
        for rps in [20.0, 200.0, 1_000.0] {
            let clock = FakeRelativeClock::default();
            let cfg = RateLimitConfig { requests_per_second: Some(rps), burst: None, tokens_per_minute: None };
            let limiter = EndpointLimiter::new(&cfg, clock.clone());
            let sent = saturate_late(&limiter, &clock, horizon, Duration::from_millis(1));
            let used = sent.len() as f64 / (rps * horizon.as_secs_f64());
            assert!((0.95..=1.0 + 0.06 / horizon.as_secs_f64()).contains(&used), "rps {rps}: used {used:.3}");
        }
        // Without slack, every late wake-up is lost: why the default is not 1.
        let clock = FakeRelativeClock::default();
        let cfg = RateLimitConfig { requests_per_second: Some(200.0), burst: Some(1), tokens_per_minute: None };
        let limiter = EndpointLimiter::new(&cfg, clock.clone());
        let sent = saturate_late(&limiter, &clock, horizon, Duration::from_millis(1));
        let used = sent.len() as f64 / (200.0 * horizon.as_secs_f64());
        assert!(used < 0.9, "burst 1 used {used:.3}");
    }

    #[test]
    fn burst_lets_that_many_go_at_once_then_paces() {
        let clock = FakeRelativeClock::default();
        let cfg = RateLimitConfig { requests_per_second: Some(10.0), burst: Some(5), tokens_per_minute: None };
        let limiter = EndpointLimiter::new(&cfg, clock.clone());
        for _ in 0..5 {
            assert!(limiter.try_request().is_ok());
        }
        let wait = limiter.try_request().unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::from_millis(90), "{wait:?}");
    }

    #[test]
    fn tokens_per_minute_are_spent_and_refilled() {
        let clock = FakeRelativeClock::default();
        let cfg = RateLimitConfig { requests_per_second: None, burst: None, tokens_per_minute: Some(600) };
        let limiter = EndpointLimiter::new(&cfg, clock.clone());
        assert!(limiter.try_tokens(500).is_ok());
        let wait = limiter.try_tokens(200).unwrap_err();
        // 100 tokens short at 10 tokens/s.
        assert!(wait > Duration::from_secs(9) && wait <= Duration::from_secs(10), "{wait:?}");
        clock.advance(wait);
        assert!(limiter.try_tokens(200).is_ok());
        // A request bigger than the bucket goes alone, as the whole bucket.
        clock.advance(Duration::from_secs(60));
        assert!(limiter.try_tokens(10_000).is_ok());
        assert!(limiter.try_tokens(1).is_err());
    }

    #[test]
    fn no_limits_configured_means_no_waiting() {
        let clock = FakeRelativeClock::default();
        let limiter = EndpointLimiter::new(&RateLimitConfig::default(), clock);
        for _ in 0..10_000 {
            assert!(limiter.try_request().is_ok());
            assert!(limiter.try_tokens(1_000_000).is_ok());
        }
    }

    #[test]
    fn a_share_scales_rate_and_burst_and_shares_add_up_to_the_limit() {
        let horizon = Duration::from_secs(20);
        let cfg = RateLimitConfig { requests_per_second: Some(90.0), burst: Some(9), tokens_per_minute: None };
        // Three workers owning 1, 2 and 3 of 6 partitions.
        let mut total = Vec::new();
        for owned in [1.0, 2.0, 3.0] {
            let clock = FakeRelativeClock::default();
            let limiter = EndpointLimiter::new(&cfg, clock.clone());
            limiter.set_share(owned / 6.0);
            let sent = saturate(&limiter, &clock, horizon);
            let expected = 90.0 * owned / 6.0 * horizon.as_secs_f64();
            let used = sent.len() as f64 / expected;
            assert!((0.95..=1.0 + 10.0 / expected).contains(&used), "share {owned}/6 used {used:.3}");
            total.extend(sent);
        }
        total.sort_unstable();
        // Together, in any second: the rate plus the scaled bursts (2 + 3 + 5).
        for (i, &t) in total.iter().enumerate() {
            let in_window = total[i..].iter().take_while(|&&u| u < t + 1_000_000_000).count();
            assert!(in_window <= 90 + 10, "{in_window} requests in 1 s from {t} ns");
        }
        // A share of 0 sends nothing; the whole share again sends at the rate.
        let clock = FakeRelativeClock::default();
        let limiter = EndpointLimiter::new(&cfg, clock.clone());
        limiter.set_share(0.0);
        assert_eq!(limiter.try_request(), Err(NO_SHARE_WAIT));
        limiter.set_share(1.0);
        assert_eq!(limiter.share(), 1.0);
        let n = saturate(&limiter, &clock, horizon).len();
        assert!((90 * 20..=90 * 20 + 9).contains(&n), "{n} sent at the whole share");
    }
}
