//! Readers serve from a cache file while a writer refreshes it, across processes.
//!
//! Run with: cargo run --example rw_cache [-- --soft] [-- DIR]
//!
//! The program starts 3 reader processes and 1 writer process (copies of itself) on
//! `DIR/cache.txt` (by default in a fresh temporary directory). For about two seconds each
//! reader serves requests from the cache: it takes the read lock, reads the file, checks it
//! is whole, and releases. The writer refreshes the cache 5 times, rewriting it *in place*
//! and slowly, so a reader that read during a refresh would see a torn file. At the end the
//! parent prints what each process did and checks no read was torn.
//!
//! With the default [`RwFileLock`] (OS locks), readers overlap each other, and a writer
//! that waits keeps new readers out, so it gets in as soon as the readers inside finish,
//! however busy they are. With `--soft`, the same program runs on [`SoftRwLock`], the
//! network-file-system variant (no OS locks; Python filelock's `SoftReadWriteLock`
//! protocol), with a 1 s heartbeat.

use std::error::Error;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use std::{env, fs, io::BufRead, thread};

use async_filelock::{RwFileLock, SoftRwLock};
use async_io::Timer;

const READERS: usize = 3;
const REFRESHES: u32 = 5;
const RUN_FOR: Duration = Duration::from_secs(2);
/// Lines in the cache file; a refresh writes them one by one.
const LINES: u32 = 20;

/// The lock the processes share: OS locks, or the soft protocol.
#[derive(Clone)]
enum Lock {
    Os(RwFileLock),
    Soft(SoftRwLock),
}

impl Lock {
    fn new(dir: &Path, soft: bool) -> Result<Lock, Box<dyn Error>> {
        let path = dir.join("cache.txt.lock");
        Ok(if soft {
            Lock::Soft(
                SoftRwLock::builder(path)
                    .heartbeat_interval(Duration::from_secs(1))
                    .timeout(Duration::from_secs(30))
                    .build()?,
            )
        } else {
            Lock::Os(
                RwFileLock::builder(path)
                    .timeout(Duration::from_secs(30))
                    .build()?,
            )
        })
    }

    /// Runs `f` under the read lock.
    async fn read<T>(&self, f: impl FnOnce() -> T) -> Result<T, Box<dyn Error>> {
        Ok(match self {
            Lock::Os(l) => {
                let g = l.read().await?;
                let out = f();
                g.release()?;
                out
            }
            Lock::Soft(l) => {
                let g = l.read().await?;
                let out = f();
                g.release()?;
                out
            }
        })
    }
}

fn main() -> Result<ExitCode, Box<dyn Error>> {
    let args: Vec<String> = env::args().skip(1).collect();
    // A worker is this program, started as `rw_cache <reader|writer> <soft> <dir>`.
    if let [role, soft, dir] = args.as_slice() {
        if role == "reader" || role == "writer" {
            let lock = Lock::new(Path::new(dir), soft == "soft")?;
            let dir = Path::new(dir);
            return futures_lite::future::block_on(async {
                if role == "reader" {
                    reader(&lock, dir).await
                } else {
                    writer(&lock, dir).await
                }
            })
            .map(|()| ExitCode::SUCCESS);
        }
    }
    let soft = args.iter().any(|a| a == "--soft");
    let dirs: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    match dirs.as_slice() {
        [] => {
            let dir = tempfile::tempdir()?;
            parent(dir.path(), soft)
        }
        [dir] => {
            fs::create_dir_all(dir)?;
            parent(Path::new(dir), soft)
        }
        _ => {
            eprintln!("usage: rw_cache [--soft] [DIR]");
            Ok(ExitCode::from(2))
        }
    }
}

fn parent(dir: &Path, soft: bool) -> Result<ExitCode, Box<dyn Error>> {
    fs::write(dir.join("cache.txt"), cache_text(0))?;
    let kind = if soft { "soft" } else { "os" };
    println!(
        "{READERS} readers and 1 writer on {} ({} lock)",
        dir.join("cache.txt").display(),
        if soft { "SoftRwLock" } else { "RwFileLock" }
    );
    let exe = env::current_exe()?;
    let mut children = Vec::new();
    for role in std::iter::repeat_n("reader", READERS).chain(["writer"]) {
        let child = Command::new(&exe)
            .args([role, kind])
            .arg(dir)
            .stdout(Stdio::piped())
            .spawn()?;
        children.push((role, child));
    }
    let mut ok = true;
    let mut torn = 0;
    for (role, mut child) in children {
        let out = child.stdout.take().expect("piped");
        for line in std::io::BufReader::new(out).lines() {
            let line = line?;
            if let Some(n) = line.strip_prefix("torn ") {
                torn += n.parse::<u32>()?;
            }
            println!("  {role} {}: {line}", child.id());
        }
        ok &= child.wait()?.success();
    }
    println!("torn reads: {torn}");
    Ok(if ok && torn == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The cache at version `v`: every line names it, so a torn file mixes versions.
fn cache_text(v: u32) -> String {
    (0..LINES).map(|i| format!("v{v} entry {i}\n")).collect()
}

/// Serves requests from the cache until the run is over.
async fn reader(lock: &Lock, dir: &Path) -> Result<(), Box<dyn Error>> {
    let path = dir.join("cache.txt");
    let start = Instant::now();
    let (mut reads, mut torn, mut versions) = (0u32, 0u32, Vec::new());
    while start.elapsed() < RUN_FOR {
        let text = lock.read(|| fs::read_to_string(&path)).await??;
        let first = text.split(' ').next().unwrap_or("").to_string();
        let whole = text.lines().count() == LINES as usize
            && text.lines().all(|l| l.starts_with(&format!("{first} ")));
        if !whole {
            torn += 1;
        }
        if versions.last() != Some(&first) {
            versions.push(first);
        }
        reads += 1;
        // Serving the request takes a little while, outside the lock.
        Timer::after(Duration::from_millis(2)).await;
    }
    println!("served {reads} reads, saw versions {}", versions.join(" "));
    println!("torn {torn}");
    Ok(())
}

/// Refreshes the cache a few times, slowly and in place.
async fn writer(lock: &Lock, dir: &Path) -> Result<(), Box<dyn Error>> {
    let path = dir.join("cache.txt");
    let mut waits = Vec::new();
    for v in 1..=REFRESHES {
        Timer::after(RUN_FOR / (REFRESHES + 1)).await;
        let asked = Instant::now();
        let refresh = || -> std::io::Result<()> {
            // In place and line by line: readers must never see this half done.
            let mut text = String::new();
            fs::write(&path, "")?;
            for line in cache_text(v).lines() {
                text.push_str(line);
                text.push('\n');
                fs::write(&path, &text)?;
                thread::sleep(Duration::from_micros(500));
            }
            Ok(())
        };
        let waited = match lock {
            Lock::Os(l) => {
                let g = l.write().await?;
                let waited = asked.elapsed();
                refresh()?;
                g.release()?;
                waited
            }
            Lock::Soft(l) => {
                let g = l.write().await?;
                let waited = asked.elapsed();
                println!("refresh {v} holds generation {}", g.generation());
                refresh()?;
                g.release()?;
                waited
            }
        };
        waits.push(format!("{:.1}", waited.as_secs_f64() * 1000.0));
    }
    println!(
        "refreshed {REFRESHES} times; waited for the readers (ms): {}",
        waits.join(", ")
    );
    Ok(())
}
