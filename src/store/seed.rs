//! The per-process seed of the client-key hash, agreed on by every worker through shared data.

use super::shared::{update, SharedStore};

/// The hash seed every worker of this Envoy process uses: the first worker to configure stores
/// its random `candidate` under `key` (a create-if-absent write), and every worker, the canary VM
/// and later config reloads read that one back. `None` if the store could not settle on one (the
/// caller keeps its own seed).
pub fn shared_seed(store: &dyn SharedStore, key: &str, candidate: u64) -> Option<u64> {
    let settled = update(store, key, 4, |value| {
        match <[u8; 8]>::try_from(&value[..]) {
            Ok(seed) => (false, u64::from_le_bytes(seed)),
            // Missing: create it; another value (not ours): replace it under its cas.
            Err(_) => {
                *value = candidate.to_le_bytes().to_vec();
                (true, candidate)
            }
        }
    });
    settled.ok().map(|u| u.result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CasMismatch, MemoryStore};

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
}
