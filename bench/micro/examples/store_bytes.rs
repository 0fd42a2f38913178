//! Shared-data bytes per tracked client, from the filter's own page layout
//! (`cargo run --release --example store_bytes`).

use envoy_ratelimit_wasm::internals::{Limit, Limiter, PageKeys};
use envoy_ratelimit_wasm::{decide, Action, Filter, MemoryStore};
use ratelimit_micro::{config, slot_bytes, Request, NEVER};

fn main() {
    println!("| limits of the rule | counter width | bytes per client (slot) | page of 16 clients |");
    println!("|---|---|---:|---:|");
    for (what, windows, limits) in [
        ("1 limit ≤ 65,535", vec![60_000u64], vec![100u64]),
        ("2 limits ≤ 65,535", vec![60_000, 86_400_000], vec![100, 1_000]),
        ("1 limit > 65,535", vec![60_000], vec![4_000_000_000]),
    ] {
        let (slot, layout) = slot_bytes(&windows, &limits);
        let width = if limits[0] > 65_535 { "4 B" } else { "2 B" };
        println!("| {what} | {width} | {slot} | {} |", layout.page_len());
    }
    let limiter = Limiter::new(&[Limit { window_ms: 60_000, requests: vec![4_000_000_000] }], 20_000, 16);
    let pages = PageKeys::new("ratelimit", "api");
    let last = pages.page(limiter.pages() - 1);
    println!(
        "\nconfig 6 of the Envoy benchmark: {} pages of {} B = {} B of values for {} clients \
         ({:.1} B per client slot, plus {} B page keys like {:?} and Envoy's per-entry overhead)",
        limiter.pages(),
        limiter.page_len(),
        limiter.pages() as usize * limiter.page_len(),
        limiter.capacity(),
        (limiter.pages() as usize * limiter.page_len()) as f64 / limiter.capacity() as f64,
        last.len(),
        last,
    );

    // How many of N active clients find their page full (on_full: deny), per store size: a
    // client's page is fixed by its hash, so pages fill unevenly.
    println!("\n| active clients | max_clients | clients refused as store_full |");
    println!("|---:|---:|---:|");
    for (clients, max) in [(10_000, 10_000), (10_000, 20_000), (10_000, 40_000), (10_000, 80_000)] {
        let cfg = Filter::load(config(NEVER, &format!(r#", "store": {{"max_clients": {max}}}"#)).as_bytes()).unwrap();
        let store = MemoryStore::new();
        let mut request = Request::get("/api/bench", "");
        let refused = (1..=clients)
            .filter(|k| {
                request.set_key(&format!("client-{k}"));
                matches!(decide(&cfg, &store, &request, 1_700_000_000_000).action, Action::Refuse(_))
            })
            .count();
        println!("| {clients} | {max} | {refused} ({:.2}%) |", refused as f64 * 100.0 / clients as f64);
    }
}
