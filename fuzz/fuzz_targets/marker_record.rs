//! A soft-lock marker's content (protocol 1 and 2 records); content over the cap is refused
//! before anything is parsed or allocated.
#![no_main]

use async_filelock::__fuzz;
use async_filelock_fuzz::check_bounded;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_bounded(
        data,
        Some(__fuzz::MAX_RECORD),
        128,
        4096,
        __fuzz::marker_record,
    );
});
