#!/usr/bin/env python3
"""`make run`: the demo upstream and Envoy with the filter, and a console a newcomer can read.

Starts envoy/demo_upstream.py and Envoy with envoy/envoy.yaml (ports, as in that file: Envoy on
127.0.0.1:10000, admin on :9901, the upstream on :8080). Envoy logs warnings and errors, the
filter's own lines (its configuration being loaded, refusals) and the access log of envoy.yaml, one
line per request; once Envoy is ready, this prints where to send requests and what the rules are.
Ctrl-C (or SIGTERM) stops both processes, by their process ids.

    .venv/bin/python envoy/run.py [--envoy .venv/bin/envoy] [--config envoy/envoy.yaml] [--concurrency 2]
    .venv/bin/python envoy/run.py --example llm   # envoy/examples/llm/: its envoy.yaml and upstream.py
    .venv/bin/python envoy/run.py --native        # the filter as a dynamic module (envoy/envoy.native.yaml)
"""
from __future__ import annotations

import argparse
import http.client
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import procs  # noqa: E402

sys.path.insert(0, str(ROOT / "envoy"))
import native_config  # noqa: E402

# Envoy's console for people: no start-up chatter (info prints ~240 lines of extension lists), the
# filter's log lines (component "wasm", info: configuration loaded, refusals), a short line prefix,
# and the access log written out within a tenth of a second (the default is 10 s).
# docker-compose.yml passes the same flags; a test checks it.
CONSOLE_FLAGS = [
    "--log-level", "warning",
    "--component-log-level", "wasm:info",
    "--log-format", "[%T.%e][%l][%n] %v",
    "--file-flush-interval-msec", "100",
]


def addresses(config: dict) -> dict:
    static = config["static_resources"]
    listener = static["listeners"][0]["address"]["socket_address"]
    admin = config["admin"]["address"]["socket_address"]
    endpoint = static["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    upstream = endpoint["address"]["socket_address"]
    return {
        "listen": (listener["address"], listener["port_value"]),
        "admin": (admin["address"], admin["port_value"]),
        "upstream": (upstream["address"], upstream["port_value"]),
    }


def filter_rules(config: dict) -> list[dict]:
    return json.loads(native_config.filter_json(config)).get("rules", [])


def key_source(source: dict) -> str:
    kind, arg = next(iter(source.items()))
    return f"{kind} {arg}" if isinstance(arg, str) else kind


def describe(rule: dict) -> str:
    path = rule.get("match", {}).get("path", {})
    where = " ".join(f"{kind} {value}" for kind, value in path.items()) or "every path"
    if rule.get("exempt"):
        return f"{rule['name']}: {where}, exempt"
    limits = ", ".join(
        f"{lim['requests']} {lim.get('unit', 'requests')} per {lim['window']}" for lim in rule.get("limits", [])
    )
    keys = " else ".join(key_source(k) for k in rule.get("key", [{"client_ip": {}}]))
    return f"{rule['name']}: {where}, {limits}, per {keys}"


# What to try first, per example (the default demo: none).
TRY = {
    None: [
        "curl -i -H 'x-api-key: demo' {url}/api/links",
    ],
    "llm": [
        "curl -i {url}/v1/chat/completions -H 'authorization: Bearer sk-demo' \\\n"
        "      -H 'x-demo-tokens: 300' -d '{{\"model\": \"demo-model\", \"messages\": []}}'",
        "curl -N {url}/v1/chat/completions -H 'authorization: Bearer sk-demo' \\\n"
        "      -d '{{\"model\": \"demo-model\", \"messages\": [], \"stream\": true}}'",
        "OPENAI_BASE_URL={url}/v1 OPENAI_API_KEY=sk-demo python3 -c 'import openai; ...'"
        "  (envoy/examples/llm/README.md)",
    ],
}


def banner(config: dict, config_path: Path, example: str | None = None) -> str:
    a = addresses(config)
    host, port = a["listen"]
    url = f"http://{host}:{port}"
    rules = "\n".join(f"    {describe(r)}" for r in filter_rules(config))
    shown = config_path.relative_to(ROOT) if config_path.is_relative_to(ROOT) else config_path
    tries = "\n".join(f"  {line.format(url=url)}" for line in TRY.get(example, TRY[None]))
    return (
        f"\nEnvoy with the rate-limit filter is ready ({shown}):\n"
        f"  {url}  -> demo upstream on {a['upstream'][0]}:{a['upstream'][1]};"
        f" admin http://{a['admin'][0]}:{a['admin'][1]}\n"
        f"  rules:\n{rules}\n"
        f"Try:\n{tries}\n"
        f"Below: one line per request (the access log of {config_path.name}),\nand the filter's"
        f" refusal lines (at most one per second per Envoy worker). Ctrl-C stops.\n"
    )


def wait_listening(host: str, port: int, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    try:
        procs.wait_for_port(port, proc, what, timeout, host)
    except RuntimeError:
        raise SystemExit(f"{what} exited with {proc.returncode} (is {host}:{port} already in use?)")
    except TimeoutError as e:
        raise SystemExit(str(e))


def wait_ready(admin: tuple[str, int], listen: tuple[str, int], envoy: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if envoy.poll() is not None:
            raise SystemExit(f"Envoy exited with {envoy.returncode}; its messages are above")
        conn = http.client.HTTPConnection(*admin, timeout=2)
        try:
            conn.request("GET", "/ready")
            if conn.getresponse().read().strip() == b"LIVE":
                wait_listening(*listen, envoy, "Envoy", timeout)
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    raise SystemExit(f"Envoy not ready after {timeout:.0f} s")


stop = procs.stop


def on_sigterm(signum, frame):
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """SIGTERM and Ctrl-C both stop everything this script started, by process id (Ctrl-C even
    when SIGINT was ignored at start, as in a background job)."""
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envoy", default=str(ROOT / ".venv" / "bin" / "envoy"))
    ap.add_argument("--config", type=Path, help="default: envoy/envoy.yaml, or the example's envoy.yaml")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--example", help="run envoy/examples/<EXAMPLE>/: its envoy.yaml and upstream.py")
    ap.add_argument("--native", action="store_true",
                    help="the filter as an Envoy dynamic module (make build-native): envoy/envoy.native.yaml, "
                         "or the example's envoy.yaml with the module swapped in")
    args = ap.parse_args(argv)
    upstream_script, config_path = ROOT / "envoy" / "demo_upstream.py", ROOT / "envoy" / "envoy.yaml"
    if args.example:
        folder = ROOT / "envoy" / "examples" / args.example
        if not (folder / "envoy.yaml").is_file():
            raise SystemExit(f"no example {args.example!r}: {folder}/envoy.yaml does not exist")
        config_path = folder / "envoy.yaml"
        if (folder / "upstream.py").is_file():
            upstream_script = folder / "upstream.py"
    if args.native and not args.example and not args.config:
        config_path = native_config.NATIVE_YAML
    args.config = args.config or config_path
    config = yaml.safe_load(args.config.read_text())
    if args.native and args.example:
        # The example's own envoy.yaml, the module swapped in, written where Envoy reads it.
        config = native_config.to_native(config)
        args.config = ROOT / "target" / f"envoy.{args.example}.native.yaml"
        args.config.parent.mkdir(exist_ok=True)
        args.config.write_text(yaml.safe_dump(config, sort_keys=False))
    a = addresses(config)
    stop_on_signals()

    started: list[subprocess.Popen] = []
    try:
        upstream = subprocess.Popen(
            [sys.executable, str(upstream_script),
             "--host", a["upstream"][0], "--port", str(a["upstream"][1])],
            stdout=subprocess.DEVNULL,
        )
        started.append(upstream)
        wait_listening(*a["upstream"], upstream, "the demo upstream")
        flags = CONSOLE_FLAGS
        if args.native:
            # The module's lines are Envoy's `dynamic_modules` component.
            flags = [f if f != "wasm:info" else "dynamic_modules:info" for f in flags]
        if args.example:
            # Envoy warns at every start that json_to_metadata's and sse_to_metadata's protos are
            # work in progress (the example's README says so); the console shows the rest.
            flags = [f + ",misc:error" if f.endswith(":info") else f for f in flags]
        envoy = subprocess.Popen(
            [args.envoy, "-c", str(args.config), "--concurrency", str(args.concurrency),
             "--disable-hot-restart", *flags],
            cwd=ROOT,  # the .wasm path in envoy.yaml is relative to the repository root
        )
        started.append(envoy)
        wait_ready(a["admin"], a["listen"], envoy)
        print(banner(config, args.config.resolve(), args.example), flush=True)
        return envoy.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in reversed(started):
            stop(proc)


if __name__ == "__main__":
    sys.exit(main())
