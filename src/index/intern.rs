//! Interning: id strings ↔ dense slot numbers. Names live in one arena string and the table
//! is a `hashbrown::HashTable` of spans into it.

use std::cmp::Ordering;
use std::marker::PhantomData;

use hashbrown::HashTable;

use super::{sort_slots, Slot, NONE};

/// Maps id strings to dense slot numbers and back. Names live in one arena string, so that
/// interning allocates nothing per id.
// INVARIANT: a slot, once interned outside a batch that is later reverted, names the same id for
// the life of the interner: slots are never reused (only `truncate` forgets ids, and only those
// first seen by a batch being reverted). The JS wrapper caches id → slot on that basis.
#[derive(Debug, Clone)]
pub(crate) struct Interner<S> {
    raw: RawInterner,
    kind: PhantomData<S>,
}

impl<S> Default for Interner<S> {
    fn default() -> Self {
        Self { raw: RawInterner::default(), kind: PhantomData }
    }
}

/// The interner on raw slot numbers: one copy of the code in the `.wasm` whatever the number
/// of slot types (the typed wrapper's conversions inline away).
#[derive(Debug, Clone, Default)]
struct RawInterner {
    table: HashTable<Entry>,
    arena: String,
    spans: Vec<(u32, u32)>,
}

/// A table entry carries its name's span, so a lookup reads the table and the arena only.
#[derive(Debug, Clone, Copy)]
struct Entry {
    slot: u32,
    start: u32,
    len: u32,
}

impl Entry {
    #[inline(always)]
    fn bytes<'a>(&self, arena: &'a str) -> &'a [u8] {
        arena.as_bytes().get(self.start as usize..self.start as usize + self.len as usize).unwrap_or(&[])
    }
}

/// The Fx hash (as in `rustc-hash`) of an id, a word at a time. Written out with plain loops so
/// that it inlines into lookups: in wasm, the calls to the generic hasher and to `memcmp` were
/// a third of the cost of a lookup (ids are short).
#[inline(always)]
fn hash_bytes(mut s: &[u8]) -> u64 {
    const K: u64 = 0xf135_7aea_2e62_a9c5;
    let mut h = s.len() as u64;
    while let Some((w, rest)) = s.split_first_chunk::<8>() {
        h = h.wrapping_add(u64::from_le_bytes(*w)).wrapping_mul(K);
        s = rest;
    }
    if !s.is_empty() {
        let mut w = 0u64;
        for &b in s {
            w = w << 8 | u64::from(b);
        }
        h = h.wrapping_add(w).wrapping_mul(K);
    }
    h.rotate_left(26)
}

/// Byte equality a word at a time, without a call to `memcmp`.
#[inline(always)]
fn same(mut a: &[u8], mut b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    while let (Some((x, ra)), Some((y, rb))) = (a.split_first_chunk::<8>(), b.split_first_chunk::<8>()) {
        if u64::from_le_bytes(*x) != u64::from_le_bytes(*y) {
            return false;
        }
        (a, b) = (ra, rb);
    }
    let mut i = 0;
    while let (Some(x), Some(y)) = (a.get(i), b.get(i)) {
        if x != y {
            return false;
        }
        i += 1;
    }
    true
}

impl RawInterner {
    /// The slot of an id given as bytes. One copy of the lookup for all callers.
    #[inline(never)]
    fn get_bytes(&self, s: &[u8]) -> Option<u32> {
        self.table.find(hash_bytes(s), |e| same(e.bytes(&self.arena), s)).map(|e| e.slot)
    }

    fn intern(&mut self, s: &str) -> u32 {
        let (arena, spans) = (&mut self.arena, &mut self.spans);
        let bytes = s.as_bytes();
        let entry =
            self.table.entry(hash_bytes(bytes), |e| same(e.bytes(arena), bytes), |e| hash_bytes(e.bytes(arena)));
        match entry {
            hashbrown::hash_table::Entry::Occupied(e) => e.get().slot,
            hashbrown::hash_table::Entry::Vacant(e) => {
                // INVARIANT: fewer than u32::MAX ids and arena bytes (both bounded by the input size).
                let slot = u32::try_from(spans.len()).unwrap_or(NONE - 1);
                let start = u32::try_from(arena.len()).unwrap_or(u32::MAX);
                let len = s.len() as u32;
                arena.push_str(s);
                spans.push((start, len));
                e.insert(Entry { slot, start, len });
                slot
            }
        }
    }

    fn reserve(&mut self, n: usize) {
        let arena = &self.arena;
        self.table.reserve(n, |e| hash_bytes(e.bytes(arena)));
        self.spans.reserve(n);
        self.arena.reserve(n.saturating_mul(16));
    }

    fn truncate(&mut self, len: usize) {
        while self.spans.len() > len {
            let i = (self.spans.len() - 1) as u32;
            let h = hash_bytes(name_in(&self.arena, &self.spans, i).as_bytes());
            if let Ok(entry) = self.table.find_entry(h, |e| e.slot == i) {
                entry.remove();
            }
            if let Some((start, _)) = self.spans.pop() {
                self.arena.truncate(start as usize);
            }
        }
    }
}

impl<S: Slot> Interner<S> {
    #[inline(always)]
    pub(crate) fn get(&self, s: &str) -> Option<S> {
        self.get_bytes(s.as_bytes())
    }

    /// The slot of an id given as bytes (ids are ASCII).
    #[inline(always)]
    pub(crate) fn get_bytes(&self, s: &[u8]) -> Option<S> {
        self.raw.get_bytes(s).map(S::from_raw)
    }

    /// The slot of `s`, interning it when new.
    #[inline(always)]
    pub(crate) fn intern(&mut self, s: &str) -> S {
        S::from_raw(self.raw.intern(s))
    }

    #[inline(always)]
    pub(crate) fn name(&self, i: S) -> &str {
        name_in(&self.raw.arena, &self.raw.spans, i.raw())
    }

    /// Sorts slots by their ids.
    pub(crate) fn sort(&self, slots: &mut [S]) {
        sort_slots(slots, &|a, b| self.cmp(a, b));
    }

    /// Compares two slots by their ids.
    #[inline(always)]
    pub(crate) fn cmp(&self, a: S, b: S) -> Ordering {
        self.name(a).cmp(self.name(b))
    }

    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.raw.spans.len()
    }

    /// Makes room for `n` more ids (of about 16 bytes each).
    #[inline(always)]
    pub(crate) fn reserve(&mut self, n: usize) {
        self.raw.reserve(n);
    }

    /// Forgets every id interned at or after `len`.
    #[inline(always)]
    pub(crate) fn truncate(&mut self, len: usize) {
        self.raw.truncate(len);
    }
}

#[inline(always)]
fn name_in<'a>(arena: &'a str, spans: &[(u32, u32)], i: u32) -> &'a str {
    spans
        .get(i as usize)
        .and_then(|&(start, len)| arena.get(start as usize..start as usize + len as usize))
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn interns_finds_and_forgets() {
        let mut t = Interner::<u32>::default();
        let ids: Vec<String> = (0..3000).map(|i| format!("id-{i}")).chain(["x".repeat(128)]).collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(t.intern(id), i as u32);
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(t.get(id), Some(i as u32), "{id}");
            assert_eq!(t.name(i as u32), id);
        }
        assert_eq!(t.get(&"x".repeat(127)), None);
        assert_eq!(t.get(""), None);
        t.truncate(1000);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(t.get(id), (i < 1000).then_some(i as u32), "{id}");
        }
        assert_eq!(t.intern("id-2000"), 1000, "forgotten ids are interned afresh");
    }
}
