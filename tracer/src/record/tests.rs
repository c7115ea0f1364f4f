//! The recording format round-trips, damaged files are reported and never crash the reader,
//! and a replay prints byte for byte what the live pipeline printed for the same records.

use std::io::Cursor;

use tracer_common::{Drop, DropEvent, EventHeader, HopEvent, Ipv4Packet, EVENT_DROP};

use super::{
    format::{
        native_byte_order, Frame, Header, Reader, RecordError, Trailer, Writer, SOURCE_HOOKS,
    },
    replay_into, ReplayEnd,
};
use crate::{
    correlate::CorrelateConfig,
    latency::ClockModel,
    model::LossCounters,
    names::DropNames,
    pipeline::{Pipeline, PipelineConfig},
    pipeline_bench::{packet_records, topology},
    render::Output,
};

fn header() -> Header {
    Header {
        tracer_version: "0.1.0".into(),
        host: "test".into(),
        kernel: "6.18".into(),
        started_unix_ms: 1,
        byte_order: native_byte_order().into(),
        clock: "shared-kernel".into(),
        filter: "none".into(),
        sample: 1,
        hooks: true,
        topology: topology(),
    }
}

fn loss() -> LossCounters {
    LossCounters {
        ringbuf_full: 7,
        filtered: 3,
        ..LossCounters::default()
    }
}

/// A small recording with one frame of every kind.
fn small_file() -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), &header()).expect("header");
    w.record(0, &[1, 2, 3]).expect("record");
    w.reason(2, "NOT_SPECIFIED").expect("reason");
    w.location(0xffff_ffff_8100_0000, "vxlan_xmit+0xdab")
        .expect("location");
    w.record(SOURCE_HOOKS, &[4, 5]).expect("record");
    w.tick(42).expect("tick");
    w.loss(40, 42).expect("loss");
    w.finish(&Trailer {
        loss: loss(),
        records: 2,
        ended_unix_ms: 2,
    })
    .expect("finish")
}

#[test]
fn frames_round_trip() {
    let bytes = small_file();
    let w = Writer::new(Vec::new(), &header()).expect("header");
    let header_len = w.bytes();
    let mut w = w;
    w.record(0, &[1, 2, 3]).expect("record");
    assert_eq!(w.bytes(), header_len + 8 + 3);
    assert_eq!(
        w.finish(&Trailer::default()).expect("finish")[..header_len as usize],
        bytes[..header_len as usize]
    );
    let mut r = Reader::new(Cursor::new(bytes)).expect("reader");
    assert_eq!(r.header, header());
    let mut frames = Vec::new();
    while let Some(f) = r.next_frame().expect("frame") {
        frames.push(format!("{f:?}"));
    }
    let want = [
        Frame::Record {
            source: 0,
            data: &[1, 2, 3],
        },
        Frame::Reason {
            value: 2,
            name: "NOT_SPECIFIED".into(),
        },
        Frame::Location {
            addr: 0xffff_ffff_8100_0000,
            symbol: "vxlan_xmit+0xdab".into(),
        },
        Frame::Record {
            source: SOURCE_HOOKS,
            data: &[4, 5],
        },
        Frame::Tick { now_ns: 42 },
        Frame::Loss {
            from_ns: 40,
            to_ns: 42,
        },
        Frame::End(Trailer {
            loss: loss(),
            records: 2,
            ended_unix_ms: 2,
        }),
    ]
    .map(|f| format!("{f:?}"));
    assert_eq!(frames, want);
}

#[test]
fn every_cut_is_reported_and_never_panics() {
    let bytes = small_file();
    let header_end = {
        let r = Reader::new(Cursor::new(bytes.clone())).expect("reader");
        bytes.len() - r_remaining(r)
    };
    for cut in 0..bytes.len() {
        let part = bytes[..cut].to_vec();
        match Reader::new(Cursor::new(part)) {
            Err(RecordError::BadMagic) => assert!(cut < 16, "cut {cut}: bad magic"),
            Err(RecordError::Truncated { .. }) | Err(RecordError::BadHeader(_)) => {
                assert!(cut < header_end, "cut {cut}: header")
            }
            Err(e) => panic!("cut {cut}: unexpected {e}"),
            Ok(mut r) => {
                assert!(cut >= header_end, "cut {cut}: header accepted");
                let mut n = 0;
                let end = loop {
                    match r.next_frame() {
                        Ok(Some(_)) => n += 1,
                        Ok(None) => break None,
                        Err(e) => break Some(e),
                    }
                };
                assert!(n < 7, "cut {cut}: all frames read from a cut file");
                match end {
                    None | Some(RecordError::Truncated { .. }) => {}
                    Some(e) => panic!("cut {cut}: unexpected {e}"),
                }
            }
        }
    }
}

/// Bytes left unread after the header.
fn r_remaining(r: Reader<Cursor<Vec<u8>>>) -> usize {
    let mut r = r;
    let mut frames_len = 0;
    while let Ok(Some(f)) = r.next_frame() {
        frames_len += 8 + match f {
            Frame::Record { data, .. } => data.len(),
            Frame::Reason { name, .. } => 4 + name.len(),
            Frame::Location { symbol, .. } => 8 + symbol.len(),
            Frame::Tick { .. } => 8,
            Frame::Loss { .. } => 16,
            Frame::End(t) => serde_json::to_vec(&t).expect("json").len(),
        };
    }
    frames_len
}

#[test]
fn bad_files_are_clear_errors() {
    let err = |bytes: Vec<u8>| match Reader::new(Cursor::new(bytes)) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted"),
    };
    assert!(err(b"PK\x03\x04 a zip file, not ours".to_vec()).contains("not a tracer recording"));
    assert!(err(Vec::new()).contains("not a tracer recording"));
    let mut v2 = small_file();
    v2[8] = 2;
    assert!(err(v2).contains("version 2"));
    let mut garbage = small_file();
    garbage[16] = b'!';
    assert!(err(garbage).contains("header is unreadable"));
    let mut other = header();
    other.byte_order = if native_byte_order() == "little" {
        "big"
    } else {
        "little"
    }
    .into();
    let w = Writer::new(Vec::new(), &other).expect("header");
    let bytes = w.finish(&Trailer::default()).expect("finish");
    assert!(err(bytes).contains("endian"));

    // A frame length no record can have, and an unknown frame kind: corrupt, with the offset.
    let good = Writer::new(Vec::new(), &header())
        .expect("header")
        .finish(&Trailer::default())
        .expect("finish");
    let frames_at = good.len() - 8 - serde_json::to_vec(&Trailer::default()).unwrap().len();
    for (kind, len) in [(1u8, u32::MAX), (99, 0)] {
        let mut bad = good[..frames_at].to_vec();
        bad.extend([kind, 0, 0, 0]);
        bad.extend(len.to_le_bytes());
        let mut r = Reader::new(Cursor::new(bad)).expect("header is fine");
        match r.next_frame() {
            Err(RecordError::Corrupt { offset, .. }) => assert_eq!(offset, frames_at as u64),
            other => panic!("kind {kind} len {len}: {other:?}"),
        }
    }
}

struct Names;

impl DropNames for Names {
    fn reason_name(&self, value: u32) -> String {
        format!("REASON_{value}")
    }

    fn location(&self, addr: u64) -> String {
        format!("fn_{addr:x}+0x10")
    }
}

/// A drop of packet `n` (as built by `packet_records`) on node 2's pod veth.
fn drop_record(n: u64, ts: u64) -> Vec<u8> {
    let mut recs = Vec::new();
    packet_records(n, ts, &mut recs);
    // SAFETY: HopEvent is #[repr(C)] plain data; any bit pattern read back is valid.
    let hop: HopEvent = unsafe { std::ptr::read_unaligned(recs[5].as_ptr().cast()) };
    let ev = DropEvent {
        header: EventHeader {
            kind: EVENT_DROP,
            len: size_of::<DropEvent>() as u16,
            ts_ns: ts + 10_000,
            ..hop.header
        },
        body: Drop {
            location: 0xffff_ffff_8123_4567,
            reason: 77,
            skb_len: 1414,
            pkt: Ipv4Packet { ..hop.body.pkt },
            ..Drop::default()
        },
    };
    // SAFETY: DropEvent is #[repr(C)] plain data without implicit padding.
    let bytes: [u8; size_of::<DropEvent>()] = unsafe { std::mem::transmute(ev) };
    bytes.to_vec()
}

fn config(output: Output, filter: Option<&str>) -> PipelineConfig {
    PipelineConfig {
        output,
        limit: None,
        stats: true,
        quiet: false,
        collect: false,
        kernel_agg: false,
        correlate: CorrelateConfig::default(),
        clock: ClockModel::shared_kernel(),
        filter: filter.map(|f| {
            crate::filter::Filter::parse(f)
                .expect("filter")
                .compile()
                .expect("compile")
        }),
    }
}

/// Runs the same records through a live pipeline and through a recording; returns both
/// outputs.
fn live_and_replayed(output: Output, filter: Option<&str>) -> (String, String, ReplayEnd) {
    let mut live_out = Vec::new();
    let mut live = Pipeline::new(topology(), config(output, filter), &mut live_out);
    let mut w = Writer::new(Vec::new(), &header()).expect("header");
    let mut recs = Vec::new();
    for batch in 0..20u64 {
        recs.clear();
        for p in batch * 50..(batch + 1) * 50 {
            packet_records(p, 1_000_000_000 + p * 1_000_000, &mut recs);
        }
        for r in &recs {
            // Node 2's records come from its own ring buffer.
            let node = if r[16..20] == 4_026_532_002u32.to_ne_bytes() {
                1
            } else {
                0
            };
            live.node_record("node", r);
            w.record(node, r).expect("record");
        }
        if batch == 7 {
            let d = drop_record(7 * 50, 1_000_000_000 + 7 * 50 * 1_000_000);
            live.hook_record(&d, &Names);
            w.reason(77, &Names.reason_name(77)).expect("reason");
            w.location(
                0xffff_ffff_8123_4567,
                &Names.location(0xffff_ffff_8123_4567),
            )
            .expect("location");
            w.record(SOURCE_HOOKS, &d).expect("record");
        }
        let now = 1_000_000_000 + (batch + 1) * 50 * 1_000_000;
        live.tick(now).expect("tick");
        w.tick(now).expect("tick");
    }
    live.close_all().expect("close");
    live.write_stats(None).expect("stats");
    live.write_summary(loss()).expect("summary");
    let file = w
        .finish(&Trailer {
            loss: loss(),
            records: 0,
            ended_unix_ms: 0,
        })
        .expect("finish");
    let mut reader = Reader::new(Cursor::new(file)).expect("reader");
    let mut replayed = Vec::new();
    let (end, _) = replay_into(&mut reader, config(output, filter), &mut replayed).expect("replay");
    (
        String::from_utf8(live_out).expect("utf8"),
        String::from_utf8(replayed).expect("utf8"),
        end,
    )
}

#[test]
fn replay_prints_what_the_live_pipeline_printed() {
    for output in [Output::Text, Output::Json] {
        let (live, replayed, end) = live_and_replayed(output, None);
        assert!(matches!(end, ReplayEnd::Complete), "{end:?}");
        assert!(live.contains("REASON_77"), "the drop is in the live output");
        assert!(live.contains("fn_ffffffff81234567+0x10"));
        assert!(live.lines().count() > 1000, "{}", &live[..500]);
        assert_eq!(live, replayed, "{output:?}");
    }
}

#[test]
fn replay_filter_keeps_only_matching_packets() {
    let (live, replayed, _) = live_and_replayed(Output::Json, Some("port 40007"));
    assert_eq!(live, replayed);
    let traces: Vec<&str> = replayed
        .lines()
        .filter(|l| l.starts_with("{\"packet\""))
        .collect();
    assert_eq!(
        traces.len(),
        1,
        "one packet has source port 40007: {traces:?}"
    );
    assert!(traces[0].contains("40007"));
}
