//! `check`'s warnings: choices a configuration may make that load and work, but that known client
//! libraries read wrong. Each names the JSON path, the client and what it does.

use serde_json::Value;

use crate::config::{FilterConfig, GrpcAnswer, HeaderStyle, ResetFormat, RuleConfig};

/// Every warning for a configuration that loads (`config` is it parsed, `raw` its JSON).
pub fn warnings(config: &FilterConfig, raw: &Value) -> Vec<String> {
    let mut out = Vec::new();
    former_style_name(raw, &mut out);
    let headers = &config.response.headers;
    let renamed =
        |slot: &str| headers.names.contains_key(slot) || headers.hide.iter().any(|h| h == slot);
    if headers.style == HeaderStyle::IetfDraft11 && !renamed("ratelimit") {
        for (at, name) in limit_names(&config.rules) {
            if let Some(c) = name
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
            {
                out.push(format!(
                    "{at}: the limit name {name:?} has {c:?}: huggingface_hub reads the first item \
                     of `RateLimit` named with letters, digits and _ only, so it skips this limit's \
                     item and waits for another limit"
                ));
            }
        }
    }
    let epoch_readers = "PyGithub (rate_limiting_resettime) and ratelimit-headers read \
                         X-RateLimit-Reset as a Unix time and see a date in 1970";
    match headers.style {
        HeaderStyle::XRateLimit
            if headers.reset == ResetFormat::DeltaSeconds && !renamed("reset") =>
        {
            out.push(format!(
                "$.response.headers.reset: \"delta_seconds\" sends X-RateLimit-Reset in seconds \
                 from now: {epoch_readers}; keep \"epoch_seconds\" (GitHub's form) for them"
            ))
        }
        HeaderStyle::EnvoyDraft03 if !renamed("reset") => out.push(format!(
            "$.response.headers.style: Envoy's form sends X-RateLimit-Reset in seconds from now: \
             {epoch_readers} (ratelimit-headers also reads no number in \"3, 3;w=3600\"); it is \
             what clients written against Envoy's own headers expect"
        )),
        _ => {}
    }
    if headers.max_retry_wait.is_none() {
        if let Some((at, window)) = longest_window(&config.rules).filter(|(_, w)| *w > 120_000) {
            out.push(format!(
                "$.response.headers.max_retry_wait: null never sends x-should-retry: false, and \
                 anthropic (2.17) sleeps through any Retry-After: a refusal by {at} can hold a \
                 request for {}",
                crate::config::format_window(window)
            ));
        }
    }
    retried_grpc_answers(config, &mut out);
    out
}

/// A gRPC answer that grpcio's retry policies (and most others) retry at once.
fn retried_grpc_answers(config: &FilterConfig, out: &mut Vec<String>) {
    let rules = config.rules.iter().enumerate();
    let rules = rules.map(|(r, rule)| (format!("$.rules[{r}].grpc"), rule.grpc));
    let answers = std::iter::once(("$.response.grpc".to_string(), config.response.grpc));
    for (at, answer) in answers.chain(rules) {
        let why = match answer {
            Some(GrpcAnswer::Unavailable) => "refuses gRPC calls with UNAVAILABLE",
            Some(GrpcAnswer::Http) => "lets Envoy turn a 429 into UNAVAILABLE for gRPC calls",
            _ => continue,
        };
        out.push(format!(
            "{at}: {why}, which gRPC clients take for a transient failure: grpcio retries it at \
             once under a retry policy that lists it, as most do; \"resource_exhausted\" (the \
             default) is not retried"
        ));
    }
}

/// A style under its former name (still accepted).
fn former_style_name(raw: &Value, out: &mut Vec<String>) {
    let style = raw
        .pointer("/response/headers/style")
        .and_then(Value::as_str);
    let renamed = match style {
        Some("draft03") => "ietf_draft06",
        Some("draft_ietf") => "ietf_draft11",
        _ => return,
    };
    out.push(format!(
        "$.response.headers.style: {:?} is now called {renamed:?} (the former name still works)",
        style.unwrap_or_default()
    ));
}

/// Every limit's name as headers show it (given, or its window), with its JSON path.
fn limit_names(rules: &[RuleConfig]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (r, rule) in rules.iter().enumerate() {
        for (l, limit) in rule.limits.iter().enumerate() {
            if let Some(name) = &limit.name {
                out.push((format!("$.rules[{r}].limits[{l}].name"), name.clone()));
            }
        }
    }
    out
}

/// The longest window of any limit, with its JSON path.
fn longest_window(rules: &[RuleConfig]) -> Option<(String, u64)> {
    let limits = rules.iter().enumerate().flat_map(|(r, rule)| {
        let at = move |l| format!("$.rules[{r}].limits[{l}]");
        rule.limits
            .iter()
            .enumerate()
            .map(move |(l, limit)| (at(l), limit.window.millis))
    });
    limits.max_by_key(|(_, w)| *w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warned(json: &str) -> Vec<String> {
        let config = crate::config::parse(json.as_bytes()).unwrap();
        warnings(&config, &serde_json::from_str(json).unwrap())
    }

    #[test]
    fn each_choice_that_breaks_a_known_client_is_named_with_the_client() {
        let rules = r#""rules": [{"name": "api", "limits": [
            {"name": "per-hour", "requests": 100, "window": "1h"},
            {"name": "burst", "requests": 5, "window": "1s"}]}]"#;
        let ietf = warned(&format!(
            r#"{{"response": {{"headers": {{"style": "draft_ietf"}}}}, {rules}}}"#
        ));
        assert_eq!(ietf.len(), 2, "{ietf:?}");
        assert!(
            ietf[0].contains("\"draft_ietf\" is now called \"ietf_draft11\""),
            "{ietf:?}"
        );
        assert!(
            ietf[1].starts_with(
                "$.rules[0].limits[0].name: the limit name \"per-hour\" has '-': huggingface_hub"
            ),
            "{ietf:?}"
        );
        let delta = warned(&format!(
            r#"{{"response": {{"headers": {{"reset": "delta_seconds"}}}}, {rules}}}"#
        ));
        assert!(
            delta[0].starts_with("$.response.headers.reset: ") && delta[0].contains("PyGithub"),
            "{delta:?}"
        );
        let envoy = warned(&format!(
            r#"{{"response": {{"headers": {{"style": "envoy_draft03"}}}}, {rules}}}"#
        ));
        assert!(envoy[0].contains("ratelimit-headers"), "{envoy:?}");
        let unbounded = warned(&format!(
            r#"{{"response": {{"headers": {{"max_retry_wait": null}}}}, {rules}}}"#
        ));
        assert!(
            unbounded[0].contains("anthropic") && unbounded[0].contains("1h"),
            "{unbounded:?}"
        );
        // The defaults warn of nothing; a renamed reset header is not X-RateLimit-Reset.
        assert!(warned(&format!("{{{rules}}}")).is_empty());
        let renamed = r#"{"response": {"headers": {"reset": "delta_seconds", "names": {"reset": "x-reset-in"}}}, "rules": []}"#;
        assert!(warned(renamed).is_empty());
        let grpc = r#"{"response": {"grpc": "unavailable"}, "rules": [
            {"name": "a", "grpc": "http"}, {"name": "b", "grpc": "aborted"}]}"#;
        let grpc = warned(grpc);
        assert_eq!(grpc.len(), 2, "{grpc:?}");
        assert!(grpc[0].starts_with("$.response.grpc: refuses gRPC calls with UNAVAILABLE"));
        assert!(grpc[1].starts_with("$.rules[0].grpc: lets Envoy turn a 429 into UNAVAILABLE"));
    }
}
