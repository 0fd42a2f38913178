"""Redis and the fleet engine (tools/fleet-engine) for tests: start, stop, pause, and talk to them.

Each process is started here on a free loopback port and stopped by its own process id (never by
name), also when a test fails: use the `fleet_redis` and `start_fleet_engine` fixtures, or the
classes as context managers. `pause()`/`resume()` (SIGSTOP/SIGCONT) and `stop()`/`start()` in the
middle of a test are there to exercise failure policies.

The engine speaks Envoy's rate limit service (envoy.service.ratelimit.v3 ShouldRateLimit);
`RlsClient` calls it over gRPC (grpcio) with the few protobuf messages encoded here by hand.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import procs
from procs import free_port

ROOT = Path(__file__).resolve().parents[2]
# Where `make fleet-engine` (tools/fleet-engine/fleet-engine.mk) puts the binary; FLEET_ENGINE points elsewhere.
ENGINE_BIN = Path(os.environ.get("FLEET_ENGINE", ROOT / "tools" / "fleet-engine" / "target" / "release" / "fleet-engine"))
# `make e2e` sets FLEET_ENGINE_REQUIRED=1: there, a missing engine fails the fleet tests instead of
# skipping them (make test builds it).
REQUIRED = os.environ.get("FLEET_ENGINE_REQUIRED") == "1"
RLS_METHOD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
OK, OVER_LIMIT, UNKNOWN = 1, 2, 0


pause_process = procs.pause
_stop = procs.stop


def _wait_until(ready, proc: subprocess.Popen, what: str, log: Path | None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text(errors="replace") if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready:\n{text}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"{what} not ready after {timeout}s")


@dataclass
class StoredCounter:
    limit: dict  # namespace, seconds, conditions, variables (max_value and name are not in the key)
    variables: dict[str, str]  # CEL variable → value
    value: int
    ttl_ms: int


# --- Redis ---------------------------------------------------------------------------------------
class Redis:
    """A redis-server of its own on 127.0.0.1, no persistence, in the foreground (its pid is ours)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="fleet-redis-"))
        self.log = self.workdir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> "Redis":
        """Starts (or starts again, on the same port: counters are gone, nothing is saved)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir),
             "--logfile", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        _wait_until(lambda: self.command("PING") == "PONG", self.proc, "redis-server", self.log)
        return self

    def stop(self) -> None:
        _stop(self.proc)

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a hung Redis)."""
        pause_process(self.proc.pid)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def command(self, *args: str | int, timeout: float = 2):
        """One command over a fresh connection (RESP), for inspecting counters in tests."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(_resp_encode(args))
            return _resp_read(s.makefile("rb"))

    def counters(self) -> list["StoredCounter"]:
        """Limitador's counters as stored (text key encoding: JSON after `counter:`)."""
        out = []
        for key in self.command("KEYS", "*,counter:*"):
            body = json.loads(key.split(",counter:", 1)[1])
            value, ttl = self.command("GET", key), self.command("PTTL", key)
            if value is not None:
                out.append(StoredCounter(body["limit"], body["set_variables"], int(value), int(ttl)))
        return out

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> "Redis":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _resp_encode(args) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _resp_read(f):
    line = f.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise ValueError(f"unexpected RESP reply {line!r}")


# --- the engine ----------------------------------------------------------------------------------
@dataclass
class Engine:
    """tools/fleet-engine on a free port with a limits file (Limitador's YAML) and Redis or memory."""

    limits_yaml: str
    redis_url: str | None = None  # None: --memory
    headers: bool = False
    # --redis-max-reconnect-delay-ms: None keeps the crate's (and limitador-server's) backoff
    redis_max_reconnect_delay_ms: int | None = None
    # "own": the engine's flags; "limitador-server": limitador-server's own command line, the
    # binary run under that name (a symlink), as the stand-in image runs it
    cli: str = "own"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fleet-engine-")))

    @property
    def log(self) -> Path:
        return self.workdir / "engine.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Engine":
        """Starts (or starts again on the same port) and waits for its start line, printed once
        it listens (which it does only once the limits are loaded and Redis answered)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        limits = self.workdir / "limits.yaml"
        limits.write_text(self.limits_yaml)
        if self.cli == "limitador-server":
            assert self.redis_max_reconnect_delay_ms is None, "not an option of limitador-server"
            program = self.workdir / "limitador-server"
            if not program.exists():
                program.symlink_to(ENGINE_BIN.resolve())
            cmd = [str(program), "--rls-ip", "127.0.0.1", "--rls-port", str(self.port),
                   "--rate-limit-headers", "DRAFT_VERSION_03" if self.headers else "NONE", str(limits)]
            cmd += ["redis", self.redis_url] if self.redis_url else ["memory"]
        else:
            cmd = [str(ENGINE_BIN), "--limits", str(limits), "--listen", self.address]
            cmd += ["--redis", self.redis_url] if self.redis_url else ["--memory"]
            if self.headers:
                cmd += ["--rate-limit-headers", "DRAFT_VERSION_03"]
            if self.redis_max_reconnect_delay_ms is not None:
                cmd += ["--redis-max-reconnect-delay-ms", str(self.redis_max_reconnect_delay_ms)]
        marker = f"ShouldRateLimit on {self.address} "
        before = self.output().count(marker)  # a restart appends to the same log
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

        def serving() -> bool:  # the start line is printed once the port is bound
            return self.output().count(marker) > before

        _wait_until(serving, self.proc, "fleet-engine", self.log)
        return self

    def stop(self) -> None:
        _stop(self.proc)

    def restart(self) -> "Engine":
        self.stop()
        return self.start()

    def pause(self) -> None:
        pause_process(self.proc.pid)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def client(self) -> "RlsClient":
        return RlsClient(self.address)

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> "Engine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


# --- the protocol --------------------------------------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(tag: int, data: bytes) -> bytes:
    return _varint(tag << 3 | 2) + _varint(len(data)) + data


def encode_request(domain: str, descriptors, hits_addend: int | None = None) -> bytes:
    """RateLimitRequest: domain (1), descriptors (2) of entries (1) {key (1), value (2)},
    hits_addend (3). `descriptors` is a list of descriptors, each a list of (key, value)
    pairs or a dict; `hits_addend=None` leaves the field unset."""
    out = _field_bytes(1, domain.encode())
    for descriptor in descriptors:
        pairs = descriptor.items() if isinstance(descriptor, dict) else descriptor
        entries = b"".join(
            _field_bytes(1, _field_bytes(1, k.encode()) + _field_bytes(2, v.encode())) for k, v in pairs
        )
        out += _field_bytes(2, entries)
    if hits_addend is not None:
        out += _varint(3 << 3 | 0) + _varint(hits_addend)
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def _fields(data: bytes):
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        tag, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
        elif wire == 2:
            n, i = _read_varint(data, i)
            value, i = data[i:i + n], i + n
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield tag, value


@dataclass
class Answer:
    code: int  # OK, OVER_LIMIT or UNKNOWN
    headers: dict[str, str]
    statuses: int  # how many DescriptorStatus entries came back

    @property
    def ok(self) -> bool:
        return self.code == OK


def decode_response(data: bytes) -> Answer:
    code, headers, statuses = UNKNOWN, {}, 0
    for tag, value in _fields(data):
        if tag == 1:
            code = value
        elif tag == 2:
            statuses += 1
        elif tag == 3:
            kv = dict(_fields(value))
            headers[kv.get(1, b"").decode()] = kv.get(2, b"").decode()
    return Answer(code, headers, statuses)


class RlsClient:
    """A gRPC channel to one engine; `call` returns an Answer or raises grpc.RpcError."""

    def __init__(self, address: str) -> None:
        import grpc

        self.channel = grpc.insecure_channel(address)
        self._call = self.channel.unary_unary(RLS_METHOD)  # bytes in, bytes out

    def call(self, domain: str, descriptors, hits_addend: int | None = None, timeout: float = 2.0) -> Answer:
        return decode_response(self._call(encode_request(domain, descriptors, hits_addend), timeout=timeout))

    def future(self, domain: str, descriptors, hits_addend: int | None = None, timeout: float = 10.0):
        """A call in flight; `.result()` gives the raw bytes (decode_response)."""
        return self._call.future(encode_request(domain, descriptors, hits_addend), timeout=timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "RlsClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- fixtures --------------------------------------------------------------------------------------
@pytest.fixture
def fleet_redis():
    """A Redis of its own for one test, stopped afterwards whatever happened."""
    redis = Redis()
    try:
        yield redis.start()
    finally:
        redis.close()


@pytest.fixture
def start_fleet_engine():
    """start(limits_yaml, redis_url=None, **options) -> a running Engine (options: the Engine
    fields headers, redis_max_reconnect_delay_ms, cli); every engine started is stopped after the
    test, pass or fail."""
    if not ENGINE_BIN.exists():
        missing = f"fleet engine not built ({ENGINE_BIN} is missing): run `make fleet-engine`"
        if REQUIRED:
            pytest.fail(missing)
        pytest.skip(missing)
    started: list[Engine] = []

    def start(limits_yaml: str, redis_url: str | None = None, **options) -> Engine:
        engine = Engine(limits_yaml, redis_url=redis_url, **options)
        started.append(engine)
        return engine.start()

    try:
        yield start
    finally:
        for engine in started:
            engine.close()
