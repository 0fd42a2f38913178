//! Helpers shared by the micro-benchmarks and the store-size report: a request view over a
//! fixed header list (the filter's own fake is test-only), and the benchmark configurations.

use envoy_ratelimit_wasm::internals::PageLayout;
use envoy_ratelimit_wasm::RequestView;

/// A request as the host would show it: headers looked up by (lower-case) name, values copied out
/// as the proxy-wasm host copies them into the VM.
pub struct Request {
    pub headers: Vec<(String, Vec<u8>)>,
    pub source: Vec<u8>,
}

impl Request {
    pub fn get(path: &str, key: &str) -> Self {
        Request {
            headers: vec![
                (":path".into(), path.as_bytes().to_vec()),
                (":method".into(), b"GET".to_vec()),
                (":authority".into(), b"127.0.0.1:10000".to_vec()),
                ("user-agent".into(), b"wrk".to_vec()),
                ("x-api-key".into(), key.as_bytes().to_vec()),
            ],
            source: b"127.0.0.1:51234".to_vec(),
        }
    }

    pub fn set_key(&mut self, key: &str) {
        if let Some((_, v)) = self.headers.iter_mut().find(|(k, _)| k == "x-api-key") {
            v.clear();
            v.extend_from_slice(key.as_bytes());
        }
    }
}

impl RequestView for Request {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
    fn source_address(&self) -> Option<Vec<u8>> {
        Some(self.source.clone())
    }
    fn route_name(&self) -> Option<Vec<u8>> {
        None
    }
}

/// The configurations of the Envoy benchmark (bench/envoy_bench.py), as JSON.
pub fn config(limits: &str, extra: &str) -> String {
    format!(
        r#"{{"rules": [{{"name": "api", "match": {{"path": {{"prefix": "/api"}}}},
             "key": [{{"header": "x-api-key"}}], "limits": {limits}}}]{extra}}}"#
    )
}

/// Config 4 / 6: never reached.
pub const NEVER: &str = r#"[{"name": "per_minute", "requests": 4000000000, "window": "1m"}]"#;
/// Config 5: one request per day.
pub const ALWAYS: &str = r#"[{"name": "per_day", "requests": 1, "window": "1d"}]"#;

/// Bytes of shared data per client counted exactly, for a page of 16 clients: its slot, and its
/// share of the page's summary (which grows with the slots).
pub struct Sizes {
    pub slot: usize,
    pub summary: usize,
    pub layout: PageLayout,
}

pub fn per_client_bytes(windows_ms: &[u64], limits: &[u64]) -> Sizes {
    let layout = PageLayout::new(16, windows_ms, limits);
    Sizes {
        slot: layout.slot_len(),
        summary: layout.summary_len() / 16,
        layout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_per_client_sizes_hold() {
        let one = per_client_bytes(&[60_000], &[100]);
        assert_eq!((one.slot, one.summary), (71, 64), "README: 135 bytes for one limit");
        let two = per_client_bytes(&[60_000, 86_400_000], &[10, 1000]);
        assert_eq!((two.slot, two.summary), (117, 96), "README: 213 bytes for two limits");
        let wide = per_client_bytes(&[86_400_000], &[1_000_000]);
        assert_eq!((wide.slot, wide.summary), (117, 64));
        assert_eq!(one.layout.page_len(), 16 + 16 * (71 + 64));
    }
}
