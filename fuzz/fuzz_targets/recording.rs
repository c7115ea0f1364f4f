//! Any bytes as a recording: read frame by frame, never a panic or an unbounded allocation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tracer::fuzz::read_recording(data);
});
