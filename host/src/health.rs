//! Whether a node that wharf checks (a database replica; a load balancer's backend
//! next) is up, as HAProxy's `rise`/`fall` decide it: a node goes down after `fall`
//! failed checks in a row and comes back after `rise` good ones, so one lost packet
//! does not take a node out and one lucky answer does not put a flapping one back.
//!
//! The state says why (the last failure, while down) and since when, for logs, the
//! status page and metrics.

use std::time::{Instant, SystemTime};

/// How many checks in a row it takes to change a node's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Good checks in a row that bring a down node up.
    pub rise: u32,
    /// Failed checks in a row that take an up node down.
    pub fall: u32,
}

/// One node's health. Starts in a given state; [`Health::observe`] feeds it checks.
#[derive(Debug, Clone)]
pub struct Health {
    up: bool,
    thresholds: Thresholds,
    /// Checks in a row whose outcome disagreed with `up`.
    streak: u32,
    /// Why the node is down; empty while it is up.
    reason: String,
    since: Instant,
    /// `since` on the wall clock, for status pages.
    since_wall: SystemTime,
}

/// What a check changed, for the one log line it deserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    WentUp,
    WentDown,
    /// Still down, for another reason than before.
    NewReason,
}

impl Health {
    /// A node taken to be up until checks say otherwise.
    pub fn up(thresholds: Thresholds) -> Self {
        Self::new(true, thresholds, String::new())
    }

    /// A node taken to be down (`reason`) until `rise` good checks.
    pub fn down(thresholds: Thresholds, reason: impl Into<String>) -> Self {
        Self::new(false, thresholds, reason.into())
    }

    fn new(up: bool, thresholds: Thresholds, reason: String) -> Self {
        Self {
            up,
            thresholds,
            streak: 0,
            reason,
            since: Instant::now(),
            since_wall: SystemTime::now(),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Why the node is down (the failure that took it down, or the latest one since);
    /// empty while it is up.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// When the node went into its current state.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// [`Health::since`] on the wall clock.
    pub fn since_wall(&self) -> SystemTime {
        self.since_wall
    }

    /// Records one check: `Ok` if the node passed, else why not.
    pub fn observe(&mut self, check: Result<(), String>) -> Option<Change> {
        let passed = check.is_ok();
        if passed == self.up {
            self.streak = 0;
            return match check {
                Err(reason) if reason != self.reason => {
                    self.reason = reason;
                    Some(Change::NewReason)
                }
                _ => None,
            };
        }
        self.streak += 1;
        let needed = match self.up {
            true => self.thresholds.fall,
            false => self.thresholds.rise,
        };
        if self.streak < needed {
            return None;
        }
        self.flip(check.err().unwrap_or_default());
        Some(if self.up {
            Change::WentUp
        } else {
            Change::WentDown
        })
    }

    /// Takes the node down at once, whatever the counts: a request found it
    /// unreachable, which no check can make less true. False if it was down already.
    pub fn mark_down(&mut self, reason: impl Into<String>) -> bool {
        if !self.up {
            return false;
        }
        self.flip(reason.into());
        true
    }

    fn flip(&mut self, reason: String) {
        self.up = !self.up;
        self.streak = 0;
        self.reason = reason;
        self.since = Instant::now();
        self.since_wall = SystemTime::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HAPROXY: Thresholds = Thresholds { rise: 2, fall: 3 };

    fn fail(reason: &str) -> Result<(), String> {
        Err(reason.into())
    }

    #[test]
    fn an_up_node_goes_down_only_after_fall_failures_in_a_row() {
        let mut health = Health::up(HAPROXY);
        assert_eq!(health.observe(fail("timeout")), None);
        assert_eq!(health.observe(fail("timeout")), None);
        assert!(health.is_up());
        assert_eq!(health.reason(), "");
        assert_eq!(health.observe(fail("refused")), Some(Change::WentDown));
        assert!(!health.is_up());
        assert_eq!(health.reason(), "refused");
    }

    #[test]
    fn a_good_check_between_failures_starts_the_count_again() {
        let mut health = Health::up(HAPROXY);
        health.observe(fail("a"));
        health.observe(fail("a"));
        assert_eq!(health.observe(Ok(())), None);
        health.observe(fail("a"));
        health.observe(fail("a"));
        assert!(health.is_up());
    }

    #[test]
    fn a_down_node_comes_back_after_rise_good_checks_and_forgets_its_reason() {
        let mut health = Health::down(HAPROXY, "not checked yet");
        let went_down = health.since();
        assert_eq!(health.observe(Ok(())), None);
        assert_eq!(health.observe(fail("lag")), Some(Change::NewReason));
        assert_eq!(health.observe(Ok(())), None);
        assert_eq!(health.observe(Ok(())), Some(Change::WentUp));
        assert!(health.is_up());
        assert_eq!(health.reason(), "");
        assert!(health.since() >= went_down);
    }

    #[test]
    fn a_repeated_reason_while_down_is_no_change() {
        let mut health = Health::down(HAPROXY, "lag");
        assert_eq!(health.observe(fail("lag")), None);
        assert_eq!(health.observe(fail("broken")), Some(Change::NewReason));
        assert_eq!(health.reason(), "broken");
    }

    #[test]
    fn mark_down_takes_an_up_node_out_at_once() {
        let mut health = Health::up(HAPROXY);
        assert!(health.mark_down("connection refused"));
        assert!(!health.is_up());
        assert_eq!(health.reason(), "connection refused");
        assert!(!health.mark_down("again"));
        assert_eq!(health.reason(), "connection refused");
    }
}
