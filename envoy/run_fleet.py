#!/usr/bin/env python3
"""`make run-fleet`: make run's demo, fleet-wide: three Envoys on 127.0.0.1:10000, 10001 and 10002
(admin 9901-9903), the rate limit service (tools/fleet-engine: Limitador's counting) on 127.0.0.1:8081,
Redis on 127.0.0.1:6380 and the demo upstream on :8080, in the foreground. Ctrl-C stops every
process it started, by process id.

The Envoy configs and the service's limits file are generated from envoy/envoy.yaml
(envoy/fleet_config.py); they are written to a temporary directory, printed at start.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fleet_config  # noqa: E402
from run import CONSOLE_FLAGS, ROOT, addresses, describe, stop, stop_on_signals, wait_listening, wait_ready  # noqa: E402

ENGINE = ROOT / "tools" / "fleet-engine" / "target" / "release" / "fleet-engine"
PORTS = [(10000, 9901), (10001, 9902), (10002, 9903)]
SERVICE = ("127.0.0.1", 8081)
REDIS = ("127.0.0.1", 6380)


def describe_fleet(rule: dict) -> str:
    """describe() with each fleet-wide limit marked."""
    if rule.get("exempt"):
        return describe(rule)
    plain = {**rule, "limits": [{k: v for k, v in lim.items() if k != "fleet"} for lim in rule["limits"]]}
    text = describe(plain)
    for lim in rule["limits"]:
        if lim.get("fleet"):
            text = text.replace(f"{lim['requests']} per {lim['window']}",
                                f"{lim['requests']} per {lim['window']} fleet-wide", 1)
    return text


def banner(workdir: Path, rules: list[dict]) -> str:
    listed = "\n".join(f"    {describe_fleet(r)}" for r in rules)
    urls = ", ".join(f"http://127.0.0.1:{p}" for p, _ in PORTS)
    return (
        f"\nThree Envoys share their limits through the rate limit service ({workdir}):\n"
        f"  {urls}\n  service {SERVICE[0]}:{SERVICE[1]} (Limitador over Redis {REDIS[0]}:{REDIS[1]})\n"
        f"  rules:\n{listed}\n"
        f"Try (the 11th request within a minute is refused, whichever Envoy it reaches):\n"
        f"  for p in 10000 10001 10002 10000; do curl -s -o /dev/null -w \"$p %{{http_code}}\\n\""
        f" -H 'x-api-key: demo' http://127.0.0.1:$p/api/links; done\n"
        f"Ctrl-C stops everything.\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envoy", default=str(ROOT / ".venv" / "bin" / "envoy"))
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args(argv)
    stop_on_signals()
    workdir = Path(tempfile.mkdtemp(prefix="ratelimit-fleet-"))
    filter_json = fleet_config.filter_config()
    (workdir / "limits.yaml").write_text(fleet_config.limits_yaml(filter_json))
    started: list[subprocess.Popen] = []
    try:
        redis = subprocess.Popen(["redis-server", "--port", str(REDIS[1]), "--bind", REDIS[0],
                                  "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
        started.append(redis)
        wait_listening(*REDIS, redis, "Redis")
        engine = subprocess.Popen([str(ENGINE), "--limits", str(workdir / "limits.yaml"),
                                   "--listen", f"{SERVICE[0]}:{SERVICE[1]}",
                                   "--redis", f"redis://{REDIS[0]}:{REDIS[1]}",
                                   "--redis-max-reconnect-delay-ms", "500"])
        started.append(engine)
        wait_listening(*SERVICE, engine, "the rate limit service")
        base = yaml.safe_load(fleet_config.SOURCE.read_text())
        upstream_at = addresses(base)["upstream"]
        upstream = subprocess.Popen([sys.executable, str(ROOT / "envoy" / "demo_upstream.py"),
                                     "--host", upstream_at[0], "--port", str(upstream_at[1])],
                                    stdout=subprocess.DEVNULL)
        started.append(upstream)
        wait_listening(*upstream_at, upstream, "the demo upstream")
        envoys = []
        for port, admin in PORTS:
            path = workdir / f"envoy-{port}.yaml"
            path.write_text(yaml.safe_dump(fleet_config.envoy_config(port, admin, *SERVICE), sort_keys=False))
            envoy = subprocess.Popen([args.envoy, "-c", str(path), "--concurrency", str(args.concurrency),
                                      "--disable-hot-restart", "--base-id", str(port), *CONSOLE_FLAGS], cwd=ROOT)
            started.append(envoy)
            envoys.append((envoy, ("127.0.0.1", admin), ("127.0.0.1", port)))
        for envoy, admin, listen in envoys:
            wait_ready(admin, listen, envoy)
        print(banner(workdir, [r for r in filter_json["rules"]]), flush=True)
        return envoys[0][0].wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in reversed(started):
            stop(proc)


if __name__ == "__main__":
    sys.exit(main())
