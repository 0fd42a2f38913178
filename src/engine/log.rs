//! The refusal log line: at most one per second per worker, with the count of those not written,
//! so that a flood of refused requests cannot become a flood of log lines. It names the rule, the
//! limit, the hashed client and the plan — never the key.

use std::cell::Cell;

use crate::config::RefusalLog;
use crate::request::display_hash;

thread_local! {
    /// The second of this worker's last refusal line, and the refusals not logged since.
    static LAST_LINE: Cell<(u64, u64)> = const { Cell::new((u64::MAX, 0)) };
}

/// One refusal, as the log line describes it.
pub struct Refusal<'a> {
    pub why: &'a str,
    pub rule: &'a str,
    /// The refusing limit's name, `-` when the store could not decide.
    pub limit: &'a str,
    pub client: u64,
    pub plan: Option<&'a str>,
    /// Whether the filter is in shadow mode (the request passes).
    pub shadow: bool,
}

pub fn log_refusal(level: RefusalLog, refusal: &Refusal, now_ms: u64) {
    let level = match level {
        RefusalLog::Off => return,
        RefusalLog::Info => log::Level::Info,
        RefusalLog::Debug => log::Level::Debug,
    };
    if !log::log_enabled!(level) {
        return;
    }
    let second = now_ms / 1000;
    let (last, unlogged) = LAST_LINE.get();
    if last == second {
        LAST_LINE.set((last, unlogged + 1));
        return;
    }
    LAST_LINE.set((second, 0));
    let Refusal {
        why,
        rule,
        limit,
        client,
        plan,
        shadow,
    } = refusal;
    log::log!(
        level,
        "ratelimit: {why} rule={rule} limit={limit} client={} plan={} action={} shadow={shadow} unlogged_since_last={unlogged}",
        display_hash(*client),
        plan.unwrap_or("-"),
        if *shadow { "pass" } else { "refuse" },
    );
}
