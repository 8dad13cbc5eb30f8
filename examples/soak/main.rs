//! Soak test: many processes take one hard `FileLock` over and over, and the run checks
//! that no two holds ever overlapped and that no update was lost.
//!
//! Run with: cargo run --release --example soak -- --holds 100000
//!
//! The processes are this program run again as workers (`soak __worker ROLE ...`): tokio
//! processes and smol processes with several tasks each, and processes using the
//! `async_filelock::blocking` wrappers from several threads; plus Python filelock processes
//! on the same lock file when `python3 -c 'import filelock'` works (scripts/setup installs
//! it). Each hold reads a counter file, adds one and writes it back, and logs its interval
//! on `CLOCK_MONOTONIC` (taken just after the acquisition and just before the release).
//!
//! The program then merges the logs, sorts them by start and counts the intervals that
//! start before an earlier one ended. Its last line is `holds N overlaps K lost M` (`lost`:
//! N minus the final counter value), and it exits with status 1 when K or M is not 0 or a
//! worker failed. `--help` lists the options (worker counts, tasks, threads, a timeout).
//!
//! Unix only: the processes compare times on the clock they share.

use std::process::ExitCode;

#[cfg(unix)]
mod harness;

#[cfg(unix)]
fn main() -> ExitCode {
    use std::ffi::OsString;
    use std::process::Command;

    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "__worker") {
        return match harness::worker(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("soak worker {:?}: {e}", &args[1..]);
                ExitCode::FAILURE
            }
        };
    }
    let args: Vec<String> = match args.into_iter().map(OsString::into_string).collect() {
        Ok(args) => args,
        Err(arg) => {
            eprintln!("soak: argument {arg:?} is not UTF-8\n{}", harness::USAGE);
            return ExitCode::from(2);
        }
    };
    let options = match harness::Options::parse(&args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{}", harness::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("soak: {e}\n{}", harness::USAGE);
            return ExitCode::from(2);
        }
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("soak: cannot find this program's path: {e}");
            return ExitCode::FAILURE;
        }
    };
    let spawn = |args: &[OsString]| {
        let mut cmd = Command::new(&exe);
        cmd.arg("__worker").args(args);
        cmd
    };
    match harness::run(&options, &spawn, &mut std::io::stdout()) {
        Ok(verdict) if verdict.passed() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(unix))]
fn main() -> ExitCode {
    println!("soak: skipped, it needs a clock shared by processes (Unix CLOCK_MONOTONIC)");
    ExitCode::SUCCESS
}
