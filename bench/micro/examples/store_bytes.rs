//! Shared-data bytes per tracked client, from the filter's own page layout, and what capacity
//! needs: clients refused when as many clients are active as the store counts exactly
//! (`cargo run --release --example store_bytes`).

use envoy_ratelimit_wasm::internals::{Limit, Limiter, PageKeys};
use envoy_ratelimit_wasm::{decide, Action, Filter, MemoryStore};
use ratelimit_micro::{config, per_client_bytes, Request, NEVER};

fn main() {
    println!("| limits of the rule | slot | summary per slot | bytes per client | page of 16 clients |");
    println!("|---|---:|---:|---:|---:|");
    for (what, windows, limits) in [
        ("1 limit ≤ 65,535", vec![60_000u64], vec![100u64]),
        ("2 limits ≤ 65,535", vec![60_000, 86_400_000], vec![10, 1_000]),
        ("1 limit > 65,535", vec![60_000], vec![4_000_000_000]),
    ] {
        let sizes = per_client_bytes(&windows, &limits);
        println!(
            "| {what} | {} | {} | {} | {} |",
            sizes.slot,
            sizes.summary,
            sizes.slot + sizes.summary,
            sizes.layout.page_len()
        );
    }
    let limiter = Limiter::new(&[Limit { window_ms: 60_000, requests: vec![4_000_000_000], ..Limit::default() }], 10_000, 16);
    let pages = PageKeys::new("ratelimit", "api", limiter.layout_id());
    let last = pages.page(limiter.pages() - 1);
    println!(
        "\nconfig 6 of the Envoy benchmark with max_clients 10,000: {} pages of {} B = {} B of values for {} \
         clients counted exactly ({:.1} B per client, plus {} B page keys like {:?} and Envoy's per-entry overhead)",
        limiter.pages(),
        limiter.page_len(),
        limiter.pages() as usize * limiter.page_len(),
        limiter.capacity(),
        (limiter.pages() as usize * limiter.page_len()) as f64 / limiter.capacity() as f64,
        last.len(),
        last,
    );

    // 10,000 clients active at once, each sending 3 requests a minute against 10 per minute, for
    // 5 minutes; a client's page is fixed by its hash, so pages fill unevenly.
    let limit = r#"[{"name": "per_minute", "requests": 10, "window": "1m"}]"#;
    println!("\n| active clients | max_clients | requests | refused |");
    println!("|---:|---:|---:|---:|");
    for (clients, max) in [(10_000u64, 10_000), (10_000, 5_000), (10_000, 2_500), (10_000, 1_250)] {
        let cfg = Filter::load(config(limit, &format!(r#", "store": {{"max_clients": {max}}}"#)).as_bytes()).unwrap();
        let store = MemoryStore::new();
        let mut request = Request::get("/api/bench", "");
        let (mut requests, mut refused) = (0, 0);
        for round in 0..15u64 {
            for k in 1..=clients {
                request.set_key(&format!("client-{k}"));
                let at = 1_700_000_000_000 + round * 20_000 + k * 20_000 / clients;
                requests += 1;
                refused += matches!(decide(&cfg, &store, &request, at).action, Action::Refuse(_)) as u64;
            }
        }
        println!("| {clients} | {max} | {requests} | {refused} ({:.2}%) |", refused as f64 * 100.0 / requests as f64);
    }
    let _ = NEVER;
}
