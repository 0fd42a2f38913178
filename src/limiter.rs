//! The limiter: one decision for one client against one set of limits, counted in a
//! [`SharedStore`] with compare-and-swap. It knows nothing of HTTP.
//!
//! Memory is bounded: a policy owns `pages` shared-data keys, each holding `slots_per_page`
//! clients, so at most `pages × slots_per_page` clients are tracked and no key is ever created
//! beyond those. A client's page is fixed by the hash of its key; inside the page it takes the
//! slot carrying its identity, else an unused slot, else the slot idle longest **whose windows
//! are all empty**. A slot with any request still inside a window is never taken, so a flood of
//! new keys cannot reset an active client; when a page has no such slot the store is full for
//! that client and `on_full` decides.

use crate::config::FailPolicy;
use crate::page_codec::PageLayout;
use crate::sliding_window::{SlidingWindow, RING};
use crate::store::{CasMismatch, SharedStore};

/// A cas no live value carries in practice (the host hands out cas values in sequence from 1):
/// a write of a missing page with this cas creates it, a write racing another creator fails.
pub const CREATE_CAS: u32 = u32::MAX;

/// A set of windows counted together, in its own pages. Which of them are enforced, and at what
/// level, is decided per request (plans): `requests[i] == 0` leaves window `i` unenforced.
#[derive(Debug, Clone)]
pub struct StoredPolicy {
    /// Shared-data key prefix of this policy's pages, e.g. `ratelimit/v1/api/`.
    pub key_prefix: String,
    pub windows: Vec<SlidingWindow>,
    pub layout: PageLayout,
    pub pages: u64,
}

impl StoredPolicy {
    /// `max_requests[i]`: the highest level window `i` is ever enforced at (sizes its counters).
    pub fn new(
        key_prefix: String,
        windows: Vec<SlidingWindow>,
        max_requests: &[u64],
        max_clients: u64,
        slots_per_page: usize,
    ) -> Self {
        let windows_ms: Vec<u64> = windows.iter().map(|w| w.window_ms).collect();
        let layout = PageLayout::new(slots_per_page, &windows_ms, max_requests);
        let pages = max_clients.div_ceil(slots_per_page as u64).max(1);
        StoredPolicy {
            key_prefix,
            windows,
            layout,
            pages,
        }
    }

    pub fn page_key(&self, client: u64) -> String {
        use std::fmt::Write;
        let mut key = String::with_capacity(self.key_prefix.len() + 8);
        key.push_str(&self.key_prefix);
        let _ = write!(key, "{}", client % self.pages);
        key
    }

    /// Clients this policy can track at once.
    pub fn capacity(&self) -> u64 {
        self.pages * self.layout.slots() as u64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    pub cas_attempts: u32,
    pub on_full: FailPolicy,
    pub on_contention: FailPolicy,
}

/// Why the decision came out as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Under every limit; counted.
    Admitted,
    /// Over at least one limit; nothing counted.
    Refused,
    /// No slot free for a new client; `on_full` applied.
    StoreFull,
    /// Every compare-and-swap attempt lost; `on_contention` applied.
    Contention,
}

/// One limit's view of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStatus {
    pub limit_index: usize,
    pub requests: u64,
    pub window_ms: u64,
    pub fits: bool,
    pub remaining: u64,
    pub reset_at_ms: u64,
    /// When a request of the same cost fits again (refused limits only); `None` if it never can.
    pub retry_at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// Whether the request may pass, once the fail policies are applied.
    pub allowed: bool,
    /// Every limit's status (empty for `StoreFull` and `Contention`).
    pub statuses: Vec<LimitStatus>,
    /// The clock the decision used (never before the client's last admission).
    pub now_ms: u64,
    /// Compare-and-swap attempts that lost a race.
    pub cas_retries: u32,
    /// How an admitted request's client got its slot.
    pub slot: SlotUse,
}

/// How the client's slot was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotUse {
    /// Nothing was written (refused, or the store could not decide).
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

impl Decision {
    /// The most restrictive limit (see [`headline_index`]).
    pub fn headline(&self) -> Option<&LimitStatus> {
        headline_index(self.statuses.iter()).map(|i| &self.statuses[i])
    }

    /// When a refused request can be retried: the latest retry time of the violated limits.
    pub fn retry_at_ms(&self) -> Option<u64> {
        self.headline()
            .filter(|s| !s.fits)
            .and_then(|s| s.retry_at_ms)
    }
}

fn fail(verdict: Verdict, policy: FailPolicy, now_ms: u64, cas_retries: u32) -> Decision {
    Decision {
        verdict,
        allowed: policy == FailPolicy::Allow,
        statuses: Vec::new(),
        now_ms,
        cas_retries,
        slot: SlotUse::None,
    }
}

/// Decides one request of `cost` for the client whose key hashes to `client`, against window `i`
/// at level `requests[i]` (0: not enforced, still counted), and counts it in every window if
/// admitted. A refused request writes nothing.
pub fn check(
    store: &dyn SharedStore,
    policy: &StoredPolicy,
    options: &StoreOptions,
    client: u64,
    cost: u64,
    requests: &[u64],
    now_ms: u64,
) -> Decision {
    debug_assert_eq!(requests.len(), policy.windows.len());
    let identity = client.max(1);
    let key = policy.page_key(client);
    let layout = &policy.layout;
    let mut cas_retries = 0;
    for _ in 0..options.cas_attempts.max(1) {
        let (value, cas) = store.get(&key);
        let mut page = match value {
            Some(bytes) if layout.recognises(&bytes) => bytes,
            // Missing, emptied, or another layout: start afresh (the write still checks the cas).
            _ => layout.empty_page(),
        };
        let Some((slot, slot_use)) = choose_slot(policy, &page, identity, now_ms) else {
            return fail(Verdict::StoreFull, options.on_full, now_ms, cas_retries);
        };
        // The clock never runs backwards for a client: a step back is read as "no time passed".
        let is_new = slot_use != SlotUse::Own;
        let last_ms = if is_new {
            0
        } else {
            layout.last_ms(&page, slot)
        };
        let now = now_ms.max(last_ms);

        let mut rings = Vec::with_capacity(policy.windows.len());
        let mut statuses = Vec::with_capacity(policy.windows.len());
        for (i, (window, &limit)) in policy.windows.iter().zip(requests).enumerate() {
            let mut ring = if is_new {
                [0; RING]
            } else {
                layout.read_ring(&page, slot, i)
            };
            window.advance(&mut ring, last_ms, now);
            if limit > 0 {
                let e = window.evaluate(&ring, now, limit, cost);
                statuses.push(LimitStatus {
                    limit_index: i,
                    requests: limit,
                    window_ms: window.window_ms,
                    fits: e.fits,
                    remaining: e.remaining,
                    reset_at_ms: e.reset_at_ms,
                    retry_at_ms: e.retry_at_ms,
                });
            }
            rings.push(ring);
        }
        if statuses.iter().any(|s| !s.fits) {
            // Over some limit: every limit reports its quota as it stands, nothing is counted.
            for status in statuses.iter_mut().filter(|s| s.fits) {
                let window = &policy.windows[status.limit_index];
                let e = window.evaluate(&rings[status.limit_index], now, status.requests, 0);
                status.remaining = e.remaining;
                status.reset_at_ms = e.reset_at_ms;
            }
            return Decision {
                verdict: Verdict::Refused,
                allowed: false,
                statuses,
                now_ms: now,
                cas_retries,
                slot: SlotUse::None,
            };
        }
        let cost32 = u32::try_from(cost).unwrap_or(u32::MAX);
        for (i, (window, ring)) in policy.windows.iter().zip(rings.iter_mut()).enumerate() {
            window.record(ring, now, cost32);
            layout.write_ring(&mut page, slot, i, ring);
        }
        layout.set_header(&mut page, slot, identity, now);
        let write_cas = match cas {
            Some(c) => Some(c),
            None => Some(CREATE_CAS),
        };
        match store.set(&key, &page, write_cas) {
            Ok(()) => {
                return Decision {
                    verdict: Verdict::Admitted,
                    allowed: true,
                    statuses,
                    now_ms: now,
                    cas_retries,
                    slot: slot_use,
                };
            }
            Err(CasMismatch) => cas_retries += 1,
        }
    }
    fail(
        Verdict::Contention,
        options.on_contention,
        now_ms,
        cas_retries,
    )
}

/// Takes back `cost` counted for `client` at `at_ms` (the `now_ms` of its admitting decision),
/// when a later policy refuses the same request. Best effort within `cas_attempts`; a count that
/// has already left the window, or a slot since reused, is left alone.
pub fn refund(
    store: &dyn SharedStore,
    policy: &StoredPolicy,
    options: &StoreOptions,
    client: u64,
    cost: u64,
    at_ms: u64,
) -> bool {
    let identity = client.max(1);
    let key = policy.page_key(client);
    let layout = &policy.layout;
    let cost = u32::try_from(cost).unwrap_or(u32::MAX);
    for _ in 0..options.cas_attempts.max(1) {
        let (Some(mut page), Some(cas)) = store.get(&key) else {
            return false;
        };
        if !layout.recognises(&page) {
            return false;
        }
        let Some(slot) = (0..layout.slots()).find(|&s| layout.identity(&page, s) == identity)
        else {
            return false;
        };
        let last_ms = layout.last_ms(&page, slot);
        for (i, window) in policy.windows.iter().enumerate() {
            let at = window.sub_window(at_ms);
            if window.sub_window(last_ms).saturating_sub(at) >= RING as u64 {
                continue;
            }
            let mut ring = layout.read_ring(&page, slot, i);
            let count = &mut ring[(at % RING as u64) as usize];
            *count = count.saturating_sub(cost);
            layout.write_ring(&mut page, slot, i, &ring);
        }
        if store.set(&key, &page, Some(cas)).is_ok() {
            return true;
        }
    }
    false
}

/// The slot for `identity`: its own, else an unused one, else the one idle longest among those
/// whose every window is empty at `now_ms`. `None` when every slot holds an active client.
fn choose_slot(
    policy: &StoredPolicy,
    page: &[u8],
    identity: u64,
    now_ms: u64,
) -> Option<(usize, SlotUse)> {
    let layout = &policy.layout;
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
        let idle = policy.windows.iter().all(|w| {
            // A future `last` (clock stepped back) counts as active.
            last <= now_ms && w.sub_window(now_ms) - w.sub_window(last) >= RING as u64
        });
        if idle && reusable.is_none_or(|(_, best)| last < best) {
            reusable = Some((slot, last));
        }
    }
    // Keep scanning past an unused slot: the identity may sit further on.
    reusable.map(|(slot, last)| {
        (
            slot,
            if last == 0 {
                SlotUse::Claimed
            } else {
                SlotUse::Evicted
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use std::cell::{Cell, RefCell};

    const T0: u64 = 1_700_000_000_000;

    /// A policy and the levels it is enforced at.
    struct P {
        policy: StoredPolicy,
        requests: Vec<u64>,
    }

    impl std::ops::Deref for P {
        type Target = StoredPolicy;
        fn deref(&self) -> &StoredPolicy {
            &self.policy
        }
    }

    fn policy(limits: &[(u64, u64)], max_clients: u64, slots: usize) -> P {
        let windows = limits.iter().map(|&(_, w)| SlidingWindow::new(w)).collect();
        let requests: Vec<u64> = limits.iter().map(|&(r, _)| r).collect();
        P {
            policy: StoredPolicy::new(
                "test/v1/rule/".into(),
                windows,
                &requests,
                max_clients,
                slots,
            ),
            requests,
        }
    }

    fn check(
        store: &dyn SharedStore,
        p: &P,
        options: &StoreOptions,
        client: u64,
        cost: u64,
        now: u64,
    ) -> Decision {
        super::check(store, &p.policy, options, client, cost, &p.requests, now)
    }

    fn options() -> StoreOptions {
        StoreOptions {
            cas_attempts: 8,
            on_full: FailPolicy::Deny,
            on_contention: FailPolicy::Allow,
        }
    }

    #[test]
    fn counts_per_client_and_refuses_past_the_limit() {
        let store = MemoryStore::new();
        let p = policy(&[(3, 1_000)], 100, 4);
        for i in 0..3 {
            let d = check(&store, &p, &options(), 42, 1, T0 + i);
            assert_eq!(d.verdict, Verdict::Admitted);
            assert_eq!(d.headline().unwrap().remaining, 2 - i);
        }
        let d = check(&store, &p, &options(), 42, 1, T0 + 3);
        assert_eq!(d.verdict, Verdict::Refused);
        assert!(!d.allowed);
        assert_eq!(d.headline().unwrap().remaining, 0);
        // Another client is untouched.
        assert_eq!(
            check(&store, &p, &options(), 43, 1, T0 + 3).verdict,
            Verdict::Admitted
        );
    }

    #[test]
    fn a_refusal_writes_nothing() {
        let store = MemoryStore::new();
        let p = policy(&[(1, 1_000)], 10, 2);
        check(&store, &p, &options(), 7, 1, T0);
        let before = store.get(&p.page_key(7));
        for i in 0..10 {
            assert_eq!(
                check(&store, &p, &options(), 7, 1, T0 + i).verdict,
                Verdict::Refused
            );
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
                if check(&store, &p, &options(), 1, 1, T0 + second * 1_100).allowed {
                    admitted += 1;
                }
            }
        }
        assert_eq!(admitted, 5, "the minute limit caps the total");
        let d = check(&store, &p, &options(), 1, 1, T0 + 11_000);
        assert_eq!(d.verdict, Verdict::Refused);
        let h = d.headline().unwrap();
        assert_eq!(h.limit_index, 1);
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
            check(&store, &p, &options(), client, 1, T0 + key / 10);
        }
        assert_eq!(store.keys().len(), 8, "64 clients / 8 per page");
        assert_eq!(
            store.payload_bytes(),
            8 * (p.layout.page_len() + "test/v1/rule/0".len())
        );
    }

    #[test]
    fn a_flood_of_new_keys_never_evicts_an_active_client() {
        let store = MemoryStore::new();
        let p = policy(&[(5, 10_000)], 4, 4); // one page of 4 slots
        let victim = 1234;
        for i in 0..5 {
            assert!(check(&store, &p, &options(), victim, 1, T0 + i).allowed);
        }
        // Three attackers take the other slots; every further new key finds the page full.
        for key in 0..1_000u64 {
            let d = check(&store, &p, &options(), 10_000 + key, 1, T0 + 10 + key);
            if key < 3 {
                assert_eq!(d.verdict, Verdict::Admitted);
            } else {
                assert_eq!(d.verdict, Verdict::StoreFull);
                assert!(!d.allowed, "on_full: deny");
            }
        }
        // The victim is still limited: its window was not reset.
        assert_eq!(
            check(&store, &p, &options(), victim, 1, T0 + 2_000).verdict,
            Verdict::Refused
        );
        // Once the attackers' windows are empty, new clients take their slots.
        let later = T0 + 1_010 + 10_000 + 10_000 / 20 + 1;
        assert_eq!(
            check(&store, &p, &options(), 99, 1, later).verdict,
            Verdict::Admitted
        );
        let open = StoreOptions {
            on_full: FailPolicy::Allow,
            ..options()
        };
        assert!(check(&store, &p, &open, 98, 1, T0 + 2_000).allowed);
    }

    #[test]
    fn an_idle_slot_is_reused_oldest_first() {
        let store = MemoryStore::new();
        let p = policy(&[(5, 1_000)], 2, 2);
        assert_eq!(
            check(&store, &p, &options(), 1, 1, T0).slot,
            SlotUse::Claimed
        );
        assert_eq!(
            check(&store, &p, &options(), 2, 1, T0 + 500).slot,
            SlotUse::Claimed
        );
        assert_eq!(
            check(&store, &p, &options(), 2, 1, T0 + 600).slot,
            SlotUse::Own
        );
        let later = T0 + 10_000;
        let d = check(&store, &p, &options(), 3, 1, later);
        assert_eq!(d.verdict, Verdict::Admitted);
        assert_eq!(d.slot, SlotUse::Evicted);
        let (page, _) = store.get(&p.page_key(3));
        let page = page.unwrap();
        assert_eq!(p.layout.identity(&page, 0), 3, "client 1 was idle longest");
        assert_eq!(p.layout.identity(&page, 1), 2);
    }

    #[test]
    fn a_foreign_value_is_replaced_not_misread() {
        let store = MemoryStore::new();
        let p = policy(&[(2, 1_000)], 1, 1);
        let key = p.page_key(5);
        store.force(&key, &[0xff; 64]);
        assert_eq!(
            check(&store, &p, &options(), 5, 1, T0).verdict,
            Verdict::Admitted
        );
        assert_eq!(
            check(&store, &p, &options(), 5, 1, T0).verdict,
            Verdict::Admitted
        );
        assert_eq!(
            check(&store, &p, &options(), 5, 1, T0).verdict,
            Verdict::Refused
        );
        // A page of a different layout (an older config) is not misread either.
        let other = policy(&[(2, 2_000)], 1, 1);
        store.force(&key, &other.layout.empty_page());
        assert_eq!(
            check(&store, &p, &options(), 5, 1, T0).verdict,
            Verdict::Admitted
        );
    }

    #[test]
    fn the_clock_stepping_back_admits_no_burst() {
        let store = MemoryStore::new();
        let p = policy(&[(3, 60_000)], 1, 1);
        for _ in 0..3 {
            assert!(check(&store, &p, &options(), 9, 1, T0).allowed);
        }
        // NTP steps the clock back five minutes: still limited, nothing panics.
        let d = check(&store, &p, &options(), 9, 1, T0 - 300_000);
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
        check(&store, &p, &options(), 5, 1, T0); // the page exists
        let racing = RacingStore {
            inner: &store,
            on_get: RefCell::new(Some(Box::new(|| {
                // Worker B admits its request between worker A's read and write.
                assert!(check(&store, &p, &options(), 5, 1, T0 + 1).allowed);
            }))),
            gets: Cell::new(0),
        };
        let d = check(&racing, &p, &options(), 5, 1, T0 + 2);
        assert_eq!(d.cas_retries, 1);
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
                assert!(check(&store, &p, &options(), 5, 1, T0).allowed);
            }))),
            gets: Cell::new(0),
        };
        let d = check(&racing, &p, &options(), 5, 1, T0);
        assert_eq!(
            d.verdict,
            Verdict::Refused,
            "limit 1: only one of the two creators is admitted"
        );
    }

    #[test]
    fn exhausted_retries_follow_the_contention_policy() {
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
        let d = check(&store, &p, &options(), 5, 1, T0);
        assert_eq!(d.verdict, Verdict::Contention);
        assert_eq!(d.cas_retries, 8);
        assert!(d.allowed);
        let closed = StoreOptions {
            on_contention: FailPolicy::Deny,
            ..options()
        };
        assert!(!check(&store, &p, &closed, 5, 1, T0).allowed);
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
                    if check(store, p, &options(), 77, 1, T0 + 5).allowed {
                        admitted.set(admitted.get() + 1);
                    }
                }));
            }
            if check(&racing, &p, &options(), 77, 1, T0 + 5).allowed {
                admitted.set(admitted.get() + 1);
            }
        }
        assert_eq!(admitted.get(), 50);
    }
}
