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
        self.keys.page(self.limiter.page_of(client)).to_string()
    }
}

fn policy(limits: &[(u64, u64)], max_clients: u64, slots: usize) -> P {
    let limits: Vec<Limit> = limits
        .iter()
        .map(|&(requests, window_ms)| Limit {
            window_ms,
            requests: vec![requests],
            ..Limit::default()
        })
        .collect();
    let limiter = Limiter::new(&limits, max_clients, slots);
    P {
        keys: PageKeys::new("test", "rule", limiter.layout_id()),
        limiter,
        requests: limits.iter().map(|l| l.requests[0]).collect(),
    }
}

/// One charge as the engine runs it: the pure transform inside the store's CAS loop (8
/// attempts). Losing every race shows as `None`.
#[derive(Debug)]
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

fn try_check(store: &dyn SharedStore, p: &P, client: u64, cost: u64, now: u64) -> Option<Checked> {
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
        8 * (p.limiter.layout.page_len() + "test/v1/rule/01234567/0".len())
    );
}

/// The identities of a page's slots.
fn residents(store: &MemoryStore, p: &P, client: u64) -> Vec<u64> {
    let page = store.get(&p.page_key(client)).0.unwrap();
    let layout = &p.limiter.layout;
    (0..layout.slots())
        .map(|s| layout.identity(&page, s))
        .collect()
}

/// Clients of page 0 of a one-page rule: any key.
fn junk(i: u64) -> u64 {
    0x5eed_0000_0000 + i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[test]
fn a_flood_of_new_keys_locks_nobody_out_and_resets_nobody() {
    let store = MemoryStore::new();
    // One page of 4 slots; 5 per 10 s and 100 per "day".
    let p = policy(&[(5, 10_000), (100, 86_400_000)], 4, 4);
    let victim = 1234;
    for i in 0..100 {
        assert!(check(&store, &p, victim, 1, T0 + i * 3_000).allowed());
    }
    let start = T0 + 300_000;
    assert_eq!(
        check(&store, &p, victim, 1, start).verdict,
        Verdict::Refused
    );
    // 1,000 new keys (250 times the slots), one request each, over 2 minutes: all admitted.
    let mut door = 0;
    for key in 0..1_000u64 {
        let d = check(&store, &p, junk(key), 1, start + key * 120);
        assert!(d.allowed(), "new key {key} refused: {d:?}");
        door += (d.slot == SlotUse::Door) as u32;
        if key % 100 == 0 {
            // The victim is still refused by its own count (the day limit), not by an estimate.
            let v = check(&store, &p, victim, 1, start + key * 120);
            assert_eq!(v.verdict, Verdict::Refused, "after {key} keys");
        }
    }
    assert!(door > 900, "most first requests take no slot ({door})");
    assert!(
        residents(&store, &p, victim).contains(&victim),
        "the victim kept its slot"
    );
    // A legitimate newcomer after the flood gets its whole quota of 5.
    let end = start + 1_000 * 120;
    let admitted = (0..6)
        .filter(|&i| check(&store, &p, 77, 1, end + i).allowed())
        .count();
    assert_eq!(admitted, 5);
}

#[test]
fn a_second_request_takes_a_slot_and_keeps_the_first_as_its_own() {
    let store = MemoryStore::new();
    let p = policy(&[(3, 60_000)], 2, 2);
    // Two clients hold the page's slots.
    assert_eq!(check(&store, &p, 1, 1, T0).slot, SlotUse::Claimed);
    assert_eq!(check(&store, &p, 2, 1, T0).slot, SlotUse::Claimed);
    check(&store, &p, 2, 1, T0 + 1);
    let d = check(&store, &p, 9, 1, T0 + 10);
    assert_eq!((d.verdict, d.slot), (Verdict::Admitted, SlotUse::Door));
    assert_eq!(d.headline().unwrap().remaining, 2);
    // Its second request takes the slot of client 1, the one using the least of its limit.
    let d = check(&store, &p, 9, 1, T0 + 20);
    assert_eq!((d.verdict, d.slot), (Verdict::Admitted, SlotUse::Evicted));
    assert_eq!(d.headline().unwrap().remaining, 1);
    assert_eq!(residents(&store, &p, 9), vec![9, 2]);
    check(&store, &p, 9, 1, T0 + 30);
    // At its limit, it is refused for its own count: an ordinary refusal, not a capacity one.
    let d = check(&store, &p, 9, 1, T0 + 40);
    assert_eq!(d.verdict, Verdict::Refused);
    assert!(!d.over_capacity);
}

/// A page of one slot whose client `evicted` used `used` of `limit` per minute, then lost its
/// slot to client 2 (at its limit, so that it is not the cheaper one).
fn evicted_at(store: &MemoryStore, p: &P, evicted: u64, used: u64) -> u64 {
    for i in 0..used {
        assert!(check(store, p, evicted, 1, T0 + i).allowed());
    }
    let t = T0 + 5_000;
    assert_eq!(check(store, p, 2, 1, t).slot, SlotUse::Door);
    assert_eq!(check(store, p, 2, 1, t + 1).slot, SlotUse::Evicted);
    assert_eq!(residents(store, p, 2), vec![2]);
    t + 1
}

#[test]
fn an_evicted_client_comes_back_with_its_counts_and_a_true_retry_time() {
    let store = MemoryStore::new();
    let p = policy(&[(5, 60_000)], 1, 1);
    let t = evicted_at(&store, &p, 7, 5);
    // Back without a slot: refused, by what the summary holds for it. The summary cannot tell
    // its counts from others', so this is a capacity refusal, and it says when to retry.
    let d = check(&store, &p, 7, 1, t + 1_000);
    assert_eq!(d.verdict, Verdict::Capacity);
    assert!(d.over_capacity);
    let retry = d.retry_at_ms().expect("a retry time");
    assert!(
        retry >= T0 + 60_000,
        "not before its own requests leave the window"
    );
    assert_eq!(
        check(&store, &p, 7, 1, retry - 1).verdict,
        Verdict::Capacity
    );
    let d = check(&store, &p, 7, 1, retry);
    assert_eq!(
        d.verdict,
        Verdict::Admitted,
        "admitted at the retry time it was given"
    );
    // Its full quota was never available twice within a window.
    assert!(retry + 60_000 > T0 + 60_000 + 60_000 / 20);
}

#[test]
fn on_full_allow_admits_over_capacity_and_counts_it() {
    let store = MemoryStore::new();
    let mut p = policy(&[(5, 60_000)], 1, 1);
    p.limiter = p.limiter.admitting_over_capacity(true);
    let t = evicted_at(&store, &p, 7, 5);
    let d = check(&store, &p, 7, 1, t + 1_000);
    assert_eq!(d.verdict, Verdict::Admitted);
    assert!(d.over_capacity);
    // Counted as its own (with the first request it had in the doorkeeper): it is admitted
    // until its own count reaches the limit, then refused by it. The inherited 4 were the risk.
    let after: Vec<Verdict> = (0..5)
        .map(|i| check(&store, &p, 7, 1, t + 2_000 + i).verdict)
        .collect();
    use Verdict::*;
    assert_eq!(after, [Admitted, Admitted, Admitted, Refused, Refused]);
}

#[test]
fn a_client_at_its_limit_is_evicted_last() {
    let store = MemoryStore::new();
    let p = policy(&[(4, 60_000)], 4, 4);
    let victim = 5;
    for i in 0..4 {
        check(&store, &p, victim, 1, T0 + i);
    }
    // Newcomers sending two requests each take slots, always another one than the victim's
    // (their shares are at most 2 of 4).
    let mut promoted = 0;
    for key in 0..200u64 {
        let t = T0 + 100 + key * 10;
        check(&store, &p, junk(key), 1, t);
        promoted += (check(&store, &p, junk(key), 1, t + 1).slot == SlotUse::Evicted) as u32;
        assert!(
            residents(&store, &p, victim).contains(&victim),
            "after {key}"
        );
    }
    assert!(promoted > 20, "{promoted}");
    let d = check(&store, &p, victim, 1, T0 + 5_000);
    assert_eq!(
        d.verdict,
        Verdict::Refused,
        "refused by its own count, as before"
    );
}

#[test]
fn the_summary_forgets_by_generation_never_early() {
    let store = MemoryStore::new();
    // One slot, held by client 1; client 2's first request goes into the doorkeeper.
    let p = policy(&[(1, 1_000)], 1, 1);
    check(&store, &p, 1, 1, T0);
    assert_eq!(check(&store, &p, 2, 1, T0 + 1).slot, SlotUse::Door);
    // Its second request within the window is refused, for its own first request.
    let d = check(&store, &p, 2, 1, T0 + 500);
    assert_eq!(
        d.verdict,
        Verdict::Refused,
        "its doorkeeper unit is its own"
    );
    let retry = d.retry_at_ms().unwrap();
    assert!(
        retry >= T0 + 1 + 1_000,
        "never before its first request leaves the window"
    );
    // The unit stays until its generation ends (at most two spans of W(1 + 1/N)), then goes.
    assert!(retry <= T0 + 2 * 1_050 + 1_050);
    assert_eq!(check(&store, &p, 2, 1, retry - 1).verdict, Verdict::Refused);
    assert!(check(&store, &p, 2, 1, retry).allowed());
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
    assert_eq!(
        d.slot,
        SlotUse::Reused,
        "nothing to keep: both windows are empty"
    );
    assert_eq!(
        residents(&store, &p, 3),
        vec![3, 2],
        "client 1 was idle longest"
    );
}

#[test]
fn a_refund_gives_back_only_what_it_can_prove() {
    let store = MemoryStore::new();
    let p = policy(&[(2, 60_000)], 1, 1);
    let refund = |client: u64, at: u64| {
        store::update(&store, &p.page_key(client), 8, |page| {
            let given = p.limiter.refund(page, client, 1, at);
            (given, given)
        })
        .unwrap()
        .result
    };
    let d = check(&store, &p, 1, 1, T0);
    assert!(refund(1, d.now_ms), "a slot's count is given back");
    assert_eq!(
        check(&store, &p, 1, 1, T0 + 1)
            .headline()
            .unwrap()
            .remaining,
        1
    );
    // A first request in the doorkeeper cannot be taken out: left counted.
    let d = check(&store, &p, 2, 1, T0 + 2);
    assert_eq!(d.slot, SlotUse::Door);
    assert!(!refund(2, d.now_ms));
}

#[test]
fn more_counted_at_settling_lands_with_the_client_slot_or_not() {
    let store = MemoryStore::new();
    let p = policy(&[(10, 60_000)], 1, 1);
    let add = |client: u64, extra: u64, at: u64| {
        store::update(&store, &p.page_key(client), 8, |page| {
            (p.limiter.add(page, client, Costs::All(extra), at), ())
        })
        .unwrap();
    };
    let remaining = |client: u64, at: u64| {
        check(&store, &p, client, 1, at)
            .headline()
            .unwrap()
            .remaining
    };
    // A client with the slot: counted in its ring, whatever the limit says.
    check(&store, &p, 1, 1, T0);
    add(1, 4, T0 + 1);
    assert_eq!(remaining(1, T0 + 2), 4, "1 + 4 + this 1 of 10");
    add(1, 30, T0 + 3);
    assert_eq!(check(&store, &p, 1, 1, T0 + 4).verdict, Verdict::Refused);
    // A client without a slot: into the summary, which the client then inherits.
    let d = check(&store, &p, 2, 1, T0 + 5);
    assert_eq!(d.slot, SlotUse::Door);
    add(2, 6, T0 + 6);
    let d = check(&store, &p, 2, 1, T0 + 7);
    assert!(d.allowed());
    assert!(
        d.headline().unwrap().remaining <= 2,
        "at least 1 + 6 + 1 counted: {d:?}"
    );
    // Nothing to add writes nothing.
    let before = store.get(&p.page_key(1));
    add(1, 0, T0 + 8);
    assert_eq!(store.get(&p.page_key(1)), before);
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

/// Two layouts of one rule running at once under one `vm_id`, as while an updated listener drains
/// the old one (a filter of another layout version, or a config of another shape): each counts
/// on its own pages, so a client using both is admitted at most one limit per layout in a
/// window, and neither page is ever overwritten by the other layout. Had they shared key names,
/// each would replace the other's page as foreign at every turn: no limit at all.
#[test]
fn two_layouts_at_once_count_on_their_own_pages() {
    let store = MemoryStore::new();
    let old = policy(&[(5, 10_000)], 4, 2);
    let new = policy(&[(5, 10_000)], 4, 4);
    assert_ne!(old.limiter.layout_id(), new.limiter.layout_id());
    let client = 6;
    let (old_key, new_key) = (old.page_key(client), new.page_key(client));
    assert_ne!(old_key, new_key);
    let admitted = (0..40u64)
        .filter(|i| {
            let p = if i % 2 == 0 { &old } else { &new };
            check(&store, p, client, 1, T0 + i).allowed()
        })
        .count();
    assert_eq!(admitted, 10, "5 per layout, no more");
    let (old_page, new_page) = (
        store.get(&old_key).0.unwrap(),
        store.get(&new_key).0.unwrap(),
    );
    assert!(old.limiter.layout.recognises(&old_page));
    assert!(new.limiter.layout.recognises(&new_page));
    // The old layout's count is intact when it serves again: still refused.
    assert!(!check(&store, &old, client, 1, T0 + 50).allowed());
    // Memory: one page set per layout, and none more however often they alternate.
    let mut both = [old_key.clone(), new_key.clone()];
    both.sort();
    assert_eq!(store.keys(), both);

    // The same two layouts on one key name (what the key's layout part prevents).
    let store = MemoryStore::new();
    let mut clash = policy(&[(5, 10_000)], 4, 4);
    clash.keys = old.keys.clone();
    let admitted = (0..40u64)
        .filter(|i| {
            let p = if i % 2 == 0 { &old } else { &clash };
            let key = p.page_key(client);
            assert_eq!(key, old_key);
            check(&store, p, client, 1, T0 + i).allowed()
        })
        .count();
    assert_eq!(admitted, 40, "each turn replaced the other's page");
}

/// Found by the pages fuzz target: a page of this layout whose clock is at the end of time (as
/// corrupted bytes may hold) pinned the page's time there, where the window arithmetic saturates,
/// and a client was admitted six times at one instant under a limit of five.
#[test]
fn a_page_clock_no_host_could_have_written_is_not_read() {
    for clock in [u64::MAX, T0 + crate::limiter::MAX_WINDOW_MS + 1] {
        let store = MemoryStore::new();
        let p = policy(&[(5, 1_000)], 4, 2);
        let key = p.page_key(p.limiter.page_of(u64::MAX));
        let mut page = p.limiter.layout.empty_page();
        p.limiter.layout.set_clock_ms(&mut page, clock);
        store.force(&key, &page);
        let admitted = (0..7)
            .filter(|_| check(&store, &p, u64::MAX, 1, T0).allowed())
            .count();
        assert_eq!(admitted, 5, "clock {clock}");
        assert_eq!(
            check(&store, &p, u64::MAX, 1, T0).now_ms,
            T0,
            "the page's time is now"
        );
    }
    // A clock ahead by less (a host clock stepped back) keeps the page and its counts.
    let store = MemoryStore::new();
    let p = policy(&[(5, 1_000)], 4, 2);
    let ahead = T0 + 300_000;
    assert!(check(&store, &p, 3, 1, ahead).allowed());
    assert_eq!(check(&store, &p, 3, 1, T0).now_ms, ahead);
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
    let mut rng = crate::testing::Xorshift(7);
    let mut next = || rng.next();
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

#[test]
fn a_small_count_under_a_huge_limit_is_evicted_into_the_summary_not_dropped() {
    // A limit of 4 billion per minute: one request is less than a millionth of it.
    let store = MemoryStore::new();
    let p = policy(&[(4_000_000_000, 60_000)], 1, 1);
    assert!(check(&store, &p, 7, 1, T0).allowed());
    assert_eq!(check(&store, &p, 2, 1, T0 + 1).slot, SlotUse::Door);
    // Client 2's second request takes the only slot: client 7 has a count, so it is evicted.
    assert_eq!(check(&store, &p, 2, 1, T0 + 2).slot, SlotUse::Evicted);
    // Client 7 comes back with its request still counted (as an estimate, never less).
    let back = check(&store, &p, 7, 1, T0 + 3);
    assert!(back.allowed());
    assert!(back.headline().unwrap().remaining <= 4_000_000_000 - 2);
}
