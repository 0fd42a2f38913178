//! Which responses keep what their request was charged: statuses (`429`), classes (`"2xx"`),
//! `"no_response"` (the stream ended before a response: the client went away, or was reset) and
//! `"local_reply"` (Envoy or a filter answered, not the upstream: a timeout's 504, another
//! filter's 403).

use super::response::Response;
use crate::config::{Errors, Report, ResponseMatch};

/// A compiled list of responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Responses {
    /// Inclusive status ranges (a class is one range).
    statuses: Vec<(u32, u32)>,
    no_response: bool,
    local_reply: bool,
}

impl Responses {
    /// `matches` at `at`: each a status from 100 to 599, a class from `1xx` to `5xx`,
    /// `no_response` or `local_reply`; not empty.
    pub fn compile(matches: &[ResponseMatch], at: &str, errors: &mut Errors) -> Self {
        if matches.is_empty() {
            errors.add(
                at,
                "list at least one status, class, \"no_response\" or \"local_reply\"",
            );
        }
        let mut compiled = Responses {
            statuses: Vec::new(),
            no_response: false,
            local_reply: false,
        };
        for (i, m) in matches.iter().enumerate() {
            let at = format!("{at}[{i}]");
            match m {
                ResponseMatch::Status(s) if (100..=599).contains(s) => {
                    compiled.statuses.push((*s as u32, *s as u32));
                }
                ResponseMatch::Status(s) => {
                    errors.add(at, format!("a status is from 100 to 599, got {s}"));
                }
                ResponseMatch::Named(name) => compiled.add_named(name, &at, errors),
            }
        }
        compiled
    }

    fn add_named(&mut self, name: &str, at: &str, errors: &mut Errors) {
        match name.as_bytes() {
            b"no_response" => self.no_response = true,
            b"local_reply" => self.local_reply = true,
            [c @ b'1'..=b'5', b'x', b'x'] => {
                let first = u32::from(c - b'0') * 100;
                self.statuses.push((first, first + 99));
            }
            _ => errors.add(
                at,
                format!(
                    "{name:?} is not a status class (\"2xx\"), \"no_response\" or \"local_reply\""
                ),
            ),
        }
    }

    /// In words, for `explain`.
    #[cfg(feature = "cli")]
    pub fn describe(&self) -> String {
        let statuses = self.statuses.iter().map(|&(a, b)| match (a, b) {
            (a, b) if a == b => a.to_string(),
            (a, _) => format!("{}xx", a / 100),
        });
        let named = [
            ("no_response", self.no_response),
            ("local_reply", self.local_reply),
        ];
        let named = named
            .iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| n.to_string());
        statuses.chain(named).collect::<Vec<_>>().join(", ")
    }

    /// Whether `response` is one of these.
    pub fn contain(&self, response: &Response) -> bool {
        let Some(status) = response.status() else {
            return self.no_response;
        };
        let in_statuses = self
            .statuses
            .iter()
            .any(|&(a, b)| (a..=b).contains(&status));
        in_statuses || (self.local_reply && response.local_reply())
    }
}

/// Which responses keep a limit's charge: only those `counted` lists (when given), and none that
/// `given_back` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counted {
    pub only: Option<Responses>,
    pub except: Option<Responses>,
}

impl Counted {
    /// Whether every response keeps its charge (nothing to settle for counting's sake).
    pub fn all(&self) -> bool {
        self.only.is_none() && self.except.is_none()
    }

    /// Whether `response` keeps its request's charge.
    pub fn keeps(&self, response: &Response) -> bool {
        let listed = self.only.as_ref().is_none_or(|r| r.contain(response));
        listed && !self.except.as_ref().is_some_and(|r| r.contain(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::costs::response::ResponseFacts;

    fn compile(matches: &[ResponseMatch]) -> Result<Responses, Vec<String>> {
        let mut errors = Errors::new();
        let compiled = Responses::compile(matches, "$.x", &mut errors);
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        if lines.is_empty() {
            Ok(compiled)
        } else {
            Err(lines)
        }
    }

    fn status(status: u32) -> ResponseFacts {
        ResponseFacts {
            status: Some(status),
            ..ResponseFacts::default()
        }
    }

    fn keeps(counted: &Counted, facts: &ResponseFacts) -> bool {
        counted.keeps(&Response::new(facts))
    }

    #[test]
    fn statuses_classes_and_the_named_cases() {
        let named = |s: &str| ResponseMatch::Named(s.into());
        let only = compile(&[named("2xx"), ResponseMatch::Status(304)]).unwrap();
        let counted = Counted {
            only: Some(only),
            except: None,
        };
        assert!(keeps(&counted, &status(200)) && keeps(&counted, &status(299)));
        assert!(keeps(&counted, &status(304)));
        assert!(!keeps(&counted, &status(301)) && !keeps(&counted, &status(503)));
        assert!(!keeps(&counted, &ResponseFacts::default()), "no response");
        let back = compile(&[named("5xx"), named("no_response"), named("local_reply")]).unwrap();
        let counted = Counted {
            only: None,
            except: Some(back),
        };
        assert!(keeps(&counted, &status(200)) && keeps(&counted, &status(404)));
        assert!(!keeps(&counted, &status(502)));
        assert!(!keeps(&counted, &ResponseFacts::default()));
        let local_403 = ResponseFacts {
            local_reply: true,
            ..status(403)
        };
        assert!(!keeps(&counted, &local_403), "another filter's 403");
    }

    #[test]
    fn what_is_not_a_response_is_named() {
        let e = compile(&[
            ResponseMatch::Status(99),
            ResponseMatch::Named("6xx".into()),
            ResponseMatch::Named("ok".into()),
        ])
        .unwrap_err();
        assert!(
            e[0].starts_with("$.x[0]: a status is from 100 to 599, got 99"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("$.x[1]: \"6xx\" is not a status class"),
            "{e:?}"
        );
        assert!(e[2].starts_with("$.x[2]: \"ok\""), "{e:?}");
        let e = compile(&[]).unwrap_err();
        assert!(e[0].starts_with("$.x: list at least one"), "{e:?}");
    }
}
