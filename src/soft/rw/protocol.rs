//! The generation log and one participant's way through it (port of `_soft_rw/_protocol.py`).
//!
//! The lock's whole state is a sequence of immutable snapshots, `gen/<N>`, each naming the
//! writer and the readers that hold the lock at generation `N`. Every transition is one
//! atomic publication of the next snapshot: a participant reads the latest generation,
//! derives the successor it wants, and links a fully written temporary file to `gen/<N+1>`.
//! The link fails if a peer got there first, so the participant re-reads and tries again. A
//! crash leaves at most an unlinked temporary file, never a state a peer must repair.
//!
//! Liveness rests on a nonce, not a clock. Each participant keeps `holders/<token>` and
//! rewrites its nonce every heartbeat. A contender records the bytes it read there and the
//! moment it read them on its own monotonic clock; a member whose bytes have not changed for
//! the stale threshold is evicted by committing a snapshot without it. Two hosts never
//! compare clocks.
//!
//! The generation number is monotonic within one incarnation of the log, so the generation
//! at which a hold was granted fences it. A random `gen/epoch` names the incarnation, so a
//! participant that outlives a removal of the log reads the new one instead of continuing
//! the old numbering into it.
//!
//! On disk, byte for byte as Python filelock 4.2.11 writes it (so Python and Rust members
//! share one lock):
//!
//! - `gen/<20-digit N>`: `"filelock-rw/1\ngeneration=N\n[writer=<token>\n](reader=<token>\n)*"`,
//!   readers sorted;
//! - `gen/epoch`: `"<32 hex>\n"`; `gen/HEAD`: the epoch line and a copy of the newest
//!   snapshot, renamed into place after each commit (it may lag, never lead);
//! - `holders/<token>`: `"filelock-rw/1\ntoken=…\npid=…\nhost=…\nlease=<repr(float)>\nnonce=<32 hex>\n"`.
//!
//! Generations are `u64` here (Python's are unbounded): a record naming a generation past
//! `u64::MAX`, which no writer reaches, reads as malformed, and such a name is not listed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::storage::{Area, Fault, Files};
use crate::soft::identity::{host_name, own_pid};
use crate::soft::marker::random_hex;
use crate::soft::record::py_float_repr;
use crate::Error;

/// The first line of every record.
const PROTOCOL: &str = "filelock-rw/1";
/// Generation file names are zero-padded to this many digits.
const GENERATION_DIGITS: usize = 20;
/// A claim token is this many lowercase hex digits.
const TOKEN_HEX_LENGTH: usize = 32;
/// A snapshot line is `reader=` plus a token, so this bounds a hostile record without
/// capping real reader counts.
pub(super) const MAX_RECORD_SIZE: usize = 1 << 20;
/// Snapshots older than this many generations behind the latest are removed by whoever
/// commits. The window is also how far [`Generations::latest`] probes past a gap.
const RETAINED_GENERATIONS: u64 = 64;
/// The snapshots' directory under the root.
pub(super) const GENERATIONS_DIRECTORY: &str = "gen";
/// A random token created once per log: removing `gen/` removes it.
const EPOCH_NAME: &str = "epoch";
/// The epoch plus a copy of the newest snapshot: the head a stale NFS listing cannot hide.
const HEAD_NAME: &str = "HEAD";
/// The holder records' directory under the root.
pub(super) const HOLDERS_DIRECTORY: &str = "holders";
/// Commit temporaries in `gen/` start with this.
const TEMPORARY_PREFIX: &str = ".commit-";
/// A lost commit race is retried this many times per [`Participant::advance`].
const ATTEMPTS_PER_ADVANCE: usize = 4;
/// The protocol root's suffix beside the lock path.
const ROOT_SUFFIX: &str = ".rw";

/// A fresh claim token (or nonce, or epoch): 32 random lowercase hex digits.
fn new_token() -> String {
    random_hex()
}

/// Whether `value` is a claim token: exactly 32 lowercase hex digits.
fn is_token(value: &[u8]) -> bool {
    value.len() == TOKEN_HEX_LENGTH && value.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The name of generation `generation`'s record.
fn generation_name(generation: u64) -> String {
    format!("{generation:0GENERATION_DIGITS$}")
}

/// The generation a `gen/` entry names, if it is a generation record's name: exactly 20
/// ASCII digits (Python's `isascii() and isdigit()`, so no other Unicode digits).
fn parse_generation_name(name: &OsStr) -> Option<u64> {
    let name = name.to_str()?;
    if name.len() != GENERATION_DIGITS || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// The lock's state at one generation: which token writes, which tokens read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    generation: u64,
    writer: Option<String>,
    /// Sorted, as the record lists them.
    readers: BTreeSet<String>,
}

impl Snapshot {
    /// Generation `generation` with no members (generation 0 is the empty log).
    fn empty(generation: u64) -> Snapshot {
        Snapshot {
            generation,
            writer: None,
            readers: BTreeSet::new(),
        }
    }

    /// Whether `token` is the writer or a reader.
    fn is_member(&self, token: &str) -> bool {
        self.writer.as_deref() == Some(token) || self.readers.contains(token)
    }

    /// The readers and the writer.
    fn members(&self) -> BTreeSet<&str> {
        self.readers
            .iter()
            .map(String::as_str)
            .chain(self.writer.as_deref())
            .collect()
    }

    /// The `gen/<N>` record.
    fn encode(&self) -> Vec<u8> {
        let mut text = format!("{PROTOCOL}\ngeneration={}\n", self.generation);
        if let Some(writer) = &self.writer {
            text.push_str(&format!("writer={writer}\n"));
        }
        for reader in &self.readers {
            text.push_str(&format!("reader={reader}\n"));
        }
        text.into_bytes()
    }
}

/// The snapshot a `gen/<N>` record encodes, or `None` when the record is malformed: empty,
/// oversized, not ASCII, not ending in a newline, a first line other than the protocol's, a
/// generation that is missing, repeated, over 20 digits or not in canonical decimal, a
/// repeated writer or reader, a token that is not 32 lowercase hex digits, or any other line.
fn parse_snapshot(data: &[u8]) -> Option<Snapshot> {
    if data.is_empty() || data.len() > MAX_RECORD_SIZE || !data.is_ascii() {
        return None;
    }
    let text = std::str::from_utf8(data).ok()?;
    let lines: Vec<&str> = text.split('\n').collect();
    let (first, rest) = lines.split_first()?;
    let (last, body) = rest.split_last()?;
    if *first != PROTOCOL || !last.is_empty() {
        return None;
    }
    let mut generation = None;
    let mut writer = None;
    let mut readers = BTreeSet::new();
    for line in body {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        match key {
            "generation"
                if generation.is_none()
                    && !value.is_empty()
                    && value.len() <= GENERATION_DIGITS
                    && value.bytes().all(|b| b.is_ascii_digit())
                    && (value == "0" || !value.starts_with('0')) =>
            {
                generation = Some(value.parse::<u64>().ok()?);
            }
            "writer" if writer.is_none() && is_token(value.as_bytes()) => {
                writer = Some(value.to_owned());
            }
            "reader" if is_token(value.as_bytes()) && !readers.contains(value) => {
                readers.insert(value.to_owned());
            }
            _ => return None,
        }
    }
    Some(Snapshot {
        generation: generation?,
        writer,
        readers,
    })
}

/// A `gen/HEAD` record's epoch line (with its newline) and the snapshot record after it;
/// without a newline, all of it is the epoch line.
fn split_head(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(end) => data.split_at(end + 1),
        None => (data, &[]),
    }
}

/// The `holders/<token>` record; only the nonce changes between heartbeats, so the length
/// stays constant. `lease` is the writer's own stale threshold: a peer configured tighter
/// must not read this holder's longer heartbeat interval as death.
fn encode_holder(token: &str, nonce: &str, lease: Duration) -> Vec<u8> {
    format!(
        "{PROTOCOL}\ntoken={token}\npid={}\nhost={}\nlease={}\nnonce={nonce}\n",
        own_pid(),
        host_name(),
        py_float_repr(lease.as_secs_f64())
    )
    .into_bytes()
}

/// The `lease` a holder record carries (the first `lease=` line), or `None` when it has none
/// or it is not exactly what Python's `repr` writes for a finite positive float.
fn holder_lease(record: Option<&[u8]>) -> Option<f64> {
    let record = record.unwrap_or_default();
    if !record.is_ascii() {
        return None;
    }
    let text = std::str::from_utf8(record).ok()?;
    let value = text.split('\n').find_map(|l| l.strip_prefix("lease="))?;
    let lease: f64 = value.parse().ok()?;
    (lease.is_finite() && lease > 0.0 && py_float_repr(lease) == value).then_some(lease)
}

/// How long each observed value has stayed the same, on this observer's monotonic clock.
///
/// A value that has not changed for the stale threshold belongs to a participant that
/// stopped refreshing it. The clock only ever measures the gap between two of this
/// observer's own observations, which lets hosts agree on liveness without agreeing on time.
#[derive(Debug, Default)]
struct Ledger {
    seen: HashMap<String, (Option<Vec<u8>>, Instant)>,
}

impl Ledger {
    /// Records `value` for `key` and returns for how long it has stayed the same. `asked` is
    /// the clock reading taken before the caller fetched `value`: an unchanged value counts
    /// as unchanged up to then, so a pause between the fetch and this call adds no time.
    fn observe(&mut self, key: &str, value: Option<Vec<u8>>, asked: Option<Instant>) -> Duration {
        let now = Instant::now();
        match self.seen.get(key) {
            Some((seen, since)) if *seen == value => {
                asked.unwrap_or(now).saturating_duration_since(*since)
            }
            _ => {
                self.seen.insert(key.to_owned(), (value, now));
                Duration::ZERO
            }
        }
    }

    fn forget(&mut self, key: &str) {
        self.seen.remove(key);
    }

    /// Drops every key not in `keys`: peers that left would otherwise stay for the lock's
    /// lifetime.
    fn retain(&mut self, keys: &HashSet<String>) {
        self.seen.retain(|key, _| keys.contains(key));
    }
}

/// What the generation log remembers between reads (Python's `GenerationLog` state).
#[derive(Debug, Default)]
struct Generations {
    /// The epoch file's bytes when last read.
    epoch: Option<Vec<u8>>,
    /// The newest snapshot this process read or committed in that epoch.
    latest: Option<Snapshot>,
}

impl Generations {
    /// The newest snapshot.
    ///
    /// Starts from the newest readable generation among those `gen/HEAD`, the listing, or
    /// memory name, then probes forward by name across the retained window. Memory and
    /// `HEAD` are bound to the log's epoch, so a log wiped and restarted is never continued
    /// from a generation it no longer holds. Only a log that names generations of which none
    /// can be read is refused, twice in a row (peers may have compacted past what the first
    /// pass named while this process looked).
    fn latest(&mut self, files: &Files) -> Result<Snapshot, Fault> {
        let found = match self.find(files)? {
            Some(found) => Some(found),
            None => self.find(files)?,
        };
        let Some(latest) = found else {
            return Err(Fault::protocol(
                None,
                "generation log names no readable snapshot",
            ));
        };
        self.latest = Some(latest.clone());
        Ok(latest)
    }

    fn find(&mut self, files: &Files) -> Result<Option<Snapshot>, Fault> {
        let epoch = self.incarnation(files)?;
        if epoch != self.epoch {
            self.epoch = epoch;
            self.latest = None;
        }
        let mut named: BTreeSet<u64> = self.list(files)?.into_iter().collect();
        // Generation 0 is the empty log, which has no record to read back.
        if let Some(latest) = self.latest.as_ref().filter(|l| l.generation != 0) {
            named.insert(latest.generation);
        }
        let head = self.head_generation(files)?;
        if let Some(head) = head.filter(|&h| h != 0) {
            named.insert(head);
        }
        for &generation in named.iter().rev() {
            if let Some(start) = self.read(files, generation)? {
                // Compaction keeps the surviving generations contiguous, so the first missing
                // name past a readable HEAD generation is the end.
                let patience = if Some(generation) == head {
                    1
                } else {
                    RETAINED_GENERATIONS
                };
                return self.probe(files, start, patience).map(Some);
            }
        }
        let newest = named.last().copied().unwrap_or(0);
        let found = self.probe(files, Snapshot::empty(newest), RETAINED_GENERATIONS)?;
        Ok((found.generation > newest || named.is_empty()).then_some(found))
    }

    /// The epoch file's bytes, creating it when missing; `None` when there is no `gen/` yet.
    /// Exclusive creation, not a link; a peer that reads it before its token is written takes
    /// the empty value, and its next commit sees the change and re-reads.
    fn incarnation(&self, files: &Files) -> Result<Option<Vec<u8>>, Fault> {
        if let Some(epoch) = files.read(Area::Generations, EPOCH_NAME)? {
            return Ok(Some(epoch));
        }
        let token = format!("{}\n", new_token());
        match files.create(Area::Generations, EPOCH_NAME, token.as_bytes(), true) {
            Ok(_) => {}
            Err(fault) if fault.is_exists() => {}
            // No gen/ yet: the first participant's prepare creates it.
            Err(fault) if fault.is_not_found() => return Ok(None),
            Err(fault) => return Err(fault),
        }
        files.read(Area::Generations, EPOCH_NAME)
    }

    /// The listed generations within the window, removing older ones.
    fn list(&self, files: &Files) -> Result<Vec<u64>, Fault> {
        let listed = listed(files)?;
        let keep_from = listed.len().saturating_sub(RETAINED_GENERATIONS as usize);
        for &generation in &listed[..keep_from] {
            files.unlink(Area::Generations, &generation_name(generation))?;
        }
        Ok(listed[keep_from..].to_vec())
    }

    /// The generation `HEAD` names. `HEAD` is never flushed, so a crash can leave it
    /// unreadable; readers verify what it names anyway, so a torn one costs a probe.
    fn head_generation(&self, files: &Files) -> Result<Option<u64>, Fault> {
        Ok(self
            .head_record(files)?
            .and_then(|record| parse_snapshot(&record))
            .map(|snapshot| snapshot.generation))
    }

    /// `HEAD`'s snapshot record when its epoch line is this log's epoch: a `HEAD` from
    /// another epoch landed after its log was removed.
    fn head_record(&self, files: &Files) -> Result<Option<Vec<u8>>, Fault> {
        let Some(data) = files.read(Area::Generations, HEAD_NAME)? else {
            return Ok(None);
        };
        let (epoch, record) = split_head(&data);
        Ok((self.valid_epoch() == Some(epoch)).then(|| record.to_vec()))
    }

    /// The remembered epoch when it is a token (with its newline).
    fn valid_epoch(&self) -> Option<&[u8]> {
        self.epoch
            .as_deref()
            .filter(|epoch| is_token(epoch.strip_suffix(b"\n").unwrap_or(epoch)))
    }

    /// Generation `generation`'s snapshot, `None` when missing; a record that does not parse
    /// as that generation is a protocol error.
    fn read(&self, files: &Files, generation: u64) -> Result<Option<Snapshot>, Fault> {
        let name = generation_name(generation);
        let Some(data) = files.read(Area::Generations, &name)? else {
            return Ok(None);
        };
        match parse_snapshot(&data) {
            Some(snapshot) if snapshot.generation == generation => Ok(Some(snapshot)),
            _ => Err(Fault::protocol(Some(name), "malformed generation record")),
        }
    }

    /// The newest snapshot reachable from `start` by name, giving up after `patience`
    /// consecutive missing generations.
    fn probe(&self, files: &Files, start: Snapshot, patience: u64) -> Result<Snapshot, Fault> {
        let mut generation = start.generation;
        let mut latest = start;
        let mut gap = 0;
        while gap < patience {
            let Some(next) = generation.checked_add(1) else {
                break;
            };
            generation = next;
            match self.read(files, generation)? {
                None => gap += 1,
                Some(snapshot) => {
                    latest = snapshot;
                    gap = 0;
                }
            }
        }
        Ok(latest)
    }

    /// Publishes `successor` as the next generation; `false` when a peer published that
    /// generation first, the log's epoch changed since it was read, or compaction freed the
    /// slot (checked before the link and again after it, since a committer can stall in
    /// between). A no-replace hard link is the compare-and-swap; the file's identity after
    /// the call decides whether it landed. A record refused after it landed is removed when
    /// nothing was built on it.
    fn commit(&mut self, files: &Files, successor: &Snapshot) -> Result<bool, Fault> {
        if files.read(Area::Generations, EPOCH_NAME)? != self.epoch
            || !self.extends_the_log(files, successor.generation)?
        {
            return Ok(false);
        }
        let data = successor.encode();
        let target = generation_name(successor.generation);
        if !publish(files, &target, &data, Place::Link, true)? {
            return Ok(false);
        }
        let listed_newest = listed(files)?.last().copied().unwrap_or(0);
        let newest = listed_newest.max(self.head_generation(files)?.unwrap_or(0));
        let lead = i128::from(newest) - i128::from(successor.generation);
        let window = i128::from(RETAINED_GENERATIONS);
        if lead >= window || !self.extends_the_log(files, successor.generation)? {
            if !(0 < lead && lead < window) {
                files.unlink(Area::Generations, &target)?;
            }
            return Ok(false);
        }
        self.latest = Some(successor.clone());
        // Readers verify the generation HEAD names, so a failed rename costs a probe, not
        // the commit (every OSError is suppressed, as in Python; a replaced tree is not).
        if let Err(fault @ Fault::Replaced(_)) =
            self.advance_head(files, successor.generation, &data)
        {
            return Err(fault);
        }
        if let Some(expired) = successor
            .generation
            .checked_sub(RETAINED_GENERATIONS + 1)
            .filter(|&e| e > 0)
        {
            self.compact_through(files, expired)?;
        }
        Ok(true)
    }

    /// Moves `HEAD` to `generation` when it is behind (a late rename must never move it back
    /// past later commits).
    fn advance_head(&self, files: &Files, generation: u64, data: &[u8]) -> Result<(), Fault> {
        let Some(epoch) = self.valid_epoch() else {
            return Ok(());
        };
        if files.read(Area::Generations, EPOCH_NAME)?.as_deref() != Some(epoch)
            || self.head_generation(files)?.unwrap_or(0) >= generation
        {
            return Ok(());
        }
        let mut record = epoch.to_vec();
        record.extend_from_slice(data);
        publish(files, HEAD_NAME, &record, Place::Replace, false)?;
        Ok(())
    }

    /// Compaction removes oldest first, so a missing predecessor means compaction freed this
    /// slot. The first generation has none; a `HEAD` of this epoch means the log already
    /// moved past it.
    fn extends_the_log(&self, files: &Files, generation: u64) -> Result<bool, Fault> {
        if generation > 1 {
            return Ok(files
                .read(Area::Generations, &generation_name(generation - 1))?
                .is_some());
        }
        Ok(self.head_record(files)?.is_none())
    }

    /// Removes generations up to `expired`, oldest first, so survivors stay contiguous.
    fn compact_through(&self, files: &Files, expired: u64) -> Result<(), Fault> {
        let mut oldest = expired;
        while oldest > 1
            && files
                .read(Area::Generations, &generation_name(oldest - 1))?
                .is_some()
        {
            oldest -= 1;
        }
        for generation in oldest..=expired {
            files.unlink(Area::Generations, &generation_name(generation))?;
        }
        Ok(())
    }
}

/// The generation records listed in `gen/`, sorted.
fn listed(files: &Files) -> Result<Vec<u64>, Fault> {
    let mut listed: Vec<u64> = files
        .listdir(Area::Generations)?
        .iter()
        .filter_map(|name| parse_generation_name(name))
        .collect();
    listed.sort_unstable();
    Ok(listed)
}

/// How [`publish`] gives a record its public name.
#[derive(Clone, Copy)]
enum Place {
    /// A no-replace hard link (a commit).
    Link,
    /// An atomic rename over the target (`HEAD`).
    Replace,
}

/// Writes `data` to a fresh `gen/.commit-<hex>` and places it at `target`; `false` when
/// there is no `gen/` (the log was removed, or nobody prepared it yet) or the placement lost.
fn publish(
    files: &Files,
    target: &str,
    data: &[u8],
    place: Place,
    durable: bool,
) -> Result<bool, Fault> {
    let temporary = format!("{TEMPORARY_PREFIX}{}", new_token());
    match files.create(Area::Generations, &temporary, data, durable) {
        Ok(_) => {}
        Err(fault) if fault.is_not_found() => return Ok(false),
        Err(fault) => return Err(fault),
    }
    crate::fault::point("rw.commit-written");
    let placed = match place {
        Place::Link => files.link(Area::Generations, &temporary, target),
        Place::Replace => files.replace(Area::Generations, &temporary, target),
    };
    crate::fault::point("rw.commit-placed");
    // As Python's `finally`: a failure to remove the temporary wins.
    files.unlink(Area::Generations, &temporary)?;
    placed
}

/// Python's `canonical`: the lock path with its directory resolved (symbolic links followed
/// on Unix, made absolute elsewhere) and its final component kept, so every spelling of one
/// lock path names one log. A directory that does not exist yet is made absolute only.
fn canonical(path: &Path) -> PathBuf {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Some(name) = path.file_name() else {
        return std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    };
    let resolved = if cfg!(unix) {
        std::fs::canonicalize(parent).or_else(|_| std::path::absolute(parent))
    } else {
        std::path::absolute(parent)
    };
    match resolved {
        Ok(parent) => parent.join(name),
        Err(_) => path.to_path_buf(),
    }
}

/// Per-lock shared state (one per `SoftRwLock` instance): the storage under the root
/// `<lock>.rw`, the ledger and the generation log. They outlive one acquisition: how long a
/// peer's record has stayed unchanged is knowledge every attempt against the lock shares, or
/// a caller whose attempts are each shorter than the stale threshold could never evict.
#[derive(Debug)]
pub(crate) struct Log {
    /// The user's lock path, as errors name it.
    lock_file: PathBuf,
    /// Records under `<canonical lock path>.rw`.
    files: Files,
    /// The ledger and the generation log's memory; held for a whole protocol step, so the
    /// participants of one instance take turns.
    shared: Mutex<Shared>,
}

/// The mutable part of a [`Log`].
#[derive(Debug, Default)]
struct Shared {
    ledger: Ledger,
    generations: Generations,
}

impl Log {
    /// The log for the lock at `lock_path` (never created itself). Resolves the path's
    /// directory once, so a relative lock path keeps naming the same log after the process
    /// changes directory; no other I/O.
    pub(crate) fn new(lock_path: &Path) -> Log {
        let mut root = canonical(lock_path).into_os_string();
        root.push(ROOT_SUFFIX);
        Log {
            lock_file: lock_path.to_path_buf(),
            files: Files::new(PathBuf::from(root)),
            shared: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn error(&self, fault: Fault) -> Error {
        fault.into_error(&self.lock_file)
    }
}

/// What a heartbeat found.
#[derive(Debug)]
pub(crate) enum HeartbeatOutcome {
    /// The nonce was refreshed (and the latest snapshot still names this participant, or the
    /// log could not be read, which decides nothing about this holder).
    Ok,
    /// Refreshing the nonce failed; worth retrying on the next tick.
    Transient(io::Error),
    /// A peer evicted this participant or removed its holder record: the lock is no longer
    /// held.
    Lost,
}

/// One acquisition: published claim, then admitted holder, then left.
///
/// [`advance`](Participant::advance) is polled until it reports the lock granted,
/// [`heartbeat`](Participant::heartbeat) runs on the holder's schedule, and
/// [`leave`](Participant::leave) commits the participant out. None of them sleep: the caller
/// owns the deadline and the poll interval.
#[derive(Debug)]
pub(crate) struct Participant {
    log: Arc<Log>,
    token: String,
    write: bool,
    /// The generation the hold was granted at.
    generation: Option<u64>,
    stale_threshold: Duration,
    /// The holder record's (device, inode) when this participant created it.
    holder_identity: Option<(u64, u64)>,
    /// Whether the latest snapshot names this participant.
    entered: bool,
    /// Orphans are swept at most every half threshold.
    next_sweep: Instant,
    /// Whether `leave` completed (then dropping does nothing).
    left: bool,
}

impl Participant {
    /// Python's `Participant(...)` followed by `publish()`: prepares the tree (creating the
    /// lock's missing parent directories) and creates the holder record peers watch for
    /// liveness; it exists before the token appears in any snapshot.
    pub(crate) fn publish(
        log: &Arc<Log>,
        write: bool,
        stale_threshold: Duration,
    ) -> Result<Participant, Error> {
        let mut participant = Participant {
            log: Arc::clone(log),
            token: new_token(),
            write,
            generation: None,
            stale_threshold,
            holder_identity: None,
            entered: false,
            next_sweep: Instant::now(),
            left: false,
        };
        let published = log
            .files
            .prepare(false)
            .and_then(|()| participant.create_holder());
        if let Err(fault) = published {
            // Nothing was published, so there is nothing for drop to withdraw.
            participant.left = true;
            return Err(log.error(fault));
        }
        Ok(participant)
    }

    /// The claim token naming this participant in snapshots and in `holders/`.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// The generation the hold was granted at (a fencing token), once granted and until left.
    pub(crate) fn generation(&self) -> Option<u64> {
        self.generation
    }

    /// Takes the next steps toward holding the lock: up to four commit races, re-reading
    /// after each lost one. `Ok(true)` once the lock is granted. Never sleeps.
    ///
    /// A reader enters as soon as no live writer is named. A writer enters as soon as no live
    /// writer is named, which blocks every new reader, then waits for the named readers to
    /// leave. Stale members are evicted in the same commit that admits this participant, and
    /// a writer's final admission is itself a commit.
    pub(crate) fn advance(&mut self) -> Result<bool, Error> {
        // A participant that left and advances again is published again; drop withdraws it.
        self.left = false;
        let log = Arc::clone(&self.log);
        let mut shared = log.lock();
        for _ in 0..ATTEMPTS_PER_ADVANCE {
            match self.attempt(&mut shared) {
                Ok(Some(granted)) => return Ok(granted),
                Ok(None) => {}
                Err(fault) => return Err(log.error(fault)),
            }
        }
        Ok(false)
    }

    /// One read-decide-commit round; `None` when the commit lost a race.
    fn attempt(&mut self, shared: &mut Shared) -> Result<Option<bool>, Fault> {
        let files = &self.log.files;
        let latest = shared.generations.latest(files)?;
        self.keep_claim_fresh(&latest)?;
        self.sweep(&mut shared.ledger, &latest)?;
        let mut stale = BTreeSet::new();
        for token in latest.members() {
            if token != self.token && self.is_stale(&mut shared.ledger, token)? {
                stale.insert(token.to_owned());
            }
        }
        let mut writer = latest.writer.clone().filter(|w| !stale.contains(w));
        let mut readers: BTreeSet<String> = latest.readers.difference(&stale).cloned().collect();
        if !self.entered {
            if writer.is_some() {
                // A live writer blocks entry in both modes; only an eviction is worth
                // committing.
                if !stale.is_empty() {
                    self.commit(shared, &latest, writer, readers, &stale)?;
                }
                return Ok(Some(false));
            }
            if self.write {
                writer = Some(self.token.clone());
            } else {
                readers.insert(self.token.clone());
            }
        }
        let granted = !self.write || readers.is_empty();
        if self.entered && stale.is_empty() && !granted {
            return Ok(Some(false));
        }
        let Some(generation) = self.commit(shared, &latest, writer, readers, &stale)? else {
            return Ok(None);
        };
        self.entered = true;
        if granted {
            self.generation = Some(generation);
        }
        Ok(Some(granted))
    }

    /// The snapshot is the truth about membership (a commit reported lost may have landed,
    /// and a peer may have evicted this participant while it waited). The nonce changes on
    /// every poll, so a peer never reads a patient contender as a corpse; a record that has
    /// gone missing is created again.
    fn keep_claim_fresh(&mut self, latest: &Snapshot) -> Result<(), Fault> {
        self.entered = latest.is_member(&self.token);
        if !self.refresh_nonce()? {
            match self.create_holder() {
                Err(fault) if fault.is_exists() => {}
                other => other?,
            }
        }
        Ok(())
    }

    fn create_holder(&mut self) -> Result<(), Fault> {
        let record = self.record();
        let files = &self.log.files;
        let identity = match files.create(Area::Holders, &self.token, &record, false) {
            Err(fault) if fault.is_not_found() => {
                // Removing the whole log takes the directories with it.
                files.prepare(true)?;
                files.create(Area::Holders, &self.token, &record, false)?
            }
            other => other?,
        };
        self.holder_identity = Some(identity);
        Ok(())
    }

    /// This participant's holder record with a fresh nonce.
    fn record(&self) -> Vec<u8> {
        encode_holder(&self.token, &new_token(), self.stale_threshold)
    }

    /// Rewrites the nonce; `false` when the record this participant created is gone.
    fn refresh_nonce(&self) -> Result<bool, Fault> {
        let Some(identity) = self.holder_identity else {
            return Ok(false);
        };
        self.log
            .files
            .overwrite(Area::Holders, &self.token, &self.record(), identity)
    }

    /// Collects holder records no snapshot names (a participant that crashed before its first
    /// commit) and commit temporaries (a commit that crashed before removing its own) once
    /// unchanged for a threshold, at most every half threshold.
    fn sweep(&mut self, ledger: &mut Ledger, latest: &Snapshot) -> Result<(), Fault> {
        let now = Instant::now();
        if now < self.next_sweep {
            return Ok(());
        }
        self.next_sweep = now + self.stale_threshold / 2;
        let files = &self.log.files;
        let mut watched: HashSet<String> =
            latest.members().into_iter().map(str::to_owned).collect();
        for name in files.listdir(Area::Holders)? {
            let Some(name) = name.to_str() else { continue };
            if name != self.token && !latest.is_member(name) && is_token(name.as_bytes()) {
                let key = format!("holder:{name}");
                self.collect(ledger, &key, Area::Holders, name)?;
                watched.insert(key);
            }
        }
        for name in files.listdir(Area::Generations)? {
            // Only this protocol's own names (ASCII) are collected; a stranger's
            // non-UTF-8 name is left alone.
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TEMPORARY_PREFIX) {
                let key = format!("temporary:{name}");
                self.collect(ledger, &key, Area::Generations, name)?;
                watched.insert(key);
            }
        }
        ledger.retain(&watched);
        Ok(())
    }

    fn collect(&self, ledger: &mut Ledger, key: &str, area: Area, name: &str) -> Result<(), Fault> {
        if self.unchanged_for_its_lease(ledger, key, area, name)? {
            self.log.files.unlink(area, name)?;
            ledger.forget(key);
        }
        Ok(())
    }

    /// Whether the record at `name` has stayed the same for the longer of this participant's
    /// threshold and the lease the record carries.
    fn unchanged_for_its_lease(
        &self,
        ledger: &mut Ledger,
        key: &str,
        area: Area,
        name: &str,
    ) -> Result<bool, Fault> {
        let asked = Instant::now();
        let record = self.log.files.read(area, name)?;
        let lease = holder_lease(record.as_deref())
            .map(|secs| Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
            .unwrap_or_default();
        Ok(ledger.observe(key, record, Some(asked)) >= self.stale_threshold.max(lease))
    }

    fn is_stale(&self, ledger: &mut Ledger, token: &str) -> Result<bool, Fault> {
        self.unchanged_for_its_lease(ledger, token, Area::Holders, token)
    }

    /// Commits the successor of `latest` with `writer` and `readers`, removing the evicted
    /// members' records; the new generation, or `None` when a peer committed first.
    fn commit(
        &self,
        shared: &mut Shared,
        latest: &Snapshot,
        writer: Option<String>,
        readers: BTreeSet<String>,
        stale: &BTreeSet<String>,
    ) -> Result<Option<u64>, Fault> {
        let Some(generation) = latest.generation.checked_add(1) else {
            return Err(Fault::protocol(None, "generation counter exhausted"));
        };
        let successor = Snapshot {
            generation,
            writer,
            readers,
        };
        if !shared.generations.commit(&self.log.files, &successor)? {
            return Ok(None);
        }
        for token in stale {
            self.log.files.unlink(Area::Holders, token)?;
            shared.ledger.forget(token);
        }
        Ok(Some(generation))
    }

    /// Refreshes the nonce and confirms the latest snapshot still names this participant.
    ///
    /// A failure to read the log or to sweep decides nothing about this holder's liveness,
    /// so it is not counted against it.
    pub(crate) fn heartbeat(&mut self) -> HeartbeatOutcome {
        match self.refresh_nonce() {
            Ok(true) => {}
            Ok(false) | Err(Fault::Replaced(_)) => return HeartbeatOutcome::Lost,
            Err(Fault::Os(e)) => return HeartbeatOutcome::Transient(e),
            // Not raised by a rewrite; an OSError subclass in Python all the same.
            Err(fault @ Fault::Protocol { .. }) => {
                return HeartbeatOutcome::Transient(io::Error::other(fault.to_string()))
            }
        }
        let log = Arc::clone(&self.log);
        let mut shared = log.lock();
        let shared = &mut *shared;
        let checked = shared
            .generations
            .latest(&log.files)
            .and_then(|latest| self.sweep(&mut shared.ledger, &latest).map(|()| latest));
        match checked {
            Ok(latest) if !latest.is_member(&self.token) => HeartbeatOutcome::Lost,
            _ => HeartbeatOutcome::Ok,
        }
    }

    /// Commits this participant out of the latest snapshot, then removes its holder record.
    ///
    /// The record goes even when the log cannot be read: a contender that never entered then
    /// leaves nothing behind, and a member still named ages out the same way with or without
    /// one. A tree that was swapped out leaves nothing this participant can reach, so that
    /// is not an error. Best effort: returns the first error. Once it succeeded, calling it
    /// again does nothing; after a failure, a second call tries again.
    pub(crate) fn leave(&mut self) -> Result<(), Error> {
        if self.left {
            return Ok(());
        }
        let log = Arc::clone(&self.log);
        let committed = {
            let mut shared = log.lock();
            self.commit_out(&mut shared.generations)
        };
        self.entered = false;
        self.generation = None;
        let removed = log.files.unlink(Area::Holders, &self.token);
        let first = [committed, removed]
            .into_iter()
            .find_map(|result| match result {
                Ok(()) | Err(Fault::Replaced(_)) => None,
                Err(fault) => Some(fault),
            });
        match first {
            Some(fault) => Err(log.error(fault)),
            None => {
                self.left = true;
                Ok(())
            }
        }
    }

    fn commit_out(&self, generations: &mut Generations) -> Result<(), Fault> {
        loop {
            let latest = generations.latest(&self.log.files)?;
            if !latest.is_member(&self.token) {
                return Ok(());
            }
            let Some(generation) = latest.generation.checked_add(1) else {
                return Err(Fault::protocol(None, "generation counter exhausted"));
            };
            let successor = Snapshot {
                generation,
                writer: latest.writer.clone().filter(|w| *w != self.token),
                readers: latest
                    .readers
                    .iter()
                    .filter(|r| **r != self.token)
                    .cloned()
                    .collect(),
            };
            if generations.commit(&self.log.files, &successor)? {
                return Ok(());
            }
        }
    }
}

impl Drop for Participant {
    /// A participant dropped before it left withdraws its claim, ignoring errors (a member
    /// still named ages out of the log anyway).
    fn drop(&mut self) {
        if !self.left {
            let _ = self.leave();
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    const T1: &str = "0123456789abcdef0123456789abcdef";
    const T2: &str = "fedcba9876543210fedcba9876543210";
    const SHORT: Duration = Duration::from_millis(200);
    const LONG: Duration = Duration::from_secs(90);

    fn lock_in(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("data.lock")
    }

    fn root_of(lock: &Path) -> PathBuf {
        let mut root = canonical(lock).into_os_string();
        root.push(ROOT_SUFFIX);
        PathBuf::from(root)
    }

    /// The latest snapshot as a fresh log instance reads it.
    fn latest(lock: &Path) -> Snapshot {
        let log = Log::new(lock);
        let mut shared = log.lock();
        shared.generations.latest(&log.files).unwrap()
    }

    /// Advances until granted or `limit` passes, polling every 20 ms.
    fn advance_until(p: &mut Participant, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        loop {
            if p.advance().unwrap() {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn snapshot(generation: u64, writer: Option<&str>, readers: &[&str]) -> Snapshot {
        Snapshot {
            generation,
            writer: writer.map(str::to_owned),
            readers: readers.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn log_and_participant_are_thread_safe() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Log>();
        send::<Participant>();
    }

    #[test]
    fn snapshots_encode_as_python_does_and_parse_back() {
        let s = snapshot(7, Some(T2), &[T2, T1]);
        let bytes = s.encode();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            format!("filelock-rw/1\ngeneration=7\nwriter={T2}\nreader={T1}\nreader={T2}\n")
        );
        assert_eq!(parse_snapshot(&bytes), Some(s));
        assert_eq!(
            snapshot(0, None, &[]).encode(),
            b"filelock-rw/1\ngeneration=0\n"
        );
        assert_eq!(
            parse_snapshot(b"filelock-rw/1\ngeneration=0\n"),
            Some(Snapshot::empty(0))
        );
        // Lines in any order.
        let reordered = format!("filelock-rw/1\nreader={T1}\ngeneration=3\n");
        assert_eq!(
            parse_snapshot(reordered.as_bytes()),
            Some(snapshot(3, None, &[T1]))
        );
        let twenty = format!("filelock-rw/1\ngeneration={}\n", u64::MAX);
        assert_eq!(
            parse_snapshot(twenty.as_bytes()).unwrap().generation,
            u64::MAX
        );
    }

    #[test]
    fn malformed_snapshots_are_rejected() {
        let upper = T1.to_uppercase();
        let rejected: Vec<String> = vec![
            String::new(),
            "filelock-rw/1\ngeneration=1".into(),
            "filelock-rw/2\ngeneration=1\n".into(),
            "filelock-rw/1\n".into(),
            "filelock-rw/1\ngeneration=01\n".into(),
            "filelock-rw/1\ngeneration=\n".into(),
            "filelock-rw/1\ngeneration=+1\n".into(),
            "filelock-rw/1\ngeneration= 1\n".into(),
            "filelock-rw/1\ngeneration=1\ngeneration=1\n".into(),
            format!("filelock-rw/1\ngeneration={}\n", "1".repeat(21)),
            format!("filelock-rw/1\ngeneration=1\nwriter={T1}\nwriter={T1}\n"),
            format!("filelock-rw/1\ngeneration=1\nreader={T1}\nreader={T1}\n"),
            format!("filelock-rw/1\ngeneration=1\nwriter={upper}\n"),
            format!("filelock-rw/1\ngeneration=1\nreader={}\n", &T1[1..]),
            "filelock-rw/1\ngeneration=1\n\n".into(),
            "filelock-rw/1\ngeneration=1\nlease=1.0\n".into(),
            "filelock-rw/1\ngeneration=1\nwriter\n".into(),
            "filelock-rw/1\r\ngeneration=1\n".into(),
            "filelock-rw/1\ngeneration=\u{0661}\n".into(),
        ];
        for text in &rejected {
            assert_eq!(parse_snapshot(text.as_bytes()), None, "{text:?}");
        }
        assert_eq!(parse_snapshot(b"filelock-rw/1\ngeneration=1\n\xff\n"), None);
        let mut huge = format!("filelock-rw/1\ngeneration=1\nreader={T1}\n").into_bytes();
        huge.resize(MAX_RECORD_SIZE + 1, b'\n');
        assert_eq!(parse_snapshot(&huge), None);
    }

    #[test]
    fn holder_records_carry_the_lease_as_python_repr() {
        let record = encode_holder(T1, T2, Duration::from_secs(90));
        let text = String::from_utf8(record.clone()).unwrap();
        assert_eq!(
            text,
            format!(
                "filelock-rw/1\ntoken={T1}\npid={}\nhost={}\nlease=90.0\nnonce={T2}\n",
                own_pid(),
                host_name()
            )
        );
        assert_eq!(holder_lease(Some(&record)), Some(90.0));
        let short = encode_holder(T1, T2, Duration::from_millis(200));
        assert_eq!(holder_lease(Some(&short)), Some(0.2));
        // The length stays constant across nonces.
        assert_eq!(
            record.len(),
            encode_holder(T1, T1, Duration::from_secs(90)).len()
        );
        let lease = |line: &str| holder_lease(Some(format!("filelock-rw/1\n{line}\n").as_bytes()));
        assert_eq!(lease("lease=1e-05"), Some(1e-05));
        assert_eq!(lease("lease=1.5e+20"), Some(1.5e20));
        for bad in [
            "lease=90",
            "lease=1_000.0",
            "lease= 1.0",
            "lease=+1.0",
            "lease=inf",
            "lease=nan",
            "lease=0.0",
            "lease=-1.0",
            "lease=1e5",
            "lease=",
            "nolease=1.0",
            "lease=\u{0661}.0",
        ] {
            assert_eq!(lease(bad), None, "{bad}");
        }
        // The first lease line decides.
        assert_eq!(lease("lease=2.0\nlease=3.0"), Some(2.0));
        assert_eq!(lease("lease=x\nlease=3.0"), None);
        assert_eq!(holder_lease(None), None);
        assert_eq!(holder_lease(Some(b"lease=1.0\n\xff")), None);
    }

    #[test]
    fn generation_names_are_twenty_ascii_digits() {
        assert_eq!(generation_name(5), "00000000000000000005");
        assert_eq!(generation_name(u64::MAX), "18446744073709551615");
        assert_eq!(
            parse_generation_name(OsStr::new("00000000000000000005")),
            Some(5)
        );
        for bad in [
            "0000000000000000005",
            "000000000000000000005",
            "0000000000000000000x",
            "99999999999999999999",
            "epoch",
            "HEAD",
            ".commit-00000000000000000005",
            "0000000000000000000\u{0665}",
        ] {
            assert_eq!(parse_generation_name(OsStr::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn the_ledger_measures_unchanged_time_up_to_the_question() {
        let mut ledger = Ledger::default();
        assert_eq!(
            ledger.observe("k", Some(b"a".to_vec()), None),
            Duration::ZERO
        );
        std::thread::sleep(Duration::from_millis(30));
        let asked = Instant::now();
        std::thread::sleep(Duration::from_millis(30));
        let held = ledger.observe("k", Some(b"a".to_vec()), Some(asked));
        assert!(held >= Duration::from_millis(30) && held < Duration::from_millis(60));
        // A change restarts the count; so does forgetting.
        assert_eq!(
            ledger.observe("k", Some(b"b".to_vec()), None),
            Duration::ZERO
        );
        ledger.forget("k");
        assert_eq!(
            ledger.observe("k", Some(b"b".to_vec()), None),
            Duration::ZERO
        );
        ledger.observe("other", None, None);
        ledger.retain(&HashSet::from(["k".to_owned()]));
        assert_eq!(ledger.seen.len(), 1);
    }

    #[test]
    fn one_of_two_racing_commits_wins() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_in(&dir);
        let (a, b) = (Log::new(&lock), Log::new(&lock));
        a.files.prepare(false).unwrap();
        let (mut ga, mut gb) = (a.lock(), b.lock());
        let (la, lb) = (
            ga.generations.latest(&a.files).unwrap(),
            gb.generations.latest(&b.files).unwrap(),
        );
        assert_eq!((la.generation, lb.generation), (0, 0));
        assert!(ga
            .generations
            .commit(&a.files, &snapshot(1, Some(T1), &[]))
            .unwrap());
        assert!(!gb
            .generations
            .commit(&b.files, &snapshot(1, Some(T2), &[]))
            .unwrap());
        assert_eq!(
            gb.generations.latest(&b.files).unwrap(),
            snapshot(1, Some(T1), &[])
        );
        // No temporaries are left, and HEAD names the winner in this epoch.
        let gen = root_of(&lock).join("gen");
        assert_eq!(names(&gen), ["00000000000000000001", "HEAD", "epoch"]);
        let epoch = std::fs::read(gen.join("epoch")).unwrap();
        assert_eq!(epoch.len(), 33);
        let mut head = epoch.clone();
        head.extend(snapshot(1, Some(T1), &[]).encode());
        assert_eq!(std::fs::read(gen.join("HEAD")).unwrap(), head);
    }

    #[test]
    fn only_one_link_to_a_generation_lands() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_in(&dir);
        let (a, b) = (Log::new(&lock), Log::new(&lock));
        a.files.prepare(false).unwrap();
        let target = generation_name(1);
        let first = snapshot(1, Some(T1), &[]).encode();
        assert!(publish(&a.files, &target, &first, Place::Link, true).unwrap());
        let second = snapshot(1, Some(T2), &[]).encode();
        assert!(!publish(&b.files, &target, &second, Place::Link, true).unwrap());
        let gen = root_of(&lock).join("gen");
        assert_eq!(std::fs::read(gen.join(&target)).unwrap(), first);
        assert_eq!(names(&gen), [target]);
    }

    #[test]
    fn many_participants_racing_each_get_in_once() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_in(&dir);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    // A log per thread, as separate processes have.
                    let log = Arc::new(Log::new(&lock));
                    let mut p = Participant::publish(&log, false, LONG).unwrap();
                    assert!(advance_until(&mut p, Duration::from_secs(10)));
                    p
                })
            })
            .collect();
        let readers: Vec<Participant> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let snapshot = latest(&lock);
        assert_eq!(snapshot.readers.len(), 4);
        let mut generations: Vec<u64> =
            readers.iter().filter_map(Participant::generation).collect();
        generations.sort_unstable();
        generations.dedup();
        assert_eq!(generations.len(), 4, "each admission is its own generation");
    }

    #[test]
    fn readers_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_in(&dir);
        let log = Arc::new(Log::new(&lock));
        let mut r1 = Participant::publish(&log, false, LONG).unwrap();
        let mut r2 = Participant::publish(&Arc::new(Log::new(&lock)), false, LONG).unwrap();
        assert!(r1.advance().unwrap());
        assert!(r2.advance().unwrap());
        let s = latest(&lock);
        assert_eq!(s.writer, None);
        assert_eq!(s.members(), BTreeSet::from([r1.token(), r2.token()]));
        assert!(r2.generation().unwrap() > r1.generation().unwrap());
        assert!(matches!(r1.heartbeat(), HeartbeatOutcome::Ok));
    }

    #[test]
    fn a_waiting_writer_blocks_new_readers_and_is_granted_once_readers_leave() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_in(&dir);
        let log = Arc::new(Log::new(&lock));
        let mut r1 = Participant::publish(&log, false, LONG).unwrap();
        assert!(r1.advance().unwrap());
        let mut w = Participant::publish(&Arc::new(Log::new(&lock)), true, LONG).unwrap();
        assert!(!w.advance().unwrap());
        assert_eq!(w.generation(), None);
        let s = latest(&lock);
        assert_eq!(s.writer.as_deref(), Some(w.token()));
        assert_eq!(s.readers, BTreeSet::from([r1.token().to_owned()]));
        let mut r2 = Participant::publish(&Arc::new(Log::new(&lock)), false, LONG).unwrap();
        assert!(!r2.advance().unwrap());
        assert!(!w.advance().unwrap());
        r1.leave().unwrap();
        assert!(w.advance().unwrap());
        let granted = w.generation().unwrap();
        assert_eq!(latest(&lock), snapshot(granted, Some(w.token()), &[]));
        assert!(!r2.advance().unwrap());
        w.leave().unwrap();
        assert!(r2.advance().unwrap());
        assert!(r2.generation().unwrap() > granted);
    }

    #[test]
    fn leaving_removes_the_member_and_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_in(&dir);
        let log = Arc::new(Log::new(&lock));
        let mut w = Participant::publish(&log, true, LONG).unwrap();
        let record = root_of(&lock).join("holders").join(w.token());
        assert!(record.exists());
        assert!(w.advance().unwrap());
        assert_eq!(w.generation(), Some(1));
        w.leave().unwrap();
        assert_eq!(w.generation(), None);
        assert!(!record.exists());
        assert_eq!(latest(&lock), snapshot(2, None, &[]));
        // Idempotent: no further commit.
        w.leave().unwrap();
        drop(w);
        assert_eq!(latest(&lock).generation, 2);
        // Dropping a granted participant leaves too.
        let mut r = Participant::publish(&log, false, LONG).unwrap();
        assert!(r.advance().unwrap());
        drop(r);
        assert_eq!(latest(&lock), snapshot(4, None, &[]));
        assert!(names(&root_of(&lock).join("holders")).is_empty());
    }

    #[test]
    fn a_silent_member_is_evicted_after_the_stale_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_in(&dir);
        let mut stuck = Participant::publish(&Arc::new(Log::new(&lock)), true, SHORT).unwrap();
        assert!(stuck.advance().unwrap());
        let mut w = Participant::publish(&Arc::new(Log::new(&lock)), true, SHORT).unwrap();
        assert!(!w.advance().unwrap());
        std::thread::sleep(Duration::from_millis(20));
        assert!(!w.advance().unwrap(), "not yet stale");
        std::thread::sleep(Duration::from_millis(250));
        assert!(w.advance().unwrap(), "evicted after 250 ms unchanged");
        assert_eq!(latest(&lock).writer.as_deref(), Some(w.token()));
        assert!(!root_of(&lock).join("holders").join(stuck.token()).exists());
        assert!(matches!(stuck.heartbeat(), HeartbeatOutcome::Lost));
    }

    #[test]
    fn a_heartbeat_keeps_a_member_alive_and_reports_an_eviction() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_in(&dir);
        let mut holder = Participant::publish(&Arc::new(Log::new(&lock)), true, SHORT).unwrap();
        assert!(holder.advance().unwrap());
        let mut w = Participant::publish(&Arc::new(Log::new(&lock)), true, SHORT).unwrap();
        for _ in 0..8 {
            assert!(!w.advance().unwrap());
            assert!(matches!(holder.heartbeat(), HeartbeatOutcome::Ok));
            std::thread::sleep(Duration::from_millis(50));
        }
        // A contender with a longer threshold of its own waits too.
        let mut patient = Participant::publish(&Arc::new(Log::new(&lock)), true, LONG).unwrap();
        assert!(!patient.advance().unwrap());
        drop(w);
        // The holder's record names it a member no more once a peer commits it out.
        let log = Log::new(&lock);
        {
            let mut shared = log.lock();
            let now = shared.generations.latest(&log.files).unwrap();
            let successor = snapshot(now.generation + 1, None, &[]);
            assert!(shared.generations.commit(&log.files, &successor).unwrap());
        }
        assert!(matches!(holder.heartbeat(), HeartbeatOutcome::Lost));
        assert!(patient.advance().unwrap());
    }

    #[test]
    fn orphan_records_and_temporaries_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_in(&dir);
        let mut p = Participant::publish(&Arc::new(Log::new(&lock)), false, SHORT).unwrap();
        let root = root_of(&lock);
        let orphan = root.join("holders").join(T1);
        std::fs::write(&orphan, encode_holder(T1, T2, Duration::from_millis(100))).unwrap();
        let long_lease = root.join("holders").join(T2);
        std::fs::write(&long_lease, encode_holder(T2, T1, LONG)).unwrap();
        let temporary = root.join("gen").join(format!(".commit-{T2}"));
        std::fs::write(&temporary, b"filelock-rw/1\ngeneration=9\n").unwrap();
        let stranger = root.join("holders").join("not-a-token");
        std::fs::write(&stranger, b"x").unwrap();
        assert!(p.advance().unwrap());
        std::thread::sleep(Duration::from_millis(250));
        assert!(matches!(p.heartbeat(), HeartbeatOutcome::Ok));
        assert!(!orphan.exists());
        assert!(!temporary.exists());
        assert!(long_lease.exists(), "its own lease is longer");
        assert!(stranger.exists(), "only token names are collected");
        assert!(root.join("holders").join(p.token()).exists());
    }

    #[test]
    fn compaction_keeps_the_last_sixty_five_generations() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_in(&dir);
        let log = Arc::new(Log::new(&lock));
        for _ in 0..40 {
            let mut r = Participant::publish(&log, false, LONG).unwrap();
            assert!(r.advance().unwrap());
            r.leave().unwrap();
        }
        let gen = root_of(&lock).join("gen");
        let generations: Vec<String> = names(&gen)
            .into_iter()
            .filter(|n| parse_generation_name(OsStr::new(n)).is_some())
            .collect();
        assert_eq!(generations.len(), 65);
        assert_eq!(generations.first().unwrap(), &generation_name(16));
        assert_eq!(generations.last().unwrap(), &generation_name(80));
        let head = std::fs::read(gen.join("HEAD")).unwrap();
        assert!(head.ends_with(b"generation=80\n"));
        assert_eq!(latest(&lock), snapshot(80, None, &[]));
    }

    #[test]
    fn a_wiped_log_starts_a_new_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_in(&dir);
        let log = Arc::new(Log::new(&lock));
        let mut w = Participant::publish(&log, true, LONG).unwrap();
        assert!(w.advance().unwrap());
        w.leave().unwrap();
        std::fs::remove_dir_all(root_of(&lock)).unwrap();
        // The same log instance prepares again and restarts the numbering.
        let mut r = Participant::publish(&log, false, LONG).unwrap();
        assert!(r.advance().unwrap());
        assert_eq!(r.generation(), Some(1));
    }

    #[test]
    fn the_tree_is_private_and_the_lock_path_is_never_created() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("missing").join("parents").join("data.lock");
        let mut w = Participant::publish(&Arc::new(Log::new(&lock)), true, LONG).unwrap();
        assert!(w.advance().unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let root = root_of(&lock);
        assert!(!lock.exists());
        for d in [root.clone(), root.join("gen"), root.join("holders")] {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
        }
        for name in names(&root.join("gen")) {
            assert_eq!(mode(&root.join("gen").join(&name)), 0o600, "{name}");
        }
        assert_eq!(mode(&root.join("holders").join(w.token())), 0o600);
    }

    #[test]
    fn symlinked_protocol_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_in(&dir);
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let root = root_of(&lock);
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("gen")).unwrap();
        let err = Participant::publish(&Arc::new(Log::new(&lock)), false, LONG).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol);
        assert_eq!(err.path(), Some(lock.as_path()));
        assert!(
            err.to_string()
                .contains("exists but is not a directory or is a symlink; refusing to use it"),
            "{err}"
        );
        // A tree swapped after preparation is refused at the next operation.
        std::fs::remove_file(root.join("gen")).unwrap();
        let log = Arc::new(Log::new(&lock));
        let mut p = Participant::publish(&log, false, LONG).unwrap();
        std::fs::rename(root.join("gen"), dir.path().join("old-gen")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("gen")).unwrap();
        let err = p.advance().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol);
        assert!(
            err.to_string()
                .contains("gen is not a directory or is a symlink; refusing to use it"),
            "{err}"
        );
        assert!(names(&elsewhere).is_empty());
        // Its holder record is still removed; the unreadable log is no error for leave.
        p.leave().unwrap();
        assert!(names(&root.join("holders")).is_empty());
    }

    #[test]
    fn a_malformed_generation_is_a_protocol_error() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_in(&dir);
        let log = Arc::new(Log::new(&lock));
        let mut w = Participant::publish(&log, true, LONG).unwrap();
        assert!(w.advance().unwrap());
        let gen = root_of(&lock).join("gen");
        std::fs::write(
            gen.join(generation_name(2)),
            b"filelock-rw/1\ngeneration=3\n",
        )
        .unwrap();
        let mut r = Participant::publish(&Arc::new(Log::new(&lock)), false, LONG).unwrap();
        let err = r.advance().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol);
        assert!(
            err.to_string()
                .contains("claim \"00000000000000000002\": malformed generation record"),
            "{err}"
        );
    }

    // ---- Python interop -------------------------------------------------------------

    const PY_HOLD: &str = "
import sys, filelock
lock = filelock.SoftReadWriteLock(sys.argv[1], is_singleton=False)
(lock.acquire_write if sys.argv[2] == 'write' else lock.acquire_read)(timeout=5)
print('held', lock.generation, flush=True)
sys.stdin.read()
lock.release()
";

    const PY_TRY: &str = "
import sys, filelock
lock = filelock.SoftReadWriteLock(sys.argv[1], is_singleton=False)
try:
    (lock.acquire_write if sys.argv[2] == 'write' else lock.acquire_read)(timeout=0.3)
except filelock.Timeout:
    print('timeout')
else:
    print('acquired', lock.generation)
    lock.release()
";

    fn python_hold(lock: &Path, mode: &str) -> (std::process::Child, String) {
        use std::io::BufRead;
        let mut python = Command::new("python3")
            .args(["-c", PY_HOLD])
            .arg(lock)
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(python.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("held "), "{line:?}");
        (python, line.trim().to_owned())
    }

    fn python_release(mut python: std::process::Child) {
        drop(python.stdin.take());
        assert!(python.wait().unwrap().success());
    }

    fn python_try(lock: &Path, mode: &str) -> String {
        crate::soft::python_output(PY_TRY, &[lock.as_os_str(), mode.as_ref()])
            .trim()
            .to_owned()
    }

    #[test]
    fn a_python_writer_excludes_our_reader() {
        if !crate::soft::python_filelock() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_in(&dir);
        let (python, held) = python_hold(&lock, "write");
        assert_eq!(held, "held 1");
        let mut r = Participant::publish(&Arc::new(Log::new(&lock)), false, LONG).unwrap();
        assert!(!advance_until(&mut r, Duration::from_millis(300)));
        python_release(python);
        assert!(advance_until(&mut r, Duration::from_secs(5)));
        // Python's leave committed generation 2; our admission is 3.
        assert_eq!(r.generation(), Some(3));
    }

    #[test]
    fn our_writer_excludes_a_python_reader_and_python_reads_our_log() {
        if !crate::soft::python_filelock() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_in(&dir);
        let mut w = Participant::publish(&Arc::new(Log::new(&lock)), true, LONG).unwrap();
        assert!(w.advance().unwrap());
        assert_eq!(python_try(&lock, "read"), "timeout");
        assert_eq!(python_try(&lock, "write"), "timeout");
        // Python's own reader of the log and of our records.
        let script = "
import sys
try:  # filelock 4.3 moved the soft read/write internals
    from filelock._soft._read_write._generations import GenerationLog, parse_snapshot
    from filelock._soft._read_write._storage import OsFiles, holder_lease
except ImportError:  # filelock 4.2
    from filelock._soft_rw._protocol import GenerationLog, parse_snapshot, holder_lease
    from filelock._soft_rw._storage import OsFiles
lock, root, token = sys.argv[1], sys.argv[1] + '.rw', sys.argv[2]
s = GenerationLog(OsFiles(lock), lock, root).latest()
head = open(root + '/gen/HEAD', 'rb').read()
epoch = open(root + '/gen/epoch', 'rb').read()
assert head.startswith(epoch)
h = parse_snapshot(head[len(epoch):])
print(s.generation, s.writer == token, sorted(s.readers), h.generation)
print(holder_lease(open(root + '/holders/' + token, 'rb').read()))
";
        let root = canonical(&lock);
        let out = crate::soft::python_output(script, &[root.as_os_str(), w.token().as_ref()]);
        assert_eq!(out, "1 True [] 1\n90.0\n");
        w.leave().unwrap();
        // Python's timed-out contenders left nothing behind; it gets in now.
        assert_eq!(python_try(&lock, "read"), "acquired 3");
    }

    #[test]
    fn python_and_rust_readers_overlap() {
        if !crate::soft::python_filelock() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_in(&dir);
        let (python, held) = python_hold(&lock, "read");
        assert_eq!(held, "held 1");
        let mut r = Participant::publish(&Arc::new(Log::new(&lock)), false, LONG).unwrap();
        assert!(r.advance().unwrap());
        assert_eq!(latest(&lock).readers.len(), 2);
        // A Python writer enters behind both and waits.
        assert_eq!(python_try(&lock, "write"), "timeout");
        python_release(python);
        r.leave().unwrap();
        let next = latest(&lock).generation + 1;
        assert_eq!(python_try(&lock, "write"), format!("acquired {next}"));
    }

    #[test]
    fn we_evict_a_python_holder_that_stopped() {
        if !crate::soft::python_filelock() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_in(&dir);
        let script = "
import sys, filelock
lock = filelock.SoftReadWriteLock(sys.argv[1], is_singleton=False, heartbeat_interval=0.05, stale_threshold=0.5, poll_interval=0.01)
lock.acquire_write(timeout=5)
print('held', lock.generation, flush=True)
sys.stdin.read()
";
        let mut python = Command::new("python3")
            .args(["-c", script])
            .arg(&lock)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(python.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "held 1");
        let mut w = Participant::publish(&Arc::new(Log::new(&lock)), true, SHORT).unwrap();
        // Alive and heartbeating: never stale. Dead, it is evicted after its own longer lease
        // (0.5 s in its record), not our 0.2 s threshold.
        assert!(!advance_until(&mut w, Duration::from_millis(400)));
        python.kill().unwrap();
        python.wait().unwrap();
        let killed = Instant::now();
        assert!(advance_until(&mut w, Duration::from_secs(5)));
        assert!(
            killed.elapsed() >= Duration::from_millis(450),
            "{:?}",
            killed.elapsed()
        );
        assert_eq!(latest(&lock).members(), BTreeSet::from([w.token()]));
        assert_eq!(names(&root_of(&lock).join("holders")), [w.token()]);
    }

    /// Every node under the tree: its path, type and mode, and its content with tokens and
    /// the pid masked (names too).
    fn layout(lock: &Path) -> Vec<String> {
        fn mask(text: &str) -> String {
            let mut out = String::new();
            let mut rest = text;
            while !rest.is_empty() {
                let run = rest
                    .bytes()
                    .take_while(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                    .count();
                if run == TOKEN_HEX_LENGTH {
                    out.push_str("<token>");
                    rest = &rest[run..];
                } else {
                    let step = run.max(1);
                    let step = (1..=step)
                        .rev()
                        .find(|&n| rest.is_char_boundary(n))
                        .unwrap_or(1);
                    out.push_str(&rest[..step]);
                    rest = &rest[step..];
                }
            }
            out.replace(&format!("pid={}\n", std::process::id()), "pid=<pid>\n")
        }
        fn walk(path: &Path, label: &str, out: &mut Vec<String>) {
            let meta = std::fs::symlink_metadata(path).unwrap();
            let perm = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.push(format!("{label}/ {perm:o}"));
                for name in names(path) {
                    walk(&path.join(&name), &format!("{label}/{}", mask(&name)), out);
                }
            } else {
                let content = String::from_utf8(std::fs::read(path).unwrap()).unwrap();
                out.push(format!("{label} {perm:o} {:?}", mask(&content)));
            }
        }
        let mut out = Vec::new();
        walk(&root_of(lock), "<lock>.rw", &mut out);
        out
    }

    #[test]
    fn the_files_we_write_are_the_files_python_writes() {
        if !crate::soft::python_filelock() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = (dir.path().join("rust.lock"), dir.path().join("python.lock"));
        let (python, _) = python_hold(&theirs, "write");
        let mut w = Participant::publish(&Arc::new(Log::new(&ours)), true, LONG).unwrap();
        assert!(w.advance().unwrap());
        let pid = python.id();
        let ours_layout = layout(&ours);
        let theirs_layout: Vec<String> = layout(&theirs)
            .into_iter()
            .map(|l| l.replace(&format!("pid={pid}\\n"), "pid=<pid>\\n"))
            .collect();
        eprintln!("rust   {ours_layout:#?}\npython {theirs_layout:#?}");
        assert_eq!(ours_layout, theirs_layout);
        assert!(ours_layout.iter().any(|l| l.contains("lease=90.0")));
        python_release(python);
        assert!(!ours.exists() && !theirs.exists());
    }
}

/// The invariants of the generation-log parsers on any input, for the property tests and
/// the fuzz targets: each function parses its input and panics if a parse breaks one.
#[cfg(any(test, feature = "fault-injection"))]
pub(crate) mod check {
    use super::*;

    /// `data` as a `gen/<N>` record, as a `gen/HEAD` record and as a `gen/` entry name.
    pub(crate) fn generation(data: &[u8]) {
        snapshot(data);
        let (epoch, record) = split_head(data);
        assert_eq!([epoch, record].concat(), data);
        assert!(epoch.ends_with(b"\n") || record.is_empty());
        snapshot(record);
        if let Some(generation) = std::str::from_utf8(data)
            .ok()
            .and_then(|name| parse_generation_name(OsStr::new(name)))
        {
            assert_eq!(generation_name(generation).as_bytes(), data);
        }
    }

    /// What any parse of `data` may hold: only tokens, taken from `data`, and a snapshot
    /// that writes and reads back as itself.
    fn snapshot(data: &[u8]) {
        let Some(s) = parse_snapshot(data) else {
            return;
        };
        assert!(data.len() <= MAX_RECORD_SIZE);
        let owned: usize = s.members().iter().map(|m| m.len()).sum();
        assert!(owned <= data.len());
        for member in s.members() {
            assert!(is_token(member.as_bytes()));
        }
        assert_eq!(parse_snapshot(&s.encode()), Some(s));
    }

    /// `data` as a `holders/<token>` record: a lease only as Python's `repr` spells it.
    pub(crate) fn holder(data: &[u8]) {
        if let Some(lease) = holder_lease(Some(data)) {
            assert!(lease.is_finite() && lease > 0.0);
            let line = format!("lease={}", py_float_repr(lease));
            assert!(data.windows(line.len()).any(|w| w == line.as_bytes()));
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn token() -> impl Strategy<Value = String> {
        "[0-9a-f]{32}"
    }

    fn snapshot() -> impl Strategy<Value = Snapshot> {
        (
            any::<u64>(),
            proptest::option::of(token()),
            proptest::collection::btree_set(token(), 0..8),
        )
            .prop_map(|(generation, writer, readers)| Snapshot {
                generation,
                writer,
                readers,
            })
    }

    /// Text made of snapshot-like lines, so the parser gets past its first checks.
    fn snapshot_like() -> impl Strategy<Value = Vec<u8>> {
        let line = prop_oneof![
            (
                proptest::sample::select(vec!["generation", "writer", "reader", "lease", ""]),
                prop_oneof![
                    "[0-9]{0,22}",
                    "[0-9a-f]{31,33}",
                    Just("0123456789abcdef0123456789abcdef".to_owned()),
                    "[ -~]{0,6}",
                ],
            )
                .prop_map(|(k, v)| format!("{k}={v}")),
            "[ -~]{0,10}",
        ];
        (
            prop_oneof![Just("filelock-rw/1"), Just("filelock-rw/2"), Just("")],
            proptest::collection::vec(line, 0..8),
            prop_oneof![Just("\n"), Just(""), Just("\r\n")],
        )
            .prop_map(|(first, lines, end)| {
                let mut text = first.to_owned();
                for line in lines {
                    text.push('\n');
                    text.push_str(&line);
                }
                text.push_str(end);
                text.into_bytes()
            })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            check::generation(&data);
            check::holder(&data);
        }

        #[test]
        fn snapshot_like_text_never_panics(data in snapshot_like()) {
            check::generation(&data);
        }

        #[test]
        fn snapshots_we_write_parse_back(s in snapshot()) {
            prop_assert_eq!(parse_snapshot(&s.encode()), Some(s));
        }

        #[test]
        fn head_records_we_write_split_back(epoch in token(), s in snapshot()) {
            let epoch_line = format!("{epoch}\n").into_bytes();
            let head = [epoch_line.clone(), s.encode()].concat();
            let (line, record) = split_head(&head);
            prop_assert_eq!(line, &epoch_line[..]);
            prop_assert_eq!(parse_snapshot(record), Some(s));
        }

        #[test]
        fn records_over_the_cap_are_refused(s in snapshot(), over in 1..64usize, fill in any::<u8>()) {
            let mut data = s.encode();
            data.resize(MAX_RECORD_SIZE + over, fill);
            prop_assert_eq!(parse_snapshot(&data), None);
        }

        #[test]
        fn holder_records_we_write_carry_their_lease(
            token in token(),
            nonce in token(),
            nanos in 1..u64::MAX,
        ) {
            let lease = Duration::from_nanos(nanos);
            let record = encode_holder(&token, &nonce, lease);
            prop_assert_eq!(holder_lease(Some(&record)), Some(lease.as_secs_f64()));
        }

        #[test]
        fn any_positive_lease_python_writes_reads_back(bits in 1u64..0x7ff0_0000_0000_0000) {
            let lease = f64::from_bits(bits);
            let record = format!("{PROTOCOL}\nlease={}\n", py_float_repr(lease));
            prop_assert_eq!(holder_lease(Some(record.as_bytes())), Some(lease));
        }

        #[test]
        fn generation_names_parse_back(generation in any::<u64>(), other in "[0-9]{19,21}|\\PC{0,24}") {
            let name = generation_name(generation);
            prop_assert_eq!(parse_generation_name(OsStr::new(&name)), Some(generation));
            check::generation(other.as_bytes());
        }
    }

    #[test]
    fn a_valid_snapshot_is_read_whole_up_to_the_cap_and_refused_past_it() {
        let mut s = Snapshot::empty(1);
        // Each `reader=<token>\n` line is 40 bytes.
        let header = s.encode().len();
        let fit = (MAX_RECORD_SIZE - header) / 40;
        s.readers = (0..fit as u128).map(|n| format!("{n:032x}")).collect();
        let n = fit as u128;
        let data = s.encode();
        assert_eq!(data.len(), header + 40 * fit);
        assert!(data.len() > MAX_RECORD_SIZE - 40);
        assert_eq!(parse_snapshot(&data), Some(s.clone()));
        s.readers.insert(format!("{n:032x}"));
        assert!(s.encode().len() > MAX_RECORD_SIZE);
        assert_eq!(parse_snapshot(&s.encode()), None);
    }
}
