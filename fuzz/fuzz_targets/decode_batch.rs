//! Arbitrary bytes decoded as a record batch, every record walked: must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    log_engine::fuzzing::decode_batch(data);
});
