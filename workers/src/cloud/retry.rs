//! Retry decisions, separate from transport (Vector's `RetryLogic`): what
//! an HTTP status, a transport error and the rate-limit headers mean for the
//! next attempt. Tested without a network.

use std::time::Duration;

use crate::cloud::config::RetryConfig;

/// What a single attempt ended in, as far as retrying is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A response arrived with this status and these (lower-case name)
    /// headers.
    Response {
        /// HTTP status.
        status: u16,
        /// Headers relevant to retries (`retry-after`, `x-ratelimit-reset-*`).
        headers: Vec<(String, String)>,
    },
    /// No response: the attempt's timeout passed.
    Timeout,
    /// No response: connecting failed or the connection dropped.
    Connection,
}

/// The decision after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after this long.
    RetryAfter(Duration),
    /// Give up; the failure counts against the endpoint's health when
    /// `unhealthy` (5xx, timeouts, connection errors), not for a client
    /// error or a rate limit.
    GiveUp {
        /// Whether the circuit breaker counts it.
        unhealthy: bool,
    },
}

/// Whether an outcome is worth retrying, and after how long.
#[derive(Debug, Clone)]
pub struct RetryLogic {
    config: RetryConfig,
}

impl RetryLogic {
    /// Retry logic with the worker's settings.
    pub fn new(config: RetryConfig) -> Self {
        RetryLogic { config }
    }

    /// Statuses a later attempt may succeed on: request timeout, too early,
    /// too many requests, and the server-side 5xx family except 501/505
    /// (which will not change).
    pub fn should_retry_status(status: u16) -> bool {
        matches!(status, 408 | 425 | 429) || (500..600).contains(&status) && !matches!(status, 501 | 505)
    }

    /// Whether the outcome says something about the endpoint's health (the
    /// breaker counts it): 5xx, timeouts and broken connections do; 4xx,
    /// including 429, are about the request or the quota.
    pub fn is_unhealthy(attempt: &AttemptOutcome) -> bool {
        match attempt {
            AttemptOutcome::Response { status, .. } => *status >= 500,
            AttemptOutcome::Timeout | AttemptOutcome::Connection => true,
        }
    }

    /// The decision after the `attempt`-th failed attempt (1 = the first),
    /// with `jitter` in [0, 1) choosing the point in the backoff interval.
    /// A server's `Retry-After` or `x-ratelimit-reset-*` wait overrides the
    /// backoff when longer; a wait above `max_retry_after_ms` gives up.
    pub fn decide(&self, outcome: &AttemptOutcome, attempt: u32, jitter: f64) -> RetryDecision {
        let unhealthy = Self::is_unhealthy(outcome);
        let retriable = match outcome {
            AttemptOutcome::Response { status, .. } => Self::should_retry_status(*status),
            AttemptOutcome::Timeout | AttemptOutcome::Connection => true,
        };
        if !retriable || attempt >= self.config.max_attempts {
            return RetryDecision::GiveUp { unhealthy };
        }
        let backoff = self.backoff(attempt, jitter);
        let asked = match outcome {
            AttemptOutcome::Response { headers, .. } => server_wait(headers),
            _ => None,
        };
        match asked {
            Some(wait) if wait > Duration::from_millis(self.config.max_retry_after_ms) => {
                RetryDecision::GiveUp { unhealthy }
            }
            Some(wait) => RetryDecision::RetryAfter(wait.max(backoff)),
            None => RetryDecision::RetryAfter(backoff),
        }
    }

    /// Exponential backoff with "equal jitter": half the doubled interval
    /// fixed, half random, capped at `max_backoff_ms`.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let base = self.config.initial_backoff_ms as f64 * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
        let capped = base.min(self.config.max_backoff_ms as f64);
        Duration::from_micros(((capped / 2.0) * (1.0 + jitter.clamp(0.0, 1.0)) * 1000.0) as u64)
    }
}

/// The longest wait a response asks for: `Retry-After` (seconds or an HTTP
/// date) and OpenAI's `x-ratelimit-reset-requests` / `-tokens` (`1s`,
/// `6m0s`, `250ms`).
pub fn server_wait(headers: &[(String, String)]) -> Option<Duration> {
    let mut wait: Option<Duration> = None;
    for (name, value) in headers {
        let d = match name.as_str() {
            "retry-after" => parse_retry_after(value),
            "retry-after-ms" => value.trim().parse::<f64>().ok().map(|ms| Duration::from_micros((ms * 1000.0) as u64)),
            n if n.starts_with("x-ratelimit-reset") => parse_go_duration(value),
            _ => None,
        };
        if let Some(d) = d {
            wait = Some(wait.map_or(d, |w| w.max(d)));
        }
    }
    wait
}

fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs >= 0.0).then(|| Duration::from_micros((secs * 1e6) as u64));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = when.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(ms.max(0) as u64))
}

/// `1h2m3.5s`, `6m0s`, `250ms`, `20us` (Go's duration syntax, as OpenAI
/// writes it), or a bare number of seconds.
fn parse_go_duration(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs >= 0.0).then(|| Duration::from_micros((secs * 1e6) as u64));
    }
    let mut total = 0f64;
    let mut rest = v;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let number: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    Some(Duration::from_micros((total * 1e6) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logic() -> RetryLogic {
        RetryLogic::new(RetryConfig {
            max_attempts: 4,
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
            max_retry_after_ms: 10_000,
        })
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> AttemptOutcome {
        AttemptOutcome::Response {
            status,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn retriable_statuses() {
        for s in [408, 425, 429, 500, 502, 503, 504] {
            assert!(RetryLogic::should_retry_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 422, 501, 505] {
            assert!(!RetryLogic::should_retry_status(s), "{s}");
        }
    }

    #[test]
    fn client_errors_give_up_at_once_and_do_not_count_against_health() {
        assert_eq!(logic().decide(&resp(400, &[]), 1, 0.5), RetryDecision::GiveUp { unhealthy: false });
        assert_eq!(logic().decide(&resp(401, &[]), 1, 0.5), RetryDecision::GiveUp { unhealthy: false });
    }

    #[test]
    fn server_errors_retry_with_doubling_backoff_then_give_up_unhealthy() {
        let l = logic();
        assert_eq!(l.decide(&resp(503, &[]), 1, 0.0), RetryDecision::RetryAfter(Duration::from_millis(50)));
        assert_eq!(l.decide(&resp(503, &[]), 2, 0.0), RetryDecision::RetryAfter(Duration::from_millis(100)));
        assert_eq!(l.decide(&resp(503, &[]), 3, 0.999_999), RetryDecision::RetryAfter(Duration::from_micros(399_999)));
        assert_eq!(l.decide(&resp(503, &[]), 4, 0.0), RetryDecision::GiveUp { unhealthy: true });
        assert_eq!(l.decide(&AttemptOutcome::Timeout, 4, 0.0), RetryDecision::GiveUp { unhealthy: true });
    }

    #[test]
    fn backoff_is_capped_and_jitter_stays_in_the_upper_half() {
        let l = logic();
        for attempt in 1..40 {
            for j in [0.0, 0.3, 0.99] {
                let b = l.backoff(attempt, j);
                assert!(b <= Duration::from_millis(1_000), "{attempt} {j} {b:?}");
                let full = (100.0 * 2f64.powi(attempt as i32 - 1)).min(1000.0);
                assert!(b >= Duration::from_micros((full / 2.0 * 1000.0) as u64 - 1));
            }
        }
    }

    #[test]
    fn retry_after_overrides_a_shorter_backoff_and_a_too_long_one_gives_up() {
        let l = logic();
        assert_eq!(
            l.decide(&resp(429, &[("retry-after", "2")]), 1, 0.0),
            RetryDecision::RetryAfter(Duration::from_secs(2))
        );
        // Shorter than the backoff: the backoff wins.
        assert_eq!(
            l.decide(&resp(429, &[("retry-after", "0")]), 1, 0.0),
            RetryDecision::RetryAfter(Duration::from_millis(50))
        );
        assert_eq!(l.decide(&resp(429, &[("retry-after", "60")]), 1, 0.0), RetryDecision::GiveUp { unhealthy: false });
    }

    #[test]
    fn openai_reset_headers_are_read() {
        let h = |v: &str| vec![("x-ratelimit-reset-requests".to_string(), v.to_string())];
        assert_eq!(server_wait(&h("1s")), Some(Duration::from_secs(1)));
        assert_eq!(server_wait(&h("6m0s")), Some(Duration::from_secs(360)));
        assert_eq!(server_wait(&h("250ms")), Some(Duration::from_millis(250)));
        assert_eq!(server_wait(&h("1m30.5s")), Some(Duration::from_millis(90_500)));
        assert_eq!(server_wait(&h("soon")), None);
        // The longest of several asks wins.
        let both = vec![
            ("x-ratelimit-reset-requests".to_string(), "1s".to_string()),
            ("x-ratelimit-reset-tokens".to_string(), "3s".to_string()),
        ];
        assert_eq!(server_wait(&both), Some(Duration::from_secs(3)));
    }

    #[test]
    fn retry_after_http_date_is_read() {
        let later = chrono::Utc::now() + chrono::Duration::seconds(5);
        let v = later.to_rfc2822();
        let d = server_wait(&[("retry-after".to_string(), v)]).unwrap();
        assert!(d <= Duration::from_secs(5) && d >= Duration::from_secs(3), "{d:?}");
    }
}
