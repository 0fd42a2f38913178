//! Test fakes and helpers shared by the unit tests of every module.

use std::collections::HashMap;

use crate::request::RequestView;

/// A request from a map of headers, with a client address and an optional route name.
#[derive(Default)]
pub struct FakeRequest {
    pub headers: HashMap<String, Vec<u8>>,
    pub source: Option<Vec<u8>>,
    pub route: Option<Vec<u8>>,
}

impl FakeRequest {
    pub fn with(headers: &[(&str, &str)]) -> Self {
        FakeRequest {
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            source: Some(b"192.0.2.7:51234".to_vec()),
            route: None,
        }
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
