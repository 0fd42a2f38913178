//! Every shared-data key name the filter writes, in one place. Keys are never deleted in Envoy,
//! so the set is fixed by the configuration: a seed per key prefix and a fixed number of pages
//! per rule. No key name ever holds a client key.

use crate::decimal;

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

    /// The key of page `page`, made without a heap allocation when it fits [`PageKey`]'s buffer.
    pub fn page(&self, page: u64) -> PageKey {
        let mut buffer = [0; decimal::MAX_DIGITS];
        let (base, digits) = (self.base.as_bytes(), decimal::digits(page, &mut buffer));
        let len = base.len() + digits.len();
        if len > INLINE_KEY {
            let mut key = String::with_capacity(len);
            key.push_str(&self.base);
            key.extend(digits.iter().map(|&d| char::from(d)));
            return PageKey::Heap(key);
        }
        let mut bytes = [0u8; INLINE_KEY];
        bytes[..base.len()].copy_from_slice(base);
        bytes[base.len()..len].copy_from_slice(digits);
        PageKey::Inline {
            bytes,
            len: len as u8,
        }
    }
}

/// Bytes of a page key kept on the stack: prefix, version and rule name of usual lengths. The
/// key is 48 bytes in all: in V8 moving a value over 64 bytes is a call out of the VM.
const INLINE_KEY: usize = 46;

/// A page key: on the stack when it fits (the usual case), else on the heap.
#[derive(Debug, Clone)]
pub enum PageKey {
    Inline { bytes: [u8; INLINE_KEY], len: u8 },
    Heap(String),
}

impl std::ops::Deref for PageKey {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            // A str's bytes followed by ASCII digits: always UTF-8.
            PageKey::Inline { bytes, len } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or("")
            }
            PageKey::Heap(key) => key,
        }
    }
}

impl PartialEq<&str> for PageKey {
    fn eq(&self, other: &&str) -> bool {
        **self == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(seed_key("edge"), "edge/v1/seed");
        assert_eq!(PageKeys::new("edge", "api").page(42), "edge/v1/api/42");
        let keys = PageKeys::new("edge", "api");
        for page in [0, 7, 10, 99, 100, 65_535, u64::MAX] {
            assert_eq!(keys.page(page), format!("edge/v1/api/{page}").as_str());
        }
        let long = PageKeys::new(&"p".repeat(40), "rule");
        assert!(matches!(long.page(12), PageKey::Heap(_)));
        assert_eq!(
            long.page(12),
            format!("{}/v1/rule/12", "p".repeat(40)).as_str()
        );
        assert!(matches!(keys.page(u64::MAX), PageKey::Inline { .. }));
    }
}
