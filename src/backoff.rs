//! Exponential backoff, shared by the SQS consumer, the file reader and the alert publisher.

use std::time::Duration;

/// Exponential backoff: `base * 2^(attempt-1)`, capped.
pub(crate) fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    base.saturating_mul(1 << exponent).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::from_secs(5);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(base, max, 0), Duration::from_secs(5));
        assert_eq!(backoff(base, max, 1), Duration::from_secs(5));
        assert_eq!(backoff(base, max, 2), Duration::from_secs(10));
        assert_eq!(backoff(base, max, 4), Duration::from_secs(40));
        assert_eq!(backoff(base, max, 5), Duration::from_secs(60));
        assert_eq!(backoff(base, max, u32::MAX), Duration::from_secs(60));
    }
}
