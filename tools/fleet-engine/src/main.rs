//! fleet-engine: Envoy's rate limit service (`envoy.service.ratelimit.v3.RateLimitService/
//! ShouldRateLimit`) over gRPC, counting with the `limitador` crate 0.14 and configured by a
//! Limitador limits file — the counting, the limits-file format and the request mapping of
//! `limitador-server`, in a binary that builds from crates.io (limitador-server is not there).
//!
//! The mapping mirrors `limitador-server/src/envoy_rls/server.rs` (`should_rate_limit`, read at
//! commit 0194f94, the newest version of that file available to us):
//! - `domain` is the Limitador namespace; an empty domain answers `overall_code: UNKNOWN`;
//! - descriptor i becomes the map `descriptors[i]` of the CEL context (entries as key → value;
//!   a repeated key keeps its last value, as a HashMap insert does there);
//! - `hits_addend` is the delta, 0 (unset) counting as 1;
//! - one `check_rate_limited_and_update` call decides: OK or OVER_LIMIT, `statuses` empty;
//! - a storage error answers the gRPC status UNAVAILABLE "Service unavailable", so that the
//!   caller's failure policy decides (Envoy treats an UNKNOWN answer as OK);
//! - `--rate-limit-headers DRAFT_VERSION_03` adds `X-RateLimit-Limit/-Remaining/-Reset` to
//!   `response_headers_to_add` (sorted by name), as limitador-server's flag of the same name.
//!
//! Where it differs from limitador-server (nothing that changes an answer):
//! - limitador 0.14's `check_rate_limited_and_update` takes no "load counters" flag (the
//!   server's version of the crate did); the counters it returns always carry remaining/reset,
//!   and the headers are built from them only when asked for;
//! - no HTTP API, Prometheus metrics, tracing, limits-file watching, gRPC reflection, the
//!   Kuadrant `RateLimitService` (check/report) or the `redis_cached`/disk storages;
//! - no request logging; each storage error is printed as one line on stderr;
//! - run as `limitador-server` (or `fleet-engine limitador-server ...`) it takes limitador-server's
//!   own command line, for the subset it can honour (limitador_cli.rs), so that the official
//!   image's command line runs unchanged on a stand-in image;
//! - `--redis-max-reconnect-delay-ms` (opt-in) caps the Redis client's reconnection backoff,
//!   which by default (redis 0.27.6 as limitador 0.14 locks it) can keep every call waiting for
//!   minutes after a Redis outage of more than about a second (see README.md).

mod limitador_cli;
mod rls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;

use limitador::limit::{Context, Limit, Namespace};
use limitador::storage::redis::AsyncRedisStorage;
use limitador::storage::AsyncStorage;
use limitador::{AsyncRateLimiter, AsyncRateLimiterBuilder, CheckResult, RateLimiter};
use tonic::{Request, Response, Status};

use rls::service::rate_limit_service_server::{RateLimitService, RateLimitServiceServer};
use rls::{Code, HeaderValue, RateLimitRequest, RateLimitResponse};

const USAGE: &str = "\
usage: fleet-engine --limits FILE [--listen ADDR] [--redis URL | --memory] \
[--redis-max-reconnect-delay-ms MS] [--cache-size N] [--rate-limit-headers NONE|DRAFT_VERSION_03]

  --limits FILE          Limitador limits file (the YAML limitador-server reads)
  --listen ADDR          gRPC address to serve on (default 127.0.0.1:8081)
  --redis URL            count in Redis (default redis://127.0.0.1:6379)
  --memory               count in this process instead (lost when it stops)
  --redis-max-reconnect-delay-ms MS
                         cap the delay between Redis reconnection attempts (default: the
                         crate's, as limitador-server: after an outage of more than ~1 s,
                         reconnecting can take minutes and calls wait meanwhile)
  --cache-size N         in-memory storage only: qualified counters kept (default 10000)
  --rate-limit-headers   DRAFT_VERSION_03 adds X-RateLimit-* to response_headers_to_add
                         (default NONE: no headers, like limitador-server)";

#[derive(Debug, PartialEq)]
pub(crate) enum Storage {
    Redis {
        url: String,
        max_reconnect_delay_ms: Option<u64>,
    },
    Memory {
        cache_size: u64,
    },
}

#[derive(Debug)]
pub(crate) struct Args {
    limits: String,
    listen: SocketAddr,
    storage: Storage,
    headers: bool,
    /// Given limitador-server's command line (limitador_cli.rs), not this engine's own.
    as_limitador: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut limits = None;
    let mut listen: SocketAddr = "127.0.0.1:8081".parse().unwrap();
    let mut redis = None;
    let mut memory = false;
    let mut cache_size = 10_000u64;
    let mut headers = false;
    let mut max_reconnect_delay_ms = None;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--limits" => limits = Some(value()?),
            "--listen" => {
                let v = value()?;
                listen = v.parse().map_err(|e| format!("--listen {v}: {e}"))?;
            }
            "--redis" => redis = Some(value()?),
            "--memory" => memory = true,
            "--redis-max-reconnect-delay-ms" => {
                let v = value()?;
                max_reconnect_delay_ms = Some(v.parse().map_err(|e| format!("{flag} {v}: {e}"))?);
            }
            "--cache-size" => {
                let v = value()?;
                cache_size = v.parse().map_err(|e| format!("--cache-size {v}: {e}"))?;
            }
            "--rate-limit-headers" => {
                headers = match value()?.as_str() {
                    "NONE" => false,
                    "DRAFT_VERSION_03" => true,
                    other => {
                        return Err(format!(
                            "--rate-limit-headers {other}: NONE or DRAFT_VERSION_03"
                        ))
                    }
                }
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let storage = match (redis, memory) {
        (Some(_), true) => return Err("--redis and --memory exclude each other".into()),
        (None, true) => Storage::Memory { cache_size },
        (url, false) => Storage::Redis {
            url: url.unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
            max_reconnect_delay_ms,
        },
    };
    Ok(Args {
        limits: limits.ok_or("--limits FILE is required")?,
        listen,
        storage,
        headers,
        as_limitador: false,
    })
}

/// The Limitador limits file, read as limitador-server reads it: a YAML list of `Limit`
/// (namespace, max_value, seconds, conditions, variables, and optional name and id).
fn read_limits(path: &str) -> Result<Vec<Limit>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("couldn't read {path}: {e}"))?;
    serde_yaml::from_reader(file).map_err(|e| format!("couldn't parse {path}: {e}"))
}

/// As in limitador-server: the in-memory storage behind the blocking limiter, Redis behind
/// the async one.
enum Limiter {
    Blocking(RateLimiter),
    Async(AsyncRateLimiter),
}

struct Engine {
    limiter: Limiter,
    headers: bool,
}

impl Engine {
    async fn check(
        &self,
        namespace: &Namespace,
        ctx: &Context<'_>,
        delta: u64,
    ) -> Result<CheckResult, limitador::errors::LimitadorError> {
        match &self.limiter {
            Limiter::Blocking(l) => l.check_rate_limited_and_update(namespace, ctx, delta),
            Limiter::Async(l) => l.check_rate_limited_and_update(namespace, ctx, delta).await,
        }
    }
}

#[tonic::async_trait]
impl RateLimitService for Engine {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let req = request.into_inner();
        if req.domain.is_empty() {
            return Ok(Response::new(RateLimitResponse {
                overall_code: Code::Unknown as i32,
                response_headers_to_add: vec![],
                request_headers_to_add: vec![],
            }));
        }
        let namespace: Namespace = req.domain.into();
        let values: Vec<HashMap<String, String>> = req
            .descriptors
            .into_iter()
            .map(|d| d.entries.into_iter().map(|e| (e.key, e.value)).collect())
            .collect();
        let hits_addend = if req.hits_addend == 0 {
            1
        } else {
            req.hits_addend
        } as u64;
        let mut ctx = Context::default();
        ctx.list_binding("descriptors".to_string(), values);

        let mut result = match self.check(&namespace, &ctx, hits_addend).await {
            Ok(result) => result,
            Err(e) => {
                eprintln!("fleet-engine: storage error: {e}");
                return Err(Status::unavailable("Service unavailable"));
            }
        };
        let mut response_headers_to_add = Vec::new();
        if self.headers {
            response_headers_to_add = result
                .response_header()
                .into_iter()
                .map(|(key, value)| HeaderValue { key, value })
                .collect();
            response_headers_to_add.sort_by(|a, b| a.key.cmp(&b.key));
        }
        let code = if result.limited {
            Code::OverLimit
        } else {
            Code::Ok
        };
        Ok(Response::new(RateLimitResponse {
            overall_code: code as i32,
            response_headers_to_add,
            request_headers_to_add: vec![],
        }))
    }
}

/// Limitador's async Redis storage as limitador-server makes it (`AsyncRedisStorage::new`), or
/// over a connection manager whose reconnection delay is capped (a deviation, opt-in).
async fn connect_redis(
    url: &str,
    max_reconnect_delay_ms: Option<u64>,
) -> Result<AsyncRedisStorage, redis::RedisError> {
    match max_reconnect_delay_ms {
        None => AsyncRedisStorage::new(url).await,
        Some(ms) => {
            let client = redis::Client::open(url)?;
            let config = redis::aio::ConnectionManagerConfig::new().set_max_delay(ms);
            let manager = redis::aio::ConnectionManager::new_with_config(client, config).await?;
            AsyncRedisStorage::new_with_conn_manager(manager).await
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let limits = read_limits(&args.limits)?;
    let count = limits.len();
    let mut namespaces: Vec<String> = limits
        .iter()
        .map(|l| l.namespace().as_ref().to_string())
        .collect();
    namespaces.sort();
    namespaces.dedup();

    let (limiter, storage) = match &args.storage {
        Storage::Redis {
            url,
            max_reconnect_delay_ms,
        } => {
            let redis = connect_redis(url, *max_reconnect_delay_ms)
                .await
                .map_err(|e| format!("couldn't connect to Redis at {}: {e}", redacted(url)))?;
            let limiter =
                AsyncRateLimiterBuilder::new(AsyncStorage::with_counter_storage(Box::new(redis)))
                    .build();
            limiter
                .configure_with(limits)
                .await
                .map_err(|e| format!("couldn't load the limits: {e}"))?;
            let reconnect = match max_reconnect_delay_ms {
                Some(ms) => format!(", reconnect delay at most {ms} ms"),
                None => String::new(),
            };
            (
                Limiter::Async(limiter),
                format!("redis {}{reconnect}", redacted(url)),
            )
        }
        Storage::Memory { cache_size } => {
            let limiter = RateLimiter::new(*cache_size);
            limiter
                .configure_with(limits)
                .map_err(|e| format!("couldn't load the limits: {e}"))?;
            (
                Limiter::Blocking(limiter),
                format!("memory (cache {cache_size})"),
            )
        }
    };

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("couldn't listen on {}: {e}", args.listen))?;
    let incoming = tonic::transport::server::TcpIncoming::from_listener(listener, true, None)
        .map_err(|e| format!("couldn't listen on {}: {e}", args.listen))?;
    eprintln!(
        "fleet-engine{}: serving envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit on {} \
         (limitador 0.14, storage {storage}, {count} limits in namespaces {namespaces:?} from {}, \
         rate-limit headers {})",
        if args.as_limitador {
            " (as limitador-server)"
        } else {
            ""
        },
        args.listen,
        args.limits,
        if args.headers {
            "DRAFT_VERSION_03"
        } else {
            "NONE"
        },
    );
    // SIGTERM (`docker stop`, where the engine is PID 1 and the default action does not apply):
    // exit at once, as the default action would elsewhere; calls in flight are cut.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("couldn't handle SIGTERM: {e}"))?;
    tokio::spawn(async move {
        terminate.recv().await;
        eprintln!("fleet-engine: SIGTERM, exiting");
        std::process::exit(143);
    });
    let engine = Engine {
        limiter,
        headers: args.headers,
    };
    tonic::transport::Server::builder()
        .add_service(RateLimitServiceServer::new(engine))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| format!("server error: {e}"))
}

/// The engine's own command line, or limitador-server's (limitador_cli.rs) when run under that
/// name (a stand-in image holds it as `limitador-server`) or as `fleet-engine limitador-server ...`.
fn command_line(mut argv: impl Iterator<Item = String>) -> Result<Args, (String, &'static str)> {
    let program = argv.next().unwrap_or_default();
    let mut rest: Vec<String> = argv.collect();
    let named = std::path::Path::new(&program)
        .file_name()
        .is_some_and(|name| name == limitador_cli::NAME);
    if named || rest.first().is_some_and(|a| a == limitador_cli::NAME) {
        if !named {
            rest.remove(0);
        }
        limitador_cli::parse(rest, |name| std::env::var(name).ok())
            .map_err(|e| (e, limitador_cli::USAGE))
    } else {
        parse_args(rest.into_iter()).map_err(|e| (e, USAGE))
    }
}

/// A Redis URL with its password, if any, replaced by `***` (for logs).
fn redacted(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.rsplit_once('@') {
            if let Some((user, _password)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}

fn main() -> ExitCode {
    let args = match command_line(std::env::args()) {
        Ok(args) => args,
        Err((msg, usage)) => {
            if !msg.is_empty() {
                eprintln!("fleet-engine: {msg}");
            }
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("fleet-engine: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_to_redis_on_loopback() {
        let args = parse(&["--limits", "l.yaml"]).unwrap();
        assert_eq!(
            args.storage,
            Storage::Redis {
                url: "redis://127.0.0.1:6379".into(),
                max_reconnect_delay_ms: None
            }
        );
        assert_eq!(args.listen, "127.0.0.1:8081".parse().unwrap());
        assert!(!args.headers);
    }

    #[test]
    fn rejects_what_it_cannot_honour() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["--limits", "l", "--memory", "--redis", "redis://x"]).is_err());
        assert!(parse(&["--limits", "l", "--rate-limit-headers", "draft"]).is_err());
        assert!(parse(&["--limits", "l", "--listen", "nowhere"]).is_err());
        assert!(parse(&["--limits"]).is_err());
    }

    fn argv(args: &[&str]) -> impl Iterator<Item = String> {
        args.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn takes_limitador_servers_command_line_under_its_name_or_subcommand() {
        let own = command_line(argv(&["/x/fleet-engine", "--limits", "l.yaml"])).unwrap();
        assert!(!own.as_limitador);
        let line = ["l.yaml", "redis", "redis://redis:6379"];
        let named = command_line(argv(&[
            "/home/limitador/bin/limitador-server",
            line[0],
            line[1],
            line[2],
        ]))
        .unwrap();
        let sub = command_line(argv(&[
            "fleet-engine",
            "limitador-server",
            line[0],
            line[1],
            line[2],
        ]))
        .unwrap();
        for args in [named, sub] {
            assert!(args.as_limitador);
            assert_eq!(args.limits, "l.yaml");
            assert_eq!(
                args.storage,
                Storage::Redis {
                    url: "redis://redis:6379".into(),
                    max_reconnect_delay_ms: None
                }
            );
        }
        // Each command line is its own: the engine's flags are not limitador-server's.
        assert!(command_line(argv(&["limitador-server", "--limits", "l.yaml"])).is_err());
        assert!(command_line(argv(&["fleet-engine", "l.yaml", "redis", "redis://r"])).is_err());
    }

    #[test]
    fn a_redis_password_never_reaches_the_logs() {
        assert_eq!(
            redacted("redis://user:s3cret@r:6379/0"),
            "redis://user:***@r:6379/0"
        );
        assert_eq!(redacted("redis://:s3cret@r:6379"), "redis://:***@r:6379");
        assert_eq!(redacted("redis://r:6379"), "redis://r:6379");
    }

    #[test]
    fn reads_limitadors_limits_file_format() {
        let dir = std::env::temp_dir().join(format!("fleet-engine-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("limits.yaml");
        std::fs::write(
            &path,
            "- namespace: api\n  max_value: 10\n  seconds: 60\n  name: per-client\n  \
             conditions: [\"descriptors[0]['limit'] == 'a'\"]\n  \
             variables: [\"descriptors[0]['client']\"]\n",
        )
        .unwrap();
        let limits = read_limits(path.to_str().unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(limits.len(), 1);
        assert_eq!(limits[0].namespace().as_ref(), "api");
        assert_eq!(limits[0].max_value(), 10);
        assert_eq!(limits[0].seconds(), 60);
        assert_eq!(limits[0].name(), Some("per-client"));
    }
}
