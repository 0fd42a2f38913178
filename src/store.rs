//! The shared key-value store the limiter counts in, behind a trait.
//!
//! In Envoy it is proxy-wasm shared data (see `host.rs`); in tests, [`MemoryStore`], which
//! reproduces the host's semantics exactly: every write stamps a fresh global cas, a write with a
//! non-zero cas must match, and a write to a missing key succeeds whatever cas it carries.

use std::cell::RefCell;
use std::collections::HashMap;

/// A write lost a compare-and-swap race.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CasMismatch;

pub trait SharedStore {
    /// The value and its cas; `(None, None)` when the key does not exist.
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes `value` if `cas` is `None`, the key is missing, or `cas` is the key's current cas.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasMismatch>;
}

/// An in-process store with the host's semantics, for tests and the native tools.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: RefCell<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    map: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.inner.borrow().map.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Total bytes of keys and values, the part of host memory the filter controls.
    pub fn payload_bytes(&self) -> usize {
        self.inner
            .borrow()
            .map
            .iter()
            .map(|(k, (v, _))| k.len() + v.len())
            .sum()
    }

    /// Overwrites a value unconditionally, as another plugin sharing the namespace might.
    pub fn force(&self, key: &str, value: &[u8]) {
        self.set(key, value, None).expect("unconditional write");
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.inner.borrow().map.get(key) {
            Some((value, cas)) if value.is_empty() => (None, Some(*cas)),
            Some((value, cas)) => (Some(value.clone()), Some(*cas)),
            None => (None, None),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasMismatch> {
        let mut inner = self.inner.borrow_mut();
        inner.next_cas = inner.next_cas.wrapping_add(1).max(1);
        let stamp = inner.next_cas;
        match inner.map.get_mut(key) {
            Some(entry) => {
                if let Some(expected) = cas.filter(|&c| c != 0) {
                    if expected != entry.1 {
                        return Err(CasMismatch);
                    }
                }
                *entry = (value.to_vec(), stamp);
            }
            None => {
                inner.map.insert(key.to_string(), (value.to_vec(), stamp));
            }
        }
        Ok(())
    }
}

/// The hash seed every worker of this Envoy process uses: the first worker to configure stores
/// its random `candidate` under `key` (a create-if-absent write, see [`crate::limiter::CREATE_CAS`]),
/// and every worker, the canary VM and later config reloads read that one back. `None` if the
/// store could not settle on one (the caller keeps its own seed).
pub fn shared_seed(store: &dyn SharedStore, key: &str, candidate: u64) -> Option<u64> {
    for _ in 0..4 {
        match store.get(key) {
            (Some(value), _) if value.len() == 8 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&value);
                return Some(u64::from_le_bytes(bytes));
            }
            // Missing: create it; another value (not ours): replace it under its cas.
            (_, cas) => {
                let _ = store.set(
                    key,
                    &candidate.to_le_bytes(),
                    Some(cas.unwrap_or(crate::limiter::CREATE_CAS)),
                );
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_settles_on_the_first_seed() {
        let store = MemoryStore::new();
        assert_eq!(shared_seed(&store, "p/v1/seed", 111), Some(111));
        assert_eq!(
            shared_seed(&store, "p/v1/seed", 222),
            Some(111),
            "a later worker reads the first seed"
        );
        // A foreign value under the key is replaced, not misread.
        store.force("q/v1/seed", b"not a seed");
        assert_eq!(shared_seed(&store, "q/v1/seed", 333), Some(333));
    }

    #[test]
    fn racing_creators_agree() {
        struct Racing<'a> {
            inner: &'a MemoryStore,
            raced: std::cell::Cell<bool>,
        }
        impl SharedStore for Racing<'_> {
            fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
                let read = self.inner.get(key);
                if !self.raced.replace(true) {
                    // Another worker creates the seed between this read and this write.
                    assert_eq!(shared_seed(self.inner, key, 7), Some(7));
                }
                read
            }
            fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasMismatch> {
                self.inner.set(key, value, cas)
            }
        }
        let store = MemoryStore::new();
        let racing = Racing {
            inner: &store,
            raced: std::cell::Cell::new(false),
        };
        assert_eq!(
            shared_seed(&racing, "k", 9),
            Some(7),
            "the second creator adopts the first one's seed"
        );
    }

    #[test]
    fn behaves_like_envoy_shared_data() {
        let store = MemoryStore::new();
        assert_eq!(store.get("k"), (None, None));
        // A missing key accepts any cas: creation is not atomic.
        store.set("k", b"a", Some(12345)).unwrap();
        let (value, cas) = store.get("k");
        assert_eq!(value.as_deref(), Some(&b"a"[..]));
        let cas = cas.unwrap();
        assert_eq!(
            store.set("k", b"b", Some(cas.wrapping_add(1))),
            Err(CasMismatch)
        );
        store.set("k", b"b", Some(cas)).unwrap();
        assert_eq!(
            store.set("k", b"c", Some(cas)),
            Err(CasMismatch),
            "cas is single-use"
        );
        store.set("k", b"c", None).unwrap();
        // An emptied key reads as no value with a cas: it still exists.
        store.set("k", b"", None).unwrap();
        let (value, cas) = store.get("k");
        assert_eq!(value, None);
        assert!(cas.is_some());
    }
}
