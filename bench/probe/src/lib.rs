//! Per request, `n` host calls of the kind named by the plugin configuration `"<op> <n>"`:
//! `time`, `header`, `header_absent`, `header_pairs`, `property`, `shared_get`, `shared_get_small`,
//! `shared_set`, `metric`, `log`, `resp_header` (response side), or `none`.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Debug);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(ProbeRoot { op: Op::None, n: 0, metric: 0 })
    });
}}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    None,
    Time,
    Header,
    HeaderAbsent,
    HeaderPairs,
    Property,
    SharedGet,
    SharedGetSmall,
    SharedSet,
    Metric,
    Log,
    RespHeader,
}

const PAGE: usize = 1608;

struct ProbeRoot {
    op: Op,
    n: usize,
    metric: u32,
}

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let conf = self.get_plugin_configuration().unwrap_or_default();
        let conf = String::from_utf8_lossy(&conf);
        let mut parts = conf.split_whitespace();
        self.op = match parts.next().unwrap_or("none") {
            "time" => Op::Time,
            "header" => Op::Header,
            "header_absent" => Op::HeaderAbsent,
            "header_pairs" => Op::HeaderPairs,
            "property" => Op::Property,
            "shared_get" => Op::SharedGet,
            "shared_get_small" => Op::SharedGetSmall,
            "shared_set" => Op::SharedSet,
            "metric" => Op::Metric,
            "log" => Op::Log,
            "resp_header" => Op::RespHeader,
            _ => Op::None,
        };
        self.n = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let _ = hostcalls::set_shared_data("probe/page", Some(&[7u8; PAGE]), None);
        let _ = hostcalls::set_shared_data("probe/small", Some(&[7u8; 16]), None);
        self.metric = hostcalls::define_metric(MetricType::Counter, "probe.count").unwrap_or(0);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ProbeHttp { op: self.op, n: self.n, metric: self.metric }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct ProbeHttp {
    op: Op,
    n: usize,
    metric: u32,
}

impl Context for ProbeHttp {}

impl HttpContext for ProbeHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let page = [7u8; PAGE];
        for _ in 0..self.n {
            match self.op {
                Op::Time => {
                    std::hint::black_box(self.get_current_time());
                }
                Op::Header => {
                    std::hint::black_box(self.get_http_request_header_bytes("x-api-key"));
                }
                Op::HeaderAbsent => {
                    std::hint::black_box(self.get_http_request_header_bytes("x-absent"));
                }
                Op::HeaderPairs => {
                    std::hint::black_box(self.get_http_request_headers_bytes());
                }
                Op::Property => {
                    std::hint::black_box(self.get_property(vec!["source", "address"]));
                }
                Op::SharedGet => {
                    std::hint::black_box(hostcalls::get_shared_data("probe/page").ok());
                }
                Op::SharedGetSmall => {
                    std::hint::black_box(hostcalls::get_shared_data("probe/small").ok());
                }
                Op::SharedSet => {
                    let _ = hostcalls::set_shared_data("probe/page", Some(&page), None);
                }
                Op::Metric => {
                    let _ = hostcalls::increment_metric(self.metric, 1);
                }
                Op::Log => log::info!("probe: refused rule=api limit=per_minute client=0123456789abcdef"),
                Op::RespHeader | Op::None => {}
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.op == Op::RespHeader {
            const NAMES: [&str; 3] = ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"];
            for i in 0..self.n {
                self.set_http_response_header(NAMES[i % 3], Some("4000000000"));
            }
        }
        Action::Continue
    }
}
