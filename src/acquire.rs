//! The one waiting loop: queueing, attempts, backoff, deadline, wake-ups and cancellation.
//!
//! A lock kind supplies a non-blocking attempt ([`LockKind::attempt`]); everything about
//! *waiting* lives here, once, for every kind and for both the async API and the blocking
//! wrappers (which drive the same future on the calling thread).
//!
//! One acquisition goes through these steps:
//!
//! 1. Join the path's in-process queue ([`Local`]).
//! 2. Wait until it is at the head of the queue and no holder in this process is in its way.
//!    Waiting here costs nothing: the task is woken by the release or departure that lets it
//!    in.
//! 3. Attempt. Success: leave the queue as a holder. Contention (another process): watch the
//!    lock for a release (`sys::watch`: on Linux, inotify reports a holder closing the lock
//!    file or removing its marker) and pause for the next backoff interval, ending the pause
//!    early if a wake-up source fires (such an event, or a release in this process), then go
//!    to step 2. Any other failure ends the acquisition.
//! 4. When the deadline passes, the attempt that ends at the deadline is the last one.
//!
//! Waiting hook (`on_wait`): at the first point where the acquisition has to wait (a pause
//! after contention, or a place behind another waiter or holder in this process), the loop
//! calls the lock's hook once, then, if it repeats, again every interval while it keeps
//! waiting, on a timer of its own. With the `tracing` feature each such moment is also a
//! debug event. The hook runs only inside `poll`, so a dropped acquisition never calls it.
//!
//! Cancellation: every resource the loop owns (queue place, timer, in-flight attempt) is
//! released by `Drop`. An attempt never waits for the lock, so dropping the future between
//! polls leaves nothing behind. An attempt on the blocking pool owns the file it opens; if
//! the future is gone when it finishes, the pool drops the result, which closes the file and
//! so releases the lock.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_io::Timer;

use crate::backoff::{Backoff, Pauses};
use crate::holder::HeldBy;
use crate::local::{Local, Ticket};
use crate::trace::debug;
use crate::wait_hook::{WaitHook, WaitInfo};
use crate::{sys, Error};

/// One kind of lock, as the waiting loop sees it.
pub(crate) trait LockKind: Send + Sync + 'static {
    /// Proof that the lock is held; dropping it releases the lock.
    type Held: Send + 'static;

    /// What one acquisition keeps between its attempts and gives up when it ends or is
    /// dropped: a waiting writer's claim on preference, a published membership record.
    /// Kinds whose attempts are independent use `()`.
    type Claim: Default + Send + Unpin + 'static;

    /// Whether an attempt may block its thread. Async acquisitions then run attempts on the
    /// `blocking` crate's pool.
    const ATTEMPT_BLOCKS: bool;

    /// Checks that the lock can be attempted at all and returns the in-process queue for its
    /// path. Called once per acquisition, before its first attempt.
    fn prepare(&self) -> Result<Arc<Local>, Error>;

    /// The path errors and events name.
    fn path(&self) -> &Path;

    /// One attempt that never waits for another holder. `Ok(None)`: held elsewhere.
    ///
    /// `claim` starts as `Default` and is carried from one attempt of an acquisition to the
    /// next. The loop drops it when the acquisition ends (after a success too: a kind moves
    /// into `Held` what the hold still needs) or is cancelled, so dropping a claim must undo
    /// whatever it stands for.
    fn attempt(&self, shared: bool, claim: &mut Self::Claim) -> Result<Option<Self::Held>, Error>;

    /// The lock's default time limit (`None`: wait until acquired).
    fn timeout(&self) -> Option<Duration>;

    /// The pause between attempts against a holder in another process.
    fn backoff(&self) -> Backoff;

    /// Who holds the lock, for the error that ends a wait and for the waiting hook: the
    /// processes the OS names (hard locks), or a holder this host cannot probe (soft locks
    /// name a marker from another host). It may cost file reads, so the loop asks only when
    /// it is about to report.
    fn holder(&self) -> Option<HeldBy> {
        None
    }

    /// The hook to call when an acquisition has to wait (`on_wait`).
    fn wait_hook(&self) -> Option<&WaitHook> {
        None
    }

    /// Registers with `local` what signals a release elsewhere (`sys::watch`), after an
    /// attempt found the lock held; whether anything is watched. Kinds without such a signal
    /// keep the default: their waiters wake on their timer alone.
    fn watch(&self, _local: &Arc<Local>) -> bool {
        false
    }
}

/// How long one acquisition may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// The lock's default.
    Default,
    /// Until the given duration has passed (`None`: forever); running out is a `Timeout`.
    After(Option<Duration>),
    /// Exactly one attempt; contention is `WouldBlock`.
    Once,
}

impl Limit {
    /// This limit, with `Default` replaced by the lock's `default`.
    pub(crate) fn or(self, default: Option<Duration>) -> Limit {
        match self {
            Limit::Default => Limit::After(default),
            l => l,
        }
    }

    /// When an acquisition that starts at `start` gives up; `None`: never (a limit too large
    /// to represent counts as none).
    pub(crate) fn deadline(self, start: Instant) -> Option<Instant> {
        match self {
            Limit::Once => Some(start),
            Limit::After(Some(d)) => start.checked_add(d),
            Limit::After(None) | Limit::Default => None,
        }
    }
}

/// The waiting loop for one acquisition of `K`, as a future.
pub(crate) struct WaitLoop<K: LockKind> {
    kind: Arc<K>,
    shared: bool,
    limit: Limit,
    /// Run attempts on the polling thread even if they may block (the blocking wrappers do:
    /// their caller asked to block).
    inline: bool,
    run: Option<Run<K>>,
    finished: bool,
}

/// The state of an acquisition that has started (been polled).
struct Run<K: LockKind> {
    local: Arc<Local>,
    /// Our place in the queue; `None` once we left it.
    ticket: Option<Ticket>,
    start: Instant,
    deadline: Option<Instant>,
    pauses: Pauses,
    /// Backing off after contention.
    pause: Option<Pause>,
    /// Interest in the process's file-change events while backing off.
    readiness: sys::watch::Readiness,
    /// The lock is watched for releases elsewhere.
    watched: bool,
    sleep: Sleep,
    /// What this acquisition keeps between attempts; moved to the pool and back with an
    /// attempt that runs there.
    claim: K::Claim,
    /// An attempt running on the blocking pool, which hands the claim back with its outcome.
    in_flight: Option<blocking::Task<Flight<K>>>,
    /// The deadline that cuts the in-flight attempt short: none for an attempt that started
    /// at or after the deadline (the last attempt is always allowed to finish).
    flight_deadline: Option<Instant>,
    /// When the waiting hook is due.
    report: Report,
}

/// The waiting hook's schedule for one acquisition.
#[derive(Default)]
enum Report {
    /// The acquisition has not had to wait yet.
    #[default]
    NotYet,
    /// It waits; the hook repeats at `next`, on its own timer.
    Every {
        next: Instant,
        interval: Duration,
        timer: Timer,
    },
    /// It waits, and the hook is not called again.
    Done,
}

impl Report {
    /// Called where the acquisition is about to wait: reports what is due, and arms the
    /// timer for the next report.
    fn waiting<K: LockKind>(
        &mut self,
        start: Instant,
        kind: &K,
        shared: bool,
        cx: &mut Context<'_>,
    ) {
        loop {
            self.due(start, kind, shared);
            let Report::Every { next, timer, .. } = self else {
                return;
            };
            timer.set_at(*next);
            if Pin::new(timer).poll(cx).is_pending() {
                return;
            }
        }
    }

    /// Calls the waiting hook (and emits the event) if the wait has just started or the next
    /// report is due.
    fn due<K: LockKind>(&mut self, start: Instant, kind: &K, shared: bool) {
        let now = Instant::now();
        let first = match self {
            Report::NotYet => {
                *self = match kind.wait_hook().and_then(WaitHook::interval) {
                    Some(interval) => Report::Every {
                        // Too far to represent: never again.
                        next: now.checked_add(interval).unwrap_or(now + Duration::MAX / 4),
                        interval,
                        timer: Timer::never(),
                    },
                    None => Report::Done,
                };
                true
            }
            Report::Every { next, interval, .. } if now >= *next => {
                // Skip reports missed while the thread was busy rather than make up for them.
                *next = (*next + *interval).max(now + *interval);
                false
            }
            _ => return,
        };
        let elapsed = now.saturating_duration_since(start);
        debug!(path = ?kind.path(), shared, elapsed = ?elapsed, first, "waiting for the lock");
        if let Some(hook) = kind.wait_hook() {
            let holder = kind.holder();
            hook.call(&WaitInfo {
                path: kind.path(),
                holder: holder.as_ref(),
                elapsed,
                shared,
                first,
            });
        }
    }

    /// When the hook is due next, once the acquisition waits.
    fn next(&self) -> Option<Instant> {
        match self {
            Report::Every { next, .. } => Some(*next),
            _ => None,
        }
    }
}

/// What an attempt on the blocking pool returns: its outcome, and the claim it borrowed.
type Flight<K> = (
    Result<Option<<K as LockKind>::Held>, Error>,
    <K as LockKind>::Claim,
);

/// A pause between attempts, which a wake-up ends early.
#[derive(Debug, Clone, Copy)]
enum Pause {
    Until(Instant),
    /// The pause is too long to represent and there is no deadline: only a wake-up ends it.
    UntilWoken,
}

impl Pause {
    /// A pause of `length` from `now`, cut at `deadline`.
    fn new(now: Instant, length: Duration, deadline: Option<Instant>) -> Pause {
        match (now.checked_add(length), deadline) {
            (Some(end), Some(d)) => Pause::Until(end.min(d)),
            (Some(end), None) => Pause::Until(end),
            (None, Some(d)) => Pause::Until(d),
            (None, None) => Pause::UntilWoken,
        }
    }
}

impl<K: LockKind> WaitLoop<K> {
    pub(crate) fn new(kind: Arc<K>, shared: bool, limit: Limit) -> WaitLoop<K> {
        WaitLoop {
            kind,
            shared,
            limit,
            inline: false,
            run: None,
            finished: false,
        }
    }

    /// Sets the time limit, counted from the first poll (also when that is past).
    pub(crate) fn set_limit(&mut self, limit: Limit) {
        self.limit = limit;
        let limit = self.effective_limit();
        if let Some(run) = &mut self.run {
            run.deadline = limit.deadline(run.start);
            if let (Some(pause), Some(d)) = (run.pause, run.deadline) {
                let end = match pause {
                    Pause::Until(end) => end.min(d),
                    Pause::UntilWoken => d,
                };
                run.pause = Some(Pause::Until(end));
            }
        }
    }

    /// Runs the acquisition on the calling thread, attempts included (the blocking wrappers
    /// do this: their caller asked to block).
    ///
    /// The first poll runs without any executor: uncontended, that is the whole acquisition.
    /// A wait then runs under async-io's `block_on`, which drives the reactor on this thread
    /// when no other thread does, so a wake-up reaches the waiter without a hop through
    /// async-io's own thread. (Entering it costs a wake-up of that thread on return, which
    /// is why the uncontended path does not.)
    pub(crate) fn block(mut self) -> Result<K::Held, Error> {
        self.inline = true;
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(done) = Pin::new(&mut self).poll(&mut cx) {
            return done;
        }
        async_io::block_on(self)
    }

    pub(crate) fn kind(&self) -> &Arc<K> {
        &self.kind
    }

    pub(crate) fn is_shared(&self) -> bool {
        self.shared
    }

    /// The time limit this acquisition runs with, once the lock's default is applied.
    pub(crate) fn effective_limit(&self) -> Limit {
        self.limit.or(self.kind.timeout())
    }

    fn start(&self) -> Result<Run<K>, Error> {
        let local = self.kind.prepare()?;
        let start = Instant::now();
        let deadline = self.effective_limit().deadline(start);
        let ticket = local.enqueue(self.shared);
        Ok(Run {
            local,
            ticket: Some(ticket),
            start,
            deadline,
            pauses: Pauses::new(self.kind.backoff()),
            pause: None,
            readiness: Default::default(),
            watched: false,
            sleep: Sleep {
                timer: Timer::never(),
                at: None,
            },
            claim: K::Claim::default(),
            in_flight: None,
            flight_deadline: None,
            report: Report::NotYet,
        })
    }

    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Result<K::Held, Error>> {
        if self.run.is_none() {
            self.run = Some(self.start()?);
        }
        let run = self.run.as_mut().expect("started above");
        let kind = &self.kind;
        loop {
            if let Some(task) = &mut run.in_flight {
                let outcome = match Pin::new(task).poll(cx) {
                    Poll::Ready((outcome, claim)) => {
                        run.claim = claim;
                        outcome
                    }
                    Poll::Pending => {
                        let Some(deadline) = run.flight_deadline else {
                            return Poll::Pending;
                        };
                        if !run.sleep.until(deadline, cx) {
                            return Poll::Pending;
                        }
                        // Out of time while the OS call is still running: abandon it. The
                        // pool releases a success that arrives later.
                        run.in_flight = None;
                        return Poll::Ready(Err(run.give_up(kind, self.limit, Blocker::Os)));
                    }
                };
                run.in_flight = None;
                if let Some(done) = run.settle(kind, self.limit, outcome) {
                    return Poll::Ready(done);
                }
                continue;
            }
            let ticket = run.ticket.as_ref().expect("an unfinished run is queued");
            if let Some(pause) = run.pause {
                // Backing off after contention: until the pause ends, or a release (in this
                // process, or one a file-change event reports) wakes us.
                let mut woken = run.local.notified(ticket, cx.waker());
                if !woken && self.inline && run.watched {
                    // A caller that asked to block waits in the kernel for the watch's
                    // events itself, until the pause ends: the wake-up then reaches it
                    // without a hop through the reactor's thread. (A release in this process
                    // raises an event too.)
                    let end = match pause {
                        Pause::Until(end) => Some(end),
                        Pause::UntilWoken => None,
                    };
                    run.report.due(run.start, &**kind, self.shared);
                    while !woken && end.is_none_or(|end| Instant::now() < end) {
                        sys::watch::wait(earliest(end, run.report.next()));
                        run.report.due(run.start, &**kind, self.shared);
                        woken = run.local.notified(ticket, cx.waker());
                    }
                    // Woken, or the pause is over: attempt.
                    woken = true;
                }
                // Events drained here may concern other paths; each poll that drained some
                // is followed by another, which registers for the next ones.
                while !woken && sys::watch::poll(&mut run.readiness, cx).is_ready() {
                    woken = run.local.notified(ticket, cx.waker());
                }
                if !woken {
                    let over = match pause {
                        Pause::Until(end) => run.sleep.until(end, cx),
                        Pause::UntilWoken => false,
                    };
                    if !over {
                        run.report.waiting(run.start, &**kind, self.shared, cx);
                        return Poll::Pending;
                    }
                }
                run.pause = None;
            }
            if !run.local.admit(ticket, cx.waker()) {
                // Queued behind another waiter or a holder in this process: it wakes us.
                match run.deadline {
                    Some(deadline) if Instant::now() >= deadline => {
                        return Poll::Ready(Err(run.give_up(kind, self.limit, Blocker::Here)));
                    }
                    Some(deadline) if run.sleep.until(deadline, cx) => continue,
                    _ => {
                        run.report.waiting(run.start, &**kind, self.shared, cx);
                        return Poll::Pending;
                    }
                }
            }
            debug!(path = ?kind.path(), shared = self.shared, "attempting lock");
            if K::ATTEMPT_BLOCKS && !self.inline {
                let (kind, shared) = (kind.clone(), self.shared);
                let mut claim = std::mem::take(&mut run.claim);
                run.in_flight = Some(blocking::unblock(move || {
                    let outcome = kind.attempt(shared, &mut claim);
                    (outcome, claim)
                }));
                let now = Instant::now();
                run.flight_deadline = run.deadline.filter(|&d| now < d);
                continue;
            }
            let outcome = kind.attempt(self.shared, &mut run.claim);
            if let Some(done) = run.settle(kind, self.limit, outcome) {
                return Poll::Ready(done);
            }
        }
    }
}

impl<K: LockKind> Run<K> {
    /// Handles an attempt's outcome: `Some` ends the acquisition.
    fn settle(
        &mut self,
        kind: &K,
        limit: Limit,
        outcome: Result<Option<K::Held>, Error>,
    ) -> Option<Result<K::Held, Error>> {
        let ticket = self.ticket.take().expect("an attempting run is queued");
        match outcome {
            Ok(Some(held)) => {
                self.local.acquired(ticket);
                debug!(path = ?kind.path(), waited = ?self.start.elapsed(), "lock acquired");
                Some(Ok(held))
            }
            Err(e) => {
                self.local.leave(ticket);
                debug!(path = ?kind.path(), error = %e, "lock attempt failed");
                Some(Err(e))
            }
            Ok(None) => {
                self.ticket = Some(ticket);
                let now = Instant::now();
                if self.deadline.is_some_and(|d| now >= d) {
                    return Some(Err(self.give_up(kind, limit, Blocker::Os)));
                }
                // Re-registered after every contended attempt: the path may name a new file.
                let watched = kind.watch(&self.local);
                if watched && !self.watched {
                    // A release between that attempt and the watch raised no event for us:
                    // try once more now that one would.
                    self.watched = true;
                    return None;
                }
                // Watched, the timer is only the fallback for releases that raise no event:
                // skip the short pauses that polling needs.
                let pause = if watched {
                    self.pauses.fallback_pause()
                } else {
                    self.pauses.next_pause()
                };
                self.pause = Some(Pause::new(now, pause, self.deadline));
                debug!(path = ?kind.path(), delay = ?pause, "lock held elsewhere, waiting");
                None
            }
        }
    }

    /// Leaves the queue and says why.
    fn give_up(&mut self, kind: &K, limit: Limit, blocker: Blocker) -> Error {
        if let Some(ticket) = self.ticket.take() {
            self.local.leave(ticket);
        }
        let holder = (blocker == Blocker::Os).then(|| kind.holder()).flatten();
        if limit == Limit::Once {
            return Error::would_block(kind.path(), blocker == Blocker::Here).with_holder(holder);
        }
        let waited = self.start.elapsed();
        debug!(path = ?kind.path(), waited = ?waited, "timed out waiting for lock");
        Error::timeout(kind.path(), waited).with_holder(holder)
    }
}

/// The earlier of two instants, either of which may be missing.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Who stood in the way when an acquisition gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blocker {
    /// A holder or an earlier waiter in this process; no OS attempt was made.
    Here,
    /// The OS lock, held by another process or another open of the file.
    Os,
}

/// A timer that is re-armed only when the instant changes.
struct Sleep {
    timer: Timer,
    at: Option<Instant>,
}

impl Sleep {
    /// Polls a timer for `at`; `true` once that instant has passed.
    fn until(&mut self, at: Instant, cx: &mut Context<'_>) -> bool {
        if self.at != Some(at) {
            self.timer.set_at(at);
            self.at = Some(at);
        }
        if Pin::new(&mut self.timer).poll(cx).is_ready() {
            self.at = None;
            true
        } else {
            false
        }
    }
}

impl<K: LockKind> Drop for Run<K> {
    fn drop(&mut self) {
        // Cancel a pool attempt first (a late success is released when the pool drops it),
        // then give our place in the queue to the next waiter.
        self.in_flight = None;
        if let Some(ticket) = self.ticket.take() {
            self.local.leave(ticket);
        }
    }
}

impl<K: LockKind> Future for WaitLoop<K> {
    type Output = Result<K::Held, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        assert!(
            !this.finished,
            "an acquire future was polled after it completed"
        );
        let out = this.poll_run(cx);
        if out.is_ready() {
            this.finished = true;
            this.run = None;
        }
        out
    }
}

impl<K: LockKind> fmt::Debug for WaitLoop<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match (&self.run, self.finished) {
            (_, true) => "finished",
            (None, false) => "not started",
            (Some(run), _) if run.in_flight.is_some() => "attempting",
            (Some(run), _) if run.pause.is_some() => "backing off",
            (Some(_), _) => "queued",
        };
        f.debug_struct("Acquire")
            .field("path", &self.kind.path())
            .field("shared", &self.shared)
            .field("limit", &self.effective_limit())
            .field("state", &state)
            .finish()
    }
}

macro_rules! acquire_future {
    ($(#[$doc:meta])* $name:ident, $kind:ty, $guard:ty, $make:expr) => {
        $(#[$doc])*
        #[must_use = "futures do nothing unless you `.await` or poll them"]
        pub struct $name {
            wait: WaitLoop<$kind>,
        }

        impl $name {
            /// Limits this acquisition to `timeout`, counted from its first poll;
            /// `Duration::ZERO` makes exactly one attempt. Running out is a
            /// [`Timeout`](crate::ErrorKind::Timeout) error.
            pub fn timeout(mut self, timeout: Duration) -> $name {
                self.wait.set_limit(Limit::After(Some(timeout)));
                self
            }
        }

        impl Future for $name {
            type Output = Result<$guard, Error>;

            fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
                let wait = &mut self.wait;
                Pin::new(&mut *wait)
                    .poll(cx)
                    .map(|held| held.map(|held| ($make)(wait.kind().clone(), held)))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.wait.fmt(f)
            }
        }
    };
}
pub(crate) use acquire_future;
