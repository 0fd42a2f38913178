//! The fleet tier: limits counted across every Envoy by a rate limit service speaking Envoy's
//! protocol (Limitador; envoyproxy/ratelimit), asked only after the local tier admits.
//!
//! Sliding counting keeps "at most L in any window" on an engine whose windows start at a
//! counter's first hit: the window is cut into N sub-windows, and a request in sub-window m counts
//! in the N+1 "span" counters j = m−N..m, span j covering sub-windows j..j+N. The engine admits
//! only if every span has room; the binding one, m−N, holds everything admitted in the last N+1
//! sub-windows — the local ring's decision, fleet-wide. Fixed counting sends one counter per
//! limit (any engine; clock-aligned windows allow up to 2L across a window's end).
//!
//! Per worker, [`FleetMemory`] keeps leases (hits reserved by one call, used until the
//! sub-window ends: unused ones are lost, which can only under-admit) and refusals (true until
//! the sub-window ends: the binding span only grows within a sub-window).

mod memory;
pub mod protocol;
mod settings;

pub use memory::{Clock, FleetMemory, Recall};
pub use protocol::{Answer, Code, Descriptor};
pub use settings::{FleetLimit, FleetRule, FleetSettings};

use crate::config::FleetCounting;
use crate::hash::display_hash;

/// One call to the service: what to send, and on whose behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetCall {
    pub domain: String,
    pub descriptors: Vec<Descriptor>,
    /// Hits asked for: the request's cost, or a lease of more.
    pub hits: u64,
}

impl FleetCall {
    /// The protobuf `RateLimitRequest`.
    pub fn encode(&self) -> Vec<u8> {
        let hits = u32::try_from(self.hits).unwrap_or(u32::MAX);
        protocol::encode_request(&self.domain, &self.descriptors, hits)
    }
}

/// How the service answered a call, as the pipeline sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admitted,
    OverLimit,
    /// No usable answer: the service failed, timed out, or said something unreadable.
    Failed,
}

impl Verdict {
    /// A gRPC status (0: OK) and the response body, read as a verdict.
    pub fn of(grpc_status: u32, body: Option<&[u8]>) -> Self {
        if grpc_status != 0 {
            return Verdict::Failed;
        }
        match protocol::decode_response(body.unwrap_or_default()) {
            Ok(Answer { code: Code::Ok, .. }) => Verdict::Admitted,
            Ok(Answer {
                code: Code::OverLimit,
                ..
            }) => Verdict::OverLimit,
            _ => Verdict::Failed,
        }
    }
}

/// The sub-window of `t_ms` when a window of `window_ms` is cut into `n` sub-windows.
fn sub_window(t_ms: u64, window_ms: u64, n: u32) -> u64 {
    ((t_ms as u128 * n as u128) / window_ms as u128) as u64
}

/// The first millisecond of sub-window `b`.
fn sub_window_start(b: u64, window_ms: u64, n: u32) -> u64 {
    (b as u128 * window_ms as u128).div_ceil(n as u128) as u64
}

impl FleetRule {
    /// The descriptors of a call for `client` at `now_ms`: for each of the rule's fleet limits,
    /// in order, N+1 span descriptors (sliding; span j at position j mod (N+1), so span j always
    /// meets the same engine limit) or one (fixed). `plan` is named when the config has plans.
    pub fn descriptors(
        &self,
        settings: &FleetSettings,
        client: u64,
        plan: Option<&str>,
        now_ms: u64,
    ) -> Vec<Descriptor> {
        let client = display_hash(client);
        let entries = |limit: &FleetLimit| {
            let mut entries = vec![("limit".to_string(), limit.id.clone())];
            if let Some(plan) = plan {
                entries.push(("plan".to_string(), plan.to_string()));
            }
            entries.push(("client".to_string(), client.clone()));
            entries
        };
        let n = settings.sub_windows;
        let mut descriptors = Vec::new();
        for limit in &self.limits {
            if settings.counting == FleetCounting::Fixed {
                descriptors.push(entries(limit));
                continue;
            }
            let m = sub_window(now_ms, limit.window_ms, n);
            let mut spans = vec![Vec::new(); n as usize + 1];
            for j in m.saturating_sub(n as u64)..=m {
                let mut span = entries(limit);
                span.push(("span".to_string(), j.to_string()));
                spans[(j % (n as u64 + 1)) as usize] = span;
            }
            descriptors.extend(spans);
        }
        descriptors
    }

    /// `now_ms` and the bounds of the current sub-window of the rule's fleet limit whose
    /// sub-window ends first: what the service says at `now_ms` is true until then.
    pub fn clock(&self, settings: &FleetSettings, now_ms: u64) -> Clock {
        let n = settings.sub_windows;
        self.limits
            .iter()
            .map(|l| {
                let m = sub_window(now_ms, l.window_ms, n);
                Clock {
                    now: now_ms,
                    sub_start: sub_window_start(m, l.window_ms, n),
                    sub_end: sub_window_start(m + 1, l.window_ms, n),
                }
            })
            .min_by_key(|c| c.sub_end)
            .unwrap_or(Clock {
                now: now_ms,
                sub_start: now_ms,
                sub_end: now_ms,
            })
    }

    /// A conservative retry time after a fleet refusal at `now_ms`: when everything counted up
    /// to now has left every span (the engine says nothing of how its counts are spread).
    pub fn retry_at(&self, settings: &FleetSettings, now_ms: u64) -> u64 {
        let n = settings.sub_windows as u64;
        self.limits
            .iter()
            .map(|l| match settings.counting {
                FleetCounting::Sliding | FleetCounting::Batched => {
                    let m = sub_window(now_ms, l.window_ms, settings.sub_windows);
                    sub_window_start(m + n + 1, l.window_ms, settings.sub_windows)
                }
                FleetCounting::Fixed => now_ms + l.window_ms,
            })
            .max()
            .unwrap_or(now_ms)
    }
}

#[cfg(test)]
mod tests;
