//! Several processes take turns updating one file, without losing a single update.
//!
//! Run with: cargo run --example quickstart
//!
//! The program starts 4 copies of itself as worker processes. Each worker adds 1 to the
//! number in `counter.txt` 5 times: it takes the lock, reads the number, works for a moment,
//! writes the number plus one, and releases the lock. Without the lock two workers would
//! read the same number and one increment would be lost; with it the count ends at exactly
//! 4 × 5 = 20, which the parent checks at the end.
//!
//! The workers use the async API, driven by `futures_lite::future::block_on`: no runtime is
//! needed. The same `lock.acquire().await` works unchanged under tokio or smol.
//!
//! To see the lost updates the lock prevents, run the workers without it:
//!
//! ```text
//! cargo run --example quickstart -- --no-lock
//! ```

use std::error::Error;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};
use std::{env, fs, process};

use async_filelock::FileLock;
use async_io::Timer;

const WORKERS: u32 = 4;
const INCREMENTS: u32 = 5;

fn main() -> Result<ExitCode, Box<dyn Error>> {
    let args: Vec<String> = env::args().skip(1).collect();
    let use_lock = !args.iter().any(|a| a == "--no-lock");
    // A worker is this same program, started as `quickstart worker <id> <dir> [--no-lock]`.
    if let [role, id, dir, ..] = args.as_slice() {
        if role == "worker" {
            futures_lite::future::block_on(worker(id.parse()?, Path::new(dir), use_lock))?;
            return Ok(ExitCode::SUCCESS);
        }
    }
    parent(use_lock)
}

fn parent(use_lock: bool) -> Result<ExitCode, Box<dyn Error>> {
    // A fresh directory for this run: the lock file and the counter live there.
    let dir = env::temp_dir().join(format!("async-filelock-quickstart-{}", process::id()));
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("counter.txt"), "0")?;
    println!(
        "starting {WORKERS} worker processes, {INCREMENTS} increments each, in {}",
        dir.display()
    );

    let exe = env::current_exe()?;
    let mut children = Vec::new();
    for id in 1..=WORKERS {
        let child = Command::new(&exe)
            .arg("worker")
            .arg(id.to_string())
            .arg(&dir)
            .args((!use_lock).then_some("--no-lock"))
            .spawn()?;
        children.push(child);
    }
    let mut all_ok = true;
    for mut child in children {
        all_ok &= child.wait()?.success();
    }

    let expected = WORKERS * INCREMENTS;
    let got: u32 = fs::read_to_string(dir.join("counter.txt"))?
        .trim()
        .parse()?;
    fs::remove_dir_all(&dir)?;

    println!("expected {expected}, got {got}");
    Ok(if all_ok && got == expected {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn worker(id: u32, dir: &Path, use_lock: bool) -> Result<(), Box<dyn Error>> {
    let pid = process::id();
    // Every process names the same path; `new` does no I/O, the file is created on first use.
    let lock = FileLock::new(dir.join("counter.lock"));
    let counter = dir.join("counter.txt");

    for _ in 0..INCREMENTS {
        if use_lock {
            println!("worker {id} (pid {pid}) waiting…");
            let asked = Instant::now();
            // Waiting never blocks a thread: between attempts the task sleeps on a timer.
            let guard = lock.acquire().await?;
            let waited = asked.elapsed().as_millis();

            // Nobody else, in any process, runs this while `guard` lives.
            let (before, after) = increment(&counter).await?;
            println!(
                "worker {id} holds the lock, counter {before} -> {after} (waited {waited} ms)"
            );

            // Release, reporting any error (simply dropping the guard releases it too).
            guard.release()?;
        } else {
            let (before, after) = increment(&counter).await?;
            println!("worker {id} (pid {pid}) without the lock, counter {before} -> {after}");
        }
        // Some work outside the lock, so the others get their turn.
        Timer::after(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Read, compute, write: correct only if nobody else does the same in between.
async fn increment(counter: &Path) -> Result<(u32, u32), Box<dyn Error>> {
    let before: u32 = fs::read_to_string(counter)?.trim().parse()?;
    Timer::after(Duration::from_millis(15)).await; // simulated work
    fs::write(counter, (before + 1).to_string())?;
    Ok((before, before + 1))
}
