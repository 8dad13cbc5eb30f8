//! Linux: wake-ups from inotify, through async-io's reactor.
//!
//! One inotify instance serves the whole process, registered with async-io (so its
//! readiness wakes tasks under any executor, and threads in `block_on`). A lock path that a
//! waiter found held gets a watch: on the lock file itself for a hard lock (a holder's
//! release closes it), or on its directory, filtered by name, for a soft marker (a holder's
//! release removes it). Watches are shared: one per process and path, and inotify itself
//! keeps one per inode, whatever the number of paths and waiters on it.
//!
//! Whoever polls first drains the instance and wakes the head waiter of every path that an
//! event concerns. Events carry no information the waiter trusts: a wake-up only makes it
//! try again now instead of at its next backoff tick, and the timer stays the upper bound
//! (a holder that unlocks without closing, or a remote change on a network file system,
//! raises no event).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_io::{Async, Readable};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;

use crate::local::Local;

/// What a waiter waits for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// The file at the path is closed by someone (or removed, renamed, or its link count
    /// changes): a hard lock's holder released it.
    Closed(&'a Path),
    /// The directory entry at the path is removed or renamed away: a soft marker's holder
    /// released it.
    Removed(&'a Path),
    /// An entry appears in the directory at the path (created, linked or renamed in): a
    /// read/write lock's log gained a generation.
    Added(&'a Path),
}

/// A path's registration; dropping it forgets the path (and the inotify watch, once no
/// registration uses it).
#[derive(Debug)]
pub(crate) struct Watch {
    wd: i32,
    id: u64,
}

/// A waiter's pending interest in the instance's readiness.
pub(crate) type Readiness = Option<Readable<'static, OwnedFd>>;

struct Watcher {
    fd: Async<OwnedFd>,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next: u64,
    /// Registrations by watch descriptor.
    by_wd: HashMap<i32, Vec<Entry>>,
}

struct Entry {
    id: u64,
    /// For a directory watch: the name whose removal matters.
    name: Option<OsString>,
    local: Weak<Local>,
}

/// The process's inotify instance; `None` while inotify is unavailable (then waiters poll).
/// A failure (out of descriptors, say) is not remembered: a later waiter tries again.
fn watcher() -> Option<&'static Watcher> {
    static WATCHER: OnceLock<Watcher> = OnceLock::new();
    if let Some(w) = WATCHER.get() {
        return Some(w);
    }
    let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).ok()?;
    let made = Watcher {
        fd: Async::new(fd).ok()?,
        table: Mutex::default(),
    };
    // Another thread may have made one meanwhile: theirs stays, ours is closed.
    let _ = WATCHER.set(made);
    WATCHER.get()
}

/// Registers `local` to be woken by changes to `target`. `None` if nothing can watch it
/// (no inotify, a watch limit reached, a path gone): the waiter then relies on its timer.
pub(crate) fn watch(target: Target<'_>, local: &Arc<Local>) -> Option<Watch> {
    let w = watcher()?;
    let (path, flags, name) = match target {
        Target::Closed(path) => (
            path,
            WatchFlags::CLOSE_WRITE
                | WatchFlags::CLOSE_NOWRITE
                | WatchFlags::ATTRIB
                | WatchFlags::DELETE_SELF
                | WatchFlags::MOVE_SELF,
            None,
        ),
        Target::Removed(path) => (
            path.parent()?,
            WatchFlags::DELETE | WatchFlags::MOVED_FROM | WatchFlags::ONLYDIR,
            Some(path.file_name()?.to_os_string()),
        ),
        Target::Added(dir) => (
            dir,
            WatchFlags::CREATE | WatchFlags::MOVED_TO | WatchFlags::ONLYDIR,
            None,
        ),
    };
    // MASK_ADD: another registration may watch the same inode for other events.
    let flags = flags | WatchFlags::DONT_FOLLOW | WatchFlags::MASK_ADD;
    let wd = inotify::add_watch(&w.fd, path, flags).ok()?;
    let mut table = w.table.lock().unwrap_or_else(PoisonError::into_inner);
    table.next += 1;
    let id = table.next;
    table.by_wd.entry(wd).or_default().push(Entry {
        id,
        name,
        local: Arc::downgrade(local),
    });
    Some(Watch { wd, id })
}

impl Drop for Watch {
    fn drop(&mut self) {
        let Some(w) = watcher() else { return };
        let mut table = w.table.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entries) = table.by_wd.get_mut(&self.wd) else {
            return;
        };
        entries.retain(|e| e.id != self.id);
        if entries.is_empty() {
            table.by_wd.remove(&self.wd);
            // The watch may be gone already (its inode was deleted): nothing to undo then.
            let _ = inotify::remove_watch(&w.fd, self.wd);
        }
    }
}

/// Polls the instance for events and wakes the waiters they concern (the caller's own
/// path included). `Ready` once it drained events, which the caller's path may or may not
/// be among; `Pending` with the caller's waker registered for the next ones.
pub(crate) fn poll(readiness: &mut Readiness, cx: &mut Context<'_>) -> Poll<()> {
    let Some(w) = watcher() else {
        return Poll::Pending;
    };
    loop {
        let ready = readiness.get_or_insert_with(|| w.fd.readable());
        match Pin::new(ready).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(_) => *readiness = None,
        }
        if w.drain() {
            return Poll::Ready(());
        }
        // Another waiter drained the events first: wait for the next ones.
    }
}

/// Blocks the calling thread until the instance has events or `until` passes, then
/// delivers what arrived (as [`poll`] does). For waiters that asked to block: the kernel
/// wakes this thread itself, without a hop through the reactor's thread. Waits at most a
/// few milliseconds at a time, so a wake-up delivered by another thread that drained the
/// events first is seen soon after.
pub(crate) fn wait(until: Option<Instant>) {
    let Some(w) = watcher() else {
        return;
    };
    let slice = until
        .map_or(Duration::MAX, |u| {
            u.saturating_duration_since(Instant::now())
        })
        .min(Duration::from_millis(10));
    let timeout = Timespec::try_from(slice).unwrap_or(Timespec {
        tv_sec: 0,
        tv_nsec: 10_000_000,
    });
    let mut fds = [PollFd::new(w.fd.get_ref(), PollFlags::IN)];
    if matches!(rustix::event::poll(&mut fds, Some(&timeout)), Ok(n) if n > 0) {
        w.drain();
    }
}

impl Watcher {
    /// Reads every queued event and wakes the head waiters concerned; whether there were any.
    fn drain(&self) -> bool {
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(self.fd.get_ref(), &mut buf);
        let mut wake: Vec<Arc<Local>> = Vec::new();
        let mut any = false;
        loop {
            let event = match reader.next() {
                Ok(event) => event,
                Err(Errno::INTR) => continue,
                // AGAIN: drained. Anything else: nothing more can be read now; the waiters'
                // timers carry on.
                Err(_) => break,
            };
            any = true;
            let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
            let overflow = event.events().contains(ReadFlags::QUEUE_OVERFLOW);
            let name = event.file_name().map(|n| OsStr::from_bytes(n.to_bytes()));
            let entries: Vec<&Entry> = if overflow {
                // Events were lost: wake everyone.
                table.by_wd.values().flatten().collect()
            } else {
                table.by_wd.get(&event.wd()).into_iter().flatten().collect()
            };
            for entry in entries {
                let concerned = match (&entry.name, name) {
                    // A file watch, or an event about the watched directory itself.
                    (None, _) | (_, None) => true,
                    (Some(want), Some(got)) => want.as_os_str() == got,
                };
                if concerned {
                    if let Some(local) = entry.local.upgrade() {
                        wake.push(local);
                    }
                }
            }
        }
        // Wake outside the table's lock: waking may run executor code.
        for local in wake {
            local.changed();
        }
        any
    }
}
