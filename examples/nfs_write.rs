//! Several processes update one file on a shared file system (NFS, SMB) under a soft lock.
//!
//! Run with: cargo run --example nfs_write [-- DIR]
//!
//! `DIR` is the shared directory to use (for example a directory on an NFS mount, and you
//! may run the example on several hosts at once); by default a fresh temporary directory.
//! The program starts 4 copies of itself as worker processes. Each worker, 5 times, takes
//! the soft lock `DIR/shared.txt.lock`, reads `DIR/shared.txt`, appends a line carrying the
//! next counter value, writes the file back and releases the lock. At the end the parent
//! checks that every update made it: 4 × 5 = 20 lines numbered 1 to 20.
//!
//! # Why a soft lock
//!
//! [`FileLock`](async_filelock::FileLock) uses `flock`, which is only as good as the file
//! system's support for it: on NFS it may be emulated with byte-range locks, or stay local
//! to one client (`local_lock=flock`), and SMB and container volumes have their own rules.
//! Two hosts could then both "hold" the lock. A soft lock needs nothing but an exclusive
//! create (`O_CREAT | O_EXCL`), which NFS v3+ and SMB carry to the server: the marker file
//! `shared.txt.lock` *is* the lock, and it records `pid`, host and process start time.
//!
//! The price is what happens when a holder dies without removing its marker. On this host
//! the marker is broken once the recorded process is provably gone. A marker written on
//! *another* host is never broken automatically, since its pid cannot be checked from here:
//! waiters time out with an error naming it ("pid 7 on build-host", see
//! [`Error::holder`](async_filelock::Error::holder)), and an operator who knows that holder
//! is dead clears it with [`SoftFileLock::break_lock`].
//!
//! The marker format is Python filelock's, so Python's `SoftFileLock("shared.txt.lock")`
//! excludes these workers too.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};
use std::{env, fs, process};

use async_filelock::SoftFileLock;
use async_io::Timer;

const WORKERS: u32 = 4;
const UPDATES: u32 = 5;

fn main() -> Result<ExitCode, Box<dyn Error>> {
    let args: Vec<String> = env::args().skip(1).collect();
    // A worker is this same program, started as `nfs_write worker <id> <dir>`.
    if let [role, id, dir] = args.as_slice() {
        if role == "worker" {
            futures_lite::future::block_on(worker(id.parse()?, Path::new(dir)))?;
            return Ok(ExitCode::SUCCESS);
        }
    }
    match args.as_slice() {
        [] => {
            let dir = tempfile::tempdir()?;
            parent(dir.path())
        }
        [dir] if !dir.starts_with('-') => {
            fs::create_dir_all(dir)?;
            parent(Path::new(dir))
        }
        _ => {
            eprintln!("usage: nfs_write [DIR]");
            Ok(ExitCode::from(2))
        }
    }
}

fn parent(dir: &Path) -> Result<ExitCode, Box<dyn Error>> {
    let shared = dir.join("shared.txt");
    // Start from an empty file, under the lock in case workers from another host are busy.
    let lock = SoftFileLock::new(dir.join("shared.txt.lock"));
    let guard = futures_lite::future::block_on(lock.acquire().timeout(Duration::from_secs(10)))?;
    fs::write(&shared, "")?;
    guard.release()?;
    println!(
        "starting {WORKERS} worker processes, {UPDATES} updates each, on {}",
        shared.display()
    );

    let exe = env::current_exe()?;
    let mut children = Vec::new();
    for id in 1..=WORKERS {
        children.push(
            Command::new(&exe)
                .arg("worker")
                .arg(id.to_string())
                .arg(dir)
                .spawn()?,
        );
    }
    let mut all_ok = true;
    for mut child in children {
        all_ok &= child.wait()?.success();
    }

    let text = fs::read_to_string(&shared)?;
    let counters: Vec<u32> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    let expected = WORKERS * UPDATES;
    let got = counters.len() as u32;
    // Every line must carry the next number: a lost update shows as a repeat or a gap.
    let in_order = counters.iter().copied().eq(1..=got);
    println!("last lines:");
    for line in text
        .lines()
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        println!("  {line}");
    }
    println!("expected {expected}, got {got} (numbered in order: {in_order})");
    Ok(if all_ok && got == expected && in_order {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn worker(id: u32, dir: &Path) -> Result<(), Box<dyn Error>> {
    let shared: PathBuf = dir.join("shared.txt");
    // The marker beside the data file. Another process's release cannot be observed, so a
    // waiter polls (the default backoff: 1 ms doubling up to 50 ms). The timeout turns a
    // marker left by a dead holder on another host into an error naming it, not a hang.
    let lock = SoftFileLock::builder(dir.join("shared.txt.lock"))
        .timeout(Duration::from_secs(30))
        .build()?;

    for _ in 0..UPDATES {
        let asked = Instant::now();
        let guard = match lock.acquire().await {
            Ok(guard) => guard,
            Err(e) => {
                if let Some(holder) = e.holder() {
                    eprintln!("worker {id}: the marker is held by {holder}, who cannot be checked from here");
                }
                return Err(e.into());
            }
        };
        let waited = asked.elapsed().as_millis();

        // Read, modify, write: correct only because nobody else does it meanwhile.
        let mut text = fs::read_to_string(&shared)?;
        let next = text.lines().count() + 1;
        Timer::after(Duration::from_millis(10)).await; // simulated work
        text.push_str(&format!("{next} worker {id} pid {}\n", process::id()));
        fs::write(&shared, text)?;
        println!("worker {id} wrote line {next} (waited {waited} ms)");

        guard.release()?;
        // Some work outside the lock, so the others get their turn.
        Timer::after(Duration::from_millis(5)).await;
    }
    Ok(())
}
