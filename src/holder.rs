//! [`Holder`]: a process that holds an OS lock, as the operating system reports it, and
//! [`HeldBy`], what the waiting loop knows about whoever stands in its way.

use std::fmt;

/// A process that holds the OS lock on a lock file, as the operating system reports it.
///
/// Returned by [`FileLock::holders`](crate::FileLock::holders) (and the same method of
/// [`RwFileLock`](crate::RwFileLock) and the [`blocking`](crate::blocking) twins), by
/// [`Error::holders`](crate::Error::holders) for a timeout or a refused attempt, and by
/// [`WaitInfo::holders`](crate::WaitInfo::holders) for a waiting hook.
///
/// On Linux the list comes from `/proc/locks`, matched by the lock file's device and inode,
/// and the command line from `/proc/<pid>/cmdline`. Three things to know about it:
///
/// - The pid is the process that *took* the lock. A lock lives on an open file description,
///   which a child forked afterwards (or a process that received the descriptor) shares: the
///   lock then stays held after the process named here has exited, by a process not named.
/// - A holder in a process this one cannot see (another PID namespace: a container) is not
///   listed.
/// - The answer is a snapshot: the holder may have released the lock by the time you read it.
///
/// # Examples
///
/// ```
/// use async_filelock::FileLock;
///
/// let lock = FileLock::new(std::env::temp_dir().join("async-filelock-doc-holder.lock"));
/// let guard = lock.try_acquire()?;
/// // `None`: this platform cannot say who holds a lock (all but Linux).
/// if let Some(holders) = lock.holders() {
///     assert!(holders.iter().any(|h| h.pid() == std::process::id()));
///     for h in &holders {
///         println!("{h}"); // pid 4242: cargo build
///     }
/// }
/// drop(guard);
/// # Ok::<(), async_filelock::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pid: u32,
    command: Option<String>,
    shared: bool,
}

impl Holder {
    // Only the platforms that can name holders create them.
    #[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
    pub(crate) fn new(pid: u32, command: Option<String>, shared: bool) -> Holder {
        Holder {
            pid,
            command,
            shared,
        }
    }

    /// The id of the process that took the lock.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The process's command line, its arguments joined by spaces (not quoted), where the
    /// operating system says (`None` once the process has exited, or for a process whose
    /// command line is hidden from this one).
    pub fn command(&self) -> Option<&str> {
        self.command.as_deref()
    }

    /// Whether it holds the lock shared (a reader) rather than exclusive.
    pub fn is_shared(&self) -> bool {
        self.shared
    }
}

impl fmt::Display for Holder {
    /// `pid 4242: cargo build`, or `pid 4242` without a command line. Long command lines are
    /// cut short with `…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {}", self.pid)?;
        if let Some(command) = &self.command {
            const MAX: usize = 120;
            match command.char_indices().nth(MAX) {
                Some((cut, _)) => write!(f, ": {}…", &command[..cut])?,
                None => write!(f, ": {command}")?,
            }
        }
        Ok(())
    }
}

/// Who stands in an acquisition's way, as far as it could find out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeldBy {
    /// A holder this host cannot probe, in words: a soft lock's marker from another host
    /// (`"pid 7 on build-host"`).
    Unprobeable(String),
    /// The processes the operating system says hold the OS lock (never empty), and the
    /// words for them.
    Processes { list: Vec<Holder>, text: String },
}

impl HeldBy {
    /// The holders the operating system names; `None` when the list is empty.
    pub(crate) fn processes(list: Vec<Holder>) -> Option<HeldBy> {
        if list.is_empty() {
            return None;
        }
        /// How many holders are named before the rest are counted.
        const NAMED: usize = 3;
        let mut text = list
            .iter()
            .take(NAMED)
            .map(Holder::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        if list.len() > NAMED {
            text.push_str(&format!(" and {} more", list.len() - NAMED));
        }
        Some(HeldBy::Processes { list, text })
    }

    /// In words: `"pid 4242: cargo build"`, `"pid 7 on build-host"`.
    pub(crate) fn text(&self) -> &str {
        match self {
            HeldBy::Unprobeable(text) | HeldBy::Processes { text, .. } => text,
        }
    }

    /// The processes the operating system names (empty for an unprobeable holder).
    pub(crate) fn list(&self) -> &[Holder] {
        match self {
            HeldBy::Unprobeable(_) => &[],
            HeldBy::Processes { list, .. } => list,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_read_as_pid_and_command() {
        let h = Holder::new(4242, Some("cargo build".into()), false);
        assert_eq!(h.to_string(), "pid 4242: cargo build");
        assert_eq!(Holder::new(7, None, true).to_string(), "pid 7");
        let long = Holder::new(1, Some("x".repeat(500)), false).to_string();
        assert!(long.ends_with('…') && long.chars().count() < 140, "{long}");
    }

    #[test]
    fn many_holders_are_counted_after_three() {
        assert_eq!(HeldBy::processes(Vec::new()), None);
        let list = (1..=5).map(|pid| Holder::new(pid, None, true)).collect();
        let held = HeldBy::processes(list).unwrap();
        assert_eq!(held.text(), "pid 1, pid 2, pid 3 and 2 more");
        assert_eq!(held.list().len(), 5);
    }
}
