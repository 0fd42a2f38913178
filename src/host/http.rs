//! One request: decided when its headers arrive (or, when it waits for the rate limit service,
//! by the root once the answer is in), and its response headers written.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action as HostAction;

use super::calls::{self, Calls, Carried};
use super::io::{HostRequest, HostStore};
use super::{now_ms, Loaded};
use crate::engine::begin;
use crate::response::Headers;

pub struct RateLimitHttp {
    id: u32,
    config: Rc<Loaded>,
    calls: Rc<RefCell<Calls>>,
    /// Headers to add to the response (decided in this context's own callback).
    response_headers: Option<Headers>,
}

impl RateLimitHttp {
    pub fn new(id: u32, config: Rc<Loaded>, calls: Rc<RefCell<Calls>>) -> Self {
        RateLimitHttp {
            id,
            config,
            calls,
            response_headers: None,
        }
    }
}

impl Context for RateLimitHttp {
    fn on_done(&mut self) -> bool {
        calls::forget(&self.calls, self.id);
        true
    }
}

impl HttpContext for RateLimitHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> HostAction {
        let now = now_ms(self);
        let progress = {
            let mut memory = self.config.memory.borrow_mut();
            begin(
                &self.config.filter,
                &HostStore,
                &mut memory,
                &HostRequest,
                now,
            )
        };
        match calls::carry_out(&self.calls, self.id, &self.config, progress) {
            Carried::Continue(headers) => {
                self.response_headers = headers;
                HostAction::Continue
            }
            Carried::Replied | Carried::Parked => HostAction::Pause,
        }
    }

    fn on_http_response_headers(
        &mut self,
        _num_headers: usize,
        _end_of_stream: bool,
    ) -> HostAction {
        // A local reply passes through here too: it carries its own headers (no entry here).
        let headers = self
            .response_headers
            .take()
            .or_else(|| calls::headers_for(&self.calls, self.id));
        for (name, value) in headers.iter().flatten() {
            self.set_http_response_header(name, Some(value));
        }
        HostAction::Continue
    }
}
