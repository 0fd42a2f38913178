//! Shared-data bytes per tracked client, from the filter's own page layout
//! (`cargo run --release --example store_bytes`).

use envoy_ratelimit_wasm::engine::{handle, Action};
use envoy_ratelimit_wasm::policy::{load, RuleAction};
use envoy_ratelimit_wasm::store::MemoryStore;
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
    let compiled = load(config(NEVER, r#", "store": {"max_clients": 20000}"#).as_bytes()).unwrap();
    if let RuleAction::Limit(rule) = &compiled.rules[0].action {
        let p = &rule.policy;
        println!(
            "\nconfig 6 of the Envoy benchmark: {} pages of {} B = {} B of values for {} clients \
             ({:.1} B per client slot, plus {} B page keys like {:?} and Envoy's per-entry overhead)",
            p.pages,
            p.layout.page_len(),
            p.pages as usize * p.layout.page_len(),
            p.capacity(),
            (p.pages as usize * p.layout.page_len()) as f64 / p.capacity() as f64,
            p.page_key(p.pages - 1).len(),
            p.page_key(p.pages - 1),
        );
    }

    // How many of N active clients find their page full (on_full: deny), per store size: a
    // client's page is fixed by its hash, so pages fill unevenly.
    println!("\n| active clients | max_clients | clients refused as store_full |");
    println!("|---:|---:|---:|");
    for (clients, max) in [(10_000, 10_000), (10_000, 20_000), (10_000, 40_000), (10_000, 80_000)] {
        let cfg = load(config(NEVER, &format!(r#", "store": {{"max_clients": {max}}}"#)).as_bytes()).unwrap();
        let store = MemoryStore::new();
        let mut request = Request::get("/api/bench", "");
        let refused = (1..=clients)
            .filter(|k| {
                request.set_key(&format!("client-{k}"));
                matches!(handle(&cfg, &store, &request, 1_700_000_000_000).action, Action::Refuse(_))
            })
            .count();
        println!("| {clients} | {max} | {refused} ({:.2}%) |", refused as f64 * 100.0 / clients as f64);
    }
}
