//! The proxy-wasm host: the root context (configuration, stats, this worker's calls to the rate
//! limit service) and the HTTP context (one request). Thin by design: it translates host calls
//! for the engine ([`crate::engine`], its face and nothing else of the crate) and carries out
//! what the engine decides.

mod calls;
mod http;
mod io;
mod loaded;

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

use crate::engine::{reports, Filter, FleetVerdict, PAGE_LAYOUT_VERSION};
use calls::{RootCalls, Waiting};
use http::RateLimitHttp;
use io::{now_ms, random, HostStore};
use loaded::Loaded;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> {
        Box::new(RateLimitRoot { id, config: None, waiting: Rc::default() })
    });
}}

struct RateLimitRoot {
    id: u32,
    config: Option<Rc<Loaded>>,
    /// This worker's requests waiting for the rate limit service, and its calls in flight.
    waiting: Rc<Waiting>,
}

/// How often this VM hands its counts to Envoy's stats.
const STATS_FLUSH: Duration = Duration::from_secs(1);

impl RateLimitRoot {
    fn calls(&self) -> RootCalls<'_> {
        RootCalls {
            root: self,
            root_id: self.id,
            waiting: &self.waiting,
            now: now_ms(self),
        }
    }

    /// A configuration that loaded: seeded, with its stats defined and, when some limit is
    /// fleet-wide, the queue that wakes this root to send calls.
    fn adopt(&mut self, mut filter: Filter) {
        // One random seed per Envoy process for hashing client keys, so that nobody can aim keys
        // at another client's page; the config's own seed is the fallback.
        filter.adopt_shared_seed(&HostStore, random(self));
        log::info!(
            "ratelimit: configuration loaded ({} rules); page layout {}",
            filter.rule_count(),
            PAGE_LAYOUT_VERSION
        );
        if filter.logs_refusals_at_debug() {
            proxy_wasm::set_log_level(LogLevel::Debug);
        }
        // Requests that wait for the service wake this worker's root through its own queue: only
        // the root sends calls, so their answers reach a context that outlives them.
        let queue = filter
            .fleet_service()
            .map(|_| self.register_shared_queue(&format!("ratelimit/fleet/{:016x}", random(self))));
        let loaded = Loaded::new(filter, queue);
        let tick = loaded
            .filter
            .batch_interval_ms()
            .map_or(STATS_FLUSH, |interval| {
                // Reports are due by age: look four times per interval (and flush stats as often).
                STATS_FLUSH.min(Duration::from_millis((interval / 4).max(5)))
            });
        if let Some(previous) = self.config.replace(Rc::new(loaded)) {
            previous.flush();
        }
        self.set_tick_period(tick);
    }
}

/// Batched counting: reports in flight at most, per worker (more wait for the next tick).
const MAX_REPORTS_IN_FLIGHT: usize = 256;

impl RateLimitRoot {
    /// Batched counting: sends the reports due.
    fn send_reports(&self, loaded: &Rc<Loaded>) {
        if loaded.filter.batch_interval_ms().is_none() {
            return;
        }
        let room = MAX_REPORTS_IN_FLIGHT.saturating_sub(self.waiting.in_flight());
        let now = now_ms(self);
        let due = reports(&loaded.filter, &mut loaded.memory.borrow_mut(), now, room);
        for side in due {
            self.waiting.side(side, loaded.clone());
        }
        self.waiting.send(&mut self.calls());
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
        let mut calls = self.calls();
        self.waiting.answered(u64::from(token), verdict, &mut calls);
        self.waiting.send(&mut calls);
    }
}

impl RootContext for RateLimitRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match Filter::load(&bytes) {
            Ok(filter) => {
                self.adopt(filter);
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
        let waiting = self.waiting.clone();
        Some(Box::new(RateLimitHttp::new(context_id, config, waiting)))
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        while let Ok(Some(_)) = proxy_wasm::hostcalls::dequeue_shared_queue(queue_id) {}
        self.waiting.send(&mut self.calls());
    }

    fn on_tick(&mut self) {
        if let Some(loaded) = self.config.clone() {
            loaded.flush();
            self.send_reports(&loaded);
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
