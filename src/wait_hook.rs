//! The waiting hook: a function an acquisition calls when it first has to wait, and
//! optionally every interval after ([`WaitInfo`], and the builders' `on_wait` and
//! `on_wait_every`).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::holder::HeldBy;
use crate::{Error, Holder};

/// What a waiting hook is told: which lock an acquisition waits for, since when, and who
/// holds it where that is known.
///
/// A hook is set with `on_wait` or `on_wait_every` on a lock's builder
/// ([`FileLockBuilder::on_wait`](crate::FileLockBuilder::on_wait) and the same methods of
/// every other lock kind's builder); the [`blocking`](crate::blocking) twins take the same
/// hook, since they wait in the same loop.
///
/// # Examples
///
/// A command-line tool telling its user why it does not proceed, as cargo does:
///
/// ```
/// use async_filelock::FileLock;
///
/// let lock = FileLock::builder(std::env::temp_dir().join("doc-wait-info.lock"))
///     .on_wait(|info| match info.holder() {
///         Some(holder) => eprintln!("Blocking waiting for file lock on build directory (held by {holder})"),
///         None => eprintln!("Blocking waiting for file lock on build directory"),
///     })
///     .build()?;
/// # drop(lock);
/// # Ok::<(), async_filelock::Error>(())
/// ```
#[derive(Debug)]
pub struct WaitInfo<'a> {
    pub(crate) path: &'a Path,
    pub(crate) holder: Option<&'a HeldBy>,
    pub(crate) elapsed: Duration,
    pub(crate) shared: bool,
    pub(crate) first: bool,
}

impl WaitInfo<'_> {
    /// The lock's path, absolute.
    pub fn path(&self) -> &Path {
        self.path
    }

    /// Who holds the lock, in words, where known: as [`Error::holder`] (`"pid 4242: cargo
    /// build"` for a hard lock on Linux, `"pid 7 on build-host"` for a soft lock held on
    /// another host).
    pub fn holder(&self) -> Option<&str> {
        self.holder.map(HeldBy::text)
    }

    /// The processes the operating system says hold the lock (hard locks on Linux; empty
    /// otherwise), as [`Error::holders`].
    pub fn holders(&self) -> &[Holder] {
        self.holder.map_or(&[], HeldBy::list)
    }

    /// How long the acquisition has been going on.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Whether the acquisition is shared (a reader) rather than exclusive.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Whether this is the first call for this acquisition: the moment it started to wait.
    pub fn is_first(&self) -> bool {
        self.first
    }
}

/// The function type of a waiting hook.
type HookFn = dyn Fn(&WaitInfo<'_>) + Send + Sync;

/// A waiting hook and how often it repeats; part of a lock's options.
#[derive(Clone)]
pub(crate) struct WaitHook {
    f: Arc<HookFn>,
    /// `None`: only when the wait starts.
    every: Option<Duration>,
}

impl WaitHook {
    pub(crate) fn once(f: impl Fn(&WaitInfo<'_>) + Send + Sync + 'static) -> WaitHook {
        WaitHook {
            f: Arc::new(f),
            every: None,
        }
    }

    pub(crate) fn every(
        interval: Duration,
        f: impl Fn(&WaitInfo<'_>) + Send + Sync + 'static,
    ) -> WaitHook {
        WaitHook {
            f: Arc::new(f),
            every: Some(interval),
        }
    }

    /// The interval between repeated calls, if the hook repeats.
    pub(crate) fn interval(&self) -> Option<Duration> {
        self.every
    }

    pub(crate) fn call(&self, info: &WaitInfo<'_>) {
        (self.f)(info)
    }

    /// Rejects a zero interval (the hook would be called in a loop).
    pub(crate) fn validate(hook: Option<&WaitHook>) -> Result<(), Error> {
        if hook.and_then(WaitHook::interval) == Some(Duration::ZERO) {
            return Err(Error::invalid("the waiting hook's interval is zero"));
        }
        Ok(())
    }
}

impl fmt::Debug for WaitHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitHook")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

/// `on_wait` and `on_wait_every` for a lock builder whose hook lives at `self.<field path>`.
macro_rules! wait_hook_methods {
    ($($field:ident).+) => {
        /// Calls `f` once when an acquisition first has to wait; see
        /// [`FileLockBuilder::on_wait`](crate::FileLockBuilder::on_wait).
        pub fn on_wait(mut self, f: impl Fn(&crate::WaitInfo<'_>) + Send + Sync + 'static) -> Self {
            self.$($field).+ = Some(crate::wait_hook::WaitHook::once(f));
            self
        }

        /// Calls `f` when an acquisition first has to wait and every `interval` after; see
        /// [`FileLockBuilder::on_wait_every`](crate::FileLockBuilder::on_wait_every).
        pub fn on_wait_every(
            mut self,
            interval: std::time::Duration,
            f: impl Fn(&crate::WaitInfo<'_>) + Send + Sync + 'static,
        ) -> Self {
            self.$($field).+ = Some(crate::wait_hook::WaitHook::every(interval, f));
            self
        }
    };
}
pub(crate) use wait_hook_methods;
