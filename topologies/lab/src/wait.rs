//! Polling helpers: topology tests wait for conditions, never sleep for a fixed time.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use crate::error::LabError;

/// How often the condition is polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `f` every ~100 ms until it returns `Some`, or fails after `timeout` with an error
/// naming `what` and the time waited. `f` is always called at least once.
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, LabError> {
    wait_until_dbg(timeout, what, || f().ok_or(NotYet))
}

#[derive(Debug)]
struct NotYet;

/// Like [`wait_until`], but `f` returns `Err(observed)` while the condition does not hold;
/// the last observed value is put in the timeout error (`{:?}`), so a failing topology test
/// says what it saw, not only what it wanted.
pub fn wait_until_dbg<T, D: Debug>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<T, D>,
) -> Result<T, LabError> {
    let start = Instant::now();
    loop {
        let last = match f() {
            Ok(v) => return Ok(v),
            Err(d) => d,
        };
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            let last = format!("{last:?}");
            return Err(LabError::Timeout {
                what: what.to_string(),
                after: elapsed,
                last: (last != "NotYet").then_some(last),
            });
        }
        std::thread::sleep(POLL_INTERVAL.min(timeout - elapsed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_first_success() {
        let mut n = 0;
        let v = wait_until(Duration::from_secs(5), "n reaches 3", || {
            n += 1;
            (n >= 3).then_some(n)
        })
        .unwrap();
        assert_eq!(v, 3);
    }

    #[test]
    fn timeout_names_what_and_duration() {
        let err = wait_until(Duration::from_millis(250), "the moon to turn blue", || {
            None::<()>
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("timed out after 0."), "{msg}");
        assert!(msg.contains("waiting for the moon to turn blue"), "{msg}");
        assert!(!msg.contains("last observed"), "{msg}");
        assert!(
            matches!(err, LabError::Timeout { after, .. } if after >= Duration::from_millis(250))
        );
    }

    #[test]
    fn dbg_variant_reports_last_observation() {
        let mut n = 0;
        let err = wait_until_dbg(Duration::from_millis(200), "three paths", || {
            n += 1;
            Err::<(), _>(vec![format!("path-{n}")])
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("waiting for three paths; last observed: [\"path-"),
            "{msg}"
        );
        // The message carries the *last* observation, not the first.
        assert!(!msg.contains("path-1\""), "{msg}");
    }
}
