//! The store trait, which owns the one update loop every writer goes through: compare-and-swap
//! over `get`/`set` by default, in place where a store can.

/// A write lost a compare-and-swap race.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CasMismatch;

/// A store of byte values shared by every worker. The limiter's pages live in one.
pub trait SharedStore {
    /// The value and its cas; `(None, None)` when the key does not exist.
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes `value` if `cas` is `None`, the key is missing, or `cas` is the key's current cas.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasMismatch>;

    /// Changes the value of `key` with `change`, which is given the current value (empty when
    /// missing or emptied), may change it in place, and says whether it is to be written.
    /// `change` must be a pure function of the value it is given: it may run several times.
    /// Returns the races lost on the way; `Err` when every one of `attempts` lost.
    ///
    /// The provided loop reads, lets `change` decide and writes under the value's cas, starting
    /// again from a fresh read after a lost race. A store that can change a value in place (a
    /// native store with its own locks) overrides it: no copy out and back, no race to lose.
    fn update(
        &self,
        key: &str,
        attempts: u32,
        change: &mut dyn FnMut(&mut Vec<u8>) -> bool,
    ) -> Result<u32, Contended> {
        let mut lost_races = 0;
        for _ in 0..attempts.max(1) {
            let (value, cas) = self.get(key);
            let mut value = value.unwrap_or_default();
            if !change(&mut value) {
                return Ok(lost_races);
            }
            match self.set(key, &value, Some(cas.unwrap_or(CREATE_CAS))) {
                Ok(()) => return Ok(lost_races),
                Err(CasMismatch) => lost_races += 1,
            }
        }
        Err(Contended { lost_races })
    }
}

/// The cas a write of a missing key carries. No live value carries it in practice (the host hands
/// out cas values in sequence from 1), so the first creator's write succeeds and a second
/// creator's, racing it, fails: the nearest thing to create-if-absent the host offers.
const CREATE_CAS: u32 = u32::MAX;

/// What an update returned, and how many races it lost on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Updated<T> {
    pub result: T,
    pub lost_races: u32,
}

/// Every attempt of an update lost its race.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contended {
    pub lost_races: u32,
}

/// [`SharedStore::update`] with a result: `change` returns whether to write and what to give
/// back (from its last run).
pub fn update<T>(
    store: &dyn SharedStore,
    key: &str,
    attempts: u32,
    mut change: impl FnMut(&mut Vec<u8>) -> (bool, T),
) -> Result<Updated<T>, Contended> {
    let mut result = None;
    let lost_races = store.update(key, attempts, &mut |value| {
        let (write, out) = change(value);
        result = Some(out);
        write
    })?;
    // `change` runs at least once before the loop returns `Ok`.
    let result = result.ok_or(Contended { lost_races })?;
    Ok(Updated { result, lost_races })
}

/// The semantics of proxy-wasm shared data every store keeps, for each store's tests: a missing
/// key accepts any cas (creation is not atomic), a cas is single-use, a stale one is refused, and
/// an emptied key reads as no value with a cas (it still exists).
#[cfg(test)]
pub fn assert_shared_data_semantics(store: &dyn SharedStore) {
    assert_eq!(store.get("k"), (None, None));
    store.set("k", b"a", Some(12345)).unwrap();
    let (value, cas) = store.get("k");
    assert_eq!(value.as_deref(), Some(&b"a"[..]));
    let cas = cas.unwrap();
    let stale = store.set("k", b"b", Some(cas.wrapping_add(1)));
    assert_eq!(stale, Err(CasMismatch));
    store.set("k", b"b", Some(cas)).unwrap();
    assert_eq!(
        store.set("k", b"c", Some(cas)),
        Err(CasMismatch),
        "cas is single-use"
    );
    store.set("k", b"c", None).unwrap();
    store.set("k", b"", None).unwrap();
    let (value, cas) = store.get("k");
    assert_eq!(value, None);
    assert!(cas.is_some());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn an_update_retries_a_lost_race_from_a_fresh_read() {
        struct Racing {
            inner: MemoryStore,
            raced: std::cell::Cell<bool>,
        }
        impl SharedStore for Racing {
            fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
                let read = self.inner.get(key);
                if !self.raced.replace(true) {
                    self.inner.force(key, b"theirs");
                }
                read
            }
            fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasMismatch> {
                self.inner.set(key, value, cas)
            }
        }
        let store = Racing {
            inner: MemoryStore::new(),
            raced: std::cell::Cell::new(false),
        };
        store.inner.force("k", b"mine");
        let seen = update(&store, "k", 3, |value| {
            let seen = value.clone();
            value.extend_from_slice(b"+1");
            (true, seen)
        })
        .unwrap();
        assert_eq!(seen.result, b"theirs");
        assert_eq!(seen.lost_races, 1);
        assert_eq!(store.inner.get("k").0.unwrap(), b"theirs+1");
    }

    #[test]
    fn no_write_returns_at_once_and_exhausted_attempts_are_contention() {
        let store = MemoryStore::new();
        let calls = std::cell::Cell::new(0);
        let kept = update(&store, "k", 5, |value| {
            calls.set(calls.get() + 1);
            (false, value.is_empty())
        });
        assert_eq!(
            kept,
            Ok(Updated {
                result: true,
                lost_races: 0
            })
        );
        assert_eq!(calls.get(), 1);
        assert!(store.keys().is_empty());

        struct AlwaysLoses;
        impl SharedStore for AlwaysLoses {
            fn get(&self, _: &str) -> (Option<Vec<u8>>, Option<u32>) {
                (Some(b"v".to_vec()), Some(7))
            }
            fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), CasMismatch> {
                Err(CasMismatch)
            }
        }
        let lost = update(&AlwaysLoses, "k", 4, |value| {
            *value = b"w".to_vec();
            (true, ())
        });
        assert_eq!(lost, Err(Contended { lost_races: 4 }));
    }
}
