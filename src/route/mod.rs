//! Which rule a request belongs to. Each rule has a matcher (path, methods, hosts, Envoy route
//! names); the first rule whose matcher accepts the request is the request's rule. Paths are
//! matched in canonical form, so no spelling of a path dodges its rule.

mod cidr;
mod matcher;
mod path;
mod select;

pub use matcher::{RouteFacts, RouteMatcher};
use path::CanonicalPath;
#[cfg(feature = "internals")]
pub use path::{canonical_segments, canonical_text, CanonicalPath as Canonical};

use crate::request::Request;

/// Every rule's matcher, in config order, and which attributes any of them reads (the others are
/// never asked of the host).
#[derive(Debug, Clone)]
pub struct RouteTable {
    matchers: Vec<RouteMatcher>,
    needs_path: bool,
    needs_method: bool,
    needs_authority: bool,
    needs_route_name: bool,
}

impl RouteTable {
    pub fn new(matchers: Vec<RouteMatcher>) -> Self {
        RouteTable {
            needs_path: matchers.iter().any(|m| m.path.is_some()),
            needs_method: matchers.iter().any(|m| !m.methods.is_empty()),
            needs_authority: matchers.iter().any(|m| !m.hosts.is_empty()),
            needs_route_name: matchers.iter().any(|m| !m.route_names.is_empty()),
            matchers,
        }
    }

    /// The request headers choosing a rule may read.
    pub fn headers_read(&self, out: &mut Vec<String>) {
        for matcher in &self.matchers {
            matcher.headers_read(out);
        }
    }

    /// The index of the first rule whose matcher accepts the request.
    pub fn select(&self, request: &Request) -> Option<usize> {
        let facts = RouteFacts {
            path: if self.needs_path {
                CanonicalPath::of(request.path().unwrap_or_default())
            } else {
                CanonicalPath::default()
            },
            method: self
                .needs_method
                .then(|| request.header_ref(":method"))
                .flatten(),
            authority: self
                .needs_authority
                .then(|| request.header_ref(":authority"))
                .flatten(),
            route_name: self
                .needs_route_name
                .then(|| request.route_name())
                .flatten(),
        };
        self.matchers
            .iter()
            .position(|m| m.matches(&facts) && m.selectors.matches(request))
    }

    /// Rule `rule`'s selectors: what each read and whether it matched (`explain`).
    #[cfg(feature = "cli")]
    pub fn describe_selectors(&self, rule: usize, request: &Request) -> Vec<String> {
        self.matchers
            .get(rule)
            .map_or_else(Vec::new, |m| m.selectors.describe(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Errors};
    use crate::testing::FakeRequest;
    use std::cell::RefCell;

    /// Records every attribute asked of it.
    struct Counting(FakeRequest, RefCell<Vec<String>>);

    impl crate::request::RequestView for Counting {
        fn header(&self, name: &str) -> Option<Vec<u8>> {
            self.1.borrow_mut().push(name.to_string());
            self.0.header(name)
        }
        fn source_address(&self) -> Option<Vec<u8>> {
            self.0.source_address()
        }
        fn route_name(&self) -> Option<Vec<u8>> {
            self.1.borrow_mut().push("xds.route_name".into());
            self.0.route_name()
        }
    }

    fn table(rules: &str) -> RouteTable {
        let json = format!(r#"{{"rules": {rules}}}"#);
        let parsed = config::parse(json.as_bytes()).unwrap();
        let mut errors = Errors::new();
        let matchers = parsed
            .rules
            .iter()
            .map(|r| RouteMatcher::compile(&r.matcher, "$", &mut errors))
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        RouteTable::new(matchers)
    }

    #[test]
    fn only_the_attributes_some_rule_matches_on_are_read() {
        let routes = table(
            r#"[{"name": "a", "match": {"methods": ["get", "POST"], "hosts": ["*.example.com"]}},
                {"name": "b", "match": {"path": {"prefix": "/api"}}}]"#,
        );
        assert_eq!(
            routes.matchers[0].methods,
            vec![b"GET".to_vec(), b"POST".to_vec()]
        );
        let request = Counting(
            FakeRequest::with(&[
                (":path", "/api/x"),
                (":method", "GET"),
                (":authority", "x.org"),
            ]),
            RefCell::new(Vec::new()),
        );
        assert_eq!(routes.select(&Request::new(&request)), Some(1));
        assert_eq!(*request.1.borrow(), [":path", ":method", ":authority"]);

        let by_path = table(r#"[{"name": "b", "match": {"path": {"prefix": "/api"}}}]"#);
        request.1.borrow_mut().clear();
        assert_eq!(by_path.select(&Request::new(&request)), Some(0));
        assert_eq!(
            *request.1.borrow(),
            [":path"],
            "no method, host or route name asked"
        );
        let by_route = table(r#"[{"name": "r", "match": {"route_names": ["api"]}}]"#);
        request.1.borrow_mut().clear();
        assert_eq!(by_route.select(&Request::new(&request)), None);
        assert_eq!(*request.1.borrow(), ["xds.route_name"]);
    }
}
