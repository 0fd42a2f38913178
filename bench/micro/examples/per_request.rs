//! What one request costs the filter's core natively, as the host runs it (`begin` with this
//! worker's memory kept between requests): heap allocations per request, counted by a counting
//! allocator, and a loop to run under callgrind for instructions per request.
//!
//! ```sh
//! cd bench/micro && cargo run --release --example per_request            # allocations per request
//! cargo build --release --example per_request && valgrind --tool=callgrind \
//!   target/release/examples/per_request allow 100000                      # instructions
//! ```
//!
//! Allocations made by the request view (the host's reads hand the VM a fresh buffer each) and
//! by the store's read are counted apart: they are the host's, not the core's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_ratelimit_wasm::{begin, Action, Filter, Memory, MemoryStore, Progress, SharedStore};
use envoy_ratelimit_wasm::{CasMismatch, RequestView};
use ratelimit_micro::{config, Request, ALWAYS, NEVER};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const T0: u64 = 1_700_000_000_000;

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// The host's side of a request: its reads allocate (proxy-wasm copies each value into a buffer
/// the VM allocates), counted apart from the core's.
struct Host<'a> {
    request: &'a Request,
    store: &'a MemoryStore,
    host_allocations: Cell<u64>,
}

impl Host<'_> {
    fn counted<T>(&self, read: impl FnOnce() -> T) -> T {
        let before = allocations();
        let value = read();
        self.host_allocations
            .set(self.host_allocations.get() + allocations() - before);
        value
    }
}

impl RequestView for Host<'_> {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.counted(|| self.request.header(name))
    }
    fn source_address(&self) -> Option<Vec<u8>> {
        self.counted(|| self.request.source_address())
    }
    fn route_name(&self) -> Option<Vec<u8>> {
        None
    }
}

impl SharedStore for Host<'_> {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.counted(|| self.store.get(key))
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasMismatch> {
        self.counted(|| self.store.set(key, value, cas))
    }
}

fn decide(filter: &Filter, host: &Host, memory: &mut Memory, now: u64) -> Action {
    match begin(filter, host, memory, host, now) {
        Progress::Done(decision) => decision.action,
        Progress::Waiting(_) => unreachable!("no fleet tier in these configurations"),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next();
    let rounds: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let cases = [
        ("allow", config(NEVER, "")),
        ("refuse", config(ALWAYS, "")),
    ];
    for (name, json) in &cases {
        if which.as_deref().is_some_and(|w| w != *name) {
            continue;
        }
        let filter = Filter::load(json.as_bytes()).expect("a valid configuration");
        let store = MemoryStore::new();
        let request = Request::get("/api/bench", "bench-client");
        let host = Host {
            request: &request,
            store: &store,
            host_allocations: Cell::new(0),
        };
        let mut memory = Memory::default();
        // Warm: the page exists, the client has its slot (and, refused, is remembered).
        for i in 0..3 {
            decide(&filter, &host, &mut memory, T0 + i);
        }
        let n = rounds.max(1_000);
        host.host_allocations.set(0);
        let before = allocations();
        let mut kind = "";
        for i in 0..n {
            // One request every 25 ms, as `make bench-instructions` paces them.
            let action = decide(&filter, &host, &mut memory, T0 + 10 + i * 25);
            kind = match black_box(&action) {
                Action::Pass => "pass",
                Action::Allow(_) => "allowed",
                Action::Refuse(_) => "refused",
            };
            drop(action);
        }
        let all = allocations() - before;
        let host_side = host.host_allocations.get();
        println!(
            "{name:7} ({kind}): {:.2} heap allocations per request in the core, {:.2} in the host's reads and writes",
            (all - host_side) as f64 / n as f64,
            host_side as f64 / n as f64
        );
    }
}
