//! One decision of the filter's core, natively: the hash of a key, the limiter against the
//! in-memory twin of Envoy's shared data, the page codec, and a whole request through the engine.
//! `cd bench/micro && cargo bench` (add `-- <filter>` to run some).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use envoy_ratelimit_wasm::client_hash::{client_hash, KeyKind};
use envoy_ratelimit_wasm::engine::{handle, Action};
use envoy_ratelimit_wasm::limiter::{self, Verdict};
use envoy_ratelimit_wasm::page_codec::PageLayout;
use envoy_ratelimit_wasm::policy::{load, CompiledConfig, LimitedRule, RuleAction};
use envoy_ratelimit_wasm::sliding_window::RING;
use envoy_ratelimit_wasm::store::{MemoryStore, SharedStore};
use ratelimit_micro::{config, Request, ALWAYS, NEVER};

const T0: u64 = 1_700_000_000_000;

fn limited(config: &CompiledConfig) -> &LimitedRule {
    match &config.rules[0].action {
        RuleAction::Limit(rule) => rule,
        RuleAction::Exempt => unreachable!(),
    }
}

fn hashing(c: &mut Criterion) {
    let seed = 0x0123_4567_89ab_cdef;
    c.bench_function("client_hash/16-byte key", |b| {
        b.iter(|| client_hash(black_box(seed), KeyKind::Header, black_box(b"bench-client-key")))
    });
}

fn limiter_check(c: &mut Criterion) {
    let compiled = load(config(NEVER, "").as_bytes()).unwrap();
    let rule = limited(&compiled);
    let store = MemoryStore::new();
    let admitted = client_hash(compiled.hash_seed, KeyKind::Header, b"admitted");
    c.bench_function("limiter::check/admitted (1 limit, 4-byte counters)", |b| {
        b.iter(|| {
            let d = limiter::check(&store, &rule.policy, &compiled.store, black_box(admitted), 1,
                                   &[4_000_000_000], T0);
            debug_assert_eq!(d.verdict, Verdict::Admitted);
            d
        })
    });
    let refused = client_hash(compiled.hash_seed, KeyKind::Header, b"refused");
    limiter::check(&store, &rule.policy, &compiled.store, refused, 1, &[1], T0);
    c.bench_function("limiter::check/refused", |b| {
        b.iter(|| {
            let d = limiter::check(&store, &rule.policy, &compiled.store, black_box(refused), 1,
                                   &[1], T0);
            debug_assert_eq!(d.verdict, Verdict::Refused);
            d
        })
    });
    // What the store round trip alone costs: read and write back one page (1,608 bytes here),
    // as the host copies it in and out of the VM.
    let key = rule.policy.page_key(admitted);
    c.bench_function("MemoryStore/get+set one page (1,608 B)", |b| {
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
    c.bench_function("page_codec/recognises (936 B page)", |b| {
        b.iter(|| layout.recognises(black_box(&page)))
    });
}

fn engine(c: &mut Criterion) {
    let allow = load(config(NEVER, "").as_bytes()).unwrap();
    let store = MemoryStore::new();
    let request = Request::get("/api/bench", "bench-client");
    c.bench_function("engine::handle/allow (config 4)", |b| {
        b.iter(|| {
            let h = handle(&allow, &store, black_box(&request), T0);
            debug_assert!(matches!(h.action, Action::Allow(_)));
            h
        })
    });

    let refuse = load(config(ALWAYS, "").as_bytes()).unwrap();
    let store = MemoryStore::new();
    handle(&refuse, &store, &request, T0);
    c.bench_function("engine::handle/refuse, JSON body (config 5)", |b| {
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
    c.bench_function("engine::handle/10,000 rotating keys (config 6)", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            request.set_key(&keys[i]);
            handle(&many, &store, black_box(&request), T0)
        })
    });

    let unmatched = Request::get("/other", "bench-client");
    c.bench_function("engine::handle/no rule matches", |b| {
        b.iter(|| handle(&allow, &store, black_box(&unmatched), T0))
    });
}

criterion_group!(benches, hashing, limiter_check, codec, engine);
criterion_main!(benches);
