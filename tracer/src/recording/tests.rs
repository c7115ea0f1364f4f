//! The recording format round-trips, and damaged files are reported and never crash the
//! reader.

use std::io::Cursor;

use super::{native_byte_order, Frame, Header, Reader, RecordError, Trailer, Writer, SOURCE_HOOKS};
use crate::{
    machine::ClockSample,
    model::{LinkChange, LossCounters},
    pipeline_bench::topology,
    state::{firewall::parse_nft, NodeState},
    topology::{Iface, IfaceKind, Link},
};

pub(crate) fn header() -> Header {
    Header {
        tracer_version: "0.1.0".into(),
        machine: Default::default(),
        host: "test".into(),
        kernel: "6.18".into(),
        started_unix_ms: 1,
        byte_order: native_byte_order().into(),
        clock: "shared-kernel".into(),
        filter: "none".into(),
        sample: 1,
        hooks: true,
        snaplen: 0,
        topology: topology(),
    }
}

pub(crate) fn loss() -> LossCounters {
    LossCounters {
        ringbuf_full: 7,
        filtered: 3,
        ..LossCounters::default()
    }
}

const CLOCK: ClockSample = ClockSample {
    mono_ns: 43,
    realtime_ns: 1_796_000_000_000_000_000,
    tai_ns: 1_796_000_037_000_000_000,
    err_ns: 120,
};

fn link_change() -> LinkChange {
    LinkChange::Added {
        iface: Iface {
            ifindex: 77,
            name: "cali77".into(),
            kind: IfaceKind::PodVeth,
        },
        link: Link {
            ifindex: 77,
            name: "cali77".into(),
            mtu: 1450,
        },
    }
}

fn node_state() -> NodeState {
    let mut s = NodeState {
        node: "node2".into(),
        ..NodeState::default()
    };
    s.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
    s.firewall.chains = parse_nft(
        "table ip t {\n chain c {\n  type filter hook input priority 0; policy accept;\n  udp dport 4789 counter packets 1 bytes 2 drop # handle 3\n }\n}\n",
    );
    s
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
    w.clock(&CLOCK).expect("clock");
    w.link(1, &link_change()).expect("link");
    w.state(1, &node_state()).expect("state");
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
        Frame::Clock(CLOCK),
        Frame::Link {
            node: 1,
            change: link_change(),
        },
        Frame::State {
            node: 1,
            state: Box::new(node_state()),
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
                assert!(n < 10, "cut {cut}: all frames read from a cut file");
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
            Frame::Clock(_) => 28,
            Frame::Link { change, .. } => serde_json::to_vec(&change).expect("json").len(),
            Frame::State { state, .. } => serde_json::to_vec(&state).expect("json").len(),
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
    let mut v9 = small_file();
    v9[8] = 9;
    assert!(err(v9).contains("version 9"));
    // Version 1 (no machine identity, no clock frames) is still read.
    let mut v1 = small_file();
    v1[8] = 1;
    assert!(Reader::new(Cursor::new(v1)).is_ok());
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
