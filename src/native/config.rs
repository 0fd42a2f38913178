//! A filter configuration as the module runs it: the compiled filter (shared by every worker,
//! read-only), its stats defined in Envoy, and what each worker thread keeps of its own (the
//! engine's memory, the refusal log's sampling), found by the configuration it belongs to.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock, Weak};

use super::abi::{self, Callbacks, ConfigPtr, ModuleBuffer};
use super::store::NativeStore;
use super::support;
use super::view::Stream;
use crate::engine::{stat_names, Event, Filter, Memory, RefusalLog, StatKind, PAGE_LAYOUT_VERSION};

/// The pages of every configuration of this process, as shared data is for a Wasm `vm_id`: a
/// configuration reloaded with the same `store.key_prefix` keeps counting where the last one
/// was.
pub fn store() -> &'static NativeStore {
    static STORE: OnceLock<NativeStore> = OnceLock::new();
    STORE.get_or_init(NativeStore::new)
}

pub struct Config {
    pub filter: Filter,
    /// Stat ids and kinds, by rule and by slot (see `stat_names`).
    stats: Vec<Vec<(usize, StatKind)>>,
    /// `<prefix>.module_panics`: panics caught at the C boundary for this configuration.
    panics: Option<usize>,
}

/// What one worker thread keeps for one configuration.
pub struct Worker {
    pub memory: Memory,
    pub refusal_log: RefusalLog,
}

thread_local! {
    /// This thread's part of each configuration it served (pruned of dropped ones).
    static WORKERS: RefCell<Vec<(Weak<Config>, Worker)>> = const { RefCell::new(Vec::new()) };
}

impl Config {
    /// Compiles `json`; every problem is logged with its JSON path, and `None` rejects the
    /// configuration (Envoy refuses the listener).
    pub fn load(envoy: &Callbacks, config_ptr: ConfigPtr, json: &[u8]) -> Option<Config> {
        let mut filter = match Filter::load(json) {
            Ok(filter) => filter,
            Err(errors) => {
                for error in &errors.0 {
                    log::error!("ratelimit: invalid configuration: {error}");
                }
                return None;
            }
        };
        let mut problems = support::unreadable(json);
        problems.extend(support::batched(&filter));
        if !problems.is_empty() {
            for problem in &problems {
                log::error!("ratelimit: invalid configuration: {problem}");
            }
            return None;
        }
        filter.adopt_shared_seed(store(), random());
        let stats = stat_names(&filter)
            .iter()
            .map(|rule| {
                let define = |(name, kind): &(String, StatKind)| {
                    (define(envoy, config_ptr, name, *kind), *kind)
                };
                rule.iter().map(define).collect()
            })
            .collect();
        let panics_name = format!("{}.module_panics", filter.key_prefix());
        let panics = Some(define(envoy, config_ptr, &panics_name, StatKind::Counter));
        log::info!(
            "ratelimit: configuration loaded ({} rules, native module, ABI {}); page layout {}",
            filter.rule_count(),
            abi::ABI_VERSION,
            PAGE_LAYOUT_VERSION
        );
        Some(Config {
            filter,
            stats,
            panics,
        })
    }

    /// Adds what happened to the stats.
    pub fn record(&self, stream: Stream, events: &[Event]) {
        for event in events {
            let (rule, slot) = event.slot();
            if let Some(&(id, kind)) = self.stats.get(rule).and_then(|s| s.get(slot)) {
                increment(stream, id, kind, event.amount());
            }
        }
    }

    /// Counts a panic caught while serving `stream`.
    pub fn record_panic(&self, stream: Stream) {
        if let Some(id) = self.panics {
            increment(stream, id, StatKind::Counter, 1);
        }
    }
}

/// Runs `f` with this thread's part of `config`.
pub fn with_worker<R>(config: &Arc<Config>, f: impl FnOnce(&mut Worker) -> R) -> R {
    WORKERS.with(|workers| {
        let mut workers = workers.borrow_mut();
        let at = match workers
            .iter()
            .position(|(c, _)| std::ptr::eq(c.as_ptr(), Arc::as_ptr(config)))
        {
            Some(at) => at,
            None => {
                workers.retain(|(c, _)| c.strong_count() > 0);
                let worker = Worker {
                    memory: Memory::for_filter(&config.filter),
                    refusal_log: RefusalLog::default(),
                };
                workers.push((Arc::downgrade(config), worker));
                workers.len() - 1
            }
        };
        f(&mut workers[at].1)
    })
}

fn define(envoy: &Callbacks, config_ptr: ConfigPtr, name: &str, kind: StatKind) -> usize {
    let mut id = usize::MAX;
    let name = ModuleBuffer::of(name.as_bytes());
    let define = match kind {
        StatKind::Counter => envoy.http_filter_config_define_counter,
        StatKind::Gauge => envoy.http_filter_config_define_gauge,
    };
    // SAFETY: `config_ptr` is the configuration being created (stats may be defined only now);
    // no labels.
    let result = unsafe { define(config_ptr, name, std::ptr::null_mut(), 0, &mut id) };
    if result != abi::METRICS_SUCCESS {
        log::warn!("ratelimit: Envoy refused a stat (result {result})");
    }
    id
}

fn increment(stream: Stream, id: usize, kind: StatKind, amount: u64) {
    if id == usize::MAX {
        return;
    }
    let add = match kind {
        StatKind::Counter => stream.envoy.http_filter_increment_counter,
        StatKind::Gauge => stream.envoy.http_filter_increment_gauge,
    };
    // SAFETY: `stream.filter` belongs to the running hook and to this configuration, which
    // defined `id`; no labels.
    unsafe { add(stream.filter, id, std::ptr::null_mut(), 0, amount) };
}

/// A random number per call (the per-process hash seed's candidate).
fn random() -> u64 {
    let state = std::collections::hash_map::RandomState::new();
    std::hash::BuildHasher::hash_one(&state, std::time::SystemTime::now())
}
