//! The first step: the request's rule, its client key and its plan.

use smallvec::SmallVec;

use crate::engine::filter::Filter;
use crate::hash::KeyKind;
use crate::request::Request;

/// The request's limited rule, its client key (if any source yields one) and its plan: where
/// every evaluation starts, and what `explain` shows.
pub struct Selection {
    pub rule: usize,
    pub key: Option<(KeyKind, Vec<u8>)>,
    pub plan: usize,
}

/// The rules a request charges, last first: its own rule, then those it names in `also`.
pub type Queue = SmallVec<[usize; 4]>;

impl Selection {
    /// `None` when the filter is off, no rule matches, or the rule is exempt.
    pub fn of(filter: &Filter, request: &Request) -> Option<Self> {
        if !filter.enabled {
            return None;
        }
        let rule = filter.routes.select(request)?;
        let limited = filter.limited(rule)?;
        let key = limited.key_of(request);
        let plans = &filter.plans;
        let named = plans.named_by(request);
        let plan_key = key
            .as_ref()
            .filter(|(kind, _)| *kind != KeyKind::Ambiguous)
            .map(|(_, k)| k.as_slice());
        let plan = plans.resolve(plan_key, named.as_deref());
        Some(Selection { rule, key, plan })
    }

    /// The rules to charge, last first.
    pub fn queue(&self, filter: &Filter) -> Queue {
        let also = filter.limited(self.rule).map_or(&[][..], |l| &l.also[..]);
        std::iter::once(self.rule)
            .chain(also.iter().copied())
            .rev()
            .collect()
    }
}
