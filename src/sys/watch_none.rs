//! Platforms without a file-change notification this crate uses: waiters poll on their
//! backoff timer alone.

use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::local::Local;

/// What a waiter waits for (see the Linux module).
#[derive(Debug, Clone, Copy)]
#[allow(dead_code)] // the paths are read where the platform can watch them
pub(crate) enum Target<'a> {
    Closed(&'a Path),
    Removed(&'a Path),
    Added(&'a Path),
}

/// A path's registration: never made here.
#[derive(Debug)]
pub(crate) enum Watch {}

/// A waiter's pending interest: nothing to wait on.
pub(crate) type Readiness = ();

/// Nothing can watch the path: the waiter relies on its timer.
pub(crate) fn watch(_target: Target<'_>, _local: &Arc<Local>) -> Option<Watch> {
    None
}

/// No events ever arrive.
pub(crate) fn poll(_readiness: &mut Readiness, _cx: &mut Context<'_>) -> Poll<()> {
    Poll::Pending
}

/// Nothing to wait for: returns at once (callers only wait when something is watched,
/// which never happens here).
pub(crate) fn wait(_until: Option<std::time::Instant>) {}
