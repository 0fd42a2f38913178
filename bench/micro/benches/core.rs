//! One decision of the filter's core, natively: the hash of a key, the limiter against the
//! in-memory twin of Envoy's shared data, the page codec, and a whole request through the engine.
//! `cd bench/micro && cargo bench` (add `-- <filter>` to run some).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use envoy_ratelimit_wasm::internals::{
    client_hash, update, KeyKind, Limit, Limiter, PageKeys, PageLayout, Verdict, RING,
};
use envoy_ratelimit_wasm::{decide as handle, Action, Filter, MemoryStore, SharedStore};
use ratelimit_micro::{config, Request, ALWAYS, NEVER};

const T0: u64 = 1_700_000_000_000;

fn load(json: &[u8]) -> Result<Filter, envoy_ratelimit_wasm::ConfigErrors> {
    Filter::load(json)
}

fn hashing(c: &mut Criterion) {
    let seed = 0x0123_4567_89ab_cdef;
    c.bench_function("client_hash/16-byte key", |b| {
        b.iter(|| client_hash(black_box(seed), KeyKind::Header, black_box(b"bench-client-key")))
    });
}

fn limiter_check(c: &mut Criterion) {
    // The rule of config 4: one limit never reached, 4-byte counters.
    let limiter = Limiter::new(&[Limit { window_ms: 60_000, requests: vec![4_000_000_000], ..Limit::default() }], 10_000, 16);
    let pages = PageKeys::new("ratelimit", "api", limiter.layout_id());
    let store = MemoryStore::new();
    let check = |client: u64, level: u64| {
        let key = pages.page(limiter.page_of(client));
        update(&store, &key, 32, |page| limiter.charge(page, client, 1, &[level], T0)).unwrap().result
    };
    let admitted = client_hash(7, KeyKind::Header, b"admitted");
    c.bench_function("limiter::check/admitted (1 limit, 4-byte counters)", |b| {
        b.iter(|| {
            let d = check(black_box(admitted), 4_000_000_000);
            debug_assert_eq!(d.verdict, Verdict::Admitted);
            d
        })
    });
    let refused = client_hash(7, KeyKind::Header, b"refused");
    check(refused, 1);
    c.bench_function("limiter::check/refused", |b| {
        b.iter(|| {
            let d = check(black_box(refused), 1);
            debug_assert_eq!(d.verdict, Verdict::Refused);
            d
        })
    });
    // What the store round trip alone costs: read and write back one page, as the host copies it
    // in and out of the VM.
    let key = pages.page(limiter.page_of(admitted));
    let name = format!("MemoryStore/get+set one page ({} B)", store.get(&key).0.unwrap().len());
    c.bench_function(&name, |b| {
        b.iter(|| {
            let (value, cas) = store.get(black_box(&key));
            store.set(&key, &value.unwrap(), cas).unwrap();
        })
    });
}

fn codec(c: &mut Criterion) {
    let layout = PageLayout::new(16, &[60_000], &[100]);
    let mut page = layout.empty_page();
    let mut ring = [0u32; RING];
    for (i, r) in ring.iter_mut().enumerate() {
        *r = i as u32;
    }
    layout.write_ring(&mut page, 7, 0, &ring);
    c.bench_function("page_codec/read_ring (21 × 2 B)", |b| {
        b.iter(|| layout.read_ring(black_box(&page), black_box(7), 0))
    });
    c.bench_function("page_codec/write_ring (21 × 2 B)", |b| {
        b.iter(|| layout.write_ring(black_box(&mut page), black_box(7), 0, black_box(&ring)))
    });
    let name = format!("page_codec/recognises ({} B page)", layout.page_len());
    c.bench_function(&name, |b| {
        b.iter(|| layout.recognises(black_box(&page)))
    });
}

fn engine(c: &mut Criterion) {
    let allow = load(config(NEVER, "").as_bytes()).unwrap();
    let store = MemoryStore::new();
    let request = Request::get("/api/bench", "bench-client");
    c.bench_function("engine::decide/allow (config 4)", |b| {
        b.iter(|| {
            let h = handle(&allow, &store, black_box(&request), T0);
            debug_assert!(matches!(h.action, Action::Allow(_)));
            h
        })
    });

    let refuse = load(config(ALWAYS, "").as_bytes()).unwrap();
    let store = MemoryStore::new();
    handle(&refuse, &store, &request, T0);
    c.bench_function("engine::decide/refuse, JSON body (config 5)", |b| {
        b.iter(|| {
            let h = handle(&refuse, &store, black_box(&request), T0);
            debug_assert!(matches!(h.action, Action::Refuse(_)));
            h
        })
    });

    let many = load(config(NEVER, r#", "store": {"max_clients": 20000}"#).as_bytes()).unwrap();
    let store = MemoryStore::new();
    let keys: Vec<String> = (1..=10_000).map(|k| format!("client-{k}")).collect();
    let mut request = Request::get("/api/bench", "");
    for key in &keys {
        request.set_key(key);
        handle(&many, &store, &request, T0);
    }
    let mut i = 0;
    c.bench_function("engine::decide/10,000 rotating keys (config 6)", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            request.set_key(&keys[i]);
            handle(&many, &store, black_box(&request), T0)
        })
    });

    let unmatched = Request::get("/other", "bench-client");
    c.bench_function("engine::decide/no rule matches", |b| {
        b.iter(|| handle(&allow, &store, black_box(&unmatched), T0))
    });
}

criterion_group!(benches, hashing, limiter_check, codec, engine);
criterion_main!(benches);
