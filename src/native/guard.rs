//! What crosses the C boundary: never a panic (an unwinding panic into Envoy's C++ frames would
//! abort Envoy), and the module's log lines, written into Envoy's log.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use super::abi::{envoy, LogLevel, ModuleBuffer};

/// Panics caught at the boundary since the module loaded (each also counted in the
/// configuration's `<prefix>.module_panics` counter when a stream was at hand).
static PANICS: AtomicU64 = AtomicU64::new(0);

/// Runs `body`; a panic in it is caught, logged and counted, and `fallback` runs instead.
pub fn guarded<T>(what: &str, body: impl FnOnce() -> T, fallback: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            PANICS.fetch_add(1, Ordering::Relaxed);
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log::error!("ratelimit: a bug in {what} was caught (panic: {message})");
            fallback()
        }
    }
}

/// Panics caught so far.
#[cfg(test)]
pub fn panics() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

/// The `log` crate's lines, into Envoy's log (the `dynamic_modules` component); a level is
/// enabled when Envoy's is.
struct EnvoyLogger;

static LOGGER: EnvoyLogger = EnvoyLogger;

fn level_of(level: log::Level) -> LogLevel {
    match level {
        log::Level::Error => LogLevel::Error,
        log::Level::Warn => LogLevel::Warn,
        log::Level::Info => LogLevel::Info,
        log::Level::Debug => LogLevel::Debug,
        log::Level::Trace => LogLevel::Trace,
    }
}

impl log::Log for EnvoyLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        let level = level_of(metadata.level()) as u32;
        // SAFETY: a callback of the signature abi.h gives it.
        envoy().is_some_and(|e| unsafe { (e.log_enabled)(level) })
    }

    fn log(&self, record: &log::Record) {
        let Some(envoy) = envoy() else { return };
        let level = level_of(record.level()) as u32;
        let line = record.args().to_string();
        // SAFETY: `line` outlives the call, which copies it.
        unsafe { (envoy.log)(level, ModuleBuffer::of(line.as_bytes())) }
    }

    fn flush(&self) {}
}

/// Sends the `log` crate's lines to Envoy (once per process).
pub fn install_logger() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_caught_counted_and_replaced() {
        let before = panics();
        let value = guarded("a test", || -> u32 { panic!("boom") }, || 7);
        assert_eq!(value, 7);
        assert!(panics() > before);
        let value = guarded("a test", || 3, || 7);
        assert_eq!(value, 3);
    }
}
