//! A short soak run (`examples/soak`) as a test: tokio, smol and blocking processes, and a
//! Python filelock process when `python3` can import `filelock`, take one lock 2,000 times;
//! no two holds may overlap and no counter update may be lost.
//!
//! The example's harness is compiled into this test binary, whose `soak_worker` test plays
//! the worker processes (this binary run again with `--exact soak_worker` and the worker's
//! arguments in environment variables), so the test needs no separate build of the example.

#![cfg(unix)]

use std::ffi::OsString;
use std::process::Command;

// The example's command-line usage text is not needed here.
#[allow(dead_code)]
#[path = "../examples/soak/harness.rs"]
mod harness;

/// The variable holding how many arguments a worker has; each is in `WORKER_ARG_<i>`.
const WORKER_ARGS: &str = "ASYNC_FILELOCK_SOAK_WORKER_ARGS";
const WORKER_ARG: &str = "ASYNC_FILELOCK_SOAK_WORKER_ARG_";

/// A worker process's body; returns at once in an ordinary test run.
#[test]
fn soak_worker() {
    let Ok(count) = std::env::var(WORKER_ARGS) else {
        return;
    };
    let count: usize = count.parse().expect("a number of arguments");
    let args: Vec<OsString> = (0..count)
        .map(|i| std::env::var_os(format!("{WORKER_ARG}{i}")).expect("a worker argument"))
        .collect();
    if let Err(e) = harness::worker(&args) {
        panic!("soak worker {args:?}: {e}");
    }
}

#[test]
fn short_soak_has_no_overlaps_and_no_lost_updates() {
    let exe = std::env::current_exe().expect("the test binary's path");
    let spawn = |args: &[OsString]| {
        let mut cmd = Command::new(&exe);
        cmd.args(["--exact", "soak_worker", "--nocapture", "--test-threads=1"])
            .env(WORKER_ARGS, args.len().to_string());
        for (i, arg) in args.iter().enumerate() {
            cmd.env(format!("{WORKER_ARG}{i}"), arg);
        }
        cmd
    };
    // The timeout only keeps a hang from stalling the suite; the run takes a few seconds.
    let options = harness::Options::parse(&["--holds", "2000", "--timeout", "120"])
        .expect("valid options")
        .expect("not --help");
    let mut report = Vec::new();
    let verdict = harness::run(&options, &spawn, &mut report).expect("the soak runs");
    let report = String::from_utf8(report).expect("a UTF-8 report");
    eprintln!("{report}");
    let last = report.lines().last().expect("a report");
    assert_eq!(last, "holds 2000 overlaps 0 lost 0", "report:\n{report}");
    assert!(verdict.passed(), "report:\n{report}");
}
