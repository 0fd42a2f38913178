//! The import on the examples of Envoy Gateway's and envoyproxy/ratelimit's own documentation
//! (rewritten here): what comes out passes `check`, and `explain` decides each request as the
//! source system would have.

use super::*;
use crate::tool::{check, explain, DescribedRequest};

const NOW: u64 = 1_700_000_000_000;

fn imported(source: Source, yaml: &str, options: &Options) -> (String, Findings) {
    let (config, findings) = import(source, yaml, options).unwrap();
    let text = serde_json::to_string_pretty(&config).unwrap();
    if let Err(errors) = check(text.as_bytes()) {
        panic!("the import does not pass check: {errors:?}\n{text}");
    }
    (text, findings)
}

/// What `explain` says of `n` requests like this one in one instant: the number of the first
/// refused, or `None` (never refused, or no rule).
fn refused_at(config: &str, request: &[(&str, &str)]) -> Option<u64> {
    let filter = crate::engine::Filter::load(config.as_bytes()).unwrap();
    let mut r = DescribedRequest {
        method: "GET".into(),
        path: "/get".into(),
        client_ip: "192.0.2.1".into(),
        ..Default::default()
    };
    for (k, v) in request {
        match *k {
            ":method" => r.method = v.to_string(),
            ":path" => r.path = v.to_string(),
            ":authority" => r.host = Some(v.to_string()),
            "ip" => r.client_ip = v.to_string(),
            _ => drop(r.headers.insert(k.to_string(), v.to_string())),
        }
    }
    let text = explain(&filter, &r, NOW);
    let line = text
        .lines()
        .find(|l| l.contains("within the window: refused"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

const ROUTE: &str = "
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: limited
spec:
  parentRefs:
  - name: gw
  hostnames:
  - limited.example
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /
    backendRefs:
    - name: app
      port: 8080
";

fn policy(rate_limit: &str) -> String {
    format!(
        "apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata:
  name: limits
spec:
  targetRefs:
  - group: gateway.networking.k8s.io
    kind: HTTPRoute
    name: limited
  rateLimit:
{rate_limit}{ROUTE}"
    )
}

const HOST: (&str, &str) = (":authority", "limited.example");

#[test]
fn envoy_gateway_one_user_by_header() {
    let yaml = policy(
        "    global:
      rules:
      - clientSelectors:
        - headers:
          - name: x-user-id
            value: one
        limit:
          requests: 3
          unit: Hour
",
    );
    let (config, findings) = imported(Source::EnvoyGateway, &yaml, &Options::default());
    assert!(findings.lost.is_empty(), "{:?}", findings.lost);
    assert_eq!(
        refused_at(&config, &[HOST, ("x-user-id", "one")]),
        Some(4),
        "{config}"
    );
    assert_eq!(refused_at(&config, &[HOST, ("x-user-id", "two")]), None);
    assert_eq!(
        refused_at(
            &config,
            &[(":authority", "other.example"), ("x-user-id", "one")]
        ),
        None,
        "another route"
    );
    assert!(
        config.contains("\"fleet\": true") && config.contains("\"envoy_draft03\""),
        "{config}"
    );
}

#[test]
fn envoy_gateway_distinct_users_but_admin_and_every_address() {
    let yaml = policy(
        "    global:
      rules:
      - clientSelectors:
        - headers:
          - type: Distinct
            name: x-user-id
          - name: x-user-id
            value: admin
            invert: true
        limit:
          requests: 3
          unit: Hour
      - clientSelectors:
        - sourceCIDR:
            type: Distinct
            value: 0.0.0.0/0
        limit:
          requests: 10
          unit: Minute
",
    );
    let (config, findings) = imported(Source::EnvoyGateway, &yaml, &Options::default());
    assert!(findings.lost.is_empty(), "{:?}", findings.lost);
    // A user's requests count in both rules: the user's 3 per hour refuses first.
    assert_eq!(
        refused_at(&config, &[HOST, ("x-user-id", "one")]),
        Some(4),
        "{config}"
    );
    assert_eq!(
        refused_at(&config, &[HOST, ("x-user-id", "admin")]),
        Some(11),
        "only the address limit"
    );
    assert_eq!(
        refused_at(&config, &[HOST]),
        Some(11),
        "no user: only the address limit"
    );
}

#[test]
fn envoy_gateway_path_method_and_local_rules() {
    let yaml = policy(
        "    local:
      rules:
      - clientSelectors:
        - path:
            type: Exact
            value: /api/users
        limit:
          requests: 3
          unit: Hour
      - clientSelectors:
        - methods:
          - value: POST
          headers:
          - name: x-org-id
            value: test
            invert: true
        limit:
          requests: 5
          unit: Hour
",
    );
    let (config, findings) = imported(Source::EnvoyGateway, &yaml, &Options::default());
    assert!(
        !config.contains("\"fleet\""),
        "local rules are counted in each Envoy: {config}"
    );
    assert_eq!(
        refused_at(&config, &[HOST, (":path", "/api/users")]),
        Some(4)
    );
    assert_eq!(
        refused_at(&config, &[HOST, (":path", "/api/products")]),
        None
    );
    assert_eq!(
        refused_at(&config, &[HOST, (":method", "POST"), (":path", "/x")]),
        Some(6)
    );
    assert_eq!(
        refused_at(
            &config,
            &[
                HOST,
                (":method", "POST"),
                (":path", "/x"),
                ("x-org-id", "test")
            ]
        ),
        None
    );
    // A POST to /api/users matches both, and neither rule's requests are all the other's.
    assert_eq!(findings.lost.len(), 1, "{:?}", findings.lost);
    assert!(
        findings.lost[0].0.contains("rules[0]") && findings.lost[0].1.contains("both"),
        "{:?}",
        findings.lost
    );
}

#[test]
fn envoy_gateway_merged_gateway_and_route_policies() {
    let yaml = format!(
        "apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata:
  name: platform
spec:
  targetRefs:
  - kind: Gateway
    name: gw
  rateLimit:
    global:
      rules:
      - clientSelectors:
        - sourceCIDR:
            type: Distinct
            value: 0.0.0.0/0
        limit:
          requests: 20
          unit: Second
        shared: true
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata:
  name: signup
spec:
  mergeType: StrategicMerge
  targetRefs:
  - kind: HTTPRoute
    name: limited
  rateLimit:
    global:
      rules:
      - clientSelectors:
        - sourceCIDR:
            type: Distinct
            value: 0.0.0.0/0
        limit:
          requests: 5
          unit: Minute
{ROUTE}"
    );
    let (config, findings) = imported(Source::EnvoyGateway, &yaml, &Options::default());
    assert!(findings.lost.is_empty(), "{:?}", findings.lost);
    assert_eq!(
        refused_at(&config, &[HOST]),
        Some(6),
        "the route's 5 per minute: {config}"
    );
    assert_eq!(
        refused_at(&config, &[(":authority", "www.example")]),
        Some(21),
        "the Gateway's 20 per second"
    );
    assert!(config.contains("\"also\""), "{config}");
    // Without mergeType the route's policy replaces the Gateway's for its requests.
    let (config, _) = imported(
        Source::EnvoyGateway,
        &yaml.replace("  mergeType: StrategicMerge\n", ""),
        &Options::default(),
    );
    assert!(
        !config.contains("\"also\"") && config.contains("\"exempt\": true"),
        "{config}"
    );
    assert_eq!(refused_at(&config, &[HOST]), Some(6));
}

#[test]
fn envoy_gateway_what_is_not_carried_over_is_reported_with_its_path() {
    let yaml = policy(
        "    global:
      rules:
      - clientSelectors:
        - path:
            type: RegularExpression
            value: /api/users/[0-9]+
        limit:
          requests: 3
          unit: Month
          fromMetadata:
            namespace: x
            key: y
        costly: true
",
    );
    let (_, findings) = imported(Source::EnvoyGateway, &yaml, &Options::default());
    let lost: Vec<&str> = findings.lost.iter().map(|(at, _)| at.as_str()).collect();
    let at = "document 1: $.spec.rateLimit.global.rules[0]";
    assert_eq!(
        lost,
        [
            format!("{at}.costly"),
            format!("{at}.clientSelectors[0].path"),
            format!("{at}.limit.fromMetadata"),
        ],
        "{:?}",
        findings.lost
    );
    assert!(findings
        .notes
        .iter()
        .any(|(at, n)| at.ends_with("limit.unit") && n.contains("30 days")));
}

fn keys(pairs: &[(&str, &str)]) -> Options {
    let keys = pairs
        .iter()
        .map(|(k, s)| (k.to_string(), s.to_string()))
        .collect();
    Options {
        keys,
        ..Options::default()
    }
}

#[test]
fn envoy_ratelimit_nested_and_overall_limits() {
    let yaml = "domain: sms
descriptors:
  # at most 5 promotional texts a day to one number
  - key: kind
    value: promo
    descriptors:
      - key: recipient
        rate_limit:
          unit: day
          requests_per_unit: 5
  # at most 100 texts a day to any one number
  - key: recipient
    rate_limit:
      unit: day
      requests_per_unit: 100
";
    let options = keys(&[("kind", "header:x-kind"), ("recipient", "header:x-to")]);
    let (config, findings) = imported(Source::EnvoyRatelimit, yaml, &options);
    assert!(findings.lost.is_empty(), "{:?}", findings.lost);
    assert_eq!(
        refused_at(&config, &[("x-kind", "promo"), ("x-to", "+15550001")]),
        Some(6),
        "{config}"
    );
    assert_eq!(
        refused_at(&config, &[("x-kind", "receipt"), ("x-to", "+15550001")]),
        Some(101)
    );
    assert_eq!(
        refused_at(&config, &[("x-kind", "promo")]),
        None,
        "no recipient, no descriptor"
    );
    // A promotional text counts in the overall 100 too.
    assert!(
        config.contains("\"also\": [\n        \"sms.recipient\""),
        "{config}"
    );
}

#[test]
fn envoy_ratelimit_the_most_specific_value_first() {
    let yaml = "domain: edge
descriptors:
  - key: remote_address
    rate_limit:
      unit: second
      requests_per_unit: 10
  - key: remote_address
    value: 198.51.100.9
    rate_limit:
      unit: second
      requests_per_unit: 50
";
    let (config, findings) = imported(Source::EnvoyRatelimit, yaml, &Options::default());
    assert!(findings.lost.is_empty(), "{:?}", findings.lost);
    assert_eq!(refused_at(&config, &[]), Some(11), "{config}");
    assert_eq!(
        refused_at(&config, &[("ip", "198.51.100.9")]),
        Some(51),
        "its own limit, not the wildcard's"
    );
}

#[test]
fn envoy_ratelimit_wildcards_shadow_unlimited_and_every_address() {
    let yaml = "domain: edge
descriptors:
  - key: remote_address
    rate_limit:
      unit: second
      requests_per_unit: 10
  - key: tenant
    descriptors:
      - key: user
        value: trial
        shadow_mode: true
        rate_limit:
          unit: second
          requests_per_unit: 2
      - key: user
        value: paid*
        rate_limit:
          unit: second
          requests_per_unit: 4
  - key: ldap
    rate_limit:
      unlimited: true
";
    let options = keys(&[("tenant", "header:x-tenant"), ("user", "header:x-user")]);
    let (config, findings) = imported(Source::EnvoyRatelimit, yaml, &options);
    assert!(findings.lost.is_empty(), "{:?}", findings.lost);
    assert_eq!(refused_at(&config, &[]), Some(11), "{config}");
    // A tenant's user counts in its own limit and in its address's.
    assert_eq!(
        refused_at(&config, &[("x-tenant", "a"), ("x-user", "paid-plus")]),
        Some(5)
    );
    assert_eq!(
        refused_at(&config, &[("x-tenant", "a"), ("x-user", "trial")]),
        Some(11),
        "shadow: never refuses"
    );
    assert!(
        findings.notes.iter().any(|(_, n)| n.contains("unlimited")),
        "{:?}",
        findings.notes
    );
    assert!(
        findings
            .notes
            .iter()
            .any(|(at, n)| at == "$.descriptors[2].key" && n.contains("assumed")),
        "{:?}",
        findings.notes
    );
}

#[test]
fn envoy_ratelimit_overlaps_first_match_cannot_say_are_reported() {
    let yaml = "domain: edge
descriptors:
  - key: remote_address
    rate_limit:
      unit: second
      requests_per_unit: 10
  - key: remote_address
    value: 198.51.100.9
    rate_limit:
      unit: second
      requests_per_unit: 50
  - key: tenant
    rate_limit:
      unit: second
      requests_per_unit: 4
";
    let options = keys(&[("tenant", "header:x-tenant")]);
    let (_, findings) = imported(Source::EnvoyRatelimit, yaml, &options);
    // A tenant's request also has an address: both address rules can apply with the tenant's,
    // and neither takes only tenants' requests.
    assert_eq!(findings.lost.len(), 2, "{:?}", findings.lost);
    for (_, why) in &findings.lost {
        assert!(
            why.contains("(edge.tenant); the source counts it in both"),
            "{why}"
        );
    }
}

#[test]
fn envoy_ratelimit_replaces_and_blocking_are_reported() {
    let yaml = "domain: d
descriptors:
  - key: remote_address
    value: 203.0.113.5
    rate_limit:
      unit: second
      requests_per_unit: 0
  - key: team
    value: a
    rate_limit:
      name: team-a
      unit: second
      requests_per_unit: 5
      replaces:
        - name: other
";
    let (_, findings) = imported(Source::EnvoyRatelimit, yaml, &Options::default());
    let lost: Vec<&str> = findings.lost.iter().map(|(at, _)| at.as_str()).collect();
    assert_eq!(
        lost,
        [
            "$.descriptors[0].rate_limit.requests_per_unit",
            "$.descriptors[1].rate_limit.replaces"
        ]
    );
}
