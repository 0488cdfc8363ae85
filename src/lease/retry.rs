//! The retry policy of background work that fails: how long to wait before the next attempt and
//! when to flag the failure for an operator. The reaper owns one instance (`[revocation_retry]` in
//! the config file), the rotator another (`[rotation_retry]`), so each can be tuned alone.
//!
//! Delays double from `initial` up to `max`, each moved by up to ±`jitter` (a fraction) so that
//! many leases failing together do not retry in lockstep. A *transient* failure (the database
//! unreachable, busy, timing out) is worth retrying soon and is flagged (an ERROR line) only once it
//! has failed `flag_after` times. A *permanent* one (a statement the database refuses, a privilege
//! missing) will not fix itself in a second: it is flagged at once and retried from a quarter of
//! the cap, so an operator's fix is picked up without hammering the database meanwhile.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// One retry policy. See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Wait before the first retry of a transient failure.
    #[serde(with = "crate::ttl::duration_secs")]
    pub initial: Duration,
    /// Longest wait between two attempts.
    #[serde(with = "crate::ttl::duration_secs")]
    pub max: Duration,
    /// Fraction (0 to 0.5) by which each delay is moved at random.
    pub jitter: f64,
    /// Failed attempts after which a transient failure is logged at ERROR level.
    pub flag_after: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            jitter: 0.2,
            flag_after: 10,
        }
    }
}

impl RetryPolicy {
    /// Checks values that parse but make no sense; the message names the setting `table`.
    pub fn validate(&self, table: &str) -> std::result::Result<(), String> {
        if self.initial.is_zero() || self.max < self.initial {
            return Err(format!(
                "[{table}]: initial must be greater than zero and at most max"
            ));
        }
        if !(0.0..=0.5).contains(&self.jitter) {
            return Err(format!("[{table}]: jitter must be between 0 and 0.5"));
        }
        if self.flag_after < 1 {
            return Err(format!("[{table}]: flag_after must be at least 1"));
        }
        Ok(())
    }

    /// Wait before attempt `attempts + 1`, after `attempts` (1-based) failures.
    pub fn delay(&self, attempts: i64, transient: bool) -> Duration {
        let base = if transient {
            let exponent = attempts.clamp(1, 30) as u32 - 1;
            self.initial
                .saturating_mul(2u32.saturating_pow(exponent))
                .min(self.max)
        } else {
            (self.max / 4).max(self.initial)
        };
        if self.jitter == 0.0 {
            return base;
        }
        let factor = rand::thread_rng().gen_range(1.0 - self.jitter..=1.0 + self.jitter);
        base.mul_f64(factor)
            .min(self.max.mul_f64(1.0 + self.jitter))
    }

    /// Whether this failure, after `attempts` failures, is logged at ERROR level.
    pub fn flag(&self, attempts: i64, transient: bool) -> bool {
        !transient || attempts >= self.flag_after
    }
}

/// Whether `error` may go away by itself (worth a quick retry).
pub fn is_transient(error: &Error) -> bool {
    match error {
        Error::Database { source, .. } => source.is_transient(),
        Error::Unavailable(_) | Error::StoreUnavailable(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady() -> RetryPolicy {
        RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn transient_delays_double_and_are_capped() {
        let policy = steady();
        let secs: Vec<u64> = (1..=11).map(|n| policy.delay(n, true).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert!(!policy.flag(9, true) && policy.flag(10, true));
    }

    #[test]
    fn permanent_failures_wait_a_quarter_of_the_cap_and_are_flagged_at_once() {
        let policy = steady();
        assert_eq!(policy.delay(1, false), Duration::from_secs(75));
        assert!(policy.flag(1, false));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let policy = RetryPolicy::default();
        for attempts in 1..=12 {
            let delay = policy.delay(attempts, true).as_secs_f64();
            let base = steady().delay(attempts, true).as_secs_f64();
            assert!(
                delay >= base * 0.8 - 1e-9 && delay <= base * 1.2 + 1e-9,
                "{delay} vs {base}"
            );
        }
    }

    #[test]
    fn nonsense_is_refused_by_name() {
        let bad = RetryPolicy {
            jitter: 0.9,
            ..RetryPolicy::default()
        };
        assert!(bad
            .validate("revocation_retry")
            .unwrap_err()
            .starts_with("[revocation_retry]: jitter"));
    }
}
