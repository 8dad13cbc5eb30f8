//! A lease's heartbeat, its compromise reports, and its fencing counter.
//!
//! The heartbeat is a plain thread per hold (no runtime needed), as in Python: every
//! interval it checks that the lock path still names our marker and touches it, so peers
//! see the lease is alive. A marker gone or replaced must be seen on two consecutive ticks
//! (a peer's name exchange may be in flight); transient errors are tolerated until less
//! than one interval of the lease is left. The first loss is reported once: stored for the
//! holder to poll, and passed to the callback.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{File, FileTimes};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant, SystemTime};

use crate::soft::marker::Marker;
use crate::sys::dir;
use crate::sys::marker as fs;
use crate::Error;

/// Why a held lease stopped being ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CompromiseReason {
    /// The marker was removed (someone broke the lock) and no name reaches it any more.
    MarkerMissing,
    /// The lock path names another file: a peer took the lease over.
    OwnerChanged,
    /// Refreshing the marker kept failing until the lease could have expired.
    RefreshFailed,
    /// A [`SoftRwLock`](crate::SoftRwLock) peer found this member's record unchanged for
    /// the stale threshold and evicted it (or its record was removed).
    Evicted,
    /// An [`EtcdLock`](crate::EtcdLock)'s lease is gone: etcd answered a keep-alive for it
    /// with a TTL of zero (it expired, or someone revoked it).
    LeaseExpired,
    /// An [`EtcdLock`](crate::EtcdLock)'s key was deleted while held.
    KeyDeleted,
}

impl CompromiseReason {
    /// The name Python filelock uses for this reason (`"marker-missing"`, ...); the etcd
    /// reasons, which Python does not have, are named in the same style.
    pub fn as_str(self) -> &'static str {
        match self {
            CompromiseReason::MarkerMissing => "marker-missing",
            CompromiseReason::OwnerChanged => "owner-changed",
            CompromiseReason::RefreshFailed => "refresh-failed",
            CompromiseReason::Evicted => "evicted",
            CompromiseReason::LeaseExpired => "lease-expired",
            CompromiseReason::KeyDeleted => "key-deleted",
        }
    }
}

impl fmt::Display for CompromiseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lease this process held and lost: whose, why, and the error that ended its refresh.
///
/// The holder should stop touching what the lease protects: a peer may be using it now.
#[derive(Debug, Clone)]
pub struct LeaseCompromise {
    path: PathBuf,
    token: String,
    fence: u64,
    reason: CompromiseReason,
    error: Option<Arc<io::Error>>,
}

impl LeaseCompromise {
    pub(crate) fn new(
        path: &Path,
        token: &str,
        fence: u64,
        reason: CompromiseReason,
        error: Option<io::Error>,
    ) -> LeaseCompromise {
        LeaseCompromise {
            path: path.to_path_buf(),
            token: token.to_owned(),
            fence,
            reason,
            error: error.map(Arc::new),
        }
    }

    /// The lock path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The token of the claim that was lost.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The fencing token of the hold that was lost (for a
    /// [`SoftRwLock`](crate::SoftRwLock), the generation it was granted at).
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// What took the claim away.
    pub fn reason(&self) -> CompromiseReason {
        self.reason
    }

    /// The error that ended the refresh, for [`RefreshFailed`](CompromiseReason::RefreshFailed).
    pub fn error(&self) -> Option<&io::Error> {
        self.error.as_deref()
    }
}

impl fmt::Display for LeaseCompromise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the lease on {:?} (fence {}) was lost: {}",
            self.path, self.fence, self.reason
        )?;
        if let Some(e) = &self.error {
            write!(f, ": {e}")?;
        }
        Ok(())
    }
}

/// A callback told of a lost lease, from the heartbeat thread.
pub(crate) type OnCompromise = Arc<dyn Fn(&LeaseCompromise) + Send + Sync>;

/// What one claim's holder and its heartbeat share.
#[derive(Default)]
pub(crate) struct Claim {
    compromise: Mutex<Option<LeaseCompromise>>,
}

impl Claim {
    /// Records the loss for the holder to read, then tells the callback.
    pub(crate) fn report(&self, lost: LeaseCompromise, on_compromise: Option<&OnCompromise>) {
        crate::trace::debug!(path = ?lost.path, reason = %lost.reason, "lease compromised");
        *self
            .compromise
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(lost.clone());
        if let Some(callback) = on_compromise {
            callback(&lost);
        }
    }

    pub(crate) fn compromise(&self) -> Option<LeaseCompromise> {
        self.compromise
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The running heartbeat of one hold; dropping it stops the thread.
pub(crate) struct Heartbeat {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
    thread_id: Option<ThreadId>,
}

/// What the heartbeat needs to know about the hold.
pub(crate) struct Beat {
    pub(crate) path: PathBuf,
    pub(crate) token: String,
    pub(crate) fence: u64,
    pub(crate) interval: Duration,
    pub(crate) duration: Duration,
    pub(crate) on_compromise: Option<OnCompromise>,
}

enum Outcome {
    Ok,
    Transient(io::Error),
    Lost(CompromiseReason, Option<io::Error>),
}

impl Heartbeat {
    /// Runs `tick` every `interval` on a thread of its own, until `tick` returns `false` or
    /// the heartbeat is dropped. Every heartbeat in the crate (leases, read/write members)
    /// runs on this.
    pub(crate) fn spawn(
        name: String,
        interval: Duration,
        mut tick: impl FnMut() -> bool + Send + 'static,
    ) -> io::Result<Heartbeat> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stopped = stop.clone();
        let thread = thread::Builder::new().name(name).spawn(move || {
            let (stopped, wake) = &*stopped;
            loop {
                let guard = stopped.lock().unwrap_or_else(PoisonError::into_inner);
                let (guard, _) = wake
                    .wait_timeout_while(guard, interval, |s| !*s)
                    .unwrap_or_else(PoisonError::into_inner);
                if *guard {
                    return;
                }
                drop(guard);
                if !tick() {
                    return;
                }
            }
        })?;
        let thread_id = Some(thread.thread().id());
        Ok(Heartbeat {
            stop,
            thread: Some(thread),
            thread_id,
        })
    }

    /// The heartbeat of a lease: touches the marker, and reports the lease lost when the
    /// path stops naming it.
    pub(crate) fn start(beat: Beat, marker: &Marker, claim: Arc<Claim>) -> io::Result<Heartbeat> {
        let file = marker.file().try_clone()?;
        let id = marker.id();
        let mut last_success = Instant::now();
        let mut missing = false;
        let name = format!("filelock-lease-{}", std::process::id());
        Heartbeat::spawn(name, beat.interval, move || {
            crate::fault::point("lease.heartbeat");
            let (reason, error) = match refresh(&beat.path, &file, id) {
                Outcome::Ok => {
                    last_success = Instant::now();
                    missing = false;
                    return true;
                }
                Outcome::Lost(reason, error) => {
                    if !missing {
                        missing = true;
                        return true;
                    }
                    (reason, error)
                }
                Outcome::Transient(e) => {
                    if last_success.elapsed() < beat.duration.saturating_sub(beat.interval) {
                        return true;
                    }
                    (CompromiseReason::RefreshFailed, Some(e))
                }
            };
            let lost = LeaseCompromise::new(&beat.path, &beat.token, beat.fence, reason, error);
            claim.report(lost, beat.on_compromise.as_ref());
            false
        })
    }
}

fn refresh(path: &Path, file: &File, id: (u64, u64)) -> Outcome {
    match fs::lstat(path) {
        Ok(now) if fs::id(&now) != id => Outcome::Lost(CompromiseReason::OwnerChanged, None),
        Ok(_) => touch(file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::linked(file) {
            // The directory was renamed: the marker lives on under another name.
            Ok(true) => touch(file),
            Ok(false) => Outcome::Lost(CompromiseReason::MarkerMissing, Some(e)),
            Err(e) => Outcome::Transient(e),
        },
        Err(e) => Outcome::Transient(e),
    }
}

fn touch(file: &File) -> Outcome {
    let now = SystemTime::now();
    match file.set_times(FileTimes::new().set_accessed(now).set_modified(now)) {
        Ok(()) => Outcome::Ok,
        Err(e) => Outcome::Transient(e),
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
        // A release from inside the compromise callback runs on the heartbeat thread itself,
        // which ends as soon as the callback returns.
        if self.thread_id != Some(thread::current().id()) {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// The name of the fencing counter beside the lock: the directory `<lock>.fence`.
pub(crate) fn fence_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".fence");
    PathBuf::from(name)
}

/// How many times [`next_fence`] rescans after losing a race for a value before it reports
/// the counter as unusable: each loss means another holder advanced it meanwhile, which only a
/// holder that stalled while it was taken over can see, and then only a few times.
const FENCE_RACES: u32 = 64;

/// Advances the fencing counter beside `path` and returns the new value, strictly above every
/// value any holder has ever been given for the path.
///
/// The counter is the directory `<lock>.fence` holding empty files named by values in
/// 20-digit decimal. Advancing it creates the file named one above the largest present with
/// `O_EXCL`, so two holders can never be given the same value and a value, once given, is
/// never given again — even by a holder that stalled between reading the counter and
/// advancing it while a successor took the lease over (a read-then-replace counter would let
/// that holder roll it back below its successor's value). The caller checks afterwards that
/// the lease is still its own. Files below the new value are pruned; the largest never is.
/// `mode` is the lock's marker mode: the directory gets it plus a search bit for each read bit.
pub(crate) fn next_fence(path: &Path, mode: u32) -> Result<u64, Error> {
    let counter = fence_path(path);
    let refused = |e: io::Error| {
        if dir::refused_directory(&e) {
            Error::protocol(&counter, "the fencing counter is not a directory")
        } else {
            Error::io(&counter, e)
        }
    };
    let bits = mode | ((mode & 0o444) >> 2);
    match dir::mkdir(&counter, bits) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(&counter, e)),
    }
    let directory = dir::Dir::open(&counter).map_err(refused)?;
    for _ in 0..FENCE_RACES {
        let names = directory.names().map_err(refused)?;
        let values: Vec<(u64, &OsStr)> = names
            .iter()
            .filter_map(|name| Some((fence_value(name)?, name.as_os_str())))
            .collect();
        let largest = values.iter().map(|(v, _)| *v).max().unwrap_or(0);
        crate::fault::point("lease.fence-read");
        let next = largest
            .checked_add(1)
            .ok_or_else(|| Error::protocol(&counter, "the fencing counter is exhausted"))?;
        match directory.create_write_only(OsStr::new(&format!("{next:020}")), 0o644) {
            Ok(_) => {
                for (value, name) in values {
                    if value < next {
                        // Best effort: a value left behind only costs a directory entry.
                        let _ = directory.unlink(name);
                    }
                }
                return Ok(next);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(refused(e)),
        }
    }
    Err(Error::protocol(
        &counter,
        "the fencing counter kept advancing under this holder",
    ))
}

/// The value a fencing counter entry stands for: exactly 20 ASCII digits.
fn fence_value(name: &OsStr) -> Option<u64> {
    let name = name.to_str()?;
    if name.len() != 20 || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// The invariant of the fence parser on any input, for the property tests and the fuzz
/// targets: it parses its input and panics if the parse breaks it.
#[cfg(any(test, feature = "fault-injection"))]
pub(crate) mod check {
    use super::*;

    /// `data` as an entry name in the fencing counter: a value only for the exact name the
    /// counter creates for it.
    pub(crate) fn fence(data: &[u8]) {
        if let Some(value) = name(data).and_then(fence_value) {
            assert_eq!(format!("{value:020}").as_bytes(), data);
        }
    }

    #[cfg(unix)]
    fn name(data: &[u8]) -> Option<&OsStr> {
        use std::os::unix::ffi::OsStrExt;
        Some(OsStr::from_bytes(data))
    }

    #[cfg(not(unix))]
    fn name(data: &[u8]) -> Option<&OsStr> {
        std::str::from_utf8(data).ok().map(OsStr::new)
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fence_names_we_create_parse_back(value in any::<u64>()) {
            let name = format!("{value:020}");
            prop_assert_eq!(fence_value(OsStr::new(&name)), Some(value));
        }

        #[test]
        fn other_names_are_exact_20_digit_values_or_nothing(
            name in prop_oneof!["[0-9]{18,22}", "[0-9+ -]{20}", "\\PC{0,24}"],
        ) {
            match fence_value(OsStr::new(&name)) {
                Some(value) => prop_assert_eq!(format!("{value:020}"), name),
                None => prop_assert!(
                    name.len() != 20
                        || !name.bytes().all(|b| b.is_ascii_digit())
                        || name.parse::<u64>().is_err()
                ),
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            check::fence(&bytes);
        }
    }
}
