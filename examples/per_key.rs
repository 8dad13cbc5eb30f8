//! A lock per key in a cache directory: many tasks in several processes fill a cache, and
//! each entry is computed exactly once.
//!
//! Run with: cargo run --example per_key
//!
//! The program starts 3 copies of itself as worker processes. Each worker runs 24 tokio
//! tasks, and each task asks the cache for one of 6 keys (so every key is asked for 12
//! times, from every process). Asking means: take the lock `cache/<key>.lock`, and if
//! `cache/<key>` is not there yet, compute the value (a pause stands for the work) and write
//! it; then release. The locks are per key, so tasks asking for different keys never wait
//! for each other, and tasks asking for the same key wait for the first one's value instead
//! of computing it again. At the end the parent checks that every entry holds the right
//! value and was computed exactly once (each computation appends its key to
//! `computed.log`).
//!
//! One [`FileLock`] per key is cheap (`FileLock::new` does no I/O), and locks on one path in
//! one process share a queue: the 4 tasks of a worker that want the same key wait in line in
//! memory, and only the first of them touches the lock file.

use std::collections::BTreeMap;
use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;
use std::{env, fs};

use async_filelock::FileLock;

/// The error type of the tasks, which cross threads.
type BoxError = Box<dyn Error + Send + Sync>;

const WORKERS: usize = 3;
const TASKS: usize = 24;
const KEYS: [&str; 6] = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"];

fn main() -> Result<ExitCode, BoxError> {
    let args: Vec<String> = env::args().skip(1).collect();
    if let [role, id, dir] = args.as_slice() {
        if role == "worker" {
            worker(id.parse()?, Path::new(dir))?;
            return Ok(ExitCode::SUCCESS);
        }
    }
    let dir = tempfile::tempdir()?;
    parent(dir.path())
}

/// The value of `key` in the cache: what the expensive computation produces.
fn value_of(key: &str) -> String {
    format!("the value of {key} is {}", key.len() * 1000)
}

/// Returns the cached value of `key`, computing it under the key's lock if nobody has.
async fn get(cache: &Path, key: &str) -> Result<String, BoxError> {
    let entry = cache.join(key);
    let lock = FileLock::new(cache.join(format!("{key}.lock")));
    let _guard = lock.acquire().timeout(Duration::from_secs(60)).await?;
    if let Ok(value) = fs::read_to_string(&entry) {
        return Ok(value); // somebody computed it first
    }
    tokio::time::sleep(Duration::from_millis(50)).await; // the expensive computation
    let value = value_of(key);
    fs::write(&entry, &value)?;
    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(cache.join("computed.log"))?;
    writeln!(log, "{key}")?;
    Ok(value)
}

#[tokio::main]
async fn worker(id: usize, cache: &Path) -> Result<(), BoxError> {
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let cache = cache.to_path_buf();
        // Start each worker at another key, so that processes race for different keys.
        let key = KEYS[(t + id) % KEYS.len()];
        tasks.push(tokio::spawn(async move {
            let value = get(&cache, key).await?;
            if value != value_of(key) {
                return Err(format!("{key}: got {value:?}").into());
            }
            Ok::<_, BoxError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    println!("worker {id}: {TASKS} lookups done");
    Ok(())
}

fn parent(dir: &Path) -> Result<ExitCode, BoxError> {
    let cache: PathBuf = dir.join("cache");
    fs::create_dir_all(&cache)?;
    println!(
        "{WORKERS} processes × {TASKS} tasks asking for {} keys in {}",
        KEYS.len(),
        cache.display()
    );
    let exe = env::current_exe()?;
    let children = (0..WORKERS)
        .map(|id| {
            Command::new(&exe)
                .arg("worker")
                .arg(id.to_string())
                .arg(&cache)
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut ok = true;
    for mut child in children {
        ok &= child.wait()?.success();
    }

    let mut computed: BTreeMap<String, usize> = BTreeMap::new();
    for key in fs::read_to_string(cache.join("computed.log"))?.lines() {
        *computed.entry(key.to_owned()).or_default() += 1;
    }
    for key in KEYS {
        let times = computed.get(key).copied().unwrap_or(0);
        let value = fs::read_to_string(cache.join(key)).unwrap_or_default();
        let right = value == value_of(key);
        println!("  {key:8} computed {times} time(s), value correct: {right}");
        ok &= times == 1 && right;
    }
    println!("{}", if ok { "all as expected" } else { "UNEXPECTED" });
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
