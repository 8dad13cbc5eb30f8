//! What the fuzz targets share: an allocator that records the peak of live heap bytes, so a
//! target can check that parsing one input allocates no more than a bound linear in the
//! input's length (and nothing at all for an input a reader refuses by its size alone).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The system allocator, counting.
struct Counting;

/// Heap bytes allocated and not yet freed.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The most `LIVE` reached since [`heap_peak`] last reset it.
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Relaxed) + bytes;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call forwards to `System` with the caller's arguments unchanged; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `parse` and returns the most heap it held at once beyond what was live before.
pub fn heap_peak(parse: impl FnOnce()) -> usize {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    parse();
    PEAK.load(Relaxed).saturating_sub(base)
}

/// Runs `parse` on `data` and panics if it held more than `per_byte` heap bytes per input
/// byte plus `fixed` at once, or any heap at all when `data` is over `cap`, which its reader
/// refuses by size alone.
pub fn check_bounded(
    data: &[u8],
    cap: Option<usize>,
    per_byte: usize,
    fixed: usize,
    parse: fn(&[u8]),
) {
    let used = heap_peak(|| parse(data));
    if cap.is_some_and(|cap| data.len() > cap) {
        assert_eq!(
            used,
            0,
            "{used} heap bytes for a {}-byte input over the cap",
            data.len()
        );
    }
    let limit = per_byte * data.len() + fixed;
    assert!(
        used <= limit,
        "{used} heap bytes for a {}-byte input (limit {limit})",
        data.len()
    );
}
