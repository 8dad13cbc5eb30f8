//! Who a marker names, and whether that owner is provably gone.
//!
//! Fail closed: a marker is stale only when this process can prove its exact owner dead.
//! A marker from another host cannot be probed; a live pid whose start token matches, or
//! whose token cannot be read, is the holder or indistinguishable from it; a live pid with a
//! different start token is a recycled pid, so the writer is gone.

use crate::soft::record::{host_field, Token};
use crate::sys;

/// This host's name as records carry it (escaped, with the PID namespace on Linux).
/// Computed on every call: the name and the namespace can change while a process runs.
pub(crate) fn host_name() -> String {
    host_field(&sys::host_name_raw(), sys::process::pid_namespace())
}

/// This process's pid.
pub(crate) fn own_pid() -> u32 {
    std::process::id()
}

/// This process's start token, where the platform has one.
pub(crate) fn own_start() -> Option<Token> {
    sys::process::start_token(own_pid())
}

/// Whether the recorded owner is provably gone.
pub(crate) fn owner_is_stale(pid: u32, host: &str, start: Option<Token>) -> bool {
    if host != host_name() {
        return false;
    }
    let alive = match sys::process_alive(pid) {
        Ok(alive) => alive,
        // An answer we cannot interpret proves nothing.
        Err(_) => return false,
    };
    if alive {
        match (start, sys::process::start_token(pid)) {
            (Some(recorded), Some(current)) if !current.same_start(recorded) => {}
            _ => return false,
        }
    }
    // Only a bare host name can be an older writer's in a container sharing this host's name.
    host.contains("?pidns-") || !sys::process::owner_runs_elsewhere(pid, start)
}

/// Whether the recorded owner is this process (a marker a recycled pid left behind never
/// reads as ours).
pub(crate) fn owner_is_current(pid: u32, host: &str, start: Option<Token>) -> bool {
    if pid != own_pid() || host != host_name() {
        return false;
    }
    start.is_none_or(|s| Some(s) == own_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_current_and_alive() {
        let (pid, host, start) = (own_pid(), host_name(), own_start());
        assert!(owner_is_current(pid, &host, start));
        assert!(!owner_is_stale(pid, &host, start));
        // Another host's marker is never stale, and never ours.
        assert!(!owner_is_stale(pid, "surely-another-host", start));
        assert!(!owner_is_current(pid, "surely-another-host", start));
    }

    #[cfg(any(target_os = "linux", target_os = "android", windows))]
    #[test]
    fn a_recycled_pid_is_stale() {
        let start = own_start().expect("Linux and Windows have start tokens");
        let other = Token::new(0, 1);
        assert!(!start.same_start(other));
        assert!(owner_is_stale(own_pid(), &host_name(), Some(other)));
        assert!(!owner_is_current(own_pid(), &host_name(), Some(other)));
    }
}
