//! The byte layout of one shared-data value: a page of client slots.
//!
//! ```text
//! page   := magic "RLW" version(1) | fingerprint u32 LE | slot * slots_per_page
//! slot   := identity u64 LE | last_ms u64 LE | ring(limit 0) | ring(limit 1) | ...
//! ring   := RING counters, each 2 bytes LE (limits up to 65,535) or 4 bytes LE (larger)
//! ```
//! `identity` 0 marks a slot that was never used. `last_ms` is the time of the client's last
//! admitted request. The fingerprint hashes everything that shapes the layout (slot count,
//! windows, counter widths): a value written by another version of the filter, another plugin
//! under the same key, or a config whose layout differs is recognised and never misread.

use super::window::{Ring, RING};
use crate::request::fnv1a;

const MAGIC: [u8; 4] = *b"RLW\x01";
const HEADER_LEN: usize = 8;
const SLOT_HEADER_LEN: usize = 16;

/// Counter width of a limit: 2 bytes while the limit fits, else 4.
pub fn counter_width(limit: u64) -> usize {
    if limit <= u16::MAX as u64 {
        2
    } else {
        4
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageLayout {
    slots: usize,
    /// Counter width (bytes) of each limit's ring, in rule order.
    widths: Vec<usize>,
    slot_len: usize,
    fingerprint: u32,
}

impl PageLayout {
    /// `windows_ms[i]` and `limits[i]` describe limit `i` of the policy stored in this page.
    pub fn new(slots: usize, windows_ms: &[u64], limits: &[u64]) -> Self {
        let widths: Vec<usize> = limits.iter().map(|&l| counter_width(l)).collect();
        let slot_len = SLOT_HEADER_LEN + widths.iter().map(|w| w * RING).sum::<usize>();
        // The layout's shape. Limits' values are not part of it: raising a limit keeps the counts.
        let shape = [slots as u64, RING as u64].into_iter().chain(
            windows_ms
                .iter()
                .zip(&widths)
                .flat_map(|(&w, &width)| [w, width as u64]),
        );
        let fingerprint = fnv1a(shape.flat_map(u64::to_le_bytes)) as u32;
        PageLayout {
            slots,
            widths,
            slot_len,
            fingerprint,
        }
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Bytes of one slot: one tracked client with all its limits.
    #[cfg(test)]
    pub fn slot_len(&self) -> usize {
        self.slot_len
    }

    /// Bytes of one whole page value.
    pub fn page_len(&self) -> usize {
        HEADER_LEN + self.slots * self.slot_len
    }

    /// A page with every slot unused.
    pub fn empty_page(&self) -> Vec<u8> {
        let mut page = vec![0u8; self.page_len()];
        page[..4].copy_from_slice(&MAGIC);
        page[4..8].copy_from_slice(&self.fingerprint.to_le_bytes());
        page
    }

    /// Whether `bytes` is a page of exactly this layout.
    pub fn recognises(&self, bytes: &[u8]) -> bool {
        bytes.len() == self.page_len()
            && bytes[..4] == MAGIC
            && bytes[4..8] == self.fingerprint.to_le_bytes()
    }

    fn slot_start(&self, slot: usize) -> usize {
        HEADER_LEN + slot * self.slot_len
    }

    pub fn identity(&self, page: &[u8], slot: usize) -> u64 {
        read_u64(page, self.slot_start(slot))
    }

    pub fn last_ms(&self, page: &[u8], slot: usize) -> u64 {
        read_u64(page, self.slot_start(slot) + 8)
    }

    pub fn set_header(&self, page: &mut [u8], slot: usize, identity: u64, last_ms: u64) {
        let start = self.slot_start(slot);
        page[start..start + 8].copy_from_slice(&identity.to_le_bytes());
        page[start + 8..start + 16].copy_from_slice(&last_ms.to_le_bytes());
    }

    fn ring_start(&self, slot: usize, limit: usize) -> usize {
        self.slot_start(slot)
            + SLOT_HEADER_LEN
            + self.widths[..limit].iter().map(|w| w * RING).sum::<usize>()
    }

    pub fn read_ring(&self, page: &[u8], slot: usize, limit: usize) -> Ring {
        let start = self.ring_start(slot, limit);
        let width = self.widths[limit];
        let mut ring = [0u32; RING];
        for (i, count) in ring.iter_mut().enumerate() {
            let at = start + i * width;
            *count = match width {
                2 => u16::from_le_bytes([page[at], page[at + 1]]) as u32,
                _ => u32::from_le_bytes([page[at], page[at + 1], page[at + 2], page[at + 3]]),
            };
        }
        ring
    }

    /// Writes a ring back; counts above the counter's range saturate (only a count above the
    /// limit could, and such a count already refuses everything).
    pub fn write_ring(&self, page: &mut [u8], slot: usize, limit: usize, ring: &Ring) {
        let start = self.ring_start(slot, limit);
        let width = self.widths[limit];
        for (i, &count) in ring.iter().enumerate() {
            let at = start + i * width;
            match width {
                2 => page[at..at + 2]
                    .copy_from_slice(&(count.min(u16::MAX as u32) as u16).to_le_bytes()),
                _ => page[at..at + 4].copy_from_slice(&count.to_le_bytes()),
            }
        }
    }
}

fn read_u64(page: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&page[at..at + 8]);
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_limit_client_costs_58_bytes() {
        let layout = PageLayout::new(16, &[60_000], &[100]);
        assert_eq!(layout.slot_len(), 8 + 8 + 21 * 2);
        assert_eq!(layout.page_len(), 8 + 16 * 58);
        let two = PageLayout::new(16, &[60_000, 86_400_000], &[100, 5_000]);
        assert_eq!(two.slot_len(), 16 + 2 * 42);
        let big = PageLayout::new(16, &[86_400_000], &[1_000_000]);
        assert_eq!(big.slot_len(), 16 + 21 * 4);
    }

    #[test]
    fn round_trips_every_field() {
        let layout = PageLayout::new(4, &[1_000, 60_000], &[10, 100_000]);
        let mut page = layout.empty_page();
        assert!(layout.recognises(&page));
        let mut small = [0u32; RING];
        let mut large = [0u32; RING];
        for i in 0..RING {
            small[i] = i as u32 * 3;
            large[i] = 70_000 + i as u32;
        }
        layout.set_header(&mut page, 2, 0xdead_beef_cafe, 1_700_000_000_123);
        layout.write_ring(&mut page, 2, 0, &small);
        layout.write_ring(&mut page, 2, 1, &large);
        assert_eq!(layout.identity(&page, 2), 0xdead_beef_cafe);
        assert_eq!(layout.last_ms(&page, 2), 1_700_000_000_123);
        assert_eq!(layout.read_ring(&page, 2, 0), small);
        assert_eq!(layout.read_ring(&page, 2, 1), large);
        for other in [0, 1, 3] {
            assert_eq!(layout.identity(&page, other), 0);
            assert_eq!(layout.read_ring(&page, other, 1), [0; RING]);
        }
    }

    #[test]
    fn foreign_values_are_not_recognised() {
        let layout = PageLayout::new(16, &[60_000], &[100]);
        assert!(!layout.recognises(b""));
        assert!(!layout.recognises(b"12"));
        assert!(!layout.recognises(&vec![0u8; layout.page_len()]));
        let other_window = PageLayout::new(16, &[1_000], &[100]);
        assert!(!layout.recognises(&other_window.empty_page()));
        let other_slots = PageLayout::new(8, &[60_000], &[100]);
        assert!(!layout.recognises(&other_slots.empty_page()));
        let other_width = PageLayout::new(16, &[60_000], &[100_000]);
        assert!(!layout.recognises(&other_width.empty_page()));
        // Raising a limit within the same counter width keeps the layout (counts survive).
        assert!(layout.recognises(&PageLayout::new(16, &[60_000], &[200]).empty_page()));
        let mut truncated = layout.empty_page();
        truncated.pop();
        assert!(!layout.recognises(&truncated));
    }

    #[test]
    fn counters_saturate_instead_of_wrapping() {
        let layout = PageLayout::new(1, &[1_000], &[10]);
        let mut page = layout.empty_page();
        layout.write_ring(&mut page, 0, 0, &[70_000; RING]);
        assert_eq!(layout.read_ring(&page, 0, 0), [u16::MAX as u32; RING]);
    }
}
