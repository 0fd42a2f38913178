//! One HTTP stream: decided when its request headers arrive, its response headers written, and
//! what it holds settled when the stream completes.

use std::sync::Arc;

use super::abi::{self, ModuleBuffer};
use super::carry::{carry, now_ms};
use super::config::{store, with_worker, Config};
use super::fleet;
use super::view::{response_has_any, RequestRead, Stream};
use crate::engine::{begin, settle, Headers, Progress, Ticket};

pub struct RateLimitStream {
    pub config: Arc<Config>,
    /// Envoy's pointer for this stream (the fleet tier's name for it).
    pub id: usize,
    /// Headers to add to the response.
    response_headers: Headers,
    /// What the request holds in the store, settled when its stream completes.
    ticket: Ticket,
}

impl RateLimitStream {
    pub fn new(config: Arc<Config>, id: usize) -> Self {
        RateLimitStream {
            config,
            id,
            response_headers: Headers::new(),
            ticket: Ticket::default(),
        }
    }

    /// Decides the request; `CONTINUE`, or `STOP_ITERATION` once it was answered or while it
    /// waits for the rate limit service (`fleet`).
    pub fn on_request_headers(&mut self, stream: Stream) -> u32 {
        let now = now_ms();
        let config = &self.config;
        let filter = &config.filter;
        let request = RequestRead::new(stream);
        let progress = with_worker(config, |worker| {
            begin(filter, store(), &mut worker.memory, &request, now)
        });
        let carried = match progress {
            Progress::Done(mut decision) => {
                let side_calls = std::mem::take(&mut decision.side_calls);
                fleet::send_side_calls(stream, config, side_calls);
                carry(config, stream, decision, now)
            }
            Progress::Waiting(waiting) => fleet::park(stream, config, waiting),
        };
        match carried {
            Some((headers, ticket)) => {
                (self.response_headers, self.ticket) = (headers, ticket);
                abi::CONTINUE
            }
            None => abi::STOP_ITERATION,
        }
    }

    /// What was decided for this request on its behalf once the rate limit service answered.
    fn collect_kept(&mut self, stream: Stream) {
        if self.config.filter.fleet_service().is_none() {
            return;
        }
        if let Some((headers, ticket)) = fleet::take_kept(stream.filter) {
            (self.response_headers, self.ticket) = (headers, ticket);
        }
    }

    /// Writes the decision's headers into the response (a local reply carries its own). Each
    /// replaces a header of the same name the upstream sent; when the upstream sent none of them
    /// (the usual case), they are added, which costs Envoy less than a replacement (no search
    /// and removal per header: BENCHMARKS.md, "Issue 21").
    pub fn on_response_headers(&mut self, stream: Stream) -> u32 {
        self.collect_kept(stream);
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
        self.collect_kept(stream);
        if self.ticket.is_empty() {
            return;
        }
        let ticket = std::mem::take(&mut self.ticket);
        let events = settle(&self.config.filter, store(), &ticket, &stream, now_ms());
        self.config.record(stream, &events);
    }
}
