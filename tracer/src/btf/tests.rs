//! Unit tests of `btf`.

use super::*;

/// Tiny BTF writer: type records as u32 words, serialised in either byte order.
#[derive(Default)]
struct B {
    types: Vec<u32>,
    strs: Vec<u8>,
    count: u32,
}

impl B {
    fn s(&mut self, name: &str) -> u32 {
        if self.strs.is_empty() {
            self.strs.push(0);
        }
        if name.is_empty() {
            return 0;
        }
        self.strs.extend(name.as_bytes());
        self.strs.push(0);
        (self.strs.len() - name.len() - 1) as u32
    }
    fn ty(&mut self, name: &str, kind: u32, vlen: usize, kf: bool, st: u32, x: &[u32]) -> u32 {
        let n = self.s(name);
        let info = u32::from(kf) << 31 | kind << 24 | vlen as u32;
        self.types.extend([n, info, st].iter().chain(x));
        self.count += 1;
        self.count
    }
    fn comp(&mut self, k: u32, name: &str, sz: u32, kf: bool, m: &[(&str, u32, u32)]) -> u32 {
        let x: Vec<u32> = m.iter().flat_map(|&(n, t, o)| [self.s(n), t, o]).collect();
        self.ty(name, k, m.len(), kf, sz, &x)
    }
    fn build(&self, be: bool) -> Vec<u8> {
        let w = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let (tl, sl) = (self.types.len() as u32 * 4, self.strs.len() as u32);
        let magic = if be { [0xeb, 0x9f] } else { [0x9f, 0xeb] };
        let header = [24, 0, tl, tl, sl];
        let words = header.iter().chain(&self.types);
        let mut out = [&magic[..], &[1, 0]].concat();
        out.extend(words.flat_map(|&v| w(v)).chain(self.strs.iter().copied()));
        out
    }
}

fn sample(be: bool) -> Vec<u8> {
    let (st, un, kf) = (KIND_STRUCT, KIND_UNION, false);
    let mut b = B::default();
    let int = b.ty("int", KIND_INT, 0, kf, 4, &[32]);
    let uint = b.ty("unsigned int", KIND_INT, 0, kf, 4, &[32]);
    let ushort = b.ty("unsigned short", KIND_INT, 0, kf, 2, &[16]);
    let chr = b.ty("char", KIND_INT, 0, kf, 1, &[8]);
    b.ty("long int", KIND_INT, 0, kf, 8, &[64]);
    let bf3 = b.ty("bf3", KIND_INT, 0, kf, 4, &[3]);
    let inner = b.comp(st, "inner", 8, kf, &[("a", int, 0), ("b", uint, 32)]);
    let inner_t = b.ty("inner_t", KIND_TYPEDEF, 0, kf, inner, &[]);
    let c_inner = b.ty("", KIND_CONST, 0, kf, inner_t, &[]);
    let ptr = b.ty("", KIND_PTR, 0, kf, inner, &[]);
    let anon_s = b.comp(st, "", 8, kf, &[("x", int, 0), ("y", ushort, 32)]);
    let anon_u = b.comp(un, "", 8, kf, &[("p", ptr, 0), ("", anon_s, 0)]);
    let arr = b.ty("", KIND_ARRAY, 0, kf, 0, &[chr, int, 16]);
    let (flags, name) = (("flags", uint, 3 << 24 | 192), ("name", arr, 256));
    let m = [
        ("head", ptr, 0),
        ("", anon_u, 64),
        ("in", c_inner, 128),
        flags,
        name,
    ];
    let outer = b.comp(st, "outer", 48, true, &m);
    b.ty("outer_t", KIND_TYPEDEF, 0, kf, outer, &[]);
    let m = [("v", int, 0), ("bits", bf3, 32), ("odd", chr, 36)];
    b.comp(st, "old", 8, kf, &m);
    let (r, g, bl) = (b.s("RED"), b.s("GREEN"), b.s("BLUE"));
    let vals = [r, 0, g, 1, bl, -1i32 as u32];
    b.ty("color", KIND_ENUM, 3, true, 4, &vals);
    let (h, n, neg) = (b.s("HUGE"), b.s("NEG"), -5i64 as u64);
    let vals = [h, 0, 1 << 8, n, neg as u32, (neg >> 32) as u32];
    b.ty("big", KIND_ENUM64, 2, true, 8, &vals);
    let proto = b.ty("", KIND_FUNC_PROTO, 1, kf, int, &[0, int]);
    b.ty("do_thing", KIND_FUNC, 0, kf, proto, &[]);
    b.build(be)
}

/// `struct[.member...]:offset:size`
const PATHS: &str = "outer:0:48 outer.head:0:8 outer.p:8:8 outer.x:8:4 outer.y:12:2 \
    outer.in:16:8 outer.in.b:20:4 outer.name:32:16 outer_t.in.a:16:4 inner.b:4:4 old.v:0:4";

const ERRORS: &[(&str, &str)] = &[
    ("nope.x", "BTF: no struct or union named 'nope'"),
    ("outer.zzz", "BTF: struct outer has no member 'zzz'"),
    ("outer.in.z", "BTF: struct outer.in has no member 'z'"),
    (
        "outer.head.a",
        "BTF: struct outer.head is a pointer, not a struct",
    ),
    (
        "outer.flags",
        "BTF: struct outer.flags is a bitfield (not supported)",
    ),
    ("old.bits", "BTF: struct old.bits is a bitfield"),
    ("old.odd", "BTF: struct old.odd is a bitfield"),
];

/// `"a.b.c"` -> `member("a", &["b", "c"])`.
fn member(btf: &Btf, path: &str) -> Result<Member, BtfError> {
    let path: Vec<&str> = path.split('.').collect();
    btf.member(path[0], &path[1..])
}

#[test]
fn btf_members_and_enums_both_byte_orders() {
    for be in [false, true] {
        let btf = Btf::from_bytes(&sample(be)).expect("sample parses");
        for spec in PATHS.split_whitespace() {
            let v: Vec<&str> = spec.split(':').collect();
            let m = member(&btf, v[0]).unwrap();
            let got = format!("{}:{}:{}", v[0], m.offset, m.size);
            assert_eq!(got, spec);
        }
        for &(path, msg) in ERRORS {
            let e = member(&btf, path).unwrap_err().to_string();
            assert!(e.starts_with(msg), "{e}");
        }
        let color = [("RED".into(), 0), ("GREEN".into(), 1), ("BLUE".into(), -1)];
        assert_eq!(btf.enum_values("color").unwrap(), color);
        let big = [("HUGE".into(), 1 << 40), ("NEG".into(), -5)];
        assert_eq!(btf.enum_values("big").unwrap(), big);
        let e = btf.enum_values("nope").unwrap_err().to_string();
        assert_eq!(e, "BTF: no enum named 'nope'");
        assert!(btf.has_func("do_thing") && !btf.has_func("int") && !btf.has_func("nope"));
    }
}

#[test]
fn btf_garbage_never_panics() {
    let blob = sample(false);
    for n in 0..blob.len() {
        assert!(Btf::from_bytes(&blob[..n]).is_err(), "prefix {n} accepted");
    }
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut parsed = 0;
    for _ in 0..20_000 {
        let mut b = blob.clone();
        for _ in 0..1 + rand() % 4 {
            let i = rand() as usize % b.len();
            b[i] = rand() as u8;
        }
        let Ok(btf) = Btf::from_bytes(&b) else {
            continue;
        };
        parsed += 1;
        let paths = PATHS.split_whitespace().filter_map(|p| p.split(':').next());
        for path in paths.chain(ERRORS.iter().map(|e| e.0)) {
            let _ = member(&btf, path);
        }
        let _ = (btf.enum_values("color"), btf.enum_values("big"));
        let _ = (btf.has_func("do_thing"), btf.enum_values("skb_drop_reason"));
    }
    assert!(parsed > 1000, "lookups reached only {parsed} times");
}

#[test]
fn btf_shared_and_cyclic_anonymous_members_stay_fast() {
    // s1..s19 each have 30 anonymous members of the next level: a naive search would
    // visit 30^19 structs. `loop` contains itself.
    let mut b = B::default();
    for level in 1..=20u32 {
        let n = if level < 20 { 30 } else { 0 };
        let m: Vec<_> = (0..n).map(|_| ("", level + 1, 0)).collect();
        b.comp(KIND_STRUCT, &format!("s{level}"), 4, false, &m);
    }
    b.comp(KIND_STRUCT, "loop", 4, false, &[("", 21, 0)]);
    let btf = Btf::from_bytes(&b.build(false)).unwrap();
    for s in ["s1", "loop"] {
        let e = btf.member(s, &["missing"]).unwrap_err().to_string();
        assert_eq!(e, format!("BTF: struct {s} has no member 'missing'"));
    }
}

#[test]
fn btf_running_kernel() {
    if !std::path::Path::new(SYS_PATH).exists() {
        return eprintln!("skipped: {SYS_PATH} missing");
    }
    let t = std::time::Instant::now();
    let btf = Btf::from_sys().unwrap();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    eprintln!("parsed {btf:?} in {ms:.1} ms");
    // `struct.member[.member]:expected size`
    let fields = "sk_buff.len:4 sk_buff.dev:8 sk_buff.head:8 sk_buff.data:8 \
        sk_buff.mac_header:2 sk_buff.network_header:2 sk_buff.transport_header:2 \
        sk_buff.skb_iif:4 net_device.ifindex:4 net_device.nd_net.net:8 net.ns.inum:4";
    for field in fields.split_whitespace() {
        let (path, size) = field.split_once(':').unwrap();
        let m = member(&btf, path).unwrap();
        eprintln!("{path}: offset {} size {}", m.offset, m.size);
        assert_eq!(m.size.to_string(), size, "{field}");
    }
    assert!(btf.has_func("ip_forward") && !btf.has_func("no_such_function_xyz"));
}
