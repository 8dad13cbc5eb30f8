//! Soft locks: a marker file whose existence is the lock, for file systems where `flock`
//! does not travel (NFS, SMB, Lustre, containers on different kernels).
//!
//! The on-disk formats are Python filelock 4.2's, so Python and Rust processes can share one
//! lock path. See [`record`] for the formats and [`marker`] for the file operations.

pub(crate) mod identity;
pub(crate) mod lease;
pub(crate) mod marker;
pub(crate) mod record;
mod recover;
pub(crate) mod rw;
pub(crate) mod strict;
mod strict_lock;

/// Whether `python3` can import `filelock`, for the unit tests that check the on-disk
/// formats against Python's (the integration tests install it; `scripts/setup` does for CI).
///
/// `ASYNC_FILELOCK_REQUIRE_PYTHON` turns a skip into a failure: `any` requires some
/// `filelock`, a version number requires exactly that one (CI runs the interop tests once
/// per verified version, picking it with `PYTHONPATH`).
#[cfg(all(test, unix))]
pub(crate) fn python_filelock() -> bool {
    let out = std::process::Command::new("python3")
        .args(["-c", "import filelock; print(filelock.__version__)"])
        .stderr(std::process::Stdio::null())
        .output();
    let version = match &out {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        _ => None,
    };
    match (
        std::env::var("ASYNC_FILELOCK_REQUIRE_PYTHON").ok(),
        &version,
    ) {
        (None, None) => {
            eprintln!("skipped: python3 with filelock is not available");
            false
        }
        (Some(_), None) => {
            panic!("ASYNC_FILELOCK_REQUIRE_PYTHON is set but python3 cannot import filelock")
        }
        (Some(want), Some(have)) if want != "any" && want != *have => {
            panic!("ASYNC_FILELOCK_REQUIRE_PYTHON={want} but python3 imports filelock {have}")
        }
        _ => true,
    }
}

/// Runs `python3 -c script args...` for the unit tests and returns what it printed; fails
/// the test with Python's stderr if the script failed.
#[cfg(all(test, unix))]
pub(crate) fn python_output<A: AsRef<std::ffi::OsStr>>(script: &str, args: &[A]) -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::acquire::{acquire_future, Limit, LockKind, WaitLoop};
use crate::error::Action;
use crate::holder::HeldBy;
use crate::local::Local;
use crate::lock::Place;
use crate::soft::identity::{host_name, own_pid, own_start, owner_is_current, owner_is_stale};
use crate::soft::lease::{Beat, Claim, Heartbeat, OnCompromise};
use crate::soft::marker::Marker;
use crate::soft::record::{parse_pid, Holder, OwnerMode, Record, STRICT_SENTINEL};
use crate::trace::debug;
use crate::wait_hook::{wait_hook_methods, WaitHook};
use crate::{sys, Backoff, Error};

pub use lease::{CompromiseReason, LeaseCompromise};
pub use rw::{
    SoftReadAcquire, SoftRwLock, SoftRwLockBuilder, SoftRwReadGuard, SoftRwWriteGuard,
    SoftWriteAcquire,
};
pub use strict::{ClaimState, StrictClaim};
pub use strict_lock::{
    AcquireStrict, StrictSoftFileLock, StrictSoftFileLockBuilder, StrictSoftFileLockGuard,
};

/// An unparsable marker is broken once it stayed unchanged this long (Python's
/// `MALFORMED_LOCK_AGE_THRESHOLD`): long enough that it is not a peer between creating its
/// marker and writing the record.
pub(crate) const MALFORMED_AGE: Duration = Duration::from_secs(2);

/// Watches a marker for change on this process's monotonic clock. The marker's times are
/// the writer's or the file server's clock, so comparing them with ours would let clock
/// skew expire a live marker; only "unchanged for how long, as we saw it" is safe.
#[derive(Default)]
pub(crate) struct Watch {
    /// The marker's change key when last seen changed, and when.
    seen: Mutex<Option<(ChangeKey, Instant)>>,
}

/// Modification time, inode and change time (see `sys::marker::change_key`).
type ChangeKey = (i128, u64, i128);

impl Watch {
    /// How long the marker described by `meta` has stayed unchanged as this process saw
    /// it; zero at first sight or after any change.
    pub(crate) fn unchanged_for(&self, meta: &sys::marker::Meta) -> Duration {
        let key = sys::marker::change_key(meta);
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        match *seen {
            Some((k, since)) if k == key => now - since,
            _ => {
                *seen = Some((key, now));
                Duration::ZERO
            }
        }
    }
}

/// What a soft lock writes and how it judges a peer's marker.
pub(crate) enum Flavor {
    /// Python's `SoftFileLock`: protocol 1, broken only on proof of the owner's death.
    Plain,
    /// Python's `SoftFileLease`: protocol 2 with `mode=lease`, also taken over once it has
    /// not been refreshed for its duration.
    Lease(LeaseOptions),
}

pub(crate) struct LeaseOptions {
    duration: Duration,
    heartbeat: Duration,
    on_compromise: Option<OnCompromise>,
}

/// One non-blocking attempt at a soft lock on `path`: create the marker, or take over a
/// stale one. `Ok(None)`: held by someone else. `token` is the lease token to publish.
pub(crate) fn attempt(
    path: &Path,
    mode: Option<u32>,
    flavor: &Flavor,
    watch: &Watch,
    token: Option<&str>,
) -> Result<Option<Marker>, Error> {
    let record = own_record(flavor, token);
    // The marker may vanish between our create and our look at it: then try once more.
    for _ in 0..2 {
        if let Some(marker) = marker::create(path, mode, &record)? {
            return Ok(Some(marker));
        }
        match judge(path, flavor, watch) {
            Ok(Verdict::Held) => return Ok(None),
            Ok(Verdict::Stale(meta, breaker)) => {
                // The dead owner may have been a breaker killed mid-exchange, with a live
                // holder's marker stranded under its break name: put that back instead.
                let live = |content: Option<&str>, breaker: u32| is_live(flavor, content, breaker);
                if let Some(breaker) = breaker {
                    if sys::marker::REMOVE_WHILE_OPEN
                        && recover::restore_stranded(path, breaker, &meta, &live)
                    {
                        return Ok(None);
                    }
                }
                return marker::take_over(path, &meta, mode, &record);
            }
            Ok(Verdict::Gone) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

fn own_record(flavor: &Flavor, token: Option<&str>) -> Vec<u8> {
    match flavor {
        Flavor::Plain => Holder {
            pid: own_pid(),
            host: host_name(),
            start: own_start(),
        }
        .encode(),
        Flavor::Lease(options) => Record {
            pid: own_pid(),
            host: host_name(),
            mode: OwnerMode::Lease,
            token: token.map(str::to_owned),
            duration: Some(options.duration.as_secs_f64()),
            start: own_start(),
        }
        .encode(),
    }
}

enum Verdict {
    Held,
    /// The marker (as it was judged) may be taken over; the pid is its owner's, or the
    /// breaker's named by a break placeholder.
    Stale(sys::marker::Meta, Option<u32>),
    Gone,
}

/// Whether a marker's content names a live holder other than `breaker` (used for a marker
/// found stranded under a dead breaker's name).
fn is_live(flavor: &Flavor, content: Option<&str>, breaker: u32) -> bool {
    let Some(content) = content else {
        return false;
    };
    if content.as_bytes() == STRICT_SENTINEL || content.is_empty() {
        return true;
    }
    let here = host_name();
    let live = |pid: u32, host: &str, start| {
        (pid != breaker || host != here) && !owner_is_stale(pid, host, start)
    };
    if let (Flavor::Lease(_), Some(r)) = (flavor, Record::parse(content)) {
        return r.mode == OwnerMode::Unknown || live(r.pid, &r.host, r.start);
    }
    Holder::parse(content).is_some_and(|h| live(h.pid, &h.host, h.start))
}

/// The breaker a break placeholder (`"filelock/break\n<pid>\n"`, which Python writes while
/// it removes a marker) names.
fn placeholder_breaker(content: Option<&str>) -> Option<u32> {
    let pid = content?
        .strip_prefix("filelock/break\n")?
        .strip_suffix('\n')?;
    parse_pid(pid)
}

/// Judges the marker at `path`, as Python's `_try_break_stale_lock` does. Read errors count
/// as "held": only proof breaks a marker.
fn judge(path: &Path, flavor: &Flavor, watch: &Watch) -> Result<Verdict, Error> {
    // Pin the node so its inode number cannot name a successor while we judge it.
    let pinned = match sys::marker::pin(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Verdict::Gone),
        Err(_) => return Ok(Verdict::Held),
    };
    let (content, meta) = match marker::read(path) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Verdict::Gone),
        Err(_) => return Ok(Verdict::Held),
    };
    if let Some((_, ino)) = &pinned {
        if *ino != sys::marker::id(&meta).1 {
            return Ok(Verdict::Held);
        }
    }
    let stale = |yes: bool, breaker: Option<u32>| {
        Ok(if yes {
            Verdict::Stale(meta.clone(), breaker)
        } else {
            Verdict::Held
        })
    };
    if let Flavor::Lease(options) = flavor {
        if let Some(owner) = content.as_deref().and_then(Record::parse) {
            if owner.mode != OwnerMode::Unknown
                && owner_is_stale(owner.pid, &owner.host, owner.start)
            {
                return stale(true, Some(owner.pid));
            }
            if owner.mode == OwnerMode::Lease {
                let ours = options.duration.as_secs_f64();
                let theirs = owner.duration.expect("a lease record has a duration");
                if theirs != ours {
                    return Err(Error::lease_mismatch(path, theirs, ours));
                }
                return stale(watch.unchanged_for(&meta) >= options.duration, None);
            }
            return stale(false, None);
        }
    }
    let content = match content {
        Some(c) if c.as_bytes() == STRICT_SENTINEL => return stale(false, None),
        // What writers before Python filelock 3.22 wrote, and what a holder shows between
        // creating its marker and writing it: held for as long as it exists.
        Some(c) if c.is_empty() => return stale(false, None),
        c => c,
    };
    match content.as_deref().and_then(Holder::parse) {
        Some(h) => stale(owner_is_stale(h.pid, &h.host, h.start), Some(h.pid)),
        // Unparsable, unreadable or not a regular file: self-heals once it stayed unchanged.
        None => stale(
            watch.unchanged_for(&meta) >= MALFORMED_AGE,
            placeholder_breaker(content.as_deref()),
        ),
    }
}

/// Describes the holder at `path` if this host cannot probe it: a marker from another host,
/// or one that records no owner.
pub(crate) fn unprobeable_holder(path: &Path) -> Option<String> {
    let (content, _) = marker::read(path).ok()?;
    let content = content?;
    if content.is_empty() {
        return Some(
            "an owner that recorded no pid (a writer older than Python filelock 3.22, or one \
             still writing its record)"
                .into(),
        );
    }
    let (pid, host) = match Record::parse(&content) {
        Some(r) => (r.pid, r.host),
        None => {
            let h = Holder::parse(&content)?;
            (h.pid, h.host)
        }
    };
    (host != host_name()).then(|| format!("pid {pid} on {}", host.escape_debug()))
}

/// Who a soft lock's marker names.
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    pid: u32,
    host: String,
    start: Option<String>,
    mode: OwnerMode,
    token: Option<String>,
    lease_duration: Option<f64>,
}

impl Owner {
    /// Reads the owner of the marker at `path`; `None` when there is none or it does not
    /// parse.
    fn read(path: &Path) -> Result<Option<Owner>, Error> {
        let content = match marker::read(path) {
            Ok((content, _)) => content,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let Some(content) = content else {
            return Ok(None);
        };
        if let Some(r) = Record::parse(&content) {
            return Ok(Some(Owner {
                pid: r.pid,
                host: r.host,
                start: r.start.map(|t| t.to_string()),
                mode: r.mode,
                token: r.token,
                lease_duration: r.duration,
            }));
        }
        Ok(Holder::parse(&content).map(|h| Owner {
            pid: h.pid,
            host: h.host,
            start: h.start.map(|t| t.to_string()),
            mode: OwnerMode::Exclusive,
            token: None,
            lease_duration: None,
        }))
    }

    /// The owner's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The owner's host, as recorded: escaped, and on Linux with a `?pidns-<hex>` suffix when
    /// it ran in a PID namespace other than the host's.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The owner's process start token (decimal), which tells a recycled pid apart.
    pub fn start(&self) -> Option<&str> {
        self.start.as_deref()
    }

    /// What the owner is doing: a protocol 1 marker reads as
    /// [`Exclusive`](OwnerMode::Exclusive).
    pub fn mode(&self) -> OwnerMode {
        self.mode
    }

    /// The claim token of a lease.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The duration a lease was published with.
    pub fn lease_duration(&self) -> Option<Duration> {
        self.lease_duration
            .and_then(|d| Duration::try_from_secs_f64(d).ok())
    }

    /// Whether the owner is on this host (only then can its liveness be probed).
    pub fn is_this_host(&self) -> bool {
        self.host == host_name()
    }

    fn is_us(&self) -> bool {
        let start = self.start.as_deref().and_then(record::Token::parse);
        owner_is_current(self.pid, &self.host, start)
    }
}

/// A soft lock as the waiting loop sees it.
pub(crate) struct Soft {
    place: Place,
    timeout: Option<Duration>,
    backoff: Backoff,
    mode: Option<u32>,
    wait_hook: Option<WaitHook>,
    flavor: Flavor,
    watch: Watch,
    /// The latest hold's shared state (a lease's compromise outlives its release).
    last: Mutex<Option<Arc<Claim>>>,
}

/// Proof that a soft lock is held; dropping it releases the lock.
pub(crate) struct SoftHeld {
    marker: Option<Marker>,
    lease: Option<LeaseHold>,
}

struct LeaseHold {
    token: String,
    fence: u64,
    claim: Arc<Claim>,
    heartbeat: Option<Heartbeat>,
}

impl SoftHeld {
    fn release(&mut self) -> Result<(), Error> {
        if let Some(lease) = &mut self.lease {
            // Stop refreshing before the marker goes.
            lease.heartbeat = None;
        }
        match self.marker.take() {
            Some(marker) => marker.release().map_err(|e| e.during(Action::Release)),
            None => Ok(()),
        }
    }
}

impl Drop for SoftHeld {
    /// A hold dropped unreleased (a late success whose future is gone) stops its heartbeat
    /// before its marker goes.
    fn drop(&mut self) {
        let _ = self.release();
    }
}

impl LockKind for Soft {
    type Held = SoftHeld;
    type Claim = ();
    const ATTEMPT_BLOCKS: bool = sys::ATTEMPT_BLOCKS;

    fn prepare(&self) -> Result<Arc<Local>, Error> {
        self.place.prepare()
    }

    fn path(&self) -> &Path {
        self.place.resolved_path()
    }

    fn attempt(&self, _shared: bool, _claim: &mut ()) -> Result<Option<SoftHeld>, Error> {
        let path = self.place.resolved_path();
        let Flavor::Lease(options) = &self.flavor else {
            let marker = attempt(path, self.mode, &self.flavor, &self.watch, None)?;
            return Ok(marker.map(|m| SoftHeld {
                marker: Some(m),
                lease: None,
            }));
        };
        let token = marker::random_hex();
        let Some(marker) = attempt(path, self.mode, &self.flavor, &self.watch, Some(&token))?
        else {
            return Ok(None);
        };
        let mut held = SoftHeld {
            marker: Some(marker),
            lease: None,
        };
        crate::fault::point("lease.before-fence");
        let fence = match lease::next_fence(path, self.mode.unwrap_or(marker::DEFAULT_MODE)) {
            Ok(fence) => fence,
            Err(e) => {
                let _ = held.release();
                return Err(e);
            }
        };
        // A holder that stalled past the duration between creating its marker and advancing
        // the fence may have been taken over, and the successor's fence may be below ours:
        // the fence counts only if the path still names our marker after advancing it.
        let ours = held.marker.as_ref().expect("just acquired").id();
        if !sys::marker::lstat(path).is_ok_and(|m| sys::marker::id(&m) == ours) {
            let _ = held.release();
            return Ok(None);
        }
        let claim = Arc::new(Claim::default());
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(claim.clone());
        let beat = Beat {
            path: path.to_path_buf(),
            token: token.clone(),
            fence,
            interval: options.heartbeat,
            duration: options.duration,
            on_compromise: options.on_compromise.clone(),
        };
        let marker = held.marker.as_ref().expect("just acquired");
        let heartbeat = match Heartbeat::start(beat, marker, claim.clone()) {
            Ok(h) => h,
            Err(e) => {
                let _ = held.release();
                return Err(Error::io(path, e).with_detail("cannot start the lease heartbeat"));
            }
        };
        held.lease = Some(LeaseHold {
            token,
            fence,
            claim,
            heartbeat: Some(heartbeat),
        });
        Ok(Some(held))
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn backoff(&self) -> Backoff {
        self.backoff
    }

    fn watch(&self, local: &Arc<Local>) -> bool {
        // A holder's release removes its marker; a takeover of an expired lease or a dead
        // owner's marker is this waiter's own doing, on its timer.
        local.watch(&[sys::watch::Target::Removed(self.place.resolved_path())])
    }

    fn holder(&self) -> Option<HeldBy> {
        unprobeable_holder(self.place.resolved_path()).map(HeldBy::Unprobeable)
    }

    fn wait_hook(&self) -> Option<&WaitHook> {
        self.wait_hook.as_ref()
    }
}

impl Soft {
    fn new(path: &Path, options: Options, flavor: Flavor) -> Soft {
        Soft {
            place: Place::new(path),
            timeout: options.timeout,
            backoff: options.backoff,
            mode: options.mode,
            wait_hook: options.wait_hook,
            flavor,
            watch: Watch::default(),
            last: Mutex::new(None),
        }
    }

    fn inline(self: &Arc<Self>, limit: Limit) -> Result<SoftHeld, Error> {
        WaitLoop::new(self.clone(), false, limit).block()
    }

    /// The path operations use: resolved if the lock has been used, else as given.
    fn op_path(&self) -> &Path {
        self.place.resolved_path()
    }
}

/// Options every soft lock shares.
#[derive(Debug, Clone, Default)]
struct Options {
    timeout: Option<Duration>,
    backoff: Backoff,
    mode: Option<u32>,
    wait_hook: Option<WaitHook>,
}

fn check_mode(path: &Path, mode: Option<u32>) -> Result<(), Error> {
    let Some(mode) = mode else { return Ok(()) };
    let fail = |why: String| {
        Err(Error::invalid(why)
            .with_path(path)
            .during(Action::Configure))
    };
    if mode & !0o777 != 0 {
        return fail(format!("mode {mode:#o} has bits outside 0o777"));
    }
    if mode & 0o600 != 0o600 {
        return fail(format!(
            "mode {mode:#o} does not let the owner read and write the marker"
        ));
    }
    Ok(())
}

/// A soft lock: a marker file whose existence is the lock, on-disk compatible with Python
/// filelock's `SoftFileLock`.
///
/// Use it where `flock` does not travel: NFS, SMB, Lustre, or containers with different
/// kernels sharing a volume. The marker is created exclusively (never through a symbolic
/// link, without group or other write) and holds `<pid>\n<host>\n<start token>\n`.
///
/// # Stale markers
///
/// A marker left by a crashed holder is broken only on **proof** that its owner is dead:
/// same host, and the pid is gone or now belongs to a process with another start time (a
/// recycled pid). A marker from another host is never broken (a timeout names it, as in
/// "pid 7 on build-host"); an empty marker is held forever; an unparsable one (or a
/// symbolic link, FIFO or directory at the path) is removed once it stayed unchanged for 2
/// seconds on this process's clock.
///
/// The break is race-free: the stale marker is atomically *exchanged* with a complete marker
/// of ours (`renameat2(RENAME_EXCHANGE)` on Linux, `renamex_np(RENAME_SWAP)` on macOS), so
/// the path is never empty and two breakers cannot both win; the file taken out is checked
/// to be the one judged, and put back if not. Where the file system refuses an exchange
/// (NFS, SMB, overlayfs), the stale marker is **left in place**, as Python does: removing it
/// by name could remove a marker created after the judgement. The wait then ends with its
/// timeout, or with [`break_lock`](SoftFileLock::break_lock) by an operator.
///
/// # Examples
///
/// ```
/// use async_filelock::SoftFileLock;
///
/// # futures_lite::future::block_on(async {
/// let lock = SoftFileLock::new(std::env::temp_dir().join("doc-soft.lock"));
/// let guard = lock.acquire().await?;
/// assert!(lock.is_held_by_us());
/// assert_eq!(lock.owner()?.unwrap().pid(), std::process::id());
/// guard.release()?;
/// # Ok::<(), async_filelock::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct SoftFileLock {
    soft: Arc<Soft>,
}

impl SoftFileLock {
    /// Creates a soft lock on `path` with default options (wait forever, default backoff).
    /// No I/O happens here.
    pub fn new(path: impl AsRef<Path>) -> SoftFileLock {
        SoftFileLock {
            soft: Arc::new(Soft::new(path.as_ref(), Options::default(), Flavor::Plain)),
        }
    }

    /// Starts building a soft lock with options.
    pub fn builder(path: impl AsRef<Path>) -> SoftFileLockBuilder {
        SoftFileLockBuilder {
            path: path.as_ref().to_path_buf(),
            options: Options::default(),
        }
    }

    /// The marker's path, as given.
    pub fn path(&self) -> &Path {
        &self.soft.place.path
    }

    /// The default time limit of an acquisition (`None`: wait until acquired).
    pub fn timeout(&self) -> Option<Duration> {
        self.soft.timeout
    }

    /// Waits until the marker is ours.
    ///
    /// # Errors
    ///
    /// [`Timeout`](crate::ErrorKind::Timeout) (naming a holder this host cannot probe, see
    /// [`Error::holder`]), or an error about the path: a directory, no permission, a bad
    /// path.
    pub fn acquire(&self) -> AcquireSoft {
        AcquireSoft {
            wait: WaitLoop::new(self.soft.clone(), false, Limit::Default),
        }
    }

    /// Makes one attempt, without waiting.
    ///
    /// # Errors
    ///
    /// [`WouldBlock`](crate::ErrorKind::WouldBlock) when the marker is held; otherwise as
    /// [`acquire`](SoftFileLock::acquire).
    pub fn try_acquire(&self) -> Result<SoftFileLockGuard, Error> {
        self.soft
            .inline(Limit::Once)
            .map(|held| SoftFileLockGuard::new(self.soft.clone(), held))
    }

    pub(crate) fn acquire_blocking(&self, limit: Limit) -> Result<SoftFileLockGuard, Error> {
        self.soft
            .inline(limit)
            .map(|held| SoftFileLockGuard::new(self.soft.clone(), held))
    }

    pub(crate) fn queue(&self) -> Result<Arc<Local>, Error> {
        self.soft.prepare()
    }

    /// The owner the marker names, or `None` when there is no marker or it does not parse.
    ///
    /// # Errors
    ///
    /// When the marker exists but cannot be read.
    pub fn owner(&self) -> Result<Option<Owner>, Error> {
        Owner::read(self.soft.op_path())
    }

    /// Whether the marker names this process (pid, host and start token).
    pub fn is_held_by_us(&self) -> bool {
        matches!(self.owner(), Ok(Some(o)) if o.is_us())
    }

    /// Removes the marker whoever holds it; `Ok(true)` if there was one.
    ///
    /// This voids mutual exclusion: a live holder keeps running and keeps using what the
    /// lock protects. It is for an operator clearing a marker whose holder is known to be
    /// gone (one on another host, or an empty one).
    ///
    /// # Errors
    ///
    /// When the path is a directory or the marker cannot be removed.
    pub fn break_lock(&self) -> Result<bool, Error> {
        marker::break_lock(self.soft.op_path())
    }
}

impl fmt::Debug for SoftFileLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftFileLock")
            .field("path", &self.soft.place.path)
            .field("timeout", &self.soft.timeout)
            .field("backoff", &self.soft.backoff)
            .field("mode", &self.soft.mode.map(|m| format!("{m:#o}")))
            .finish()
    }
}

/// Options for a [`SoftFileLock`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct SoftFileLockBuilder {
    path: std::path::PathBuf,
    options: Options,
}

impl SoftFileLockBuilder {
    /// The default time limit of an acquisition.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// The pause between attempts while another process holds the marker.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.options.backoff = backoff;
        self
    }

    /// The marker's permissions; group and other write are always removed, since peers act
    /// on the record it holds.
    pub fn mode(mut self, mode: u32) -> Self {
        self.options.mode = Some(mode);
        self
    }

    wait_hook_methods!(options.wait_hook);

    /// Checks the options and builds the lock.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) for an invalid mode or backoff.
    pub fn build(self) -> Result<SoftFileLock, Error> {
        validate(&self.path, &self.options)?;
        Ok(SoftFileLock {
            soft: Arc::new(Soft::new(&self.path, self.options, Flavor::Plain)),
        })
    }
}

fn validate(path: &Path, options: &Options) -> Result<(), Error> {
    options
        .backoff
        .validate()
        .map_err(|e| e.with_path(path).during(Action::Configure))?;
    WaitHook::validate(options.wait_hook.as_ref())
        .map_err(|e| e.with_path(path).during(Action::Configure))?;
    check_mode(path, options.mode)
}

acquire_future!(
    /// The future returned by [`SoftFileLock::acquire`]; resolves to the guard.
    ///
    /// Dropping it before it completes leaves nothing behind (a marker it created during
    /// the poll that completed is released with the guard it would have returned).
    AcquireSoft,
    Soft,
    SoftFileLockGuard,
    SoftFileLockGuard::new
);

/// Proof that a [`SoftFileLock`] is held; dropping it removes the marker.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct SoftFileLockGuard {
    soft: Arc<Soft>,
    held: SoftHeld,
}

impl SoftFileLockGuard {
    fn new(soft: Arc<Soft>, held: SoftHeld) -> SoftFileLockGuard {
        SoftFileLockGuard { soft, held }
    }

    /// The marker's absolute path.
    pub fn path(&self) -> &Path {
        self.soft.place.resolved_path()
    }

    /// Releases the lock now: removes the marker if the path still names it.
    ///
    /// # Errors
    ///
    /// When the marker could not be removed (it is gone from the lock either way: a stale
    /// marker of ours is broken by peers).
    pub fn release(mut self) -> Result<(), Error> {
        self.release_now()
    }

    fn release_now(&mut self) -> Result<(), Error> {
        if self.held.marker.is_none() {
            return Ok(());
        }
        let result = self.held.release();
        self.soft.place.local().released(false);
        debug!(path = ?self.soft.place.resolved_path(), ok = result.is_ok(), "soft lock released");
        result
    }
}

impl Drop for SoftFileLockGuard {
    fn drop(&mut self) {
        let _ = self.release_now();
    }
}

impl fmt::Debug for SoftFileLockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftFileLockGuard")
            .field("path", &self.path())
            .finish()
    }
}

/// A lease: a soft lock that peers may take over once its holder stops refreshing it, on-disk
/// compatible with Python filelock's `SoftFileLease`.
///
/// While held, a heartbeat thread touches the marker every
/// [`heartbeat_interval`](SoftFileLeaseBuilder::heartbeat_interval) (a third of the duration
/// by default). A contender takes the marker over once it has seen it unchanged for the
/// lease's [`duration`](SoftFileLeaseBuilder::duration) on its *own* monotonic clock, so clock
/// skew between hosts cannot expire a live lease; a dead owner on this host is taken over at
/// once. Every contender for a path must use the same duration: a different one is a
/// [`LeaseMismatch`](crate::ErrorKind::LeaseMismatch) error.
///
/// A lease trades exclusion for progress: a holder that stalls past its duration keeps
/// running while a successor holds the lease. It learns of the loss through
/// [`SoftFileLeaseGuard::compromise`], the [`on_compromise`](SoftFileLeaseBuilder::on_compromise)
/// callback, and [`SoftFileLease::compromise`] (which outlives the release). To make a
/// resource reject a superseded holder, pass it [`SoftFileLeaseGuard::fence`]: a fencing
/// token that strictly increases across successive holders of the path, even when a stalled
/// holder resumes after a successor took over (kept in the directory `<lock>.fence` beside
/// the marker as one file per value, advanced by each holder as it takes the lease).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use async_filelock::SoftFileLease;
///
/// # futures_lite::future::block_on(async {
/// let lease = SoftFileLease::builder(std::env::temp_dir().join("doc-lease.lock"))
///     .duration(Duration::from_secs(10))
///     .build()?;
/// let first = lease.acquire().await?;
/// let fence = first.fence();
/// first.release()?;
/// let second = lease.acquire().await?;
/// assert!(second.fence() > fence);
/// assert!(second.compromise().is_none());
/// # Ok::<(), async_filelock::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct SoftFileLease {
    soft: Arc<Soft>,
}

impl SoftFileLease {
    /// Creates a lease on `path` with the default duration (30 s) and heartbeat (10 s).
    pub fn new(path: impl AsRef<Path>) -> SoftFileLease {
        SoftFileLease::builder(path)
            .build()
            .expect("the default options are valid")
    }

    /// Starts building a lease with options.
    pub fn builder(path: impl AsRef<Path>) -> SoftFileLeaseBuilder {
        SoftFileLeaseBuilder {
            path: path.as_ref().to_path_buf(),
            options: Options::default(),
            duration: Duration::from_secs(30),
            heartbeat: None,
            on_compromise: None,
        }
    }

    fn lease(&self) -> &LeaseOptions {
        match &self.soft.flavor {
            Flavor::Lease(options) => options,
            Flavor::Plain => unreachable!("a SoftFileLease is built with lease options"),
        }
    }

    /// The marker's path, as given.
    pub fn path(&self) -> &Path {
        &self.soft.place.path
    }

    /// How long a peer must see the marker unrefreshed before it may take the lease.
    pub fn duration(&self) -> Duration {
        self.lease().duration
    }

    /// How often the holder refreshes the marker.
    pub fn heartbeat_interval(&self) -> Duration {
        self.lease().heartbeat
    }

    /// Waits until the lease is ours.
    ///
    /// # Errors
    ///
    /// As [`SoftFileLock::acquire`], plus [`LeaseMismatch`](crate::ErrorKind::LeaseMismatch)
    /// when a live lease on the path was published with another duration.
    pub fn acquire(&self) -> AcquireLease {
        AcquireLease {
            wait: WaitLoop::new(self.soft.clone(), false, Limit::Default),
        }
    }

    /// Makes one attempt, without waiting.
    ///
    /// # Errors
    ///
    /// [`WouldBlock`](crate::ErrorKind::WouldBlock) when another holder has the lease;
    /// otherwise as [`acquire`](SoftFileLease::acquire).
    pub fn try_acquire(&self) -> Result<SoftFileLeaseGuard, Error> {
        self.acquire_blocking(Limit::Once)
    }

    pub(crate) fn acquire_blocking(&self, limit: Limit) -> Result<SoftFileLeaseGuard, Error> {
        self.soft
            .inline(limit)
            .map(|held| SoftFileLeaseGuard::new(self.soft.clone(), held))
    }

    pub(crate) fn queue(&self) -> Result<Arc<Local>, Error> {
        self.soft.prepare()
    }

    /// The default time limit of an acquisition (`None`: wait until acquired).
    pub fn timeout(&self) -> Option<Duration> {
        self.soft.timeout
    }

    /// The owner the marker names, or `None` when there is no marker or it does not parse.
    ///
    /// # Errors
    ///
    /// When the marker exists but cannot be read.
    pub fn owner(&self) -> Result<Option<Owner>, Error> {
        Owner::read(self.soft.op_path())
    }

    /// Whether the marker names this process.
    pub fn is_held_by_us(&self) -> bool {
        matches!(self.owner(), Ok(Some(o)) if o.is_us())
    }

    /// Removes the marker whoever holds it (see [`SoftFileLock::break_lock`]); `Ok(true)` if
    /// there was one.
    ///
    /// # Errors
    ///
    /// When the path is a directory or the marker cannot be removed.
    pub fn force_break(&self) -> Result<bool, Error> {
        marker::break_lock(self.soft.op_path())
    }

    /// How the latest hold through this lease was lost, if it was. It outlives the release,
    /// so a holder can check afterwards whether its work may have overlapped a successor;
    /// the next acquisition resets it.
    pub fn compromise(&self) -> Option<LeaseCompromise> {
        self.soft
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|c| c.compromise())
    }
}

impl fmt::Debug for SoftFileLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftFileLease")
            .field("path", &self.soft.place.path)
            .field("duration", &self.duration())
            .field("heartbeat_interval", &self.heartbeat_interval())
            .field("timeout", &self.soft.timeout)
            .finish()
    }
}

/// Options for a [`SoftFileLease`].
#[derive(Clone)]
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct SoftFileLeaseBuilder {
    path: std::path::PathBuf,
    options: Options,
    duration: Duration,
    heartbeat: Option<Duration>,
    on_compromise: Option<OnCompromise>,
}

impl SoftFileLeaseBuilder {
    /// The default time limit of an acquisition.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// The pause between attempts while another process holds the lease.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.options.backoff = backoff;
        self
    }

    /// The marker's permissions (group and other write are always removed).
    pub fn mode(mut self, mode: u32) -> Self {
        self.options.mode = Some(mode);
        self
    }

    wait_hook_methods!(options.wait_hook);

    /// How long peers must see the marker unrefreshed before they may take the lease
    /// (default 30 s). Every contender for a path must agree on it.
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// How often the holder refreshes its marker; shorter than the duration (default: a
    /// third of it, which leaves room for two missed refreshes).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat = Some(interval);
        self
    }

    /// Called, from the heartbeat thread, when a held lease is lost. The holder should stop
    /// touching what the lease protects.
    pub fn on_compromise(
        mut self,
        callback: impl Fn(&LeaseCompromise) + Send + Sync + 'static,
    ) -> Self {
        self.on_compromise = Some(Arc::new(callback));
        self
    }

    /// Checks the options and builds the lease.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) for a zero duration, a heartbeat
    /// not shorter than the duration, or an invalid mode or backoff.
    pub fn build(self) -> Result<SoftFileLease, Error> {
        validate(&self.path, &self.options)?;
        let fail = |why: String| {
            Err(Error::invalid(why)
                .with_path(&self.path)
                .during(Action::Configure))
        };
        if self.duration.is_zero() {
            return fail("the lease duration must be positive".into());
        }
        let heartbeat = self.heartbeat.unwrap_or(self.duration / 3);
        if heartbeat.is_zero() || heartbeat >= self.duration {
            return fail(format!(
                "the heartbeat interval ({heartbeat:?}) must be positive and shorter than the lease duration ({:?})",
                self.duration
            ));
        }
        let flavor = Flavor::Lease(LeaseOptions {
            duration: self.duration,
            heartbeat,
            on_compromise: self.on_compromise,
        });
        Ok(SoftFileLease {
            soft: Arc::new(Soft::new(&self.path, self.options, flavor)),
        })
    }
}

impl fmt::Debug for SoftFileLeaseBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftFileLeaseBuilder")
            .field("path", &self.path)
            .field("duration", &self.duration)
            .field("heartbeat_interval", &self.heartbeat)
            .field("on_compromise", &self.on_compromise.is_some())
            .finish()
    }
}

acquire_future!(
    /// The future returned by [`SoftFileLease::acquire`]; resolves to the guard.
    AcquireLease,
    Soft,
    SoftFileLeaseGuard,
    SoftFileLeaseGuard::new
);

/// Proof that a [`SoftFileLease`] is held; dropping it stops the heartbeat and removes the
/// marker.
#[must_use = "the lease is released as soon as the guard is dropped"]
pub struct SoftFileLeaseGuard {
    inner: SoftFileLockGuard,
}

impl SoftFileLeaseGuard {
    fn new(soft: Arc<Soft>, held: SoftHeld) -> SoftFileLeaseGuard {
        SoftFileLeaseGuard {
            inner: SoftFileLockGuard::new(soft, held),
        }
    }

    fn hold(&self) -> &LeaseHold {
        self.inner
            .held
            .lease
            .as_ref()
            .expect("a lease guard holds a lease")
    }

    /// The marker's absolute path.
    pub fn path(&self) -> &Path {
        self.inner.path()
    }

    /// The token naming this claim in the marker (32 hex digits, as Python writes it). It
    /// identifies the claim; use [`fence`](SoftFileLeaseGuard::fence) to order claims.
    pub fn token(&self) -> &str {
        &self.hold().token
    }

    /// The fencing token of this hold: strictly greater than that of every earlier holder
    /// of this path that used this crate. Hand it to the protected resource with each
    /// write, and have the resource refuse writes carrying a smaller one.
    pub fn fence(&self) -> u64 {
        self.hold().fence
    }

    /// How this hold was lost, if the heartbeat has seen it lost.
    pub fn compromise(&self) -> Option<LeaseCompromise> {
        self.hold().claim.compromise()
    }

    /// Whether this hold was lost.
    pub fn is_compromised(&self) -> bool {
        self.compromise().is_some()
    }

    /// Stops the heartbeat and removes the marker if the path still names it.
    ///
    /// # Errors
    ///
    /// As [`SoftFileLockGuard::release`].
    pub fn release(self) -> Result<(), Error> {
        self.inner.release()
    }
}

impl fmt::Debug for SoftFileLeaseGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftFileLeaseGuard")
            .field("path", &self.path())
            .field("fence", &self.fence())
            .field("compromised", &self.is_compromised())
            .finish()
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// A pid that no process has: a child that already exited and was reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    fn record(pid: u32) -> Vec<u8> {
        Holder {
            pid,
            host: host_name(),
            start: None,
        }
        .encode()
    }

    #[test]
    fn a_live_marker_stranded_by_a_dead_breaker_is_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stranded.lock");
        let breaker = dead_pid();
        // The dead breaker's marker sits at the path; the live holder's (this process's)
        // waits under the breaker's break name.
        std::fs::write(&path, record(breaker)).unwrap();
        let aside = dir
            .path()
            .join(format!("stranded.lock.break.{breaker}.{}", "ab".repeat(16)));
        let live = record(own_pid());
        std::fs::write(&aside, &live).unwrap();

        let taken = attempt(&path, None, &Flavor::Plain, &Watch::default(), None).unwrap();
        assert!(taken.is_none(), "the live holder keeps the lock");
        assert_eq!(std::fs::read(&path).unwrap(), live, "its marker is back");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "no break or restore file is left: {left:?}");
    }

    #[test]
    fn a_dead_marker_stranded_by_a_dead_breaker_is_cleared_and_the_lock_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stranded.lock");
        let breaker = dead_pid();
        std::fs::write(&path, record(breaker)).unwrap();
        let aside = dir
            .path()
            .join(format!("stranded.lock.break.{breaker}.{}", "cd".repeat(16)));
        std::fs::write(&aside, record(dead_pid())).unwrap();

        let taken = attempt(&path, None, &Flavor::Plain, &Watch::default(), None).unwrap();
        let marker = taken.expect("nothing live was stranded, so the lock is ours");
        assert_eq!(std::fs::read(&path).unwrap(), record_of_us());
        assert!(!aside.exists(), "the dead stranded marker is removed");
        marker.release().unwrap();
        assert!(!path.exists());
    }

    fn record_of_us() -> Vec<u8> {
        Holder {
            pid: own_pid(),
            host: host_name(),
            start: own_start(),
        }
        .encode()
    }

    #[test]
    fn a_marker_dropped_unreleased_is_released() {
        // As when the pool finishes an attempt whose future was dropped.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dropped.lock");
        let marker = attempt(&path, None, &Flavor::Plain, &Watch::default(), None).unwrap();
        assert!(marker.is_some() && path.exists());
        drop(marker);
        assert!(!path.exists(), "dropping the marker removed it");
    }

    #[test]
    fn concurrent_breakers_in_threads_never_both_hold() {
        // Many threads race to break one dead marker, repeatedly; at most one holds at once.
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join("race.lock"));
        let holders = Arc::new(AtomicUsize::new(0));
        for _round in 0..20 {
            std::fs::write(&*path, record(dead_pid())).unwrap();
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let (path, holders) = (path.clone(), holders.clone());
                    std::thread::spawn(move || {
                        let watch = Watch::default();
                        let got = attempt(&path, None, &Flavor::Plain, &watch, None).unwrap();
                        if let Some(marker) = got {
                            assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                            std::thread::sleep(Duration::from_millis(2));
                            holders.fetch_sub(1, Ordering::SeqCst);
                            marker.release().unwrap();
                            1
                        } else {
                            0
                        }
                    })
                })
                .collect();
            let won: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
            assert!(won >= 1, "someone breaks the dead marker");
            let _ = std::fs::remove_file(&*path);
            let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
            assert!(leftovers.is_empty(), "no break files are left behind");
        }
    }
}
