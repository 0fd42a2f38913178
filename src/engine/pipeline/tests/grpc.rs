//! gRPC requests: a refusal answers in gRPC's terms (trailers-only, a status code, the sentence
//! and the details), rules for `/package.Service/Method`, and plain HTTP left as it was.

use super::fleet_tier::{serve, FLEET};
use super::stores::AlwaysLoses;
use super::*;
use crate::response::Reply;

const GRPC: &str = r#"{
    "rules": [
        {"name": "say_hello", "match": {"path": {"exact": "/helloworld.Greeter/SayHello"}},
         "key": [{"header": "x-api-key"}], "on_missing_key": "deny",
         "limits": [{"name": "per_10s", "requests": 3, "window": "10s"}]},
        {"name": "greeter", "match": {"path": {"prefix": "/helloworld.Greeter/"}},
         "key": [{"header": "x-api-key"}], "grpc": "http",
         "limits": [{"requests": 1, "window": "1m"}]},
        {"name": "other", "match": {"path": {"prefix": "/"}}, "key": "shared", "grpc": "aborted",
         "limits": [{"requests": 1, "window": "1m"}]}
    ]
}"#;

fn call(method: &str, content_type: &str, key: Option<&str>) -> FakeRequest {
    let mut all = vec![
        (":path", method),
        (":method", "POST"),
        ("content-type", content_type),
    ];
    all.extend(key.map(|k| ("x-api-key", k)));
    FakeRequest::with(&all)
}

fn refused(decision: Decision) -> Reply {
    match decision.action {
        Action::Refuse(reply) => reply,
        other => panic!("not refused: {other:?}"),
    }
}

fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    let mut found = reply.headers.iter().filter(|(k, _)| &**k == name);
    found.next().map(|(_, v)| v.as_str())
}

fn unbase64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sextets: Vec<u32> = text
        .bytes()
        .map(|c| ALPHABET.iter().position(|&a| a == c).unwrap() as u32)
        .collect();
    let mut out = Vec::new();
    for chunk in sextets.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0, |n, (i, s)| n | s << (18 - 6 * i));
        out.extend((0..chunk.len() - 1).map(|i| (n >> (16 - 8 * i)) as u8));
    }
    out
}

#[test]
fn a_refused_grpc_call_gets_resource_exhausted_with_the_wait_and_the_limit() {
    let filter = load(GRPC.as_bytes()).unwrap();
    let store = MemoryStore::new();
    let hello = call(
        "/helloworld.Greeter/SayHello",
        "application/grpc",
        Some("k"),
    );
    for _ in 0..3 {
        let decision = handle(&filter, &store, &hello, T0);
        assert!(matches!(decision.action, Action::Allow(_)));
    }
    let reply = refused(handle(&filter, &store, &hello, T0 + 2_500));
    // Trailers-only: HTTP 200 and no body; the status and the rate-limit headers as metadata.
    assert_eq!((reply.status, reply.body.as_str()), (200, ""));
    assert_eq!(header(&reply, "content-type"), Some("application/grpc"));
    assert_eq!(header(&reply, "grpc-status"), Some("8"));
    assert_eq!(
        header(&reply, "grpc-message"),
        Some("Rate limit exceeded: 3 requests per 10s. Retry in 8 seconds.")
    );
    assert_eq!(header(&reply, "x-ratelimit-remaining"), Some("0"));
    assert_eq!(header(&reply, "retry-after"), Some("8"));
    let details = unbase64(header(&reply, "grpc-status-details-bin").unwrap());
    let contains = |needle: &[u8]| details.windows(needle.len()).any(|w| w == needle);
    assert!(details.starts_with(&[0x08, 8, 0x12]), "{details:02x?}");
    assert!(contains(b"type.googleapis.com/google.rpc.RetryInfo"));
    // RetryInfo { retry_delay: Duration { seconds: 8 } }: the same wait as Retry-After.
    assert!(contains(&[0x12, 4, 0x0a, 2, 0x08, 8]));
    assert!(contains(b"type.googleapis.com/google.rpc.QuotaFailure"));
    assert!(contains(b"rule:say_hello"));
    assert!(contains(b"3 requests per 10s"));
    assert!(contains(b"per_10s"));
}

#[test]
fn plain_http_and_rules_that_keep_http_get_the_http_reply() {
    let filter = load(GRPC.as_bytes()).unwrap();
    let store = MemoryStore::new();
    let json = call(
        "/helloworld.Greeter/SayHello",
        "application/json",
        Some("k"),
    );
    for _ in 0..3 {
        handle(&filter, &store, &json, T0);
    }
    let reply = refused(handle(&filter, &store, &json, T0));
    assert_eq!(reply.status, 429);
    assert_eq!(header(&reply, "grpc-status"), None);
    assert_eq!(header(&reply, "content-type"), Some("application/json"));
    // The whole service's rule says `"grpc": "http"`: Envoy maps its 429 itself.
    let other = call("/helloworld.Greeter/SayBye", "application/grpc", Some("k"));
    handle(&filter, &store, &other, T0);
    let reply = refused(handle(&filter, &store, &other, T0));
    assert_eq!((reply.status, header(&reply, "grpc-status")), (429, None));
}

#[test]
fn the_code_is_the_rules_and_other_stops_say_theirs() {
    let filter = load(GRPC.as_bytes()).unwrap();
    let store = MemoryStore::new();
    let web = call("/other.Service/Do", "application/grpc-web+proto", None);
    handle(&filter, &store, &web, T0);
    let reply = refused(handle(&filter, &store, &web, T0));
    assert_eq!(header(&reply, "grpc-status"), Some("10"));
    // No client key under `on_missing_key: deny`: UNAUTHENTICATED, and nothing to wait for.
    let anonymous = call("/helloworld.Greeter/SayHello", "application/grpc", None);
    let reply = refused(handle(&filter, &store, &anonymous, T0));
    assert_eq!(header(&reply, "grpc-status"), Some("16"));
    assert_eq!(
        header(&reply, "grpc-message"),
        Some("This endpoint needs a client key (rule say_hello).")
    );
    assert_eq!(header(&reply, "retry-after"), None);
    // The key given twice with different values: INVALID_ARGUMENT, nothing to wait for.
    let twice = call(
        "/helloworld.Greeter/SayHello",
        "application/grpc",
        Some("a"),
    )
    .again("x-api-key", "b");
    let reply = refused(handle(&filter, &store, &twice, T0));
    assert_eq!(header(&reply, "grpc-status"), Some("3"));
    assert!(header(&reply, "grpc-message")
        .unwrap()
        .contains("header x-api-key"));
    assert_eq!(header(&reply, "retry-after"), None);
    // The filter-wide default, overridden by nothing here.
    let filter = load(
        br#"{"response": {"grpc": "unavailable"}, "rules": [{"name": "r", "key": "shared",
             "limits": [{"requests": 1, "window": "1s"}]}]}"#,
    )
    .unwrap();
    let any = call("/a.B/C", "application/grpc+proto", None);
    handle(&filter, &store, &any, T0);
    let reply = refused(handle(&filter, &store, &any, T0));
    assert_eq!(header(&reply, "grpc-status"), Some("14"));
}

#[test]
fn a_code_that_is_not_grpcs_is_rejected_at_load() {
    let errors = load(
        br#"{"response": {"grpc": 8}, "rules": [{"name": "r", "grpc": "resource_exausted",
             "limits": [{"requests": 1, "window": "1s"}]}]}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(errors.contains("$.response.grpc: "), "{errors}");
    assert!(
        errors.contains("$.rules[0].grpc: unknown variant `resource_exausted`"),
        "{errors}"
    );
}

/// The stops that are not the client's limits: an undecided store and a failed rate limit
/// service are `UNAVAILABLE` (with the second's wait), a capacity refusal the rule's code.
#[test]
fn the_limiters_own_failures_are_unavailable_and_capacity_is_the_rules_code() {
    let grpc = |path: &str| {
        let all = [
            (":path", path),
            (":method", "POST"),
            ("content-type", "application/grpc"),
            ("x-api-key", "k"),
        ];
        FakeRequest::with(&all)
    };
    let request = grpc("/api/x");
    let status = |d: &Decision| match &d.action {
        Action::Refuse(reply) => header(reply, "grpc-status").map(str::to_string),
        other => panic!("{other:?}"),
    };
    // store.on_contention: deny.
    let closed = CONFIG.replacen('{', r#"{"store": {"on_contention": "deny"},"#, 1);
    let closed = load(closed.as_bytes()).unwrap();
    let d = decide(&closed, &AlwaysLoses(MemoryStore::new()), &request, T0);
    assert_eq!(status(&d).as_deref(), Some("14"));
    // fleet.on_error: deny.
    let json = FLEET.replace(r#""lease": 3"#, r#""lease": 1, "on_error": "deny""#);
    let filter = load(json.as_bytes()).unwrap();
    let mut fail = |_: &FleetCall| fleet::Verdict::Failed;
    let store = MemoryStore::new();
    let (d, _) = serve(
        &filter,
        &store,
        &mut Memory::default(),
        &request,
        T0,
        &mut fail,
    );
    let Action::Refuse(reply) = &d.action else {
        panic!()
    };
    assert_eq!(header(reply, "grpc-status"), Some("14"));
    assert_eq!(header(reply, "retry-after"), Some("1"));
    assert_eq!(
        header(reply, "grpc-message"),
        Some("The rate limit service did not answer in time. Retry shortly.")
    );
    // A capacity refusal (one client's room, taken by another): RESOURCE_EXHAUSTED.
    let tiny = CONFIG.replacen(
        '{',
        r#"{"store": {"max_clients": 1, "slots_per_page": 1},"#,
        1,
    );
    let tiny = load(tiny.as_bytes()).unwrap();
    let store = MemoryStore::new();
    let first = grpc("/api/x");
    for _ in 0..5 {
        decide(&tiny, &store, &first, T0);
    }
    let second = get("/api/x", &[("x-api-key", "second")]);
    for _ in 0..2 {
        decide(&tiny, &store, &second, T0 + 1);
    }
    let d = decide(&tiny, &store, &first, T0 + 2_000);
    assert!(has(&d, Stat::CapacityRefused));
    assert_eq!(status(&d).as_deref(), Some("8"));
}
