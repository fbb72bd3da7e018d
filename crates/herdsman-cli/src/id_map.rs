//! A hash map keyed by attempt ids with a cheap hasher: the ids are small integers from one
//! run, not input an attacker picks, so a multiply is enough (SipHash per attempt is a
//! visible share of a trivial transform's cost on the engine's thread).
//!
//! It must never be used for keys that come from the input.

use std::collections::HashMap;

use herdsman::AttemptId;

/// Mixes an attempt id's integers with a rotate and a multiply.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map from attempt ids to `V`.
pub type IdMap<V> = HashMap<AttemptId, V, std::hash::BuildHasherDefault<IdHasher>>;
