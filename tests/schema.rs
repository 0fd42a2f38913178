//! The committed JSON Schema is the one the config types generate: it cannot drift.
#![cfg(feature = "cli")]

#[test]
fn committed_schema_matches_the_config_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/envoy/ratelimit.schema.json");
    let committed = std::fs::read_to_string(path).unwrap();
    assert!(
        committed == envoy_ratelimit_wasm::tool::schema(),
        "envoy/ratelimit.schema.json is stale: run `make schema`"
    );
}
