//! Carrying out a decision on a stream (the request's own, or one decided on its behalf once the
//! rate limit service answered): its events counted, its refusal logged, its status recorded,
//! and a refusal answered locally.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::abi::{ModuleBuffer, ModuleHeader};
use super::config::{with_worker, Config};
use super::view::Stream;
use crate::engine::{Action, Decision, Headers, Reply, Ticket};

/// The filter state key of each request's status (`response.status_filter_state`): the Wasm
/// filter's own (proxy-wasm writes `wasm.` before its keys), so that one access log format
/// serves either build.
const STATUS_KEY: &[u8] = b"wasm.ratelimit_status";

/// Carries out `decision` on `stream`: its events counted, its refusal logged, its status
/// recorded; the headers to write and the ticket to settle when it goes on, `None` once it was
/// answered.
pub fn carry(
    config: &Arc<Config>,
    stream: Stream,
    decision: Decision,
    now: u64,
) -> Option<(Headers, Ticket)> {
    config.record(stream, &decision.events);
    if let Some(note) = &decision.refusal {
        let line = with_worker(config, |w| w.refusal_log.line(&config.filter, note, now));
        if let Some((level, line)) = line {
            log::log!(level, "{line}");
        }
    }
    if let Some(status) = decision.status.filter(|_| config.filter.records_status()) {
        let value = ModuleBuffer::of(status.as_str().as_bytes());
        let key = ModuleBuffer::of(STATUS_KEY);
        // SAFETY: a live stream of this worker; Envoy copies key and value.
        unsafe { (stream.envoy.http_set_filter_state_bytes)(stream.filter, key, value) };
    }
    match decision.action {
        Action::Pass => Some((Headers::new(), decision.ticket)),
        Action::Allow(headers) => Some((headers, decision.ticket)),
        Action::Refuse(reply) => {
            send(stream, &reply, b"ratelimit");
            None
        }
    }
}

/// Answers the request locally.
pub fn send(stream: Stream, reply: &Reply, details: &[u8]) {
    let mut headers: Vec<ModuleHeader> = reply
        .headers
        .iter()
        .map(|(name, value)| ModuleHeader {
            key_ptr: name.as_ptr(),
            key_length: name.len(),
            value_ptr: value.as_bytes().as_ptr(),
            value_length: value.as_bytes().len(),
        })
        .collect();
    let body = ModuleBuffer::of(reply.body.as_bytes());
    let (count, details) = (headers.len(), ModuleBuffer::of(details));
    // SAFETY: the stream of the running hook; every buffer outlives the call, which copies them.
    unsafe {
        (stream.envoy.http_send_response)(
            stream.filter,
            reply.status,
            headers.as_mut_ptr(),
            count,
            body,
            details,
        )
    };
}

/// The wall clock in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
