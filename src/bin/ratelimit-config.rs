//! `ratelimit-config`: check a filter configuration, explain what it does to a request, print the
//! rate limit service's configuration for its fleet-wide limits, or print its JSON Schema. The
//! same code the filter runs at load and per request.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use envoy_ratelimit_wasm::tool::{self as config_tool, DescribedRequest};
use envoy_ratelimit_wasm::Filter;

const USAGE: &str = "usage:
  ratelimit-config check CONFIG.json [CONFIG.json ...]
  ratelimit-config explain CONFIG.json [--method GET] --path /api/x [--host h] [--ip 1.2.3.4]
                           [--route NAME] [--header 'name: value' ...]
                           [--metadata 'namespace/key.path=value' ...] [--filter-state 'key=value' ...]
  ratelimit-config engine-config CONFIG.json [--engine limitador|envoy-ratelimit]
  ratelimit-config import envoy-gateway POLICY.yaml [--fleet-cluster NAME]
  ratelimit-config import envoy-ratelimit CONFIG.yaml [--key DESCRIPTOR_KEY=SOURCE ...] [--fleet-cluster NAME]
                   (SOURCE: header:NAME, query:NAME, client_ip, method, route)
  ratelimit-config schema";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("check") if args.len() > 1 => check(&args[1..]),
        Some("explain") if args.len() > 1 => explain(&args[1], &args[2..]),
        Some("engine-config") if args.len() > 1 => engine_config(&args[1], &args[2..]),
        Some("import") if args.len() > 2 => import(&args[1], &args[2], &args[3..]),
        Some("schema") => {
            print!("{}", config_tool::schema());
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{path}: cannot read: {e}"))
}

fn check(paths: &[String]) -> ExitCode {
    let mut failed = false;
    for path in paths {
        match read(path).map(|bytes| config_tool::check(&bytes)) {
            Ok(Ok(summary)) => {
                println!("{path}: {summary}");
                let bytes = read(path).unwrap_or_default();
                for warning in config_tool::check_warnings(&bytes) {
                    println!("{path}: warning: {warning}");
                }
            }
            Ok(Err(errors)) => {
                failed = true;
                for error in errors {
                    println!("{path}: {error}");
                }
            }
            Err(e) => {
                failed = true;
                println!("{e}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The compiled configuration at `path`, or `None` with every problem printed.
fn load(path: &str) -> Option<Filter> {
    match read(path).map(|bytes| Filter::load(&bytes)) {
        Ok(Ok(filter)) => Some(filter),
        Ok(Err(errors)) => {
            for error in errors.0 {
                println!("{path}: {error}");
            }
            None
        }
        Err(e) => {
            println!("{e}");
            None
        }
    }
}

fn explain(path: &str, args: &[String]) -> ExitCode {
    let Some(config) = load(path) else {
        return ExitCode::FAILURE;
    };
    let mut request = DescribedRequest {
        method: "GET".into(),
        path: "/".into(),
        client_ip: "192.0.2.1".into(),
        headers: HashMap::new(),
        ..Default::default()
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else {
            eprintln!("{flag} needs a value\n{USAGE}");
            return ExitCode::from(2);
        };
        if let Err(message) = describe(&mut request, flag, value) {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    print!("{}", config_tool::explain(&config, &request, now));
    ExitCode::SUCCESS
}

/// One `explain` option into the described request.
fn describe(request: &mut DescribedRequest, flag: &str, value: &str) -> Result<(), String> {
    match flag {
        "--method" => request.method = value.to_ascii_uppercase(),
        "--path" => request.path = value.to_string(),
        "--host" => request.host = Some(value.to_string()),
        "--ip" => request.client_ip = value.to_string(),
        "--route" => request.route_name = Some(value.to_string()),
        "--header" => {
            let (name, v) = value
                .split_once(':')
                .ok_or("--header takes 'name: value'")?;
            let name = name.trim().to_ascii_lowercase();
            request.headers.insert(name, v.trim().to_string());
        }
        "--metadata" => {
            let usage = "--metadata takes 'namespace/key.path=value'";
            let (at, v) = value.split_once('=').ok_or(usage)?;
            let (namespace, key) = at.split_once('/').ok_or(usage)?;
            let at = (namespace.to_string(), key.to_string());
            request.metadata.insert(at, v.to_string());
        }
        "--filter-state" => {
            let (key, v) = value
                .split_once('=')
                .ok_or("--filter-state takes 'key=value'")?;
            request.filter_state.insert(key.to_string(), v.to_string());
        }
        _ => return Err(format!("unknown option {flag}\n{USAGE}")),
    }
    Ok(())
}

/// The rate limit service's configuration for the fleet-wide limits (Limitador by default).
fn engine_config(path: &str, args: &[String]) -> ExitCode {
    let engine = match args {
        [] => Some(config_tool::Engine::Limitador),
        [flag, name] if flag == "--engine" => config_tool::Engine::parse(name),
        _ => None,
    };
    let Some(engine) = engine else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let Some(filter) = load(path) else {
        return ExitCode::FAILURE;
    };
    match config_tool::engine_config(&filter, engine) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{path}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Another system's configuration as this filter's, on stdout; what is not carried over (and
/// what is only approximated) on stderr, with its path. Exit status 1 when something was not
/// carried over (the configuration is still printed).
fn import(source: &str, path: &str, args: &[String]) -> ExitCode {
    let Some(source) = config_tool::ImportSource::parse(source) else {
        eprintln!("unknown source {source:?}: envoy-gateway or envoy-ratelimit\n{USAGE}");
        return ExitCode::from(2);
    };
    let mut options = config_tool::ImportOptions::default();
    for pair in args.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--fleet-cluster", Some(name)) => options.fleet_cluster = Some(name.clone()),
            ("--key", Some(spec)) if spec.contains('=') => {
                let (key, source) = spec.split_once('=').unwrap_or_default();
                options.keys.push((key.to_string(), source.to_string()));
            }
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{path}: cannot read: {e}");
            return ExitCode::FAILURE;
        }
    };
    match config_tool::import(source, &text, &options) {
        Ok((config, findings)) => {
            let pretty = serde_json::to_string_pretty(&config).unwrap_or_default();
            println!("{pretty}");
            for (at, what) in &findings.notes {
                eprintln!("{path}: note: {at}: {what}");
            }
            for (at, why) in &findings.lost {
                eprintln!("{path}: not carried over: {at}: {why}");
            }
            match findings.lost.len() {
                0 => ExitCode::SUCCESS,
                n => {
                    eprintln!("{path}: {n} not carried over (above)");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("{path}: {e}");
            ExitCode::FAILURE
        }
    }
}
