//! The proxy-wasm glue: root and HTTP contexts, shared data, properties. Thin by design; the
//! decisions are made in [`crate::engine`].

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action as HostAction, BufferType, ContextType, LogLevel, MetricType};

use crate::config::RefusalLog;
use crate::engine::{begin, stat_names, Action, Event, Filter, Progress, StatKind, Waiting};
use crate::fleet::protocol::{METHOD, SERVICE};
use crate::fleet::{FleetMemory, Verdict as FleetVerdict};
use crate::request::RequestView;
use crate::response::Headers;
use crate::store::{CasMismatch, SharedStore};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(RateLimitRoot { config: None }) });
}}

struct RateLimitRoot {
    config: Option<Rc<Loaded>>,
}

/// The compiled config, this VM's stat ids (by rule, by slot; see `metrics`) and the counts not
/// yet handed to Envoy: stats are added up here and flushed once per tick, not per request.
struct Loaded {
    filter: Filter,
    /// This worker's memory of the rate limit service's answers (leases, refusals).
    memory: RefCell<FleetMemory>,
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

impl Context for RateLimitRoot {}

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
                if let Some(previous) = self.config.replace(Rc::new(Loaded {
                    filter,
                    memory: RefCell::new(FleetMemory::default()),
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

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        Some(Box::new(RateLimitHttp {
            config,
            waiting: None,
            response_headers: None,
            replied_locally: false,
        }))
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

/// Per-request state only: a decision waiting for the rate limit service, the headers to add
/// to the response, and whether the filter answered.
struct RateLimitHttp {
    config: Rc<Loaded>,
    waiting: Option<(u32, Waiting)>,
    response_headers: Option<Headers>,
    replied_locally: bool,
}

impl RateLimitHttp {
    fn now_ms(&self) -> u64 {
        self.get_current_time()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    /// Carries out a decision, or sends the call it waits for. `Pause` while waiting or after a
    /// local reply.
    fn carry_out(&mut self, progress: Progress) -> HostAction {
        let decision = match progress {
            Progress::Done(decision) => decision,
            Progress::Waiting(waiting) => return self.call(waiting),
        };
        self.config.record(&decision.events);
        match decision.action {
            Action::Pass => HostAction::Continue,
            Action::Allow(headers) => {
                if !headers.is_empty() {
                    self.response_headers = Some(headers);
                }
                HostAction::Continue
            }
            Action::Refuse(reply) => {
                self.replied_locally = true;
                let headers: Vec<(&str, &str)> = reply
                    .headers
                    .iter()
                    .map(|(k, v)| (&**k, v.as_str()))
                    .collect();
                self.send_http_response(reply.status, headers, Some(reply.body.as_bytes()));
                HostAction::Pause
            }
        }
    }

    /// Sends a call to the rate limit service; a call that cannot even be sent is a failure.
    fn call(&mut self, waiting: Waiting) -> HostAction {
        let Some(fleet) = self.config.filter.fleet_service() else {
            return self.answer(waiting, FleetVerdict::Failed);
        };
        let message = waiting.call.encode();
        let sent = self.dispatch_grpc_call(
            &fleet.cluster,
            SERVICE,
            METHOD,
            Vec::new(),
            Some(&message),
            Duration::from_millis(fleet.timeout_ms),
        );
        match sent {
            Ok(token) => {
                self.waiting = Some((token, waiting));
                HostAction::Pause
            }
            Err(status) => {
                log::warn!("ratelimit: cannot call the rate limit service: {status:?}");
                self.answer(waiting, FleetVerdict::Failed)
            }
        }
    }

    fn answer(&mut self, waiting: Waiting, verdict: FleetVerdict) -> HostAction {
        let now_ms = self.now_ms();
        let config = self.config.clone();
        let progress = {
            let mut memory = config.memory.borrow_mut();
            let request = HostRequest(self);
            waiting.resume(
                &config.filter,
                &HostStore,
                &mut memory,
                &request,
                verdict,
                now_ms,
            )
        };
        self.carry_out(progress)
    }
}

impl Context for RateLimitHttp {
    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        let Some((expected, waiting)) = self.waiting.take() else {
            return;
        };
        if token != expected {
            self.waiting = Some((expected, waiting));
            return;
        }
        let body = proxy_wasm::hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size)
            .ok()
            .flatten();
        let verdict = FleetVerdict::of(status, body.as_deref());
        if self.answer(waiting, verdict) == HostAction::Continue {
            self.resume_http_request();
        }
    }
}

impl HttpContext for RateLimitHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> HostAction {
        let now_ms = self.now_ms();
        let config = self.config.clone();
        let progress = {
            let mut memory = config.memory.borrow_mut();
            begin(
                &config.filter,
                &HostStore,
                &mut memory,
                &HostRequest(self),
                now_ms,
            )
        };
        self.carry_out(progress)
    }

    fn on_http_response_headers(
        &mut self,
        _num_headers: usize,
        _end_of_stream: bool,
    ) -> HostAction {
        // The filter's own local reply passes through here too: it already carries its headers.
        if self.replied_locally {
            return HostAction::Continue;
        }
        if let Some(headers) = self.response_headers.take() {
            for (name, value) in &headers {
                self.set_http_response_header(name, Some(value));
            }
        }
        HostAction::Continue
    }
}

/// Request attributes, read from the host on demand (the engine reads each at most once).
struct HostRequest<'a>(&'a RateLimitHttp);

impl RequestView for HostRequest<'_> {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.0.get_http_request_header_bytes(name)
    }
    fn source_address(&self) -> Option<Vec<u8>> {
        self.0.get_property(vec!["source", "address"])
    }
    fn route_name(&self) -> Option<Vec<u8>> {
        self.0.get_property(vec!["xds", "route_name"])
    }
}

/// proxy-wasm shared data: one map per VM id, shared by every worker thread.
struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        proxy_wasm::hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasMismatch> {
        proxy_wasm::hostcalls::set_shared_data(key, Some(value), cas).map_err(|_| CasMismatch)
    }
}
