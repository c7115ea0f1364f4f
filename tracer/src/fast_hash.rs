//! A fast hash for the maps the pipeline looks up for every hop or trace (packet identities,
//! interfaces, flows): a multiply-rotate step per word with a final avalanche, a few
//! nanoseconds where the standard SipHash takes tens.
//!
//! Not a keyed hash: the tracer trades hash-flooding resistance for speed (an identity- or
//! flow-crafting pod can only slow down the lookups of its own chain or bucket). Integers are
//! taken whole (`write_u8` .. `write_u64`), byte strings eight bytes at a time.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Multiply-rotate hash with a final avalanche; fast on the few words of our keys.
#[derive(Clone, Copy, Default)]
pub struct FastHasher(u64);

impl FastHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    fn add(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(26) ^ v).wrapping_mul(Self::K);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.add(u64::from_le_bytes(b));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            // The length tells `[1]` from `[1, 0]`.
            self.add(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, v: u8) {
        self.add(u64::from(v));
    }

    fn write_u16(&mut self, v: u16) {
        self.add(u64::from(v));
    }

    fn write_u32(&mut self, v: u32) {
        self.add(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }

    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }

    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::*;

    fn hash(v: impl std::hash::Hash) -> u64 {
        BuildHasherDefault::<FastHasher>::default().hash_one(v)
    }

    fn bytes(b: &[u8]) -> u64 {
        let mut h = FastHasher::default();
        h.write(b);
        h.finish()
    }

    #[test]
    fn words_and_bytes_hash_apart() {
        assert_ne!(bytes(&[1]), bytes(&[1, 0]));
        assert_ne!(bytes(&[7; 8]), bytes(&[7; 9]));
        assert_ne!(hash(1u32), hash(2u32));
        assert_ne!(hash((1u16, 2u16)), hash((2u16, 1u16)));
        let long: Vec<u8> = (0..20).collect();
        let mut other = long.clone();
        other[17] = 99;
        assert_ne!(bytes(&long), bytes(&other));
    }
}
