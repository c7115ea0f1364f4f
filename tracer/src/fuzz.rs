//! Entry points for coverage-guided fuzzing (`fuzz/` at the repository's root, cargo-fuzz):
//! recordings and streams come from other machines, so the reader and the merge must survive
//! any bytes, without a panic and without allocating beyond their bounds. Not part of the
//! tool's interface.

use std::io;

use crate::{
    latency::ClockModel,
    merge::{replay, Input, ReplayOptions},
    pipeline::PrintArgs,
    recording::Reader,
    render::Output,
};

/// Reads `data` as one recording, frame by frame, to its end or its first error.
pub fn read_recording(data: &[u8]) {
    let Ok(mut r) = Reader::new(data) else {
        return;
    };
    while let Ok(Some(_)) = r.next_frame() {}
}

/// Merges the recordings packed in `data`: a count byte (1 to 4 recordings), then for each
/// but the last a little-endian u16 length and that many bytes, the last taking the rest.
pub fn merge(data: &[u8]) {
    let Some((&count, mut rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 4) + 1;
    let mut inputs = Vec::new();
    for i in 0..count {
        let chunk = if i + 1 == count {
            std::mem::take(&mut rest)
        } else {
            let Some((len, tail)) = rest.split_first_chunk::<2>() else {
                break;
            };
            let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
            let (chunk, tail) = tail.split_at(len);
            rest = tail;
            chunk
        };
        inputs.push(Input::Bytes(format!("input{i}"), chunk.to_vec()));
    }
    let print = PrintArgs {
        count: None,
        output: Output::Json,
        linger_ms: 300,
    };
    let cfg = print.pipeline_config(ClockModel::shared_kernel());
    let _ = replay(inputs, cfg, io::sink(), &ReplayOptions::default());
}
