//! The index slab: values keyed by consecutive item indices (the copies kept for retries).

use rustc_hash::FxHashMap as HashMap;

/// Values keyed by consecutive indices, pushed in index order and removed in any order.
///
/// Dense values live in a ring from the oldest live index on; a straggler that stays while
/// many later indices come and go (an item waiting long for its retry) moves to a side map,
/// so memory follows the number of live values, never the distance between them.
pub(crate) struct IndexSlab<T> {
    base: u64,
    slots: std::collections::VecDeque<Option<T>>,
    /// Values in `slots`.
    live: usize,
    /// Stragglers moved out of the ring, all below `base`.
    far: HashMap<u64, T>,
}

impl<T> Default for IndexSlab<T> {
    fn default() -> Self {
        IndexSlab {
            base: 0,
            slots: Default::default(),
            live: 0,
            far: HashMap::default(),
        }
    }
}

impl<T> IndexSlab<T> {
    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0 && self.far.is_empty()
    }

    /// Store the value of `index`, which must follow every index pushed before.
    pub(crate) fn push(&mut self, index: u64, v: T) {
        if self.slots.is_empty() {
            self.base = index;
        }
        while self.base + (self.slots.len() as u64) < index {
            self.slots.push_back(None);
        }
        self.slots.push_back(Some(v));
        self.live += 1;
        // Mostly holes: move the oldest values aside until the ring is dense again.
        while self.slots.len() > 64 && self.slots.len() > 4 * self.live {
            if let Some(Some(v)) = self.slots.pop_front() {
                self.far.insert(self.base, v);
                self.live -= 1;
            }
            self.base += 1;
            self.trim();
        }
    }

    fn trim(&mut self) {
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
    }

    pub(crate) fn get(&self, index: u64) -> Option<&T> {
        if index < self.base {
            return self.far.get(&index);
        }
        let pos = index - self.base;
        self.slots.get(pos as usize)?.as_ref()
    }

    pub(crate) fn remove(&mut self, index: u64) -> Option<T> {
        if index < self.base {
            return self.far.remove(&index);
        }
        let pos = (index - self.base) as usize;
        let v = self.slots.get_mut(pos)?.take();
        if v.is_some() {
            self.live -= 1;
        }
        self.trim();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::IndexSlab;

    #[test]
    fn index_slab_keeps_values_until_removed() {
        let mut s = IndexSlab::default();
        for i in 0..5u64 {
            s.push(i, i * 10);
        }
        assert_eq!(s.remove(2), Some(20));
        assert_eq!(s.remove(2), None);
        assert_eq!(s.remove(0), Some(0));
        assert_eq!(s.get(1), Some(&10));
        assert_eq!(s.remove(1), Some(10));
        assert_eq!(s.get(3), Some(&30));
        s.push(7, 70);
        assert_eq!(s.get(5), None);
        assert_eq!(s.get(7), Some(&70));
        for i in [3, 4, 7] {
            assert!(s.remove(i).is_some());
        }
        assert!(s.is_empty());
    }

    #[test]
    fn index_slab_memory_follows_live_values_not_their_spread() {
        let mut s = IndexSlab::default();
        s.push(0, 0u64);
        for i in 1..100_000u64 {
            s.push(i, i);
            assert_eq!(s.remove(i), Some(i));
        }
        assert!(s.slots.len() <= 64, "ring of {} slots", s.slots.len());
        assert_eq!(s.get(0), Some(&0));
        assert_eq!(s.remove(0), Some(0));
        assert!(s.is_empty());
    }
}
