//! What one process knows about a lock path: who holds it here, and who waits, in order.
//!
//! The OS lock is what excludes other processes. Inside one process, this queue adds what
//! the OS lock cannot give:
//!
//! - waiters are served in arrival order, and only the waiter at the head of the queue makes
//!   OS attempts, so a thousand waiting tasks cost the file system no more than one;
//! - a release in this process wakes the next waiter at once, instead of at its next backoff
//!   tick;
//! - nobody attempts the OS lock while a holder in this process makes that attempt pointless
//!   (an exclusive holder, or shared holders when the head wants exclusive).
//!
//! Every [`FileLock`](crate::FileLock) for the same path in one process shares one `Local`,
//! found through a process-wide registry of weak references.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::Waker;

use crate::sys;

/// The in-process state of one lock path.
#[derive(Debug, Default)]
pub(crate) struct Local {
    state: Mutex<State>,
    /// What wakes the head waiter when the lock changes in another process (see
    /// `sys::watch`), registered by the head after an attempt found the lock held.
    watches: Mutex<Vec<sys::watch::Watch>>,
}

#[derive(Debug, Default)]
struct State {
    /// An exclusive guard exists in this process.
    exclusive: bool,
    /// How many shared guards exist in this process.
    shared: usize,
    next_ticket: u64,
    /// Waiters in arrival order. Tickets only grow, so the queue is sorted by ticket and a
    /// waiter is found by binary search; it keeps its capacity, so queueing does not allocate
    /// once the process has warmed up.
    waiters: VecDeque<Waiter>,
}

#[derive(Debug)]
struct Waiter {
    ticket: u64,
    shared: bool,
    /// Set when the waiter was woken to try again; cleared when it is admitted to try.
    notified: bool,
    waker: Option<Waker>,
}

/// A place in the queue. Leaving the queue in any way consumes it.
#[derive(Debug)]
pub(crate) struct Ticket(u64);

impl State {
    /// Marks the head waiter notified and returns its waker, if the head could make progress
    /// now and was not already told.
    fn wake_head(&mut self) -> Option<Waker> {
        let (exclusive, shared) = (self.exclusive, self.shared);
        let head = self.waiters.front_mut()?;
        let ready = !exclusive && (head.shared || shared == 0);
        if ready && !head.notified {
            head.notified = true;
            head.waker.take()
        } else {
            None
        }
    }

    fn position(&self, ticket: &Ticket) -> usize {
        // The head is the common case (every acquisition leaves from there when it succeeds).
        if self.waiters.front().is_some_and(|w| w.ticket == ticket.0) {
            return 0;
        }
        self.waiters
            .binary_search_by_key(&ticket.0, |w| w.ticket)
            .expect("a ticket stays queued until it is consumed")
    }

    fn remove(&mut self, ticket: Ticket) -> Waiter {
        let i = self.position(&ticket);
        self.waiters.remove(i).expect("position is in range")
    }

    /// Stores `waker` for the waiter; returns the waiter's notified flag and the waker it
    /// replaced, which the caller drops after unlocking (dropping a waker may run executor
    /// code, which must not find our mutex held).
    fn register(&mut self, ticket: &Ticket, waker: &Waker) -> (bool, Option<Waker>) {
        let i = self.position(ticket);
        let w = &mut self.waiters[i];
        let old = match &w.waker {
            Some(old) if old.will_wake(waker) => None,
            _ => w.waker.replace(waker.clone()),
        };
        (w.notified, old)
    }
}

impl Local {
    /// Finds (or creates) the state shared by every lock on `path` in this process.
    pub(crate) fn for_path(path: &Path) -> Arc<Local> {
        static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
        let mut reg = lock(REGISTRY.get_or_init(Default::default));
        if let Some(local) = reg.map.get(path).and_then(Weak::upgrade) {
            return local;
        }
        // Forget paths nobody uses any more, at a pace that keeps insertion amortised O(1).
        if reg.map.len() >= reg.prune_at {
            reg.map.retain(|_, w| w.strong_count() > 0);
            reg.prune_at = (reg.map.len() * 2).max(64);
        }
        let local = Arc::new(Local::default());
        reg.map.insert(path.to_path_buf(), Arc::downgrade(&local));
        local
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Joins the back of the queue.
    pub(crate) fn enqueue(&self, shared: bool) -> Ticket {
        let mut st = self.state();
        let id = st.next_ticket;
        st.next_ticket += 1;
        st.waiters.push_back(Waiter {
            ticket: id,
            shared,
            notified: false,
            waker: None,
        });
        Ticket(id)
    }

    /// Whether the waiter may make an OS attempt now: it is at the head of the queue and no
    /// holder in this process stands in its way. If not, `waker` is woken when that changes.
    pub(crate) fn admit(&self, ticket: &Ticket, waker: &Waker) -> bool {
        let mut st = self.state();
        let (exclusive, shared) = (st.exclusive, st.shared);
        match st.waiters.front_mut() {
            Some(w) if w.ticket == ticket.0 && !exclusive && (w.shared || shared == 0) => {
                w.notified = false;
                true
            }
            _ => {
                let (_, old) = st.register(ticket, waker);
                drop(st);
                drop(old);
                false
            }
        }
    }

    /// Called while the waiter backs off after contention: whether it was woken since it was
    /// admitted (then it should try again at once). Otherwise `waker` is woken when it is.
    pub(crate) fn notified(&self, ticket: &Ticket, waker: &Waker) -> bool {
        let mut st = self.state();
        let (notified, old) = st.register(ticket, waker);
        drop(st);
        drop(old);
        notified
    }

    /// The waiter got the OS lock: it leaves the queue and becomes a holder.
    pub(crate) fn acquired(&self, ticket: Ticket) {
        let mut st = self.state();
        let w = st.remove(ticket);
        if w.shared {
            st.shared += 1;
        } else {
            st.exclusive = true;
        }
        // Shared holders let a shared waiter behind them in too.
        wake_head(st);
        drop(w);
    }

    /// The waiter gave up (timeout, error, or its future was dropped).
    pub(crate) fn leave(&self, ticket: Ticket) {
        let mut st = self.state();
        let was_head = st.waiters.front().is_some_and(|w| w.ticket == ticket.0);
        let removed = st.remove(ticket);
        // Only the head's departure can let someone else proceed.
        if was_head {
            wake_head(st);
        } else {
            drop(st);
        }
        drop(removed);
    }

    /// Something outside this process changed the lock (a holder elsewhere closed the lock
    /// file or removed its marker): the head waiter tries again now.
    #[allow(dead_code)] // called by `sys::watch` where the platform can watch files
    pub(crate) fn changed(&self) {
        wake_head(self.state());
    }

    /// Watches `targets` for changes made elsewhere, replacing earlier watches (a path may
    /// name a new file since); whether any is watched. Watches are shared by every waiter on
    /// this path, and kept while the path's lock objects live: removing a watch costs more
    /// than the events it may still report (inotify coalesces a file's repeated closes into
    /// one pending event, and a waiter drains them).
    pub(crate) fn watch(self: &Arc<Local>, targets: &[sys::watch::Target<'_>]) -> bool {
        let mut fresh: Vec<_> = targets
            .iter()
            .filter_map(|&t| sys::watch::watch(t, self))
            .collect();
        let mut watches = lock(&self.watches);
        if fresh.len() < targets.len() {
            // A path that names nothing now (a holder unlinked the lock file it still holds,
            // to delete it on release) cannot be watched again, but the watch on the file it
            // named still reports that holder's close: keep the earlier watches too.
            fresh.append(&mut watches);
        }
        // Replaced after the new ones exist, so a watch on an unchanged file stays up.
        let old = std::mem::replace(&mut *watches, fresh);
        let any = !watches.is_empty();
        drop(watches);
        drop(old);
        any
    }

    /// A holder in this process released its OS lock.
    pub(crate) fn released(&self, shared: bool) {
        let mut st = self.state();
        if shared {
            st.shared -= 1;
        } else {
            st.exclusive = false;
        }
        wake_head(st);
    }
}

/// Wakes the head waiter if it can make progress now, after unlocking the state.
fn wake_head(mut st: MutexGuard<'_, State>) {
    let waker = st.wake_head();
    drop(st);
    if let Some(waker) = waker {
        waker.wake();
    }
}

#[derive(Debug)]
struct Registry {
    map: HashMap<PathBuf, Weak<Local>>,
    prune_at: usize,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            map: HashMap::new(),
            prune_at: 64,
        }
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked: every critical section
/// here is a handful of infallible field updates.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count::default());
        (c.clone(), Waker::from(c))
    }

    fn wakes(c: &Count) -> usize {
        c.0.load(Ordering::SeqCst)
    }

    #[test]
    fn only_the_head_is_admitted_and_release_wakes_the_next() {
        let local = Local::default();
        let (_, w1) = waker();
        let (c2, w2) = waker();
        let a = local.enqueue(false);
        let b = local.enqueue(false);
        assert!(!local.admit(&b, &w2), "second in line must wait");
        assert!(local.admit(&a, &w1));
        local.acquired(a);
        assert!(!local.admit(&b, &w2), "an exclusive holder blocks the head");
        assert_eq!(wakes(&c2), 0);
        local.released(false);
        assert_eq!(wakes(&c2), 1, "a release wakes the next waiter at once");
        assert!(local.admit(&b, &w2));
        local.acquired(b);
        local.released(false);
    }

    #[test]
    fn shared_waiters_enter_together_and_exclusive_waits_for_all() {
        let local = Local::default();
        let (_, w) = waker();
        let (cs, ws) = waker();
        let (cx, wx) = waker();
        let s1 = local.enqueue(true);
        let s2 = local.enqueue(true);
        let x = local.enqueue(false);
        assert!(!local.admit(&s2, &ws));
        assert!(!local.admit(&x, &wx));
        assert!(local.admit(&s1, &w));
        local.acquired(s1);
        assert_eq!(
            wakes(&cs),
            1,
            "a shared hold lets the next shared waiter in"
        );
        assert!(local.admit(&s2, &ws));
        local.acquired(s2);
        assert_eq!(wakes(&cx), 0, "exclusive waits while shared holders remain");
        local.released(true);
        assert_eq!(wakes(&cx), 0);
        local.released(true);
        assert_eq!(wakes(&cx), 1);
        assert!(local.admit(&x, &wx));
        local.acquired(x);
        local.released(false);
    }

    #[test]
    fn a_departing_head_hands_over_and_others_do_not_disturb_it() {
        let local = Local::default();
        let (c1, w1) = waker();
        let (c2, w2) = waker();
        let (_, w3) = waker();
        let a = local.enqueue(false);
        let b = local.enqueue(false);
        let c = local.enqueue(false);
        assert!(local.admit(&a, &w1));
        assert!(!local.notified(&a, &w1));
        assert!(!local.admit(&b, &w2));
        assert!(!local.admit(&c, &w3));
        local.leave(c);
        assert_eq!(
            wakes(&c1),
            0,
            "a waiter behind the head leaving wakes nobody"
        );
        assert!(!local.notified(&a, &w1));
        local.leave(a);
        assert_eq!(wakes(&c2), 1, "the head leaving wakes the next one");
        assert!(local.admit(&b, &w2));
        local.leave(b);
        assert!(local.state().waiters.is_empty());
    }

    #[test]
    fn registry_shares_state_per_path_and_forgets_unused_paths() {
        let a = Local::for_path(Path::new("/registry-test/a"));
        let again = Local::for_path(Path::new("/registry-test/a"));
        assert!(Arc::ptr_eq(&a, &again));
        let b = Local::for_path(Path::new("/registry-test/b"));
        assert!(!Arc::ptr_eq(&a, &b));
        drop((a, again));
        let fresh = Local::for_path(Path::new("/registry-test/a"));
        assert_eq!(Arc::strong_count(&fresh), 1);
    }
}
