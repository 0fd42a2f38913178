//! Test fakes and helpers shared by the unit tests of every module.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::request::{Computed, MetadataPath, RequestView};
use crate::store::{CasMismatch, Contended, SharedStore};

/// A request from a map of headers, with a client address and an optional route name.
#[derive(Default)]
pub struct FakeRequest {
    pub headers: HashMap<String, Vec<u8>>,
    pub source: Option<Vec<u8>>,
    pub route: Option<Vec<u8>>,
    /// Dynamic metadata, by `namespace/key.path.steps`.
    pub metadata: HashMap<String, Computed>,
    pub filter_state: HashMap<String, Vec<u8>>,
    /// Header lines sent again after the first of their name (`headers`): every-header reads
    /// see them, single reads the first.
    pub again: Vec<(String, Vec<u8>)>,
}

impl FakeRequest {
    pub fn with(headers: &[(&str, &str)]) -> Self {
        FakeRequest {
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            source: Some(b"192.0.2.7:51234".to_vec()),
            ..FakeRequest::default()
        }
    }

    /// Sends header `name` once more, with `value`, after its first line.
    pub fn again(mut self, name: &str, value: &str) -> Self {
        self.again
            .push((name.to_string(), value.as_bytes().to_vec()));
        self
    }

    /// Sets a dynamic metadata value at `namespace/key.path.steps`.
    pub fn metadata(mut self, at: &str, value: Computed) -> Self {
        self.metadata.insert(at.to_string(), value);
        self
    }
}

impl RequestView for FakeRequest {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.headers.get(name).cloned()
    }
    fn source_address(&self) -> Option<Vec<u8>> {
        self.source.clone()
    }
    fn route_name(&self) -> Option<Vec<u8>> {
        self.route.clone()
    }
    fn metadata(&self, at: &MetadataPath) -> Option<Computed> {
        let steps: String = at.path.iter().map(|p| format!(".{p}")).collect();
        let name = format!("{}/{}{steps}", at.namespace, at.key);
        self.metadata.get(&name).cloned()
    }
    fn filter_state(&self, key: &str) -> Option<Vec<u8>> {
        self.filter_state.get(key).cloned()
    }
    fn header_map(&self) -> Option<Vec<u8>> {
        let pairs: Vec<(&str, &[u8])> = self
            .headers
            .iter()
            .chain(self.again.iter().map(|(k, v)| (k, v)))
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        Some(crate::request::serialize_headers(&pairs))
    }
}

/// A store that changes each value in place under its own lock, as a native store does: no copy
/// out and back, no race to lose. What a change leaves unwritten stays changed.
#[derive(Default)]
pub struct InPlaceStore {
    map: RefCell<HashMap<String, Vec<u8>>>,
}

impl SharedStore for InPlaceStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        let map = self.map.borrow();
        let value = map.get(key).filter(|v| !v.is_empty()).cloned();
        (value, map.contains_key(key).then_some(1))
    }

    fn set(&self, key: &str, value: &[u8], _cas: Option<u32>) -> Result<(), CasMismatch> {
        self.map
            .borrow_mut()
            .insert(key.to_string(), value.to_vec());
        Ok(())
    }

    fn update(
        &self,
        key: &str,
        _attempts: u32,
        change: &mut dyn FnMut(&mut Vec<u8>) -> bool,
    ) -> Result<u32, Contended> {
        let mut map = self.map.borrow_mut();
        change(map.entry(key.to_string()).or_default());
        Ok(0)
    }
}

/// Every expected error (by its start) is reported, and nothing else.
pub fn assert_each_error_once(errors: &[String], expected: &[&str]) {
    for want in expected {
        assert!(
            errors.iter().any(|line| line.starts_with(want)),
            "missing {want:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
}

/// A repeatable pseudo-random sequence for tests (xorshift64, from a non-zero seed).
pub struct Xorshift(pub u64);

impl Xorshift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A draw in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
