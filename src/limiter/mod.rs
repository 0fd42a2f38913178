//! The limiter: one decision for one client against one rule's limits, as a pure function of the
//! page the client lives in. It knows nothing of HTTP nor of how the page is stored; the engine
//! runs it inside the store's compare-and-swap loop.
//!
//! Memory is bounded: a rule owns a fixed number of pages, each holding `slots_per_page`
//! clients, so at most `pages × slots_per_page` clients are tracked and no key is ever created
//! beyond those. A client's page is fixed by the hash of its key; inside the page it takes the
//! slot carrying its identity, else an unused slot, else the slot idle longest **whose windows
//! are all empty**. A slot with any request still inside a window is never taken, so a flood of
//! new keys cannot reset an active client; when a page has no such slot the page is full for
//! that client.

mod page;
mod window;

pub use page::PageLayout;
pub use window::RING;
use window::{Ring, SlidingWindow};

use crate::config::{format_window, Errors, LimitConfig, Report, Requests};
use crate::request::{Plans, IMPLICIT_PLAN, MAX_REQUESTS};

pub const MIN_WINDOW_MS: u64 = 100;
pub const MAX_WINDOW_MS: u64 = 366 * 86_400_000;

/// One limit: a window and, per plan, the requests it admits (0: no limit for that plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub window_ms: u64,
    pub requests: Vec<u64>,
}

impl Limit {
    pub fn compile(limit: &LimitConfig, plans: &Plans, at: &str, errors: &mut Errors) -> Self {
        let check_level = |errors: &mut Errors, path: String, n: u64| {
            if n > MAX_REQUESTS {
                let message = format!("must be between 0 (no limit) and {MAX_REQUESTS}, got {n}");
                errors.add(path, message);
            }
        };
        let requests = match &limit.requests {
            Requests::All(n) => {
                check_level(errors, format!("{at}.requests"), *n);
                vec![*n; plans.names.len()]
            }
            Requests::PerPlan(levels) => {
                let mut per_plan = vec![0; plans.names.len()];
                for (plan, &n) in levels {
                    let path = format!("{at}.requests.{plan}");
                    check_level(errors, path.clone(), n);
                    match plans.names.iter().position(|p| p == plan) {
                        Some(p) => per_plan[p] = n,
                        None if plans.names == [IMPLICIT_PLAN] => {
                            errors.add(path, "requests per plan need \"plans\" at the top level")
                        }
                        None => errors.add(path, format!("{plan:?} is not one of plans.names")),
                    }
                }
                per_plan
            }
        };
        let window_ms = limit.window.millis;
        if !(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&window_ms) {
            let message = format!(
                "must be between 100ms and 366d, got {}",
                format_window(window_ms)
            );
            errors.add(format!("{at}.window"), message);
        }
        Limit {
            window_ms: window_ms.max(1),
            requests,
        }
    }
}

/// How a charge came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Under every limit; counted.
    Admitted,
    /// Over at least one limit; nothing counted.
    Refused,
    /// No slot free for a new client; nothing counted.
    Full,
}

/// One limit's view of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStatus {
    /// The limit's index in its rule.
    pub limit: usize,
    pub requests: u64,
    pub window_ms: u64,
    pub fits: bool,
    pub remaining: u64,
    pub reset_at_ms: u64,
    /// When a request of the same cost fits again (refused limits only); `None` if it never can.
    pub retry_at_ms: Option<u64>,
}

/// What one charge decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charged {
    pub verdict: Verdict,
    /// Every enforced limit's status (empty when the page is full).
    pub statuses: Vec<LimitStatus>,
    /// The clock the decision used (never before the client's last admission).
    pub now_ms: u64,
    /// How an admitted request's client got its slot.
    pub slot: SlotUse,
}

/// How the client's slot was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotUse {
    /// Nothing was written (refused, or the page is full).
    None,
    /// The client's own slot.
    Own,
    /// A never-used slot: one more client tracked.
    Claimed,
    /// The slot of a client whose windows were all empty (an eviction that loses nothing).
    Evicted,
}

/// The most restrictive of several limit statuses: when any is violated, the violated limit that
/// frees up last; else the one with the least quota left (on a tie, the one that resets last).
pub fn headline_index<'a>(
    statuses: impl Iterator<Item = &'a LimitStatus> + Clone,
) -> Option<usize> {
    let indexed = statuses.enumerate();
    if indexed.clone().any(|(_, s)| !s.fits) {
        indexed
            .filter(|(_, s)| !s.fits)
            .max_by_key(|(_, s)| s.retry_at_ms.unwrap_or(u64::MAX))
            .map(|(i, _)| i)
    } else {
        indexed
            .min_by(|(_, a), (_, b)| {
                a.remaining
                    .cmp(&b.remaining)
                    .then(b.reset_at_ms.cmp(&a.reset_at_ms))
            })
            .map(|(i, _)| i)
    }
}

/// The limits of one rule, counted together in the rule's pages. Which of them are enforced,
/// and at what level, is decided per request (plans): a level of 0 leaves a limit unenforced
/// (still counted).
#[derive(Debug, Clone)]
pub struct Limiter {
    windows: Vec<SlidingWindow>,
    layout: PageLayout,
    pages: u64,
}

impl Limiter {
    pub fn new(limits: &[Limit], max_clients: u64, slots_per_page: usize) -> Self {
        let windows: Vec<SlidingWindow> = limits
            .iter()
            .map(|l| SlidingWindow::new(l.window_ms))
            .collect();
        let max_requests: Vec<u64> = limits
            .iter()
            .map(|l| l.requests.iter().copied().max().unwrap_or(0))
            .collect();
        let windows_ms: Vec<u64> = limits.iter().map(|l| l.window_ms).collect();
        Limiter {
            windows,
            layout: PageLayout::new(slots_per_page, &windows_ms, &max_requests),
            pages: max_clients.div_ceil(slots_per_page as u64).max(1),
        }
    }

    /// The page a client lives in.
    pub fn page_of(&self, client: u64) -> u64 {
        client % self.pages
    }

    #[cfg(any(test, feature = "internals"))]
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Clients this rule can track at once.
    #[cfg(any(test, feature = "internals"))]
    pub fn capacity(&self) -> u64 {
        self.pages * self.layout.slots() as u64
    }

    /// Bytes of one page value.
    #[cfg(any(test, feature = "internals"))]
    pub fn page_len(&self) -> usize {
        self.layout.page_len()
    }

    /// Decides one request of `cost` for `client` against limit `i` at level `levels[i]` (0: not
    /// enforced, still counted), given the client's page as stored (`None`: missing). Returns
    /// the page to write (`None` when nothing changes: refused or full) and the decision.
    pub fn charge(
        &self,
        page: Option<Vec<u8>>,
        client: u64,
        cost: u64,
        levels: &[u64],
        now_ms: u64,
    ) -> (Option<Vec<u8>>, Charged) {
        debug_assert_eq!(levels.len(), self.windows.len());
        let identity = client.max(1);
        let layout = &self.layout;
        let mut page = match page {
            Some(bytes) if layout.recognises(&bytes) => bytes,
            // Missing, emptied, or another layout: start afresh (the write still checks the cas).
            _ => layout.empty_page(),
        };
        let Some((slot, slot_use)) = self.choose_slot(&page, identity, now_ms) else {
            let full = Charged {
                verdict: Verdict::Full,
                statuses: Vec::new(),
                now_ms,
                slot: SlotUse::None,
            };
            return (None, full);
        };
        // The clock never runs backwards for a client: a step back is read as "no time passed".
        let is_new = slot_use != SlotUse::Own;
        let last_ms = if is_new {
            0
        } else {
            layout.last_ms(&page, slot)
        };
        let now = now_ms.max(last_ms);
        let rings: Vec<Ring> = (0..self.windows.len())
            .map(|i| {
                let mut ring = if is_new {
                    [0; RING]
                } else {
                    layout.read_ring(&page, slot, i)
                };
                self.windows[i].advance(&mut ring, last_ms, now);
                ring
            })
            .collect();
        let mut statuses = self.evaluate(&rings, levels, now, cost);
        if statuses.iter().any(|s| !s.fits) {
            // Over some limit: every limit reports its quota as it stands, nothing is counted.
            for status in statuses.iter_mut().filter(|s| s.fits) {
                *status = self.status(&rings, status.limit, status.requests, now, 0);
            }
            let refused = Charged {
                verdict: Verdict::Refused,
                statuses,
                now_ms: now,
                slot: SlotUse::None,
            };
            return (None, refused);
        }
        let cost32 = u32::try_from(cost).unwrap_or(u32::MAX);
        for (i, mut ring) in rings.into_iter().enumerate() {
            self.windows[i].record(&mut ring, now, cost32);
            layout.write_ring(&mut page, slot, i, &ring);
        }
        layout.set_header(&mut page, slot, identity, now);
        let admitted = Charged {
            verdict: Verdict::Admitted,
            statuses,
            now_ms: now,
            slot: slot_use,
        };
        (Some(page), admitted)
    }

    /// Every enforced limit's status for a request of `cost` on advanced rings.
    fn evaluate(&self, rings: &[Ring], levels: &[u64], now: u64, cost: u64) -> Vec<LimitStatus> {
        levels
            .iter()
            .enumerate()
            .filter(|(_, &level)| level > 0)
            .map(|(i, &level)| self.status(rings, i, level, now, cost))
            .collect()
    }

    fn status(
        &self,
        rings: &[Ring],
        limit: usize,
        requests: u64,
        now: u64,
        cost: u64,
    ) -> LimitStatus {
        let window = &self.windows[limit];
        let e = window.evaluate(&rings[limit], now, requests, cost);
        LimitStatus {
            limit,
            requests,
            window_ms: window.window_ms,
            fits: e.fits,
            remaining: e.remaining,
            reset_at_ms: e.reset_at_ms,
            retry_at_ms: e.retry_at_ms,
        }
    }

    /// Takes back `cost` counted for `client` at `at_ms` (the `now_ms` of its admitting charge),
    /// when a later rule refuses the same request. A count that has already left the window, or
    /// a slot since reused, is left alone. Returns the page to write and whether anything was
    /// given back.
    pub fn refund(
        &self,
        page: Option<Vec<u8>>,
        client: u64,
        cost: u64,
        at_ms: u64,
    ) -> (Option<Vec<u8>>, bool) {
        let identity = client.max(1);
        let layout = &self.layout;
        let Some(mut page) = page.filter(|p| layout.recognises(p)) else {
            return (None, false);
        };
        let Some(slot) = (0..layout.slots()).find(|&s| layout.identity(&page, s) == identity)
        else {
            return (None, false);
        };
        let cost = u32::try_from(cost).unwrap_or(u32::MAX);
        let last_ms = layout.last_ms(&page, slot);
        for (i, window) in self.windows.iter().enumerate() {
            let at = window.sub_window(at_ms);
            if window.sub_window(last_ms).saturating_sub(at) >= RING as u64 {
                continue;
            }
            let mut ring = layout.read_ring(&page, slot, i);
            let count = &mut ring[(at % RING as u64) as usize];
            *count = count.saturating_sub(cost);
            layout.write_ring(&mut page, slot, i, &ring);
        }
        (Some(page), true)
    }

    /// The slot for `identity`: its own, else an unused one, else the one idle longest among those
    /// whose every window is empty at `now_ms`. `None` when every slot holds an active client.
    fn choose_slot(&self, page: &[u8], identity: u64, now_ms: u64) -> Option<(usize, SlotUse)> {
        let layout = &self.layout;
        let mut reusable: Option<(usize, u64)> = None;
        for slot in 0..layout.slots() {
            let owner = layout.identity(page, slot);
            if owner == identity {
                return Some((slot, SlotUse::Own));
            }
            if owner == 0 {
                if reusable.is_none_or(|(_, last)| last > 0) {
                    reusable = Some((slot, 0));
                }
                continue;
            }
            let last = layout.last_ms(page, slot);
            let idle = self.windows.iter().all(|w| {
                // A future `last` (clock stepped back) counts as active.
                last <= now_ms && w.sub_window(now_ms) - w.sub_window(last) >= RING as u64
            });
            if idle && reusable.is_none_or(|(_, best)| last < best) {
                reusable = Some((slot, last));
            }
        }
        // Keep scanning past an unused slot: the identity may sit further on.
        reusable.map(|(slot, last)| {
            let how = if last == 0 {
                SlotUse::Claimed
            } else {
                SlotUse::Evicted
            };
            (slot, how)
        })
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{self, CasMismatch, MemoryStore, PageKeys, SharedStore};
    use std::cell::{Cell, RefCell};

    const T0: u64 = 1_700_000_000_000;

    /// A rule's limiter, its page keys, and the levels it is enforced at.
    struct P {
        limiter: Limiter,
        keys: PageKeys,
        requests: Vec<u64>,
    }

    impl P {
        fn page_key(&self, client: u64) -> String {
            self.keys.page(self.limiter.page_of(client))
        }
    }

    fn policy(limits: &[(u64, u64)], max_clients: u64, slots: usize) -> P {
        let limits: Vec<Limit> = limits
            .iter()
            .map(|&(requests, window_ms)| Limit {
                window_ms,
                requests: vec![requests],
            })
            .collect();
        P {
            limiter: Limiter::new(&limits, max_clients, slots),
            keys: PageKeys::new("test", "rule"),
            requests: limits.iter().map(|l| l.requests[0]).collect(),
        }
    }

    /// One charge as the engine runs it: the pure transform inside the store's CAS loop (8
    /// attempts). Losing every race shows as `None`.
    struct Checked {
        charged: Charged,
        lost_races: u32,
    }

    impl std::ops::Deref for Checked {
        type Target = Charged;
        fn deref(&self) -> &Charged {
            &self.charged
        }
    }

    impl Checked {
        fn allowed(&self) -> bool {
            self.verdict == Verdict::Admitted
        }
        fn headline(&self) -> Option<&LimitStatus> {
            headline_index(self.statuses.iter()).map(|i| &self.statuses[i])
        }
        fn retry_at_ms(&self) -> Option<u64> {
            self.headline()
                .filter(|s| !s.fits)
                .and_then(|s| s.retry_at_ms)
        }
    }

    fn try_check(
        store: &dyn SharedStore,
        p: &P,
        client: u64,
        cost: u64,
        now: u64,
    ) -> Option<Checked> {
        let key = p.page_key(client);
        let updated = store::update(store, &key, 8, |page| {
            p.limiter.charge(page, client, cost, &p.requests, now)
        })
        .ok()?;
        Some(Checked {
            charged: updated.result,
            lost_races: updated.lost_races,
        })
    }

    fn check(store: &dyn SharedStore, p: &P, client: u64, cost: u64, now: u64) -> Checked {
        try_check(store, p, client, cost, now).expect("a charge within 8 attempts")
    }

    #[test]
    fn counts_per_client_and_refuses_past_the_limit() {
        let store = MemoryStore::new();
        let p = policy(&[(3, 1_000)], 100, 4);
        for i in 0..3 {
            let d = check(&store, &p, 42, 1, T0 + i);
            assert_eq!(d.verdict, Verdict::Admitted);
            assert_eq!(d.headline().unwrap().remaining, 2 - i);
        }
        let d = check(&store, &p, 42, 1, T0 + 3);
        assert_eq!(d.verdict, Verdict::Refused);
        assert!(!d.allowed());
        assert_eq!(d.headline().unwrap().remaining, 0);
        // Another client is untouched.
        assert_eq!(check(&store, &p, 43, 1, T0 + 3).verdict, Verdict::Admitted);
    }

    #[test]
    fn a_refusal_writes_nothing() {
        let store = MemoryStore::new();
        let p = policy(&[(1, 1_000)], 10, 2);
        check(&store, &p, 7, 1, T0);
        let before = store.get(&p.page_key(7));
        for i in 0..10 {
            assert_eq!(check(&store, &p, 7, 1, T0 + i).verdict, Verdict::Refused);
        }
        assert_eq!(store.get(&p.page_key(7)), before, "value and cas unchanged");
    }

    #[test]
    fn all_limits_hold_together_and_the_tightest_is_reported() {
        let store = MemoryStore::new();
        // 3 per second and 5 per minute.
        let p = policy(&[(3, 1_000), (5, 60_000)], 10, 2);
        let mut admitted = 0;
        for second in 0..10 {
            for _ in 0..3 {
                if check(&store, &p, 1, 1, T0 + second * 1_100).allowed() {
                    admitted += 1;
                }
            }
        }
        assert_eq!(admitted, 5, "the minute limit caps the total");
        let d = check(&store, &p, 1, 1, T0 + 11_000);
        assert_eq!(d.verdict, Verdict::Refused);
        let h = d.headline().unwrap();
        assert_eq!(h.limit, 1);
        assert!(d.retry_at_ms().unwrap() >= T0 + 60_000);
        // The per-second limit still reports its own quota, not a made-up zero.
        assert_eq!(d.statuses[0].remaining, 3);
    }

    #[test]
    fn memory_stays_bounded_under_a_key_spray() {
        let store = MemoryStore::new();
        let p = policy(&[(10, 1_000)], 64, 8);
        for key in 0..100_000u64 {
            let client = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            check(&store, &p, client, 1, T0 + key / 10);
        }
        assert_eq!(store.keys().len(), 8, "64 clients / 8 per page");
        assert_eq!(
            store.payload_bytes(),
            8 * (p.limiter.layout.page_len() + "test/v1/rule/0".len())
        );
    }

    #[test]
    fn a_flood_of_new_keys_never_evicts_an_active_client() {
        let store = MemoryStore::new();
        let p = policy(&[(5, 10_000)], 4, 4); // one page of 4 slots
        let victim = 1234;
        for i in 0..5 {
            assert!(check(&store, &p, victim, 1, T0 + i).allowed());
        }
        // Three attackers take the other slots; every further new key finds the page full.
        for key in 0..1_000u64 {
            let d = check(&store, &p, 10_000 + key, 1, T0 + 10 + key);
            if key < 3 {
                assert_eq!(d.verdict, Verdict::Admitted);
            } else {
                assert_eq!(d.verdict, Verdict::Full);
                assert!(!d.allowed(), "nothing counted for a client without a slot");
            }
        }
        // The victim is still limited: its window was not reset.
        assert_eq!(
            check(&store, &p, victim, 1, T0 + 2_000).verdict,
            Verdict::Refused
        );
        // Once the attackers' windows are empty, new clients take their slots.
        let later = T0 + 1_010 + 10_000 + 10_000 / 20 + 1;
        assert_eq!(check(&store, &p, 99, 1, later).verdict, Verdict::Admitted);
        assert_eq!(check(&store, &p, 98, 1, T0 + 2_000).verdict, Verdict::Full);
    }

    #[test]
    fn an_idle_slot_is_reused_oldest_first() {
        let store = MemoryStore::new();
        let p = policy(&[(5, 1_000)], 2, 2);
        assert_eq!(check(&store, &p, 1, 1, T0).slot, SlotUse::Claimed);
        assert_eq!(check(&store, &p, 2, 1, T0 + 500).slot, SlotUse::Claimed);
        assert_eq!(check(&store, &p, 2, 1, T0 + 600).slot, SlotUse::Own);
        let later = T0 + 10_000;
        let d = check(&store, &p, 3, 1, later);
        assert_eq!(d.verdict, Verdict::Admitted);
        assert_eq!(d.slot, SlotUse::Evicted);
        let (page, _) = store.get(&p.page_key(3));
        let page = page.unwrap();
        assert_eq!(
            p.limiter.layout.identity(&page, 0),
            3,
            "client 1 was idle longest"
        );
        assert_eq!(p.limiter.layout.identity(&page, 1), 2);
    }

    #[test]
    fn a_foreign_value_is_replaced_not_misread() {
        let store = MemoryStore::new();
        let p = policy(&[(2, 1_000)], 1, 1);
        let key = p.page_key(5);
        store.force(&key, &[0xff; 64]);
        assert_eq!(check(&store, &p, 5, 1, T0).verdict, Verdict::Admitted);
        assert_eq!(check(&store, &p, 5, 1, T0).verdict, Verdict::Admitted);
        assert_eq!(check(&store, &p, 5, 1, T0).verdict, Verdict::Refused);
        // A page of a different layout (an older config) is not misread either.
        let other = policy(&[(2, 2_000)], 1, 1);
        store.force(&key, &other.limiter.layout.empty_page());
        assert_eq!(check(&store, &p, 5, 1, T0).verdict, Verdict::Admitted);
    }

    #[test]
    fn the_clock_stepping_back_admits_no_burst() {
        let store = MemoryStore::new();
        let p = policy(&[(3, 60_000)], 1, 1);
        for _ in 0..3 {
            assert!(check(&store, &p, 9, 1, T0).allowed());
        }
        // NTP steps the clock back five minutes: still limited, nothing panics.
        let d = check(&store, &p, 9, 1, T0 - 300_000);
        assert_eq!(d.verdict, Verdict::Refused);
        assert_eq!(d.now_ms, T0);
    }

    /// A store that lets "another worker" act between this worker's read and its write.
    struct RacingStore<'a> {
        inner: &'a MemoryStore,
        on_get: RefCell<Option<Box<dyn FnMut() + 'a>>>,
        gets: Cell<u32>,
    }

    impl SharedStore for RacingStore<'_> {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            let read = self.inner.get(key);
            self.gets.set(self.gets.get() + 1);
            if let Some(mut interleave) = self.on_get.borrow_mut().take() {
                interleave();
            }
            read
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasMismatch> {
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn a_lost_race_is_retried_and_nothing_is_lost() {
        let store = MemoryStore::new();
        let p = policy(&[(2, 1_000)], 1, 1);
        check(&store, &p, 5, 1, T0); // the page exists
        let racing = RacingStore {
            inner: &store,
            on_get: RefCell::new(Some(Box::new(|| {
                // Worker B admits its request between worker A's read and write.
                assert!(check(&store, &p, 5, 1, T0 + 1).allowed());
            }))),
            gets: Cell::new(0),
        };
        let d = check(&racing, &p, 5, 1, T0 + 2);
        assert_eq!(d.lost_races, 1);
        assert_eq!(racing.gets.get(), 2);
        assert_eq!(
            d.verdict,
            Verdict::Refused,
            "A sees B's count after the retry: 2 of 2 used"
        );
    }

    #[test]
    fn racing_creators_do_not_lose_a_count() {
        let store = MemoryStore::new();
        let p = policy(&[(1, 1_000)], 1, 1);
        // Both workers see the page missing; B creates it first, A's create must then fail.
        let racing = RacingStore {
            inner: &store,
            on_get: RefCell::new(Some(Box::new(|| {
                assert!(check(&store, &p, 5, 1, T0).allowed());
            }))),
            gets: Cell::new(0),
        };
        let d = check(&racing, &p, 5, 1, T0);
        assert_eq!(
            d.verdict,
            Verdict::Refused,
            "limit 1: only one of the two creators is admitted"
        );
    }

    #[test]
    fn exhausted_retries_leave_the_decision_to_the_caller() {
        struct AlwaysLoses(MemoryStore);
        impl SharedStore for AlwaysLoses {
            fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
                let (v, cas) = self.0.get(key);
                (v, cas.or(Some(1)))
            }
            fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), CasMismatch> {
                Err(CasMismatch)
            }
        }
        let store = AlwaysLoses(MemoryStore::new());
        let p = policy(&[(1, 1_000)], 1, 1);
        assert!(
            try_check(&store, &p, 5, 1, T0).is_none(),
            "8 lost races: the store could not decide (the engine applies on_contention)"
        );
    }

    /// Several simulated workers interleave at random points; admissions stay exact.
    #[test]
    fn interleaved_workers_admit_exactly_the_limit() {
        let store = MemoryStore::new();
        let p = policy(&[(50, 1_000)], 16, 4);
        let admitted = Cell::new(0);
        let mut seed = 7u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let racing = RacingStore {
                inner: &store,
                on_get: RefCell::new(None),
                gets: Cell::new(0),
            };
            if next() % 2 == 0 {
                let admitted = &admitted;
                let store = &store;
                let p = &p;
                *racing.on_get.borrow_mut() = Some(Box::new(move || {
                    if check(store, p, 77, 1, T0 + 5).allowed() {
                        admitted.set(admitted.get() + 1);
                    }
                }));
            }
            if check(&racing, &p, 77, 1, T0 + 5).allowed() {
                admitted.set(admitted.get() + 1);
            }
        }
        assert_eq!(admitted.get(), 50);
    }
}
