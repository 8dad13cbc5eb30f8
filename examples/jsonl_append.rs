//! Several processes append records to one JSON Lines file, and every line stays intact.
//!
//! Run with: cargo run --example jsonl_append
//!
//! The program starts 4 copies of itself as worker processes. Each worker appends 50
//! records to `events.jsonl`, one JSON object per line, each line about 10 KB long. For each
//! record it takes the lock `events.jsonl.lock`, writes the line, and releases the lock. At
//! the end the parent reads the file back and checks every line: it parses, its padding is
//! whole, and each worker's records are all there, once each, in the order it wrote them.
//!
//! # Why lock an append
//!
//! `O_APPEND` makes each `write` land at the end of the file, but a long line may take
//! several `write` calls (a line longer than the buffer, or a write the kernel cuts short),
//! and two processes' pieces then interleave into two broken lines. The lock makes each line
//! one unit. Run with `-- --no-lock` to watch lines break without it (they may not on every
//! machine and file system: that is the trouble with relying on it).
//!
//! The workers use the async API under smol.

use std::collections::BTreeMap;
use std::error::Error;
use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;
use std::{env, fs};

use async_filelock::FileLock;

const WORKERS: u32 = 4;
const RECORDS: u32 = 50;
/// Long enough that one line takes more than one write below.
const PAD: usize = 10_000;

fn main() -> Result<ExitCode, Box<dyn Error>> {
    let args: Vec<String> = env::args().skip(1).collect();
    if let [role, id, dir, locked] = args.as_slice() {
        if role == "worker" {
            smol::block_on(worker(id.parse()?, Path::new(dir), locked == "locked"))?;
            return Ok(ExitCode::SUCCESS);
        }
    }
    let locked = match args.as_slice() {
        [] => true,
        [flag] if flag == "--no-lock" => false,
        _ => {
            eprintln!("usage: jsonl_append [--no-lock]");
            return Ok(ExitCode::from(2));
        }
    };
    let dir = tempfile::tempdir()?;
    parent(dir.path(), locked)
}

/// One record: `{"worker": 1, "seq": 7, "pad": "1111…"}`, the padding made of the worker's
/// digit so that a piece of another line inside it shows.
fn record(worker: u32, seq: u32) -> String {
    let digit = char::from_digit(worker % 10, 10).expect("a digit");
    let pad: String = std::iter::repeat_n(digit, PAD).collect();
    format!("{{\"worker\": {worker}, \"seq\": {seq}, \"pad\": \"{pad}\"}}\n")
}

async fn worker(id: u32, dir: &Path, locked: bool) -> Result<(), Box<dyn Error>> {
    let lock = FileLock::builder(dir.join("events.jsonl.lock"))
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("events.jsonl"))?;
    for seq in 0..RECORDS {
        let line = record(id, seq);
        let guard = if locked {
            Some(lock.acquire().await?)
        } else {
            None
        };
        // Written in pieces of 1000 bytes, as a buffered writer or a short write would.
        for piece in line.as_bytes().chunks(1000) {
            file.write_all(piece)?;
        }
        drop(guard);
    }
    Ok(())
}

fn parent(dir: &Path, locked: bool) -> Result<ExitCode, Box<dyn Error>> {
    let path = dir.join("events.jsonl");
    println!(
        "{WORKERS} processes append {RECORDS} lines of {} bytes each to {}{}",
        record(1, 0).len(),
        path.display(),
        if locked { "" } else { ", without the lock" }
    );
    let exe = env::current_exe()?;
    let children = (1..=WORKERS)
        .map(|id| {
            Command::new(&exe)
                .arg("worker")
                .arg(id.to_string())
                .arg(dir)
                .arg(if locked { "locked" } else { "unlocked" })
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut ok = true;
    for mut child in children {
        ok &= child.wait()?.success();
    }

    let text = fs::read_to_string(&path)?;
    let mut next: BTreeMap<u32, u32> = BTreeMap::new();
    let mut broken = 0;
    let mut lines = 0;
    for line in text.lines() {
        lines += 1;
        match check(line) {
            Some((worker, seq)) if next.get(&worker).copied().unwrap_or(0) == seq => {
                next.insert(worker, seq + 1);
            }
            _ => broken += 1,
        }
    }
    let complete = (1..=WORKERS).all(|w| next.get(&w) == Some(&RECORDS));
    println!("{lines} lines, {broken} broken or out of order, every record present: {complete}");
    ok &= broken == 0 && complete && lines == WORKERS * RECORDS;
    if !locked {
        println!("(without the lock, broken lines are what the lock prevents)");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", if ok { "all as expected" } else { "UNEXPECTED" });
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The worker and sequence number of an intact line: exactly what [`record`] wrote.
fn check(line: &str) -> Option<(u32, u32)> {
    let rest = line.strip_prefix("{\"worker\": ")?;
    let (worker, rest) = rest.split_once(", \"seq\": ")?;
    let (seq, _) = rest.split_once(',')?;
    let (worker, seq) = (worker.parse().ok()?, seq.parse().ok()?);
    (format!("{line}\n") == record(worker, seq)).then_some((worker, seq))
}
