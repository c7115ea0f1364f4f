//! A minimal reader for the kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Rust eBPF programs get no CO-RE relocations, so the tracer asks the running kernel for the
//! struct offsets and enum values it needs at start-up and hands them to the programs. Nothing
//! here is baked at build time.
//!
//! Design notes:
//! - `from_bytes` copies the blob, validates the header, walks the type section once and checks
//!   that every record (with its kind-specific trailer) lies inside the section, and that the
//!   string section is NUL-terminated. After that, reads inside a validated record cannot go out
//!   of bounds; type ids read from records (member types, typedef targets...) are checked when
//!   followed, and every chain walk is depth-limited, so garbage input yields errors, not panics
//!   or endless loops.
//! - Name index: a vector of `(FNV-1a hash of name, type id)` sorted by hash, built once while
//!   walking the types. A lookup binary-searches the hash and compares the real name bytes, so
//!   no per-name allocation is needed (6.18's vmlinux: 5.5 MB, ~127k types, read and
//!   parsed in ~10 ms in release).
//! - Both byte orders are accepted (the magic tells which); little-endian is the one used.
//! - Pointer size is not in BTF: like libbpf, it is taken from the size of `long`, else 8.
//! - `member` looks through anonymous struct/union members transparently and follows
//!   typedef/const/volatile/restrict/type-tag to reach the struct type of a nested member.
//!   Bitfields are rejected (kind_flag bitfield size, a non-byte bit offset, or an old-style
//!   INT with fewer bits than its size).

use std::{collections::HashSet, fmt};

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const MAX_DEPTH: u32 = 32;
const SYS_PATH: &str = "/sys/kernel/btf/vmlinux";

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Errors from reading BTF or looking something up in it.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("BTF: cannot read {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("BTF: malformed data: {0}")]
    Malformed(String),
    #[error("BTF: no struct or union named '{0}'")]
    NoStruct(String),
    #[error("BTF: {container} has no member '{member}'")]
    NoMember { container: String, member: String },
    #[error("BTF: {container}.{member} is a {kind}, not a struct or union: cannot look inside it")]
    NotComposite {
        container: String,
        member: String,
        kind: &'static str,
    },
    #[error("BTF: {container}.{member} is a bitfield (not supported)")]
    Bitfield { container: String, member: String },
    #[error("BTF: cannot compute the size of type id {id}: {reason}")]
    Size { id: u32, reason: String },
    #[error("BTF: no enum named '{0}'")]
    NoEnum(String),
    #[error("tracepoint format: {0}")]
    TracepointFormat(String),
}

/// Byte offset and size of a struct member (relative to the start of the outer struct).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub offset: u32,
    pub size: u32,
}

/// A parsed BTF blob (types and strings) with a name index.
pub struct Btf {
    data: Vec<u8>,
    big_endian: bool,
    /// Absolute offset of the string section and its length.
    str_start: usize,
    str_len: usize,
    /// Absolute offset of each type record, indexed by type id (index 0 = void, unused).
    type_offs: Vec<u32>,
    /// (hash of name, type id), sorted by hash.
    names: Vec<(u64, u32)>,
    ptr_size: u32,
}

impl fmt::Debug for Btf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Btf")
            .field("bytes", &self.data.len())
            .field("types", &(self.type_offs.len() - 1))
            .field("big_endian", &self.big_endian)
            .finish()
    }
}

/// One decoded `struct btf_type` header.
#[derive(Clone, Copy)]
struct Type {
    name_off: u32,
    kind: u32,
    vlen: usize,
    kflag: bool,
    /// `size` or `type`, depending on the kind.
    st: u32,
    /// Absolute offset of the kind-specific trailer.
    extra: usize,
}

fn malformed(msg: impl Into<String>) -> BtfError {
    BtfError::Malformed(msg.into())
}

/// `return Err(BtfError::Malformed(format!(...)))`.
macro_rules! bad {
    ($($arg:tt)*) => {
        return Err(BtfError::Malformed(format!($($arg)*)))
    };
}

fn is_composite(kind: u32) -> bool {
    matches!(kind, KIND_STRUCT | KIND_UNION)
}

/// Kinds that only qualify or rename another type.
fn is_modifier(kind: u32) -> bool {
    matches!(
        kind,
        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
    )
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[rustfmt::skip]
const KIND_NAMES: [&str; 20] = [
    "void", "int", "pointer", "array", "struct", "union", "enum", "forward declaration",
    "typedef", "volatile", "const", "restrict", "function", "function prototype", "variable",
    "data section", "float", "decl tag", "type tag", "enum",
];

fn kind_name(kind: u32) -> &'static str {
    KIND_NAMES
        .get(kind as usize)
        .copied()
        .unwrap_or("unknown kind")
}

/// Bytes of trailing data after the 12-byte header, or None for an unknown kind.
fn trailer_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
        KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
        KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
        | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
        _ => return None,
    })
}

/// The type and string sections of a little-endian BTF blob.
fn sections(data: &[u8]) -> Result<(&[u8], &[u8]), BtfError> {
    if data.len() < HEADER_LEN || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
        bad!("not a little-endian BTF blob");
    }
    let hdr = |i: usize| read_u32(data, 4 + 4 * i, false).unwrap_or(0) as usize;
    let (hdr_len, type_off, type_len, str_off, str_len) = (hdr(0), hdr(1), hdr(2), hdr(3), hdr(4));
    let get = |off: usize, len: usize| {
        hdr_len
            .checked_add(off)
            .and_then(|a| Some((a, a.checked_add(len)?)))
            .and_then(|(a, b)| data.get(a..b))
            .ok_or_else(|| malformed(format!("section {off}+{len} out of the blob")))
    };
    Ok((get(type_off, type_len)?, get(str_off, str_len)?))
}

/// One blob from vmlinux's BTF and a module's split BTF on top: the module's types after
/// vmlinux's (its type ids already count from there) and its strings after vmlinux's (its
/// string offsets already do too).
fn join_split(base: &[u8], split: &[u8]) -> Result<Vec<u8>, BtfError> {
    let (bt, bs) = sections(base)?;
    let (mt, ms) = sections(split)?;
    let types = bt.len() + mt.len();
    let strings = bs.len() + ms.len();
    let u = |v: usize| u32::try_from(v).map_err(|_| malformed("BTF too large"));
    let mut out = Vec::with_capacity(HEADER_LEN + types + strings);
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&[1, 0]);
    for v in [HEADER_LEN, 0, types, types, strings] {
        out.extend_from_slice(&u(v)?.to_le_bytes());
    }
    out.extend_from_slice(bt);
    out.extend_from_slice(mt);
    out.extend_from_slice(bs);
    out.extend_from_slice(ms);
    Ok(out)
}

fn read_u32(data: &[u8], off: usize, big_endian: bool) -> Option<u32> {
    let b: [u8; 4] = data.get(off..off.checked_add(4)?)?.try_into().ok()?;
    Some(if big_endian {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

impl Btf {
    /// Parses a BTF blob. Validates the header and the bounds of every type record.
    #[cfg(test)]
    pub fn from_bytes(data: &[u8]) -> Result<Btf, BtfError> {
        Btf::from_vec(data.to_vec())
    }

    /// Reads the running kernel's BTF from `/sys/kernel/btf/vmlinux`.
    pub fn from_sys() -> Result<Btf, BtfError> {
        let data = std::fs::read(SYS_PATH).map_err(|source| BtfError::Io {
            path: SYS_PATH.into(),
            source,
        })?;
        Btf::from_vec(data)
    }

    /// The running kernel's BTF with a module's on top (`/sys/kernel/btf/<module>`, split BTF:
    /// its type ids continue vmlinux's and its string offsets start after vmlinux's strings).
    /// A module that is not loaded, or built into vmlinux, leaves vmlinux alone.
    pub fn from_sys_with_module(module: &str) -> Result<Btf, BtfError> {
        let base = std::fs::read(SYS_PATH).map_err(|source| BtfError::Io {
            path: SYS_PATH.into(),
            source,
        })?;
        let path = format!("/sys/kernel/btf/{module}");
        match std::fs::read(&path) {
            Ok(split) => Btf::from_vec(join_split(&base, &split)?),
            Err(_) => Btf::from_vec(base),
        }
    }

    fn from_vec(data: Vec<u8>) -> Result<Btf, BtfError> {
        if data.len() < HEADER_LEN {
            bad!("{} bytes is shorter than the header", data.len());
        }
        let big_endian = match [data[0], data[1]] {
            m if u16::from_le_bytes(m) == MAGIC => false,
            m if u16::from_be_bytes(m) == MAGIC => true,
            m => bad!("bad magic {:02x}{:02x}, expected eb9f", m[0], m[1]),
        };
        if data[2] != 1 {
            bad!("unsupported version {}", data[2]);
        }
        let hdr = |i: usize| read_u32(&data, 4 + 4 * i, big_endian).unwrap_or(0) as usize;
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (hdr(0), hdr(1), hdr(2), hdr(3), hdr(4));
        if hdr_len < HEADER_LEN || hdr_len > data.len() {
            bad!("bad header length {hdr_len}");
        }
        for (name, off, len) in [("type", type_off, type_len), ("string", str_off, str_len)] {
            let end = hdr_len.checked_add(off).and_then(|s| s.checked_add(len));
            if end.is_none_or(|end| end > data.len()) {
                bad!(
                    "{name} section ({off}+{len}) runs past the {}-byte blob",
                    data.len()
                );
            }
        }
        let (types_start, str_start) = (hdr_len + type_off, hdr_len + str_off);
        if str_len == 0 || data[str_start + str_len - 1] != 0 {
            bad!("string section is empty or not NUL-terminated");
        }

        let mut btf = Btf {
            data,
            big_endian,
            str_start,
            str_len,
            type_offs: vec![0],
            names: Vec::new(),
            ptr_size: 8,
        };
        btf.index_types(types_start, type_len)?;
        for long in ["long int", "long unsigned int"] {
            if let Some(t) = btf.find(long, |t| t.kind == KIND_INT) {
                if let Some(size @ (4 | 8)) = btf.ty(t).map(|t| t.st) {
                    btf.ptr_size = size;
                    break;
                }
            }
        }
        Ok(btf)
    }

    /// Walks the type section once: records each type's offset and indexes its name.
    fn index_types(&mut self, start: usize, len: usize) -> Result<(), BtfError> {
        let end = start + len;
        let mut pos = start;
        while pos < end {
            let id = self.type_offs.len();
            if end - pos < 12 {
                bad!("type id {id} is truncated");
            }
            let info = self.rd(pos + 4);
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let Some(trailer) = trailer_len(kind, vlen) else {
                bad!("type id {id} has unknown kind {kind}");
            };
            if end - pos - 12 < trailer {
                bad!("type id {id} ({}) is truncated", kind_name(kind));
            }
            let name_off = self.rd(pos);
            let Some(name) = self.name_bytes(name_off) else {
                bad!("type id {id}: name offset {name_off} is out of bounds");
            };
            let (Ok(id), Ok(off)) = (u32::try_from(id), u32::try_from(pos)) else {
                bad!("blob larger than 4 GiB");
            };
            if !name.is_empty() {
                let hash = fnv1a(name);
                self.names.push((hash, id));
            }
            self.type_offs.push(off);
            pos += 12 + trailer;
        }
        // Stable: ids with the same name stay in id order.
        self.names.sort_by_key(|&(hash, _)| hash);
        Ok(())
    }

    /// Reads a u32 at an absolute offset. Callers only read inside validated records.
    fn rd(&self, off: usize) -> u32 {
        let v = read_u32(&self.data, off, self.big_endian);
        debug_assert!(v.is_some(), "BTF read out of bounds at {off}");
        v.unwrap_or(0)
    }

    fn name_bytes(&self, name_off: u32) -> Option<&[u8]> {
        let off = name_off as usize;
        if off >= self.str_len {
            return None;
        }
        let s = &self.data[self.str_start + off..self.str_start + self.str_len];
        // The section ends with a NUL, so there is always one.
        let nul = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        Some(&s[..nul])
    }

    fn name(&self, name_off: u32) -> Result<&str, BtfError> {
        let bytes = self
            .name_bytes(name_off)
            .ok_or_else(|| malformed(format!("name offset {name_off} is out of bounds")))?;
        std::str::from_utf8(bytes)
            .map_err(|_| malformed(format!("name at offset {name_off} is not UTF-8")))
    }

    /// Decodes type `id`; None for void (0) and ids past the end.
    fn ty(&self, id: u32) -> Option<Type> {
        if id == 0 {
            return None;
        }
        let off = *self.type_offs.get(id as usize)? as usize;
        let info = self.rd(off + 4);
        Some(Type {
            name_off: self.rd(off),
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kflag: info >> 31 == 1,
            st: self.rd(off + 8),
            extra: off + 12,
        })
    }

    /// First type (lowest id) with this name for which `pred` holds.
    fn find(&self, name: &str, pred: impl Fn(&Type) -> bool) -> Option<u32> {
        let hash = fnv1a(name.as_bytes());
        let first = self.names.partition_point(|&(h, _)| h < hash);
        self.names[first..]
            .iter()
            .take_while(|&&(h, _)| h == hash)
            .map(|&(_, id)| id)
            .find(|&id| {
                self.ty(id).is_some_and(|t| {
                    pred(&t) && self.name_bytes(t.name_off) == Some(name.as_bytes())
                })
            })
    }

    /// Follows typedef/const/volatile/restrict/type-tag to the underlying type id.
    fn strip(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..MAX_DEPTH {
            match self.ty(id) {
                Some(t) if is_modifier(t.kind) => id = t.st,
                _ => return Ok(id),
            }
        }
        bad!("type chain through id {id} is too deep")
    }

    fn kind_of(&self, id: u32) -> u32 {
        self.ty(id).map_or(0, |t| t.kind)
    }

    /// Size in bytes of type `id`.
    fn size_of(&self, id: u32, depth: u32) -> Result<u32, BtfError> {
        let err = |reason: String| BtfError::Size { id, reason };
        if depth > MAX_DEPTH {
            return Err(err("type chain is too deep".into()));
        }
        if id as usize >= self.type_offs.len() {
            return Err(err("no such type id".into()));
        }
        let t = self.ty(id).ok_or_else(|| err("void has no size".into()))?;
        match t.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT
            | KIND_DATASEC => Ok(t.st),
            KIND_PTR => Ok(self.ptr_size),
            k if is_modifier(k) || k == KIND_VAR => self.size_of(t.st, depth + 1),
            KIND_ARRAY => {
                let (elem, nelems) = (self.rd(t.extra), self.rd(t.extra + 8));
                self.size_of(elem, depth + 1)?
                    .checked_mul(nelems)
                    .ok_or_else(|| err("array size overflows".into()))
            }
            k => Err(err(format!("a {} has no size", kind_name(k)))),
        }
    }

    /// Finds a named struct or union, or a typedef of one.
    fn find_composite(&self, name: &str) -> Result<u32, BtfError> {
        if let Some(id) = self.find(name, |t| is_composite(t.kind)) {
            return Ok(id);
        }
        if let Some(id) = self.find(name, |t| t.kind == KIND_TYPEDEF) {
            let id = self.strip(id)?;
            if is_composite(self.kind_of(id)) {
                return Ok(id);
            }
        }
        Err(BtfError::NoStruct(name.into()))
    }

    /// Searches `id`'s members for `name`, descending into anonymous structs/unions.
    /// Returns (bit offset from the start of `id`, member type, is_bitfield). `seen` holds the
    /// anonymous types already searched, so garbage with shared or cyclic anonymous members
    /// cannot make the search exponential.
    fn find_member(
        &self,
        id: u32,
        name: &str,
        depth: u32,
        seen: &mut HashSet<u32>,
    ) -> Result<Option<(u64, u32, bool)>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(malformed("anonymous members nested too deeply"));
        }
        let Some(t) = self.ty(id).filter(|t| is_composite(t.kind)) else {
            return Ok(None);
        };
        for i in 0..t.vlen {
            let m = t.extra + 12 * i;
            let (name_off, mtype, raw) = (self.rd(m), self.rd(m + 4), self.rd(m + 8));
            let (bit_off, bf_size) = if t.kflag {
                (raw & 0x00ff_ffff, raw >> 24)
            } else {
                (raw, 0)
            };
            let mname = self.name(name_off)?;
            if mname == name {
                let mut bitfield = bf_size != 0 || bit_off % 8 != 0;
                let base = self.strip(mtype)?;
                if let Some(it) = self.ty(base).filter(|t| t.kind == KIND_INT) {
                    let enc = self.rd(it.extra);
                    let (bits, off) = (enc & 0xff, (enc >> 16) & 0xff);
                    bitfield |= off != 0 || u64::from(bits) != u64::from(it.st) * 8;
                }
                return Ok(Some((u64::from(bit_off), mtype, bitfield)));
            }
            if mname.is_empty() {
                let inner = self.strip(mtype)?;
                if !seen.insert(inner) {
                    continue;
                }
                if let Some((off, ty, bf)) = self.find_member(inner, name, depth + 1, seen)? {
                    return Ok(Some((u64::from(bit_off) + off, ty, bf)));
                }
            }
        }
        Ok(None)
    }

    /// Byte offset and size of a (possibly nested) member of `struct_name`:
    /// `member("net_device", &["nd_net", "net"])`. An empty path gives offset 0 and the size of
    /// the struct itself.
    pub fn member(&self, struct_name: &str, path: &[&str]) -> Result<Member, BtfError> {
        let mut id = self.find_composite(struct_name)?;
        let mut container = format!("{} {struct_name}", kind_name(self.kind_of(id)));
        let mut bits: u64 = 0;
        let mut ty = id;
        for (i, &name) in path.iter().enumerate() {
            if i > 0 {
                id = self.strip(ty)?;
                let kind = self.kind_of(id);
                if !is_composite(kind) {
                    return Err(BtfError::NotComposite {
                        container,
                        member: path[i - 1].into(),
                        kind: kind_name(kind),
                    });
                }
                container = format!("{container}.{}", path[i - 1]);
            }
            let (off, mtype, bitfield) = self
                .find_member(id, name, 0, &mut HashSet::new())?
                .ok_or_else(|| BtfError::NoMember {
                    container: container.clone(),
                    member: name.into(),
                })?;
            if bitfield {
                return Err(BtfError::Bitfield {
                    container,
                    member: name.into(),
                });
            }
            bits += off;
            ty = mtype;
        }
        let Ok(offset) = u32::try_from(bits / 8) else {
            bad!("offset of {struct_name}.{} overflows", path.join("."));
        };
        Ok(Member {
            offset,
            size: self.size_of(ty, 0)?,
        })
    }

    /// Name -> value of an enum (ENUM or ENUM64), in declaration order.
    pub fn enum_values(&self, enum_name: &str) -> Result<Vec<(String, i64)>, BtfError> {
        // Prefer a full definition over an empty forward declaration.
        let is_enum = |t: &Type| matches!(t.kind, KIND_ENUM | KIND_ENUM64);
        let id = self
            .find(enum_name, |t| is_enum(t) && t.vlen > 0)
            .or_else(|| self.find(enum_name, is_enum))
            .ok_or_else(|| BtfError::NoEnum(enum_name.into()))?;
        let Some(t) = self.ty(id) else {
            return Err(BtfError::NoEnum(enum_name.into()));
        };
        let (is64, signed) = (t.kind == KIND_ENUM64, t.kflag);
        let entry = if is64 { 12 } else { 8 };
        (0..t.vlen)
            .map(|i| {
                let e = t.extra + entry * i;
                let lo = self.rd(e + 4);
                // ENUM values are 32-bit, signed only with kind_flag; ENUM64 adds a high word.
                let value = match (is64, signed) {
                    (true, _) => (u64::from(self.rd(e + 8)) << 32 | u64::from(lo)) as i64,
                    (false, true) => i64::from(lo as i32),
                    (false, false) => i64::from(lo),
                };
                Ok((self.name(self.rd(e))?.to_string(), value))
            })
            .collect()
    }

    /// Whether a FUNC of this name exists.
    pub fn has_func(&self, name: &str) -> bool {
        self.find(name, |t| t.kind == KIND_FUNC).is_some()
    }
}

#[cfg(test)]
mod tests;
