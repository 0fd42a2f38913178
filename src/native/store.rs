//! The native store: the limiter's pages in this process's memory, shared by every worker
//! thread, with the semantics of proxy-wasm shared data (one value and one cas per key, every
//! write stamping a fresh cas, a write under a stale cas refused, a write to a missing key
//! accepted whatever cas it carries), but sharded and updated in place.
//!
//! - **Sharded**: a key's shard is chosen by its hash; each shard has its own lock, so workers
//!   deciding for different pages do not wait for each other (no global lock on the hot path).
//! - **In place**: [`SharedStore::update`] runs the engine's change on the value where it lies,
//!   under its shard's lock: no copy out and back per request, and no race to lose (the update
//!   loop of the trait's default, which the Wasm host runs over shared data, can lose a race and
//!   retry; this one cannot). A change that decides not to write may still have rolled the page
//!   to the present (the limiter's clock step, which the next writer would make the same way).
//! - **The same bound**: the store holds the keys the engine writes and nothing else; the
//!   engine bounds how many (a fixed number of pages per rule, see `store.max_clients`).
//! - **Lock-out free**: a lock is held only for one bounded, non-blocking change of one value; a
//!   panic inside one (caught at the C boundary) does not poison the shard for the others.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::engine::{CasMismatch, Contended, SharedStore};

/// How many shards: a power of two well above the worker count of one Envoy.
const SHARDS: usize = 64;

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    cas: u32,
}

/// A shard's map, hashed with FNV-1a rather than SipHash (~300 instructions a request less): its
/// keys are page keys the engine makes from a keyed, per-process hash of the client's key, not
/// strings a client chooses, so there is no flooding to guard against.
type Shard = HashMap<Box<str>, Entry, BuildHasherDefault<Fnv>>;

/// Pages by key, in [`SHARDS`] independently locked maps.
#[derive(Debug)]
pub struct NativeStore {
    shards: Box<[Mutex<Shard>]>,
    next_cas: AtomicU32,
}

impl Default for NativeStore {
    fn default() -> Self {
        NativeStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            next_cas: AtomicU32::new(0),
        }
    }
}

impl NativeStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        // Bits the shard's own map does not index by (it takes the low ones).
        let shard = &self.shards[(fnv1a(key.as_bytes()) >> 32) as usize % SHARDS];
        // A panic while a change held the lock leaves a value the engine reads defensively
        // (an unrecognised page starts afresh): the shard stays usable.
        shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A fresh cas, never 0 (0 means "no cas" to a writer).
    fn stamp(&self) -> u32 {
        loop {
            let cas = self
                .next_cas
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_add(1);
            if cas != 0 {
                return cas;
            }
        }
    }

    /// How many keys the store holds.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.len()))
            .sum()
    }

    /// Total bytes of keys and values.
    #[cfg(test)]
    pub fn payload_bytes(&self) -> usize {
        let shard_bytes = |m: &Shard| m.iter().map(|(k, e)| k.len() + e.value.len()).sum();
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| shard_bytes(&m)))
            .sum()
    }
}

impl SharedStore for NativeStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.shard(key).get(key) {
            Some(entry) if entry.value.is_empty() => (None, Some(entry.cas)),
            Some(entry) => (Some(entry.value.clone()), Some(entry.cas)),
            None => (None, None),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasMismatch> {
        let mut shard = self.shard(key);
        match shard.get_mut(key) {
            Some(entry) => {
                if cas.is_some_and(|c| c != 0 && c != entry.cas) {
                    return Err(CasMismatch);
                }
                entry.value.clear();
                entry.value.extend_from_slice(value);
                entry.cas = self.stamp();
            }
            None => {
                let entry = Entry {
                    value: value.to_vec(),
                    cas: self.stamp(),
                };
                shard.insert(key.into(), entry);
            }
        }
        Ok(())
    }

    fn update(
        &self,
        key: &str,
        _attempts: u32,
        change: &mut dyn FnMut(&mut Vec<u8>) -> bool,
    ) -> Result<u32, Contended> {
        let mut shard = self.shard(key);
        if let Some(entry) = shard.get_mut(key) {
            if change(&mut entry.value) {
                entry.cas = self.stamp();
            }
            return Ok(0);
        }
        let mut value = Vec::new();
        if change(&mut value) {
            let cas = self.stamp();
            shard.insert(key.into(), Entry { value, cas });
        }
        Ok(0)
    }
}

const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, 64 bits: spreads page keys over the shards.
fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_from(FNV_BASIS, bytes)
}

fn fnv1a_from(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// FNV-1a as a `Hasher`, for the shards' maps.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(FNV_BASIS)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv1a_from(self.0, bytes);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn behaves_like_envoy_shared_data() {
        crate::engine::assert_shared_data_semantics(&NativeStore::new());
    }

    #[test]
    fn an_update_changes_in_place_and_stamps_a_new_cas() {
        let store = NativeStore::new();
        let lost = store.update("k", 1, &mut |v| {
            assert!(v.is_empty(), "a missing key reads empty");
            v.extend_from_slice(b"one");
            true
        });
        assert_eq!(lost, Ok(0));
        let (_, before) = store.get("k");
        store
            .update("k", 1, &mut |v| {
                v.extend_from_slice(b"+two");
                true
            })
            .unwrap();
        let (value, after) = store.get("k");
        assert_eq!(value.unwrap(), b"one+two");
        assert_ne!(before, after, "a write stamps a fresh cas");
        // A change that does not write leaves the cas (and a missing key missing).
        store.update("k", 1, &mut |_| false).unwrap();
        assert_eq!(store.get("k").1, after);
        store.update("absent", 1, &mut |_| false).unwrap();
        assert_eq!(store.get("absent"), (None, None));
        assert_eq!(store.len(), 1);
        assert_eq!(store.payload_bytes(), 1 + 7);
    }

    /// Eight threads, each adding one to a counter in one of a few keys many times, through the
    /// in-place update and through the cas loop of get/set mixed: no count is lost, none doubled.
    #[test]
    fn concurrent_updates_lose_no_count() {
        const THREADS: u64 = 8;
        const ROUNDS: u64 = 5_000;
        const KEYS: u64 = 3;
        let store = Arc::new(NativeStore::new());
        // Two writers creating one key both succeed (as in shared data): create them first.
        for k in 0..KEYS {
            store
                .set(&format!("page/{k}"), &0u64.to_le_bytes(), None)
                .unwrap();
        }
        let add_one = |v: &mut Vec<u8>| {
            let n = <[u8; 8]>::try_from(&v[..]).map_or(0, u64::from_le_bytes);
            *v = (n + 1).to_le_bytes().to_vec();
            true
        };
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for i in 0..ROUNDS {
                        let key = format!("page/{}", (i + t) % KEYS);
                        if (i + t) % 4 == 0 {
                            // The trait's default loop over get/set, as the Wasm host runs it.
                            cas_loop(&store, &key, add_one);
                        } else {
                            store.update(&key, 1, &mut |v| add_one(v)).unwrap();
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let total: u64 = (0..KEYS)
            .map(|k| {
                let value = store.get(&format!("page/{k}")).0.unwrap();
                u64::from_le_bytes(value.try_into().unwrap())
            })
            .sum();
        assert_eq!(total, THREADS * ROUNDS);
    }

    fn cas_loop(store: &NativeStore, key: &str, change: impl Fn(&mut Vec<u8>) -> bool) {
        loop {
            let (value, cas) = store.get(key);
            let mut value = value.unwrap_or_default();
            change(&mut value);
            if store
                .set(key, &value, Some(cas.unwrap_or(u32::MAX)))
                .is_ok()
            {
                return;
            }
        }
    }

    #[test]
    fn a_panic_inside_a_change_leaves_the_shard_usable() {
        let store = Arc::new(NativeStore::new());
        let inner = Arc::clone(&store);
        let panicked = std::thread::spawn(move || {
            inner
                .update("k", 1, &mut |_| panic!("a bug in a change"))
                .unwrap();
        })
        .join();
        assert!(panicked.is_err());
        store.set("k", b"v", None).unwrap();
        assert_eq!(store.get("k").0.unwrap(), b"v");
    }
}
