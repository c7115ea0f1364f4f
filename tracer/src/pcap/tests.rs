//! `tracer pcap` from synthetic recordings with packet bytes, read back with pcap-file's own
//! reader: one interface block per (node, interface, link type) named `node/ifname`,
//! nanosecond times on the wall clock, the bytes as recorded, a comment and the JSON per
//! packet; the drop's reason only on the drop; a recording without bytes, a foreign file and
//! a truncated recording.

use std::{borrow::Cow, collections::BTreeSet};

use pcap_file::{
    pcapng::{
        blocks::{
            enhanced_packet::EnhancedPacketOption,
            interface_description::InterfaceDescriptionOption, opt_common::CommonOption,
        },
        Block, PcapNgReader,
    },
    DataLink,
};
use tracer_common::{
    snap_record_len, DropBytes, Event as WireEvent, EventBody, EventHeader, HopBytes, HopEvent,
    Snap, EVENT_DROP_BYTES, EVENT_HOP_BYTES, LINK_ETHERNET, LINK_IPV4, SNAPLEN_MAX,
};

use super::{convert, pipeline_config, writer::TRACER_PEN};
use crate::{
    event::{decode, DecodeError, Event},
    latency::ClockModel,
    machine::ClockSample,
    merge::{Input, ReplayOptions},
    model::LinkType,
    pipeline_bench::packet_records,
    recording::{self, Trailer, Writer, SOURCE_HOOKS},
};

const MS: u64 = 1_000_000;
/// CLOCK_REALTIME − CLOCK_MONOTONIC of the synthetic recording.
const WALL_MINUS_MONO: u64 = 1_796_000_000_000_000_000;

/// Packet `n`'s bytes at a hop: a recognisable pattern of `len` bytes.
fn bytes_of(n: u64, hop: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (n as usize * 31 + hop * 7 + i) as u8)
        .collect()
}

/// The wire record of `body` with `data` as its snap, cut where its header says.
fn snap_record<T: EventBody>(
    header: EventHeader,
    body: T,
    snap: impl Fn(&mut T) -> &mut Snap,
    link: u8,
    data: &[u8],
    orig_len: u32,
) -> Vec<u8> {
    let mut ev = WireEvent { header, body };
    let s = snap(&mut ev.body);
    s.cap_len = data.len() as u16;
    s.link = link;
    s.orig_len = orig_len;
    s.data[..data.len()].copy_from_slice(data);
    ev.header.kind = T::KIND;
    ev.header.len = snap_record_len::<T>(data.len()) as u16;
    // SAFETY: the wire events are #[repr(C)] plain data without implicit padding.
    let all = unsafe {
        std::slice::from_raw_parts(
            (&ev as *const WireEvent<T>).cast::<u8>(),
            size_of::<WireEvent<T>>(),
        )
    };
    all[..ev.header.len as usize].to_vec()
}

/// The six hops of packet `n` (`packet_records`) with `snaplen` bytes each.
fn hops_with_bytes(n: u64, t0: u64, snaplen: usize) -> Vec<Vec<u8>> {
    let mut recs = Vec::new();
    packet_records(n, t0, &mut recs);
    recs.iter()
        .enumerate()
        .map(|(i, r)| {
            // SAFETY: HopEvent is #[repr(C)] plain data; any bit pattern is valid.
            let hop: HopEvent = unsafe { std::ptr::read_unaligned(r.as_ptr().cast()) };
            let body = HopBytes {
                hop: hop.body,
                snap: Snap::default(),
            };
            snap_record(
                hop.header,
                body,
                |b| &mut b.snap,
                LINK_ETHERNET,
                &bytes_of(n, i, snaplen),
                1464,
            )
        })
        .collect()
}

/// A firewall drop of packet `n` on node 2's pod veth, with `snaplen` bytes from the network
/// header.
fn drop_with_bytes(n: u64, ts: u64, snaplen: usize) -> Vec<u8> {
    let mut recs = Vec::new();
    packet_records(n, ts, &mut recs);
    // SAFETY: as above.
    let hop: HopEvent = unsafe { std::ptr::read_unaligned(recs[5].as_ptr().cast()) };
    let header = EventHeader {
        ts_ns: ts + 10_000,
        ..hop.header
    };
    let body = DropBytes {
        drop: tracer_common::Drop {
            location: 0xffff_ffff_8123_4567,
            reason: 5,
            skb_len: 1414,
            pkt: hop.body.pkt,
            ..tracer_common::Drop::default()
        },
        snap: Snap::default(),
    };
    snap_record(
        header,
        body,
        |b| &mut b.snap,
        LINK_IPV4,
        &bytes_of(n, 99, snaplen),
        1400,
    )
}

/// A recording (`--snaplen 64`) of `packets` TCP packets over VXLAN with bytes at every hop,
/// packet 1 dropped by a firewall on node 2 after its last hop.
fn recording(packets: u64) -> Vec<u8> {
    let mut header = recording::tests::header();
    header.snaplen = 64;
    let mut w = Writer::new(Vec::new(), &header).expect("header");
    w.clock(&ClockSample {
        mono_ns: 900 * MS,
        realtime_ns: 900 * MS + WALL_MINUS_MONO,
        tai_ns: 0,
        err_ns: 0,
    })
    .expect("clock");
    w.reason(5, "NETFILTER_DROP").expect("reason");
    w.location(0xffff_ffff_8123_4567, "nft_do_chain+0x46f")
        .expect("location");
    for p in 0..packets {
        let t0 = 1_000 * MS + p * MS;
        for r in hops_with_bytes(p, t0, 64) {
            let node = u16::from(r[16..20] == 4_026_532_002u32.to_ne_bytes());
            w.record(node, &r).expect("record");
        }
        if p == 1 {
            w.record(SOURCE_HOOKS, &drop_with_bytes(p, t0, 40))
                .expect("drop");
        }
        w.tick(t0 + MS).expect("tick");
    }
    w.finish(&Trailer::default()).expect("finish")
}

/// The pcap-ng file of `bytes`, and the conversion's report.
fn convert_bytes(bytes: Vec<u8>) -> anyhow::Result<(Vec<u8>, super::Converted)> {
    let cfg = pipeline_config(ClockModel::shared_kernel(), None, 300);
    convert(
        vec![Input::Bytes("node.trec".into(), bytes)],
        cfg,
        ReplayOptions::default(),
        Vec::new(),
        "out.pcapng",
    )
}

/// One packet read back.
#[derive(Debug)]
struct Read {
    iface: String,
    link: DataLink,
    ts_ns: u128,
    orig_len: u32,
    data: Vec<u8>,
    comment: String,
    json: serde_json::Value,
}

fn read_back(file: &[u8]) -> Vec<Read> {
    let mut r = PcapNgReader::new(file).expect("a pcap-ng file");
    let mut out = Vec::new();
    while let Some(block) = r.next_block() {
        let (block, state) = block.expect("a block");
        let Block::EnhancedPacket(p) = block else {
            continue;
        };
        let idb = &state.interfaces()[p.interface_id as usize];
        let name = idb
            .options
            .iter()
            .find_map(|o| match o {
                InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                _ => None,
            })
            .expect("if_name");
        assert!(
            idb.options
                .iter()
                .any(|o| matches!(o, InterfaceDescriptionOption::IfTsResol(r) if r.to_u8() == 9)),
            "nanosecond timestamps"
        );
        let mut comment = String::new();
        let mut json = serde_json::Value::Null;
        for o in &p.options {
            match o {
                EnhancedPacketOption::Common(CommonOption::Comment(c)) => comment = c.to_string(),
                EnhancedPacketOption::Common(CommonOption::CustomUtf8Copiable(c)) => {
                    assert_eq!(c.pen, TRACER_PEN);
                    json = serde_json::from_str(&c.value).expect("JSON");
                }
                _ => {}
            }
        }
        out.push(Read {
            iface: name,
            link: idb.linktype,
            ts_ns: p.timestamp.as_nanos(),
            orig_len: p.original_len,
            data: match &p.data {
                Cow::Borrowed(d) => d.to_vec(),
                Cow::Owned(d) => d.clone(),
            },
            comment,
            json,
        });
    }
    out
}

#[test]
fn every_hop_and_the_drop_are_packets_with_their_bytes_names_times_and_comments() {
    let (file, c) = convert_bytes(recording(3)).expect("converted");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.traces, 3);
    let pkts = read_back(&file);
    // 3 packets x 6 hops, and the drop.
    assert_eq!((pkts.len(), c.written.packets), (19, 19));
    let names: BTreeSet<(&str, String)> = pkts
        .iter()
        .map(|p| (p.iface.as_str(), format!("{:?}", p.link)))
        .collect();
    let expected: BTreeSet<(&str, String)> = [
        ("node1/cali0123456789a", "ETHERNET".to_string()),
        ("node1/vxlan.calico", "ETHERNET".to_string()),
        ("node1/eth0", "ETHERNET".to_string()),
        ("node2/eth0", "ETHERNET".to_string()),
        ("node2/vxlan.calico", "ETHERNET".to_string()),
        ("node2/cali0123456789a", "ETHERNET".to_string()),
        // The drop hook's bytes start at the network header: a block of its own.
        ("node2/cali0123456789a", "RAW".to_string()),
    ]
    .into();
    assert_eq!(names, expected);
    assert_eq!(c.written.interfaces, 7);
    // Time order, on the wall clock to the nanosecond.
    let first = &pkts[0];
    assert_eq!(first.ts_ns, u128::from(1_000 * MS + WALL_MINUS_MONO));
    assert!(pkts.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
    assert_eq!(first.data, bytes_of(0, 0, 64));
    assert_eq!(first.orig_len, 1464);
    assert!(
        first.comment.starts_with("tracer trace 1 hop 1/6: node1/cali0123456789a ingress: TCP 10.244.0.1:40000 > 10.244.4.1:5201"),
        "{}",
        first.comment
    );
    assert!(first.comment.ends_with("; delivered"), "{}", first.comment);
    assert_eq!(first.json["trace"], 1);
    assert_eq!(first.json["hop"]["ifname"], "cali0123456789a");
    assert_eq!(first.json["hop"]["dir"], "ingress");
    assert_eq!(first.json["outcome"], "delivered");
    // The drop: its reason, location and verdict in its comment, and only there.
    let drops: Vec<&Read> = pkts
        .iter()
        .filter(|p| p.comment.contains("NETFILTER_DROP"))
        .collect();
    assert_eq!(
        drops.len(),
        1,
        "{:#?}",
        pkts.iter().map(|p| &p.comment).collect::<Vec<_>>()
    );
    let d = drops[0];
    assert!(d.comment.starts_with("tracer trace 2 DROP on node2/cali0123456789a: NETFILTER_DROP in nft_do_chain+0x46f (location 0xffffffff81234567)"), "{}", d.comment);
    assert!(d.comment.contains("verdict firewall-drop"), "{}", d.comment);
    assert_eq!((d.link, d.orig_len), (DataLink::RAW, 1400));
    assert_eq!(d.data, bytes_of(1, 99, 40));
    assert_eq!(d.json["drop"]["reason"], "NETFILTER_DROP");
    assert_eq!(d.json["verdict"], "firewall-drop");
    // The dropped packet's hops say so, without the reason.
    let hops2: Vec<&Read> = pkts
        .iter()
        .filter(|p| p.comment.starts_with("tracer trace 2 hop"))
        .collect();
    assert_eq!(hops2.len(), 6);
    assert!(
        hops2.iter().all(|p| p
            .comment
            .ends_with("dropped on node2/cali0123456789a, verdict firewall-drop")),
        "{}",
        hops2[0].comment
    );
}

#[test]
fn a_recording_without_bytes_is_a_one_line_error() {
    let mut w = Writer::new(Vec::new(), &recording::tests::header()).expect("header");
    let mut recs = Vec::new();
    packet_records(0, 1_000 * MS, &mut recs);
    for r in &recs {
        let node = u16::from(r[16..20] == 4_026_532_002u32.to_ne_bytes());
        w.record(node, r).expect("record");
    }
    w.tick(1_010 * MS).expect("tick");
    let bytes = w.finish(&Trailer::default()).expect("finish");
    let e = convert_bytes(bytes).expect_err("no bytes").to_string();
    assert!(
        e.starts_with("node.trec: recording has no packet bytes (recorded without --snaplen"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn a_file_that_is_not_a_recording_is_a_one_line_error() {
    let e = convert_bytes(b"GET / HTTP/1.1\r\n\r\n and more".to_vec())
        .expect_err("not a recording")
        .to_string();
    assert!(e.contains("not a tracer recording"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn a_truncated_recording_writes_the_rest_and_says_what_is_missing() {
    let mut bytes = recording(40);
    let whole = bytes.len();
    bytes.truncate(whole / 2 + 5);
    let (file, c) = convert_bytes(bytes).expect("converted");
    let w = c.warnings.join("\n");
    assert!(
        w.contains("node.trec: the recording ends in the middle of a frame at byte"),
        "{w}"
    );
    assert!(
        w.contains("the packets before that are in out.pcapng, those after are missing"),
        "{w}"
    );
    let pkts = read_back(&file);
    assert!((60..180).contains(&pkts.len()), "{}", pkts.len());
    // The drop of packet 2 came before the cut.
    assert_eq!(
        pkts.iter()
            .filter(|p| p.comment.contains("NETFILTER_DROP"))
            .count(),
        1
    );
}

#[test]
fn records_with_bytes_decode_and_bad_ones_are_errors() {
    let recs = hops_with_bytes(7, 5_000, 13);
    // 104 bytes before the data, 13 bytes rounded up to 16.
    assert_eq!(recs[0].len(), 104 + 16);
    let Ok(Event::Hop(h)) = decode(&recs[0]) else {
        panic!("a hop")
    };
    let snap = h.snap.expect("bytes");
    assert_eq!((snap.link, snap.orig_len), (LinkType::Ethernet, 1464));
    assert_eq!(&*snap.data, &bytes_of(7, 0, 13)[..]);
    let Ok(Event::Drop(d)) = decode(&drop_with_bytes(7, 5_000, SNAPLEN_MAX)) else {
        panic!("a drop")
    };
    assert_eq!(d.snap.expect("bytes").link, LinkType::Ipv4);
    // A record cut before its declared bytes end.
    let mut short = recs[0].clone();
    short.truncate(104 + 8);
    short[2..4].copy_from_slice(&(112u16).to_ne_bytes());
    assert_eq!(
        decode(&short),
        Err(DecodeError::BadSnap {
            kind: EVENT_HOP_BYTES,
            got: 112,
            cap_len: 13
        })
    );
    // An unknown link type.
    let mut bad = drop_with_bytes(7, 5_000, 8);
    let link_at = size_of::<EventHeader>() + size_of::<tracer_common::Drop>() + 2;
    bad[link_at] = 9;
    assert_eq!(decode(&bad), Err(DecodeError::BadLink(9)));
    assert_eq!(bad[..2], EVENT_DROP_BYTES.to_ne_bytes());
}
