//! Every shared-data key name the filter writes, in one place. Envoy deletes no key while a VM
//! of the `vm_id` lives, so the set is fixed by the configurations loaded: a seed per key prefix
//! and a fixed number of pages per rule and page layout. No key name ever holds a client key.

use crate::decimal;

/// Shared-data layout version, part of every key name.
const STORE_VERSION: &str = "v1";

/// Where the per-process hash seed lives: `<prefix>/v1/seed`.
pub fn seed_key(prefix: &str) -> String {
    format!("{prefix}/{STORE_VERSION}/seed")
}

/// The page keys of one rule: `<prefix>/v1/<rule>/<layout>/<page>`, `<layout>` the page layout's
/// identity (its version and shape) in 8 hex digits. Each layout counts on its own pages: a
/// filter of another layout version or a config of another shape under the same `vm_id` (both
/// run while an updated listener drains the old one) never overwrites this layout's pages, nor
/// reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageKeys {
    base: String,
    /// `base` at the start of a key's buffer, when it fits there.
    inline: Option<[u8; INLINE_KEY]>,
}

impl PageKeys {
    pub fn new(prefix: &str, rule: &str, layout: u32) -> Self {
        let base = format!("{prefix}/{STORE_VERSION}/{rule}/{layout:08x}/");
        let inline = (base.len() < INLINE_KEY).then(|| {
            let mut bytes = [0; INLINE_KEY];
            bytes[..base.len()].copy_from_slice(base.as_bytes());
            bytes
        });
        PageKeys { base, inline }
    }

    /// The key of page `page`, made on the stack when a key fits [`PageKey`]'s buffer.
    pub fn page(&self, page: u64) -> PageKey {
        let start = self.base.len();
        // Any page fits after a base of usual length: its digits are counted only after a long one.
        let fits =
            start + decimal::MAX_DIGITS <= INLINE_KEY || start + decimal::len(page) <= INLINE_KEY;
        let Some(mut bytes) = self.inline.filter(|_| fits) else {
            return PageKey::Heap(format!("{}{page}", self.base));
        };
        let len = start + decimal::write(page, &mut bytes[start..]);
        PageKey::Inline {
            bytes,
            len: len as u8,
        }
    }
}

/// Bytes of a page key kept on the stack: prefix, version, rule name, layout and page number of
/// usual lengths. The key is 64 bytes in all: in V8 moving a value over 64 bytes is a call out of the
/// VM.
const INLINE_KEY: usize = 62;

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
        let keys = PageKeys::new("edge", "api", 0x00c0_ffee);
        assert_eq!(keys.page(42), "edge/v1/api/00c0ffee/42");
        for page in [0, 7, 10, 99, 100, 65_535, u64::MAX] {
            assert_eq!(
                keys.page(page),
                format!("edge/v1/api/00c0ffee/{page}").as_str()
            );
        }
        let edge = PageKeys::new(&"p".repeat(25), "rule", 7); // 43 bytes before the page
        let (last, first_out) = (10u64.pow(19) - 1, 10u64.pow(19));
        assert!(matches!(edge.page(last), PageKey::Inline { .. }));
        assert!(matches!(edge.page(first_out), PageKey::Heap(_)));
        for page in [0, last, first_out, u64::MAX] {
            let key = format!("{}/v1/rule/00000007/{page}", "p".repeat(25));
            assert_eq!(edge.page(page), key.as_str());
        }
        let long = PageKeys::new(&"p".repeat(60), "rule", 7);
        assert!(matches!(long.page(12), PageKey::Heap(_)));
        let key = format!("{}/v1/rule/00000007/12", "p".repeat(60));
        assert_eq!(long.page(12), key.as_str());
        assert_eq!(
            std::mem::size_of::<PageKey>(),
            64,
            "a key moves without memory.copy"
        );
        assert!(matches!(keys.page(u64::MAX), PageKey::Inline { .. }));
    }

    #[test]
    fn each_layout_has_its_own_pages() {
        let (old, new) = (PageKeys::new("p", "api", 1), PageKeys::new("p", "api", 2));
        for page in [0, 1, 99] {
            assert_ne!(&*old.page(page), &*new.page(page));
        }
        assert_eq!(&*old.page(3), &*PageKeys::new("p", "api", 1).page(3));
    }
}
