//! The limiter: one decision for one client against one rule's limits, as a pure function of the
//! page the client lives in. It knows nothing of HTTP nor of how the page is stored; the engine
//! runs it inside the store's compare-and-swap loop.
//!
//! Memory is bounded: a rule owns a fixed number of pages, a client's page is fixed by the hash
//! of its key, and a page holds `slots_per_page` clients counted exactly (the **slots**) plus a
//! fixed-size **summary** of the clients that hold none (`summary.rs`). Nobody is locked out
//! when the slots are taken, and nobody's counts are lost:
//!
//! - a client with a slot is counted in its own ring, plus what it inherited from the summary
//!   when it took the slot (kept apart, each part until it expires);
//! - a new client is judged by what the summary holds for it. Its first request (of cost 1),
//!   when no slot is free, is recorded in the summary's doorkeeper and admitted without taking a
//!   slot, so keys that send one request each never evict anyone; its next request takes a slot;
//! - a slot is free when its client has no count in any window; else the slot whose client uses
//!   the least of its limits (then the least recently admitted) is taken, and that client's own
//!   counts go into the summary, where it finds them (or more) if it comes back.
//!
//! Every estimate of the summary is at least the client's true count, and every count leaves it
//! no earlier than it would have left the client's ring: the hard bound of the sliding window
//! holds for every key. A refusal that only the inherited counts cause is a capacity refusal
//! ([`Verdict::Capacity`]), answered as one.

mod limit;
mod page;
mod summary;
mod window;

pub use limit::{
    headline_index, Charged, Costs, Limit, LimitStatus, Mutant, SlotUse, Statuses, Verdict,
    MAX_WINDOW_MS,
};
pub use page::{PageLayout, LAYOUT_VERSION};
pub use window::RING;
use window::{Evaluation, Part, Ring, SlidingWindow, MAX_PARTS};

/// The limits of one rule, counted together in the rule's pages. Which of them are enforced,
/// and at what level, is decided per request (plans): a level of 0 leaves a limit unenforced
/// (still counted).
#[derive(Debug, Clone)]
pub struct Limiter {
    windows: Vec<SlidingWindow>,
    /// Each limit's largest level over the plans (at least 1): what eviction measures use by.
    max_levels: Vec<u64>,
    layout: PageLayout,
    pages: u64,
    /// The limit with the shortest window, whose first-request units the doorkeeper holds.
    door_limit: usize,
    /// Admit (and count) a request over quota only through inherited counts.
    admit_over_capacity: bool,
    /// Candidate limits (`shadow`), by limit: judged and counted, never refusing.
    candidates: Vec<bool>,
    #[cfg(any(test, feature = "internals"))]
    mutant: Option<Mutant>,
}

/// A client's counts in one limit: its ring (advanced to now) and its timed parts.
struct Counts {
    ring: Ring,
    parts: [Part; MAX_PARTS],
}

impl Limiter {
    /// Whether `page` is a page of this layout whose clock this host could have written: at
    /// most the longest window possible ahead of `now_ms` (a page clock far ahead, as corrupted
    /// bytes may hold, would pin the page's time there, and near the end of time the window
    /// arithmetic saturates: found by `fuzz/fuzz_targets/pages.rs`). A clock stepped back by
    /// less keeps its counts.
    fn readable(&self, page: &[u8], now_ms: u64) -> bool {
        self.layout.recognises(page)
            && self.layout.clock_ms(page) <= now_ms.saturating_add(MAX_WINDOW_MS)
    }

    pub fn new(limits: &[Limit], max_clients: u64, slots_per_page: usize) -> Self {
        let windows: Vec<SlidingWindow> = limits
            .iter()
            .map(|l| SlidingWindow::new(l.window_ms))
            .collect();
        let max_requests: Vec<u64> = limits
            .iter()
            .map(|l| l.requests.iter().copied().max().unwrap_or(0).max(l.ceiling))
            .collect();
        let windows_ms: Vec<u64> = limits.iter().map(|l| l.window_ms).collect();
        let door_limit = (0..limits.len())
            .min_by_key(|&i| windows_ms[i])
            .unwrap_or(0);
        Limiter {
            layout: PageLayout::new(slots_per_page, &windows_ms, &max_requests),
            max_levels: max_requests.iter().map(|&m| m.max(1)).collect(),
            windows,
            pages: max_clients.div_ceil(slots_per_page as u64).max(1),
            door_limit,
            admit_over_capacity: false,
            candidates: vec![false; limits.len()],
            #[cfg(any(test, feature = "internals"))]
            mutant: None,
        }
    }

    /// Admit (and count) requests over quota only through inherited counts, instead of refusing
    /// them as capacity refusals (`store.on_full: allow`).
    pub fn admitting_over_capacity(mut self, admit: bool) -> Self {
        self.admit_over_capacity = admit;
        self
    }

    /// Limits that are candidates (`candidates[i]`): judged and counted like the others, but a
    /// request over one is not refused for it (its status says so: `fits` false).
    pub fn with_candidates(mut self, candidates: Vec<bool>) -> Self {
        if candidates.len() == self.windows.len() {
            self.candidates = candidates;
        }
        self
    }

    /// A deliberately broken limiter (tests of the tests only).
    #[cfg(any(test, feature = "internals"))]
    pub fn with_mutant(mut self, mutant: Mutant) -> Self {
        self.mutant = Some(mutant);
        self
    }

    #[cfg(any(test, feature = "internals"))]
    fn is_mutant(&self, mutant: Mutant) -> bool {
        self.mutant == Some(mutant)
    }

    #[cfg(not(any(test, feature = "internals")))]
    fn is_mutant(&self, _: Mutant) -> bool {
        false
    }

    fn mutant_inherits_nothing(&self) -> bool {
        self.is_mutant(Mutant::InheritsNothing)
    }

    fn mutant_forgets_evicted(&self) -> bool {
        self.is_mutant(Mutant::ForgetsEvicted)
    }

    fn mutant_unrecorded_door(&self) -> bool {
        self.is_mutant(Mutant::UnrecordedDoor)
    }

    /// The fingerprint of the rule's page layout (its version and shape), part of its page keys:
    /// a rule whose layout changes counts on new pages, never on the other layout's.
    pub fn layout_id(&self) -> u32 {
        self.layout.id()
    }

    /// The page a client lives in.
    pub fn page_of(&self, client: u64) -> u64 {
        client % self.pages
    }

    #[cfg(any(test, feature = "internals"))]
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Clients this rule can count exactly at once.
    #[cfg(any(test, feature = "internals"))]
    pub fn capacity(&self) -> u64 {
        self.pages * self.layout.slots() as u64
    }

    /// Bytes of one page value.
    #[cfg(any(test, feature = "internals"))]
    pub fn page_len(&self) -> usize {
        self.layout.page_len()
    }

    /// The page layout (sizes).
    #[cfg(any(test, feature = "internals"))]
    pub fn layout(&self) -> &PageLayout {
        &self.layout
    }

    /// Decides one request of `cost` for `client` against limit `i` at level `levels[i]` (0: not
    /// enforced, still counted), given the client's page as stored (empty: missing), which it
    /// changes in place. Returns whether the page is to be written (not when refused) and the
    /// decision. A page left unwritten may still have been rolled forward to now, which changes
    /// no count: a store that keeps it (an in-place store) keeps the same counts. (The engine
    /// charges [`Limiter::charge_each`]; this is the simulators' and benchmarks' shorthand.)
    #[cfg(any(test, feature = "internals"))]
    pub fn charge(
        &self,
        page: &mut Vec<u8>,
        client: u64,
        cost: u64,
        levels: &[u64],
        now_ms: u64,
    ) -> (bool, Charged) {
        self.charge_each(page, client, Costs::All(cost), levels, now_ms)
    }

    /// [`Limiter::charge`] with a cost per limit. A cost of 0 (a request whose cost is known
    /// only from its response) is admitted while the limit has any quota left, and counts nothing.
    pub fn charge_each(
        &self,
        page: &mut Vec<u8>,
        client: u64,
        costs: Costs,
        levels: &[u64],
        now_ms: u64,
    ) -> (bool, Charged) {
        debug_assert_eq!(levels.len(), self.windows.len());
        let identity = client.max(1);
        let layout = &self.layout;
        if !self.readable(page, now_ms) {
            // Missing, emptied, another layout, or a clock no page of this host can have: start
            // afresh (the write still checks the cas).
            *page = layout.empty_page();
        }
        // The page's clock never runs backwards: a step back is read as "no time passed".
        let now = now_ms.max(layout.clock_ms(page));
        self.roll(page, now);
        let request = Request {
            identity,
            costs,
            levels,
            now,
        };
        match (0..layout.slots()).find(|&s| layout.identity(page, s) == identity) {
            Some(slot) => self.charge_resident(page, slot, &request),
            None => self.charge_newcomer(page, &request),
        }
    }

    /// A client with a slot: its own ring and its inherited parts.
    fn charge_resident(&self, page: &mut [u8], slot: usize, request: &Request) -> (bool, Charged) {
        let layout = &self.layout;
        let now = request.now;
        let last = layout.last_ms(page, slot);
        let seeded = layout.seeded_ms(page, slot);
        let door = layout.door(page, slot);
        // Each limit's counts are read from the page when needed (no list of them to move
        // around: in V8 every move of a value over 64 bytes is a call out of the VM).
        let counts = |i: usize| {
            let inherited = layout.inherited(page, slot, i);
            let parts = if inherited == [0, 0] && door == [false, false] {
                [Part::default(); MAX_PARTS] // nothing inherited: the common case
            } else {
                self.inherited_parts(inherited, door, i, seeded)
            };
            Counts {
                ring: self.own_ring(page, slot, i, last, now),
                parts,
            }
        };
        let judged = self.judge(counts, request);
        if judged.verdict != Verdict::Admitted {
            return (false, judged.charged(SlotUse::None, now));
        }
        for (i, window) in self.windows.iter().enumerate() {
            let mut ring = self.own_ring(page, slot, i, last, now);
            window.record(&mut ring, now, request.costs.counted(i));
            layout.write_ring(page, slot, i, &ring);
        }
        layout.set_header(page, slot, request.identity, now);
        (true, judged.charged(SlotUse::Own, now))
    }

    /// A client without a slot: judged by the summary's estimate; admitted into a free slot, or
    /// (a first request of cost 1) into the doorkeeper, or into the slot of the cheapest client.
    fn charge_newcomer(&self, page: &mut [u8], request: &Request) -> (bool, Charged) {
        let now = request.now;
        let estimate = self.estimate(page, request.identity, now);
        let counts = |i: usize| Counts {
            ring: [0; RING],
            parts: self.estimate_parts(&estimate, i, now),
        };
        let judged = self.judge(counts, request);
        if judged.verdict != Verdict::Admitted {
            return (false, judged.charged(SlotUse::None, now));
        }
        let (slot, free) = self.cheapest_slot(page, now);
        let door_half = (self.windows[self.door_limit].generation(now) % 2) as usize;
        let slot_use = if let Some(how) = free {
            how
        } else if request.costs.is_one() && !self.in_door(page, door_half, request.identity) {
            self.record_door(page, request.identity, now);
            return (true, judged.charged(SlotUse::Door, now));
        } else if self.evict(page, slot, now) {
            SlotUse::Evicted
        } else {
            SlotUse::Reused
        };
        self.install(page, slot, request.identity, &estimate, request.costs, now);
        (true, judged.charged(slot_use, now))
    }

    /// The slot a newcomer may take: a free one (`Some(how)`: never used, else the client idle
    /// longest among those without any count), else the slot whose client uses the smallest
    /// share of its limits, the least recently admitted on a tie (`None`: taking it evicts).
    fn cheapest_slot(&self, page: &[u8], now: u64) -> (usize, Option<SlotUse>) {
        let layout = &self.layout;
        let mut best: Option<(usize, (u64, u64))> = None;
        for slot in 0..layout.slots() {
            if layout.identity(page, slot) == 0 {
                return (slot, Some(SlotUse::Claimed));
            }
            let last = layout.last_ms(page, slot);
            let share = (0..self.windows.len())
                .map(|i| {
                    let used: u64 = self
                        .own_ring(page, slot, i, last, now)
                        .iter()
                        .map(|&c| c as u64)
                        .sum();
                    // Rounded up: any count at all is a share above 0 (a client with counts
                    // is evicted into the summary, never dropped, however large its limit).
                    used.saturating_mul(1_000_000).div_ceil(self.max_levels[i])
                })
                .max()
                .unwrap_or(0);
            if best.is_none_or(|(_, b)| (share, last) < b) {
                best = Some((slot, (share, last)));
            }
        }
        let (slot, (share, _)) = best.unwrap_or_default(); // a page has at least one slot
        (slot, (share == 0).then_some(SlotUse::Reused))
    }

    /// Every enforced limit's status for the request, and what they make of it.
    fn judge(&self, counts: impl Fn(usize) -> Counts, request: &Request) -> Judged {
        let (mut over, mut over_own, mut own_counts_only) = (false, false, true);
        let mut statuses = Statuses::with_capacity(request.levels.len());
        for (i, &level) in request.levels.iter().enumerate().filter(|(_, &l)| l > 0) {
            let (status, e) = self.status(&counts(i), i, level, request.now, request.costs.of(i));
            if !self.candidates[i] {
                over |= !status.fits;
                over_own |= !status.fits && !e.own_fits;
                own_counts_only &= status.fits || !e.inherited;
            }
            statuses.push(status);
        }
        let verdict = match (over, over_own) {
            (false, _) => Verdict::Admitted,
            (true, true) => Verdict::Refused,
            (true, false) if self.admit_over_capacity => Verdict::Admitted,
            (true, false) => Verdict::Capacity,
        };
        for status in statuses.iter_mut() {
            match verdict {
                // A refusal counts nothing: every limit reports its quota as it stands.
                Verdict::Refused | Verdict::Capacity if status.fits => {
                    let (limit, level) = (status.limit, status.requests);
                    *status = self.status(&counts(limit), limit, level, request.now, 0).0;
                }
                // Admitted over capacity: counted, nothing left.
                Verdict::Admitted if !status.fits && !self.candidates[status.limit] => {
                    status.fits = true;
                    status.remaining = 0;
                    status.retry_at_ms = None;
                }
                _ => {}
            }
        }
        Judged {
            verdict,
            statuses,
            over_capacity: over && !over_own,
            own_counts_only,
        }
    }

    /// One limit's status, and the window's evaluation behind it (own and inherited counts).
    fn status(
        &self,
        counts: &Counts,
        limit: usize,
        requests: u64,
        now: u64,
        cost: u64,
    ) -> (LimitStatus, Evaluation) {
        let window = &self.windows[limit];
        let e = window.evaluate(&counts.ring, &counts.parts, now, requests, cost);
        let status = LimitStatus {
            limit,
            requests,
            window_ms: window.window_ms,
            fits: e.fits,
            remaining: e.remaining,
            reset_at_ms: e.reset_at_ms,
            retry_at_ms: e.retry_at_ms,
        };
        (status, e)
    }

    /// Takes back `cost` counted for `client` at `at_ms` (the `now_ms` of its admitting charge),
    /// when a later rule refuses the same request. A count that has already left the window, a
    /// slot since taken again, or a first request recorded in the doorkeeper (which cannot be
    /// taken out) is left alone: the client is over-counted, never under-counted. Changes the
    /// page in place; returns whether anything was given back (the page is to be written).
    #[cfg(any(test, feature = "internals"))]
    pub fn refund(&self, page: &mut [u8], client: u64, cost: u64, at_ms: u64) -> bool {
        self.refund_each(page, client, Costs::All(cost), at_ms)
    }

    /// [`Limiter::refund`] with a cost per limit.
    pub fn refund_each(&self, page: &mut [u8], client: u64, costs: Costs, at_ms: u64) -> bool {
        let identity = client.max(1);
        let layout = &self.layout;
        if !self.readable(page, at_ms) {
            return false;
        }
        let Some(slot) = (0..layout.slots())
            .find(|&s| layout.identity(page, s) == identity && layout.seeded_ms(page, s) <= at_ms)
        else {
            return false;
        };
        let last_ms = layout.last_ms(page, slot);
        for (i, window) in self.windows.iter().enumerate() {
            let at = window.sub_window(at_ms);
            if window.sub_window(last_ms).saturating_sub(at) >= RING as u64 {
                continue;
            }
            let mut ring = layout.read_ring(page, slot, i);
            let count = &mut ring[(at % RING as u64) as usize];
            *count = count.saturating_sub(costs.counted(i));
            layout.write_ring(page, slot, i, &ring);
        }
        true
    }

    /// Counts `extra` more for `client` at `now_ms`, whatever its limits say: an admitted
    /// request's response said it cost more than it held. In the client's own ring when it has a
    /// slot, else in the summary's cells of every limit (an over-estimate of the client, never
    /// lost). Changes the page in place; returns whether it is to be written.
    pub fn add(&self, page: &mut Vec<u8>, client: u64, extra: Costs, now_ms: u64) -> bool {
        if (0..self.windows.len()).all(|i| extra.of(i) == 0) {
            return false;
        }
        let identity = client.max(1);
        let layout = &self.layout;
        if !self.readable(page, now_ms) {
            *page = layout.empty_page();
        }
        let now = now_ms.max(layout.clock_ms(page));
        self.roll(page, now);
        let Some(slot) = (0..layout.slots()).find(|&s| layout.identity(page, s) == identity) else {
            for i in 0..self.windows.len() {
                self.add_to_cells(page, i, now, identity, extra.of(i));
            }
            return true;
        };
        let last = layout.last_ms(page, slot);
        for (i, window) in self.windows.iter().enumerate() {
            let mut ring = self.own_ring(page, slot, i, last, now);
            window.record(&mut ring, now, extra.counted(i));
            layout.write_ring(page, slot, i, &ring);
        }
        layout.set_header(page, slot, identity, now.max(last));
        true
    }
}

/// One request as the limiter sees it.
struct Request<'a> {
    identity: u64,
    costs: Costs<'a>,
    levels: &'a [u64],
    /// The page's clock for this request.
    now: u64,
}

/// What the limits made of a request.
struct Judged {
    verdict: Verdict,
    statuses: Statuses,
    over_capacity: bool,
    own_counts_only: bool,
}

impl Judged {
    fn charged(self, slot: SlotUse, now_ms: u64) -> Charged {
        Charged {
            verdict: self.verdict,
            statuses: self.statuses,
            now_ms,
            slot,
            over_capacity: self.over_capacity,
            own_counts_only: self.own_counts_only,
        }
    }
}

#[cfg(test)]
mod tests;
