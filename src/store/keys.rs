//! Every shared-data key name the filter writes, in one place. Keys are never deleted in Envoy,
//! so the set is fixed by the configuration: a seed per key prefix and a fixed number of pages
//! per rule. No key name ever holds a client key.

/// Shared-data layout version, part of every key name.
const STORE_VERSION: &str = "v1";

/// Where the per-process hash seed lives: `<prefix>/v1/seed`.
pub fn seed_key(prefix: &str) -> String {
    format!("{prefix}/{STORE_VERSION}/seed")
}

/// The page keys of one rule: `<prefix>/v1/<rule>/<page>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageKeys {
    base: String,
}

impl PageKeys {
    pub fn new(prefix: &str, rule: &str) -> Self {
        PageKeys {
            base: format!("{prefix}/{STORE_VERSION}/{rule}/"),
        }
    }

    pub fn page(&self, page: u64) -> String {
        use std::fmt::Write;
        let mut key = String::with_capacity(self.base.len() + 8);
        key.push_str(&self.base);
        let _ = write!(key, "{page}");
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(seed_key("edge"), "edge/v1/seed");
        assert_eq!(PageKeys::new("edge", "api").page(42), "edge/v1/api/42");
    }
}
