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

use super::pipeline::{Decision, Progress, Side, SideCall, Waiting};
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
    /// Hands the service's `verdict` on a side call to the engine ([`super::side_answered`]
    /// with the memory of `ctx`'s configuration) and records its events.
    fn side_answered(&mut self, ctx: &Ctx, side: &SideCall, verdict: Verdict);
}

/// A call waiting to be sent: the one a parked request leads, or a side call.
enum Outgoing<Ctx> {
    Lead(Client),
    Side(SideCall, Ctx),
}

pub struct Waitlist<Id, Ctx> {
    inner: RefCell<Inner<Id, Ctx>>,
}

struct Inner<Id, Ctx> {
    /// Requests waiting, by id.
    parked: HashMap<Id, (Ctx, Waiting)>,
    /// The requests waiting on each client's call, in arrival order.
    by_client: HashMap<Client, Vec<Id>>,
    /// Calls to be sent.
    to_send: Vec<Outgoing<Ctx>>,
    /// Calls in flight, by token: whose, and the side call it is, if one.
    in_flight: HashMap<u64, (Client, Option<(SideCall, Ctx)>)>,
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
            inner.to_send.push(Outgoing::Lead(client));
        }
        leads
    }

    /// Queues a call no request waits for (the host's sender is to run).
    pub fn side(&self, call: SideCall, ctx: Ctx) {
        self.inner
            .borrow_mut()
            .to_send
            .push(Outgoing::Side(call, ctx));
    }

    /// Calls in flight.
    pub fn in_flight(&self) -> usize {
        self.inner.borrow().in_flight.len()
    }

    /// Sends the calls queued; a call that cannot be sent fails (its waiters, its side call).
    pub fn send(&self, host: &mut impl CallHost<Id, Ctx>) {
        while let Some((call, side)) = self.next_call() {
            match host.send(&call) {
                Some(token) => {
                    let flight = (call.client, side);
                    self.inner.borrow_mut().in_flight.insert(token, flight);
                }
                None => self.answer(call.client, side, Verdict::Failed, host),
            }
        }
    }

    /// The next call to send: a side call, or the encoded call of the first request waiting on
    /// a client that leads one. It asks for what the engine sized, not for every waiting
    /// request: the engine's check-then-increment race grows with the hits of calls in flight.
    #[allow(clippy::type_complexity)]
    fn next_call(&self) -> Option<(Call<Ctx>, Option<(SideCall, Ctx)>)> {
        let mut inner = self.inner.borrow_mut();
        while let Some(outgoing) = inner.to_send.pop() {
            let client = match outgoing {
                Outgoing::Side(side, ctx) => {
                    let message = side.encode();
                    let call = Call {
                        client: side.client(),
                        message,
                        ctx: ctx.clone(),
                    };
                    return Some((call, Some((side, ctx))));
                }
                Outgoing::Lead(client) => client,
            };
            let leader = inner.by_client.get(&client).and_then(|ids| {
                ids.iter()
                    .filter_map(|id| inner.parked.get(id))
                    .find_map(|(ctx, w)| Some((w.call.as_ref()?.encode(), ctx.clone())))
            });
            if let Some((message, ctx)) = leader {
                let call = Call {
                    client,
                    message,
                    ctx,
                };
                return Some((call, None));
            }
        }
        None
    }

    /// The service answered call `token` (or it failed): resumes every request that waited on it.
    pub fn answered(&self, token: u64, verdict: Verdict, host: &mut impl CallHost<Id, Ctx>) {
        let flight = self.inner.borrow_mut().in_flight.remove(&token);
        if let Some((client, side)) = flight {
            self.answer(client, side, verdict, host);
        }
    }

    /// A side call's answer goes to the engine first; then the requests waiting on the
    /// client's call (a lead call, or a refill) are resumed. Nobody waits on a report.
    fn answer(
        &self,
        client: Client,
        side: Option<(SideCall, Ctx)>,
        verdict: Verdict,
        host: &mut impl CallHost<Id, Ctx>,
    ) {
        if let Some((side, ctx)) = side {
            host.side_answered(&ctx, &side, verdict);
            if side.kind() == Side::Report {
                return;
            }
        }
        self.resume(client, verdict, host);
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

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::engine::memory::Memory;
    use crate::engine::pipeline::{begin, reports, side_answered};
    use crate::engine::Filter;
    use crate::store::MemoryStore;
    use crate::testing::FakeRequest;

    const T0: u64 = 1_700_000_000_000;

    struct Ctx {
        filter: Filter,
        memory: RefCell<Memory>,
    }

    /// A host whose service answers only when told: calls are kept, by token.
    #[derive(Default)]
    struct Host {
        sent: Vec<Vec<u8>>,
        refuse_sends: bool,
        side_answers: Vec<Verdict>,
        resumed: Vec<u32>,
        done: Vec<(u32, Decision)>,
    }

    impl CallHost<u32, Rc<Ctx>> for Host {
        fn send(&mut self, call: &Call<Rc<Ctx>>) -> Option<u64> {
            self.sent.push(call.message.clone());
            (!self.refuse_sends).then_some(self.sent.len() as u64)
        }
        fn resume(&mut self, id: u32, ctx: &Rc<Ctx>, w: Waiting, v: Verdict) -> Option<Progress> {
            self.resumed.push(id);
            let (store, request) = (MemoryStore::new(), request());
            let memory = &mut ctx.memory.borrow_mut();
            Some(w.resume(&ctx.filter, &store, memory, &request, v, T0))
        }
        fn carry_out(&mut self, id: u32, _: &Rc<Ctx>, decision: Decision) {
            self.done.push((id, decision));
        }
        fn side_answered(&mut self, ctx: &Rc<Ctx>, side: &SideCall, verdict: Verdict) {
            self.side_answers.push(verdict);
            side_answered(&ctx.filter, &mut ctx.memory.borrow_mut(), side, verdict, T0);
        }
    }

    fn request() -> FakeRequest {
        FakeRequest::with(&[(":path", "/api"), (":method", "GET"), ("x-api-key", "k")])
    }

    fn ctx(fleet: &str) -> Rc<Ctx> {
        let json = format!(
            r#"{{"fleet": {{"cluster": "rls", {fleet}}}, "rules": [{{"name": "api", "key": [{{"header": "x-api-key"}}],
               "limits": [{{"requests": 100, "window": "1m", "fleet": true}}]}}]}}"#
        );
        let filter = Filter::load(json.as_bytes()).unwrap();
        Rc::new(Ctx {
            filter,
            memory: RefCell::default(),
        })
    }

    fn begin_on(ctx: &Ctx, store: &MemoryStore) -> Progress {
        begin(
            &ctx.filter,
            store,
            &mut ctx.memory.borrow_mut(),
            &request(),
            T0,
        )
    }

    #[test]
    fn a_refill_is_sent_and_requests_that_ran_out_wait_for_it() {
        let (ctx, store) = (ctx(r#""lease": 2"#), MemoryStore::new());
        let (list, mut host) = (Waitlist::<u32, Rc<Ctx>>::default(), Host::default());
        let Progress::Waiting(first) = begin_on(&ctx, &store) else {
            panic!()
        };
        assert!(list.park(1, ctx.clone(), first));
        list.send(&mut host);
        list.answered(1, Verdict::Admitted, &mut host);
        assert!(host.done.pop().is_some());
        // The last hit of the lease goes, and the lease is refilled ahead.
        let Progress::Done(decision) = begin_on(&ctx, &store) else {
            panic!()
        };
        assert_eq!(decision.side_calls.len(), 1, "0 left of 2: refilled ahead");
        list.side(decision.side_calls[0].clone(), ctx.clone());
        list.send(&mut host);
        assert_eq!((host.sent.len(), list.in_flight()), (2, 1));
        // The next request waits for the refill in flight.
        let Progress::Waiting(joiner) = begin_on(&ctx, &store) else {
            panic!("out of lease, a refill in flight")
        };
        assert!(!list.park(7, ctx.clone(), joiner), "it leads no call");
        list.answered(2, Verdict::Admitted, &mut host);
        assert_eq!(host.side_answers, [Verdict::Admitted]);
        assert_eq!(host.resumed, [1, 7]);
        let (id, decision) = host.done.pop().unwrap();
        assert!(id == 7 && matches!(decision.action, crate::engine::Action::Allow(_)));
    }

    #[test]
    fn nobody_waits_on_a_report_and_a_call_not_sent_fails() {
        let (ctx, store) = (ctx(r#""counting": "batched""#), MemoryStore::new());
        let (list, mut host) = (Waitlist::<u32, Rc<Ctx>>::default(), Host::default());
        assert!(matches!(begin_on(&ctx, &store), Progress::Done(_)));
        let due = reports(&ctx.filter, &mut ctx.memory.borrow_mut(), T0 + 1_000, 8);
        list.side(due[0].clone(), ctx.clone());
        host.refuse_sends = true;
        list.send(&mut host);
        assert_eq!(host.side_answers, [Verdict::Failed]);
        assert!(host.resumed.is_empty() && list.in_flight() == 0);
        // Its hits are gone (on_error: local); the client's next hits are reported afresh.
        assert!(matches!(begin_on(&ctx, &store), Progress::Done(_)));
        let due = reports(&ctx.filter, &mut ctx.memory.borrow_mut(), T0 + 1_000, 8);
        assert_eq!(due.len(), 1);
    }
}
