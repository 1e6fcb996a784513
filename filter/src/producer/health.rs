//! The REST proxy's health as the asynchronous producer sees it: a state machine fed with the
//! end of each flush and probe, which decides when new requests are refused and when probes go.
//!
//! - Healthy: `producer_async_health_failure_threshold` consecutive failed flushes (or probes)
//!   make it unhealthy; any success resets the count.
//! - Unhealthy: one probe may go every `producer_async_health_probe_interval`, the first one
//!   interval after the change; `producer_async_health_recovery_threshold` successes in a row
//!   make it healthy again; any failure resets the count.
//!
//! What counts as a failed flush is the producer's rule (see [`crate::producer`]); what a probe
//! reply means is the REST layer's ([`crate::rest::probe_failure`]). Thresholds below 1 count
//! as 1.

use crate::config::ProducerConfig;

/// The producer's view of the REST proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Healthy {
        /// Consecutive failed flushes.
        failures: u32,
    },
    Unhealthy {
        /// Consecutive successful probes or flushes.
        successes: u32,
        /// When the next probe goes.
        next_probe_at: u64,
    },
}

/// A change of health, for the producer's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Now unhealthy, after this many consecutive failures.
    BecameUnhealthy {
        /// The failures in a row that crossed the threshold.
        failures: u32,
    },
    /// Healthy again, after this many consecutive successes.
    BecameHealthy {
        /// The successes in a row that crossed the threshold.
        successes: u32,
    },
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    /// Healthy, with no failure counted.
    pub fn new() -> Self {
        Health {
            state: State::Healthy { failures: 0 },
        }
    }

    /// Whether the REST proxy is considered healthy (new records are accepted, batches go).
    pub fn is_healthy(&self) -> bool {
        matches!(self.state, State::Healthy { .. })
    }

    /// A flush or probe ended at `now`: `ok` when something was acknowledged (or the probe got a
    /// 2xx). Returns the change of health it caused, if any.
    pub fn record(&mut self, ok: bool, now: u64, config: &ProducerConfig) -> Option<Change> {
        match &mut self.state {
            State::Healthy { failures } => {
                if ok {
                    *failures = 0;
                    return None;
                }
                *failures += 1;
                if *failures < config.failure_threshold.max(1) {
                    return None;
                }
                let failures = *failures;
                self.state = State::Unhealthy {
                    successes: 0,
                    next_probe_at: now.saturating_add(u64::from(config.probe_interval_ms)),
                };
                Some(Change::BecameUnhealthy { failures })
            }
            State::Unhealthy { successes, .. } => {
                if !ok {
                    *successes = 0;
                    return None;
                }
                *successes += 1;
                if *successes < config.recovery_threshold.max(1) {
                    return None;
                }
                let successes = *successes;
                self.state = State::Healthy { failures: 0 };
                Some(Change::BecameHealthy { successes })
            }
        }
    }

    /// Whether a probe should go at `now` (unhealthy, and its time has come); if so, the next one
    /// is due one probe interval later.
    pub fn take_probe(&mut self, now: u64, config: &ProducerConfig) -> bool {
        let State::Unhealthy { next_probe_at, .. } = &mut self.state else {
            return false;
        };
        if now < *next_probe_at {
            return false;
        }
        *next_probe_at = now.saturating_add(u64::from(config.probe_interval_ms));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(failures: u32, recoveries: u32, interval_ms: u32) -> ProducerConfig {
        ProducerConfig {
            failure_threshold: failures,
            recovery_threshold: recoveries,
            probe_interval_ms: interval_ms,
            ..ProducerConfig::default()
        }
    }

    #[test]
    fn failures_in_a_row_make_it_unhealthy() {
        let cfg = config(3, 1, 100);
        let mut health = Health::new();
        assert!(health.is_healthy());
        assert_eq!(health.record(false, 0, &cfg), None);
        assert_eq!(health.record(false, 1, &cfg), None);
        assert!(health.is_healthy());
        assert_eq!(
            health.record(false, 2, &cfg),
            Some(Change::BecameUnhealthy { failures: 3 })
        );
        assert!(!health.is_healthy());
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let cfg = config(2, 1, 100);
        let mut health = Health::new();
        assert_eq!(health.record(false, 0, &cfg), None);
        assert_eq!(health.record(true, 1, &cfg), None);
        assert_eq!(health.record(false, 2, &cfg), None);
        assert!(health.is_healthy());
        assert_eq!(
            health.record(false, 3, &cfg),
            Some(Change::BecameUnhealthy { failures: 2 })
        );
    }

    #[test]
    fn successes_in_a_row_make_it_healthy_again_and_a_failure_resets_them() {
        let cfg = config(1, 3, 100);
        let mut health = Health::new();
        assert_eq!(
            health.record(false, 0, &cfg),
            Some(Change::BecameUnhealthy { failures: 1 })
        );
        assert_eq!(health.record(true, 1, &cfg), None);
        assert_eq!(health.record(true, 2, &cfg), None);
        assert_eq!(health.record(false, 3, &cfg), None);
        assert!(!health.is_healthy());
        assert_eq!(health.record(true, 4, &cfg), None);
        assert_eq!(health.record(true, 5, &cfg), None);
        assert_eq!(
            health.record(true, 6, &cfg),
            Some(Change::BecameHealthy { successes: 3 })
        );
        assert!(health.is_healthy());
        // Healthy again with a fresh count: one failure (threshold 1) turns it at once.
        assert_eq!(
            health.record(false, 7, &cfg),
            Some(Change::BecameUnhealthy { failures: 1 })
        );
    }

    #[test]
    fn probes_go_one_interval_apart_and_only_while_unhealthy() {
        let cfg = config(1, 1, 100);
        let mut health = Health::new();
        assert!(!health.take_probe(1_000, &cfg), "no probe while healthy");
        assert!(health.record(false, 1_000, &cfg).is_some());
        assert!(!health.take_probe(1_099, &cfg), "the first probe waits one interval");
        assert!(health.take_probe(1_100, &cfg));
        assert!(!health.take_probe(1_100, &cfg), "one probe per interval");
        assert!(!health.take_probe(1_199, &cfg));
        assert!(
            health.take_probe(1_250, &cfg),
            "late probes count the interval from when they went"
        );
        assert!(!health.take_probe(1_349, &cfg));
        assert!(health.take_probe(1_350, &cfg));
        assert!(health.record(true, 1_351, &cfg).is_some());
        assert!(!health.take_probe(5_000, &cfg), "no probe once healthy again");
    }

    #[test]
    fn thresholds_below_one_count_as_one() {
        let cfg = config(0, 0, 100);
        let mut health = Health::new();
        assert_eq!(
            health.record(false, 0, &cfg),
            Some(Change::BecameUnhealthy { failures: 1 })
        );
        assert_eq!(
            health.record(true, 1, &cfg),
            Some(Change::BecameHealthy { successes: 1 })
        );
    }

    #[test]
    fn times_near_the_end_of_the_clock_do_not_overflow() {
        let cfg = config(1, 1, u32::MAX);
        let mut health = Health::new();
        assert!(health.record(false, u64::MAX - 1, &cfg).is_some());
        assert!(!health.take_probe(u64::MAX - 1, &cfg));
        assert!(health.take_probe(u64::MAX, &cfg));
    }
}
