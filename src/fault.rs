//! Fault points: named steps of the soft protocols where the crate's own fault-injection
//! suite (`tests/faults`) makes a process die or stall, to prove what a crash or a stall at
//! that exact step leaves behind.
//!
//! Compiled in only with the internal `fault-injection` feature, which the crate's tests
//! enable and nothing else should; without it [`point`] is an empty inline function.
//!
//! With the feature, the environment variable `ASYNC_FILELOCK_FAULT` lists
//! `<point>=<action>` pairs separated by commas, read once per process:
//!
//! - `kill`: the process kills itself with `SIGKILL` (elsewhere than Unix it aborts): no
//!   destructor, no release, as if the machine lost power for this process alone;
//! - `pause:<ms>`: the thread sleeps that long;
//! - `wait:<dir>`: the thread creates `<dir>/<point>.reached` and waits until a file
//!   `<dir>/<point>.go` exists, so a test can act while the process is stopped at the step.
//!
//! Each pair fires on the first time its point is reached; later passes go through.

/// Marks the protocol step `name`; see the module docs.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn point(_name: &'static str) {}

/// Marks the protocol step `name`; see the module docs.
#[cfg(feature = "fault-injection")]
pub(crate) fn point(name: &'static str) {
    imp::point(name);
}

#[cfg(feature = "fault-injection")]
mod imp {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::OnceLock;
    use std::time::Duration;

    /// The variable that arms fault points.
    const VAR: &str = "ASYNC_FILELOCK_FAULT";

    enum Action {
        Kill,
        Pause(Duration),
        Wait(PathBuf),
    }

    struct Armed {
        point: String,
        action: Action,
        fired: AtomicBool,
    }

    fn armed() -> &'static [Armed] {
        static ARMED: OnceLock<Vec<Armed>> = OnceLock::new();
        ARMED.get_or_init(|| {
            let Ok(spec) = std::env::var(VAR) else {
                return Vec::new();
            };
            spec.split(',')
                .filter(|s| !s.is_empty())
                .map(|pair| {
                    let (point, action) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("{VAR}: {pair:?} is not <point>=<action>"));
                    let action = match action.split_once(':') {
                        None if action == "kill" => Action::Kill,
                        Some(("pause", ms)) => Action::Pause(Duration::from_millis(
                            ms.parse()
                                .unwrap_or_else(|_| panic!("{VAR}: {ms:?} is not milliseconds")),
                        )),
                        Some(("wait", dir)) => Action::Wait(PathBuf::from(dir)),
                        _ => panic!("{VAR}: unknown action {action:?}"),
                    };
                    Armed {
                        point: point.to_owned(),
                        action,
                        fired: AtomicBool::new(false),
                    }
                })
                .collect()
        })
    }

    pub(super) fn point(name: &'static str) {
        for armed in armed() {
            if armed.point != name || armed.fired.swap(true, Ordering::SeqCst) {
                continue;
            }
            match &armed.action {
                Action::Kill => kill_self(),
                Action::Pause(d) => std::thread::sleep(*d),
                Action::Wait(dir) => {
                    std::fs::write(dir.join(format!("{name}.reached")), b"")
                        .unwrap_or_else(|e| panic!("{VAR}: cannot signal {name} reached: {e}"));
                    let go = dir.join(format!("{name}.go"));
                    while !go.exists() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
    }

    #[cfg(unix)]
    fn kill_self() -> ! {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        // Unreachable once the signal is delivered; never fall through into the protocol.
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    #[cfg(not(unix))]
    fn kill_self() -> ! {
        std::process::abort()
    }
}
