//! The page's summary of the clients that hold no slot: what it estimates for a client, how a
//! first request and an evicted client's counts go into it, and how its generations roll.
//!
//! Two structures, each in two generations (blocks of RING sub-windows of its limit, so that
//! anything recorded in generation `g` has left the window once generation `g + 2` begins, when
//! that half is cleared):
//!
//! - the **doorkeeper**, a Bloom filter on the limit with the shortest window: a client's first
//!   request, admitted without taking a slot, is one unit there (its other limits get the unit in
//!   their cells);
//! - **count-min cells** per limit (depth 2, conservative update): an evicted client's own counts.
//!
//! Both only ever over-estimate a client: a Bloom filter has no false negatives, and a client's
//! two cells each hold at least everything added for it (conservative update raises a cell to at
//! least the client's estimate plus what is added, never lowers it within a generation).

use super::window::{Part, Ring, MAX_PARTS, RING};
use super::Limiter;

const SALT_BLOOM: u64 = 0x0fed_cba9_8765_4321;
const SALT_CELLS: u64 = 0x1234_5678_9abc_def1;

/// A 64-bit mixer (splitmix64's finaliser): spreads the client hash over bits and cells.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What the summary holds for one client, read at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    /// Per limit, the cells' estimate in the previous and the current generation.
    pub cells: Vec<[u64; 2]>,
    /// Doorkeeper membership in the previous and the current generation.
    pub door: [bool; 2],
}

impl Limiter {
    /// The half of the summary holding generation `g` of limit `i`.
    fn half(g: u64) -> usize {
        (g % 2) as usize
    }

    /// Moves the summary's generations forward to `now` (the page clock must not be later):
    /// a generation that has ended is cleared.
    pub(super) fn roll(&self, page: &mut [u8], now: u64) {
        let layout = &self.layout;
        let clock = layout.clock_ms(page);
        for (i, window) in self.windows.iter().enumerate() {
            let (old, new) = (window.generation(clock), window.generation(now));
            let cleared: &[u64] = match new.saturating_sub(old) {
                0 => &[],
                1 => &[new],
                _ => &[new, new + 1],
            };
            for &g in cleared {
                layout.clear_cells(page, i, Self::half(g));
                if i == self.door_limit {
                    layout.clear_bloom(page, Self::half(g));
                }
            }
        }
        layout.set_clock_ms(page, now);
    }

    fn bloom_bits(&self, client: u64) -> impl Iterator<Item = u64> {
        let h = mix(client ^ SALT_BLOOM);
        let (a, b) = (h & 0xffff_ffff, (h >> 32) | 1);
        let m = self.layout.bloom_bits();
        (0..super::page::BLOOM_HASHES).map(move |j| a.wrapping_add(j.wrapping_mul(b)) % m)
    }

    pub(super) fn in_door(&self, page: &[u8], half: usize, client: u64) -> bool {
        self.bloom_bits(client)
            .all(|bit| self.layout.bloom_bit(page, half, bit))
    }

    fn cells_of(&self, limit: usize, client: u64) -> [u64; 2] {
        let h = mix(client ^ SALT_CELLS ^ (limit as u64).wrapping_mul(0x9e37_79b9));
        let k = self.layout.cells(limit);
        let a = h % k;
        let b = (h >> 32) % k;
        [a, if b == a { (a + 1) % k } else { b }]
    }

    fn cell_estimate(&self, page: &[u8], limit: usize, half: usize, client: u64) -> u64 {
        let [a, b] = self.cells_of(limit, client);
        let layout = &self.layout;
        layout
            .cell(page, limit, half, a)
            .min(layout.cell(page, limit, half, b))
    }

    /// Adds `count` for `client` to limit `limit`'s cells of the current generation, with
    /// conservative update: each of its cells rises to at least its estimate plus `count`.
    pub(super) fn add_to_cells(
        &self,
        page: &mut [u8],
        limit: usize,
        now: u64,
        client: u64,
        count: u64,
    ) {
        let half = Self::half(self.windows[limit].generation(now));
        let target = (self.cell_estimate(page, limit, half, client) + count)
            .min(self.layout.cell_max(limit));
        for cell in self.cells_of(limit, client) {
            if self.layout.cell(page, limit, half, cell) < target {
                self.layout.set_cell(page, limit, half, cell, target);
            }
        }
    }

    /// What the summary holds for `client` at `now` (the page rolled to `now`).
    pub(super) fn estimate(&self, page: &[u8], client: u64, now: u64) -> Estimate {
        if self.mutant_inherits_nothing() {
            return Estimate {
                cells: vec![[0, 0]; self.windows.len()],
                door: [false, false],
            };
        }
        let cells = self
            .windows
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let g = w.generation(now);
                [g + 1, g].map(|h| self.cell_estimate(page, i, Self::half(h), client))
            })
            .collect();
        let g = self.windows[self.door_limit].generation(now);
        let door = [g + 1, g].map(|h| self.in_door(page, Self::half(h), client));
        Estimate { cells, door }
    }

    /// The estimate as parts of limit `i`, counted until the summary drops them (the end of
    /// their generation): what a client without a slot is judged by.
    pub(super) fn estimate_parts(
        &self,
        estimate: &Estimate,
        i: usize,
        now: u64,
    ) -> [Part; MAX_PARTS] {
        let w = &self.windows[i];
        let g = w.generation(now);
        let ends = [
            g.checked_sub(1).map_or(0, |p| w.generation_end(p)),
            w.generation_end(g),
        ];
        self.parts(estimate.cells[i], estimate.door, i, ends)
    }

    /// A slot's inherited parts of limit `i`, copied from the summary at `seeded_ms`: the older
    /// generation's until it ended, the newer one's until a count recorded at `seeded_ms` leaves
    /// the window (everything the summary held then was recorded no later).
    pub(super) fn inherited_parts(
        &self,
        cells: [u64; 2],
        door: [bool; 2],
        i: usize,
        seeded_ms: u64,
    ) -> [Part; MAX_PARTS] {
        let w = &self.windows[i];
        let g = w.generation(seeded_ms);
        let ends = [
            g.checked_sub(1).map_or(0, |p| w.generation_end(p)),
            w.ring_end(seeded_ms),
        ];
        self.parts(cells, door, i, ends)
    }

    /// What the summary holds for a client in limit `i` as timed parts (older generation, then
    /// newer). Its doorkeeper units are its own first requests: in the doorkeeper's limit they
    /// are parts of their own; in the other limits they sit in the cells, and that much of the
    /// cells' estimate is told as its own.
    fn parts(
        &self,
        cells: [u64; 2],
        door: [bool; 2],
        i: usize,
        ends: [u64; 2],
    ) -> [Part; MAX_PARTS] {
        let part = |count, k: usize, own| Part {
            count,
            expires_ms: ends[k],
            own,
        };
        let mut parts = [Part::default(); MAX_PARTS];
        if i == self.door_limit {
            for k in 0..2 {
                parts[k] = part(cells[k], k, false);
                parts[2 + k] = part(door[k] as u64, k, true);
            }
        } else {
            let mut units = door.iter().filter(|&&d| d).count() as u64;
            for k in 0..2 {
                let own = units.min(cells[k]);
                units -= own;
                parts[k] = part(cells[k] - own, k, false);
                parts[2 + k] = part(own, k, true);
            }
        }
        parts
    }

    /// Records a first request of `client` (cost 1) without a slot: one unit in the doorkeeper
    /// of the current generation, and in the cells of every other limit.
    pub(super) fn record_door(&self, page: &mut [u8], client: u64, now: u64) {
        if self.mutant_unrecorded_door() {
            return;
        }
        let half = Self::half(self.windows[self.door_limit].generation(now));
        for bit in self.bloom_bits(client) {
            self.layout.set_bloom_bit(page, half, bit);
        }
        for i in (0..self.windows.len()).filter(|&i| i != self.door_limit) {
            self.add_to_cells(page, i, now, client, 1);
        }
    }

    /// Moves the own counts of the client in `slot` into the summary (its rings advanced to
    /// `now`): one unit of the doorkeeper's limit into the doorkeeper if the client is not in it
    /// yet, the rest into the cells of the current generation. Its inherited parts need no move:
    /// they came from this summary, which holds them (or more) until they expire. Returns
    /// whether the client had any count.
    pub(super) fn evict(&self, page: &mut [u8], slot: usize, now: u64) -> bool {
        let layout = &self.layout;
        let victim = layout.identity(page, slot);
        let last = layout.last_ms(page, slot);
        let own: Vec<u64> = (0..self.windows.len())
            .map(|i| {
                self.own_ring(page, slot, i, last, now)
                    .iter()
                    .map(|&c| c as u64)
                    .sum()
            })
            .collect();
        if own.iter().all(|&c| c == 0) {
            return false;
        }
        if self.mutant_forgets_evicted() {
            return true;
        }
        let half = Self::half(self.windows[self.door_limit].generation(now));
        for (i, mut count) in own.into_iter().enumerate() {
            if i == self.door_limit && count > 0 && !self.in_door(page, half, victim) {
                for bit in self.bloom_bits(victim) {
                    layout.set_bloom_bit(page, half, bit);
                }
                count -= 1;
            }
            if count > 0 {
                self.add_to_cells(page, i, now, victim, count);
            }
        }
        true
    }

    /// The slot's ring of limit `i`, advanced from `last` to `now`.
    pub(super) fn own_ring(&self, page: &[u8], slot: usize, i: usize, last: u64, now: u64) -> Ring {
        let mut ring = self.layout.read_ring(page, slot, i);
        self.windows[i].advance(&mut ring, last.min(now), now);
        ring
    }

    /// Installs `client` in `slot` at `now`, counting `cost`, with what the summary holds for it
    /// as its inherited snapshot (kept apart from its own ring, so that its eviction puts back
    /// only its own counts: the summary still holds the rest).
    pub(super) fn install(
        &self,
        page: &mut [u8],
        slot: usize,
        client: u64,
        estimate: &Estimate,
        costs: super::limit::Costs,
        now: u64,
    ) {
        let layout = &self.layout;
        for (i, window) in self.windows.iter().enumerate() {
            let mut ring: Ring = [0; RING];
            window.record(
                &mut ring,
                now,
                u32::try_from(costs.of(i)).unwrap_or(u32::MAX),
            );
            layout.write_ring(page, slot, i, &ring);
            layout.set_inherited(page, slot, i, estimate.cells[i]);
        }
        layout.set_header(page, slot, client, now);
        layout.set_seeded(page, slot, now, estimate.door);
    }
}
