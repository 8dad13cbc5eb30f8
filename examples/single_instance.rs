//! Refuse to start a second copy of a program, naming the process that holds it.
//!
//! Run with: cargo run --example single_instance
//!
//! Without arguments the example tells the whole story with copies of itself: a first copy
//! starts and works, a second one is refused with the first one's pid and exits with status
//! 1, then a copy that crashes (killed with SIGKILL, so its marker stays behind) does not
//! keep the next copy out.
//!
//! To be one of the copies yourself, in two terminals:
//!
//! ```text
//! cargo run --example single_instance -- --hold 30 [PATH]
//! cargo run --example single_instance -- --hold 30 [PATH]   # already running as pid …
//! ```
//!
//! `PATH` is the marker, by default `single_instance.lock` in the temporary directory.
//!
//! A [`SoftFileLock`] fits here better than an OS lock: the marker names its holder (pid,
//! host, start time), so the refusal can say who is running, and `cat` shows it too. If the
//! holder dies, its marker is broken by the next copy once the recorded process is provably
//! gone (same host, pid gone or reused by a process with another start time). A marker
//! written on another host (a shared home directory) is never broken automatically.

use std::env;
use std::error::Error;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::thread;
use std::time::Duration;

use async_filelock::{ErrorKind, SoftFileLock};

fn main() -> Result<ExitCode, Box<dyn Error>> {
    let args: Vec<String> = env::args().skip(1).collect();
    if args.is_empty() || args == ["--demo"] {
        return demo();
    }
    let mut hold = Duration::from_secs(2);
    let mut path = env::temp_dir().join("single_instance.lock");
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--hold" => {
                let secs: f64 = args.next().ok_or("--hold needs SECS")?.parse()?;
                hold = Duration::try_from_secs_f64(secs)?;
            }
            a if !a.starts_with('-') => path = PathBuf::from(a),
            _ => {
                eprintln!("usage: single_instance [--demo] | [--hold SECS] [PATH]");
                return Ok(ExitCode::from(2));
            }
        }
    }
    instance(&path, hold)
}

/// The program itself: at most one copy at a time per marker path.
fn instance(path: &Path, hold: Duration) -> Result<ExitCode, Box<dyn Error>> {
    let lock = SoftFileLock::new(path);
    // One attempt, no waiting: a second copy should say so at once, not queue up.
    let guard = match lock.try_acquire() {
        Ok(guard) => guard,
        Err(e) if e.kind() == ErrorKind::WouldBlock => {
            // The marker says who holds it. It may be gone by now (the holder just exited).
            match lock.owner()? {
                Some(owner) => eprintln!(
                    "already running as pid {} on host {}{}",
                    owner.pid(),
                    owner.host(),
                    if owner.is_this_host() {
                        ""
                    } else {
                        " (another host)"
                    },
                ),
                None => eprintln!("already running (its marker just went away; try again)"),
            }
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    println!(
        "running as pid {} (marker {})",
        std::process::id(),
        guard.path().display()
    );
    thread::sleep(hold); // the program's work
    guard.release()?;
    println!("pid {} done", std::process::id());
    Ok(ExitCode::SUCCESS)
}

/// Runs copies of this program against a marker in a fresh directory and narrates.
fn demo() -> Result<ExitCode, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let marker = dir.path().join("single_instance.lock");
    let exe = env::current_exe()?;
    let copy = |hold: &str| {
        let mut cmd = Command::new(&exe);
        cmd.args(["--hold", hold]).arg(&marker);
        cmd
    };

    println!("1. the first copy starts and holds the marker for 2 s");
    let (mut first, mut out) = start(copy("2"))?;
    relay("copy 1", &first_line(&mut out)?);
    println!(
        "   the marker reads {:?}",
        std::fs::read_to_string(&marker)?
    );

    println!("2. a second copy is started meanwhile");
    let second = copy("2").output()?;
    relay_output("copy 2", &second.stdout, &second.stderr);
    println!("   it exited with {}", second.status);
    let refused = second.status.code() == Some(1);

    let first_status = first.wait()?;
    relay_rest("copy 1", out)?;
    println!("   copy 1 exited with {first_status}");

    println!("3. a copy crashes while running (SIGKILL: no chance to remove its marker)");
    let (mut crashed, mut out) = start(copy("60"))?;
    relay("copy 3", &first_line(&mut out)?);
    crashed.kill()?;
    crashed.wait()?;
    println!("   killed; the marker is still there: {}", marker.exists());

    println!("4. the next copy finds the holder gone, takes the marker over and runs");
    let next = copy("0").output()?;
    relay_output("copy 4", &next.stdout, &next.stderr);
    println!("   it exited with {}", next.status);

    let ok = refused && first_status.success() && next.status.success();
    println!("{}", if ok { "all as expected" } else { "UNEXPECTED" });
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn start(mut cmd: Command) -> Result<(Child, BufReader<ChildStdout>), Box<dyn Error>> {
    let mut child = cmd.stdout(Stdio::piped()).spawn()?;
    let out = BufReader::new(child.stdout.take().expect("piped"));
    Ok((child, out))
}

/// Waits for a copy's first line ("running as pid …"): from then on it holds the marker.
fn first_line(out: &mut BufReader<ChildStdout>) -> Result<String, Box<dyn Error>> {
    let mut line = String::new();
    if out.read_line(&mut line)? == 0 {
        return Err("the copy exited without reporting".into());
    }
    Ok(line)
}

fn relay_rest(name: &str, mut out: BufReader<ChildStdout>) -> Result<(), Box<dyn Error>> {
    let mut rest = String::new();
    out.read_to_string(&mut rest)?;
    relay(name, &rest);
    Ok(())
}

fn relay_output(name: &str, stdout: &[u8], stderr: &[u8]) {
    relay(name, &String::from_utf8_lossy(stdout));
    relay(name, &String::from_utf8_lossy(stderr));
}

fn relay(name: &str, text: &str) {
    for line in text.lines() {
        println!("   [{name}] {line}");
    }
}
