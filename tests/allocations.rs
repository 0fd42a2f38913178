//! What an allowed request allocates on the heap in the filter's core (issue 12): three lists
//! that travel by value from the limiter to the host — the limits' statuses, the limits checked,
//! the response headers — and the client key, copied out of the request's headers (which the host
//! hands over all at once when the filter reads several: issue 20, one host call instead of one
//! per header, measured cheaper even with the copy). The path, the method and the host are
//! matched where they lie, the page key and the header values are made on the stack, the counts
//! are read in place, the events and the rules to charge are inline lists. (The three
//! lists stay on the heap on purpose: in V8 every move of a value over 64 bytes is a call out of
//! the VM for `memory.copy`, and inline lists of statuses or headers, moved from the limiter to
//! the host, measured dearer than one allocation each; BENCHMARKS.md, "Issue 12".)
//! Counted with a counting allocator around `begin`, minus what the host's side allocates (each
//! proxy-wasm read hands the VM a fresh buffer; the store's value likewise).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;

use envoy_ratelimit_wasm::internals::serialize_headers;
use envoy_ratelimit_wasm::{
    begin, Action, CasMismatch, Filter, Memory, MemoryStore, Progress, RequestView, SharedStore,
};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the thread's counter may already be gone while the thread exits.
    let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// The host's side of one request, its allocations counted apart.
struct Host {
    headers: HashMap<&'static str, Vec<u8>>,
    store: MemoryStore,
    host_allocations: Cell<u64>,
}

impl Host {
    fn counted<T>(&self, read: impl FnOnce() -> T) -> T {
        let before = allocations();
        let value = read();
        let host = self.host_allocations.get() + allocations() - before;
        self.host_allocations.set(host);
        value
    }
}

impl RequestView for Host {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.counted(|| self.headers.get(name).cloned())
    }
    fn source_address(&self) -> Option<Vec<u8>> {
        self.counted(|| Some(b"127.0.0.1:50000".to_vec()))
    }
    fn route_name(&self) -> Option<Vec<u8>> {
        None
    }
    /// Envoy hands every header at once (the filter reads them so when it reads several).
    fn header_map(&self) -> Option<Vec<u8>> {
        self.counted(|| {
            let pairs: Vec<(&str, &[u8])> = self
                .headers
                .iter()
                .map(|(k, v)| (*k, v.as_slice()))
                .collect();
            Some(serialize_headers(&pairs))
        })
    }
}

impl SharedStore for Host {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.counted(|| self.store.get(key))
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasMismatch> {
        self.counted(|| self.store.set(key, value, cas))
    }
}

const T0: u64 = 1_700_000_000_000;

/// Allocations of the core per allowed request, after the client has its slot.
fn core_allocations(config: &str, path: &str) -> f64 {
    let filter = Filter::load(config.as_bytes()).expect("a valid config");
    let host = Host {
        headers: HashMap::from([
            (":path", path.as_bytes().to_vec()),
            (":method", b"GET".to_vec()),
            (":authority", b"api.example.com".to_vec()),
            ("x-api-key", b"client-7".to_vec()),
            ("authorization", b"Bearer token-7".to_vec()),
        ]),
        store: MemoryStore::new(),
        host_allocations: Cell::new(0),
    };
    let mut memory = Memory::default();
    let mut decide = |now| {
        let Progress::Done(decision) = begin(&filter, &host, &mut memory, &host, now) else {
            panic!("no fleet tier here");
        };
        assert!(matches!(decision.action, Action::Allow(_)), "{config}");
    };
    decide(T0);
    let (requests, before) = (200, allocations());
    host.host_allocations.set(0);
    for i in 0..requests {
        decide(T0 + 1 + i * 50);
    }
    let core = allocations() - before - host.host_allocations.get();
    core as f64 / requests as f64
}

/// The statuses, the limits checked, the header list; and the client key, copied out of the
/// headers the host handed over all at once (the path is read where it lies).
const LISTS: f64 = 4.0;

#[test]
fn an_allowed_request_allocates_its_three_lists_and_its_key_and_nothing_else() {
    let cases = [
        // One limit, the default x-ratelimit headers.
        r#"{"rules": [{"name": "api", "match": {"path": {"prefix": "/api"}},
            "key": [{"header": "x-api-key"}],
            "limits": [{"requests": 1000000, "window": "1m"}]}]}"#,
        // Two limits, a bearer token, draft-03 headers, plans.
        r#"{"plans": {"names": ["free", "pro"], "default": "free",
                      "keys": {"token-7": "pro"}},
            "response": {"headers": {"style": "ietf_draft06"}},
            "rules": [{"name": "links", "match": {"path": {"template": "/api/links/:id"},
                                                  "methods": ["GET"]},
            "key": [{"bearer": {}}, {"header": "x-api-key"}],
            "limits": [{"requests": {"free": 100000, "pro": 1000000}, "window": "1h"},
                       {"requests": 10000000, "window": "1d"}]}]}"#,
    ];
    for config in cases {
        let per_request = core_allocations(config, "/api/links/42?x=1");
        assert_eq!(per_request, LISTS, "{config}");
    }
}

#[test]
fn the_count_sees_allocations_when_there_are_some() {
    // The IETF draft's headers list every limit in one text: that value is on the heap.
    let listed = r#"{"response": {"headers": {"style": "ietf_draft11"}},
        "rules": [{"name": "api", "match": {"path": {"prefix": "/api"}},
        "key": [{"header": "x-api-key"}],
        "limits": [{"requests": 1000000, "window": "1m"}]}]}"#;
    assert!(core_allocations(listed, "/api/x") > LISTS);
    // A path that is not canonical is rewritten on the heap.
    let plain = listed.replace("ietf_draft11", "x_rate_limit");
    assert_eq!(core_allocations(&plain, "/api/x"), LISTS);
    assert!(core_allocations(&plain, "/API/./x") > LISTS);
}
