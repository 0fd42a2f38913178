//! This worker's requests that wait for the rate limit service. Only the root context sends
//! calls — their answers must reach a context that outlives any one request — and one at a time
//! per client: a request of a client whose call is in flight waits for that call's answer (and
//! its lease). The root then decides each waiting request on its behalf (its context made the
//! effective one) and resumes it or answers it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::Context;

use super::io::{HostRequest, HostStore};
use super::Loaded;
use crate::engine::{Action, Progress, Waiting};
use crate::fleet::protocol::{METHOD, SERVICE};
use crate::fleet::Verdict;
use crate::response::Headers;

/// A client of a rule, as the service knows it.
type Client = (usize, u64);

struct Parked {
    loaded: Rc<Loaded>,
    waiting: Waiting,
}

#[derive(Default)]
pub struct Calls {
    /// Requests waiting, by HTTP context id.
    parked: HashMap<u32, Parked>,
    /// The requests waiting on each client's call, in arrival order.
    by_client: HashMap<Client, Vec<u32>>,
    /// Clients whose call the root is to send.
    to_send: Vec<Client>,
    /// Calls in flight, by token.
    in_flight: HashMap<u32, Client>,
    /// Response headers of requests the root resumed.
    headers: HashMap<u32, Headers>,
}

/// How a decision was carried out.
pub enum Carried {
    /// The request goes on, with these headers for its response.
    Continue(Option<Headers>),
    /// The filter answered it.
    Replied,
    /// It waits for the rate limit service.
    Parked,
}

/// Carries out `progress` for the request of context `id` (the effective context): answers it,
/// lets it go on, or parks it until the service answers (waking the root to send the call).
pub fn carry_out(
    calls: &Rc<RefCell<Calls>>,
    id: u32,
    loaded: &Rc<Loaded>,
    progress: Progress,
) -> Carried {
    let decision = match progress {
        Progress::Done(decision) => decision,
        Progress::Waiting(waiting) => {
            park(calls, id, loaded, waiting);
            return Carried::Parked;
        }
    };
    loaded.record(&decision.events);
    match decision.action {
        Action::Pass => Carried::Continue(None),
        Action::Allow(headers) => Carried::Continue((!headers.is_empty()).then_some(headers)),
        Action::Refuse(reply) => {
            let headers: Vec<(&str, &str)> = reply
                .headers
                .iter()
                .map(|(k, v)| (&**k, v.as_str()))
                .collect();
            let _ = proxy_wasm::hostcalls::send_http_response(
                reply.status,
                headers,
                Some(reply.body.as_bytes()),
            );
            Carried::Replied
        }
    }
}

fn park(calls: &Rc<RefCell<Calls>>, id: u32, loaded: &Rc<Loaded>, waiting: Waiting) {
    let client = waiting.client();
    let sends = waiting.call.is_some();
    let mut c = calls.borrow_mut();
    c.by_client.entry(client).or_default().push(id);
    c.parked.insert(
        id,
        Parked {
            loaded: loaded.clone(),
            waiting,
        },
    );
    if sends {
        c.to_send.push(client);
        if let Some(queue) = loaded.queue {
            let _ = proxy_wasm::hostcalls::enqueue_shared_queue(queue, Some(b"call"));
        }
    }
}

/// Sends the calls parked requests wait for (the root context only).
pub fn send(calls: &Rc<RefCell<Calls>>, root: &dyn Context, root_id: u32, now: u64) {
    loop {
        // A call belongs to the effective context in Envoy: the root's, which outlives requests.
        let _ = proxy_wasm::hostcalls::set_effective_context(root_id);
        let Some(client) = calls.borrow_mut().to_send.pop() else {
            return;
        };
        let Some((call, loaded)) = leader_call(calls, client) else {
            continue;
        };
        let Some(service) = loaded.filter.fleet_service() else {
            continue;
        };
        let sent = root.dispatch_grpc_call(
            &service.cluster,
            SERVICE,
            METHOD,
            Vec::new(),
            Some(&call),
            Duration::from_millis(service.timeout_ms),
        );
        match sent {
            Ok(token) => {
                calls.borrow_mut().in_flight.insert(token, client);
            }
            Err(status) => {
                log::warn!("ratelimit: cannot call the rate limit service: {status:?}");
                settle(calls, client, Verdict::Failed, now);
            }
        }
    }
}

/// The encoded call of the first request waiting on `client` that has one. It asks for the
/// configured lease, not for every waiting request: the engine's check-then-increment race grows
/// with the hits of the calls in flight, so the lease is the operator's choice.
fn leader_call(calls: &Rc<RefCell<Calls>>, client: Client) -> Option<(Vec<u8>, Rc<Loaded>)> {
    let c = calls.borrow();
    let waiting = c.by_client.get(&client)?;
    let parked = waiting
        .iter()
        .filter_map(|id| c.parked.get(id))
        .find(|p| p.waiting.call.is_some())?;
    let call = parked.waiting.call.as_ref()?.encode();
    Some((call, parked.loaded.clone()))
}

/// The answer to call `token` (the root context).
pub fn answered(calls: &Rc<RefCell<Calls>>, token: u32, verdict: Verdict, now: u64) {
    let client = calls.borrow_mut().in_flight.remove(&token);
    if let Some(client) = client {
        settle(calls, client, verdict, now);
    }
}

/// Decides every request waiting on `client`'s call, on its behalf.
fn settle(calls: &Rc<RefCell<Calls>>, client: Client, verdict: Verdict, now: u64) {
    let waiting = calls
        .borrow_mut()
        .by_client
        .remove(&client)
        .unwrap_or_default();
    for id in waiting {
        let Some(parked) = calls.borrow_mut().parked.remove(&id) else {
            continue;
        };
        if proxy_wasm::hostcalls::set_effective_context(id).is_err() {
            continue; // the request is gone
        }
        let progress = {
            let mut memory = parked.loaded.memory.borrow_mut();
            let filter = &parked.loaded.filter;
            parked
                .waiting
                .resume(filter, &HostStore, &mut memory, &HostRequest, verdict, now)
        };
        match carry_out(calls, id, &parked.loaded, progress) {
            Carried::Continue(headers) => {
                if let Some(headers) = headers {
                    calls.borrow_mut().headers.insert(id, headers);
                }
                let _ = proxy_wasm::hostcalls::resume_http_request();
            }
            Carried::Replied | Carried::Parked => {}
        }
    }
}

/// The response headers the root decided for request `id`.
pub fn headers_for(calls: &Rc<RefCell<Calls>>, id: u32) -> Option<Headers> {
    let mut c = calls.borrow_mut();
    if c.headers.is_empty() {
        return None;
    }
    c.headers.remove(&id)
}

/// Request `id` is over: nothing of it is kept.
pub fn forget(calls: &Rc<RefCell<Calls>>, id: u32) {
    let mut c = calls.borrow_mut();
    if c.parked.is_empty() && c.headers.is_empty() {
        return;
    }
    c.parked.remove(&id);
    c.headers.remove(&id);
}
