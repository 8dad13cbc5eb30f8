//! `StrictSoftFileLock`'s protocol, byte-compatible with Python filelock 4.2 (`_strict.py`).
//!
//! A strict lock is never broken by age or by an owner's death, only by an operator's
//! [`force_break`](Strict::force_break). On disk:
//!
//! - the lock path holds the sentinel [`STRICT_SENTINEL`], which every older soft lock reads
//!   as a holder on a host it can never probe, so they wait instead of overlapping;
//! - `<lock>.filelock/claims/` holds immutable claim files, `intent-v1-<token>.claim` and
//!   `held-v1-<token>.claim`, each `"filelock-strict-v1\n<token>\n<pid>\n<hex host>\n<start>\n"`;
//! - every record is written to a private `.<name>.private-v1-<hex>.tmp` and published by a
//!   hard link, which never replaces, so no reader ever sees a partial record under a public
//!   name.
//!
//! The doorway: (1) any claim present is contention; (2) publish an intent; (3) rescan, and
//! back off if a `held` claim exists or our intent is not the least name; (4) link the intent
//! to a `held` claim; (5) rescan: we hold the lock when both our claims are listed and our
//! token is the least. Both claims stay for the whole hold (the intent is the witness that
//! keeps a racing scan honest); release removes them and leaves the sentinel.
//!
//! Anything the protocol cannot interpret is [`ErrorKind::Protocol`](crate::ErrorKind::Protocol)
//! rather than a wait: waiting on state no writer produces would wedge every contender.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::Action;
use crate::soft::identity::{host_name, own_pid, own_start, owner_is_stale};
use crate::soft::marker::random_hex;
use crate::soft::record::{parse_pid, Holder, Record, MAX_RECORD, STRICT_SENTINEL};
use crate::Error;

use crate::sys::dir::{self as imp, Kind, Stat};

const COORDINATION_SUFFIX: &str = ".filelock";
const CLAIM_DIRECTORY: &str = "claims";
const CLAIM_MAGIC: &str = "filelock-strict-v1";
const TOKEN_HEX_LENGTH: usize = 32;
const PRIVATE_MARKER: &str = ".private-v1-";
const PRIVATE_SUFFIX: &str = ".tmp";
const PROBE_PREFIX: &str = ".probe-v1-";
/// Python's `_open_mode()` when no mode is set: the umask decides.
const DEFAULT_OPEN_MODE: u32 = 0o666;
/// How long a scan waits out a claim it cannot read yet (a peer's unlink in flight).
const CLAIM_READ_GRACE: Duration = Duration::from_millis(500);
const READ_RETRY: Duration = Duration::from_millis(2);
/// Rides out a peer replacing the lock path mid-inspection.
const SENTINEL_READ_GRACE: Duration = Duration::from_millis(500);
/// A private record this old (by the file system's clock) was abandoned by its writer.
const PRIVATE_RECORD_GRACE_NS: i128 = 2_000_000_000;
/// An unparsable file at the lock path is an error once unchanged this long (Python's
/// `MALFORMED_LOCK_AGE_THRESHOLD`): before that it may be a soft lock between create and
/// write.
const MALFORMED_AGE: Duration = Duration::from_secs(2);
const NO_HARD_LINKS: &str = "filesystem does not support atomic no-replace hard-link publication";
/// Claims are checked on the server by a hard link (NFS caches). Not elsewhere (Windows):
/// as in Python, there is no probe-by-link there.
const VERIFY_ON_SERVER: bool = cfg!(unix);

/// Whether a claim waits at the doorway or owns the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimState {
    /// An `intent-v1-…` claim: its owner is at the doorway.
    Intent,
    /// A `held-v1-…` claim: its owner holds (or is about to hold) the lock.
    Held,
}

impl ClaimState {
    fn prefix(self) -> &'static str {
        match self {
            ClaimState::Intent => "intent",
            ClaimState::Held => "held",
        }
    }
}

/// A claim in a strict lock's claim directory.
///
/// A strict lock never removes a claim on its own, whatever its owner's fate; this names
/// the owner for a person or a tool that decides to force-break it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrictClaim {
    name: String,
    state: ClaimState,
    token: String,
    pid: u32,
    host: String,
    start: Option<String>,
}

impl StrictClaim {
    /// The claim's file name in the claim directory (what `force_break` takes).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the claim is an intent or a held claim.
    pub fn state(&self) -> ClaimState {
        self.state
    }

    /// The random token (32 hex digits) that identifies the claim.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The pid of the process that wrote the claim.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The host of the process that wrote the claim, as soft locks record it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The owner's process start token (decimal), where its platform has one.
    pub fn start(&self) -> Option<&str> {
        self.start.as_deref()
    }
}

/// A file's (mtime, inode, size) and when this instance first saw it so.
type Seen = ((i128, u64, u64), Instant);

/// Claims an earlier attempt or release failed to remove: `(claim directory, name, pid)`.
type Leftovers = Arc<Mutex<Vec<(PathBuf, String, u32)>>>;

/// The protocol state of one strict lock.
#[derive(Debug)]
pub(crate) struct Strict {
    path: PathBuf,
    mode: Option<u32>,
    /// A file at the lock path no lock parses: its (mtime, inode, size) and when this
    /// instance first saw it so.
    occupant_seen: Mutex<Option<Seen>>,
    leftovers: Leftovers,
}

/// Proof that a strict lock is held: our two claims and the open sentinel.
#[derive(Debug)]
pub(crate) struct StrictHeld {
    lock: PathBuf,
    claim_directory: PathBuf,
    /// Held first, then intent, as Python removes them.
    names: Vec<String>,
    token: String,
    sentinel: Option<File>,
    /// The process that published the claims; a forked child must not remove them.
    owner: u32,
    leftovers: Leftovers,
}

impl Strict {
    /// A strict lock on `path` (absolute). `mode`: the permissions of the sentinel and
    /// claims (and, with search bits added, of the directories); `None` lets the umask
    /// decide.
    pub(crate) fn new(path: PathBuf, mode: Option<u32>) -> Strict {
        Strict {
            path,
            mode,
            occupant_seen: Mutex::new(None),
            leftovers: Arc::default(),
        }
    }

    /// The lock path with its directory resolved, as Python's `canonical` resolves it (a
    /// final symbolic link stays a link, which the protocol then refuses).
    fn lock_path(&self) -> PathBuf {
        if cfg!(unix) {
            if let (Some(parent), Some(name)) = (self.path.parent(), self.path.file_name()) {
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                if let Ok(parent) = std::fs::canonicalize(parent) {
                    return parent.join(name);
                }
            }
        }
        self.path.clone()
    }

    fn claim_directory(lock: &Path) -> PathBuf {
        coordination_directory(lock).join(CLAIM_DIRECTORY)
    }

    /// One doorway attempt that never waits for another holder. `Ok(None)`: contention.
    pub(crate) fn attempt(&self) -> Result<Option<StrictHeld>, Error> {
        self.finish_leftovers()?;
        let lock = self.lock_path();
        let coordination = coordination_directory(&lock);
        let claim_directory = Strict::claim_directory(&lock);
        let mode = self.mode.unwrap_or(DEFAULT_OPEN_MODE);
        // Whoever can write these directories can remove claims from them, so they take the
        // lock's mode, plus search permission where it grants read.
        let directory_mode = mode | ((mode & 0o444) >> 2);
        ensure_directory(&self.path, None, &coordination, directory_mode)?;
        let parent = imp::Dir::open(&coordination).map_err(|e| {
            protocol(
                &self.path,
                format!("cannot open {}: {e}", coordination.display()),
            )
        })?;
        ensure_directory(&self.path, Some(&parent), &claim_directory, directory_mode)?;
        drop(parent);
        let Some(sentinel) = self.open_or_create_sentinel(&lock, mode)? else {
            return Ok(None);
        };
        let mut owned = Vec::new();
        match self.doorway(&claim_directory, mode, &mut owned) {
            Ok(Some(token)) => Ok(Some(StrictHeld {
                lock: self.path.clone(),
                claim_directory,
                names: owned,
                token,
                sentinel: Some(sentinel),
                owner: own_pid(),
                leftovers: self.leftovers.clone(),
            })),
            Ok(None) => {
                drop(sentinel);
                self.discard(&claim_directory, &owned)?;
                Ok(None)
            }
            Err(e) => {
                drop(sentinel);
                let _ = self.discard(&claim_directory, &owned);
                Err(e)
            }
        }
    }

    /// Steps (1) to (5). `Ok(Some(token))`: won. `owned` names the claims published so far
    /// (recorded before each link, so a failure after it may have committed still removes
    /// them).
    fn doorway(
        &self,
        claim_directory: &Path,
        mode: u32,
        owned: &mut Vec<String>,
    ) -> Result<Option<String>, Error> {
        let lock = &self.path;
        if !read_claims(lock, claim_directory, Scan::Contend)?.is_empty() {
            return Ok(None);
        }
        let token = random_hex();
        let intent = claim_name(ClaimState::Intent, &token);
        owned.push(intent.clone());
        let directory = open_claim_directory(claim_directory).map_err(|e| Error::io(lock, e))?;
        match publish(&directory, OsStr::new(&intent), mode, &claim_record(&token)) {
            Ok(()) => {}
            Err(Publish::Reclaimed) => return Ok(None),
            Err(Publish::Failed(e)) => {
                if imp::hard_link_unsupported(&e) {
                    return Err(protocol(lock, NO_HARD_LINKS));
                }
                if e.kind() == io::ErrorKind::AlreadyExists {
                    // Another file holds the name, so it is not ours to remove.
                    owned.clear();
                    return Ok(None);
                }
                return Err(Error::io(lock, e));
            }
        }
        drop(directory);
        crate::fault::point("strict.intent-published");

        let claims = read_claims(lock, claim_directory, Scan::Contend)?;
        if claims.iter().any(|c| c.state == ClaimState::Held)
            || claims.iter().map(|c| c.name.as_str()).min() != Some(intent.as_str())
        {
            return Ok(None);
        }

        let held = claim_name(ClaimState::Held, &token);
        owned.insert(0, held.clone());
        let directory = open_claim_directory(claim_directory).map_err(|e| Error::io(lock, e))?;
        if let Err(e) =
            link_or_find_committed(&directory, OsStr::new(&intent), OsStr::new(&held), None)
        {
            if imp::hard_link_unsupported(&e) {
                return Err(protocol(lock, NO_HARD_LINKS));
            }
            if e.kind() == io::ErrorKind::AlreadyExists {
                owned.remove(0);
            }
            return Err(Error::io(lock, e));
        }
        drop(directory);
        crate::fault::point("strict.held-linked");

        let claims = read_claims(lock, claim_directory, Scan::Contend)?;
        let listed = |name: &str| claims.iter().any(|c| c.name == name);
        let least = claims.iter().map(|c| token_key(&c.name)).min();
        let ours = format!("v1-{token}.claim");
        Ok((listed(&intent) && listed(&held) && least == Some(ours.as_str())).then_some(token))
    }

    /// Removes the claims of a doorway that did not win; any that stay are retried by the
    /// next attempt.
    fn discard(&self, claim_directory: &Path, names: &[String]) -> Result<(), Error> {
        let (remaining, error) = unlink_claims(claim_directory, names);
        if remaining.is_empty() {
            return Ok(());
        }
        let pid = own_pid();
        self.leftovers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(
                remaining
                    .into_iter()
                    .map(|n| (claim_directory.to_path_buf(), n, pid)),
            );
        Err(cleanup_error(
            &self.path,
            error,
            "cannot remove this lock's claims",
        ))
    }

    /// Retries removing claims an earlier attempt or release of this lock left behind, so
    /// this owner never contends with itself.
    fn finish_leftovers(&self) -> Result<(), Error> {
        let mut leftovers = self
            .leftovers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if leftovers.is_empty() {
            return Ok(());
        }
        let pid = own_pid();
        let mut error = None;
        leftovers.retain(|(directory, name, owner)| {
            if *owner != pid {
                // Inherited across a fork: the parent's to remove.
                return false;
            }
            let (remaining, e) = unlink_claims(directory, std::slice::from_ref(name));
            if error.is_none() {
                error = e;
            }
            !remaining.is_empty()
        });
        if leftovers.is_empty() {
            return Ok(());
        }
        Err(cleanup_error(
            &self.path,
            error,
            "cannot remove claims an earlier attempt left",
        ))
    }

    /// Public claims, sorted by name. An inspection creates no files and trusts no record's
    /// age.
    pub(crate) fn claims(&self) -> Result<Vec<StrictClaim>, Error> {
        read_claims(
            &self.path,
            &Strict::claim_directory(&self.lock_path()),
            Scan::Inspect,
        )
    }

    /// What sits at the lock path in place of the sentinel, in words (Python's
    /// `lock_path_occupant`); `None` for the sentinel or nothing.
    pub(crate) fn occupant(&self) -> Result<Option<String>, Error> {
        match inspect_lock_path(&self.lock_path()) {
            Ok(Occupant::Sentinel(_)) => Ok(None),
            Ok(other) => Ok(Some(other.describe().to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&self.path, e)),
        }
    }

    /// Removes the claim named `claim_name` (exactly as [`claims`](Strict::claims) lists
    /// it), whoever owns it. This voids mutual exclusion if its owner still works.
    pub(crate) fn force_break(&self, claim_name: &str) -> Result<(), Error> {
        if claim_name.is_empty()
            || claim_name.starts_with('.')
            || claim_name.contains(['/', '\\', '\0'])
        {
            return Err(
                Error::invalid("claim_name must be one public claim basename")
                    .with_path(&self.path)
                    .during(Action::Release),
            );
        }
        let claim_directory = Strict::claim_directory(&self.lock_path());
        let fail = |e: io::Error| Error::io(&self.path, e).during(Action::Release);
        let directory = open_claim_directory(&claim_directory).map_err(fail)?;
        if !directory
            .names()
            .map_err(fail)?
            .iter()
            .any(|n| n == claim_name)
        {
            let missing = io::Error::new(
                io::ErrorKind::NotFound,
                format!("no claim named {claim_name:?}"),
            );
            return Err(fail(missing));
        }
        directory
            .unlink_retrying(OsStr::new(claim_name))
            .map_err(fail)
    }

    /// For timeout messages: a holder this host cannot probe (a soft-lock marker at the path
    /// or a claim written on another host), such as `"pid 7 on build-host"`.
    pub(crate) fn holder(&self) -> Option<String> {
        let this_host = host_name();
        let name = |pid: u32, host: &str| format!("pid {pid} on {}", host.escape_debug());
        if let Ok(Occupant::Held {
            owner: Some((pid, host)),
            ..
        }) = inspect_lock_path(&self.lock_path())
        {
            return (host != this_host).then(|| name(pid, &host));
        }
        let mut claims = self.claims().ok()?;
        // A held claim names the holder; an intent only a waiter.
        claims.sort_by_key(|c| c.state != ClaimState::Held);
        claims
            .iter()
            .find(|c| c.host != this_host)
            .map(|c| name(c.pid, &c.host))
    }

    /// Opens the sentinel at `lock`, creating it if nothing is there. `Ok(None)`: a soft
    /// lock holds the path (or a peer's publication raced ours); try again later.
    fn open_or_create_sentinel(&self, lock: &Path, mode: u32) -> Result<Option<File>, Error> {
        match self.open_sentinel(lock) {
            Ok(found) => return Ok(found),
            Err(Sentinel::Missing) => {}
            Err(Sentinel::Failed(e)) => return Err(e),
        }
        let (parent, name) = split(lock);
        reclaim_sentinel_private_records(&self.path, parent, name)?;
        let directory = imp::Dir::open(parent).map_err(|e| Error::io(&self.path, e))?;
        match publish(&directory, name, mode, STRICT_SENTINEL) {
            Ok(()) => {}
            Err(Publish::Reclaimed) => return Ok(None),
            Err(Publish::Failed(e)) => {
                if imp::hard_link_unsupported(&e) {
                    return Err(protocol(&self.path, NO_HARD_LINKS));
                }
                if e.kind() != io::ErrorKind::AlreadyExists {
                    return Err(Error::io(&self.path, e));
                }
            }
        }
        match self.open_sentinel(lock) {
            Ok(found) => Ok(found),
            Err(Sentinel::Missing) => Ok(None),
            Err(Sentinel::Failed(e)) => Err(e),
        }
    }

    /// A live soft-lock owner blocks like any holder. Anything else is an error: claims
    /// cannot show it and `force_break` cannot remove it.
    fn open_sentinel(&self, lock: &Path) -> Result<Option<File>, Sentinel> {
        let missing = |e: io::Error| match e.kind() {
            io::ErrorKind::NotFound => Sentinel::Missing,
            _ => Sentinel::Failed(Error::io(&self.path, e)),
        };
        let mut deadline = None;
        loop {
            let occupant = inspect_lock_path(lock).map_err(missing)?;
            let reason = format!(
                "expected the strict sentinel at the lock path, found {}",
                occupant.describe()
            );
            match occupant {
                Occupant::Sentinel(file) => return Ok(Some(file)),
                Occupant::Held { .. } => return Ok(None),
                Occupant::Unparsable(_) => {
                    let stat = imp::lstat(lock).map_err(missing)?;
                    if self.unchanged_for(&stat) < MALFORMED_AGE {
                        return Ok(None);
                    }
                    let secs = MALFORMED_AGE.as_secs();
                    return Err(Sentinel::Failed(protocol(
                        &self.path,
                        format!("{reason}, unchanged for {secs} seconds"),
                    )));
                }
                Occupant::Exited(_) => return Err(Sentinel::Failed(protocol(&self.path, reason))),
                Occupant::Damaged(_) => {
                    let deadline =
                        *deadline.get_or_insert_with(|| Instant::now() + SENTINEL_READ_GRACE);
                    if Instant::now() >= deadline {
                        return Err(Sentinel::Failed(protocol(&self.path, reason)));
                    }
                    std::thread::sleep(READ_RETRY);
                }
            }
        }
    }

    /// How long the file `stat` describes has stayed unchanged as this instance saw it
    /// (Python's marker rule: the mtime is only tested for change, timed on our clock).
    fn unchanged_for(&self, stat: &Stat) -> Duration {
        let key = (stat.mtime_ns, stat.id.1, stat.size);
        let now = Instant::now();
        let mut seen = self
            .occupant_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *seen {
            Some((k, since)) if k == key => now - since,
            _ => {
                *seen = Some((key, now));
                Duration::ZERO
            }
        }
    }
}

enum Sentinel {
    Missing,
    Failed(Error),
}

impl StrictHeld {
    /// Removes our claims (held, then intent) and closes the sentinel, which stays.
    pub(crate) fn release(mut self) -> Result<(), Error> {
        self.release_now()
    }

    /// This hold's claim token (32 hex digits).
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    fn release_now(&mut self) -> Result<(), Error> {
        let names = std::mem::take(&mut self.names);
        let sentinel = self.sentinel.take();
        if names.is_empty() || self.owner != own_pid() {
            // Released already, or inherited across a fork: the claims are the parent's.
            return Ok(());
        }
        let (remaining, error) = unlink_claims(&self.claim_directory, &names);
        drop(sentinel);
        if remaining.is_empty() {
            return Ok(());
        }
        self.leftovers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(
                remaining
                    .into_iter()
                    .map(|n| (self.claim_directory.clone(), n, self.owner)),
            );
        Err(
            cleanup_error(&self.lock, error, "cannot remove this hold's claims")
                .during(Action::Release),
        )
    }
}

impl Drop for StrictHeld {
    fn drop(&mut self) {
        let _ = self.release_now();
    }
}

fn protocol(lock: &Path, detail: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::protocol(lock, detail)
}

fn claim_protocol(lock: &Path, name: &str, reason: impl std::fmt::Display) -> Error {
    Error::protocol(lock, format!("claim {name:?}: {reason}"))
}

fn cleanup_error(lock: &Path, error: Option<io::Error>, what: &'static str) -> Error {
    let error = error.unwrap_or_else(|| io::Error::other("claim removal failed"));
    Error::io(lock, error).with_detail(what)
}

fn coordination_directory(lock: &Path) -> PathBuf {
    let mut name = lock.as_os_str().to_owned();
    name.push(COORDINATION_SUFFIX);
    PathBuf::from(name)
}

fn split(path: &Path) -> (&Path, &OsStr) {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    (parent, path.file_name().unwrap_or(path.as_os_str()))
}

fn open_claim_directory(claim_directory: &Path) -> io::Result<imp::Dir> {
    // A symbolic link at either level fails the open: the claim directory is opened relative
    // to the coordination directory, both without following a final link.
    let (coordination, name) = split(claim_directory);
    imp::Dir::open(coordination)?.open_child(name)
}

fn claim_name(state: ClaimState, token: &str) -> String {
    format!("{}-v1-{token}.claim", state.prefix())
}

fn token_key(name: &str) -> &str {
    let name = name.strip_prefix("held-").unwrap_or(name);
    name.strip_prefix("intent-").unwrap_or(name)
}

fn is_token(text: &str) -> bool {
    text.len() == TOKEN_HEX_LENGTH && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn parse_claim_name(name: &str) -> Option<(ClaimState, &str)> {
    let stem = name.strip_suffix(".claim")?;
    let mut parts = stem.split('-');
    let (state, version, token) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || version != "v1" || !is_token(token) {
        return None;
    }
    let state = match state {
        "intent" => ClaimState::Intent,
        "held" => ClaimState::Held,
        _ => return None,
    };
    Some((state, token))
}

fn private_record_name(public: &OsStr) -> OsString {
    let mut name = OsString::from(".");
    name.push(public);
    name.push(format!("{PRIVATE_MARKER}{}{PRIVATE_SUFFIX}", random_hex()));
    name
}

/// The public name a private record is for: `.<public>.private-v1-<32 hex>.tmp`.
fn private_public_name(private: &OsStr) -> Option<&[u8]> {
    let bytes = private.as_encoded_bytes();
    let inner = bytes
        .strip_prefix(b".")?
        .strip_suffix(PRIVATE_SUFFIX.as_bytes())?;
    let marker = PRIVATE_MARKER.as_bytes();
    let at = inner.windows(marker.len()).rposition(|w| w == marker)?;
    let random = std::str::from_utf8(&inner[at + marker.len()..]).ok()?;
    is_token(random).then_some(&inner[..at])
}

fn is_probe_name(name: &OsStr) -> bool {
    name.to_str()
        .and_then(|n| n.strip_prefix(PROBE_PREFIX)?.strip_suffix(PRIVATE_SUFFIX))
        .is_some_and(is_token)
}

fn claim_record(token: &str) -> Vec<u8> {
    let start = own_start().map(|t| t.to_string()).unwrap_or_default();
    encode_claim(token, own_pid(), &host_name(), &start)
}

fn encode_claim(token: &str, pid: u32, host: &str, start: &str) -> Vec<u8> {
    let host: String = host.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{CLAIM_MAGIC}\n{token}\n{pid}\n{host}\n{start}\n").into_bytes()
}

/// Python's `str.isprintable()` for a host name, as far as std can tell: no control,
/// format or private-use characters (and whitespace is refused separately).
fn is_printable(c: char) -> bool {
    let format = matches!(
        c as u32,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x890..=0x891 | 0x8e2 | 0x180e
            | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x206f | 0xfeff | 0xfff9..=0xfffb
            | 0x110bd | 0x110cd | 0x13430..=0x1343f | 0x1bca0..=0x1bca3 | 0x1d173..=0x1d17a
            | 0xe0001 | 0xe0020..=0xe007f
    );
    let private = matches!(c as u32, 0xe000..=0xf8ff | 0xf0000..=0x10ffff);
    !c.is_control() && !format && !private
}

/// The claim a record in the claim directory states, checked against the token its name
/// carries: exactly what [`encode_claim`] writes (canonical pid and start, lowercase hex of a
/// printable host without whitespace), at most [`MAX_RECORD`] bytes.
fn parse_claim(
    lock: &Path,
    name: &str,
    state: ClaimState,
    token: &str,
    record: &[u8],
) -> Result<StrictClaim, Error> {
    let malformed = || claim_protocol(lock, name, "malformed claim record");
    // What reads a claim stops at the cap already; the parser holds to it whatever it is given.
    if record.len() > MAX_RECORD {
        return Err(malformed());
    }
    let text = std::str::from_utf8(record)
        .ok()
        .filter(|t| t.is_ascii())
        .ok_or_else(malformed)?;
    let fields: Vec<&str> = text.split('\n').collect();
    let [magic, recorded, pid_text, host_hex, start_text, trailing] = fields[..] else {
        return Err(malformed());
    };
    let pid = parse_pid(pid_text).filter(|pid| pid.to_string() == pid_text);
    let start_ok = start_text.is_empty()
        || (start_text.bytes().all(|b| b.is_ascii_digit())
            && (start_text == "0" || !start_text.starts_with('0')));
    let host = decode_hex(host_hex).and_then(|b| String::from_utf8(b).ok());
    let (Some(pid), Some(host)) = (pid, host) else {
        return Err(malformed());
    };
    let host_ok = host.chars().all(|c| is_printable(c) && !c.is_whitespace());
    if !trailing.is_empty() || magic != CLAIM_MAGIC || recorded != token || !start_ok || !host_ok {
        return Err(malformed());
    }
    Ok(StrictClaim {
        name: name.to_owned(),
        state,
        token: token.to_owned(),
        pid,
        host,
        start: (!start_text.is_empty()).then(|| start_text.to_owned()),
    })
}

/// Lowercase hex, as Python's `bytes.hex()` writes it (anything else does not round-trip).
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// Removes our claims; returns the names that stay and the first error.
fn unlink_claims(claim_directory: &Path, names: &[String]) -> (Vec<String>, Option<io::Error>) {
    let mut remaining = Vec::new();
    let mut first = None;
    for name in names {
        match open_claim_directory(claim_directory)
            .and_then(|d| d.unlink_retrying(OsStr::new(name)))
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                remaining.push(name.clone());
                first.get_or_insert(e);
            }
        }
    }
    (remaining, first)
}

/// Creates the protocol directory `path` (relative to `parent` when given), refuses one that
/// is not a real directory or that another account controls under a sticky parent, and
/// narrows its mode to `mode` plus the sticky bit.
fn ensure_directory(
    lock: &Path,
    parent: Option<&imp::Dir>,
    path: &Path,
    mode: u32,
) -> Result<(), Error> {
    let name = split(path).1;
    let made = match parent {
        None => imp::mkdir(path, mode),
        Some(parent) => parent.mkdir(name, mode),
    };
    match made {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let inspect = || -> io::Result<(Stat, Option<u32>)> {
                let (found, above) = match parent {
                    None => (imp::lstat(path)?, imp::stat(split(path).0)?),
                    Some(parent) => (parent.lstat(name)?, parent.stat()?),
                };
                let owner = imp::foreign_owner(&found, &above);
                Ok((found, owner))
            };
            let (found, owner) = inspect()
                .map_err(|e| protocol(lock, format!("cannot inspect {}: {e}", path.display())))?;
            if found.kind != Kind::Directory {
                return Err(protocol(
                    lock,
                    format!("{} is not a real directory", path.display()),
                ));
            }
            if let Some(uid) = owner {
                return Err(protocol(
                    lock,
                    format!(
                        "{} belongs to uid {uid}, not to this process's account or the parent's owner",
                        path.display()
                    ),
                ));
            }
        }
        Err(e) => return Err(Error::io(lock, e)),
    }
    imp::settle_mode(
        parent,
        if parent.is_some() {
            Path::new(name)
        } else {
            path
        },
        mode,
    )
    .map_err(|(what, e)| protocol(lock, format!("{what} {}: {e}", path.display())))
}

/// How a scan treats the directory: a contender reaps abandoned private records by the file
/// system's clock and verifies each claim on the server; an inspection does neither.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scan {
    Contend,
    Inspect,
}

/// The public claims in `claim_directory`, sorted by name (none when it does not exist).
fn read_claims(lock: &Path, claim_directory: &Path, scan: Scan) -> Result<Vec<StrictClaim>, Error> {
    let directory = match open_claim_directory(claim_directory) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(protocol(lock, format!("cannot open claim directory: {e}"))),
    };
    let names = list_claim_names(lock, &directory, scan)?;
    let mut parsed = Vec::with_capacity(names.len());
    for name in &names {
        let (state, token) = parse_claim_name(name)
            .ok_or_else(|| claim_protocol(lock, name, "unknown claim name or protocol version"))?;
        parsed.push((name, state, token));
    }
    let records = read_claim_records(lock, &directory, &names, scan)?;
    let mut claims = Vec::with_capacity(parsed.len());
    for (name, state, token) in parsed {
        let Some(record) = records.get(name) else {
            continue;
        };
        if scan == Scan::Contend
            && VERIFY_ON_SERVER
            && !claim_exists_on_server(lock, &directory, name)?
        {
            continue;
        }
        claims.push(parse_claim(lock, name, state, token, record)?);
    }
    Ok(claims)
}

fn list_claim_names(lock: &Path, directory: &imp::Dir, scan: Scan) -> Result<Vec<String>, Error> {
    let listed = (|| -> io::Result<Vec<String>> {
        let mut now = FilesystemNow::new(directory, scan == Scan::Contend, || {
            OsString::from(claim_name(ClaimState::Held, &random_hex()))
        });
        let mut names = Vec::new();
        for entry in directory.names()? {
            if !entry.as_encoded_bytes().starts_with(b".") {
                names.push(entry.to_string_lossy().into_owned());
                continue;
            }
            let private_of_claim = private_public_name(&entry)
                .and_then(|p| std::str::from_utf8(p).ok())
                .is_some_and(|p| parse_claim_name(p).is_some());
            if is_probe_name(&entry) || private_of_claim {
                reclaim_private_record(directory, &entry, &mut now)?;
            }
        }
        names.sort();
        Ok(names)
    })();
    listed.map_err(|e| protocol(lock, format!("cannot list claim directory: {e}")))
}

/// "Now" by the file system's clock: the mtime of a probe written like a record. A network
/// file system stamps mtimes with the server's clock, which can be seconds off ours. Asked
/// at most once per scan; `None` (no age trusted) for an inspection or a failed probe.
struct FilesystemNow<'a, F> {
    directory: &'a imp::Dir,
    enabled: bool,
    public_name: F,
    now: Option<Option<i128>>,
}

impl<'a, F: Fn() -> OsString> FilesystemNow<'a, F> {
    fn new(directory: &'a imp::Dir, enabled: bool, public_name: F) -> Self {
        FilesystemNow {
            directory,
            enabled,
            public_name,
            now: None,
        }
    }

    fn get(&mut self) -> Option<i128> {
        if !self.enabled {
            return None;
        }
        if let Some(now) = self.now {
            return now;
        }
        let probe = private_record_name(&(self.public_name)());
        let stamp = self
            .directory
            .create_read_write(&probe, 0o600)
            .ok()
            .map(|mut file| {
                let stamp = file.write_all(b"\n").and_then(|()| imp::fstat(&file));
                drop(file);
                let _ = self.directory.unlink_retrying(&probe);
                stamp.ok().map(|s| s.mtime_ns)
            });
        let now = stamp.flatten();
        self.now = Some(now);
        now
    }
}

/// Removes a private record its writer abandoned (older than two seconds by the file
/// system's clock), or one already published (two links) that a writer died before
/// removing.
fn reclaim_private_record<F: Fn() -> OsString>(
    directory: &imp::Dir,
    name: &OsStr,
    now: &mut FilesystemNow<'_, F>,
) -> io::Result<()> {
    let stat = match directory.lstat(name) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if stat.kind != Kind::File {
        let path = directory.path().join(name);
        return Err(io::Error::other(format!(
            "{} is not a regular private record",
            path.display()
        )));
    }
    // Where the link count is not exposed, an unpublished record ages out by its mtime.
    if stat.nlink.unwrap_or(1) == 1
        && now
            .get()
            .is_none_or(|now| now - stat.mtime_ns < PRIVATE_RECORD_GRACE_NS)
    {
        return Ok(());
    }
    match directory.unlink_retrying(name) {
        Err(e)
            if e.kind() != io::ErrorKind::NotFound
                && e.kind() != io::ErrorKind::PermissionDenied =>
        {
            Err(e)
        }
        _ => Ok(()),
    }
}

fn reclaim_sentinel_private_records(lock: &Path, parent: &Path, name: &OsStr) -> Result<(), Error> {
    let reclaimed = (|| -> io::Result<()> {
        let directory = imp::Dir::open(parent)?;
        let mut now = FilesystemNow::new(&directory, true, || name.to_owned());
        for entry in directory.names()? {
            if private_public_name(&entry) == Some(name.as_encoded_bytes()) {
                reclaim_private_record(&directory, &entry, &mut now)?;
            }
        }
        Ok(())
    })();
    reclaimed.map_err(|e| {
        protocol(
            lock,
            format!("cannot reclaim sentinel private records: {e}"),
        )
    })
}

enum ClaimRead {
    Record(Vec<u8>),
    Gone,
    /// An open worth retrying: a claim a peer is unlinking (Windows) or a stale NFS handle.
    Retry(io::Error),
}

fn read_claim_records(
    lock: &Path,
    directory: &imp::Dir,
    names: &[String],
    scan: Scan,
) -> Result<HashMap<String, Vec<u8>>, Error> {
    let mut records = HashMap::new();
    let mut deadline = None;
    let mut names: Vec<String> = names.to_vec();
    let mut pending: Vec<(String, io::Error)>;
    loop {
        pending = Vec::new();
        for name in names {
            match attempt_claim_read(lock, directory, &name)? {
                ClaimRead::Record(record) => {
                    records.insert(name, record);
                }
                ClaimRead::Gone => {}
                ClaimRead::Retry(e) => pending.push((name, e)),
            }
        }
        if pending.is_empty() {
            return Ok(records);
        }
        // One deadline for the whole scan, from the first pending result.
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + CLAIM_READ_GRACE);
        if Instant::now() >= deadline {
            break;
        }
        names = pending.iter().map(|(n, _)| n.clone()).collect();
        std::thread::sleep(READ_RETRY);
    }
    // A stale handle that outlives revalidation is a claim the server no longer has.
    let denied: Vec<_> = pending
        .into_iter()
        .filter(|(_, e)| !imp::is_stale_handle(e))
        .collect();
    if !denied.is_empty() {
        let listed = list_claim_names(lock, directory, scan)?;
        if let Some((name, e)) = denied.into_iter().find(|(n, _)| listed.contains(n)) {
            return Err(claim_protocol(
                lock,
                &name,
                format_args!("cannot read claim: {e}"),
            ));
        }
    }
    Ok(records)
}

fn attempt_claim_read(lock: &Path, directory: &imp::Dir, name: &str) -> Result<ClaimRead, Error> {
    match read_record(directory, OsStr::new(name)) {
        Ok((_, record)) => Ok(ClaimRead::Record(record)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ClaimRead::Gone),
        Err(e) if is_permission_error(&e) || imp::is_stale_handle(&e) => Ok(ClaimRead::Retry(e)),
        Err(e) => Err(claim_protocol(
            lock,
            name,
            format_args!("cannot read claim: {e}"),
        )),
    }
}

/// An operating-system refusal (`EACCES`/`EPERM`), as Python's `PermissionError`; not our
/// own "not a regular file" errors.
fn is_permission_error(e: &io::Error) -> bool {
    e.raw_os_error().is_some() && e.kind() == io::ErrorKind::PermissionDenied
}

/// Reads a record as Python's `_open_record` does: it must be a regular file, the same one
/// after the open as before, and at most [`MAX_RECORD`] bytes.
fn read_record(directory: &imp::Dir, name: &OsStr) -> io::Result<(File, Vec<u8>)> {
    let path = || directory.path().join(name);
    let before = directory.lstat(name)?;
    if before.kind != Kind::File {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path().display()
        )));
    }
    let file = directory.open_read(name)?;
    let record = read_opened(&file, &before, &path())?;
    Ok((file, record))
}

fn read_opened(file: &File, before: &Stat, path: &Path) -> io::Result<Vec<u8>> {
    let opened = imp::fstat(file)?;
    if opened.kind != Kind::File {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if opened.id != before.id {
        return Err(io::Error::other(format!(
            "{} changed while opening",
            path.display()
        )));
    }
    let mut record = Vec::with_capacity(64);
    file.take(MAX_RECORD as u64 + 1).read_to_end(&mut record)?;
    if record.len() > MAX_RECORD {
        return Err(io::Error::other(format!(
            "{} exceeds {MAX_RECORD} bytes",
            path.display()
        )));
    }
    Ok(record)
}

/// Reading a claim can succeed from an NFS client's cache after its name is gone on the
/// server; a hard link checks the source on the server.
fn claim_exists_on_server(lock: &Path, directory: &imp::Dir, name: &str) -> Result<bool, Error> {
    let proof = OsString::from(format!("{PROBE_PREFIX}{}{PRIVATE_SUFFIX}", random_hex()));
    match link_or_find_committed(directory, OsStr::new(name), &proof, None) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound || imp::is_stale_handle(&e) => {
            return Ok(false)
        }
        Err(e) => {
            return Err(claim_protocol(
                lock,
                name,
                format_args!("cannot verify claim: {e}"),
            ))
        }
    }
    match directory.unlink_retrying(&proof) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(claim_protocol(
            lock,
            name,
            format_args!("cannot remove claim probe: {e}"),
        )),
        _ => Ok(true),
    }
}

/// Links `source` to `destination`. NFS retransmits a link whose reply was lost and reports
/// "exists" for the committed link: it succeeded when the destination names the source.
fn link_or_find_committed(
    directory: &imp::Dir,
    source: &OsStr,
    destination: &OsStr,
    source_id: Option<(u64, u64)>,
) -> io::Result<()> {
    match directory.link(source, destination) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let found = identity(directory, destination)?;
            let source_id = match source_id {
                Some(id) => Some(id),
                None => identity(directory, source)?,
            };
            if found.is_some() && found == source_id {
                Ok(())
            } else {
                Err(e)
            }
        }
        r => r,
    }
}

fn identity(directory: &imp::Dir, name: &OsStr) -> io::Result<Option<(u64, u64)>> {
    match directory.lstat(name) {
        Ok(s) => Ok(Some(s.id)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

enum Publish {
    /// A peer's scan reaped our private record before the link, or the name came to
    /// name another file: nothing was published; try again later.
    Reclaimed,
    Failed(io::Error),
}

/// Writes `record` to a private file and links it to `public` (never replacing), then
/// removes the private name.
fn publish(directory: &imp::Dir, public: &OsStr, mode: u32, record: &[u8]) -> Result<(), Publish> {
    let private = private_record_name(public);
    let mut file = directory
        .create_read_write(&private, mode)
        .map_err(Publish::Failed)?;
    let (published, id) = match imp::fstat(&file) {
        Ok(stat) => {
            let written = file.write_all(record).map_err(Publish::Failed);
            crate::fault::point("strict.private-written");
            let linked =
                written.and_then(|()| link_private_record(directory, &private, public, stat.id));
            (linked, Some(stat.id))
        }
        Err(e) => (Err(Publish::Failed(e)), None),
    };
    drop(file);
    let cleanup = match id {
        // Only the private name we created: a peer may have reaped it and another file
        // taken the name since.
        Some(id) => match identity(directory, &private) {
            Ok(Some(now)) if now == id => directory.unlink_retrying(&private),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        },
        None => directory.unlink_retrying(&private),
    };
    published?;
    match cleanup {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Publish::Failed(e)),
        _ => Ok(()),
    }
}

fn link_private_record(
    directory: &imp::Dir,
    private: &OsStr,
    public: &OsStr,
    id: (u64, u64),
) -> Result<(), Publish> {
    match link_or_find_committed(directory, private, public, Some(id)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return match identity(directory, private) {
                Ok(None) => Err(Publish::Reclaimed),
                _ => Err(Publish::Failed(e)),
            };
        }
        Err(e) => return Err(Publish::Failed(e)),
    }
    match identity(directory, public) {
        Ok(Some(now)) if now == id => Ok(()),
        _ => Err(Publish::Reclaimed),
    }
}

/// What the lock path holds, as Python's `_inspect_lock_path` sorts it.
enum Occupant {
    /// The sentinel, open for the hold.
    Sentinel(File),
    /// A soft-lock owner that may still run (or a file it cannot read, which may be one).
    Held {
        description: String,
        owner: Option<(u32, String)>,
    },
    /// A soft-lock marker whose owner on this host has exited.
    Exited(String),
    /// Content no lock parses.
    Unparsable(String),
    /// A node no lock writes.
    Damaged(String),
}

impl Occupant {
    fn describe(&self) -> &str {
        match self {
            Occupant::Sentinel(_) => "the strict sentinel",
            Occupant::Held { description, .. } => description,
            Occupant::Exited(d) | Occupant::Unparsable(d) | Occupant::Damaged(d) => d,
        }
    }
}

fn inspect_lock_path(path: &Path) -> io::Result<Occupant> {
    let before = imp::lstat(path)?;
    let what = match before.kind {
        Kind::File => None,
        Kind::Directory => Some("a directory"),
        Kind::Symlink => Some("a symlink"),
        Kind::Other => Some("a special file"),
    };
    if let Some(what) = what {
        return Ok(Occupant::Damaged(what.to_owned()));
    }
    let read = crate::sys::marker::open_read(path).and_then(|file| {
        let record = read_opened(&file, &before, path)?;
        Ok((file, record))
    });
    let (file, record) = match read {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
        // A holder running as another user may leave its marker unreadable here.
        Err(e) if is_permission_error(&e) => {
            return Ok(Occupant::Held {
                description: format!("a file it cannot read ({e})"),
                owner: None,
            })
        }
        Err(e) => return Ok(Occupant::Damaged(format!("a file it cannot read ({e})"))),
    };
    if record == STRICT_SENTINEL {
        return Ok(Occupant::Sentinel(file));
    }
    drop(file);
    let content = String::from_utf8_lossy(&record);
    let (pid, host, start) = if let Some(r) = Record::parse(&content) {
        (r.pid, r.host, r.start)
    } else if let Some(h) = Holder::parse(&content) {
        (h.pid, h.host, h.start)
    } else {
        return Ok(Occupant::Unparsable(
            "a file that is neither the sentinel nor a soft-lock marker it can parse".into(),
        ));
    };
    // Named, never removed: strict never acts on an inferred death.
    if owner_is_stale(pid, &host, start) {
        return Ok(Occupant::Exited(format!(
            "a soft-lock marker left by pid {pid} on {host}, which has exited"
        )));
    }
    Ok(Occupant::Held {
        description: format!("a soft-lock marker held by pid {pid} on {host}"),
        owner: Some((pid, host)),
    })
}

// The tests that run Python peers are Unix only: python3 with filelock is a Linux program
// where the Windows build is tested (under Wine).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use std::process::Command;
    #[cfg(unix)]
    use std::process::Stdio;

    fn lock_in(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("build.lock")
    }

    fn claim_files(lock: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(Strict::claim_directory(lock))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn acquire_release_keeps_sentinel_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_in(&dir);
        let strict = Strict::new(path.clone(), None);
        let held = strict.attempt().unwrap().expect("uncontended");
        assert_eq!(std::fs::read(&path).unwrap(), STRICT_SENTINEL);
        let token = held.token().to_owned();
        assert!(is_token(&token));
        assert_eq!(
            claim_files(&path),
            [
                format!("held-v1-{token}.claim"),
                format!("intent-v1-{token}.claim")
            ]
        );
        held.release().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), STRICT_SENTINEL);
        assert!(claim_files(&path).is_empty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for d in [
                coordination_directory(&path),
                Strict::claim_directory(&path),
            ] {
                let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o7777;
                assert_eq!(mode & 0o1000, 0o1000, "{d:?} is sticky");
                assert_eq!(mode & !0o1777, 0, "{d:?}: {mode:o}");
            }
        }
        // Again, through the existing sentinel; and dropping releases too.
        let again = strict.attempt().unwrap().expect("free again");
        assert_ne!(again.token(), token);
        drop(again);
        assert!(claim_files(&path).is_empty());
    }

    #[test]
    fn a_second_instance_contends_while_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_in(&dir);
        let (a, b) = (
            Strict::new(path.clone(), None),
            Strict::new(path.clone(), None),
        );
        let held = a.attempt().unwrap().unwrap();
        assert!(b.attempt().unwrap().is_none());
        assert!(a.attempt().unwrap().is_none());
        // A contender that backed off left no claim of its own.
        assert_eq!(claim_files(&path).len(), 2);
        drop(held);
        let theirs = b.attempt().unwrap().expect("released");
        theirs.release().unwrap();
    }

    #[test]
    fn claims_name_our_held_and_intent_claims() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_in(&dir);
        let strict = Strict::new(path.clone(), None);
        assert!(strict.claims().unwrap().is_empty());
        let held = strict.attempt().unwrap().unwrap();
        let claims = strict.claims().unwrap();
        let states: Vec<ClaimState> = claims.iter().map(StrictClaim::state).collect();
        assert_eq!(states, [ClaimState::Held, ClaimState::Intent]);
        let start = own_start().map(|t| t.to_string());
        for claim in &claims {
            assert_eq!(claim.token(), held.token());
            assert_eq!(claim.name(), claim_name(claim.state(), held.token()));
            assert_eq!(
                (claim.pid(), claim.host()),
                (own_pid(), host_name().as_str())
            );
            assert_eq!(claim.start(), start.as_deref());
        }
        // The record, byte for byte.
        let record = std::fs::read(Strict::claim_directory(&path).join(claims[0].name())).unwrap();
        let host: String = host_name().bytes().map(|b| format!("{b:02x}")).collect();
        let want = format!(
            "filelock-strict-v1\n{}\n{}\n{host}\n{}\n",
            held.token(),
            own_pid(),
            start.unwrap_or_default()
        );
        assert_eq!(String::from_utf8(record).unwrap(), want);
        // Our own claims are another host's only for a tool, never for us.
        assert_eq!(strict.holder(), None);
    }

    #[test]
    fn force_break_validates_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_in(&dir);
        let strict = Strict::new(path.clone(), None);
        assert_eq!(
            strict.force_break("x").unwrap_err().kind(),
            ErrorKind::NotFound
        );
        let held = strict.attempt().unwrap().unwrap();
        for bad in ["", ".", "..", ".hidden", "a/b", "a\\b", "a\0b", "../claims"] {
            let e = strict.force_break(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
        let e = strict
            .force_break(&claim_name(ClaimState::Held, &"0".repeat(32)))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let other = Strict::new(path.clone(), None);
        for claim in strict.claims().unwrap() {
            other.force_break(claim.name()).unwrap();
        }
        assert!(claim_files(&path).is_empty());
        let theirs = other.attempt().unwrap().expect("broken");
        // The broken holder's release finds its claims gone, which is fine.
        held.release().unwrap();
        assert_eq!(claim_files(&path).len(), 2);
        drop(theirs);
    }

    #[test]
    fn contending_instances_never_overlap() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = lock_in(&dir);
        let inside = AtomicBool::new(false);
        let wins = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let strict = Strict::new(path.clone(), None);
                    for _ in 0..15 {
                        let held = loop {
                            if let Some(held) = strict.attempt().unwrap() {
                                break held;
                            }
                            std::thread::sleep(Duration::from_micros(200 + fastrand::u64(..2000)));
                        };
                        assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                        std::thread::sleep(Duration::from_micros(300));
                        inside.store(false, Ordering::SeqCst);
                        wins.fetch_add(1, Ordering::SeqCst);
                        held.release().unwrap();
                    }
                });
            }
        });
        assert_eq!(wins.into_inner(), 60);
        assert!(claim_files(&path).is_empty());
    }

    fn exited_pid() -> u32 {
        let mut child = Command::new("true")
            .spawn()
            .or_else(|_| Command::new("cmd").args(["/C", "exit"]).spawn())
            .unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn a_live_soft_marker_is_contention_a_dead_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_in(&dir);
        let strict = Strict::new(path.clone(), None);
        let mut live = format!("{}\n{}\n", own_pid(), host_name());
        if let Some(start) = own_start() {
            live.push_str(&format!("{start}\n"));
        }
        std::fs::write(&path, &live).unwrap();
        assert!(strict.attempt().unwrap().is_none());
        let occupant = strict.occupant().unwrap().unwrap();
        assert_eq!(
            occupant,
            format!(
                "a soft-lock marker held by pid {} on {}",
                own_pid(),
                host_name()
            )
        );
        // Another host's marker is contention too, and named for a timeout.
        std::fs::write(&path, "7\nbuild-host\n").unwrap();
        assert!(strict.attempt().unwrap().is_none());
        assert_eq!(strict.holder().as_deref(), Some("pid 7 on build-host"));

        let dead = exited_pid();
        std::fs::write(&path, format!("{dead}\n{}\n", host_name())).unwrap();
        let e = strict.attempt().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
        assert!(e.to_string().contains("which has exited"), "{e}");
        // Named, never removed.
        assert!(path.exists());
    }

    #[test]
    fn an_unparsable_file_is_contention_until_unchanged_for_two_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_in(&dir);
        let strict = Strict::new(path.clone(), None);
        std::fs::write(&path, "garbage").unwrap();
        assert!(strict.attempt().unwrap().is_none());
        std::thread::sleep(MALFORMED_AGE + Duration::from_millis(100));
        let e = strict.attempt().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        assert!(e.to_string().contains("unchanged for 2 seconds"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_directory_or_fifo_at_the_lock_path_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_in(&dir);
        let target = dir.path().join("victim");
        std::fs::write(&target, "precious").unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let strict = Strict::new(path.clone(), None);
        let e = strict.attempt().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        assert!(e.to_string().contains("a symlink"), "{e}");
        assert_eq!(strict.occupant().unwrap().as_deref(), Some("a symlink"));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());

        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let e = strict.attempt().unwrap_err();
        assert!(
            e.kind() == ErrorKind::Protocol && e.to_string().contains("a directory"),
            "{e}"
        );

        std::fs::remove_dir(&path).unwrap();
        if Command::new("mkfifo")
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success())
        {
            let e = strict.attempt().unwrap_err();
            assert!(
                e.kind() == ErrorKind::Protocol && e.to_string().contains("a special file"),
                "{e}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_claim_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_in(&dir);
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, coordination_directory(&path)).unwrap();
        let e = Strict::new(path, None).attempt().unwrap_err();
        assert!(
            e.kind() == ErrorKind::Protocol && e.to_string().contains("not a real directory"),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn claims_no_writer_produces_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_in(&dir);
        let strict = Strict::new(path.clone(), None);
        drop(strict.attempt().unwrap().unwrap());
        let claims = Strict::claim_directory(&path);
        let token = "ab".repeat(16);
        let name = claim_name(ClaimState::Held, &token);
        for (file, content, why) in [
            ("held-v2-x.claim", "", "unknown claim name"),
            ("stray", "", "unknown claim name"),
            (
                name.as_str(),
                "filelock-strict-v1\nother\n1\n68\n\n",
                "malformed",
            ),
            (name.as_str(), "filelock-strict-v1\n", "malformed"),
        ] {
            std::fs::write(claims.join(file), content).unwrap();
            for e in [strict.attempt().unwrap_err(), strict.claims().unwrap_err()] {
                assert_eq!(e.kind(), ErrorKind::Protocol);
                assert!(e.to_string().contains(why), "{file}: {e}");
            }
            std::fs::remove_file(claims.join(file)).unwrap();
        }
        // Another host's well-formed claim is contention, named for a timeout.
        std::fs::write(
            claims.join(&name),
            encode_claim(&token, 7, "build-host", ""),
        )
        .unwrap();
        assert!(strict.attempt().unwrap().is_none());
        assert_eq!(strict.holder().as_deref(), Some("pid 7 on build-host"));
        assert_eq!(strict.claims().unwrap()[0].start(), None);
    }

    #[test]
    fn claim_record_rules_match_python() {
        let lock = Path::new("/l");
        let token = "0123456789abcdef0123456789abcdef";
        let parse =
            |record: &str| parse_claim(lock, "n", ClaimState::Intent, token, record.as_bytes());
        let ok = parse(&format!("filelock-strict-v1\n{token}\n42\n766d\n0\n")).unwrap();
        assert_eq!((ok.pid(), ok.host(), ok.start()), (42, "vm", Some("0")));
        assert_eq!(
            parse(&format!("filelock-strict-v1\n{token}\n42\n\n\n"))
                .unwrap()
                .host(),
            ""
        );
        for bad in [
            format!("filelock-strict-v1\n{token}\n042\n766d\n\n"),
            format!("filelock-strict-v1\n{token}\n+42\n766d\n\n"),
            format!("filelock-strict-v1\n{token}\n0\n766d\n\n"),
            format!("filelock-strict-v1\n{token}\n2147483648\n766d\n\n"),
            format!("filelock-strict-v1\n{token}\n42\n766D\n\n"),
            format!("filelock-strict-v1\n{token}\n42\n76 6d\n\n"),
            format!("filelock-strict-v1\n{token}\n42\n7620\n\n"),
            format!("filelock-strict-v1\n{token}\n42\n766d\n01\n"),
            format!("filelock-strict-v1\n{token}\n42\n766d\n-1\n"),
            format!("filelock-strict-v1\n{token}\n42\n766d\n\nx"),
            format!("filelock-strict-v2\n{token}\n42\n766d\n\n"),
            format!("filelock-strict-v1\n{token}\n42\n766d\n"),
            format!("filelock-strict-v1\n{token}\n42\nff\n\n"),
        ] {
            assert!(parse(&bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_claim_name(&format!("held-v1-{token}.claim")),
            Some((ClaimState::Held, token))
        );
        for bad in [
            "held-v1-ABC.claim",
            "held-v1-x-y.claim",
            "owned-v1-0.claim",
            "held-v1-.claim",
        ] {
            assert_eq!(parse_claim_name(bad), None, "{bad}");
        }
        let private = private_record_name(OsStr::new("held-v1-x.claim"));
        assert_eq!(private_public_name(&private), Some(&b"held-v1-x.claim"[..]));
        assert_eq!(
            private_public_name(OsStr::new(".a.private-v1-xyz.tmp")),
            None
        );
        assert!(is_probe_name(OsStr::new(&format!(".probe-v1-{token}.tmp"))));
    }

    #[test]
    fn abandoned_private_records_are_reaped_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_in(&dir);
        let strict = Strict::new(path.clone(), None);
        drop(strict.attempt().unwrap().unwrap());
        let claims = Strict::claim_directory(&path);
        let private = |public: &str| claims.join(private_record_name(OsStr::new(public)));
        let (old, young, foreign) = (
            private("held-v1-x.claim"),
            private(&claim_name(ClaimState::Held, &"1".repeat(32))),
            claims.join(".unrelated"),
        );
        let old = old.with_file_name(private_record_name(OsStr::new(&claim_name(
            ClaimState::Intent,
            &"2".repeat(32),
        ))));
        for p in [&old, &young, &foreign] {
            std::fs::write(p, "x").unwrap();
        }
        let past = std::time::SystemTime::now() - Duration::from_secs(10);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(past)
            .unwrap();
        // An inspection trusts no age.
        assert!(strict.claims().unwrap().is_empty());
        assert!(old.exists());
        let held = strict.attempt().unwrap().unwrap();
        assert!(!old.exists(), "an abandoned record is reaped");
        assert!(young.exists() && foreign.exists());
        drop(held);
    }

    #[test]
    fn an_inherited_hold_leaves_the_parents_claims() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_in(&dir);
        let strict = Strict::new(path.clone(), None);
        let mut held = strict.attempt().unwrap().unwrap();
        held.owner = own_pid().wrapping_add(1);
        held.release().unwrap();
        assert_eq!(claim_files(&path).len(), 2);
    }

    #[cfg(unix)]
    #[test]
    fn an_explicit_mode_shapes_files_and_directories() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = lock_in(&dir);
        let held = Strict::new(path.clone(), Some(0o600))
            .attempt()
            .unwrap()
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&coordination_directory(&path)), 0o1700);
        assert_eq!(mode(&Strict::claim_directory(&path)), 0o1700);
        for name in claim_files(&path) {
            assert_eq!(mode(&Strict::claim_directory(&path).join(name)), 0o600);
        }
        drop(held);
    }

    #[cfg(unix)]
    const PY_TRY: &str = "
import sys, filelock
lock = filelock.StrictSoftFileLock(sys.argv[1])
try:
    lock.acquire(timeout=0.2)
except filelock.Timeout:
    print('timeout')
else:
    print('acquired')
    lock.release()
";

    #[cfg(unix)]
    const PY_HOLD: &str = "
import sys, filelock
mode = int(sys.argv[2], 8) if len(sys.argv) > 2 else -1
lock = filelock.StrictSoftFileLock(sys.argv[1], mode=mode)
lock.acquire(timeout=5)
print('held', flush=True)
sys.stdin.read()
lock.release()
";

    #[cfg(unix)]
    fn python_try(path: &Path) -> String {
        crate::soft::python_output(PY_TRY, &[path])
            .trim()
            .to_owned()
    }

    #[cfg(unix)]
    fn python_hold(path: &Path, mode: Option<u32>) -> std::process::Child {
        use std::io::BufRead;
        let mut python = Command::new("python3")
            .args(["-c", PY_HOLD])
            .arg(path)
            .args(mode.map(|m| format!("{m:o}")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(python.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "held");
        python
    }

    /// What a held lock looks like on disk: every file under the lock's directory with its
    /// type and permissions (claim tokens and private names masked) and the sentinel's bytes.
    #[cfg(unix)]
    fn layout(lock: &Path) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let show = |p: &Path, label: &str| {
            let meta = std::fs::symlink_metadata(p).unwrap();
            let kind = if meta.is_dir() { "dir" } else { "file" };
            format!("{label} {kind} {:o}", meta.permissions().mode() & 0o7777)
        };
        let mut out = vec![
            show(lock, "lock"),
            format!("sentinel {:?}", std::fs::read(lock).unwrap()),
            show(&coordination_directory(lock), "<lock>.filelock"),
            show(&Strict::claim_directory(lock), "claims"),
        ];
        for name in claim_files(lock) {
            let label = name.split('-').next().unwrap().to_owned();
            out.push(show(&Strict::claim_directory(lock).join(&name), &label));
        }
        out
    }

    #[cfg(unix)]
    #[test]
    fn the_files_we_write_are_the_files_python_writes() {
        if !crate::soft::python_filelock() {
            return;
        }
        for mode in [None, Some(0o600), Some(0o664)] {
            let dir = tempfile::tempdir().unwrap();
            let (ours, theirs) = (dir.path().join("rust.lock"), dir.path().join("python.lock"));
            let mut python = python_hold(&theirs, mode);
            let held = Strict::new(ours.clone(), mode).attempt().unwrap().unwrap();
            let (ours, theirs) = (layout(&ours), layout(&theirs));
            eprintln!("mode {mode:?}:\n  rust   {ours:?}\n  python {theirs:?}");
            assert_eq!(ours, theirs, "mode {mode:?}");
            drop(held);
            drop(python.stdin.take());
            assert!(python.wait().unwrap().success());
        }
    }

    #[cfg(unix)]
    const PY_CLAIMS: &str = "
import sys, filelock
lock = filelock.StrictSoftFileLock(sys.argv[1])
print(lock.lock_path_occupant)
for c in lock.claims:
    print(c.name, c.state, c.token, c.pid, c.hostname, c.start)
";

    #[cfg(unix)]
    const PY_LOOP: &str = "
import sys, time, filelock
lock = filelock.StrictSoftFileLock(sys.argv[1])
for _ in range(int(sys.argv[3])):
    with lock.acquire(timeout=60, poll_interval=0.005):
        with open(sys.argv[2], 'a') as log:
            log.write('py+\\n')
        time.sleep(0.002)
        with open(sys.argv[2], 'a') as log:
            log.write('py-\\n')
";

    #[cfg(unix)]
    #[test]
    fn python_parses_our_claims_and_sentinel() {
        if !crate::soft::python_filelock() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = lock_in(&dir);
        let strict = Strict::new(path.clone(), None);
        let held = strict.attempt().unwrap().unwrap();
        let out = crate::soft::python_output(PY_CLAIMS, &[&path]);
        let start = own_start().map_or("None".to_owned(), |t| t.to_string());
        let want: Vec<String> = std::iter::once("None".to_owned())
            .chain(strict.claims().unwrap().iter().map(|c| {
                let state = if c.state() == ClaimState::Held {
                    "held"
                } else {
                    "intent"
                };
                format!(
                    "{} {state} {} {} {} {start}",
                    c.name(),
                    c.token(),
                    own_pid(),
                    host_name()
                )
            }))
            .collect();
        assert_eq!(out.lines().collect::<Vec<_>>(), want);
        drop(held);
    }

    #[cfg(unix)]
    #[test]
    fn python_and_rust_take_turns_without_overlap() {
        if !crate::soft::python_filelock() {
            return;
        }
        const ROUNDS: usize = 25;
        let dir = tempfile::tempdir().unwrap();
        let path = lock_in(&dir);
        let log = dir.path().join("log");
        let mut python = Command::new("python3")
            .args(["-c", PY_LOOP])
            .arg(&path)
            .arg(&log)
            .arg(ROUNDS.to_string())
            .spawn()
            .unwrap();
        let strict = Strict::new(path.clone(), None);
        let append = |line: &str| {
            let mut f = File::options()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            f.write_all(line.as_bytes()).unwrap();
        };
        // Start once Python runs, and leave it room after each release, so turns interleave.
        while !log.exists() {
            std::thread::sleep(Duration::from_millis(1));
        }
        for _ in 0..ROUNDS {
            std::thread::sleep(Duration::from_millis(3));
            let held = loop {
                if let Some(held) = strict.attempt().unwrap() {
                    break held;
                }
                std::thread::sleep(Duration::from_millis(1 + fastrand::u64(..5)));
            };
            append("rs+\n");
            std::thread::sleep(Duration::from_millis(2));
            append("rs-\n");
            held.release().unwrap();
        }
        assert!(python.wait().unwrap().success());
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4 * ROUNDS);
        for pair in lines.chunks(2) {
            assert!(
                matches!(pair, ["rs+", "rs-"] | ["py+", "py-"]),
                "overlap: {pair:?}"
            );
        }
        assert!(claim_files(&path).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn python_and_rust_exclude_each_other() {
        if !crate::soft::python_filelock() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = lock_in(&dir);
        let strict = Strict::new(path.clone(), None);

        // Python first, on a fresh path: the files it leaves are the ones we write.
        assert_eq!(python_try(&path), "acquired");
        assert_eq!(std::fs::read(&path).unwrap(), STRICT_SENTINEL);

        let held = strict.attempt().unwrap().unwrap();
        assert_eq!(python_try(&path), "timeout");
        held.release().unwrap();
        assert_eq!(python_try(&path), "acquired");

        let mut python = python_hold(&path, None);
        assert!(strict.attempt().unwrap().is_none());
        let claims = strict.claims().unwrap();
        assert_eq!(claims.len(), 2);
        let pid = python.id();
        let start = crate::sys::process::start_token(pid)
            .map(|t| t.to_string())
            .unwrap_or_default();
        for claim in &claims {
            assert_eq!(claim.pid(), pid);
            let record = std::fs::read(Strict::claim_directory(&path).join(claim.name())).unwrap();
            assert_eq!(
                record,
                encode_claim(claim.token(), pid, &host_name(), &start)
            );
        }
        drop(python.stdin.take());
        assert!(python.wait().unwrap().success());
        strict
            .attempt()
            .unwrap()
            .expect("python released")
            .release()
            .unwrap();
    }
}

/// The invariants of the claim parsers on any input, for the property tests and the fuzz
/// targets: each function parses its input and panics if a parse breaks one.
#[cfg(any(test, feature = "fault-injection"))]
pub(crate) mod check {
    use super::*;

    /// A lock path for the errors of claims that do not parse.
    pub(crate) const LOCK: &str = "/fuzz/data.lock";

    /// `data` as a claim record in either state, and as claim directory entry names.
    pub(crate) fn claim(data: &[u8]) {
        record(ClaimState::Intent, data);
        record(ClaimState::Held, data);
        names(data);
    }

    /// The claim `record` states, with the token taken from its own second line when that is
    /// a token (so the parser gets past the token check), as a claim named for it would be.
    fn parse(state: ClaimState, record: &[u8]) -> Result<StrictClaim, Error> {
        let token = record
            .split(|&b| b == b'\n')
            .nth(1)
            .and_then(|t| std::str::from_utf8(t).ok())
            .filter(|t| is_token(t))
            .unwrap_or("0123456789abcdef0123456789abcdef");
        parse_claim(
            Path::new(LOCK),
            &claim_name(state, token),
            state,
            token,
            record,
        )
    }

    /// A parsed claim is exactly the record it came from, and names only what it holds.
    pub(crate) fn record(state: ClaimState, record: &[u8]) {
        let Ok(claim) = parse(state, record) else {
            return;
        };
        assert!(record.len() <= MAX_RECORD);
        assert!(claim.host.len() * 2 <= record.len());
        assert!(is_token(&claim.token) && claim.state == state);
        let start = claim.start.as_deref().unwrap_or("");
        assert_eq!(
            encode_claim(&claim.token, claim.pid, &claim.host, start),
            record
        );
    }

    /// `data` as a claim directory entry's name: a claim, a private record or a probe.
    pub(crate) fn names(data: &[u8]) {
        if let Ok(name) = std::str::from_utf8(data) {
            if let Some((state, token)) = parse_claim_name(name) {
                assert_eq!(claim_name(state, token), name);
            }
            let _ = is_probe_name(OsStr::new(name));
        }
        if let Some(public) = private_name(data).and_then(private_public_name) {
            assert!(data.windows(public.len()).any(|w| w == public));
        }
    }

    #[cfg(unix)]
    fn private_name(data: &[u8]) -> Option<&OsStr> {
        use std::os::unix::ffi::OsStrExt;
        Some(OsStr::from_bytes(data))
    }

    #[cfg(not(unix))]
    fn private_name(data: &[u8]) -> Option<&OsStr> {
        std::str::from_utf8(data).ok().map(OsStr::new)
    }
}

#[cfg(test)]
mod proptests {
    use super::check::LOCK;
    use super::*;
    use crate::soft::record::{host_field, Token};
    use proptest::prelude::*;

    fn token() -> impl Strategy<Value = String> {
        "[0-9a-f]{32}"
    }

    fn state() -> impl Strategy<Value = ClaimState> {
        prop_oneof![Just(ClaimState::Intent), Just(ClaimState::Held)]
    }

    /// Text made of claim-like fields, so the parser gets past its first checks.
    fn claim_like() -> impl Strategy<Value = Vec<u8>> {
        let field = prop_oneof![
            Just(CLAIM_MAGIC.to_owned()),
            token(),
            "[0-9]{0,11}",
            "([0-9a-f]{2}){0,6}",
            "[0-9a-fA-F ]{0,7}",
            "\\PC{0,4}",
        ];
        (
            proptest::collection::vec(field, 0..8),
            prop_oneof![Just(""), Just("\n"), Just("\nx")],
        )
            .prop_map(|(fields, end)| (fields.join("\n") + end).into_bytes())
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2 * MAX_RECORD)) {
            check::claim(&data);
        }

        #[test]
        fn claim_like_records_never_panic(state in state(), data in claim_like()) {
            check::record(state, &data);
        }

        #[test]
        fn claims_we_write_parse_back(
            state in state(),
            token in token(),
            pid in 1..=i32::MAX as u32,
            raw_host in proptest::collection::vec(any::<u8>(), 0..300),
            namespace in any::<Option<u64>>(),
            start in proptest::option::of(any::<(u128, u64)>()),
        ) {
            let host = host_field(&raw_host, namespace);
            let start = start.map(|(high, low)| Token::new(high, low).to_string());
            let record = encode_claim(&token, pid, &host, start.as_deref().unwrap_or(""));
            let name = claim_name(state, &token);
            let claim = parse_claim(Path::new(LOCK), &name, state, &token, &record).unwrap();
            prop_assert_eq!(
                claim,
                StrictClaim { name, state, token: token.clone(), pid, host, start }
            );
        }

        #[test]
        fn claims_over_the_cap_are_refused(token in token(), pid in 1..=i32::MAX as u32, extra in 1..64usize) {
            // A host long enough to carry the record past the cap, yet otherwise valid.
            let short = encode_claim(&token, pid, "", "").len();
            let host = "h".repeat((MAX_RECORD - short) / 2 + extra);
            let record = encode_claim(&token, pid, &host, "");
            prop_assert!(record.len() > MAX_RECORD);
            let name = claim_name(ClaimState::Held, &token);
            prop_assert!(parse_claim(Path::new(LOCK), &name, ClaimState::Held, &token, &record).is_err());
            let fits = encode_claim(&token, pid, &host[..(MAX_RECORD - short) / 2], "");
            prop_assert!(parse_claim(Path::new(LOCK), &name, ClaimState::Held, &token, &fits).is_ok());
        }

        #[test]
        fn claim_names_parse_back(state in state(), token in token(), other in "\\PC{0,60}") {
            let name = claim_name(state, &token);
            prop_assert_eq!(parse_claim_name(&name), Some((state, token.as_str())));
            check::names(other.as_bytes());
        }

        #[test]
        fn private_record_names_lead_back_to_their_public_name(public in "[ -~]{0,40}") {
            let private = private_record_name(OsStr::new(&public));
            prop_assert_eq!(private_public_name(&private), Some(public.as_bytes()));
        }
    }
}
