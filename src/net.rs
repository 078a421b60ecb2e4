//! What the two network clients (the virtio-win download and the registry push)
//! share: one retry loop with exponential backoff, and one way to put an HTTP
//! error with its causes on one line.

#![deny(unsafe_code)]

use std::time::Duration;

/// How one attempt ended.
pub enum Try<T, R, E> {
    Done(T),
    /// Worth another attempt; `R` says why (kept for the message if none is left).
    Again(R),
    /// Not worth another.
    Fail(E),
}

/// Why [`with_backoff`] stopped without a result.
pub enum Stop<R, E> {
    /// Every attempt asked for another; the last one's reason.
    GaveUp(R),
    Failed(E),
}

/// Runs `attempt` up to `retries + 1` times, waiting `first` before the first
/// retry and twice as long before each next one; `waiting` hears each reason
/// and the wait that follows it (to tell the user).
pub fn with_backoff<T, R, E>(
    retries: u32,
    first: Duration,
    mut attempt: impl FnMut() -> Try<T, R, E>,
    mut waiting: impl FnMut(&R, Duration),
) -> Result<T, Stop<R, E>> {
    let mut wait = first;
    let mut tried = 0;
    loop {
        tried += 1;
        match attempt() {
            Try::Done(value) => return Ok(value),
            Try::Fail(e) => return Err(Stop::Failed(e)),
            Try::Again(why) if tried > retries => return Err(Stop::GaveUp(why)),
            Try::Again(why) => {
                waiting(&why, wait);
                std::thread::sleep(wait);
                wait = wait.saturating_mul(2);
            }
        }
    }
}

/// An error and its causes on one line, `outer: inner: innermost` (reqwest's
/// own text stops at the outermost).
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text = format!("{text}: {inner}");
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{with_backoff, Stop, Try};
    use std::time::Duration;

    #[test]
    fn retries_then_gives_up_with_the_last_reason() {
        let mut calls = 0;
        let mut waits = Vec::new();
        let r: Result<(), Stop<u32, ()>> = with_backoff(
            2,
            Duration::from_millis(1),
            || {
                calls += 1;
                Try::Again(calls)
            },
            |_, w| waits.push(w),
        );
        assert!(matches!(r, Err(Stop::GaveUp(3))));
        assert_eq!(calls, 3);
        assert_eq!(waits, [Duration::from_millis(1), Duration::from_millis(2)]);
    }

    #[test]
    fn a_failure_or_a_success_ends_the_loop() {
        let mut calls = 0;
        let r: Result<u8, Stop<(), &str>> = with_backoff(
            5,
            Duration::ZERO,
            || {
                calls += 1;
                if calls == 2 {
                    Try::Fail("no")
                } else {
                    Try::Again(())
                }
            },
            |_, _| {},
        );
        assert!(matches!(r, Err(Stop::Failed("no"))));
        assert_eq!(calls, 2);
        let ok: Result<u8, Stop<(), ()>> =
            with_backoff(5, Duration::ZERO, || Try::Done(7), |_, _| {});
        assert!(matches!(ok, Ok(7)));
    }
}
