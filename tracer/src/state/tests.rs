use std::net::Ipv4Addr;

use super::*;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn route(table: u32, kind: RouteType, dst: &str, oif: Option<u32>) -> RouteEntry {
    RouteEntry {
        table,
        kind,
        dst: dst.parse().unwrap(),
        gateway: None,
        oif,
        dev: String::new(),
        onlink: false,
        metric: 0,
        proto: "static".into(),
        prefsrc: None,
    }
}

fn rule(priority: u32, action: &str, table: u32, dst: Option<&str>) -> RuleEntry {
    RuleEntry {
        priority,
        action: action.into(),
        table,
        src: None,
        dst: dst.map(|d| d.parse().unwrap()),
        iif: None,
        oif: None,
        fwmark: None,
    }
}

#[test]
fn prefixes_and_macs_parse_print_and_serialize() {
    let n: Net = "10.244.4.7/26".parse().unwrap();
    assert_eq!(n.to_string(), "10.244.4.0/26");
    assert!(n.contains(ip("10.244.4.63")) && !n.contains(ip("10.244.4.64")));
    assert_eq!("10.1.2.3".parse::<Net>().unwrap().len, 32);
    assert!("10.1.2.3/33".parse::<Net>().is_err() && "x/8".parse::<Net>().is_err());
    let m: Mac = "66:00:00:00:00:0a".parse().unwrap();
    assert_eq!(m.to_string(), "66:00:00:00:00:0a");
    assert!("66:00".parse::<Mac>().is_err());
    let json = serde_json::to_string(&(n, m)).unwrap();
    assert_eq!(json, r#"["10.244.4.0/26","66:00:00:00:00:0a"]"#);
    let back: (Net, Mac) = serde_json::from_str(&json).unwrap();
    assert_eq!(back, (n, m));
    assert!(serde_json::from_str::<Net>(r#""10.0.0.0/99""#).is_err());
}

#[test]
fn lookup_follows_rules_tables_throw_and_discarding_rules() {
    let mut s = NodeState {
        routes: vec![
            route(TABLE_MAIN, RouteType::Unicast, "0.0.0.0/0", Some(2)),
            route(TABLE_MAIN, RouteType::Unicast, "10.244.4.0/26", Some(3)),
            route(100, RouteType::Throw, "10.244.4.0/24", None),
            route(100, RouteType::Blackhole, "10.244.0.0/16", None),
        ],
        ..NodeState::default()
    };
    // Without rules: the kernel's default order (local, main, default).
    assert_eq!(s.lookup(ip("10.244.4.1")).unwrap().oif, Some(3));
    s.rules = vec![
        rule(0, "to-table", TABLE_LOCAL, None),
        rule(10, "to-table", 100, None),
        rule(32766, "to-table", TABLE_MAIN, None),
    ];
    // Table 100 throws 10.244.4.0/24 back to the next rule: main decides.
    assert_eq!(s.lookup(ip("10.244.4.1")).unwrap().oif, Some(3));
    // ...but blackholes the rest of 10.244.0.0/16.
    assert_eq!(
        s.lookup(ip("10.244.8.1")).unwrap().kind,
        RouteType::Blackhole
    );
    assert_eq!(s.lookup(ip("192.0.2.1")).unwrap().dst.len, 0);
    s.rules.push(rule(5, "prohibit", 0, Some("192.0.2.0/24")));
    assert!(matches!(s.resolve(ip("192.0.2.1")), Resolution::Rule(r) if r.priority == 5));
    s.routes.retain(|r| r.dst.len != 0);
    assert_eq!(s.resolve(ip("198.51.100.1")), Resolution::Nothing);
}

#[test]
fn rp_filter_is_the_larger_of_all_and_the_device() {
    let mut s = NodeState::default();
    assert_eq!(s.rp_filter("eth0"), None);
    s.sysctls
        .insert("net.ipv4.conf.all.rp_filter".into(), "2".into());
    assert_eq!(s.rp_filter("eth0"), Some(2));
    s.sysctls
        .insert("net.ipv4.conf.eth0.rp_filter".into(), "1".into());
    assert_eq!(s.rp_filter("eth0"), Some(2));
    s.sysctls
        .insert("net.ipv4.conf.all.rp_filter".into(), "0".into());
    assert_eq!(s.rp_filter("eth0"), Some(1));
}

#[test]
fn routes_print_as_ip_route_does() {
    let mut r = route(TABLE_MAIN, RouteType::Unicast, "10.244.4.0/26", Some(3));
    r.gateway = Some(ip("10.244.4.0"));
    r.dev = "vxlan.calico".into();
    r.onlink = true;
    assert_eq!(
        r.to_string(),
        "10.244.4.0/26 via 10.244.4.0 dev vxlan.calico onlink"
    );
    let b = route(244, RouteType::Blackhole, "0.0.0.0/0", None);
    assert_eq!(b.to_string(), "blackhole default table 244");
}
