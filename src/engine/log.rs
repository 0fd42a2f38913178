//! The refusal log: the engine notes each refusal in its decision ([`RefusalNote`]); the host
//! samples the notes with a [`RefusalLog`] of its own per worker (at most one line per second,
//! with the count of those not written, so that a flood of refused requests cannot become a
//! flood of log lines) and writes the line. A line names the rule, the limit, the hashed client
//! and the plan — never the key.

use super::filter::Filter;
use crate::config::RefusalLog as Level;
use crate::hash::display_hash;

/// Why the request was refused (the log line's first word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A limit of the client refused it.
    Refused,
    /// Over only through counts the store inherited for lack of room.
    Capacity,
    /// The store could not decide (`store.on_contention: deny`).
    Contention,
}

/// One refusal, as the log line describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalNote {
    pub why: Why,
    pub rule: usize,
    /// The refusing limit, when a limit refused.
    pub limit: Option<usize>,
    pub client: u64,
    pub plan: usize,
    /// The request passes all the same (shadow mode, a rule's or a candidate limit's).
    pub shadow: bool,
}

/// One worker's sampling of refusal lines: the second of its last line and the notes not
/// written since.
#[derive(Debug, Clone, Copy)]
pub struct RefusalLog {
    last_second: u64,
    unlogged: u64,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog {
            last_second: u64::MAX,
            unlogged: 0,
        }
    }
}

impl RefusalLog {
    /// The line to write for `note` at `now_ms`, and its level, if one is due: the filter logs
    /// refusals at an enabled level, and no line was written in this second (else the note is
    /// counted, and told in the next line written).
    pub fn line(
        &mut self,
        filter: &Filter,
        note: &RefusalNote,
        now_ms: u64,
    ) -> Option<(log::Level, String)> {
        let level = match filter.refusal_log {
            Level::Off => return None,
            Level::Info => log::Level::Info,
            Level::Debug => log::Level::Debug,
        };
        if !log::log_enabled!(level) {
            return None;
        }
        let second = now_ms / 1000;
        if self.last_second == second {
            self.unlogged += 1;
            return None;
        }
        let unlogged = std::mem::take(&mut self.unlogged);
        self.last_second = second;
        Some((level, describe(filter, note, unlogged)))
    }
}

fn describe(filter: &Filter, note: &RefusalNote, unlogged: u64) -> String {
    let why = match note.why {
        Why::Refused => "refused",
        Why::Capacity => "capacity",
        Why::Contention => "contention",
    };
    let rule = &filter.rules[note.rule].name;
    let limit = note
        .limit
        .and_then(|l| Some(filter.limited(note.rule)?.texts.get(l)?.name.as_str()))
        .unwrap_or("-");
    let plan = filter.plans.shown(note.plan).unwrap_or("-");
    let shadow = note.shadow;
    let action = if shadow { "pass" } else { "refuse" };
    format!(
        "ratelimit: {why} rule={rule} limit={limit} client={} plan={plan} action={action} shadow={shadow} unlogged_since_last={unlogged}",
        display_hash(note.client),
    )
}
