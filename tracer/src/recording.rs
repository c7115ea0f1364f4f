//! The recording file: raw kernel records framed with where they came from, so that a capture
//! can be correlated later (`tracer replay`) exactly as it would have been live.
//!
//! ```text
//! file    := magic "TRACEREC" | version u32 | header_len u32 | header (JSON) | frame*
//! frame   := kind u8 | 0 u8 | source u16 | len u32 | payload[len]
//! ```
//!
//! Integers are little-endian. Payloads of `FRAME_RECORD` are the ring-buffer records as the
//! kernel wrote them (native byte order, which the header states; the reader refuses a file of
//! the other order). The header holds what correlation needs that the records do not carry:
//! the machine (host name, machine and boot id, kernel, clock source), the nodes, their
//! interfaces, addresses and routes, and the clock. Drop reasons and drop
//! locations are kernel-specific, so the recorder writes the name of each value (`FRAME_REASON`,
//! `FRAME_LOCATION`) before the first record that uses it. `FRAME_TICK` marks the end of a
//! drain with the monotonic time the live pipeline would have expired traces at; `FRAME_LOSS`
//! says the ring buffers lost events between two drains (traces in flight then are not called
//! lost); `FRAME_LINK` says a node gained or lost a traced interface (pods come and go);
//! `FRAME_CLOCK` relates the machine's CLOCK_MONOTONIC to its wall clocks (written at
//! the start and every second, for merging recordings of several machines); `FRAME_STATE`
//! holds a node's live state (routes, neighbours, FDB, tunnels, sysctls, firewall: see
//! `crate::state`), read when recording starts, so that `tracer check` can audit the nodes of
//! several recordings against each other later; `FRAME_END` holds
//! the tracer's own loss counters. A file cut short (a killed recorder, a full disk) is
//! read up to its last whole frame and reported as truncated.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{
    machine::{ClockSample, Machine},
    model::{LinkChange, LossCounters},
    state::NodeState,
    topology::Topology,
};

pub const MAGIC: [u8; 8] = *b"TRACEREC";
/// Written by this tracer. Version 3 may hold records with packet bytes (`--snaplen`), which
/// a tracer that reads only version 2 would count as undecodable; versions 1 (no machine
/// identity, no clock frames) and 2 are still read.
pub const VERSION: u32 = 3;
const OLDEST_VERSION: u32 = 1;

/// A raw record from a ring buffer; `source` is a node index or `SOURCE_HOOKS`.
pub const FRAME_RECORD: u8 = 1;
/// `value u32 | name`: the kernel's name of a drop reason value.
pub const FRAME_REASON: u8 = 2;
/// `addr u64 | symbol`: the symbol of a drop location.
pub const FRAME_LOCATION: u8 = 3;
/// `now_ns u64`: a drain ended at this CLOCK_MONOTONIC time.
pub const FRAME_TICK: u8 = 4;
/// The trailer (JSON): the tracer's own losses and how the recording ended.
pub const FRAME_END: u8 = 5;
/// `from_ns u64 | to_ns u64`: the ring buffers lost events between these two drains.
pub const FRAME_LOSS: u8 = 6;

/// `mono_ns u64 | realtime_ns u64 | tai_ns u64 | err_ns u32`: the clocks read together.
pub const FRAME_CLOCK: u8 = 7;

/// JSON of a `LinkChange`: node `source` gained or lost a traced interface.
pub const FRAME_LINK: u8 = 8;

/// JSON of a `NodeState`: the live state of node `source`.
pub const FRAME_STATE: u8 = 9;

/// `source` of records from the global hooks (drops, route lookups, probes).
pub const SOURCE_HOOKS: u16 = u16::MAX;

const FRAME_HEADER: usize = 8;
/// No kernel record comes near this; a larger length means a corrupt file.
const MAX_PAYLOAD: u32 = 1 << 20;
/// A node's state with a large firewall (thousands of Calico rules) can be several MiB.
const MAX_STATE_PAYLOAD: u32 = 64 << 20;
const MAX_HEADER: u32 = 64 << 20;

/// Why a recording cannot be read.
#[derive(Debug, Error)]
pub enum RecordError {
    #[error("not a tracer recording (it does not start with \"TRACEREC\")")]
    BadMagic,
    #[error(
        "recording format version {0}; this tracer reads versions {OLDEST_VERSION} to {VERSION}"
    )]
    UnsupportedVersion(u32),
    #[error("the recording's header is unreadable: {0}")]
    BadHeader(String),
    #[error("recorded on a {0}-endian machine; replay it on one of the same byte order")]
    ByteOrder(String),
    #[error("corrupt frame at byte {offset}: {what}")]
    Corrupt { offset: u64, what: String },
    #[error("the recording ends in the middle of a frame at byte {offset} (the recorder was stopped abruptly or the disk filled up)")]
    Truncated { offset: u64 },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What a recording knows about the capture it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub tracer_version: String,
    pub host: String,
    /// The machine recorded on (empty in version 1 recordings).
    #[serde(default)]
    pub machine: Machine,
    pub kernel: String,
    /// Wall clock when recording started, ms since the epoch.
    pub started_unix_ms: u64,
    /// `little` or `big`: the byte order of the raw records.
    pub byte_order: String,
    /// Clock of the records' timestamps (`shared-kernel`: one CLOCK_MONOTONIC for all nodes).
    pub clock: String,
    /// The kernel filter, normalised (`none` when everything matched).
    pub filter: String,
    /// One packet in `sample` was recorded.
    pub sample: u32,
    /// Whether drops, route lookups and probes were recorded (not with `--no-drops`).
    pub hooks: bool,
    /// Packet bytes kept per hop and drop (`--snaplen`; 0 and in older recordings: none).
    #[serde(default)]
    pub snaplen: u32,
    pub topology: Topology,
}

/// The last frame of a recording that ended cleanly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailer {
    /// Kernel-side counters of the tracer's own losses and exclusions.
    pub loss: LossCounters,
    /// Records written.
    pub records: u64,
    /// Wall clock when recording ended, ms since the epoch.
    pub ended_unix_ms: u64,
}

pub fn native_byte_order() -> &'static str {
    if cfg!(target_endian = "little") {
        "little"
    } else {
        "big"
    }
}

/// Writes a recording. Frames go through `W` as they are; wrap a file in a `BufWriter`.
pub struct Writer<W: Write> {
    out: W,
    records: u64,
    /// Bytes written so far, header included.
    bytes: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(mut out: W, header: &Header) -> Result<Self, RecordError> {
        let json = serde_json::to_vec(header).map_err(|e| RecordError::BadHeader(e.to_string()))?;
        out.write_all(&MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&(json.len() as u32).to_le_bytes())?;
        out.write_all(&json)?;
        Ok(Writer {
            out,
            records: 0,
            bytes: 16 + json.len() as u64,
        })
    }

    fn frame(&mut self, kind: u8, source: u16, parts: &[&[u8]]) -> io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut head = [0u8; FRAME_HEADER];
        head[0] = kind;
        head[2..4].copy_from_slice(&source.to_le_bytes());
        head[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        self.out.write_all(&head)?;
        self.bytes += (FRAME_HEADER + len) as u64;
        for p in parts {
            self.out.write_all(p)?;
        }
        Ok(())
    }

    /// A raw ring-buffer record from `source` (node index or `SOURCE_HOOKS`).
    pub fn record(&mut self, source: u16, data: &[u8]) -> io::Result<()> {
        self.records += 1;
        self.frame(FRAME_RECORD, source, &[data])
    }

    pub fn reason(&mut self, value: u32, name: &str) -> io::Result<()> {
        self.frame(FRAME_REASON, 0, &[&value.to_le_bytes(), name.as_bytes()])
    }

    pub fn location(&mut self, addr: u64, symbol: &str) -> io::Result<()> {
        self.frame(FRAME_LOCATION, 0, &[&addr.to_le_bytes(), symbol.as_bytes()])
    }

    pub fn tick(&mut self, now_ns: u64) -> io::Result<()> {
        self.frame(FRAME_TICK, 0, &[&now_ns.to_le_bytes()])
    }

    /// Node `node` gained or lost a traced interface (a pod came or went).
    pub fn link(&mut self, node: u16, change: &LinkChange) -> io::Result<()> {
        let json = serde_json::to_vec(change).map_err(io::Error::other)?;
        self.frame(FRAME_LINK, node, &[&json])
    }

    /// The live state of node `node`.
    pub fn state(&mut self, node: u16, state: &NodeState) -> io::Result<()> {
        let json = serde_json::to_vec(state).map_err(io::Error::other)?;
        if json.len() > MAX_STATE_PAYLOAD as usize {
            return Err(io::Error::other(format!(
                "the state of node {} is {} MiB, more than a recording holds",
                state.node,
                json.len() >> 20
            )));
        }
        self.frame(FRAME_STATE, node, &[&json])
    }

    pub fn clock(&mut self, s: &ClockSample) -> io::Result<()> {
        self.frame(
            FRAME_CLOCK,
            0,
            &[
                &s.mono_ns.to_le_bytes(),
                &s.realtime_ns.to_le_bytes(),
                &s.tai_ns.to_le_bytes(),
                &s.err_ns.to_le_bytes(),
            ],
        )
    }

    pub fn loss(&mut self, from_ns: u64, to_ns: u64) -> io::Result<()> {
        self.frame(
            FRAME_LOSS,
            0,
            &[&from_ns.to_le_bytes(), &to_ns.to_le_bytes()],
        )
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes written so far (buffered or not), header included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes the trailer and flushes; returns the inner writer.
    pub fn finish(mut self, trailer: &Trailer) -> Result<W, RecordError> {
        let json =
            serde_json::to_vec(trailer).map_err(|e| RecordError::BadHeader(e.to_string()))?;
        self.frame(FRAME_END, 0, &[&json])?;
        self.out.flush()?;
        Ok(self.out)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// One frame read back.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Record { source: u16, data: &'a [u8] },
    Reason { value: u32, name: String },
    Location { addr: u64, symbol: String },
    Tick { now_ns: u64 },
    Loss { from_ns: u64, to_ns: u64 },
    Clock(ClockSample),
    Link { node: u16, change: LinkChange },
    State { node: u16, state: Box<NodeState> },
    End(Trailer),
}

/// Reads a recording frame by frame.
pub struct Reader<R: Read> {
    input: R,
    pub header: Header,
    buf: Vec<u8>,
    offset: u64,
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` on a clean end of input before the first byte,
/// `Truncated` on an end after it.
fn read_full(input: &mut impl Read, buf: &mut [u8], offset: u64) -> Result<bool, RecordError> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(RecordError::Truncated { offset }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

impl<R: Read> Reader<R> {
    pub fn new(mut input: R) -> Result<Self, RecordError> {
        let mut start = [0u8; 16];
        if !read_full(&mut input, &mut start, 0).map_err(|e| match e {
            RecordError::Truncated { .. } => RecordError::BadMagic,
            e => e,
        })? {
            return Err(RecordError::BadMagic);
        }
        if start[..8] != MAGIC {
            return Err(RecordError::BadMagic);
        }
        let version = u32::from_le_bytes(start[8..12].try_into().expect("4 bytes"));
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(RecordError::UnsupportedVersion(version));
        }
        let len = u32::from_le_bytes(start[12..16].try_into().expect("4 bytes"));
        if len > MAX_HEADER {
            return Err(RecordError::BadHeader(format!("{len} bytes long")));
        }
        let mut json = vec![0u8; len as usize];
        if !read_full(&mut input, &mut json, 16)? && len > 0 {
            return Err(RecordError::Truncated { offset: 16 });
        }
        let header: Header =
            serde_json::from_slice(&json).map_err(|e| RecordError::BadHeader(e.to_string()))?;
        if header.byte_order != native_byte_order() {
            return Err(RecordError::ByteOrder(header.byte_order));
        }
        Ok(Reader {
            input,
            header,
            buf: Vec::new(),
            offset: 16 + u64::from(len),
        })
    }

    /// The next frame; `None` at a clean end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, RecordError> {
        let at = self.offset;
        let mut head = [0u8; FRAME_HEADER];
        if !read_full(&mut self.input, &mut head, at)? {
            return Ok(None);
        }
        let kind = head[0];
        let source = u16::from_le_bytes([head[2], head[3]]);
        let len = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
        let limit = if kind == FRAME_STATE {
            MAX_STATE_PAYLOAD
        } else {
            MAX_PAYLOAD
        };
        if len > limit {
            return Err(RecordError::Corrupt {
                offset: at,
                what: format!("a frame of {len} bytes"),
            });
        }
        self.buf.resize(len as usize, 0);
        if len > 0 && !read_full(&mut self.input, &mut self.buf, at)? {
            return Err(RecordError::Truncated { offset: at });
        }
        self.offset = at + FRAME_HEADER as u64 + u64::from(len);
        let corrupt = |what: &str| RecordError::Corrupt {
            offset: at,
            what: what.to_string(),
        };
        let p = &self.buf[..];
        Ok(Some(match kind {
            FRAME_RECORD => Frame::Record { source, data: p },
            FRAME_REASON if p.len() >= 4 => Frame::Reason {
                value: u32::from_le_bytes(p[..4].try_into().expect("4 bytes")),
                name: String::from_utf8_lossy(&p[4..]).into_owned(),
            },
            FRAME_LOCATION if p.len() >= 8 => Frame::Location {
                addr: u64::from_le_bytes(p[..8].try_into().expect("8 bytes")),
                symbol: String::from_utf8_lossy(&p[8..]).into_owned(),
            },
            FRAME_TICK if p.len() == 8 => Frame::Tick {
                now_ns: u64::from_le_bytes(p.try_into().expect("8 bytes")),
            },
            FRAME_LOSS if p.len() == 16 => Frame::Loss {
                from_ns: u64::from_le_bytes(p[..8].try_into().expect("8 bytes")),
                to_ns: u64::from_le_bytes(p[8..].try_into().expect("8 bytes")),
            },
            FRAME_CLOCK if p.len() == 28 => {
                let u = |r: std::ops::Range<usize>| u64::from_le_bytes(p[r].try_into().expect("8"));
                Frame::Clock(ClockSample {
                    mono_ns: u(0..8),
                    realtime_ns: u(8..16),
                    tai_ns: u(16..24),
                    err_ns: u32::from_le_bytes(p[24..28].try_into().expect("4 bytes")),
                })
            }
            FRAME_LINK => Frame::Link {
                node: source,
                change: serde_json::from_slice(p)
                    .map_err(|e| corrupt(&format!("link change: {e}")))?,
            },
            FRAME_STATE => Frame::State {
                node: source,
                state: serde_json::from_slice(p)
                    .map_err(|e| corrupt(&format!("node state: {e}")))?,
            },
            FRAME_END => Frame::End(
                serde_json::from_slice(p).map_err(|e| corrupt(&format!("trailer: {e}")))?,
            ),
            FRAME_REASON | FRAME_LOCATION | FRAME_TICK | FRAME_LOSS | FRAME_CLOCK => {
                return Err(corrupt(&format!("frame kind {kind} of {len} bytes")))
            }
            other => return Err(corrupt(&format!("unknown frame kind {other}"))),
        }))
    }
}

#[cfg(test)]
pub(crate) mod tests;
