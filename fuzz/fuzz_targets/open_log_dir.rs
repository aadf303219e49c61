//! Arbitrary bytes laid out as a log directory (see `log_engine::fuzzing::open_log_dir`
//! for the layout), opened, recovered and read to the end: must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    log_engine::fuzzing::open_log_dir(data);
});
