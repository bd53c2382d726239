//! [`SeatMap`]: a small map from string ids to values, kept sorted in one exactly sized
//! vector. Rooms hold a handful of members and calls; a `BTreeMap` allocates a whole
//! 11-entry node for the first one (≈ 1 KiB for two members), which every idle room kept.

use std::borrow::Borrow;

/// A map from ids to `V`, ordered by id like a `BTreeMap`, stored in one vector whose
/// capacity follows its length (it grows one entry at a time and shrinks when mostly empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatMap<V> {
    entries: Vec<(String, V)>,
}

impl<V> Default for SeatMap<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> SeatMap<V> {
    /// An empty map (no allocation).
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries the vector can hold without growing (for the memory regression tests).
    pub fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    /// The value of `key`.
    pub fn get<Q: Borrow<str> + ?Sized>(&self, key: &Q) -> Option<&V> {
        self.find(key.borrow()).ok().map(|i| &self.entries[i].1)
    }

    /// The value of `key`, mutably.
    pub fn get_mut<Q: Borrow<str> + ?Sized>(&mut self, key: &Q) -> Option<&mut V> {
        self.find(key.borrow()).ok().map(|i| &mut self.entries[i].1)
    }

    /// Whether `key` is present.
    pub fn contains_key<Q: Borrow<str> + ?Sized>(&self, key: &Q) -> bool {
        self.find(key.borrow()).is_ok()
    }

    /// Inserts or replaces; returns the previous value.
    pub fn insert(&mut self, key: String, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                if self.entries.len() == self.entries.capacity() {
                    self.entries.reserve_exact(1);
                }
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    /// Removes `key`; returns its value.
    pub fn remove<Q: Borrow<str> + ?Sized>(&mut self, key: &Q) -> Option<V> {
        let i = self.find(key.borrow()).ok()?;
        let (_, value) = self.entries.remove(i);
        if self.entries.capacity() > 4 && self.entries.len() <= self.entries.capacity() / 4 {
            self.entries.shrink_to_fit();
        }
        Some(value)
    }

    /// Ids in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.iter().map(|(k, _)| k)
    }

    /// Values in id order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    /// Entries in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// Removes every entry and frees the vector.
    pub fn clear(&mut self) {
        self.entries = Vec::new();
    }

    /// Values in id order, mutably.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.iter_mut().map(|(_, v)| v)
    }
}

impl<'a, V> IntoIterator for &'a SeatMap<V> {
    type Item = (&'a String, &'a V);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, V)>,
        fn(&'a (String, V)) -> (&'a String, &'a V),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

impl<V> FromIterator<(String, V)> for SeatMap<V> {
    fn from_iter<I: IntoIterator<Item = (String, V)>>(iter: I) -> Self {
        let mut entries: Vec<(String, V)> = iter.into_iter().collect();
        // Last value wins for a repeated id, as with a map built by inserts.
        entries.reverse();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|a, b| a.0 == b.0);
        entries.shrink_to_fit();
        Self { entries }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn capacity_follows_length() {
        let mut map = SeatMap::new();
        assert_eq!(map.capacity(), 0);
        for (i, id) in ["b", "a", "c"].into_iter().enumerate() {
            map.insert(id.to_owned(), i);
            assert_eq!(map.capacity(), i + 1, "grows one seat at a time");
        }
        assert_eq!(map.keys().cloned().collect::<Vec<_>>(), ["a", "b", "c"]);
        for i in 3..40 {
            map.insert(format!("k{i:02}"), i);
        }
        for i in 3..40 {
            map.remove(&format!("k{i:02}"));
        }
        assert_eq!(map.len(), 3);
        assert!(map.capacity() <= 12, "shrinks once mostly empty");
    }

    #[test]
    fn from_iter_sorts_and_keeps_the_last_duplicate() {
        let map: SeatMap<u32> = [
            ("b".to_owned(), 1),
            ("a".to_owned(), 2),
            ("b".to_owned(), 3),
        ]
        .into_iter()
        .collect();
        assert_eq!(map.len(), 2);
        assert_eq!(map.get("b"), Some(&3));
        assert_eq!(map.capacity(), 2);
    }

    proptest! {
        #[test]
        fn behaves_like_a_btreemap(ops in proptest::collection::vec((0u8..3, 0u8..12, any::<u16>()), 0..200)) {
            let mut model = BTreeMap::new();
            let mut map = SeatMap::new();
            for (op, key, value) in ops {
                let key = format!("id{key}");
                match op {
                    0 => prop_assert_eq!(map.insert(key.clone(), value), model.insert(key.clone(), value)),
                    1 => prop_assert_eq!(map.remove(&key), model.remove(&key)),
                    _ => {
                        if let (Some(a), Some(b)) = (map.get_mut(&key), model.get_mut(&key)) {
                            *a = value;
                            *b = value;
                        }
                    }
                }
                prop_assert_eq!(map.get(&key), model.get(&key));
                prop_assert!(map.keys().eq(model.keys()));
                prop_assert!(map.values().eq(model.values()));
                prop_assert!(map.capacity() <= 4 * map.len() + 4);
            }
        }
    }
}
