//! Retry policy: exponential backoff with jitter that honours `Retry-After`.

use std::time::Duration;

use backon::ExponentialBuilder;

/// How transient failures are retried: 429, 502, 503, 504 and connection failures, with
/// exponential backoff and jitter, waiting what `Retry-After` asks for when the server sends it.
///
/// Requests that are not idempotent (creating an export) are retried only where the server cannot
/// have acted: 429 and failures to connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry). Default 6.
    pub max_attempts: u32,
    /// First backoff delay. Default 500 ms.
    pub min_delay: Duration,
    /// Largest backoff delay. Default 30 s.
    pub max_delay: Duration,
    /// The longest `Retry-After` honoured; a server asking for longer ends the retries with a
    /// rate-limited error that carries its `Retry-After`. Default 120 s.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn never() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    pub(crate) fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .with_jitter()
    }

    /// The delay before the next attempt: `Retry-After` when the server sent one (or `None`, to
    /// stop, when it asks for longer than `max_retry_after`), else the backoff's delay.
    pub(crate) fn delay(
        &self,
        retry_after: Option<Duration>,
        backoff: Option<Duration>,
    ) -> Option<Duration> {
        let backoff = backoff?;
        match retry_after {
            Some(wait) if wait > self.max_retry_after => None,
            Some(wait) => Some(wait),
            None => Some(backoff),
        }
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn delay_honours_retry_after_within_bound() {
        let policy = RetryPolicy::default();
        let backoff = Some(Duration::from_millis(700));
        assert_eq!(
            policy.delay(Some(Duration::from_secs(2)), backoff),
            Some(Duration::from_secs(2))
        );
        assert_eq!(policy.delay(None, backoff), backoff);
        assert_eq!(policy.delay(Some(Duration::from_secs(3600)), backoff), None);
        assert_eq!(policy.delay(Some(Duration::from_secs(1)), None), None);
    }
}
