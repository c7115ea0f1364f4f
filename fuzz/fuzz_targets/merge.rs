//! Any bytes as one to four recordings merged into traces: never a panic or an unbounded
//! allocation, whatever the headers, frames, clocks and records say.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tracer::fuzz::merge(data);
});
