//! One request, start to finish, in plain Rust: select the rule, the client's key and plan
//! (`select`) → charge each rule that applies (`charge`; the rate limit service after the local
//! tier, `fleet`) → give back what earlier rules took if a later one stops (`stop`) → render
//! once (`render`, where shadow mode applies). Each step returns what came out; this file only
//! sequences them. The host carries out the decision, and settles the request's ticket when its
//! stream ends (`super::settle`).
//!
//! The evaluation owns its state (indices, not borrows), so a charge that must wait (a call to a
//! rate limit service) can stop it and resume it later.

mod charge;
mod decision;
mod fleet;
mod render;
mod select;
mod side;
mod stop;
#[cfg(test)]
mod tests;

pub use decision::{Action, Decision, RequestStatus};
pub use select::Selection;
pub use side::{reports, side_answered, Side, SideCall};

use smallvec::SmallVec;

use super::filter::Filter;
use super::ledger::Charge;
use super::log::RefusalNote;
use super::memory::Memory;
use super::settle::Ticket;
use super::stats::{Event, Events};
use crate::fleet::{FleetCall, Verdict};
use crate::hash::KeyKind;
use crate::request::{Request, RequestView};
use crate::store::SharedStore;
use fleet::Asking;
use select::Queue;
use stop::Stop;

/// Decides one request with the local tier alone: fleet-wide limits are counted locally and the
/// service is taken to agree (the native tools; the hosts use [`begin`]).
pub fn decide(
    filter: &Filter,
    store: &dyn SharedStore,
    view: &dyn RequestView,
    now_ms: u64,
) -> Decision {
    let mut memory = Memory::with_fleet_capacity(1);
    let mut progress = begin(filter, store, &mut memory, view, now_ms);
    loop {
        match progress {
            Progress::Done(decision) => return decision,
            Progress::Waiting(waiting) => {
                let verdict = Verdict::Admitted;
                progress = waiting.resume(filter, store, &mut memory, view, verdict, now_ms);
            }
        }
    }
}

/// A decision, or a call to the rate limit service the decision waits for.
#[allow(clippy::large_enum_variant)] // a decision is the common case: kept unboxed
pub enum Progress {
    Done(Decision),
    Waiting(Waiting),
}

/// An evaluation stopped at a fleet-wide limit: send `call` (or, when `None`, wait for the call
/// in flight for the same [`Waiting::client`]), then [`Waiting::resume`] with the answer (the
/// request's attributes must still be readable).
pub struct Waiting {
    evaluation: Box<Evaluation>,
    pub call: Option<FleetCall>,
}

/// Starts deciding one request: `memory` is this worker's memory of the service's answers and
/// of its refusals still true.
pub fn begin(
    filter: &Filter,
    store: &dyn SharedStore,
    memory: &mut Memory,
    view: &dyn RequestView,
    now_ms: u64,
) -> Progress {
    let request = filter.request(view);
    let progress = match Evaluation::start(filter, &request) {
        None => Progress::Done(Decision::pass()),
        Some(evaluation) => evaluation.run(filter, store, memory, &request, now_ms),
    };
    // A test build crashes here on demand: after the decision, its hits counted.
    #[cfg(feature = "trap-on-demand")]
    super::trap::on_demand(view);
    progress
}

impl Waiting {
    /// Whose call it is: (rule, client as the service knows it). One call in flight per client.
    pub fn client(&self) -> (usize, u64) {
        self.evaluation
            .asking
            .as_ref()
            .map_or((0, 0), |a| (a.rule, a.client))
    }

    /// What this request costs the client's fleet-wide limits.
    pub fn cost(&self) -> u64 {
        self.evaluation.asking.as_ref().map_or(0, |a| a.cost)
    }

    /// Goes on with the service's verdict on [`Waiting::call`] (or on the call waited for).
    pub fn resume(
        mut self,
        filter: &Filter,
        store: &dyn SharedStore,
        memory: &mut Memory,
        view: &dyn RequestView,
        verdict: Verdict,
        now_ms: u64,
    ) -> Progress {
        let request = filter.request(view);
        if let Some(asking) = self.evaluation.asking.take() {
            let plan = self.evaluation.selection.plan;
            let fleet = &mut memory.fleet;
            let evaluation = &mut *self.evaluation;
            let out = (&mut evaluation.events, &mut evaluation.side);
            let step = fleet::answered(filter, fleet, asking, (verdict, plan), now_ms, out);
            self.evaluation.follow(filter, store, step);
        }
        (*self.evaluation).run(filter, store, memory, &request, now_ms)
    }
}

struct Evaluation {
    selection: Selection,
    /// Rules still to charge, last first: the request's rule, then those it names in `also`.
    queue: Queue,
    /// The request's rule's key, found with the plan, until its charge takes it.
    first_key: Option<Option<(KeyKind, Vec<u8>)>>,
    charges: SmallVec<[Charge; 1]>,
    stop: Option<Stop>,
    asking: Option<Asking>,
    /// Calls no request waits for, for the host to send.
    side: Vec<SideCall>,
    /// The latest clock a charge used (never before a client's last admission).
    clock: u64,
    events: Events,
    refusal: Option<RefusalNote>,
    /// A refusal was let through (a rule in shadow mode, a candidate limit).
    shadowed: bool,
}

impl Evaluation {
    fn start(filter: &Filter, request: &Request) -> Option<Self> {
        let mut selection = Selection::of(filter, request)?;
        Some(Evaluation {
            queue: selection.queue(filter),
            first_key: Some(selection.key.take()),
            selection,
            charges: SmallVec::new(),
            stop: None,
            asking: None,
            side: Vec::new(),
            clock: 0,
            events: Events::new(),
            refusal: None,
            shadowed: false,
        })
    }

    /// Charges the rules still queued, until one stops the evaluation or waits for the service.
    fn run(
        mut self,
        filter: &Filter,
        store: &dyn SharedStore,
        memory: &mut Memory,
        request: &Request,
        now: u64,
    ) -> Progress {
        self.clock = self.clock.max(now);
        while self.stop.is_none() && self.asking.is_none() {
            let Some(rule) = self.queue.pop() else { break };
            self.charge_rule(filter, store, memory, request, rule, now);
        }
        match self.asking.as_ref() {
            Some(asking) => Progress::Waiting(Waiting {
                call: asking.call.clone(),
                evaluation: Box::new(self),
            }),
            None => Progress::Done(self.finish(filter, store, request)),
        }
    }

    /// Charges one rule, records what came out, and asks the fleet tier when it was admitted.
    fn charge_rule(
        &mut self,
        filter: &Filter,
        store: &dyn SharedStore,
        memory: &mut Memory,
        request: &Request,
        rule: usize,
        now: u64,
    ) {
        let Some(limited) = filter.limited(rule) else {
            return;
        };
        let key = match self.first_key.take() {
            Some(key) => key,
            None => limited.key_of(request),
        };
        let plan = self.selection.plan;
        let target = charge::Target {
            rule,
            limited,
            plan,
            key,
        };
        let refusals = &mut memory.refusals;
        let events = &mut self.events;
        match charge::charge(filter, store, refusals, target, request, now, events) {
            charge::Step::Skipped => {}
            charge::Step::Stopped { stop, at_ms, note } => {
                self.clock = self.clock.max(at_ms);
                self.stop = Some(stop);
                self.refusal = note;
            }
            charge::Step::Shadowed { charge, note } => {
                self.shadow(Some(note));
                if let Some(charge) = charge {
                    self.clock = self.clock.max(charge.at_ms);
                    self.charges.push(charge);
                }
            }
            charge::Step::Admitted {
                charge,
                fleet_client,
                candidate,
            } => {
                if candidate.is_some() {
                    self.shadow(candidate);
                }
                let cost = limited.costs.fleet_cost(&charge.costs);
                self.clock = self.clock.max(charge.at_ms);
                self.charges.push(charge);
                let fleet = &mut memory.fleet;
                let (charged, out) = ((rule, limited, plan), (&mut self.events, &mut self.side));
                let step = fleet::ask(filter, fleet, charged, (fleet_client, cost), now, out);
                self.follow(filter, store, step);
            }
        }
    }

    /// A refusal let through: noted for the log (the first of the request's).
    fn shadow(&mut self, note: Option<RefusalNote>) {
        self.shadowed = true;
        self.refusal = self.refusal.or(note);
    }

    /// Goes on as the fleet tier says.
    fn follow(&mut self, filter: &Filter, store: &dyn SharedStore, step: fleet::Step) {
        match step {
            fleet::Step::Done => {}
            fleet::Step::Ask(asking) => self.asking = Some(asking),
            fleet::Step::GiveBack => {
                // Let it through counted nowhere: give back the local count.
                if let Some(charge) = self.charges.last_mut() {
                    undo(filter, store, charge);
                }
            }
            fleet::Step::Failed => self.stop = Some(Stop::FleetFailed),
            fleet::Step::Refused { rule, retry_at_ms } => {
                let last_is_rule = self.charges.last().is_some_and(|c| c.rule == rule);
                let refused = if last_is_rule {
                    self.charges.pop()
                } else {
                    None
                };
                self.stop = Some(match refused {
                    Some(mut charge) => {
                        undo(filter, store, &mut charge);
                        fleet::refusal(filter, charge, retry_at_ms)
                    }
                    None => Stop::FleetFailed,
                });
            }
        }
    }

    /// Gives back what was taken if charging stopped, renders the decision, and makes the
    /// ticket of what the request holds.
    fn finish(mut self, filter: &Filter, store: &dyn SharedStore, request: &Request) -> Decision {
        if self.stop.is_some() {
            // A refused request consumes no quota.
            for charge in &mut self.charges {
                undo(filter, store, charge);
            }
        }
        let decided = render::Decided {
            rule: self.selection.rule,
            plan: self.selection.plan,
            stop: self.stop,
            charges: &self.charges,
            clock: self.clock,
            shadowed: self.shadowed,
        };
        let (action, stat, status) = render::render(filter, decided, request);
        if let Some(stat) = stat {
            let rule = self.selection.rule;
            self.events.push(Event::Rule { rule, stat });
        }
        Decision {
            action,
            events: self.events,
            ticket: ticket(filter, &self.charges),
            refusal: self.refusal,
            status,
            side_calls: self.side,
        }
    }
}

fn undo(filter: &Filter, store: &dyn SharedStore, charge: &mut Charge) {
    if let Some(limited) = filter.limited(charge.rule) {
        charge.undo(limited, store, filter.store.cas_attempts);
    }
}

/// What the request holds to settle: the charges that stand, of the rules that settle.
fn ticket(filter: &Filter, charges: &[Charge]) -> Ticket {
    let mut ticket = Ticket::default();
    for charge in charges.iter().filter(|c| c.stands()) {
        if filter
            .limited(charge.rule)
            .is_some_and(|l| l.costs.settles())
        {
            let held = charge.costs.clone();
            ticket.hold(charge.rule, charge.client, held, charge.at_ms);
        }
    }
    ticket
}
