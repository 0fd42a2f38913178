//! Rules from a system where every matching rule applies (Envoy Gateway's rules, envoyproxy/
//! ratelimit's descriptors), laid out for this filter's first-match rules: the most specific
//! first, each naming in `also` the rules every request it takes matches too. What first-match
//! cannot say (two rules that can both apply where neither's requests are all the other's) is a
//! finding, never silently dropped.

use serde_json::{json, Map, Value};

use super::Findings;

/// What a condition tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Header(String),
    Query(String),
    ClientIp,
    Path,
    Method,
    Host,
    Route,
}

/// How it tests it (`Exact` of a `Method`, `Host` or `Route` is one of a list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    Exact(Vec<String>),
    Prefix(String),
    Regex(String),
    Present,
    Cidrs(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub subject: Subject,
    pub test: Test,
    pub invert: bool,
}

impl Cond {
    pub fn new(subject: Subject, test: Test) -> Self {
        Cond {
            subject,
            test,
            invert: false,
        }
    }

    pub fn exact(subject: Subject, value: &str) -> Self {
        Cond::new(subject, Test::Exact(vec![value.to_string()]))
    }

    pub fn inverted(mut self, invert: bool) -> Self {
        self.invert = invert;
        self
    }
}

/// A rule of the source, as this filter will say it.
#[derive(Debug, Clone)]
pub struct Imported {
    pub name: String,
    /// Where it came from (for findings).
    pub origin: String,
    pub conds: Vec<Cond>,
    /// Every field of the rule but `name`, `match` and `also`.
    pub body: Map<String, Value>,
    /// Rules are laid out group by group; within a group the most specific first.
    pub group: usize,
    /// Whether rules of later groups may apply with this one (Envoy Gateway's policy merging).
    pub merges: bool,
    pub exempt: bool,
}

/// Whether every request `a`'s conditions admit is admitted by `b`'s.
pub fn implies(a: &[Cond], b: &[Cond]) -> bool {
    b.iter().all(|y| a.iter().any(|x| cond_implies(x, y)))
}

fn starts(subject: &Subject, value: &str, prefix: &str) -> bool {
    match subject {
        // Segment-wise, as the filter's path prefixes.
        Subject::Path => {
            let p = prefix.trim_end_matches('/');
            value == p || value.starts_with(&format!("{p}/")) || p.is_empty()
        }
        _ => value.starts_with(prefix),
    }
}

fn cond_implies(x: &Cond, y: &Cond) -> bool {
    if x == y {
        return true;
    }
    if x.subject != y.subject || x.invert {
        return false;
    }
    match (&x.test, &y.test, y.invert) {
        (Test::Present, _, _) => false,
        (_, Test::Present, false) => true,
        (Test::Exact(v), Test::Exact(w), false) => v.iter().all(|v| w.contains(v)),
        (Test::Exact(v), Test::Exact(w), true) => v.iter().all(|v| !w.contains(v)),
        (Test::Exact(v), Test::Prefix(p), inv) => v.iter().all(|v| starts(&x.subject, v, p) != inv),
        (Test::Prefix(q), Test::Prefix(p), false) => starts(&x.subject, q, p),
        _ => false,
    }
}

/// Whether no request can meet both `a` and `b` (as far as the conditions say).
pub fn disjoint(a: &[Cond], b: &[Cond]) -> bool {
    a.iter()
        .any(|x| b.iter().any(|y| conflict(x, y) || conflict(y, x)))
}

fn conflict(x: &Cond, y: &Cond) -> bool {
    if x.subject != y.subject {
        return false;
    }
    match (&x.test, x.invert, &y.test, y.invert) {
        (Test::Exact(v), false, Test::Exact(w), false) => v.iter().all(|v| !w.contains(v)),
        (Test::Exact(v), false, Test::Exact(w), true) => v.iter().all(|v| w.contains(v)),
        (Test::Exact(v), false, Test::Prefix(p), inv) => {
            v.iter().all(|v| starts(&x.subject, v, p) == inv)
        }
        (Test::Prefix(p), false, Test::Prefix(q), false) => {
            !starts(&x.subject, p, q) && !starts(&x.subject, q, p)
        }
        (Test::Present, false, Test::Present, true) => true,
        (Test::Present, true, t, false) => *t != Test::Present || !y.invert,
        (a, false, b, true) => a == b,
        _ => false,
    }
}

/// The rules laid out for first-match, with `also`, as JSON; findings for what cannot be said.
pub fn lay_out(mut rules: Vec<Imported>, findings: &mut Findings) -> Vec<Value> {
    let rank = |i: usize, rules: &[Imported]| {
        let r = &rules[i];
        let others = rules
            .iter()
            .filter(|o| o.group == r.group && o.name != r.name);
        others
            .filter(|o| implies(&r.conds, &o.conds) && !implies(&o.conds, &r.conds))
            .count()
    };
    let ranks: Vec<usize> = (0..rules.len()).map(|i| rank(i, &rules)).collect();
    let mut order: Vec<usize> = (0..rules.len()).collect();
    order.sort_by_key(|&i| (rules[i].group, std::cmp::Reverse(ranks[i])));
    rules = order.into_iter().map(|i| rules[i].clone()).collect();
    let mut also: Vec<Vec<usize>> = vec![Vec::new(); rules.len()];
    for i in 0..rules.len() {
        for j in i + 1..rules.len() {
            let (a, b) = (&rules[i], &rules[j]);
            let related = a.group == b.group || a.merges;
            if a.exempt || b.exempt || !related || disjoint(&a.conds, &b.conds) {
                continue;
            }
            if implies(&a.conds, &b.conds) {
                also[i].push(j);
            } else {
                findings.lost(
                    &a.origin,
                    format!(
                    "a request can match both this rule and {} ({}); the source counts it in both, \
                     here it counts only in the first listed ({}): split the rules so that one's \
                     requests are all the other's",
                    b.origin, b.name, a.name
                ),
                );
            }
        }
    }
    drop_chains(&rules, &mut also, findings);
    rules
        .iter()
        .zip(&also)
        .filter_map(|(rule, also)| emit(rule, also.iter().map(|&j| &rules[j].name), findings))
        .collect()
}

/// A rule named in `also` cannot name others itself: its own `also` stays, and rules naming it
/// lose it (reported).
fn drop_chains(rules: &[Imported], also: &mut [Vec<usize>], findings: &mut Findings) {
    let has_own: Vec<bool> = also.iter().map(|a| !a.is_empty()).collect();
    for (i, list) in also.iter_mut().enumerate() {
        list.retain(|&j| {
            if has_own[j] {
                findings.lost(
                    &rules[i].origin,
                    format!(
                    "its requests also match {} and what that one applies with it, three deep; \
                     here they are not counted in {} (a rule named in `also` names no other)",
                    rules[j].origin, rules[j].name
                ),
                );
            }
            !has_own[j]
        });
    }
}

/// One rule as JSON, or `None` (reported) when its conditions cannot be said in one `match`.
fn emit<'a>(
    rule: &Imported,
    also: impl Iterator<Item = &'a String>,
    findings: &mut Findings,
) -> Option<Value> {
    let matcher = match_json(&rule.conds)
        .map_err(|why| findings.lost(&rule.origin, why))
        .ok()?;
    let mut out = Map::new();
    out.insert("name".into(), json!(rule.name));
    if !matcher.is_empty() {
        out.insert("match".into(), Value::Object(matcher));
    }
    if rule.exempt {
        out.insert("exempt".into(), json!(true));
        return Some(Value::Object(out));
    }
    let also: Vec<&String> = also.collect();
    if !also.is_empty() {
        out.insert("also".into(), json!(also));
    }
    out.extend(rule.body.clone());
    Some(Value::Object(out))
}

/// The `match` of a set of conditions.
fn match_json(conds: &[Cond]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    let mut headers = Vec::new();
    let mut queries = Vec::new();
    for c in conds {
        let once = |out: &Map<String, Value>, field: &str| match out.contains_key(field) {
            true => Err(format!("two conditions on the {field} in one rule: {c:?}")),
            false => Ok(()),
        };
        match (&c.subject, &c.test) {
            (Subject::Header(name), _) => headers.push(named(name, c)?),
            (Subject::Query(name), _) => queries.push(named(name, c)?),
            (Subject::ClientIp, Test::Cidrs(cidrs)) => {
                once(&out, "source_cidr")?;
                let cidr = json!({"cidrs": cidrs, "invert": c.invert});
                out.insert("source_cidr".into(), cidr);
            }
            (Subject::Path, Test::Exact(v)) if !c.invert && v.len() == 1 => {
                once(&out, "path")?;
                out.insert("path".into(), json!({"exact": v[0]}));
            }
            (Subject::Path, Test::Prefix(p)) if !c.invert => {
                once(&out, "path")?;
                out.insert("path".into(), json!({"prefix": p}));
            }
            (subject @ (Subject::Method | Subject::Host | Subject::Route), Test::Exact(v))
                if !c.invert =>
            {
                let field = match subject {
                    Subject::Method => "methods",
                    Subject::Host => "hosts",
                    _ => "route_names",
                };
                once(&out, field)?;
                out.insert(field.into(), json!(v));
            }
            _ => {
                return Err(format!(
                    "a condition this filter has no selector for: {c:?}"
                ))
            }
        }
    }
    if !headers.is_empty() {
        out.insert("headers".into(), Value::Array(headers));
    }
    if !queries.is_empty() {
        out.insert("query_params".into(), Value::Array(queries));
    }
    Ok(out)
}

/// A header or query parameter selector.
fn named(name: &str, c: &Cond) -> Result<Value, String> {
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    match &c.test {
        Test::Exact(v) if v.len() == 1 => m.insert("exact".into(), json!(v[0])),
        Test::Prefix(p) => m.insert("prefix".into(), json!(p)),
        Test::Regex(r) => m.insert("regex".into(), json!(r)),
        Test::Present => m.insert("present".into(), json!(true)),
        _ => {
            return Err(format!(
                "a value test this filter has no selector for: {c:?}"
            ))
        }
    };
    if c.invert {
        m.insert("invert".into(), json!(true));
    }
    Ok(Value::Object(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, value: &str) -> Cond {
        Cond::exact(Subject::Header(name.into()), value)
    }

    #[test]
    fn implication_and_disjointness_of_conditions() {
        let marketing = [
            header("t", "marketing"),
            Cond::new(Subject::Header("n".into()), Test::Present),
        ];
        let any_number = [Cond::new(Subject::Header("n".into()), Test::Present)];
        assert!(implies(&marketing, &any_number));
        assert!(!implies(&any_number, &marketing));
        assert!(implies(&marketing, &[]), "everything implies no condition");
        assert!(disjoint(&[header("u", "one")], &[header("u", "two")]));
        assert!(disjoint(
            &[header("u", "one")],
            &[header("u", "one").inverted(true)]
        ));
        assert!(!disjoint(&[header("u", "one")], &[header("v", "two")]));
        let users = [Cond::new(Subject::Path, Test::Prefix("/api/users".into()))];
        let api = [Cond::new(Subject::Path, Test::Prefix("/api".into()))];
        assert!(implies(&users, &api) && !implies(&api, &users));
        let apix = [Cond::new(Subject::Path, Test::Prefix("/apix".into()))];
        assert!(
            !implies(&apix, &api) && disjoint(&apix, &api),
            "segment-wise"
        );
        let post = [Cond::exact(Subject::Method, "POST")];
        assert!(disjoint(&post, &[Cond::exact(Subject::Method, "GET")]));
    }

    #[test]
    fn the_most_specific_rule_first_naming_the_rules_it_implies() {
        let rule = |name: &str, conds: Vec<Cond>| Imported {
            name: name.into(),
            origin: format!("$.{name}"),
            conds,
            body: Map::new(),
            group: 0,
            merges: false,
            exempt: false,
        };
        let n = || Cond::new(Subject::Header("n".into()), Test::Present);
        let mut findings = Findings::default();
        let out = lay_out(
            vec![
                rule("all", vec![n()]),
                rule("marketing", vec![header("t", "marketing"), n()]),
                rule("other", vec![header("u", "x")]),
            ],
            &mut findings,
        );
        let names: Vec<&str> = out.iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["marketing", "all", "other"]);
        assert_eq!(out[0]["also"], json!(["all"]));
        // "other" can apply with either of the others, and neither implies it: reported.
        assert_eq!(findings.lost.len(), 2, "{:?}", findings.lost);
        assert!(findings.lost[0].1.contains("both"), "{:?}", findings.lost);
    }
}
