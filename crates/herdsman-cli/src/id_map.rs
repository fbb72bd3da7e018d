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

/// The fewest and the most slots of an [`IdSlots`] table.
const SLOTS: (usize, usize) = (64, 1 << 16);

/// Values keyed by attempt id, for ids whose indices lie close together (the attempts in
/// flight, at most a window apart): one slot per index modulo a power of two, so that
/// storing and taking an entry is a mask and a compare, no hashing. An id whose slot holds
/// another id (a retry of the same record, or a record far behind the others) goes to an
/// [`IdMap`] beside the slots, so every id is kept whatever the spread of the indices.
///
/// A slot is a plain id and value, empty when its attempt number is 0 (attempt numbers
/// start at 1; an id with attempt 0 is kept beside the slots), so that no `Option` is
/// wrapped and unwrapped per entry.
pub struct IdSlots<V> {
    slots: Vec<Slot<V>>,
    mask: u64,
    overflow: IdMap<V>,
}

/// One slot of an [`IdSlots`] table: empty when `attempt` is 0.
#[derive(Clone, Copy, Default)]
struct Slot<V> {
    index: u64,
    attempt: u32,
    value: V,
}

impl<V> Slot<V> {
    #[inline(always)]
    fn holds(&self, id: &AttemptId) -> bool {
        self.attempt == id.attempt && self.index == id.index
    }
}

impl<V: Copy + Default> IdSlots<V> {
    /// A table for about `in_flight` ids at a time (its slots are that number rounded up to
    /// a power of two, between 64 and 65,536).
    pub fn new(in_flight: usize) -> IdSlots<V> {
        let n = in_flight.clamp(SLOTS.0, SLOTS.1).next_power_of_two();
        IdSlots {
            slots: vec![Slot::default(); n],
            mask: n as u64 - 1,
            overflow: IdMap::default(),
        }
    }

    /// Stores `value` for `id` (replacing the value it had).
    #[inline]
    pub fn insert(&mut self, id: AttemptId, value: V) {
        let slot = &mut self.slots[(id.index & self.mask) as usize];
        if slot.holds(&id) {
            slot.value = value;
        } else if slot.attempt == 0 && id.attempt != 0 {
            // The id may have gone beside the slots while its slot was taken.
            if !self.overflow.is_empty() {
                self.overflow.remove(&id);
            }
            *slot = Slot {
                index: id.index,
                attempt: id.attempt,
                value,
            };
        } else {
            self.overflow.insert(id, value);
        }
    }

    /// Takes `id`'s value out of the table.
    #[cfg(test)]
    pub fn remove(&mut self, id: &AttemptId) -> Option<V> {
        self.take_if(id, |_| true)
    }

    /// Takes `id`'s value out of the table if `take` says so (else leaves it there).
    #[inline]
    pub fn take_if(&mut self, id: &AttemptId, take: impl FnOnce(&V) -> bool) -> Option<V> {
        let slot = &mut self.slots[(id.index & self.mask) as usize];
        if slot.holds(id) && id.attempt != 0 {
            if !take(&slot.value) {
                return None;
            }
            slot.attempt = 0;
            Some(slot.value)
        } else if self.overflow.is_empty() {
            None
        } else {
            match self.overflow.get(id) {
                Some(v) if take(v) => self.overflow.remove(id),
                _ => None,
            }
        }
    }

    /// Whether the table holds no id.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.overflow.is_empty() && self.slots.iter().all(|s| s.attempt == 0)
    }
}

impl<V: Copy + Default> Extend<(AttemptId, V)> for IdSlots<V> {
    fn extend<T: IntoIterator<Item = (AttemptId, V)>>(&mut self, iter: T) {
        for (id, v) in iter {
            self.insert(id, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: u64, attempt: u32) -> AttemptId {
        AttemptId { index, attempt }
    }

    #[test]
    fn slots_keep_every_id_whatever_its_index() {
        let mut t = IdSlots::new(4);
        // 64 slots: 0, 64 and 128 share one; retries share their record's.
        let ids = [
            id(0, 1),
            id(64, 1),
            id(0, 2),
            id(128, 1),
            id(5, 1),
            id(0, 3),
        ];
        for (n, i) in ids.iter().enumerate() {
            t.insert(*i, n);
        }
        t.insert(id(64, 1), 100);
        assert_eq!(t.remove(&id(0, 1)), Some(0));
        // The slot is free again; an id stored beside it moves in without a duplicate.
        t.insert(id(0, 2), 200);
        assert_eq!(t.remove(&id(0, 2)), Some(200));
        assert_eq!(t.remove(&id(0, 2)), None);
        assert_eq!(t.remove(&id(64, 1)), Some(100));
        assert_eq!(t.remove(&id(128, 1)), Some(3));
        assert_eq!(t.remove(&id(7, 1)), None);
        assert_eq!(t.remove(&id(5, 1)), Some(4));
        assert!(!t.is_empty());
        assert_eq!(t.remove(&id(0, 3)), Some(5));
        assert!(t.is_empty());
    }
}
