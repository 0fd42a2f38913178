//! What the root context does for the engine's waitlist of requests waiting for the rate limit
//! service: it sends the calls (a call belongs to the effective context in Envoy, and only the
//! root outlives the requests), and decides each waiting request on its behalf once the answer
//! is in (that request's context made the effective one), then resumes or answers it.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::Context;

use super::io::{HostRequest, HostStore};
use super::loaded::Carried;
use super::loaded::Loaded;
use crate::engine::{
    side_answered, Call, CallHost, Decision, FleetVerdict, Progress, SideCall, Waiting as Parked,
    Waitlist, FLEET_METHOD, FLEET_SERVICE,
};

/// This worker's requests waiting for the service, by HTTP context id, each with the
/// configuration it began with.
pub type Waiting = Waitlist<u32, Rc<Loaded>>;

pub struct RootCalls<'a> {
    pub root: &'a dyn Context,
    pub root_id: u32,
    pub waiting: &'a Waiting,
    pub now: u64,
}

impl CallHost<u32, Rc<Loaded>> for RootCalls<'_> {
    fn send(&mut self, call: &Call<Rc<Loaded>>) -> Option<u64> {
        let _ = proxy_wasm::hostcalls::set_effective_context(self.root_id);
        let service = call.ctx.filter.fleet_service()?;
        let sent = self.root.dispatch_grpc_call(
            &service.cluster,
            FLEET_SERVICE,
            FLEET_METHOD,
            Vec::new(),
            Some(&call.message),
            Duration::from_millis(service.timeout_ms),
        );
        sent.map(u64::from)
            .map_err(|status| {
                log::warn!("ratelimit: cannot call the rate limit service: {status:?}")
            })
            .ok()
    }

    fn resume(
        &mut self,
        id: u32,
        loaded: &Rc<Loaded>,
        parked: Parked,
        verdict: FleetVerdict,
    ) -> Option<Progress> {
        // The request is gone when its context cannot be made the effective one.
        proxy_wasm::hostcalls::set_effective_context(id).ok()?;
        let mut memory = loaded.memory.borrow_mut();
        let (store, view) = (&HostStore, &HostRequest);
        let progress = parked.resume(&loaded.filter, store, &mut memory, view, verdict, self.now);
        Some(progress)
    }

    fn side_answered(&mut self, loaded: &Rc<Loaded>, side: &SideCall, verdict: FleetVerdict) {
        let events = {
            let mut memory = loaded.memory.borrow_mut();
            side_answered(&loaded.filter, &mut memory, side, verdict, self.now)
        };
        loaded.record(&events);
    }

    fn carry_out(&mut self, id: u32, loaded: &Rc<Loaded>, mut decision: Decision) {
        for side in std::mem::take(&mut decision.side_calls) {
            self.waiting.side(side, loaded.clone());
        }
        if let Carried::Continue(headers, ticket) = loaded.carry_out(decision, self.now) {
            if !headers.is_empty() || !ticket.is_empty() {
                self.waiting.keep(id, headers, ticket);
            }
            let _ = proxy_wasm::hostcalls::resume_http_request();
        }
    }
}
