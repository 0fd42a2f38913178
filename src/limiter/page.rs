//! The byte layout of one shared-data value: a page of client slots and the page's summary of
//! the clients that hold no slot.
//!
//! ```text
//! page      := magic "RLW" version | fingerprint u32 | clock_ms u64 | slot * S | summary
//! slot      := identity u64 | last_ms u64 | seeded_ms u64 | door u8 | per limit: ring, inherited
//! ring      := RING counters of the limit's width (2 bytes for limits up to 65,535, else 4)
//! inherited := two counters of the limit's width: the older and the newer generation's part
//! summary   := bloom[0] | bloom[1] | per limit: cells[0] | cells[1]
//! bloom[h]  := BLOOM_BITS_PER_SLOT * S bits: the doorkeeper of the generations of parity h
//! cells[h]  := CELL_BYTES_PER_SLOT * S bytes of count-min cells of width 1, 2 or 4
//! ```
//! All integers are little-endian. `identity` 0 marks a slot never used; `last_ms` is the time of
//! the client's last admitted request and `seeded_ms` the time it took the slot (when its
//! inherited parts were copied from the summary); `door` says whether the summary's doorkeeper
//! held a first request of it then, in the older (bit 0) and newer (bit 1) generation. `clock_ms` is the page's clock: the latest time
//! any request counted in it, which the summary's generations follow. The fingerprint hashes
//! everything that shapes the layout (slot count, windows, counter widths, summary sizes): a value
//! written by another version of the filter, another plugin under the same key, or a config whose
//! layout differs is recognised and never misread. The layout's identity (a hash of its version
//! and fingerprint) is also part of every page's key name (`store::PageKeys`): each layout counts
//! on its own pages, so two layouts running at once (the old and the new listener while the old
//! one drains) never overwrite each other's.

use super::window::{Ring, RING};
use crate::hash::fnv1a;

/// The version of this byte layout, the magic's last byte: a change to the layout that the
/// fingerprint's sizes do not show bumps it. The `layout-next` feature bumps it for the tests
/// alone (`make build-layout-next`: a filter that reads and writes pages of another version);
/// no shipped build has it.
#[cfg(not(feature = "layout-next"))]
pub const LAYOUT_VERSION: u8 = 2;
#[cfg(feature = "layout-next")]
pub const LAYOUT_VERSION: u8 = 3;
const MAGIC: [u8; 3] = *b"RLW";
const HEADER_LEN: usize = 16;
const SLOT_HEADER_LEN: usize = 25;
/// Doorkeeper bits per slot and per generation (the limit with the shortest window has it).
pub const BLOOM_BITS_PER_SLOT: usize = 128;
/// Hash functions of the doorkeeper.
pub const BLOOM_HASHES: u64 = 4;
/// Count-min bytes per slot, per limit and per generation.
pub const CELL_BYTES_PER_SLOT: usize = 16;

/// Counter width of a limit's rings: 2 bytes while the limit fits, else 4.
pub fn counter_width(limit: u64) -> usize {
    if limit <= u16::MAX as u64 {
        2
    } else {
        4
    }
}

/// Width of a limit's count-min cells: the narrowest that holds the limit. A cell saturates at
/// its maximum, which is then at least the limit: a saturated cell refuses, as its true count
/// would.
pub fn cell_width(limit: u64) -> usize {
    match limit {
        0..=255 => 1,
        256..=65_535 => 2,
        _ => 4,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageLayout {
    slots: usize,
    /// Counter width (bytes) of each limit's ring and inherited parts, in rule order.
    widths: Vec<usize>,
    /// Offset of each limit's ring inside a slot.
    ring_offsets: Vec<usize>,
    slot_len: usize,
    /// Count-min cell width of each limit.
    cell_widths: Vec<usize>,
    /// Bytes of one generation of the doorkeeper, and of one limit's cells.
    bloom_len: usize,
    cells_len: usize,
    summary_start: usize,
    /// The version byte after the magic.
    version: u8,
    fingerprint: u32,
}

impl PageLayout {
    /// `windows_ms[i]` and `limits[i]` (its largest level) describe limit `i` of the rule.
    pub fn new(slots: usize, windows_ms: &[u64], limits: &[u64]) -> Self {
        Self::of_version(LAYOUT_VERSION, slots, windows_ms, limits)
    }

    /// [`PageLayout::new`] as a build of layout version `version` has it.
    fn of_version(version: u8, slots: usize, windows_ms: &[u64], limits: &[u64]) -> Self {
        let widths: Vec<usize> = limits.iter().map(|&l| counter_width(l)).collect();
        let mut ring_offsets = Vec::with_capacity(widths.len());
        let mut offset = SLOT_HEADER_LEN;
        for w in &widths {
            ring_offsets.push(offset);
            offset += w * (RING + 2);
        }
        let cell_widths: Vec<usize> = limits.iter().map(|&l| cell_width(l)).collect();
        let bloom_len = (BLOOM_BITS_PER_SLOT * slots).div_ceil(8);
        let cells_len = CELL_BYTES_PER_SLOT * slots;
        // The layout's shape. Limits' values are not part of it: raising a limit within the same
        // counter widths keeps the counts.
        let sizes = [slots, RING, BLOOM_BITS_PER_SLOT, CELL_BYTES_PER_SLOT];
        let shape = sizes.map(|n| n as u64).into_iter().chain(
            windows_ms
                .iter()
                .zip(widths.iter().zip(&cell_widths))
                .flat_map(|(&w, (&width, &cell))| [w, width as u64, cell as u64]),
        );
        let fingerprint = fnv1a(shape.flat_map(u64::to_le_bytes)) as u32;
        PageLayout {
            slots,
            widths,
            ring_offsets,
            slot_len: offset,
            cell_widths,
            bloom_len,
            cells_len,
            summary_start: HEADER_LEN + slots * offset,
            version,
            fingerprint,
        }
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The layout's identity: a hash of its version and its shape's fingerprint, the same for
    /// every filter that reads and writes pages of this layout, different (but for a 32-bit
    /// collision) for any other.
    pub fn id(&self) -> u32 {
        fnv1a(
            [self.version]
                .into_iter()
                .chain(self.fingerprint.to_le_bytes()),
        ) as u32
    }

    /// Bytes of one slot: one tracked client with all its limits.
    #[cfg(any(test, feature = "internals"))]
    pub fn slot_len(&self) -> usize {
        self.slot_len
    }

    /// Bytes of the page's summary (doorkeeper and cells, both generations).
    pub fn summary_len(&self) -> usize {
        2 * self.bloom_len + 2 * self.cells_len * self.widths.len()
    }

    /// Bytes of one whole page value.
    pub fn page_len(&self) -> usize {
        self.summary_start + self.summary_len()
    }

    /// A page with every slot unused and an empty summary.
    pub fn empty_page(&self) -> Vec<u8> {
        let mut page = vec![0u8; self.page_len()];
        page[..3].copy_from_slice(&MAGIC);
        page[3] = self.version;
        page[4..8].copy_from_slice(&self.fingerprint.to_le_bytes());
        page
    }

    /// Whether `bytes` is a page of exactly this layout.
    pub fn recognises(&self, bytes: &[u8]) -> bool {
        bytes.len() == self.page_len()
            && bytes[..3] == MAGIC
            && bytes[3] == self.version
            && bytes[4..8] == self.fingerprint.to_le_bytes()
    }

    pub fn clock_ms(&self, page: &[u8]) -> u64 {
        read_u64(page, 8)
    }

    pub fn set_clock_ms(&self, page: &mut [u8], clock_ms: u64) {
        page[8..16].copy_from_slice(&clock_ms.to_le_bytes());
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

    pub fn seeded_ms(&self, page: &[u8], slot: usize) -> u64 {
        read_u64(page, self.slot_start(slot) + 16)
    }

    pub fn set_header(&self, page: &mut [u8], slot: usize, identity: u64, last_ms: u64) {
        let start = self.slot_start(slot);
        page[start..start + 8].copy_from_slice(&identity.to_le_bytes());
        page[start + 8..start + 16].copy_from_slice(&last_ms.to_le_bytes());
    }

    /// The doorkeeper units the slot's client had when it took the slot: `[older, newer]`.
    pub fn door(&self, page: &[u8], slot: usize) -> [bool; 2] {
        let bits = page[self.slot_start(slot) + 24];
        [bits & 1 == 1, bits & 2 == 2]
    }

    pub fn set_seeded(&self, page: &mut [u8], slot: usize, seeded_ms: u64, door: [bool; 2]) {
        let start = self.slot_start(slot) + 16;
        page[start..start + 8].copy_from_slice(&seeded_ms.to_le_bytes());
        page[start + 8] = door[0] as u8 | (door[1] as u8) << 1;
    }

    fn ring_start(&self, slot: usize, limit: usize) -> usize {
        self.slot_start(slot) + self.ring_offsets[limit]
    }

    pub fn read_ring(&self, page: &[u8], slot: usize, limit: usize) -> Ring {
        let start = self.ring_start(slot, limit);
        let width = self.widths[limit];
        let bytes = &page[start..start + RING * width];
        let mut ring = [0u32; RING];
        // One loop per width, so that each is a plain load.
        match width {
            2 => ring
                .iter_mut()
                .zip(bytes.chunks_exact(2))
                .for_each(|(count, b)| {
                    *count = u16::from_le_bytes([b[0], b[1]]) as u32;
                }),
            _ => ring
                .iter_mut()
                .zip(bytes.chunks_exact(4))
                .for_each(|(count, b)| {
                    *count = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }),
        }
        ring
    }

    /// Writes a ring back; counts above the counter's range saturate (only a count above the
    /// limit could, and such a count already refuses everything).
    pub fn write_ring(&self, page: &mut [u8], slot: usize, limit: usize, ring: &Ring) {
        let start = self.ring_start(slot, limit);
        let width = self.widths[limit];
        let bytes = &mut page[start..start + RING * width];
        match width {
            2 => ring
                .iter()
                .zip(bytes.chunks_exact_mut(2))
                .for_each(|(&count, b)| {
                    b.copy_from_slice(&(count.min(u16::MAX as u32) as u16).to_le_bytes());
                }),
            _ => ring
                .iter()
                .zip(bytes.chunks_exact_mut(4))
                .for_each(|(&count, b)| {
                    b.copy_from_slice(&count.to_le_bytes());
                }),
        }
    }

    /// The slot's inherited parts of `limit`: `[older generation, newer generation]`.
    pub fn inherited(&self, page: &[u8], slot: usize, limit: usize) -> [u64; 2] {
        let width = self.widths[limit];
        let start = self.ring_start(slot, limit) + RING * width;
        [0, 1].map(|k| read_counter(page, start + k * width, width) as u64)
    }

    /// Writes the inherited parts (saturating, as rings do).
    pub fn set_inherited(&self, page: &mut [u8], slot: usize, limit: usize, parts: [u64; 2]) {
        let width = self.widths[limit];
        let start = self.ring_start(slot, limit) + RING * width;
        for (k, count) in parts.into_iter().enumerate() {
            write_counter(page, start + k * width, width, count);
        }
    }

    /// Bits in one generation of the doorkeeper.
    pub fn bloom_bits(&self) -> u64 {
        self.bloom_len as u64 * 8
    }

    fn bloom_start(&self, half: usize) -> usize {
        self.summary_start + half * self.bloom_len
    }

    pub fn bloom_bit(&self, page: &[u8], half: usize, bit: u64) -> bool {
        page[self.bloom_start(half) + (bit / 8) as usize] >> (bit % 8) & 1 == 1
    }

    pub fn set_bloom_bit(&self, page: &mut [u8], half: usize, bit: u64) {
        page[self.bloom_start(half) + (bit / 8) as usize] |= 1 << (bit % 8);
    }

    pub fn clear_bloom(&self, page: &mut [u8], half: usize) {
        let start = self.bloom_start(half);
        page[start..start + self.bloom_len].fill(0);
    }

    /// Count-min cells of `limit` in one generation.
    pub fn cells(&self, limit: usize) -> u64 {
        (self.cells_len / self.cell_widths[limit]) as u64
    }

    /// The value a cell of `limit` saturates at.
    pub fn cell_max(&self, limit: usize) -> u64 {
        match self.cell_widths[limit] {
            1 => u8::MAX as u64,
            2 => u16::MAX as u64,
            _ => u32::MAX as u64,
        }
    }

    fn cells_start(&self, limit: usize, half: usize) -> usize {
        self.summary_start + 2 * self.bloom_len + (2 * limit + half) * self.cells_len
    }

    pub fn cell(&self, page: &[u8], limit: usize, half: usize, cell: u64) -> u64 {
        let width = self.cell_widths[limit];
        let at = self.cells_start(limit, half) + cell as usize * width;
        read_counter(page, at, width) as u64
    }

    /// Writes a cell, saturating at [`Self::cell_max`].
    pub fn set_cell(&self, page: &mut [u8], limit: usize, half: usize, cell: u64, value: u64) {
        let width = self.cell_widths[limit];
        let at = self.cells_start(limit, half) + cell as usize * width;
        write_counter(page, at, width, value);
    }

    pub fn clear_cells(&self, page: &mut [u8], limit: usize, half: usize) {
        let start = self.cells_start(limit, half);
        page[start..start + self.cells_len].fill(0);
    }
}

fn read_u64(page: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&page[at..at + 8]);
    u64::from_le_bytes(bytes)
}

fn read_counter(page: &[u8], at: usize, width: usize) -> u32 {
    match width {
        1 => page[at] as u32,
        2 => u16::from_le_bytes([page[at], page[at + 1]]) as u32,
        _ => u32::from_le_bytes([page[at], page[at + 1], page[at + 2], page[at + 3]]),
    }
}

/// Writes `value`, saturating at the width's maximum.
fn write_counter(page: &mut [u8], at: usize, width: usize, value: u64) {
    match width {
        1 => page[at] = value.min(u8::MAX as u64) as u8,
        2 => page[at..at + 2].copy_from_slice(&(value.min(u16::MAX as u64) as u16).to_le_bytes()),
        _ => page[at..at + 4].copy_from_slice(&(value.min(u32::MAX as u64) as u32).to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_per_client_and_per_page() {
        // A slot: identity, last admission, seeding time; per limit a ring and two inherited
        // parts of its counter width.
        let layout = PageLayout::new(16, &[60_000], &[100]);
        assert_eq!(layout.slot_len(), 25 + 23 * 2);
        // The summary: two generations of a 128-bit-per-slot doorkeeper, and per limit two
        // generations of 16 bytes of cells per slot.
        assert_eq!(layout.summary_len(), 2 * 256 + 2 * 256);
        assert_eq!(layout.page_len(), 16 + 16 * 71 + 1024);
        let two = PageLayout::new(16, &[60_000, 86_400_000], &[10, 1_000]);
        assert_eq!(two.slot_len(), 25 + 2 * 46);
        assert_eq!(two.summary_len(), 512 + 2 * 512);
        assert_eq!(
            (two.cells(0), two.cells(1)),
            (256, 128),
            "1- and 2-byte cells"
        );
        let big = PageLayout::new(16, &[86_400_000], &[1_000_000]);
        assert_eq!(big.slot_len(), 25 + 23 * 4);
        assert_eq!(big.cells(0), 64);
        assert_eq!(big.cell_max(0), u32::MAX as u64);
    }

    #[test]
    fn another_layout_version_is_another_layout() {
        // The same shape in the next layout version (what `layout-next` builds): neither reads
        // the other's pages, and their identities (so their page keys) differ.
        let this = PageLayout::new(16, &[60_000], &[100]);
        let next = PageLayout::of_version(LAYOUT_VERSION + 1, 16, &[60_000], &[100]);
        assert_eq!(this.page_len(), next.page_len(), "same sizes");
        assert_ne!(this.id(), next.id());
        assert_ne!(
            this.id(),
            PageLayout::new(16, &[30_000], &[100]).id(),
            "another shape"
        );
        assert_eq!(
            this.id(),
            PageLayout::new(16, &[60_000], &[200]).id(),
            "same shape"
        );
        assert!(!this.recognises(&next.empty_page()));
        assert!(!next.recognises(&this.empty_page()));
        assert!(this.recognises(&this.empty_page()));
        // Only the version byte told them apart: a page with this fingerprint and the next
        // version's byte is not read either.
        let mut page = this.empty_page();
        page[3] = LAYOUT_VERSION + 1;
        assert!(!this.recognises(&page));
        assert_eq!(&this.empty_page()[..4], &[b'R', b'L', b'W', LAYOUT_VERSION]);
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
        layout.set_clock_ms(&mut page, 1_700_000_000_999);
        layout.set_header(&mut page, 2, 0xdead_beef_cafe, 1_700_000_000_123);
        layout.set_seeded(&mut page, 2, 1_700_000_000_100, [false, true]);
        layout.write_ring(&mut page, 2, 0, &small);
        layout.write_ring(&mut page, 2, 1, &large);
        layout.set_inherited(&mut page, 2, 0, [7, 9]);
        layout.set_inherited(&mut page, 2, 1, [80_000, 1]);
        layout.set_bloom_bit(&mut page, 1, 77);
        layout.set_cell(&mut page, 0, 0, 3, 300);
        layout.set_cell(&mut page, 1, 1, layout.cells(1) - 1, 12_345);
        assert_eq!(layout.clock_ms(&page), 1_700_000_000_999);
        assert_eq!(layout.identity(&page, 2), 0xdead_beef_cafe);
        assert_eq!(layout.last_ms(&page, 2), 1_700_000_000_123);
        assert_eq!(layout.seeded_ms(&page, 2), 1_700_000_000_100);
        assert_eq!(layout.door(&page, 2), [false, true]);
        assert_eq!(layout.read_ring(&page, 2, 0), small);
        assert_eq!(layout.read_ring(&page, 2, 1), large);
        assert_eq!(layout.inherited(&page, 2, 0), [7, 9]);
        assert_eq!(layout.inherited(&page, 2, 1), [80_000, 1]);
        assert!(layout.bloom_bit(&page, 1, 77));
        assert!(!layout.bloom_bit(&page, 0, 77) && !layout.bloom_bit(&page, 1, 76));
        assert_eq!(layout.cell(&page, 0, 0, 3), 255, "a 1-byte cell saturates");
        assert_eq!(layout.cell(&page, 1, 1, layout.cells(1) - 1), 12_345);
        for other in [0, 1, 3] {
            assert_eq!(layout.identity(&page, other), 0);
            assert_eq!(layout.read_ring(&page, other, 1), [0; RING]);
            assert_eq!(layout.inherited(&page, other, 1), [0, 0]);
        }
        layout.clear_bloom(&mut page, 1);
        layout.clear_cells(&mut page, 1, 1);
        assert!(!layout.bloom_bit(&page, 1, 77));
        assert_eq!(layout.cell(&page, 1, 1, layout.cells(1) - 1), 0);
        assert_eq!(layout.cell(&page, 0, 0, 3), 255, "other cells untouched");
        assert_eq!(layout.read_ring(&page, 2, 1), large, "slots untouched");
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
        let other_cells = PageLayout::new(16, &[60_000], &[1_000]);
        assert!(!layout.recognises(&other_cells.empty_page()));
        // Raising a limit within the same widths keeps the layout (counts survive).
        assert!(layout.recognises(&PageLayout::new(16, &[60_000], &[200]).empty_page()));
        let mut truncated = layout.empty_page();
        truncated.pop();
        assert!(!layout.recognises(&truncated));
        // A page of the previous layout version is not misread.
        let mut old = layout.empty_page();
        old[3] = 1;
        assert!(!layout.recognises(&old));
    }

    #[test]
    fn counters_saturate_instead_of_wrapping() {
        let layout = PageLayout::new(1, &[1_000], &[10]);
        let mut page = layout.empty_page();
        layout.write_ring(&mut page, 0, 0, &[70_000; RING]);
        assert_eq!(layout.read_ring(&page, 0, 0), [u16::MAX as u32; RING]);
        layout.set_inherited(&mut page, 0, 0, [u64::MAX, 70_000]);
        assert_eq!(layout.inherited(&page, 0, 0), [65_535, 65_535]);
    }
}
