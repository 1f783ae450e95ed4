use std::future::Future;
use std::time::Duration;

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth another try: network trouble, a 5xx, a 429.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// The provider refused the message itself (bad number, bad credentials); retrying the
    /// same request cannot succeed.
    #[error("rejected: {0}")]
    Rejected(String),
}

/// How often and how patiently a delivery is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries, the first included.
    pub attempts: u32,
    /// Wait before the second try; each later wait doubles.
    pub base_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            base_delay: Duration::from_millis(500),
        }
    }
}

/// The wait after `failed_tries` failures: `base` after the first, doubling with each further
/// one, never more than `max`. Shared by the in-memory retries and the outbox workers.
pub fn doubling_wait(base: Duration, failed_tries: u32, max: Duration) -> Duration {
    let doublings = failed_tries.saturating_sub(1).min(20);
    base.saturating_mul(1 << doublings).min(max)
}

impl RetryPolicy {
    /// The wait after failed try number `failed_try` (1-based).
    pub fn delay_after(&self, failed_try: u32) -> Duration {
        doubling_wait(self.base_delay, failed_try, Duration::MAX)
    }

    /// Runs `attempt` until it succeeds, is rejected, or the tries are used up. Returns the last
    /// error when it gives up.
    pub async fn run<F, Fut>(&self, mut attempt: F) -> Result<(), DeliveryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), DeliveryError>>,
    {
        let mut tried = 0;
        loop {
            tried += 1;
            match attempt().await {
                Ok(()) => return Ok(()),
                Err(rejected @ DeliveryError::Rejected(_)) => return Err(rejected),
                Err(temporary) if tried >= self.attempts.max(1) => return Err(temporary),
                Err(temporary) => {
                    tracing::debug!(try_number = tried, error = %temporary, "delivery failed; will retry");
                    tokio::time::sleep(self.delay_after(tried)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn backoff_doubles() {
        let policy = RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(100),
        };
        assert_eq!(policy.delay_after(1), Duration::from_millis(100));
        assert_eq!(policy.delay_after(2), Duration::from_millis(200));
        assert_eq!(policy.delay_after(3), Duration::from_millis(400));
    }

    fn quick(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            base_delay: Duration::from_millis(1),
        }
    }

    #[actix_rt::test]
    async fn gives_up_after_the_configured_tries() {
        let calls = Cell::new(0);
        let result = quick(3)
            .run(|| {
                calls.set(calls.get() + 1);
                async { Err(DeliveryError::Temporary("503".into())) }
            })
            .await;
        assert_eq!(calls.get(), 3);
        assert_eq!(result, Err(DeliveryError::Temporary("503".into())));
    }

    #[actix_rt::test]
    async fn a_rejection_is_not_retried() {
        let calls = Cell::new(0);
        let result = quick(3)
            .run(|| {
                calls.set(calls.get() + 1);
                async { Err(DeliveryError::Rejected("400".into())) }
            })
            .await;
        assert_eq!(calls.get(), 1);
        assert!(matches!(result, Err(DeliveryError::Rejected(_))));
    }

    #[actix_rt::test]
    async fn succeeds_on_a_later_try() {
        let calls = Cell::new(0);
        let result = quick(3)
            .run(|| {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n < 2 {
                        Err(DeliveryError::Temporary("timeout".into()))
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
        assert_eq!(calls.get(), 2);
        assert_eq!(result, Ok(()));
    }
}
