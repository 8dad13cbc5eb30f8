//! Helpers shared by the integration tests: temporary directories, the runtimes every scenario
//! runs under, descriptor and thread counts, and a holder outside this crate's queue.

#![allow(dead_code, unreachable_pub)]

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A fresh temporary directory, removed when dropped.
pub fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("async-filelock-test-")
        .tempdir()
        .expect("create a temporary directory")
}

/// A lock path inside `dir`.
pub fn lock_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// The executors every async scenario runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// tokio's current-thread runtime *without* the time driver: the crate must bring its
    /// own timers.
    TokioCurrentThread,
    /// tokio's multi-thread runtime.
    TokioMultiThread,
    /// smol's global executor through `smol::block_on`.
    Smol,
    /// `futures_lite::future::block_on`, no runtime at all.
    BlockOn,
}

pub const RUNTIMES: [Runtime; 4] = [
    Runtime::TokioCurrentThread,
    Runtime::TokioMultiThread,
    Runtime::Smol,
    Runtime::BlockOn,
];

impl Runtime {
    /// Runs `f` to completion on this executor.
    pub fn run<F>(self, f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self {
            Runtime::TokioCurrentThread => tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("tokio runtime")
                .block_on(f),
            Runtime::TokioMultiThread => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .expect("tokio runtime")
                .block_on(f),
            Runtime::Smol => smol::block_on(f),
            Runtime::BlockOn => futures_lite::future::block_on(f),
        }
    }
}

/// Holds an OS lock on `path` through std's `File::lock`, outside this crate's in-process
/// queue, so that to this crate it looks like a holder in another process.
pub fn foreign_hold(path: &Path) -> File {
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open for a foreign hold");
    f.lock().expect("foreign lock");
    f
}

/// Open descriptors of this process (Linux).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Threads of this process (Linux).
pub fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A generous bound that only catches hangs; never used to order steps.
pub const HANG: Duration = Duration::from_secs(30);
