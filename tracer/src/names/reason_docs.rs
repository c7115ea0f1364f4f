//! What each kernel drop reason means, in a sentence, for the reasons no verdict rule
//! interprets: written from the kernel's own documentation of `enum skb_drop_reason`
//! (`include/net/dropreason-core.h`) and of the subsystems that use them. Keyed by name, never
//! by value: the values differ between kernels and always come from the running kernel's BTF;
//! a name this table does not know (a newer kernel) is still shown as the kernel gives it.

/// One sentence on what the kernel meant by `reason` (`NETFILTER_DROP`), if known.
pub fn doc(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "NOT_SPECIFIED" => "the code that freed the packet gave no reason (older call sites, or a path with several causes; the function names the place)",
        "NO_SOCKET" => "no socket was found for the packet: nothing listens on its port, or a TCP packet matches no connection or handshake",
        "SOCKET_CLOSE" => "the socket was closed before the packet was read",
        "SOCKET_FILTER" => "a socket filter (BPF attached to the socket) rejected the packet",
        "SOCKET_RCVBUFF" => "the socket's receive buffer was full: the application reads too slowly",
        "SOCKET_BACKLOG" => "the socket's backlog was full while the socket was busy",
        "PKT_TOO_SMALL" => "the packet is shorter than its headers say",
        "TCP_CSUM" | "UDP_CSUM" | "IP_CSUM" | "ICMP_CSUM" | "SKB_CSUM" => "a checksum was wrong (corruption on the wire or a checksum offload problem)",
        "NETFILTER_DROP" => "a netfilter rule (nftables or iptables) dropped the packet",
        "OTHERHOST" => "the frame's destination MAC address is not this interface's: the packet was for another host (seen only because the interface is promiscuous or the frame was flooded)",
        "IP_INHDR" => "the IPv4 header is malformed (bad version, length or header checksum)",
        "IP_RPFILTER" => "reverse-path filtering rejected the packet: the route back to its source leaves by another interface (rp_filter)",
        "UNICAST_IN_L2_MULTICAST" => "a unicast IP packet arrived in a multicast or broadcast frame",
        "XFRM_POLICY" => "an IPsec (xfrm) policy check failed",
        "IP_NOPROTO" => "no handler for the packet's IP protocol (for IPIP: the ipip module is not loaded)",
        "PROTO_MEM" => "the protocol's memory limit was reached (e.g. udp_mem)",
        "TCP_FLAGS" => "the TCP flags are invalid for the connection's state",
        "TCP_ZEROWINDOW" => "the receiver's TCP window is zero",
        "TCP_OLD_DATA" | "TCP_OLD_SEQUENCE" => "the TCP data was already received (a retransmission)",
        "TCP_OVERWINDOW" => "the TCP data lies beyond the receive window",
        "TCP_OFOMERGE" | "TCP_OFO_DROP" | "TCP_OFO_QUEUE_PRUNE" => "out-of-order TCP data was already queued or pruned under memory pressure",
        "TCP_RFC7323_PAWS" | "TCP_RFC7323_PAWS_ACK" => "the TCP timestamp is older than the connection's (PAWS)",
        "TCP_INVALID_SEQUENCE" | "TCP_INVALID_ACK_SEQUENCE" => "the TCP sequence or acknowledgement number is outside the window",
        "TCP_RESET" => "an invalid TCP reset",
        "TCP_INVALID_SYN" => "an unexpected TCP SYN on an existing connection",
        "TCP_CLOSE" => "the TCP socket is closed",
        "TCP_OLD_ACK" | "TCP_TOO_OLD_ACK" | "TCP_ACK_UNSENT_DATA" => "the TCP acknowledgement does not fit what was sent",
        "TCP_MINTTL" => "the TTL is below the socket's minimum (IP_MINTTL)",
        "TCP_MD5NOTFOUND" | "TCP_MD5UNEXPECTED" | "TCP_MD5FAILURE" | "TCP_AUTH_HDR" | "TCP_AONOTFOUND" | "TCP_AOUNEXPECTED" | "TCP_AOKEYNOTFOUND" | "TCP_AOFAILURE" => "TCP authentication (MD5 or TCP-AO, as BGP sessions use) failed",
        "IP_OUTNOROUTES" => "no route for the packet the node sends itself",
        "IP_INNOROUTES" => "no route to forward the packet: the network is unreachable from this node",
        "IP_INADDRERRORS" => "the destination is unreachable (an unreachable or prohibit route, or an invalid address)",
        "IP_LOCAL_SOURCE" => "the packet arrived with one of this node's own addresses as its source",
        "IP_INVALID_SOURCE" => "the source address is invalid (multicast, broadcast or zero)",
        "IP_LOCALNET" => "a source or destination in 127.0.0.0/8 on a device that does not route it (route_localnet)",
        "IP_INVALID_DEST" => "the destination address is invalid (zero)",
        "BLACKHOLE" => "a blackhole route discarded the packet",
        "BPF_CGROUP_EGRESS" => "a cgroup BPF program refused the packet on its way out",
        "NEIGH_CREATEFAIL" => "no neighbour (ARP) entry could be created for the next hop",
        "NEIGH_FAILED" => "the next hop did not answer ARP: its neighbour entry failed",
        "NEIGH_QUEUEFULL" => "too many packets waited for the next hop's ARP answer",
        "NEIGH_DEAD" => "the next hop's neighbour entry was removed while the packet waited",
        "TC_EGRESS" | "TC_INGRESS" => "a tc program or filter dropped the packet",
        "TC_COOKIE_ERROR" | "TC_CHAIN_NOTFOUND" | "TC_RECLASSIFY_LOOP" => "tc classification failed",
        "SECURITY_HOOK" => "a security module (LSM) refused the packet",
        "QDISC_DROP" | "QDISC_OVERLIMIT" | "QDISC_CONGESTED" | "CAKE_FLOOD" | "FQ_BAND_LIMIT" | "FQ_HORIZON_LIMIT" | "FQ_FLOW_LIMIT" => "the device's queueing discipline dropped the packet (queue full or shaping)",
        "CPU_BACKLOG" => "the per-CPU input backlog was full (netdev_max_backlog) or RPS limited the flow",
        "XDP" => "an XDP program dropped the packet",
        "UNHANDLED_PROTO" => "no handler for the packet's protocol",
        "SKB_GSO_SEG" => "segmenting a large (GSO) packet failed",
        "SKB_UCOPY_FAULT" => "copying from user space failed",
        "DEV_HDR" => "the device's header or metadata is invalid",
        "DEV_READY" => "the device was not ready: it is down (no IFF_UP) or not set up",
        "FULL_RING" => "the device's ring was full",
        "NOMEM" => "out of memory",
        "HDR_TRUNC" => "a header could not be read from the packet",
        "TAP_FILTER" | "TAP_TXFILTER" => "a tun/tap filter dropped the packet",
        "INVALID_PROTO" => "the packet breaks its protocol's rules",
        "PKT_TOO_BIG" => "the packet is larger than the path's MTU and may not be fragmented (DF set)",
        "DUP_FRAG" | "FRAG_REASM_TIMEOUT" | "FRAG_TOO_FAR" => "IP fragment reassembly failed",
        "QUEUE_PURGE" => "a queue was purged (a socket or device going away)",
        "PACKET_SOCK_ERROR" => "a packet socket failed to take the packet",
        "VXLAN_INVALID_HDR" => "the VXLAN header is invalid (flags or reserved bits)",
        "VXLAN_VNI_NOT_FOUND" => "no VXLAN device has the packet's VNI on this port",
        "VXLAN_ENTRY_EXISTS" => "a VXLAN FDB entry for the source already exists elsewhere",
        "VXLAN_NO_REMOTE" | "NO_TX_TARGET" => "the tunnel has no destination for the frame (no FDB entry for the destination MAC)",
        "MAC_INVALID_SOURCE" => "the frame's source MAC is invalid (zero, multicast or broadcast)",
        "IP_TUNNEL_ECN" => "the tunnel's outer and inner ECN bits disagree",
        "TUNNEL_TXINFO" => "the tunnel's transmit metadata is missing",
        "LOCAL_MAC" => "the frame's source MAC is the receiving device's own",
        "ARP_PVLAN_DISABLE" => "ARP between private VLAN ports is disabled",
        "MAC_IEEE_MAC_CONTROL" => "a MAC control frame",
        "BRIDGE_INGRESS_STP_STATE" => "the bridge port is not forwarding (STP)",
        "IPV6DISABLED" => "IPv6 is disabled on the device",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_and_unknown_reasons() {
        assert!(super::doc("NETFILTER_DROP").unwrap().contains("netfilter"));
        assert!(super::doc("VXLAN_VNI_NOT_FOUND").unwrap().contains("VNI"));
        assert_eq!(super::doc("SOMETHING_NEW_IN_7_2"), None);
    }
}
