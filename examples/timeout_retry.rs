//! Give up waiting after a while, say who holds the lock, do something else, and retry.
//!
//! Run with: cargo run --example timeout_retry
//!
//! The program starts a copy of itself that holds the lock `job.lock` for about 1.5 s, as a
//! long job in another process would. Meanwhile the program tries to take it with a time
//! limit of 300 ms. Each attempt that runs out of time is an
//! [`ErrorKind::Timeout`] error whose message names the lock and, on Linux, the process
//! that holds it:
//!
//! ```text
//! timed out after 300.4ms waiting for the lock on "/tmp/…/job.lock" (held by pid 4242: …/timeout_retry hold …)
//! ```
//!
//! The program reports it, does other work for a moment, and tries again, up to 20 times.
//! A waiting hook ([`FileLockBuilder::on_wait`](async_filelock::FileLockBuilder::on_wait))
//! tells the user when an attempt starts to wait, as cargo prints `Blocking waiting for file
//! lock`. At the end the program checks that it timed out at least once, that (on Linux) the
//! error named the other process, and that a later attempt got the lock.

use std::error::Error;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;
use std::{env, thread};

use async_filelock::{ErrorKind, FileLock};

const ATTEMPT: Duration = Duration::from_millis(300);
const PAUSE: Duration = Duration::from_millis(200);
const ATTEMPTS: u32 = 20;

fn main() -> Result<ExitCode, Box<dyn Error>> {
    let args: Vec<String> = env::args().skip(1).collect();
    if let [role, path] = args.as_slice() {
        if role == "hold" {
            hold(Path::new(path))?;
            return Ok(ExitCode::SUCCESS);
        }
    }
    let dir = tempfile::tempdir()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?
        .block_on(run(&dir.path().join("job.lock")))
}

/// The other process: holds the lock for a while.
fn hold(path: &Path) -> Result<(), Box<dyn Error>> {
    let guard = async_filelock::blocking::FileLock::new(path).acquire()?;
    println!("held"); // the parent waits for this line
    thread::sleep(Duration::from_millis(1500));
    guard.release()?;
    Ok(())
}

async fn run(path: &Path) -> Result<ExitCode, Box<dyn Error>> {
    let mut other = Command::new(env::current_exe()?)
        .arg("hold")
        .arg(path)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(other.stdout.take().expect("piped")).read_line(&mut line)?;
    if line.trim() != "held" {
        return Err("the other process did not take the lock".into());
    }
    println!(
        "another process (pid {}) holds {}",
        other.id(),
        path.display()
    );

    let lock = FileLock::builder(path)
        .timeout(ATTEMPT)
        .on_wait(|info| match info.holder() {
            Some(holder) => println!("  Blocking waiting for file lock (held by {holder})"),
            None => println!("  Blocking waiting for file lock"),
        })
        .build()?;
    let mut timeouts = 0;
    let mut named = false;
    let mut acquired = false;
    for attempt in 1..=ATTEMPTS {
        println!("attempt {attempt}:");
        match lock.acquire().await {
            Ok(guard) => {
                println!("  got the lock; working");
                guard.release()?;
                acquired = true;
                break;
            }
            Err(e) if e.kind() == ErrorKind::Timeout => {
                timeouts += 1;
                named |= e.holders().iter().any(|h| h.pid() == other.id());
                println!("  {e}");
                println!("  doing something else for {PAUSE:?}, then retrying");
                tokio::time::sleep(PAUSE).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let other_ok = other.wait()?.success();

    let can_name = cfg!(any(target_os = "linux", target_os = "android"));
    let ok = acquired && timeouts > 0 && (named || !can_name) && other_ok;
    println!(
        "timed out {timeouts} time(s), the holder named: {named}, acquired in the end: {acquired}"
    );
    println!("{}", if ok { "all as expected" } else { "UNEXPECTED" });
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
