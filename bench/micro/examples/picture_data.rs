//! The data behind the book's pictures that the filter's own core produces (`make pictures` runs
//! `cargo run --release --example picture_data` and hands its JSON to
//! docs/pictures/make_pictures.py). Every decision here is `decide` on the compiled configuration
//! and the in-memory store that mirrors Envoy's shared data, as in the accuracy simulator.
//!
//! - `burst`: one client sending 10 requests a second for two minutes against 100 per minute:
//!   the time of each request and whether the filter admitted it.
//! - `spray`: a rule of the demo's two limits (10 per minute, 1,000 per day) with `max_clients`
//!   1,000, sprayed with 100,000 keys of one request each (1,000 a second for 100 s), while a new
//!   client arrives every half second and sends three requests two seconds apart: per second, the
//!   keys sprayed so far, the store's bytes, and the newcomers' requests sent, admitted and
//!   refused for capacity.

use envoy_ratelimit_wasm::{decide, Action, Filter, MemoryStore};
use ratelimit_micro::{config, Request};

/// A minute boundary, so that the pictures' fixed windows line up with the clock's minutes.
const BASE_MS: u64 = 1_699_999_980_000;

fn main() {
    println!("{{\n\"burst\": {},\n\"spray\": {}\n}}", burst(), spray());
}

fn burst() -> String {
    let limit = r#"[{"name": "per_minute", "requests": 100, "window": "1m"}]"#;
    let filter = Filter::load(config(limit, "").as_bytes()).unwrap();
    let store = MemoryStore::new();
    let request = Request::get("/api/burst", "one-client");
    let (mut times, mut admitted) = (Vec::new(), Vec::new());
    // 10 a second from t = 30 s to t = 150 s.
    for i in 0..1_200u64 {
        let t_ms = 30_000 + i * 100;
        let action = decide(&filter, &store, &request, BASE_MS + t_ms).action;
        times.push(t_ms.to_string());
        admitted.push(if matches!(action, Action::Allow(_)) {
            "1"
        } else {
            "0"
        });
    }
    format!(
        "{{\"limit\": 100, \"window_ms\": 60000, \"t_ms\": [{}], \"admitted\": [{}]}}",
        times.join(","),
        admitted.join(",")
    )
}

fn spray() -> String {
    let limits = r#"[{"name": "per_minute", "requests": 10, "window": "1m"},
                     {"name": "per_day", "requests": 1000, "window": "1d"}]"#;
    let filter =
        Filter::load(config(limits, r#", "store": {"max_clients": 1000}"#).as_bytes()).unwrap();
    let store = MemoryStore::new();
    let mut request = Request::get("/api/spray", "");
    let (spray_from, spray_to, end) = (30_000u64, 130_000u64, 240_000u64);
    let mut rows = Vec::new();
    let (mut sprayed, mut newcomer) = (0u64, 0u64);
    // Newcomers: (first request time, index); each sends at +0, +2 s and +4 s.
    let mut pending: Vec<(u64, u64)> = Vec::new();
    for second in 0..end / 1_000 {
        let (mut sent, mut admitted, mut capacity) = (0u32, 0u32, 0u32);
        for ms in 0..1_000 {
            let now = second * 1_000 + ms;
            if (spray_from..spray_to).contains(&now) {
                sprayed += 1;
                request.set_key(&format!("spray-{sprayed}"));
                decide(&filter, &store, &request, BASE_MS + now);
            }
            if now % 500 == 0 {
                newcomer += 1;
                pending.extend([0, 2_000, 4_000].map(|d| (now + d, newcomer)));
            }
            for &(_, who) in pending.iter().filter(|(at, _)| *at == now) {
                request.set_key(&format!("newcomer-{who}"));
                sent += 1;
                match decide(&filter, &store, &request, BASE_MS + now).action {
                    Action::Allow(_) => admitted += 1,
                    Action::Refuse(reply) if reply.body.contains("rate_limit_capacity") => {
                        capacity += 1
                    }
                    _ => {}
                }
            }
            pending.retain(|(at, _)| *at > now);
        }
        rows.push(format!(
            "[{second}, {sprayed}, {}, {}, {sent}, {admitted}, {capacity}]",
            store.payload_bytes(),
            store.keys().len()
        ));
    }
    format!(
        "{{\"max_clients\": 1000, \"columns\": [\"second\", \"keys_sprayed\", \"store_bytes\", \"store_keys\", \
         \"newcomer_requests\", \"newcomer_admitted\", \"newcomer_capacity_refused\"], \"rows\": [\n{}\n]}}",
        rows.join(",\n")
    )
}
