//! Linux: who holds a file's OS lock, read from `/proc/locks`.
//!
//! Each line of `/proc/locks` names one lock: its type (`FLOCK`, `POSIX`, `OFDLCK`, `LEASE`,
//! `DELEG`), mode, the pid that took it, and the locked inode as `MAJOR:MINOR:INODE` (device
//! numbers in hex). Lines starting `->` are requests blocked behind the lock above them, not
//! holders. The crate locks with `flock`, so `FLOCK` lines are its holders; on NFS, where the
//! client emulates `flock` with a whole-file `POSIX` lock, those count too. `OFDLCK` lines
//! carry no pid (`-1`), and locks of processes outside this PID namespace are not listed.

use std::path::Path;

use rustix::io::Errno;

use crate::Holder;

/// `statfs`'s `f_type` of an NFS mount.
const NFS_SUPER_MAGIC: i64 = 0x6969;

/// The processes holding an OS lock on the file at `path`; empty when nobody does (or there is
/// no file); `None` when `/proc/locks` cannot be read.
pub(crate) fn holders(path: &Path) -> Option<Vec<Holder>> {
    let st = match rustix::fs::lstat(path) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Some(Vec::new()),
        Err(_) => return None,
    };
    // `f_type`'s integer type differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    let nfs = rustix::fs::statfs(path).is_ok_and(|s| s.f_type as i64 == NFS_SUPER_MAGIC);
    let dev = st.st_dev as u64;
    let id = FileId {
        major: rustix::fs::major(dev),
        minor: rustix::fs::minor(dev),
        inode: st.st_ino as u64,
    };
    let table = read_table().ok()?;
    let holders = parse(&table, id, nfs)
        .into_iter()
        .map(|(pid, shared)| Holder::new(pid, command(pid), shared))
        .collect();
    Some(holders)
}

/// Reads `/proc/locks` in reads of 64 KiB.
///
/// The kernel produces the table one read at a time (a page per read), each read starting at
/// the line where the last one ended, counted anew: a lock released between two reads moves
/// the lines after it up, and one of them is skipped. `fs::read_to_string` starts with a
/// 32-byte probe, which would make that the rule; a table of one page (some fifty locks) is
/// read whole in one read, and longer ones are a snapshot only line by line.
fn read_table() -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open("/proc/locks")?;
    let mut table = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => table.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&table).into_owned())
}

/// A file as `/proc/locks` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    major: u32,
    minor: u32,
    inode: u64,
}

/// The holders of locks on `id` in a `/proc/locks` table, as (pid, shared), one per pid (a
/// pid with both modes counts as exclusive), in table order. `posix`: whole-file `POSIX` locks
/// count too.
fn parse(table: &str, id: FileId, posix: bool) -> Vec<(u32, bool)> {
    let mut out: Vec<(u32, bool)> = Vec::new();
    for line in table.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(_ordinal) = fields.next() else {
            continue;
        };
        let fields: Vec<&str> = fields.collect();
        // `-> TYPE ...`: a blocked request.
        let [kind, _advisory, mode, pid, file, start, end, ..] = fields[..] else {
            continue;
        };
        let counts = match kind {
            "FLOCK" => true,
            "POSIX" => posix && start == "0" && end == "EOF",
            _ => false,
        };
        if !counts || parse_file(file) != Some(id) {
            continue;
        }
        let shared = match mode {
            "READ" => true,
            "WRITE" => false,
            _ => continue,
        };
        // Negative: an OFD or remote lock; zero: a process this namespace cannot see.
        let Some(pid) = pid.parse::<u32>().ok().filter(|&p| p > 0) else {
            continue;
        };
        match out.iter_mut().find(|(p, _)| *p == pid) {
            Some(seen) => seen.1 &= shared,
            None => out.push((pid, shared)),
        }
    }
    out
}

/// `MAJOR:MINOR:INODE`, device numbers in hex.
fn parse_file(field: &str) -> Option<FileId> {
    let mut parts = field.split(':');
    let major = u32::from_str_radix(parts.next()?, 16).ok()?;
    let minor = u32::from_str_radix(parts.next()?, 16).ok()?;
    let inode = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some(FileId {
        major,
        minor,
        inode,
    })
}

/// The command line of `pid`, arguments joined by spaces; `None` when it is gone or empty.
fn command(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<_> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect();
    (!args.is_empty()).then(|| args.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: FileId = FileId {
        major: 0xfe,
        minor: 0,
        inode: 10027725,
    };

    #[test]
    fn flock_lines_on_the_file_are_its_holders() {
        let table = "\
1: FLOCK  ADVISORY  WRITE 19353 fe:00:10027725 0 EOF
1: -> FLOCK  ADVISORY  WRITE 19400 fe:00:10027725 0 EOF
2: POSIX  ADVISORY  WRITE 19119 fe:00:10011725 0 0
3: FLOCK  ADVISORY  READ 200 fe:00:10027726 0 EOF
4: FLOCK  ADVISORY  READ 300 fe:01:10027725 0 EOF
5: POSIX  ADVISORY  WRITE 400 fe:00:10027725 0 EOF
6: OFDLCK ADVISORY  READ -1 fe:00:10027725 0 EOF
7: LEASE  ACTIVE    READ 500 fe:00:10027725 0 EOF
";
        assert_eq!(parse(table, ID, false), [(19353, false)]);
        // On NFS a whole-file POSIX lock is an emulated flock.
        assert_eq!(parse(table, ID, true), [(19353, false), (400, false)]);
    }

    #[test]
    fn shared_holders_are_listed_once_each() {
        let table = "\
1: FLOCK  ADVISORY  READ 10 fe:00:10027725 0 EOF
2: FLOCK  ADVISORY  READ 11 fe:00:10027725 0 EOF
3: FLOCK  ADVISORY  READ 10 fe:00:10027725 0 EOF
4: FLOCK  ADVISORY  READ 0 fe:00:10027725 0 EOF
garbage
5: FLOCK  ADVISORY  READ 12 fe:00:zz 0 EOF
";
        assert_eq!(parse(table, ID, false), [(10, true), (11, true)]);
    }

    #[test]
    fn a_lock_held_in_this_process_names_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held.lock");
        assert_eq!(holders(&path), Some(Vec::new()), "no file, no holder");
        let file = std::fs::File::create(&path).unwrap();
        assert_eq!(holders(&path), Some(Vec::new()), "open but not locked");
        file.lock_shared().unwrap();
        let list = holders(&path).expect("/proc/locks is readable");
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0].pid(), std::process::id());
        assert!(list[0].is_shared());
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap();
        assert!(
            list[0].command().is_some_and(|c| c.contains(name)),
            "{list:?} names {name}"
        );
    }
}
