//! What a request costs in each of a rule's limits, and what settles it when the stream ends.
//!
//! At the request, each limit holds a cost: the rule's `cost` (1 by default), or the limit's own
//! (`request.rs`: fixed, or a whole number the request carries). When the stream ends, the
//! response settles it (`response.rs`, `counted.rs`): a response the limit does not count gives
//! the hold back; a limit that charges what the response says it cost (a header, or metadata
//! such as an LLM's `usage.total_tokens`) counts that instead of the hold. A rule whose limits
//! hold the same cost and settle nothing keeps a single number per request and no ticket.

mod counted;
mod request;
mod response;

use smallvec::SmallVec;

pub use counted::{Counted, Responses};
pub use request::Cost;
pub use response::{Response, ResponseCost, ResponseFacts, ResponseView};

use crate::config::{Errors, LimitCostConfig, Report, RuleConfig};
use crate::limiter::Costs;

/// What a request costs in each limit: the same in all, or one each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Amounts {
    All(u64),
    Each(SmallVec<[u64; 4]>),
}

impl Amounts {
    /// As the limiter takes them.
    pub fn costs(&self) -> Costs<'_> {
        match self {
            Amounts::All(cost) => Costs::All(*cost),
            Amounts::Each(costs) => Costs::Each(costs),
        }
    }

    /// The cost in limit `limit`.
    pub fn of(&self, limit: usize) -> u64 {
        self.costs().of(limit)
    }

    /// Whether the request costs 1 in every limit.
    pub fn is_one(&self) -> bool {
        self.costs().is_one()
    }
}

/// One limit's cost and how its responses settle it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitCost {
    /// What the request holds while it is in flight.
    pub held: Cost,
    /// What the response says the request cost, which replaces the hold.
    pub actual: Option<ResponseCost>,
    /// Which responses keep the charge.
    pub counted: Counted,
}

impl LimitCost {
    fn settles(&self) -> bool {
        self.actual.is_some() || !self.counted.all()
    }

    /// What a request that held `held` finally costs, given its response (`None`: the response
    /// does not count).
    fn settled(&self, held: u64, response: &Response) -> Option<u64> {
        if !self.counted.keeps(response) {
            return None;
        }
        let actual = self.actual.as_ref().and_then(|a| a.of(response));
        Some(actual.unwrap_or(held))
    }
}

/// What a rule's requests cost, limit by limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCosts {
    /// The rule's `cost`: what a limit without its own holds.
    rule: Cost,
    /// Each limit's, when one has its own cost or any settles; else empty.
    limits: Vec<LimitCost>,
    /// Every limit holds the rule's cost.
    uniform: bool,
    /// Some response settles something.
    settles: bool,
}

/// How one rule's hold settles: per limit, what goes back (where it was counted) and what is
/// counted on top (now).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settlement {
    pub back: SmallVec<[u64; 4]>,
    pub more: SmallVec<[u64; 4]>,
    /// Some limit does not count the response: its hold went back whole.
    pub uncounted: bool,
}

impl Settlement {
    pub fn is_empty(&self) -> bool {
        self.back.iter().chain(&self.more).all(|&n| n == 0)
    }
}

impl RuleCosts {
    /// The costs of rule `rule` at `at`.
    pub fn compile(rule: &RuleConfig, at: &str, errors: &mut Errors) -> Self {
        let shared = Cost::compile(rule.cost.as_ref(), &format!("{at}.cost"), errors);
        let counted = Counted {
            only: responses(&rule.counted, &format!("{at}.counted"), errors),
            except: responses(&rule.given_back, &format!("{at}.given_back"), errors),
        };
        let limits: Vec<LimitCost> = (rule.limits.iter().enumerate())
            .map(|(j, limit)| {
                let at = format!("{at}.limits[{j}]");
                limit::compile(limit, (&shared, &counted), &at, errors)
            })
            .collect();
        limit::check_fleet(rule, at, errors);
        let uniform = limits.iter().all(|l| l.held == shared);
        let settles = limits.iter().any(LimitCost::settles);
        let needed = !uniform || settles;
        RuleCosts {
            rule: shared,
            limits: if needed { limits } else { Vec::new() },
            uniform,
            settles,
        }
    }

    /// What `request` holds in each limit.
    pub fn of(&self, request: &crate::request::Request) -> Amounts {
        if self.uniform {
            return Amounts::All(self.rule.of(request));
        }
        Amounts::Each(self.limits.iter().map(|l| l.held.of(request)).collect())
    }

    /// What the request costs the rule's fleet-wide limits (which hold the rule's cost: a limit
    /// with a cost of its own cannot be fleet-wide).
    pub fn fleet_cost(&self, amounts: &Amounts) -> u64 {
        match amounts {
            Amounts::All(cost) => *cost,
            Amounts::Each(each) => (self.limits.iter().zip(each))
                .find(|(l, _)| l.held == self.rule)
                .map_or(1, |(_, &cost)| cost),
        }
    }

    /// Whether any response settles anything (else a request holds nothing to settle).
    pub fn settles(&self) -> bool {
        self.settles
    }

    /// How `held` settles in each limit, given the response.
    pub fn settle(&self, held: &Amounts, response: &Response) -> Settlement {
        let mut settlement = Settlement::default();
        for (i, limit) in self.limits.iter().enumerate() {
            let held = held.of(i);
            let cost = limit.settled(held, response).unwrap_or_else(|| {
                settlement.uncounted = true;
                0
            });
            settlement.back.push(held.saturating_sub(cost));
            settlement.more.push(cost.saturating_sub(held));
        }
        settlement
    }

    /// The request headers the costs may read.
    pub fn headers_read(&self, out: &mut Vec<String>) {
        self.rule.headers_read(out);
        for limit in &self.limits {
            limit.held.headers_read(out);
        }
    }

    /// What a request costs in limit `limit` and how it settles, in words (for `explain`).
    #[cfg(feature = "cli")]
    pub fn describe(&self, limit: usize) -> String {
        let Some(own) = self.limits.get(limit) else {
            return format!("costs {}", self.rule.describe());
        };
        let mut text = match &own.actual {
            None => format!("costs {}", own.held.describe()),
            Some(actual) => format!("holds {}, then {}", own.held.describe(), actual.describe()),
        };
        if let Some(only) = &own.counted.only {
            text += &format!("; counted only for {}", only.describe());
        }
        if let Some(except) = &own.counted.except {
            text += &format!("; given back for {}", except.describe());
        }
        text
    }
}

/// A list of responses, when given.
fn responses(
    list: &Option<Vec<crate::config::ResponseMatch>>,
    at: &str,
    errors: &mut Errors,
) -> Option<Responses> {
    list.as_ref().map(|l| Responses::compile(l, at, errors))
}

mod limit {
    //! One limit's own `cost`, `counted` and `given_back`.

    use super::*;
    use crate::config::{CostConfig, LimitConfig};

    pub fn compile(
        limit: &LimitConfig,
        (shared, counted): (&Cost, &Counted),
        at: &str,
        errors: &mut Errors,
    ) -> LimitCost {
        let only = responses(&limit.counted, &format!("{at}.counted"), errors);
        let except = responses(&limit.given_back, &format!("{at}.given_back"), errors);
        let counted = Counted {
            only: only.or_else(|| counted.only.clone()),
            except: except.or_else(|| counted.except.clone()),
        };
        let at = format!("{at}.cost");
        let (held, actual) = match &limit.cost {
            None => (shared.clone(), None),
            Some(LimitCostConfig::Fixed(n)) => {
                let fixed = CostConfig::Fixed(*n);
                (Cost::compile(Some(&fixed), &at, errors), None)
            }
            Some(LimitCostConfig::Parts(parts)) => {
                let actual = (parts.response.as_ref())
                    .and_then(|r| ResponseCost::compile(r, &format!("{at}.response"), errors));
                let min = u64::from(parts.response.is_none());
                let held = match &parts.request {
                    None => shared.clone(),
                    Some(c) => Cost::compile_from(Some(c), min, &format!("{at}.request"), errors),
                };
                (held, actual)
            }
        };
        LimitCost {
            held,
            actual,
            counted,
        }
    }

    /// A fleet-wide limit is charged by the rate limit service when the request arrives, and
    /// the service can neither give hits back nor take a cost per limit: it holds the rule's
    /// cost and settles nothing. Each error is named where it was written.
    pub fn check_fleet(rule: &RuleConfig, at: &str, errors: &mut Errors) {
        const COST: &str = "a fleet-wide limit takes the rule's cost: the rate limit service counts one cost per request for all of a rule's limits";
        const COUNTED: &str = "a fleet-wide limit counts every response: the rate limit service counts hits when the request arrives and cannot give them back (count responses in local limits; see the book's \"Counting responses\" chapter)";
        let fleet = |l: &LimitConfig| rule.fleet || l.fleet;
        if rule.limits.iter().any(fleet) {
            for (field, given) in [("counted", &rule.counted), ("given_back", &rule.given_back)] {
                if given.is_some() {
                    errors.add(format!("{at}.{field}"), COUNTED);
                }
            }
        }
        for (j, limit) in rule.limits.iter().enumerate().filter(|(_, l)| fleet(l)) {
            let at = format!("{at}.limits[{j}]");
            if limit.cost.is_some() {
                errors.add(format!("{at}.cost"), COST);
            }
            for (field, given) in [
                ("counted", &limit.counted),
                ("given_back", &limit.given_back),
            ] {
                if given.is_some() {
                    errors.add(format!("{at}.{field}"), COUNTED);
                }
            }
        }
    }
}
