//! Process identity on Windows: the start token is the process's creation time.

use crate::soft::record::Token;

/// Windows has no PID namespaces.
pub(crate) fn pid_namespace() -> Option<u64> {
    None
}

/// The creation time of `pid` (a `FILETIME`, 100 ns ticks since 1601), as Python filelock
/// records it; `None` when the process is gone or cannot be opened.
pub(crate) fn start_token(pid: u32) -> Option<Token> {
    super::windows_api::process_creation_time(pid).map(|ticks| Token::new(0, ticks))
}

/// No PID namespaces: a pid names one process on this host.
pub(crate) fn owner_runs_elsewhere(_pid: u32, _start: Option<Token>) -> bool {
    false
}
