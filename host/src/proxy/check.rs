//! Active health checks: every backend of a pool probed with `GET path` every
//! interval, jittered by up to a tenth either way so that the checks of many backends
//! (and of many balancers) do not fall into step, as HAProxy's `spread-checks` does.
//! A status in `expect_status` passes; anything else, no answer or no connection fails,
//! with the reason. [`crate::health::Health`] turns the outcomes into up and down.
//!
//! The checks of one pool generation run in the pool's task set: they stop when the
//! generation is retired or dropped, while the backends themselves carry on in the
//! next generation, whose own checks take over.

use super::backend::Backend;
use crate::config::HealthCheckConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// Checks `backend` in `tasks` from now on: the first probe at once.
pub fn spawn(tasks: &mut JoinSet<()>, backend: Arc<Backend>, check: HealthCheckConfig) {
    tasks.spawn(async move {
        loop {
            let outcome = backend
                .client
                .probe(check.port, &check.path, check.timeout)
                .await;
            backend.observe_check(judge(outcome, &check));
            tokio::time::sleep(jittered(check.interval)).await;
        }
    });
}

fn judge(
    outcome: Result<http::StatusCode, String>,
    check: &HealthCheckConfig,
) -> Result<(), String> {
    let status = outcome?;
    match check.expect_status.contains(&status.as_u16()) {
        true => Ok(()),
        false => Err(format!("{} answered {status}", check.path)),
    }
}

/// `interval` ± 10%.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + fastrand::f64() * 0.2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn check() -> HealthCheckConfig {
        HealthCheckConfig {
            path: "/readyz".into(),
            port: None,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            expect_status: 200..=399,
            rise: 2,
            fall: 3,
        }
    }

    #[test]
    fn a_status_outside_the_expected_range_fails_the_check_and_says_which() {
        let check = check();
        assert_eq!(judge(Ok(StatusCode::OK), &check), Ok(()));
        assert_eq!(judge(Ok(StatusCode::FOUND), &check), Ok(()));
        assert_eq!(
            judge(Ok(StatusCode::SERVICE_UNAVAILABLE), &check),
            Err("/readyz answered 503 Service Unavailable".into())
        );
        assert_eq!(
            judge(Err("connection refused".into()), &check),
            Err("connection refused".into())
        );
    }

    #[test]
    fn the_interval_is_jittered_by_at_most_a_tenth() {
        let interval = Duration::from_secs(10);
        let waits: Vec<_> = (0..200).map(|_| jittered(interval)).collect();
        assert!(
            waits
                .iter()
                .all(|w| (9.0..=11.0).contains(&w.as_secs_f64()))
        );
        assert!(waits.iter().any(|w| *w != waits[0]), "no jitter at all");
    }
}
