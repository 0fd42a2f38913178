//! One worker's requests that wait for the rate limit service, whatever the host. One call in
//! flight per client: the first request of a client that needs the service leads (its call is
//! sent), later ones join and wait for the same answer (and its lease). When the answer comes,
//! every waiting request is decided again on its behalf, in arrival order: one the answer covers
//! goes on or is answered, one it does not cover (the lease is spent) leads the next call.
//!
//! Generic over how a host names a request (`Id`) and what it keeps with it (`Ctx`: e.g. the
//! configuration the request began with, which a reload must not pull from under it). Every
//! method takes `&self` and holds no borrow while the host is called: a host call may run other
//! callbacks of the same worker, which may use the list.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;

use super::pipeline::{Decision, Progress, Waiting};
use super::settle::Ticket;
use crate::fleet::Verdict;
use crate::response::Headers;

/// A client of a rule, as the service knows it.
pub type Client = (usize, u64);

/// A call to send: the client's encoded `RateLimitRequest`, and the context of the request that
/// leads it.
pub struct Call<Ctx> {
    pub client: Client,
    pub message: Vec<u8>,
    pub ctx: Ctx,
}

/// What a host does for the waitlist.
pub trait CallHost<Id, Ctx> {
    /// Sends `call` to the service; the call's token, or `None` when it cannot be sent.
    fn send(&mut self, call: &Call<Ctx>) -> Option<u64>;
    /// Decides request `id` again with the service's `verdict` (the host makes it the current
    /// request and calls [`Waiting::resume`]); `None` when the request is gone.
    fn resume(&mut self, id: Id, ctx: &Ctx, waiting: Waiting, verdict: Verdict)
        -> Option<Progress>;
    /// Carries out a decision made on request `id`'s behalf: answers it, or lets it go on (with
    /// headers and a ticket kept for it: [`Waitlist::keep`]).
    fn carry_out(&mut self, id: Id, ctx: &Ctx, decision: Decision);
}

pub struct Waitlist<Id, Ctx> {
    inner: RefCell<Inner<Id, Ctx>>,
}

struct Inner<Id, Ctx> {
    /// Requests waiting, by id.
    parked: HashMap<Id, (Ctx, Waiting)>,
    /// The requests waiting on each client's call, in arrival order.
    by_client: HashMap<Client, Vec<Id>>,
    /// Clients whose call is to be sent.
    to_send: Vec<Client>,
    /// Calls in flight, by token.
    in_flight: HashMap<u64, Client>,
    /// What was decided for requests let go on, until their response collects it.
    kept: HashMap<Id, (Headers, Ticket)>,
}

impl<Id, Ctx> Default for Waitlist<Id, Ctx> {
    fn default() -> Self {
        Waitlist {
            inner: RefCell::new(Inner {
                parked: HashMap::new(),
                by_client: HashMap::new(),
                to_send: Vec::new(),
                in_flight: HashMap::new(),
                kept: HashMap::new(),
            }),
        }
    }
}

impl<Id: Copy + Eq + Hash, Ctx: Clone> Waitlist<Id, Ctx> {
    /// Parks request `id`; `true` when it leads a new call (the host's sender is to run).
    pub fn park(&self, id: Id, ctx: Ctx, waiting: Waiting) -> bool {
        let client = waiting.client();
        let leads = waiting.call.is_some();
        let mut inner = self.inner.borrow_mut();
        inner.by_client.entry(client).or_default().push(id);
        inner.parked.insert(id, (ctx, waiting));
        if leads {
            inner.to_send.push(client);
        }
        leads
    }

    /// Sends the calls parked requests lead; a call that cannot be sent fails its waiters.
    pub fn send(&self, host: &mut impl CallHost<Id, Ctx>) {
        while let Some(call) = self.next_call() {
            match host.send(&call) {
                Some(token) => {
                    self.inner.borrow_mut().in_flight.insert(token, call.client);
                }
                None => self.resume(call.client, Verdict::Failed, host),
            }
        }
    }

    /// The next call to send: the encoded call of the first request waiting on a client that
    /// leads one. It asks for the configured lease, not for every waiting request: the engine's
    /// check-then-increment race grows with the hits of the calls in flight.
    fn next_call(&self) -> Option<Call<Ctx>> {
        let mut inner = self.inner.borrow_mut();
        while let Some(client) = inner.to_send.pop() {
            let leader = inner.by_client.get(&client).and_then(|ids| {
                ids.iter()
                    .filter_map(|id| inner.parked.get(id))
                    .find_map(|(ctx, w)| Some((w.call.as_ref()?.encode(), ctx.clone())))
            });
            if let Some((message, ctx)) = leader {
                return Some(Call {
                    client,
                    message,
                    ctx,
                });
            }
        }
        None
    }

    /// The service answered call `token` (or it failed): resumes every request that waited on it.
    pub fn answered(&self, token: u64, verdict: Verdict, host: &mut impl CallHost<Id, Ctx>) {
        let client = self.inner.borrow_mut().in_flight.remove(&token);
        if let Some(client) = client {
            self.resume(client, verdict, host);
        }
    }

    /// Decides every request waiting on `client`'s call, on its behalf.
    fn resume(&self, client: Client, verdict: Verdict, host: &mut impl CallHost<Id, Ctx>) {
        let waiting = self.inner.borrow_mut().by_client.remove(&client);
        for id in waiting.unwrap_or_default() {
            let Some((ctx, waiting)) = self.inner.borrow_mut().parked.remove(&id) else {
                continue;
            };
            match host.resume(id, &ctx, waiting, verdict) {
                None => {}
                Some(Progress::Waiting(waiting)) => {
                    self.park(id, ctx, waiting);
                }
                Some(Progress::Done(decision)) => host.carry_out(id, &ctx, decision),
            }
        }
    }

    /// Keeps what was decided for request `id`, let go on, until its response collects it.
    pub fn keep(&self, id: Id, headers: Headers, ticket: Ticket) {
        self.inner.borrow_mut().kept.insert(id, (headers, ticket));
    }

    /// What was decided for request `id` on its behalf, if it was resumed.
    pub fn take_kept(&self, id: Id) -> Option<(Headers, Ticket)> {
        let mut inner = self.inner.borrow_mut();
        if inner.kept.is_empty() {
            return None;
        }
        inner.kept.remove(&id)
    }

    /// Request `id` is over: nothing of it is kept.
    pub fn forget(&self, id: Id) {
        let mut inner = self.inner.borrow_mut();
        if inner.parked.is_empty() && inner.kept.is_empty() {
            return;
        }
        inner.parked.remove(&id);
        inner.kept.remove(&id);
    }
}
