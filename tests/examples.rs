//! Every shipped example configuration loads.

use std::fs;
use std::path::Path;

#[test]
fn every_example_config_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/examples");
    let mut seen = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let bytes = fs::read(&path).unwrap();
            if let Err(errors) = envoy_ratelimit_wasm::Filter::load(&bytes) {
                panic!("{}: {errors}", path.display());
            }
            seen += 1;
        }
    }
    assert!(
        seen >= 5,
        "expected the five reference examples, found {seen}"
    );
}
