//! When to try again, and when to give up. Pure functions: no clock, no I/O.

use std::time::Duration;

/// What to do with a recipient whose attempt failed temporarily.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try again at this time (unix ms).
    At(i64),
    /// The queue lifetime is over: fail for good.
    Expired,
}

/// `attempts` counts the attempt that just failed (1 after the first). The schedule's waits are
/// used in turn and the last one repeats; a retry that would fall after the lifetime is replaced
/// by one last attempt at the lifetime's end, so the lifetime is honoured to the minute.
pub fn next_attempt(
    schedule: &[Duration],
    lifetime: Duration,
    attempts: i64,
    queued_at: i64,
    now: i64,
) -> Retry {
    let deadline = queued_at + lifetime.as_millis() as i64;
    if now >= deadline || schedule.is_empty() {
        return Retry::Expired;
    }
    let i = (attempts.max(1) as usize - 1).min(schedule.len() - 1);
    let at = now + schedule[i].as_millis() as i64;
    Retry::At(at.min(deadline))
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 60_000;

    fn sched() -> Vec<Duration> {
        [5, 10, 20, 40, 60]
            .map(|m| Duration::from_secs(60 * m))
            .to_vec()
    }

    #[test]
    fn follows_the_schedule_then_repeats_the_last_wait() {
        let life = Duration::from_secs(5 * 24 * 3600);
        let cases = [
            (1, 5),
            (2, 10),
            (3, 20),
            (4, 40),
            (5, 60),
            (6, 60),
            (50, 60),
        ];
        for (attempts, wait) in cases {
            assert_eq!(
                next_attempt(&sched(), life, attempts, 0, 1000),
                Retry::At(1000 + wait * M),
                "attempt {attempts}"
            );
        }
    }

    #[test]
    fn lifetime_is_honoured() {
        let life = Duration::from_secs(3600);
        // 10 minutes before the end, a 60-minute wait is cut to the deadline...
        assert_eq!(
            next_attempt(&sched(), life, 9, 0, 50 * M),
            Retry::At(60 * M)
        );
        // ...and at the deadline the recipient expires.
        assert_eq!(next_attempt(&sched(), life, 10, 0, 60 * M), Retry::Expired);
    }
}
