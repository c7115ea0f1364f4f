//! `tracer pipeline-bench`: user-space pipeline throughput on one core, measured on the real
//! [`Pipeline`] (the one `trace` and `replay` run) writing into a sink: every stage from decode
//! to latency, and with `--render text|json` the rendering of every trace as well. The input is
//! synthetic ring-buffer records of VXLAN pod-to-pod packets (six hops each, in the order the
//! kernel emits them). No root, no kernel: it measures our code only.

use std::{
    io::{self, BufWriter},
    net::Ipv4Addr,
    time::Instant,
};

use anyhow::Result;
use clap::Args;
use tracer_common::{
    Encap, EventHeader, Hop, HopEvent, Ipv4Packet, DIR_EGRESS, DIR_INGRESS, ENCAP_VXLAN, EVENT_HOP,
};

use crate::{
    latency::ClockModel,
    model::LossCounters,
    pipeline::{Pipeline, PipelineConfig, PrintArgs},
    render::Output,
    topology::{Iface, IfaceKind, Link, Node, Topology},
};

#[derive(Args, Debug)]
pub struct PipelineBenchArgs {
    /// Number of hop records to push through the pipeline.
    #[arg(long, default_value_t = 6_000_000)]
    pub events: u64,
    /// Also render every trace (to a sink), as `trace --output text|json` would.
    #[arg(long, value_enum)]
    pub render: Option<Output>,
}

const NS: [u32; 2] = [4_026_532_001, 4_026_532_002];
/// (ifindex, name, kind) on each node.
const IFACES: [(u32, &str, IfaceKind); 3] = [
    (2, "eth0", IfaceKind::Uplink),
    (3, "vxlan.calico", IfaceKind::Vxlan),
    (4, "cali0123456789a", IfaceKind::PodVeth),
];

pub(crate) fn topology() -> Topology {
    let node = |i: usize| Node {
        name: format!("node{}", i + 1),
        netns: NS[i],
        addrs: vec![Ipv4Addr::new(10, 10, 0, i as u8 + 1)],
        ifaces: IFACES
            .iter()
            .map(|&(ifindex, name, kind)| Iface {
                ifindex,
                name: name.into(),
                kind,
            })
            .collect(),
        links: IFACES
            .iter()
            .map(|&(ifindex, name, _)| Link {
                ifindex,
                name: name.into(),
                mtu: 1450,
            })
            .collect(),
        default_gw: None,
        routes: Vec::new(),
        uplink_addrs: vec![Ipv4Addr::new(10, 10, 0, i as u8 + 1)],
        pod_of: None,
    };
    Topology {
        nodes: vec![node(0), node(1)],
        pods: Vec::new(),
    }
}

/// The six records of packet `n`, starting at `t0`, 1 µs apart.
pub(crate) fn packet_records(n: u64, t0: u64, out: &mut Vec<[u8; size_of::<HopEvent>()]>) {
    let pkt = Ipv4Packet {
        saddr: [10, 244, 0, 1],
        daddr: [10, 244, 4, 1],
        sport: 40000 + (n % 1000) as u16,
        dport: 5201,
        ip_id: n as u16,
        tot_len: 1400,
        proto: 6,
        ttl: 64,
        tcp_flags: 0x10,
        tcp_seq: n as u32,
        ..Ipv4Packet::default()
    };
    let vxlan = Encap {
        kind: ENCAP_VXLAN,
        vni: 4096,
        saddr: [10, 10, 0, 1],
        daddr: [10, 10, 0, 2],
        sport: 40000,
        dport: 4789,
        ..Encap::default()
    };
    let hops = [
        (0, 4, DIR_INGRESS, false),
        (0, 3, DIR_EGRESS, false),
        (0, 2, DIR_EGRESS, true),
        (1, 2, DIR_INGRESS, true),
        (1, 3, DIR_INGRESS, false),
        (1, 4, DIR_EGRESS, false),
    ];
    for (i, (node, ifindex, dir, encap)) in hops.into_iter().enumerate() {
        let ev = HopEvent {
            header: EventHeader {
                kind: EVENT_HOP,
                len: size_of::<HopEvent>() as u16,
                cpu: 0,
                ts_ns: t0 + i as u64 * 1_000,
                netns: NS[node],
                ifindex,
            },
            body: Hop {
                dir,
                skb_len: 1414,
                encap: if encap { vxlan } else { Encap::default() },
                pkt,
                ..Hop::default()
            },
        };
        // SAFETY: HopEvent is #[repr(C)] plain data without implicit padding.
        let bytes: [u8; size_of::<HopEvent>()] = unsafe { std::mem::transmute(ev) };
        out.push(bytes);
    }
}

pub fn run(args: PipelineBenchArgs) -> Result<()> {
    let packets = args.events.div_ceil(6);
    // Records are generated ahead in chunks so that generation is not measured.
    const CHUNK: u64 = 100_000;
    let print = PrintArgs {
        count: None,
        output: args.render.unwrap_or(Output::Text),
        linger_ms: 300,
    };
    // Without rendering, the pipeline runs as `tracer stats` does (latency kept, no per-trace
    // output); with it, as `trace --stats --output text|json`.
    let cfg = PipelineConfig {
        stats: true,
        quiet: args.render.is_none(),
        ..print.pipeline_config(ClockModel::shared_kernel())
    };
    // Rendered bytes go to a sink through the same buffered writer `trace` uses.
    let mut pipe = Pipeline::new(topology(), cfg, BufWriter::new(io::sink()));
    let mut buf = Vec::with_capacity(CHUNK as usize * 6);
    let (mut events, mut elapsed) = (0u64, 0f64);
    let mut done = 0;
    while done < packets {
        let n = CHUNK.min(packets - done);
        buf.clear();
        for p in done..done + n {
            // A packet every microsecond: 1 M packets/s (6 M events/s) of simulated time.
            packet_records(p, 1_000_000_000 + p * 1_000, &mut buf);
        }
        let now_ns = 1_000_000_000 + (done + n) * 1_000;
        let started = Instant::now();
        for rec in &buf {
            pipe.node_record("bench", rec);
            events += 1;
        }
        pipe.tick(now_ns)?;
        elapsed += started.elapsed().as_secs_f64();
        done += n;
    }
    let started = Instant::now();
    pipe.close_all()?;
    elapsed += started.elapsed().as_secs_f64();
    let traces: u64 = pipe.flows().values().map(|f| f.packets).sum();
    pipe.write_summary(LossCounters::default())?;
    println!(
        "{}",
        serde_json::json!({
            "events": events,
            "traces": traces,
            "seconds": elapsed,
            "events_per_sec": events as f64 / elapsed,
            "render": args.render.map(|o| format!("{o:?}").to_lowercase()),
        })
    );
    Ok(())
}
