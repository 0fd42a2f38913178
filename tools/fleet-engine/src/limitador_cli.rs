//! `limitador-server`'s own command line, for the subset this engine can honour, so that a
//! compose file written for the official Limitador image (`quay.io/kuadrant/limitador`) runs
//! unchanged on a stand-in image holding this binary as `limitador-server`.
//!
//! The engine takes this command line when it is run as `limitador-server` (its file name, e.g.
//! a copy or a symlink so named) or as `fleet-engine limitador-server ARGS...`.
//!
//! limitador-server's usage (clap, `limitador-server/src/main.rs` `create_config`, read at the
//! newest stored version): `limitador-server [OPTIONS] <LIMITS_FILE> [STORAGE]`, options before
//! the storage, each option's default from an environment variable when set. Honoured:
//!
//! | limitador-server | here |
//! |---|---|
//! | `<LIMITS_FILE>` (env `LIMITS_FILE`) | `--limits` |
//! | `-b`, `--rls-ip` (env `ENVOY_RLS_HOST`, default `0.0.0.0`) | the address of `--listen` |
//! | `-p`, `--rls-port` (env `ENVOY_RLS_PORT`, default 8081) | the port of `--listen` |
//! | `-H`, `--rate-limit-headers NONE\|DRAFT_VERSION_03` (env `RATE_LIMIT_HEADERS`) | the same |
//! | `redis <URL>` (URL from env `REDIS_URL` when omitted) | `--redis URL` |
//! | `memory [-c, --cache N]` | `--memory [--cache-size N]` (default 10000; limitador-server sizes it from free memory) |
//! | no storage: `REDIS_URL` set → redis, else memory | the same |
//! | `-v`..`-vvvv` | accepted, no effect: the engine prints its start line and storage errors only |
//!
//! Refused with an error naming the option (never silently ignored): the HTTP API (`-B`,
//! `--http-ip`, `-P`, `--http-port`: the engine serves no HTTP), metrics labels (`-l`, `-L`,
//! `--metric-labels-default`), `--tracing-endpoint`, `--validate`, `--grpc-reflection-service`,
//! and the storages `disk`, `redis_cached` and `distributed`.

use std::net::SocketAddr;

use crate::{Args, Storage};

/// The file name under which the engine takes limitador-server's command line.
pub const NAME: &str = "limitador-server";

pub const USAGE: &str = "\
usage: limitador-server [OPTIONS] <LIMITS_FILE> [STORAGE]
  (fleet-engine taking limitador-server's command line; the subset it honours)

  <LIMITS_FILE>                 Limitador limits file [env LIMITS_FILE]
  -b, --rls-ip <ip>             IP to listen on for RLS [env ENVOY_RLS_HOST; default 0.0.0.0]
  -p, --rls-port <port>         port to listen on for RLS [env ENVOY_RLS_PORT; default 8081]
  -H, --rate-limit-headers <h>  NONE or DRAFT_VERSION_03 [env RATE_LIMIT_HEADERS; default NONE]
  -v...                         accepted, no effect

STORAGE:
  redis <URL>                   counters in Redis [env REDIS_URL]
  memory [-c, --cache <N>]      counters in this process (default 10000 counters)
  (none)                        redis when REDIS_URL is set, else memory

Not served here, refused: the HTTP API (-B/--http-ip, -P/--http-port), metrics labels,
tracing, --validate, gRPC reflection, and the disk, redis_cached and distributed storages.";

/// Options limitador-server has and this engine cannot honour, with what they are.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("-B", "the HTTP API's address"),
    ("--http-ip", "the HTTP API's address"),
    ("-P", "the HTTP API's port"),
    ("--http-port", "the HTTP API's port"),
    ("-l", "limit names in Prometheus labels"),
    ("--limit-name-in-labels", "limit names in Prometheus labels"),
    ("-L", "custom Prometheus labels"),
    ("--custom-metric-labels", "custom Prometheus labels"),
    ("--metric-labels-default", "default Prometheus labels"),
    ("--tracing-endpoint", "tracing"),
    ("--validate", "validating the limits file"),
    ("--grpc-reflection-service", "gRPC reflection"),
];

const UNSUPPORTED_STORAGES: &[&str] = &["disk", "redis_cached", "distributed"];

/// Parses limitador-server's arguments (without the program name); `env` reads the environment
/// variables that give its defaults. `Err("")` asks for the usage only (`-h`).
pub fn parse(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Args, String> {
    let mut args = args.into_iter().peekable();
    let mut limits = env("LIMITS_FILE").filter(|s| !s.is_empty());
    let mut limits_given = false;
    let mut ip = env("ENVOY_RLS_HOST").unwrap_or_else(|| "0.0.0.0".into());
    let mut port = env("ENVOY_RLS_PORT").unwrap_or_else(|| "8081".into());
    let mut headers = env("RATE_LIMIT_HEADERS").unwrap_or_else(|| "NONE".into());
    let mut verbosity = 0usize;
    let mut storage: Option<Storage> = None;

    while let Some(arg) = args.next() {
        if let Some(name) = UNSUPPORTED_STORAGES.iter().find(|s| **s == arg) {
            return Err(format!(
                "the {name} storage is not supported by fleet-engine (redis and memory are)"
            ));
        }
        if arg == "redis" || arg == "memory" {
            // A storage subcommand: the rest of the line is its own.
            storage = Some(parse_storage(&arg, args.by_ref().collect(), &env)?);
            break;
        }
        // --name=value and -xVALUE forms, as clap accepts them.
        let (flag, inline) = split_flag(&arg);
        if let Some((_, what)) = UNSUPPORTED.iter().find(|(f, _)| *f == flag) {
            return Err(format!(
                "{flag}: {what} is not supported by fleet-engine (limitador-server's option; \
                 the engine serves only the RLS gRPC service)"
            ));
        }
        let mut value = |name: &str| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args.next().ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match flag.as_str() {
            "-b" | "--rls-ip" => ip = value(&flag)?,
            "-p" | "--rls-port" => port = value(&flag)?,
            "-H" | "--rate-limit-headers" => headers = value(&flag)?,
            "-h" | "--help" | "-V" | "--version" => return Err(String::new()),
            v if v.len() > 1 && v.starts_with('-') && v[1..].chars().all(|c| c == 'v') => {
                verbosity += v.len() - 1;
                if verbosity > 4 {
                    return Err("-v: at most 4 (-vvvv)".into());
                }
            }
            other if other.starts_with('-') => return Err(format!("unknown argument {other}")),
            _ if !limits_given => {
                limits = Some(arg);
                limits_given = true;
            }
            _ => return Err(format!("unexpected argument {arg}")),
        }
    }

    let port: u16 = port
        .parse()
        .map_err(|e| format!("--rls-port {port}: {e}"))?;
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.clone()
    };
    let listen: SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|e| format!("--rls-ip {ip}: {e}"))?;
    let headers = match headers.as_str() {
        "NONE" => false,
        "DRAFT_VERSION_03" => true,
        other => {
            return Err(format!(
                "--rate-limit-headers {other}: NONE or DRAFT_VERSION_03"
            ))
        }
    };
    let storage = match storage {
        Some(storage) => storage,
        None => match env("REDIS_URL") {
            Some(url) => Storage::Redis {
                url,
                max_reconnect_delay_ms: None,
            },
            None => Storage::Memory { cache_size: 10_000 },
        },
    };
    Ok(Args {
        limits: limits.ok_or("the required argument <LIMITS_FILE> was not provided")?,
        listen,
        storage,
        headers,
        as_limitador: true,
    })
}

/// `-p8081` → ("-p", "8081"), `--rls-port=8081` → ("--rls-port", "8081"); `-vvv` stays whole.
fn split_flag(arg: &str) -> (String, Option<String>) {
    if let Some(long) = arg.strip_prefix("--") {
        if let Some((name, value)) = long.split_once('=') {
            return (format!("--{name}"), Some(value.to_string()));
        }
        return (arg.to_string(), None);
    }
    let mut chars = arg.chars();
    if chars.next() == Some('-') {
        if let Some(short) = chars.next() {
            let rest: String = chars.collect();
            if !rest.is_empty() && "bpHBPL".contains(short) {
                let value = rest.strip_prefix('=').unwrap_or(&rest).to_string();
                return (format!("-{short}"), Some(value));
            }
        }
    }
    (arg.to_string(), None)
}

fn parse_storage(
    name: &str,
    rest: Vec<String>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Storage, String> {
    let mut rest = rest.into_iter();
    match name {
        "redis" => {
            let url = match rest.next() {
                Some(url) if !url.starts_with('-') => url,
                Some(other) => return Err(format!("redis: unknown argument {other}")),
                None => {
                    env("REDIS_URL").ok_or("redis: the required argument <URL> was not provided")?
                }
            };
            if let Some(extra) = rest.next() {
                return Err(format!("redis: unexpected argument {extra}"));
            }
            Ok(Storage::Redis {
                url,
                max_reconnect_delay_ms: None,
            })
        }
        _ => {
            let mut cache_size = 10_000u64;
            while let Some(arg) = rest.next() {
                let (flag, inline) = match arg.split_once('=') {
                    Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                    _ if arg.starts_with("-c") && arg.len() > 2 => (
                        "-c".to_string(),
                        Some(arg[2..].trim_start_matches('=').to_string()),
                    ),
                    _ => (arg.clone(), None),
                };
                match flag.as_str() {
                    "-c" | "--cache" => {
                        let v = match inline {
                            Some(v) => v,
                            None => rest.next().ok_or("memory: --cache needs a value")?,
                        };
                        cache_size = v.parse().map_err(|e| format!("memory: --cache {v}: {e}"))?;
                    }
                    other => return Err(format!("memory: unexpected argument {other}")),
                }
            }
            Ok(Storage::Memory { cache_size })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Args, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        super::parse(args.iter().map(|s| s.to_string()), move |k| {
            env.iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
        })
    }

    fn parse(args: &[&str]) -> Result<Args, String> {
        parse_with(args, &[])
    }

    fn redis(url: &str) -> Storage {
        Storage::Redis {
            url: url.into(),
            max_reconnect_delay_ms: None,
        }
    }

    #[test]
    fn the_compose_files_command_line() {
        // envoy/docker-compose.fleet.yml's command, after the program name.
        let args = parse(&[
            "--rls-ip",
            "0.0.0.0",
            "--rls-port",
            "8081",
            "--rate-limit-headers",
            "NONE",
            "/opt/kuadrant/limits/limits.yaml",
            "redis",
            "redis://redis:6379",
        ])
        .unwrap();
        assert_eq!(args.limits, "/opt/kuadrant/limits/limits.yaml");
        assert_eq!(args.listen, "0.0.0.0:8081".parse().unwrap());
        assert_eq!(args.storage, redis("redis://redis:6379"));
        assert!(!args.headers);
        assert!(args.as_limitador);
    }

    #[test]
    fn kuadrants_sandbox_line_with_short_flags_and_verbosity() {
        let args = parse(&[
            "-b",
            "127.0.0.1",
            "-p8082",
            "-vvv",
            "-H=DRAFT_VERSION_03",
            "limits.yaml",
            "redis",
            "redis://127.0.0.1:6379",
        ])
        .unwrap();
        assert_eq!(args.listen, "127.0.0.1:8082".parse().unwrap());
        assert!(args.headers);
        let args = parse(&[
            "--rls-port=9000",
            "-v",
            "-v",
            "l.yaml",
            "memory",
            "-c",
            "50",
        ])
        .unwrap();
        assert_eq!(args.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(args.storage, Storage::Memory { cache_size: 50 });
        assert!(parse(&["-vvv", "-vv", "l.yaml"]).is_err(), "at most -vvvv");
    }

    #[test]
    fn defaults_come_from_the_environment_as_limitador_servers() {
        let args = parse(&["l.yaml"]).unwrap();
        assert_eq!(args.listen, "0.0.0.0:8081".parse().unwrap());
        assert_eq!(args.storage, Storage::Memory { cache_size: 10_000 });
        let env = [
            ("LIMITS_FILE", "/etc/limits.yaml"),
            ("ENVOY_RLS_HOST", "127.0.0.1"),
            ("ENVOY_RLS_PORT", "7000"),
            ("REDIS_URL", "redis://r:6379"),
            ("RATE_LIMIT_HEADERS", "DRAFT_VERSION_03"),
        ];
        let args = parse_with(&[], &env).unwrap();
        assert_eq!(args.limits, "/etc/limits.yaml");
        assert_eq!(args.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(args.storage, redis("redis://r:6379"));
        assert!(args.headers);
        // `redis` without a URL takes REDIS_URL; the command line wins over the environment.
        let args = parse_with(&["-p", "7001", "other.yaml", "redis"], &env).unwrap();
        assert_eq!(args.storage, redis("redis://r:6379"));
        assert_eq!(
            (args.limits.as_str(), args.listen.port()),
            ("other.yaml", 7001)
        );
        assert!(parse(&["l.yaml", "redis"]).is_err(), "no URL anywhere");
    }

    #[test]
    fn refuses_what_it_cannot_honour_by_name() {
        for args in [
            &["--http-port", "8080", "l.yaml"][..],
            &["-P", "8080", "l.yaml"],
            &["--http-ip=0.0.0.0", "l.yaml"],
            &["--validate", "l.yaml"],
            &["--grpc-reflection-service", "l.yaml"],
            &["--tracing-endpoint", "http://x", "l.yaml"],
            &["-l", "l.yaml"],
        ] {
            let err = parse(args).unwrap_err();
            assert!(
                err.contains("not supported by fleet-engine"),
                "{args:?}: {err}"
            );
            assert!(err.starts_with(args[0].split('=').next().unwrap()), "{err}");
        }
        for storage in ["disk", "redis_cached", "distributed"] {
            let err = parse(&["l.yaml", storage, "x"]).unwrap_err();
            assert!(
                err.contains(storage) && err.contains("not supported"),
                "{err}"
            );
        }
        assert!(parse(&[]).unwrap_err().contains("<LIMITS_FILE>"));
        assert!(parse(&["l.yaml", "m.yaml"]).is_err());
        assert!(parse(&["--rls-port", "x", "l.yaml"]).is_err());
        assert!(parse(&["--rate-limit-headers", "draft", "l.yaml"]).is_err());
        assert!(parse(&["--bogus", "l.yaml"]).is_err());
        assert!(parse(&["l.yaml", "redis", "redis://a", "extra"]).is_err());
        assert!(parse(&["l.yaml", "memory", "--bogus"]).is_err());
        assert_eq!(parse(&["--help"]).unwrap_err(), "");
    }

    #[test]
    fn an_ipv6_address_listens_too() {
        let args = parse(&["-b", "::", "-p", "8081", "l.yaml"]).unwrap();
        assert_eq!(args.listen, "[::]:8081".parse().unwrap());
    }
}
