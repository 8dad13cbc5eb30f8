//! A `SoftRwLock` `gen/<N>` snapshot, `gen/HEAD` record or `gen/` entry name (its 1 MiB cap
//! is past the inputs the fuzzer makes; the property tests cover it).
#![no_main]

use async_filelock::__fuzz;
use async_filelock_fuzz::check_bounded;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_bounded(data, None, 128, 4096, __fuzz::rw_generation);
});
