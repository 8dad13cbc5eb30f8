//! A `SoftRwLock` `holders/<token>` record's lease.
#![no_main]

use async_filelock::__fuzz;
use async_filelock_fuzz::check_bounded;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_bounded(data, None, 128, 4096, __fuzz::rw_holder);
});
