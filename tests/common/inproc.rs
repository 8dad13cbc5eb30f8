//! Helpers for the in-process integration tests (semantics, cancel, bad_input, blocking):
//! polling a future by hand, joining futures without a runtime, spawning on the runtime under
//! test, hang detection, probes of the OS lock from outside the crate, and snapshots of a
//! directory tree.
//!
//! Include with `mod common; #[path = "common/inproc.rs"] mod inproc;`.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::fs::{File, TryLockError};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::common::{Runtime, HANG};

/// A boxed, sendable future.
pub type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Boxes a future.
pub fn boxed<T, F: Future<Output = T> + Send + 'static>(f: F) -> BoxFut<T> {
    Box::pin(f)
}

/// Polls `f` once with a waker that does nothing: `Some(output)` if it completed.
///
/// Used to put an `Acquire` into the queue (its first poll enqueues it) at a known moment.
pub fn poll_now<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(f).poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// Polls `f` once with a waker that counts its wakes.
pub fn poll_counting<F: Future + Unpin>(
    f: &mut F,
    wakes: &std::sync::Arc<WakeCounter>,
) -> Option<F::Output> {
    let waker = Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);
    match Pin::new(f).poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// A waker that counts how often it was woken.
#[derive(Debug, Default)]
pub struct WakeCounter(std::sync::atomic::AtomicUsize);

impl WakeCounter {
    pub fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl std::task::Wake for WakeCounter {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Drives every future to completion, concurrently, inside the calling task; returns their
/// outputs in the order given. Needs no runtime.
pub async fn join_all<T>(futs: Vec<BoxFut<T>>) -> Vec<T> {
    let mut futs: Vec<Option<BoxFut<T>>> = futs.into_iter().map(Some).collect();
    let mut out: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx| {
        let mut pending = false;
        for (slot, result) in futs.iter_mut().zip(out.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *result = Some(v);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(out.iter_mut().map(|r| r.take().expect("done")).collect())
        }
    })
    .await
}

/// Runs `f` as a separate task of the runtime under test (a thread of its own for
/// `Runtime::BlockOn`); the returned future yields its output. Must be called from inside
/// `rt.run(...)`.
pub fn spawn<T, F>(rt: Runtime, f: F) -> BoxFut<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    match rt {
        Runtime::TokioCurrentThread | Runtime::TokioMultiThread => {
            let h = tokio::spawn(f);
            boxed(async move { h.await.expect("spawned task failed") })
        }
        Runtime::Smol => boxed(smol::spawn(f)),
        Runtime::BlockOn => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                let _ = tx.send(futures_lite::future::block_on(f));
            });
            boxed(async move { rx.await.expect("spawned thread failed") })
        }
    }
}

/// Fails the test if `f` does not complete within [`HANG`].
pub async fn no_hang<F: Future>(what: &str, f: F) -> F::Output {
    no_hang_within(HANG, what, f).await
}

/// Fails the test if `f` does not complete within `limit`.
pub async fn no_hang_within<F: Future>(limit: Duration, what: &str, f: F) -> F::Output {
    futures_lite::future::or(f, hang_after(limit, what)).await
}

async fn hang_after<T>(limit: Duration, what: &str) -> T {
    async_io::Timer::after(limit).await;
    panic!("hang: {what} did not complete within {limit:?}");
}

/// Wraps a future and sends one message through `tx` the first time it returns `Pending`, so
/// that a test knows the future has reached its first wait (for an `Acquire`: it is queued,
/// or backing off) before the test changes anything. If the future completes at once, `tx`
/// is dropped unsent, and the receiver sees an error.
pub struct SignalPending<F> {
    inner: F,
    tx: Option<tokio::sync::oneshot::Sender<()>>,
}

impl<F> SignalPending<F> {
    pub fn new(inner: F, tx: tokio::sync::oneshot::Sender<()>) -> SignalPending<F> {
        SignalPending {
            inner,
            tx: Some(tx),
        }
    }
}

impl<F: Future + Unpin> Future for SignalPending<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll(cx);
        if r.is_pending() {
            if let Some(tx) = this.tx.take() {
                let _ = tx.send(());
            }
        } else {
            this.tx = None;
        }
        r
    }
}

/// Opens `path` for a probe from outside the crate, without creating it (read-only if this
/// user may not write it: a lock needs no write access).
fn probe_file(path: &Path) -> Option<File> {
    File::options()
        .read(true)
        .write(true)
        .open(path)
        .or_else(|_| File::open(path))
        .ok()
}

/// Whether an exclusive OS lock on `path` can be taken right now by someone outside this
/// crate (as another process would). A missing file counts as free.
pub fn foreign_can_lock(path: &Path) -> bool {
    foreign_probe(path, File::try_lock)
}

/// Whether a shared OS lock on `path` can be taken right now from outside the crate.
pub fn foreign_can_lock_shared(path: &Path) -> bool {
    foreign_probe(path, File::try_lock_shared)
}

fn foreign_probe(path: &Path, try_lock: fn(&File) -> Result<(), TryLockError>) -> bool {
    let Some(f) = probe_file(path) else {
        return true;
    };
    match try_lock(&f) {
        Ok(()) => {
            // Closing the file releases the lock; an unlock error is not the point here (Wine
            // reports a spurious lock violation for a lock the handle holds).
            let _ = f.unlock();
            true
        }
        Err(TryLockError::WouldBlock) => false,
        Err(TryLockError::Error(e)) => panic!("probe lock on {path:?}: {e}"),
    }
}

/// Asserts that nothing holds the lock on `path` and nobody waits for it in this process: an
/// outside probe can lock the file, and a fresh `try_acquire` (which fails while any waiter is
/// queued in this process) succeeds.
///
/// Where attempts run on a thread pool (Windows), an attempt whose future was cancelled may
/// still be finishing, and may briefly hold the lock: the promise is that such a late success
/// is released as soon as it completes. There the check is repeated for up to 2 s.
pub fn assert_free(path: &Path) {
    let settle = if cfg!(windows) {
        Duration::from_secs(2)
    } else {
        Duration::ZERO
    };
    let deadline = Instant::now() + settle;
    loop {
        match check_free(path) {
            Ok(()) => return,
            Err(why) if Instant::now() >= deadline => panic!("{why}"),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn check_free(path: &Path) -> Result<(), String> {
    if !foreign_can_lock(path) {
        return Err(format!("an OS lock is still held on {path:?}"));
    }
    let g = async_filelock::FileLock::new(path)
        .try_acquire()
        .map_err(|e| format!("the in-process queue of {path:?} is not empty: {e}"))?;
    drop(g);
    if !foreign_can_lock(path) {
        return Err("the probe acquisition leaked a lock".into());
    }
    Ok(())
}

/// Polls `cond` until it holds, failing the test after [`HANG`]. For conditions whose change
/// the test cannot be told about (thread exits, a thread joining the queue).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < HANG, "hang: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What a snapshot records of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File { content: Vec<u8>, mode: u32 },
    Dir { mode: u32 },
    Symlink { target: PathBuf },
    Other { mode: u32 },
}

#[cfg(unix)]
fn mode_of(m: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    m.permissions().mode()
}

#[cfg(not(unix))]
fn mode_of(m: &std::fs::Metadata) -> u32 {
    u32::from(m.permissions().readonly())
}

/// Every entry under `dir` (not following symbolic links), with content and permissions.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    snapshot_into(dir, &mut out);
    out
}

fn snapshot_into(dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        let m = std::fs::symlink_metadata(&p).expect("lstat");
        let t = m.file_type();
        let e = if t.is_symlink() {
            Entry::Symlink {
                target: std::fs::read_link(&p).expect("readlink"),
            }
        } else if t.is_dir() {
            snapshot_into(&p, out);
            Entry::Dir { mode: mode_of(&m) }
        } else if t.is_file() {
            Entry::File {
                content: std::fs::read(&p).expect("read"),
                mode: mode_of(&m),
            }
        } else {
            Entry::Other { mode: mode_of(&m) }
        };
        out.insert(p, e);
    }
}

/// The permission bits of the file at `path` (Unix).
#[cfg(unix)]
pub fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

/// Sets the permission bits of `path` (Unix).
#[cfg(unix)]
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// This process's umask, read without changing it.
#[cfg(unix)]
pub fn umask() -> u32 {
    if let Some(m) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .map(|v| v.trim().to_owned())
        })
    {
        return u32::from_str_radix(&m, 8).expect("umask in /proc/self/status");
    }
    // No procfs: a child shell inherits our umask.
    let out = std::process::Command::new("sh")
        .args(["-c", "umask"])
        .output()
        .expect("run sh -c umask");
    u32::from_str_radix(String::from_utf8_lossy(&out.stdout).trim(), 8).expect("umask output")
}

/// Whether this process can create files in a directory whose write bits are off (root, or
/// CAP_DAC_OVERRIDE): then permission tests cannot fail the way they mean to.
#[cfg(unix)]
pub fn bypasses_permissions() -> bool {
    let dir = crate::common::tmp();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).expect("mkdir");
    set_mode(&ro, 0o555);
    let bypass = std::fs::write(ro.join("probe"), b"x").is_ok();
    set_mode(&ro, 0o755);
    bypass
}

/// One run of a scenario: the runtime, a fresh temporary directory, and a lock path in it.
#[derive(Debug, Clone)]
pub struct Case {
    pub rt: Runtime,
    pub dir: PathBuf,
    pub path: PathBuf,
}

/// Runs `scenario` once under every runtime of [`crate::common::RUNTIMES`], each time with a
/// fresh directory and the lock path `dir/file`.
pub fn for_each_runtime<F, Fut>(file: &str, scenario: F)
where
    F: Fn(Case) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    for rt in crate::common::RUNTIMES {
        eprintln!("--- runtime {rt:?}");
        let dir = crate::common::tmp();
        let case = Case {
            rt,
            dir: dir.path().to_path_buf(),
            path: dir.path().join(file),
        };
        rt.run(scenario(case));
        drop(dir);
    }
}

/// Shorthand for milliseconds.
pub const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs `body` in a child process that runs only this test (`name`, its full test path), on
/// one test thread, so that process-wide counts (descriptors, threads) are not disturbed by
/// the other tests of the binary running in parallel. In the child, runs `body` directly.
pub fn isolated(name: &str, body: impl FnOnce()) {
    const KEY: &str = "ASYNC_FILELOCK_ISOLATED_TEST";
    if std::env::var(KEY).as_deref() == Ok(name) {
        body();
        return;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let child = std::process::Command::new(exe)
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(KEY, name)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the isolated test");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(HANG * 2) {
        Ok(out) => out.expect("wait for the isolated test"),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            panic!("hang: the isolated test {name} did not finish");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "isolated test {name} failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "isolated test {name} did not run:\n{stdout}\n{stderr}"
    );
    print!("{stdout}");
    eprint!("{stderr}");
}
