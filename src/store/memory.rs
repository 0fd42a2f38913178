//! An in-process store with the host's semantics, for tests and the native tools.

use std::cell::RefCell;
use std::collections::HashMap;

use super::shared::{CasMismatch, SharedStore};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_envoy_shared_data() {
        crate::store::assert_shared_data_semantics(&MemoryStore::new());
    }
}
