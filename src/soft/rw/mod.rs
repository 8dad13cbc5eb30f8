//! [`SoftRwLock`]: a reader/writer lock for network file systems, on Python filelock's
//! generation-log protocol under `<lock>.rw/`.
//!
//! `protocol` and `storage` are the protocol (a port of Python's `_soft_rw`); this module is
//! the lock kind the waiting loop drives, its holds and heartbeats, and the public types.

pub(crate) mod protocol;
mod storage;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::acquire::{acquire_future, Limit, LockKind, WaitLoop};
use crate::error::Action;
use crate::local::Local;
use crate::lock::Place;
use crate::soft::lease::{Claim, Heartbeat, OnCompromise};
use crate::soft::{CompromiseReason, LeaseCompromise};
use crate::wait_hook::{wait_hook_methods, WaitHook};
use crate::{sys, Backoff, Error};

use protocol::{HeartbeatOutcome, Log, Participant};

/// The lock kind behind [`SoftRwLock`].
pub(crate) struct SoftRw {
    place: Place,
    /// The generation log and what this process has observed of its members, shared by
    /// every acquisition through this lock (eviction needs observations that outlast one).
    log: OnceLock<Arc<Log>>,
    timeout: Option<Duration>,
    backoff: Backoff,
    heartbeat: Duration,
    stale: Duration,
    on_compromise: Option<OnCompromise>,
    wait_hook: Option<WaitHook>,
    /// The claim of the latest hold, whose loss [`SoftRwLock::compromise`] reports.
    last: Mutex<Option<Arc<Claim>>>,
}

impl SoftRw {
    fn log(&self) -> &Arc<Log> {
        self.log
            .get_or_init(|| Arc::new(Log::new(self.place.resolved_path())))
    }
}

/// A held [`SoftRwLock`]: the member, and the heartbeat that keeps it alive. Dropping it
/// stops the heartbeat, then commits the member out.
pub(crate) struct SoftRwHeld {
    member: Arc<Mutex<Participant>>,
    generation: u64,
    token: String,
    claim: Arc<Claim>,
    heartbeat: Option<Heartbeat>,
    path: PathBuf,
}

impl SoftRwHeld {
    fn release(&mut self) -> Result<(), Error> {
        if self.heartbeat.take().is_none() {
            return Ok(());
        }
        self.member
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .leave()
            .map_err(|e| e.during(Action::Release))
    }
}

impl Drop for SoftRwHeld {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

impl LockKind for SoftRw {
    type Held = SoftRwHeld;
    /// The published member of a waiting acquisition: dropping it commits it out, so a
    /// writer that gives up stops holding readers back.
    type Claim = Option<Participant>;
    const ATTEMPT_BLOCKS: bool = sys::ATTEMPT_BLOCKS;

    fn prepare(&self) -> Result<Arc<Local>, Error> {
        self.place.prepare()
    }

    fn path(&self) -> &Path {
        self.place.resolved_path()
    }

    fn attempt(
        &self,
        shared: bool,
        claim: &mut Option<Participant>,
    ) -> Result<Option<SoftRwHeld>, Error> {
        let member = match claim {
            Some(member) => member,
            None => claim.insert(Participant::publish(self.log(), !shared, self.stale)?),
        };
        if !member.advance()? {
            return Ok(None);
        }
        let member = claim.take().expect("advanced above");
        let generation = member
            .generation()
            .expect("a granted member has a generation");
        let token = member.token().to_owned();
        let path = self.place.resolved_path().to_path_buf();
        let member = Arc::new(Mutex::new(member));
        let claim = Arc::new(Claim::default());
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(claim.clone());
        let heartbeat = Heartbeat::spawn(
            format!("filelock-heartbeat-{}", std::process::id()),
            self.heartbeat,
            beat(
                &member,
                &claim,
                &path,
                &token,
                generation,
                self.stale.saturating_sub(self.heartbeat),
                self.on_compromise.clone(),
            ),
        );
        let heartbeat = match heartbeat {
            Ok(h) => h,
            Err(e) => {
                // Unrefreshed, the member would be evicted while we believed we held it.
                let _ = member
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .leave();
                return Err(Error::io(&path, e).with_detail("cannot start the heartbeat"));
            }
        };
        Ok(Some(SoftRwHeld {
            member,
            generation,
            token,
            claim,
            heartbeat: Some(heartbeat),
            path,
        }))
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn watch(&self, local: &Arc<Local>) -> bool {
        // Every change of membership is a new generation in `<lock>.rw/gen`.
        let mut gen = self.place.resolved_path().as_os_str().to_owned();
        gen.push(".rw");
        let gen = PathBuf::from(gen).join("gen");
        local.watch(&[sys::watch::Target::Added(&gen)])
    }

    fn backoff(&self) -> Backoff {
        self.backoff
    }

    fn wait_hook(&self) -> Option<&WaitHook> {
        self.wait_hook.as_ref()
    }
}

/// One heartbeat tick of a held member, as Python's: refresh the record and check the
/// member is still named. Transient errors are retried until a peer could have evicted it.
fn beat(
    member: &Arc<Mutex<Participant>>,
    claim: &Arc<Claim>,
    path: &Path,
    token: &str,
    generation: u64,
    tolerance: Duration,
    on_compromise: Option<OnCompromise>,
) -> impl FnMut() -> bool + Send + 'static {
    let (member, claim, path, token) = (
        Arc::downgrade(member),
        claim.clone(),
        path.to_path_buf(),
        token.to_owned(),
    );
    let mut last_success = Instant::now();
    move || {
        let Some(member) = member.upgrade() else {
            return false;
        };
        let outcome = member
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .heartbeat();
        let (reason, error) = match outcome {
            HeartbeatOutcome::Ok => {
                last_success = Instant::now();
                return true;
            }
            HeartbeatOutcome::Lost => (CompromiseReason::Evicted, None),
            HeartbeatOutcome::Transient(e) => {
                if last_success.elapsed() < tolerance {
                    return true;
                }
                (CompromiseReason::RefreshFailed, Some(e))
            }
        };
        let lost = LeaseCompromise::new(&path, &token, generation, reason, error);
        claim.report(lost, on_compromise.as_ref());
        false
    }
}

/// A reader/writer lock for network file systems (NFS, Lustre, shared volumes), on-disk
/// compatible with Python filelock's `SoftReadWriteLock`: Python and Rust members can share
/// one lock.
///
/// It needs no OS locks. Its state lives in a directory `<path>.rw/` (the path itself is
/// never created): an append-only log of generations, each naming the writer and readers
/// in, and one record per member that the member's heartbeat rewrites. A member enters by
/// committing a new generation, which is an atomic no-replace hard link.
///
/// - **Readers** share: a reader enters as soon as no writer is named.
/// - **Writer preference**: a writer enters the log as soon as no other writer is named,
///   which keeps every new reader out, then waits for the readers inside to leave.
/// - **Dead members are evicted**: a member whose record stayed unchanged for the stale
///   threshold (default 90 s, three heartbeats), on the *observer's* monotonic clock, is
///   committed out by the next contender. No clocks are compared across hosts.
/// - **Fencing**: [`SoftRwReadGuard::generation`] / [`SoftRwWriteGuard::generation`] is the
///   generation the hold was granted at, which strictly increases from one admission to the
///   next: pass it to the storage you protect and reject older ones.
/// - **Loss**: a holder whose member was evicted (it stalled longer than the threshold)
///   learns it from its heartbeat: [`compromise`](SoftRwLock::compromise) and the guard's
///   `compromise()` say so, and the `on_compromise` callback is called once.
///
/// A waiting member rewrites its record on every attempt, so the backoff's longest pause
/// must be shorter than the stale threshold. A file system without no-replace hard links is
/// a [`Protocol`](crate::ErrorKind::Protocol) error.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use async_filelock::SoftRwLock;
///
/// # futures_lite::future::block_on(async {
/// let dir = std::env::temp_dir().join("doc-soft-rw");
/// let lock = SoftRwLock::new(dir.join("models.lock"));
/// {
///     let a = lock.read().await?;
///     let b = lock.read().await?; // readers share
///     assert!(b.generation() > a.generation());
/// }
/// let w = lock.write().await?;
/// assert!(lock.try_read().is_err());
/// println!("writing with fencing token {}", w.generation());
/// w.release()?;
/// # Ok::<(), async_filelock::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct SoftRwLock {
    kind: Arc<SoftRw>,
}

impl SoftRwLock {
    /// Creates the lock with Python's defaults: a 30 s heartbeat, a 90 s stale threshold,
    /// no time limit. No I/O happens here.
    pub fn new(path: impl AsRef<Path>) -> SoftRwLock {
        SoftRwLock::builder(path)
            .build()
            .expect("the default options are valid")
    }

    /// Starts building a lock with options.
    pub fn builder(path: impl AsRef<Path>) -> SoftRwLockBuilder {
        SoftRwLockBuilder {
            path: path.as_ref().to_path_buf(),
            timeout: None,
            backoff: Backoff::default(),
            heartbeat: Duration::from_secs(30),
            stale: None,
            on_compromise: None,
            wait_hook: None,
        }
    }

    /// The lock's path, as given (the state lives in `<path>.rw/`).
    pub fn path(&self) -> &Path {
        &self.kind.place.path
    }

    /// The default time limit of an acquisition (`None`: wait until acquired).
    pub fn timeout(&self) -> Option<Duration> {
        self.kind.timeout
    }

    /// How often a holder rewrites its record.
    pub fn heartbeat_interval(&self) -> Duration {
        self.kind.heartbeat
    }

    /// How long a member's record must stay unchanged before peers evict it.
    pub fn stale_threshold(&self) -> Duration {
        self.kind.stale
    }

    /// Waits until the lock is held for reading.
    ///
    /// # Errors
    ///
    /// [`Timeout`](crate::ErrorKind::Timeout); [`Protocol`](crate::ErrorKind::Protocol)
    /// when the file system lacks no-replace hard links; I/O and permission errors about
    /// `<path>.rw/`, including a symbolic link or another account's directory there.
    pub fn read(&self) -> SoftReadAcquire {
        SoftReadAcquire {
            wait: WaitLoop::new(self.kind.clone(), true, Limit::Default),
        }
    }

    /// Waits until the lock is held for writing. From its first attempt the waiting writer
    /// is named in the log, which keeps new readers out; dropping the future commits it out.
    ///
    /// # Errors
    ///
    /// As [`read`](SoftRwLock::read).
    pub fn write(&self) -> SoftWriteAcquire {
        SoftWriteAcquire {
            wait: WaitLoop::new(self.kind.clone(), false, Limit::Default),
        }
    }

    /// One attempt to read, without waiting.
    ///
    /// # Errors
    ///
    /// [`WouldBlock`](crate::ErrorKind::WouldBlock) when a live writer is named; otherwise
    /// as [`read`](SoftRwLock::read).
    pub fn try_read(&self) -> Result<SoftRwReadGuard, Error> {
        self.read_inline(Limit::Once)
    }

    /// One attempt to write, without waiting (a writer that finds readers inside is not
    /// granted, and commits itself out again).
    ///
    /// # Errors
    ///
    /// [`WouldBlock`](crate::ErrorKind::WouldBlock) when anyone holds the lock; otherwise as
    /// [`read`](SoftRwLock::read).
    pub fn try_write(&self) -> Result<SoftRwWriteGuard, Error> {
        self.write_inline(Limit::Once)
    }

    /// The loss of this lock's latest hold, if its heartbeat reported one. It stays
    /// readable after the hold is released, until the next hold.
    pub fn compromise(&self) -> Option<LeaseCompromise> {
        self.kind
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|c| c.compromise())
    }

    pub(crate) fn read_inline(&self, limit: Limit) -> Result<SoftRwReadGuard, Error> {
        self.acquire_inline(true, limit).map(SoftRwReadGuard)
    }

    pub(crate) fn write_inline(&self, limit: Limit) -> Result<SoftRwWriteGuard, Error> {
        self.acquire_inline(false, limit).map(SoftRwWriteGuard)
    }

    fn acquire_inline(&self, shared: bool, limit: Limit) -> Result<Hold, Error> {
        let held = WaitLoop::new(self.kind.clone(), shared, limit).block()?;
        Ok(Hold::new(self.kind.clone(), held, shared))
    }

    pub(crate) fn queue(&self) -> Result<Arc<Local>, Error> {
        self.kind.prepare()
    }
}

impl fmt::Debug for SoftRwLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftRwLock")
            .field("path", &self.path())
            .field("heartbeat_interval", &self.kind.heartbeat)
            .field("stale_threshold", &self.kind.stale)
            .field("timeout", &self.kind.timeout)
            .finish()
    }
}

/// Options for a [`SoftRwLock`].
#[derive(Clone)]
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct SoftRwLockBuilder {
    path: PathBuf,
    timeout: Option<Duration>,
    backoff: Backoff,
    heartbeat: Duration,
    stale: Option<Duration>,
    on_compromise: Option<OnCompromise>,
    wait_hook: Option<WaitHook>,
}

impl SoftRwLockBuilder {
    wait_hook_methods!(wait_hook);

    /// The default time limit of an acquisition.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The pause between attempts while the lock is held elsewhere. Its longest pause must
    /// be shorter than the stale threshold: a waiting member proves it is alive at every
    /// attempt.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How often a holder rewrites its record (default 30 s, as in Python).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat = interval;
        self
    }

    /// How long a member's record must stay unchanged, on the observer's clock, before it
    /// is evicted (default three heartbeat intervals). It must exceed the heartbeat
    /// interval. Members configured differently wait the longer of their own threshold and
    /// the one a record carries.
    pub fn stale_threshold(mut self, threshold: Duration) -> Self {
        self.stale = Some(threshold);
        self
    }

    /// Called, from the heartbeat thread, when a held member is evicted or can no longer
    /// refresh its record. The holder should stop touching what the lock protects.
    pub fn on_compromise(
        mut self,
        callback: impl Fn(&LeaseCompromise) + Send + Sync + 'static,
    ) -> Self {
        self.on_compromise = Some(Arc::new(callback));
        self
    }

    /// Checks the options and builds the lock.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput), with Python's wording, for a zero
    /// heartbeat, a stale threshold not above the heartbeat, a backoff whose longest pause
    /// is not below the stale threshold, or an invalid backoff.
    pub fn build(self) -> Result<SoftRwLock, Error> {
        let fail = |why: String| {
            Err(Error::invalid(why)
                .with_path(&self.path)
                .during(Action::Configure))
        };
        self.backoff
            .validate()
            .map_err(|e| e.with_path(&self.path).during(Action::Configure))?;
        WaitHook::validate(self.wait_hook.as_ref())
            .map_err(|e| e.with_path(&self.path).during(Action::Configure))?;
        let heartbeat = self.heartbeat;
        if heartbeat.is_zero() {
            return fail(format!(
                "heartbeat_interval must be positive and finite, got {heartbeat:?}"
            ));
        }
        let stale = self.stale.unwrap_or(heartbeat.saturating_mul(3));
        if stale <= heartbeat {
            return fail(format!(
                "stale_threshold must exceed heartbeat_interval ({heartbeat:?}) and be finite, got {stale:?}"
            ));
        }
        if self.backoff.max() >= stale {
            return fail(format!(
                "the backoff's longest pause must be below stale_threshold ({stale:?}), got {:?}",
                self.backoff.max()
            ));
        }
        Ok(SoftRwLock {
            kind: Arc::new(SoftRw {
                place: Place::new(&self.path),
                log: OnceLock::new(),
                timeout: self.timeout,
                backoff: self.backoff,
                heartbeat,
                stale,
                on_compromise: self.on_compromise,
                wait_hook: self.wait_hook,
                last: Mutex::new(None),
            }),
        })
    }
}

impl fmt::Debug for SoftRwLockBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftRwLockBuilder")
            .field("path", &self.path)
            .field("timeout", &self.timeout)
            .field("backoff", &self.backoff)
            .field("heartbeat_interval", &self.heartbeat)
            .field("stale_threshold", &self.stale)
            .field("on_compromise", &self.on_compromise.is_some())
            .finish()
    }
}

/// A hold of either mode; the guards wrap it.
struct Hold {
    kind: Arc<SoftRw>,
    held: Option<SoftRwHeld>,
    shared: bool,
}

impl Hold {
    fn new(kind: Arc<SoftRw>, held: SoftRwHeld, shared: bool) -> Hold {
        Hold {
            kind,
            held: Some(held),
            shared,
        }
    }

    fn held(&self) -> &SoftRwHeld {
        self.held.as_ref().expect("a live guard holds its member")
    }

    fn release_now(&mut self) -> Result<(), Error> {
        let Some(mut held) = self.held.take() else {
            return Ok(());
        };
        let result = held.release();
        self.kind.place.local().released(self.shared);
        result
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let _ = self.release_now();
    }
}

macro_rules! soft_rw_guard {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// It is `Send`: it can be moved into a spawned task or thread and released there.
        /// The heartbeat runs on its own thread while it lives. `Drop` stops the heartbeat
        /// and commits the member out; call `release` to see errors.
        #[must_use = "the lock is released as soon as the guard is dropped"]
        pub struct $name(Hold);

        impl $name {
            /// The lock's path, resolved at the first acquisition.
            pub fn path(&self) -> &Path {
                &self.0.held().path
            }

            /// The generation this hold was granted at: a fencing token that strictly
            /// increases from one admission to the next.
            pub fn generation(&self) -> u64 {
                self.0.held().generation
            }

            /// This member's token (its record is `<path>.rw/holders/<token>`).
            pub fn token(&self) -> &str {
                &self.0.held().token
            }

            /// The loss of this hold, once the heartbeat has seen it: evicted by a peer, or
            /// unable to refresh its record.
            pub fn compromise(&self) -> Option<LeaseCompromise> {
                self.0.held().claim.compromise()
            }

            /// Stops the heartbeat, commits the member out and removes its record.
            ///
            /// # Errors
            ///
            /// I/O errors from committing out or removing the record. The member is gone
            /// from this process either way; a record left behind ages out.
            pub fn release(mut self) -> Result<(), Error> {
                self.0.release_now()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("path", &self.path())
                    .field("generation", &self.generation())
                    .field("token", &self.token())
                    .finish()
            }
        }
    };
}

soft_rw_guard!(
    /// A read hold on a [`SoftRwLock`], shared with other readers.
    SoftRwReadGuard
);

soft_rw_guard!(
    /// A write hold on a [`SoftRwLock`], exclusive.
    SoftRwWriteGuard
);

acquire_future!(
    /// The future returned by [`SoftRwLock::read`].
    ///
    /// It is `Send` and `Unpin`. Dropping it before it completes commits its member out and
    /// removes its record.
    SoftReadAcquire,
    SoftRw,
    SoftRwReadGuard,
    |kind, held| SoftRwReadGuard(Hold::new(kind, held, true))
);

acquire_future!(
    /// The future returned by [`SoftRwLock::write`].
    ///
    /// It is `Send` and `Unpin`. Dropping it before it completes commits the waiting writer
    /// out, which lets readers in, and removes its record.
    SoftWriteAcquire,
    SoftRw,
    SoftRwWriteGuard,
    |kind, held| SoftRwWriteGuard(Hold::new(kind, held, false))
);
