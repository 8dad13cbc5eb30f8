//! Marker files: creating one exclusively, reading one safely, taking over a stale one
//! without the path ever standing empty, and removing only our own.
//!
//! The defence throughout (from Python filelock's security history): never follow a name we
//! did not just create, act on the opened file, and check identity (device and inode) again
//! before destroying anything.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::soft::identity::own_pid;
use crate::soft::record::{self, MAX_RECORD, RELEASED};
use crate::sys::marker as fs;
use crate::Error;

/// Permissions of a marker when the caller sets none (the umask applies; group and other
/// write are always removed).
pub(crate) const DEFAULT_MODE: u32 = 0o644;

/// A marker this process created and still has open: proof that it holds the soft lock.
#[derive(Debug)]
pub(crate) struct Marker {
    /// `None` once released (or abandoned).
    file: Option<File>,
    id: (u64, u64),
    /// Where the marker is the lock: dropping an unreleased marker releases it there.
    path: PathBuf,
    /// The process that created it; a forked child dropping an inherited guard must not
    /// remove its parent's marker.
    owner: u32,
}

/// Reads a marker as Python's `read_lock_file` does: the content (`None` for a node that is
/// not a regular file, content over [`MAX_RECORD`] bytes, or content that is not UTF-8)
/// and the metadata of what the path names (never following a symbolic link).
pub(crate) fn read(path: &Path) -> io::Result<(Option<String>, fs::Meta)> {
    let meta = fs::lstat(path)?;
    if !meta.is_file() {
        return Ok((None, meta));
    }
    let file = fs::open_read(path)?;
    let meta = fs::fstat(&file)?;
    if !meta.is_file() {
        return Ok((None, meta));
    }
    let mut data = Vec::with_capacity(128);
    file.take(MAX_RECORD as u64 + 1).read_to_end(&mut data)?;
    Ok((record::decode(&data).map(str::to_owned), meta))
}

/// One attempt to create the marker at `path` holding `record`. `Ok(None)`: it exists.
pub(crate) fn create(
    path: &Path,
    mode: Option<u32>,
    record: &[u8],
) -> Result<Option<Marker>, Error> {
    fs::check_writable(path).map_err(|e| not_writable(path, e))?;
    let mut made_parent = false;
    let file = loop {
        match fs::create(path, mode.unwrap_or(DEFAULT_MODE)) {
            Ok(file) => break file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
            // Windows reports a marker being deleted as access denied.
            Err(e)
                if cfg!(windows)
                    && e.kind() == io::ErrorKind::PermissionDenied
                    && path.exists() =>
            {
                return Ok(None)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && !made_parent => {
                made_parent = true;
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| Error::io(path, e))?;
                }
            }
            Err(e) => return Err(create_error(path, e)),
        }
    };
    crate::fault::point("soft.created");
    let marker = finish(path, file, mode, record)?;
    crate::fault::point("soft.written");
    Ok(Some(marker))
}

fn not_writable(path: &Path, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::IsADirectory => Error::not_a_file(path, "it is a directory"),
        _ => Error::io(path, e),
    }
}

fn create_error(path: &Path, e: io::Error) -> Error {
    // (O_CREAT|O_EXCL on a symbolic link reports EEXIST, which is contention: the link is
    // then judged as an unreadable marker.)
    Error::io(path, e)
}

/// Records identity, applies the mode and writes the record into a marker just created; on
/// failure removes it again (only while the path still names it) and reports why.
fn finish(path: &Path, mut file: File, mode: Option<u32>, record: &[u8]) -> Result<Marker, Error> {
    let written = (|| {
        let id = fs::id(&fs::fstat(&file)?);
        if let Some(mode) = mode {
            fs::apply_mode(&file, mode)?;
        }
        file.write_all(record)?;
        Ok::<_, io::Error>(id)
    })();
    match written {
        Ok(id) => Ok(Marker {
            file: Some(file),
            id,
            path: path.to_path_buf(),
            owner: own_pid(),
        }),
        Err(e) => {
            let id = fs::fstat(&file).map(|m| fs::id(&m)).ok();
            if fs::REMOVE_WHILE_OPEN {
                remove_if(path, id);
            }
            drop(file);
            if !fs::REMOVE_WHILE_OPEN {
                remove_if(path, id);
            }
            Err(Error::io(path, e))
        }
    }
}

/// Removes `path` if it names the file with identity `id`.
fn remove_if(path: &Path, id: Option<(u64, u64)>) -> bool {
    match (fs::lstat(path), id) {
        (Ok(now), Some(id)) if fs::id(&now) == id => std::fs::remove_file(path).is_ok(),
        _ => false,
    }
}

/// A name beside `path` that no other process can guess: `<path>.<what>.<pid>.<32 hex>`.
pub(crate) fn side_name(path: &Path, what: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{what}.{}.{}", own_pid(), random_hex()));
    PathBuf::from(name)
}

/// 128 random bits as 32 lowercase hex digits.
pub(crate) fn random_hex() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// Takes over the marker judged stale (its metadata `judged`) by exchanging it with a
/// complete marker of ours, so the lock path never stands empty. `Ok(Some)`: we hold the
/// lock. `Ok(None)`: the marker changed since it was judged, or this file system cannot
/// exchange names; where it cannot, the marker stays (on Windows it is renamed aside
/// instead, which Windows refuses while its holder keeps it open, and the same attempt then
/// creates its own marker, unless a peer's got there first).
pub(crate) fn take_over(
    path: &Path,
    judged: &fs::Meta,
    mode: Option<u32>,
    record: &[u8],
) -> Result<Option<Marker>, Error> {
    let unchanged =
        || fs::lstat(path).is_ok_and(|now| fs::judged_key(&now) == fs::judged_key(judged));
    if !unchanged() {
        return Ok(None);
    }
    if !fs::REMOVE_WHILE_OPEN {
        // With the judged marker gone, this attempt may still win the path.
        if rename_aside(path, judged) {
            return create(path, mode, record);
        }
        return Ok(None);
    }
    let aside = side_name(path, "break");
    let file = match fs::create(&aside, mode.unwrap_or(DEFAULT_MODE)) {
        Ok(file) => file,
        Err(e) => return Err(Error::io(&aside, e)),
    };
    let marker = finish(&aside, file, mode, record)?;
    let abandon = |mut marker: Marker, put_back: bool| {
        let settled = !put_back || exchange_back(path, &aside, &marker);
        for name in [path, aside.as_path()] {
            if name == path && !settled {
                continue;
            }
            remove_if(name, Some(marker.id));
        }
        // Closed without the release a held marker gets: it was never the lock.
        drop(marker.file.take());
    };
    // Writing took time: a peer may have taken the marker since, and exchanging now would
    // move its live marker aside.
    if !unchanged() {
        abandon(marker, false);
        return Ok(None);
    }
    crate::fault::point("soft.break.before-exchange");
    match crate::sys::exchange(&aside, path) {
        Ok(true) => crate::fault::point("soft.break.exchanged"),
        Ok(false) | Err(_) => {
            abandon(marker, false);
            return Ok(None);
        }
    }
    let taken = fs::lstat(&aside);
    if !taken.is_ok_and(|t| fs::judged_key(&t) == fs::judged_key(judged)) {
        // A peer recreated the marker after our check: swap it straight back.
        abandon(marker, true);
        return Ok(None);
    }
    let _ = std::fs::remove_file(&aside);
    let mut marker = marker;
    marker.path = path.to_path_buf();
    Ok(Some(marker))
}

/// Puts back what our exchange took, unwinding rings of breakers that exchanged in turn.
/// `false` if our marker could not be moved off the path in time.
fn exchange_back(path: &Path, aside: &Path, ours: &Marker) -> bool {
    let is_ours = |p: &Path| fs::lstat(p).is_ok_and(|m| fs::id(&m) == ours.id);
    let deadline = Instant::now() + Duration::from_secs(2);
    let stall = Duration::from_millis(10);
    let mut feed_at = Instant::now() + stall;
    while !is_ours(aside) {
        if std::fs::symlink_metadata(aside).is_err() {
            return true;
        }
        let now = Instant::now();
        let on_path = is_ours(path);
        if !on_path && now >= deadline {
            return false;
        }
        if on_path || now >= feed_at {
            if !matches!(crate::sys::exchange(aside, path), Ok(true)) {
                return false;
            }
            feed_at = now + stall;
        } else {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    true
}

/// Without an exchange (Windows): rename the judged marker aside, remove it if it is the one
/// judged, and put back (by hard link, which never replaces) one recreated meanwhile.
/// `true` when the judged marker was moved off the path.
fn rename_aside(path: &Path, judged: &fs::Meta) -> bool {
    let aside = side_name(path, "break");
    if std::fs::rename(path, &aside).is_err() {
        return false;
    }
    match fs::lstat(&aside) {
        Ok(m) if fs::judged_key(&m) == fs::judged_key(judged) => {
            let _ = std::fs::remove_file(&aside);
            true
        }
        Ok(m) if m.is_file() && std::fs::hard_link(&aside, path).is_ok() => {
            let _ = std::fs::remove_file(&aside);
            false
        }
        _ => false,
    }
}

/// Removes `path` whoever holds it (an operator's tool; it voids mutual exclusion).
pub(crate) fn break_lock(path: &Path) -> Result<bool, Error> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Err(Error::not_a_file(path, "it is a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        _ => {}
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

impl Marker {
    /// The open marker, for the lease heartbeat.
    pub(crate) fn file(&self) -> &File {
        self.file.as_ref().expect("a held marker is open")
    }

    /// The marker's identity (device and inode; on Windows volume and file index).
    pub(crate) fn id(&self) -> (u64, u64) {
        self.id
    }

    /// Removes the marker if the lock path still names it, then closes it. If another file
    /// sits at the path (a peer's exchange is in flight and will put ours back), ours is
    /// overwritten with a record no one mistakes for a live holder, so it ages out.
    pub(crate) fn release(mut self) -> Result<(), Error> {
        match self.file.take() {
            Some(file) => release(file, self.id, self.owner, &self.path),
            None => Ok(()),
        }
    }
}

impl Drop for Marker {
    /// A marker dropped without [`release`](Marker::release) (a late success whose future
    /// is gone, an error path) is released all the same.
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            let _ = release(file, self.id, self.owner, &self.path);
        }
    }
}

fn release(file: File, id: (u64, u64), owner: u32, path: &Path) -> Result<(), Error> {
    if owner != own_pid() {
        return Ok(());
    }
    if !fs::REMOVE_WHILE_OPEN {
        drop(file);
        return remove_own_after_close(path, id);
    }
    let mut result = Ok(());
    let mut unlinked = false;
    match fs::lstat(path) {
        Ok(now) if fs::id(&now) == id => match std::fs::remove_file(path) {
            Ok(()) => unlinked = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => unlinked = true,
            Err(e) => result = Err(Error::io(path, e)),
        },
        Ok(_) => {
            unlinked = true;
            let _ = fs::write_at_start(&file, RELEASED)
                .and_then(|()| file.set_len(RELEASED.len() as u64));
        }
        Err(_) => unlinked = true,
    }
    drop(file);
    if !unlinked && remove_if(path, Some(id)) {
        result = Ok(());
    }
    result
}

/// Windows refuses to delete a file while it is being closed ("access denied") or while a
/// peer reading it has it open without sharing deletion (`ERROR_SHARING_VIOLATION`; Python
/// sees both as `PermissionError`).
fn refused_while_open(e: &io::Error) -> bool {
    const ERROR_SHARING_VIOLATION: i32 = 32;
    e.kind() == io::ErrorKind::PermissionDenied
        || (cfg!(windows) && e.raw_os_error() == Some(ERROR_SHARING_VIOLATION))
}

/// Windows: unlink after the close, retrying while the close settles or a peer reads the
/// marker, only while the path still names our file.
fn remove_own_after_close(path: &Path, id: (u64, u64)) -> Result<(), Error> {
    let mut delay = Duration::from_millis(1);
    for _ in 0..10 {
        match fs::lstat(path) {
            Ok(now) if fs::id(&now) == id => match std::fs::remove_file(path) {
                Ok(()) => return Ok(()),
                Err(e) if refused_while_open(&e) => {
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Error::io(path, e)),
            },
            _ => return Ok(()),
        }
    }
    Err(Error::io(
        path,
        io::Error::from(io::ErrorKind::PermissionDenied),
    ))
}
