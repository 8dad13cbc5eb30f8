//! Read-modify-write of a JSON file by several processes: under the lock, read the file,
//! change it, write the new version to a temporary file and rename it over the old one.
//!
//! Run with: cargo run --example atomic_json
//!
//! The program starts 4 copies of itself as worker processes. Each worker, 10 times, takes
//! the lock `state.json.lock`, reads `state.json` (an object of counters), adds 1 to
//! `"total"` and to its own counter `"worker-N"`, and replaces the file. At the end the
//! parent checks that no update was lost (`"total"` is 40 and each worker's counter 10) and
//! that no temporary file was left behind.
//!
//! # Why both a lock and a rename
//!
//! They guard against different things. The lock makes read-modify-write atomic: without
//! it, two workers read the same version and one update is lost. The rename makes the
//! *write* atomic: a reader that does not take the lock (or a crash halfway through a write)
//! sees either the old file or the new one, never half of each. The lock is a separate
//! file, because the rename replaces `state.json` itself: a lock held on the old
//! `state.json` would not exclude a process that opens the new one.
//!
//! The JSON here is an object of integers, read and written by a few lines of code below; a
//! real program would use `serde_json`.

use std::collections::BTreeMap;
use std::error::Error;
use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;
use std::{env, fs, process};

use async_filelock::blocking::FileLock;

const WORKERS: u64 = 4;
const UPDATES: u64 = 10;

type State = BTreeMap<String, u64>;

fn main() -> Result<ExitCode, Box<dyn Error>> {
    let args: Vec<String> = env::args().skip(1).collect();
    if let [role, id, dir] = args.as_slice() {
        if role == "worker" {
            worker(id, Path::new(dir))?;
            return Ok(ExitCode::SUCCESS);
        }
    }
    let dir = tempfile::tempdir()?;
    parent(dir.path())
}

/// Applies `change` to the JSON object in `path`, atomically with respect to every process
/// that does the same.
fn update(path: &Path, change: impl FnOnce(&mut State)) -> Result<(), Box<dyn Error>> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock = FileLock::builder(lock_path)
        .timeout(Duration::from_secs(60))
        .build()?;
    let guard = lock.acquire()?;

    let mut state = match fs::read_to_string(path) {
        Ok(text) => {
            parse(&text).ok_or_else(|| format!("{}: not an object of integers", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::new(),
        Err(e) => return Err(e.into()),
    };
    change(&mut state);

    // The temporary file is in the same directory (a rename cannot cross file systems) and
    // named by pid, so no two writers share one.
    let tmp = path.with_extension(format!("json.tmp.{}", process::id()));
    let mut file = fs::File::create(&tmp)?;
    file.write_all(render(&state).as_bytes())?;
    file.sync_all()?; // the data is on disk before the name points at it
    drop(file);
    fs::rename(&tmp, path)?;

    guard.release()?;
    Ok(())
}

fn worker(id: &str, dir: &Path) -> Result<(), Box<dyn Error>> {
    let path = dir.join("state.json");
    let me = format!("worker-{id}");
    for _ in 0..UPDATES {
        update(&path, |state| {
            *state.entry("total".into()).or_default() += 1;
            *state.entry(me.clone()).or_default() += 1;
        })?;
    }
    Ok(())
}

fn parent(dir: &Path) -> Result<ExitCode, Box<dyn Error>> {
    let path = dir.join("state.json");
    println!(
        "{WORKERS} processes, {UPDATES} read-modify-writes each, on {}",
        path.display()
    );
    let exe = env::current_exe()?;
    let children = (1..=WORKERS)
        .map(|id| {
            Command::new(&exe)
                .arg("worker")
                .arg(id.to_string())
                .arg(dir)
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut ok = true;
    for mut child in children {
        ok &= child.wait()?.success();
    }

    let text = fs::read_to_string(&path)?;
    println!("state.json: {}", text.trim());
    let state = parse(&text).ok_or("state.json does not parse")?;
    ok &= state.get("total") == Some(&(WORKERS * UPDATES));
    for id in 1..=WORKERS {
        ok &= state.get(&format!("worker-{id}")) == Some(&UPDATES);
    }
    let leftovers: Vec<_> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp."))
        .collect();
    println!("temporary files left: {leftovers:?}");
    ok &= leftovers.is_empty();
    println!("{}", if ok { "all as expected" } else { "UNEXPECTED" });
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `{"a": 1, "b": 2}`, keys in order. Keys are written as they are: this example's keys
/// need no escaping.
fn render(state: &State) -> String {
    let fields: Vec<String> = state.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
    format!("{{{}}}\n", fields.join(", "))
}

/// The inverse of [`render`], for objects whose keys contain no `"`, `,` or `:`.
fn parse(text: &str) -> Option<State> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?.trim();
    if inner.is_empty() {
        return Some(State::new());
    }
    inner
        .split(',')
        .map(|field| {
            let (key, value) = field.split_once(':')?;
            let key = key.trim().strip_prefix('"')?.strip_suffix('"')?;
            Some((key.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}
