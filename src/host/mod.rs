//! The proxy-wasm glue: the root context (configuration, stats, this worker's calls to the rate
//! limit service) and the HTTP context (one request). Thin by design; the decisions are made in
//! [`crate::engine`].

mod calls;
mod http;
mod io;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel, MetricType};

use calls::Calls;
use http::RateLimitHttp;
use io::HostStore;

use crate::config::RefusalLog;
use crate::engine::{stat_names, Event, Filter, Memory, StatKind};
use crate::fleet::Verdict as FleetVerdict;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> {
        Box::new(RateLimitRoot { id, config: None, calls: Rc::new(RefCell::new(Calls::default())) })
    });
}}

struct RateLimitRoot {
    id: u32,
    config: Option<Rc<Loaded>>,
    /// This worker's requests waiting for the rate limit service, and its calls in flight.
    calls: Rc<RefCell<Calls>>,
}

/// The wall clock in milliseconds.
fn now_ms(context: &dyn Context) -> u64 {
    context
        .get_current_time()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The compiled config, this VM's stat ids (by rule, by slot; see `metrics`) and the counts not
/// yet handed to Envoy: stats are added up here and flushed once per tick, not per request.
struct Loaded {
    filter: Filter,
    /// This worker's memory: the rate limit service's answers, its refusals still true.
    memory: RefCell<Memory>,
    /// The queue that wakes this root to send calls, when some limit is fleet-wide.
    queue: Option<u32>,
    stats: Vec<Vec<u32>>,
    pending: RefCell<Vec<Vec<i64>>>,
}

/// How often this VM hands its counts to Envoy's stats.
const STATS_FLUSH: Duration = Duration::from_secs(1);

impl Loaded {
    fn record(&self, events: &[Event]) {
        let mut pending = self.pending.borrow_mut();
        for event in events {
            let (rule, slot) = event.slot();
            if let Some(count) = pending.get_mut(rule).and_then(|s| s.get_mut(slot)) {
                *count += 1;
            }
        }
    }

    fn flush(&self) {
        let mut pending = self.pending.borrow_mut();
        for (ids, counts) in self.stats.iter().zip(pending.iter_mut()) {
            for (&id, count) in ids.iter().zip(counts.iter_mut()) {
                if *count != 0 {
                    let _ = proxy_wasm::hostcalls::increment_metric(id, *count);
                    *count = 0;
                }
            }
        }
    }
}

impl Context for RateLimitRoot {
    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        let body = proxy_wasm::hostcalls::get_buffer(
            proxy_wasm::types::BufferType::GrpcReceiveBuffer,
            0,
            size,
        )
        .ok()
        .flatten();
        let verdict = FleetVerdict::of(status, body.as_deref());
        let now = now_ms(self);
        calls::answered(&self.calls, token, verdict, now);
        calls::send(&self.calls, self, self.id, now);
    }
}

impl RootContext for RateLimitRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match Filter::load(&bytes) {
            Ok(mut filter) => {
                // One random seed per Envoy process for hashing client keys, so that nobody
                // can aim keys at another client's page; the config's own seed is the fallback.
                let candidate = std::hash::BuildHasher::hash_one(
                    &std::collections::hash_map::RandomState::new(),
                    self.get_current_time(),
                );
                filter.adopt_shared_seed(&HostStore, candidate);
                log::info!(
                    "ratelimit: configuration loaded ({} rules)",
                    filter.rules.len()
                );
                if filter.refusal_log == RefusalLog::Debug {
                    proxy_wasm::set_log_level(LogLevel::Debug);
                }
                let stats: Vec<Vec<u32>> = stat_names(&filter)
                    .iter()
                    .map(|rule| {
                        rule.iter()
                            .map(|(name, kind)| {
                                let kind = match kind {
                                    StatKind::Counter => MetricType::Counter,
                                    StatKind::Gauge => MetricType::Gauge,
                                };
                                proxy_wasm::hostcalls::define_metric(kind, name).unwrap_or(u32::MAX)
                            })
                            .collect()
                    })
                    .collect();
                let pending = RefCell::new(
                    stats
                        .iter()
                        .map(|ids: &Vec<u32>| vec![0; ids.len()])
                        .collect(),
                );
                // Requests that wait for the service wake this worker's root through its own queue:
                // only the root sends calls, so their answers reach a context that outlives them.
                let queue = filter.fleet_service().map(|_| {
                    let id = std::hash::BuildHasher::hash_one(
                        &std::collections::hash_map::RandomState::new(),
                        self.get_current_time(),
                    );
                    self.register_shared_queue(&format!("ratelimit/fleet/{id:016x}"))
                });
                if let Some(previous) = self.config.replace(Rc::new(Loaded {
                    filter,
                    memory: RefCell::new(Memory::default()),
                    queue,
                    stats,
                    pending,
                })) {
                    previous.flush();
                }
                self.set_tick_period(STATS_FLUSH);
                true
            }
            Err(errors) => {
                for error in &errors.0 {
                    log::error!("ratelimit: invalid configuration: {error}");
                }
                false
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        Some(Box::new(RateLimitHttp::new(
            context_id,
            config,
            self.calls.clone(),
        )))
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        while let Ok(Some(_)) = proxy_wasm::hostcalls::dequeue_shared_queue(queue_id) {}
        calls::send(&self.calls, self, self.id, now_ms(self));
    }

    fn on_tick(&mut self) {
        if let Some(loaded) = &self.config {
            loaded.flush();
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
