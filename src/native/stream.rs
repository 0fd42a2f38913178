//! One HTTP stream: decided when its request headers arrive, its response headers written, and
//! what it holds settled when the stream completes.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::abi::{self, ModuleBuffer, ModuleHeader};
use super::config::{store, with_worker, Config};
use super::view::{response_has_any, RequestRead, Stream};
use crate::engine::{begin, settle, Action, Decision, Headers, Progress, Reply, Ticket};

/// The filter state key of each request's status (`response.status_filter_state`): the Wasm
/// filter's own (proxy-wasm writes `wasm.` before its keys), so that one access log format
/// serves either build.
const STATUS_KEY: &[u8] = b"wasm.ratelimit_status";

pub struct RateLimitStream {
    pub config: Arc<Config>,
    /// Headers to add to the response.
    response_headers: Headers,
    /// What the request holds in the store, settled when its stream completes.
    ticket: Ticket,
}

impl RateLimitStream {
    pub fn new(config: Arc<Config>) -> Self {
        RateLimitStream {
            config,
            response_headers: Headers::new(),
            ticket: Ticket::default(),
        }
    }

    /// Decides the request; `CONTINUE`, or `STOP_ITERATION` once it was answered.
    pub fn on_request_headers(&mut self, stream: Stream) -> u32 {
        let now = now_ms();
        let config = &self.config;
        let filter = &config.filter;
        let request = RequestRead::new(stream);
        let progress = with_worker(config, |worker| {
            begin(filter, store(), &mut worker.memory, &request, now)
        });
        let decision = match progress {
            Progress::Done(decision) => decision,
            // A configuration with fleet-wide limits is refused at load (see `fleet`).
            Progress::Waiting(_) => unreachable!("no fleet tier in a native configuration"),
        };
        self.carry_out(stream, decision, now)
    }

    fn carry_out(&mut self, stream: Stream, decision: Decision, now: u64) -> u32 {
        let config = &self.config;
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
            // SAFETY: the stream of the running hook; Envoy copies key and value.
            unsafe { (stream.envoy.http_set_filter_state_bytes)(stream.filter, key, value) };
        }
        match decision.action {
            Action::Pass => {
                self.ticket = decision.ticket;
                abi::CONTINUE
            }
            Action::Allow(headers) => {
                (self.response_headers, self.ticket) = (headers, decision.ticket);
                abi::CONTINUE
            }
            Action::Refuse(reply) => {
                send(stream, &reply, b"ratelimit");
                abi::STOP_ITERATION
            }
        }
    }

    /// Writes the decision's headers into the response (a local reply carries its own). Each
    /// replaces a header of the same name the upstream sent; when the upstream sent none of them
    /// (the usual case), they are added, which costs Envoy less than a replacement (no search
    /// and removal per header: BENCHMARKS.md, "Issue 21").
    pub fn on_response_headers(&mut self, stream: Stream) -> u32 {
        let headers = std::mem::take(&mut self.response_headers);
        if headers.is_empty() {
            return abi::CONTINUE;
        }
        // A name twice in the decision's headers: each write replaces, as the Wasm filter's do.
        let twice = (headers.iter().enumerate())
            .any(|(i, (name, _))| headers[..i].iter().any(|(other, _)| other == name));
        let write = if twice || response_has_any(stream, headers.iter().map(|(name, _)| &**name)) {
            stream.envoy.http_set_header
        } else {
            stream.envoy.http_add_header
        };
        for (name, value) in &headers {
            let (name, value) = (ModuleBuffer::of(name.as_bytes()), value.as_bytes());
            let value = ModuleBuffer::of(value);
            // SAFETY: the stream of the running hook; Envoy copies name and value.
            unsafe { write(stream.filter, abi::RESPONSE_HEADER, name, value) };
        }
        abi::CONTINUE
    }

    /// Settles what the request holds with what its response says.
    pub fn on_stream_complete(&mut self, stream: Stream) {
        if self.ticket.is_empty() {
            return;
        }
        let ticket = std::mem::take(&mut self.ticket);
        let events = settle(&self.config.filter, store(), &ticket, &stream, now_ms());
        self.config.record(stream, &events);
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
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
