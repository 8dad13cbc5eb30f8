//! Process identity on Linux: start tokens from procfs, PID and time namespaces.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

use crate::soft::record::Token;

/// `PID_NS_INIT_INO`: the initial PID namespace's inode, fixed by the kernel ABI.
const INITIAL_PID_NAMESPACE: u64 = 0xEFFF_FFFC;
/// `TIME_NS_INIT_INO`.
const INITIAL_TIME_NAMESPACE: u64 = 0xEFFF_FFFA;
/// `starttime` is field 22 of `/proc/<pid>/stat`, the twentieth after the command name.
const STARTTIME_INDEX: usize = 19;

/// The PID namespace of this process, unless it is the initial one (or unknown).
pub(crate) fn pid_namespace() -> Option<u64> {
    let ino = fs::metadata("/proc/self/ns/pid").ok()?.ino();
    (ino != INITIAL_PID_NAMESPACE).then_some(ino)
}

fn boot_id() -> u128 {
    static BOOT_ID: OnceLock<u128> = OnceLock::new();
    *BOOT_ID.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .and_then(|s| u128::from_str_radix(&s.trim().replace('-', ""), 16).ok())
            .unwrap_or(0)
    })
}

/// Whether `starttime` values this process reads are the ones a peer outside any time
/// namespace reads (a boottime offset shifts them since Linux 5.6).
fn starttime_unshifted() -> bool {
    let namespace = match fs::metadata("/proc/self/ns/time") {
        Ok(m) => m.ino(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
        Err(_) => return false,
    };
    if namespace == INITIAL_TIME_NAMESPACE {
        return true;
    }
    let same = fs::metadata("/proc/self/ns/time_for_children").is_ok_and(|m| m.ino() == namespace);
    if !same {
        return false;
    }
    let Ok(offsets) = fs::read_to_string("/proc/self/timens_offsets") else {
        return false;
    };
    offsets.lines().any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f == ["boottime", "0", "0"] || f == ["7", "0", "0"]
    })
}

fn read_start_token(pid: u32) -> Option<Token> {
    let data = fs::read(format!("/proc/{pid}/stat")).ok()?;
    let after = &data[data.iter().rposition(|&b| b == b')')? + 1..];
    let field = after
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
        .nth(STARTTIME_INDEX)?;
    let starttime: u64 = std::str::from_utf8(field).ok()?.parse().ok()?;
    Some(Token::new(boot_id(), starttime))
}

/// The start token of `pid`: the boot id folded with its start time; `None` when the
/// process is gone or this process's clock view is shifted.
pub(crate) fn start_token(pid: u32) -> Option<Token> {
    if starttime_unshifted() {
        read_start_token(pid)
    } else {
        None
    }
}

fn innermost_pid(task: u32) -> Option<u32> {
    let status = fs::read(format!("/proc/{task}/status")).ok()?;
    status
        .split(|&b| b == b'\n')
        .find(|l| l.starts_with(b"NSpid:"))
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| l.split_whitespace().last())
        .and_then(|p| p.parse().ok())
}

/// Whether the owner still runs as `pid` inside another PID namespace (an older writer in a
/// container sharing this host name recorded its in-container pid).
pub(crate) fn owner_runs_elsewhere(pid: u32, start: Option<Token>) -> bool {
    let Some(start) = start else {
        return false;
    };
    let boot = boot_id();
    if boot != 0
        && ![Token::new(0, 0), Token::new(boot, 0)]
            .iter()
            .any(|t| same_boot(*t, start))
    {
        return false;
    }
    let unshifted = starttime_unshifted();
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Some(task) = entry.file_name().to_str().and_then(|n| {
            n.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| n.parse::<u32>().ok())
                .flatten()
        }) else {
            return false;
        };
        task != pid
            && (!unshifted || read_start_token(task).is_some_and(|t| t.same_start(start)))
            && innermost_pid(task) == Some(pid)
    })
}

/// Whether `token`'s boot-id half is `boot`'s (the start-time halves are ignored).
fn same_boot(boot: Token, token: Token) -> bool {
    boot.high_bits_eq(token)
}
