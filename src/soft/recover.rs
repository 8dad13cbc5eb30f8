//! Recovering a live marker that a breaker killed in the middle of its exchange left
//! stranded under its break name.
//!
//! A breaker exchanges its own marker with the one it judged stale, checks that what it took
//! is the judged file, and if not (the holder was replaced meanwhile by a live one) swaps it
//! straight back. If the breaker dies between the two exchanges, the path names the dead
//! breaker's marker and the live holder's marker waits at `<lock>.break.<breaker pid>.<hex>`.
//! A contender that finds the dead breaker's marker must then put the live one back rather
//! than take the lock over: the live holder still believes it holds the lock.
//!
//! As in Python filelock, a recoverer first renames the stranded record to a name of its own,
//! `<lock>.restore.<pid>.<hex>`, so only one contender works on it; a record whose recoverer
//! died is claimable again.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::soft::identity::{host_name, own_pid, owner_is_stale};
use crate::soft::marker::{self, side_name};
use crate::soft::record::parse_pid;
use crate::sys;
use crate::sys::marker as fs;

/// Names of restore claims some thread of this process is working on.
static IN_PROGRESS: Mutex<Option<HashSet<OsString>>> = Mutex::new(None);

/// Looks for markers that `breaker` stranded and puts a live one back. `true`: the lock
/// counts as held (a live marker was put back, or another recoverer is at work, or the
/// directory cannot be read); `false`: nothing live is stranded, the judged marker may be
/// taken over.
pub(crate) fn restore_stranded(
    path: &Path,
    breaker: u32,
    judged: &fs::Meta,
    is_live: &dyn Fn(Option<&str>, u32) -> bool,
) -> bool {
    let Some(candidates) = candidates(path, breaker) else {
        return true;
    };
    candidates
        .into_iter()
        .any(|(name, adopt)| recover(path, &name, breaker, judged, adopt, is_live))
}

/// The stranded records of `breaker` and the restore claims of dead recoverers (and our
/// own abandoned ones), sorted; `None` when a live recoverer is at work or the directory
/// cannot be listed.
fn candidates(path: &Path, breaker: u32) -> Option<Vec<(PathBuf, bool)>> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let base = path.file_name()?.to_str()?;
    let stranded = format!("{base}.break.{breaker}.");
    let claimed = format!("{base}.restore.");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if !kind.is_file() {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.strip_prefix(&stranded).is_some_and(is_hex_token) {
            found.push((dir.join(name), false));
        } else if let Some((pid, token)) =
            name.strip_prefix(&claimed).and_then(|r| r.split_once('.'))
        {
            let Some(recoverer) = parse_pid(pid).filter(|_| is_hex_token(token)) else {
                continue;
            };
            let ours = recoverer == own_pid();
            if !ours && !owner_is_stale(recoverer, &host_name(), None) {
                return None;
            }
            found.push((dir.join(name), ours));
        }
    }
    found.sort();
    Some(found)
}

fn is_hex_token(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn recover(
    path: &Path,
    name: &Path,
    breaker: u32,
    judged: &fs::Meta,
    adopt: bool,
    is_live: &dyn Fn(Option<&str>, u32) -> bool,
) -> bool {
    let own = if adopt {
        name.to_path_buf()
    } else {
        side_name(path, "restore")
    };
    let key = own.file_name().map(OsString::from).unwrap_or_default();
    {
        let mut claims = IN_PROGRESS.lock().unwrap_or_else(PoisonError::into_inner);
        if !claims.get_or_insert_with(HashSet::new).insert(key.clone()) {
            return true;
        }
    }
    let held = (|| {
        if !adopt && std::fs::rename(name, &own).is_err() {
            // A peer won the rename and now holds the record.
            return true;
        }
        restore(path, &own, breaker, judged, is_live)
    })();
    let mut claims = IN_PROGRESS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(claims) = claims.as_mut() {
        claims.remove(&key);
    }
    held
}

fn restore(
    path: &Path,
    own: &Path,
    breaker: u32,
    judged: &fs::Meta,
    is_live: &dyn Fn(Option<&str>, u32) -> bool,
) -> bool {
    let Ok((content, _)) = marker::read(own) else {
        give_back(path, own, breaker);
        return true;
    };
    if !is_live(content.as_deref(), breaker) {
        let _ = std::fs::remove_file(own);
        return false;
    }
    // Put the live marker back, but only over the judged (dead breaker's) marker.
    let unchanged = fs::lstat(path).is_ok_and(|now| fs::judged_key(&now) == fs::judged_key(judged));
    if unchanged && matches!(sys::exchange(own, path), Ok(true)) {
        if fs::lstat(own).is_ok_and(|m| fs::id(&m) == fs::id(judged)) {
            let _ = std::fs::remove_file(own);
            return true;
        }
        // A peer replaced the path after our check: swap its marker straight back.
        let _ = sys::exchange(own, path);
    }
    give_back(path, own, breaker);
    true
}

/// Returns a claim we cannot finish to a stranded name, for the next poll to retry.
fn give_back(path: &Path, own: &Path, breaker: u32) {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".break.{breaker}.{}", marker::random_hex()));
    let _ = std::fs::rename(own, PathBuf::from(name));
}
