//! One request: decided when its headers arrive (or, when it waits for the rate limit service,
//! by the root once the answer is in), its response headers written, and what it holds settled
//! when its stream ends.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action as HostAction;

use super::calls::Waiting;
use super::io::now_ms;
use super::io::{HostRequest, HostResponse, HostStore};
use super::loaded::{Carried, Loaded};
use crate::engine::{begin, settle, Decision, Headers, Progress, Ticket};

pub struct RateLimitHttp {
    id: u32,
    config: Rc<Loaded>,
    waiting: Rc<Waiting>,
    /// Headers to add to the response (decided in this context's own callback).
    response_headers: Headers,
    /// What the request holds in the store, settled when its stream ends.
    ticket: Ticket,
}

impl RateLimitHttp {
    pub fn new(id: u32, config: Rc<Loaded>, waiting: Rc<Waiting>) -> Self {
        RateLimitHttp {
            id,
            config,
            waiting,
            response_headers: Headers::new(),
            ticket: Ticket::default(),
        }
    }
}

impl RateLimitHttp {
    fn carried(&mut self, decision: Decision, now: u64) -> HostAction {
        match self.config.carry_out(decision, now) {
            Carried::Continue(headers, ticket) => {
                (self.response_headers, self.ticket) = (headers, ticket);
                HostAction::Continue
            }
            Carried::Replied => HostAction::Pause,
        }
    }

    /// Lease refills asked ahead of need: queued for the root to send (nobody waits for them).
    fn send_side_calls(&self, decision: &mut Decision) {
        if decision.side_calls.is_empty() {
            return;
        }
        for call in std::mem::take(&mut decision.side_calls) {
            self.waiting.side(call, self.config.clone());
        }
        self.wake_root();
    }

    /// Only the root sends calls: this worker's queue wakes it.
    fn wake_root(&self) {
        if let Some(queue) = self.config.queue {
            let _ = proxy_wasm::hostcalls::enqueue_shared_queue(queue, Some(b"call"));
        }
    }
}

impl Context for RateLimitHttp {
    fn on_done(&mut self) -> bool {
        self.waiting.forget(self.id);
        true
    }
}

impl HttpContext for RateLimitHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> HostAction {
        let now = now_ms(self);
        let loaded = &self.config;
        let progress = {
            let mut memory = loaded.memory.borrow_mut();
            begin(&loaded.filter, &HostStore, &mut memory, &HostRequest, now)
        };
        match progress {
            Progress::Done(mut decision) => {
                self.send_side_calls(&mut decision);
                self.carried(decision, now)
            }
            Progress::Waiting(waiting) => {
                if self.waiting.park(self.id, loaded.clone(), waiting) {
                    self.wake_root();
                }
                HostAction::Pause
            }
        }
    }

    fn on_http_response_headers(
        &mut self,
        _num_headers: usize,
        _end_of_stream: bool,
    ) -> HostAction {
        // A local reply passes through here too: it carries its own headers (none kept here).
        if let Some((headers, ticket)) = self.waiting.take_kept(self.id) {
            (self.response_headers, self.ticket) = (headers, ticket);
        }
        for (name, value) in std::mem::take(&mut self.response_headers) {
            self.set_http_response_header(&name, Some(value.as_str()));
        }
        HostAction::Continue
    }

    fn on_log(&mut self) {
        // A resumed request whose stream ended before its response kept its ticket there.
        if let Some((_, ticket)) = self.waiting.take_kept(self.id) {
            self.ticket = ticket;
        }
        if self.ticket.is_empty() {
            return;
        }
        let loaded = &self.config;
        let now = now_ms(self);
        let events = settle(&loaded.filter, &HostStore, &self.ticket, &HostResponse, now);
        loaded.record(&events);
    }
}
