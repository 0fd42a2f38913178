//! The configuration reader on any bytes: never a panic; the hand-written reader agrees with
//! serde's derived deserializers (what the JSON Schema is generated from); every refusal names
//! the JSON path of each problem.
#![no_main]

use envoy_ratelimit_wasm::{parse_config, parse_with_serde, Filter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let ours = parse_config(bytes);
    let reference = parse_with_serde(bytes);
    match (&ours, &reference) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the reader and serde read differently"),
        (Err(_), Err(_)) => {}
        // The intended differences: serde takes a sequence for a struct, the reader does not;
        // the reader refuses a key given twice in any object, serde only in a struct.
        (Err(errors), Ok(_)) => assert!(
            errors.0.iter().any(|e| {
                e.message
                    .starts_with("invalid type: sequence, expected a map")
                    || e.message.starts_with("given twice in one object")
            }),
            "the reader refused what serde accepts: {errors:?}"
        ),
        (Ok(_), Err(e)) => panic!("the reader accepted what serde refuses: {e}"),
    }
    match Filter::load(bytes) {
        Ok(_) => assert!(ours.is_ok()),
        Err(errors) => {
            assert!(!errors.0.is_empty(), "a refusal with no reason");
            for e in &errors.0 {
                assert!(
                    e.path.starts_with('$'),
                    "a problem without its JSON path: {e:?}"
                );
            }
        }
    }
});
