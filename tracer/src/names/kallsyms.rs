//! Kernel text symbols from `/proc/kallsyms`, for turning drop locations and stack addresses
//! into `function+0x1a`.
//!
//! Design notes:
//! - Only text symbols are kept (types `t`/`T` and weak `w`/`W`), without the `__pfx_` padding
//!   labels; data, rodata, bss and absolute symbols are ignored. The `[module]` column is kept and shown as the kernel's `%pS` does.
//! - Names live in one string arena; each symbol is `(addr, name range, module index)`, sorted
//!   by address (stable, so among aliases at one address the first listed wins, as in the
//!   kernel's own lookup). Loading the real file (~120k lines) is dominated by the kernel
//!   generating the text.
//! - kallsyms carries no sizes. An address maps to the last symbol at or below it, but not past
//!   the last symbol and not more than `MAX_SYMBOL_SIZE` beyond a symbol (which keeps the gap
//!   between the end of kernel text and the module area from being blamed on `_etext`).
//! - With `kernel.kptr_restrict` in force (or without CAP_SYSLOG) every address reads as 0:
//!   that is reported as an error rather than producing useless symbols.
//! - `addr_of` is a linear scan (sub-millisecond); it is meant for a handful of start-up calls.

use std::collections::HashMap;

const PATH: &str = "/proc/kallsyms";
/// Largest offset into a symbol that `symbolize` accepts (no kernel function comes close).
const MAX_SYMBOL_SIZE: u64 = 1 << 20;
const NO_MODULE: u32 = u32::MAX;

/// Errors from loading or parsing kallsyms.
#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    #[error("cannot read {PATH}: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "{PATH}: every symbol address is 0 (kernel.kptr_restrict={0}, or not running as root): \
         run as root, or `sysctl kernel.kptr_restrict=0`"
    )]
    Restricted(String),
    #[error("kallsyms line {line}: {reason}: {text:?}")]
    Malformed {
        line: usize,
        reason: &'static str,
        text: String,
    },
    #[error("kallsyms: no text symbols")]
    Empty,
}

#[derive(Debug, Clone, Copy)]
struct Sym {
    addr: u64,
    name_start: u32,
    name_len: u32,
    module: u32,
}

/// Kernel text symbols sorted by address.
#[derive(Debug, Default)]
pub struct Kallsyms {
    syms: Vec<Sym>,
    names: String,
    modules: Vec<String>,
}

/// Kallsyms being read, one line at a time.
#[derive(Default)]
struct Parser {
    k: Kallsyms,
    module_ids: HashMap<String, u32>,
    any_nonzero: bool,
}

impl Parser {
    /// Line `i` (0-based) of the file.
    fn line(&mut self, i: usize, line: &str) -> Result<(), KallsymsError> {
        let line = line.trim_end_matches('\n');
        let malformed = |reason| KallsymsError::Malformed {
            line: i + 1,
            reason,
            text: line.into(),
        };
        let mut fields = line.split_ascii_whitespace();
        let Some(addr) = fields.next() else {
            return Ok(());
        };
        let (Some(kind), Some(name)) = (fields.next(), fields.next()) else {
            return Err(malformed("expected 'address type name'"));
        };
        // `__pfx_<f>` (kernels since 6.2) labels the padding before every function: half
        // of all text symbols, never where a packet is dropped.
        if !matches!(kind, "t" | "T" | "w" | "W") || name.starts_with("__pfx_") {
            return Ok(());
        }
        let addr = u64::from_str_radix(addr, 16).map_err(|_| malformed("bad address"))?;
        self.any_nonzero |= addr != 0;
        let k = &mut self.k;
        let module = match fields.next() {
            Some(m) => {
                let m = m.trim_start_matches('[').trim_end_matches(']');
                match self.module_ids.get(m) {
                    Some(&id) => id,
                    None => {
                        let id = k.modules.len() as u32;
                        k.modules.push(m.to_string());
                        self.module_ids.insert(m.to_string(), id);
                        id
                    }
                }
            }
            None => NO_MODULE,
        };
        let too_big = |_| malformed("symbol table too large");
        let name_start = u32::try_from(k.names.len()).map_err(too_big)?;
        k.names.push_str(name);
        k.syms.push(Sym {
            addr,
            name_start,
            name_len: u32::try_from(name.len()).map_err(too_big)?,
            module,
        });
        Ok(())
    }

    fn finish(self) -> Result<Kallsyms, KallsymsError> {
        let mut k = self.k;
        if k.syms.is_empty() {
            return Err(KallsymsError::Empty);
        }
        if !self.any_nonzero {
            return Err(KallsymsError::Restricted("?".into()));
        }
        k.syms.retain(|s| s.addr != 0);
        k.syms.sort_by_key(|s| s.addr);
        // Held for the whole run: no growth slack.
        k.syms.shrink_to_fit();
        k.names.shrink_to_fit();
        Ok(k)
    }
}

impl Kallsyms {
    /// Loads `/proc/kallsyms`, line by line (the text is ~10 MB; only the text symbols are
    /// kept, in a few MB).
    pub fn load() -> Result<Kallsyms, KallsymsError> {
        use std::io::BufRead as _;
        let mut reader = std::io::BufReader::with_capacity(64 << 10, std::fs::File::open(PATH)?);
        let mut parser = Parser::default();
        let mut line = String::new();
        for i in 0.. {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                break;
            }
            parser.line(i, &line)?;
        }
        parser.finish().map_err(|e| match e {
            KallsymsError::Restricted(_) => KallsymsError::Restricted(
                std::fs::read_to_string("/proc/sys/kernel/kptr_restrict")
                    .map_or_else(|_| "?".into(), |s| s.trim().to_string()),
            ),
            e => e,
        })
    }

    /// Parses kallsyms text (the tests' fixtures): `ffffffff81e945a0 T sk_skb_reason_drop` or
    /// `ffffffffc0a01230 t veth_xmit\t[veth]`, in any order.
    #[cfg(test)]
    pub fn parse(text: &str) -> Result<Kallsyms, KallsymsError> {
        let mut parser = Parser::default();
        for (i, line) in text.lines().enumerate() {
            parser.line(i, line)?;
        }
        parser.finish()
    }

    fn name(&self, s: &Sym) -> &str {
        let start = s.name_start as usize;
        &self.names[start..start + s.name_len as usize]
    }

    /// Index of the symbol containing `addr` (first alias at its address).
    fn lookup(&self, addr: u64) -> Option<usize> {
        let mut i = self
            .syms
            .partition_point(|s| s.addr <= addr)
            .checked_sub(1)?;
        let base = self.syms[i].addr;
        if addr - base >= MAX_SYMBOL_SIZE || (i + 1 == self.syms.len() && addr != base) {
            return None;
        }
        while i > 0 && self.syms[i - 1].addr == base {
            i -= 1;
        }
        Some(i)
    }

    /// The function containing `addr` and the offset into it.
    #[cfg(test)]
    pub fn symbolize(&self, addr: u64) -> Option<(&str, u64)> {
        let s = &self.syms[self.lookup(addr)?];
        Some((self.name(s), addr - s.addr))
    }

    /// `function+0x1a`, `veth_xmit+0x10 [veth]` for module symbols, or the bare address
    /// (`0xffffffff81234567`) when unknown.
    pub fn format(&self, addr: u64) -> String {
        let Some(i) = self.lookup(addr) else {
            return format!("{addr:#x}");
        };
        let s = &self.syms[i];
        let name = self.name(s);
        match self.modules.get(s.module as usize) {
            Some(m) => format!("{name}+{:#x} [{m}]", addr - s.addr),
            None => format!("{name}+{:#x}", addr - s.addr),
        }
    }

    /// Address of the first (lowest) text symbol with this name.
    #[cfg(test)]
    pub fn addr_of(&self, name: &str) -> Option<u64> {
        self.syms
            .iter()
            .find(|s| self.name(s) == name)
            .map(|s| s.addr)
    }

    /// Number of text symbols.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.syms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81003000 T _etext
ffffffff81000100 T func_a
ffffffff81000000 T _stext
ffffffff81000000 T _text
ffffffff81000800 r some_rodata
ffffffff81001000 t helper_b
ffffffff82000000 D some_data
ffffffff81002000 W weak_fn
ffffffff83000000 b some_bss
0000000000000000 A fixed_percpu_data
ffffffffc0001000 t veth_xmit\t[veth]
ffffffffc0001200 t veth_open\t[veth]
ffffffffc0002000 T br_forward\t[bridge]
";

    #[test]
    fn kallsyms_sample() {
        let k = Kallsyms::parse(SAMPLE).unwrap();
        assert_eq!(k.len(), 9);
        assert_eq!(k.symbolize(0xffffffff81000000), Some(("_stext", 0)));
        assert_eq!(k.symbolize(0xffffffff81000100), Some(("func_a", 0)));
        assert_eq!(k.symbolize(0xffffffff81000900), Some(("func_a", 0x800)));
        assert_eq!(k.symbolize(0xffffffff81000fff), Some(("func_a", 0xeff)));
        assert_eq!(k.symbolize(0xffffffff81001004), Some(("helper_b", 4)));
        assert_eq!(k.symbolize(0xffffffff81002010), Some(("weak_fn", 0x10)));
        assert_eq!(k.symbolize(0xffffffffc0001234), Some(("veth_open", 0x34)));
        assert_eq!(k.format(0xffffffffc000101a), "veth_xmit+0x1a [veth]");
        assert_eq!(k.format(0xffffffff8100011a), "func_a+0x1a");
        assert_eq!(k.format(0xffffffff81000100), "func_a+0x0");
        // Below the first symbol, in the gap after _etext, past the last symbol.
        for addr in [
            0x1000,
            0xffffffff80ffffff,
            0xffffffff82000000,
            0xffffffffc0002001,
        ] {
            assert_eq!(k.symbolize(addr), None, "{addr:#x}");
            assert_eq!(k.format(addr), format!("{addr:#x}"));
        }
        assert_eq!(k.symbolize(0xffffffffc0002000), Some(("br_forward", 0)));
        assert_eq!(k.addr_of("helper_b"), Some(0xffffffff81001000));
        assert_eq!(k.addr_of("some_data"), None);
        assert_eq!(k.addr_of("veth_xmit"), Some(0xffffffffc0001000));
    }

    #[test]
    fn kallsyms_errors() {
        let restricted = "0000000000000000 T _stext\n0000000000000000 t helper\n";
        let e = Kallsyms::parse(restricted).unwrap_err();
        assert!(e.to_string().contains("every symbol address is 0"), "{e}");
        assert!(matches!(Kallsyms::parse(""), Err(KallsymsError::Empty)));
        assert!(matches!(
            Kallsyms::parse("ffffffff81000000 D data_only\n"),
            Err(KallsymsError::Empty)
        ));
        let e = Kallsyms::parse("ffffffff81000000 T a\nxyz T b\n").unwrap_err();
        assert_eq!(e.to_string(), "kallsyms line 2: bad address: \"xyz T b\"");
        assert!(Kallsyms::parse("ffffffff81000000 T\n").is_err());
    }

    #[test]
    fn kallsyms_running_kernel() {
        let t = std::time::Instant::now();
        let k = match Kallsyms::load() {
            Ok(k) => k,
            Err(e) => {
                eprintln!("skipped: {e}");
                return;
            }
        };
        let ms = t.elapsed().as_secs_f64() * 1e3;
        eprintln!("loaded {} text symbols in {ms:.1} ms", k.len());
        let drop = ["kfree_skb_reason", "sk_skb_reason_drop"]
            .iter()
            .find_map(|n| k.addr_of(n).map(|a| (n, a)));
        let (name, addr) = drop.expect("kfree_skb_reason or sk_skb_reason_drop");
        eprintln!("{name} at {addr:#x}");
        assert_eq!(k.symbolize(addr + 4), Some((*name, 4)));
        let ip_forward = k.addr_of("ip_forward").expect("ip_forward");
        assert_eq!(k.format(ip_forward + 0x10), "ip_forward+0x10");
    }
}
