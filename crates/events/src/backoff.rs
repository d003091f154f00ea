//! The one backoff policy of the code base: exponential with jitter, from `backon`.
//!
//! Relay, consumer, connection retries at start-up, the supervisor and the workers of the
//! services all take their delays from here, so retries everywhere behave alike.

use std::time::Duration;

pub use backon::{BackoffBuilder, ExponentialBuilder, Retryable};

/// Exponential delays from `min` doubling to at most `max`, with jitter, never giving up.
pub fn policy(min: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
}

/// The delay before retry number `attempt` (1 for the first) of something whose
/// attempts are counted elsewhere (in a database row): the same curve as [`policy`].
pub fn delay_for_attempt(min: Duration, max: Duration, attempt: u32) -> Duration {
    policy(min, max)
        .build()
        .nth(attempt.max(1) as usize - 1)
        .unwrap_or(max)
}

/// A never-ending iterator of delays for a reconnect loop; [`Delays::reset`] after a
/// success starts again from `min`.
pub struct Delays {
    builder: ExponentialBuilder,
    current: backon::ExponentialBackoff,
    max: Duration,
}

impl Delays {
    pub fn new(min: Duration, max: Duration) -> Self {
        let builder = policy(min, max);
        Self {
            current: builder.build(),
            builder,
            max,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        self.current.next().unwrap_or(self.max)
    }

    pub fn reset(&mut self) {
        self.current = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_up_to_the_cap_and_start_over_after_a_reset() {
        let mut d = Delays::new(Duration::from_millis(10), Duration::from_millis(80));
        let first = d.next_delay();
        assert!(first >= Duration::from_millis(10) && first <= Duration::from_millis(20));
        for _ in 0..20 {
            // Jitter adds at most the delay itself.
            assert!(d.next_delay() <= Duration::from_millis(160));
        }
        d.reset();
        assert!(d.next_delay() <= Duration::from_millis(20));
    }
}
