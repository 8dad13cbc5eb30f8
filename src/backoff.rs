//! How long to wait between attempts while another process holds the lock.

use std::time::Duration;

use crate::Error;

/// The pause between two attempts while another process holds the lock.
///
/// Waiting in the same process needs no backoff: a release here wakes the next waiter at once.
/// The backoff only paces attempts against holders in *other* processes. Where this process
/// can watch the lock for their releases (Linux, see the crate's
/// [Wake-ups](crate#wake-ups)), a release wakes the waiter at once too, and the backoff is
/// only the fallback for releases that raise no event: a watched waiter pauses for the
/// longest interval straight away. Elsewhere the backoff decides how soon a release is
/// noticed: a shorter pause notices it sooner, a longer one costs less CPU while waiting.
///
/// The default, [`Backoff::default()`], is exponential from 1 ms up to 50 ms with jitter: a
/// short critical section in another process is noticed within about a millisecond, a long
/// wait costs about twenty wake-ups a second, and waiters in different processes do not retry
/// in lockstep. The cap equals Python filelock's fixed `poll_interval`, so no waiter notices a
/// release later than a Python waiter would.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use async_filelock::{Backoff, FileLock};
///
/// // Python filelock's behaviour: one attempt every 50 ms.
/// let lock = FileLock::builder("/tmp/app.lock")
///     .backoff(Backoff::fixed(Duration::from_millis(50)))
///     .build()?;
///
/// // Start at 5 ms, double up to 1 s, no jitter.
/// let patient = Backoff::exponential(Duration::from_millis(5), Duration::from_secs(1)).without_jitter();
/// # let _ = (lock, patient);
/// # Ok::<(), async_filelock::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: bool,
}

impl Backoff {
    /// The same pause every time, like Python filelock's `poll_interval`. No jitter.
    pub const fn fixed(interval: Duration) -> Backoff {
        Backoff {
            initial: interval,
            max: interval,
            jitter: false,
        }
    }

    /// A pause that starts at `initial` and doubles after each failed attempt up to `max`,
    /// with jitter (each pause is drawn uniformly from its upper half).
    pub const fn exponential(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            jitter: true,
        }
    }

    /// The same backoff with every pause at its full length.
    pub const fn without_jitter(mut self) -> Backoff {
        self.jitter = false;
        self
    }

    /// The first pause.
    pub const fn initial(&self) -> Duration {
        self.initial
    }

    /// The longest pause.
    pub const fn max(&self) -> Duration {
        self.max
    }

    /// Whether pauses are randomised.
    pub const fn has_jitter(&self) -> bool {
        self.jitter
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.initial.is_zero() {
            return Err(Error::invalid(
                "the backoff interval must be greater than zero (a zero pause would spin on the CPU)",
            ));
        }
        if self.initial > self.max {
            return Err(Error::invalid(format!(
                "the first backoff pause ({:?}) is longer than the longest ({:?})",
                self.initial, self.max
            )));
        }
        Ok(())
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::exponential(Duration::from_millis(1), Duration::from_millis(50))
    }
}

/// The pauses of one acquisition.
#[derive(Debug)]
pub(crate) struct Pauses {
    spec: Backoff,
    next: Duration,
}

impl Pauses {
    pub(crate) fn new(spec: Backoff) -> Pauses {
        Pauses {
            spec,
            next: spec.initial,
        }
    }

    pub(crate) fn next_pause(&mut self) -> Duration {
        let full = self.next;
        self.next = full.saturating_mul(2).min(self.spec.max);
        self.jittered(full)
    }

    /// The longest pause (jittered like the others), for a waiter that a wake-up source
    /// will wake at a release: the timer only bounds how long a release that raises no
    /// event can go unnoticed.
    pub(crate) fn fallback_pause(&mut self) -> Duration {
        self.next = self.spec.max;
        self.jittered(self.spec.max)
    }

    fn jittered(&self, full: Duration) -> Duration {
        if self.spec.jitter {
            let half = full / 2;
            let nanos = u64::try_from(full.as_nanos() - half.as_nanos()).unwrap_or(u64::MAX);
            half + Duration::from_nanos(fastrand::u64(0..=nanos))
        } else {
            full
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_doubles_up_to_the_cap() {
        let ms = Duration::from_millis;
        let mut p = Pauses::new(Backoff::exponential(ms(1), ms(5)).without_jitter());
        let got: Vec<_> = (0..5).map(|_| p.next_pause()).collect();
        assert_eq!(got, [ms(1), ms(2), ms(4), ms(5), ms(5)]);
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let ms = Duration::from_millis;
        let mut p = Pauses::new(Backoff::fixed(ms(10)));
        p.spec.jitter = true;
        for _ in 0..1000 {
            let d = p.next_pause();
            assert!(d >= ms(5) && d <= ms(10), "{d:?}");
        }
    }

    #[test]
    fn invalid_backoffs_are_rejected() {
        let ms = Duration::from_millis;
        assert!(Backoff::fixed(Duration::ZERO).validate().is_err());
        assert!(Backoff::exponential(ms(10), ms(1)).validate().is_err());
        assert!(Backoff::default().validate().is_ok());
        assert!(Backoff::fixed(Duration::MAX).validate().is_ok());
    }
}
