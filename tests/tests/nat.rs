//! Packets through NAT keep one trace: node1 DNATs a Service-like address (nftables, as
//! kube-proxy's rules do through iptables-nft) to a pod on node2; a pod on node1 pings that
//! address. With a filter on the Service address, and without a filter: each echo request is
//! one trace under the Service address, through both nodes to the endpoint pod's veth, with the
//! DNAT step named (node1, the endpoint's address); each reply carries the un-DNAT step back
//! to the Service address. The lab's Services (kube-proxy's chains) have their own tests.

mod common;

use common::{lab_up, Tracer};
use lab::{exec_in, Encap};
use serde_json::Value;

const SERVICE: &str = "10.96.0.10";

fn nft(netns: &str, cmd: &str) {
    let out = exec_in(netns, &["nft", cmd]).expect("nft");
    assert!(
        out.status.success(),
        "nft {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_pinged_service_address_is_one_trace_through_dnat_and_back() {
    let lab = lab_up("tnat", 1, Encap::Vxlan);
    let t = lab.topology().clone();
    let (a, c) = (
        t.pod("n1p0").unwrap().clone(),
        t.pod("n2p0").unwrap().clone(),
    );
    let n1 = t.node("node1").unwrap().netns.clone();
    nft(
        &n1,
        &format!(
            "add table ip tnat; add chain ip tnat pre {{ type nat hook prerouting priority dstnat; }}; \
             add rule ip tnat pre ip daddr {SERVICE} dnat to {}",
            c.ip
        ),
    );
    for filter in [Some(format!("host {SERVICE}")), None] {
        let mut args: Vec<String> = Vec::new();
        for n in &t.nodes {
            args.extend(["--netns".into(), n.netns.clone()]);
        }
        if let Some(f) = &filter {
            args.extend(["--filter".into(), f.clone()]);
        }
        args.extend([
            "--output".into(),
            "json".into(),
            "--linger-ms".into(),
            "100".into(),
        ]);
        let tracer = Tracer::start(&args);
        lab::traffic::ping(&a.netns, SERVICE.parse().unwrap(), 3, true).expect("ping the service");
        std::thread::sleep(std::time::Duration::from_millis(300));
        let out = tracer.stop();
        assert!(out.status.success(), "{}", out.stderr);
        assert!(
            out.stderr.contains("nat: tp_btf/net_dev_queue"),
            "the NAT hook attaches: {}",
            out.stderr
        );
        let traces = out.traces();
        let of = |src: &str, dst: &str| -> Vec<&Value> {
            traces
                .iter()
                .filter(|t| t["packet"]["src"] == src && t["packet"]["dst"] == dst)
                .collect()
        };
        let requests = of(&a.ip.to_string(), SERVICE);
        let replies = of(&c.ip.to_string(), &a.ip.to_string());
        assert_eq!(requests.len(), 3, "{filter:?}: {traces:#?}");
        assert_eq!(replies.len(), 3, "{filter:?}: {traces:#?}");
        assert!(
            of(&a.ip.to_string(), &c.ip.to_string()).is_empty(),
            "no request is a trace of its own under the endpoint's address"
        );
        for r in &requests {
            assert_eq!(r["outcome"], "delivered", "{r}");
            let hops = r["hops"].as_array().unwrap();
            let last = hops.last().unwrap();
            assert_eq!(
                (last["ifname"].as_str(), last["dir"].as_str()),
                (Some(c.cali.as_str()), Some("egress")),
                "the request reaches the endpoint pod: {r}"
            );
            assert!(hops.iter().any(|h| h["translated"] == true), "{r}");
            let step = &r["nat"][0];
            assert_eq!(step["kind"], "DNAT", "{r}");
            assert_eq!(step["from"]["dst"], SERVICE);
            assert_eq!(step["to"]["dst"], c.ip.to_string());
            assert_eq!(step["node"], n1.as_str());
        }
        for r in &replies {
            assert_eq!(r["outcome"], "delivered", "{r}");
            assert_eq!(r["nat"][0]["kind"], "un-DNAT", "{r}");
            assert_eq!(r["nat"][0]["to"]["src"], SERVICE, "{r}");
        }
        // With a filter on the Service address only the first request lacks a hop (the tunnel's
        // egress, just before the NAT hook learns the flow); the others have all six.
        let full = requests
            .iter()
            .filter(|r| r["hops"].as_array().unwrap().len() == 6)
            .count();
        assert!(full >= 2, "{filter:?}: {requests:#?}");
    }
    lab.down().expect("lab down");
}
