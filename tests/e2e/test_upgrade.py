"""Upgrades under load, in a real Envoy: the listener swapped by LDS from the filter under test to a
build of the next page layout (`make build-layout-next`: the layout version bumped, nothing else)
and back, under the same `vm_id`, while clients keep sending on old and new connections.

While a swapped listener drains, its old connections are still served by the old filter and new
ones by the new: both layouts run at once on the same keys. Each counts on its own pages (the
layout is part of the page keys), so within a window a client is admitted at most its limit per
layout that served it, and a layout that serves again finds its counts where it left them.
"""
import http.client
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from harness import NATIVE, ROOT, WASM, LdsEnvoy, eventually

NEXT = {
    "wasm": ROOT / "target" / "filter" / "test" / "envoy_ratelimit_wasm.layout-next.wasm",
    "native": ROOT / "target" / "filter" / "test" / "libenvoy_ratelimit_layout_next.so",
}
LIMIT = 4
CONFIG = {"rules": [{"name": "api", "key": [{"header": "x-api-key"}],
                     "limits": [{"requests": LIMIT, "window": "60s"}]}]}
HAMMERED = ["hot-a", "hot-b", "hot-c"]
TRAPS = ("panicked", "wasm trap", "unreachable", "Function: proxy_on_request_headers failed",
         "was caught (panic")


class Client(threading.Thread):
    """One key's traffic until stopped: every round, one request on each connection it keeps
    (one opened at the start of each phase, so each stays on the listener of its phase while later
    ones drain it) and one on a fresh connection (the newest listener). Records (server, status)."""

    def __init__(self, envoy: LdsEnvoy, key: str) -> None:
        super().__init__(daemon=True)
        self.envoy, self.key = envoy, key
        self.kept: list[http.client.HTTPConnection] = []
        self.want_new_kept = threading.Event()
        self.stopping = threading.Event()
        self.seen: list[tuple[str, int]] = []
        self.errors: list[str] = []

    def send(self, conn: http.client.HTTPConnection) -> None:
        try:
            conn.request("GET", "/x", headers={"x-api-key": self.key})
            r = conn.getresponse()
            r.read()
            self.seen.append((r.getheader("server") or "", r.status))
        except (OSError, http.client.HTTPException) as e:
            # A draining connection closed between two requests: not an answer, retried next round.
            self.errors.append(repr(e))
            conn.close()

    def run(self) -> None:
        while not self.stopping.is_set():
            if self.want_new_kept.is_set() or not self.kept:
                self.want_new_kept.clear()
                self.kept.append(self.envoy.connection())
            for conn in self.kept:
                self.send(conn)
            fresh = self.envoy.connection()
            self.send(fresh)
            fresh.close()
            time.sleep(0.03)
        for conn in self.kept:
            conn.close()


def served_by(envoy: LdsEnvoy, server: str) -> bool:
    """Whether a new connection is answered by the listener named `server`."""
    conn = envoy.connection()
    try:
        conn.request("GET", "/x", headers={"x-api-key": f"probe-{server}"})
        r = conn.getresponse()
        r.read()
        return r.getheader("server") == server
    finally:
        conn.close()


class Steady:
    """One key's requests sent one at a time by the test, alternating between a connection of the
    draining listener and a fresh one of the new listener. A layout refuses a hammered key from its
    workers' memory of refusals without reading its page again; this key is admitted while it
    alternates, so every request reads and writes the pages of both layouts in turn (had they
    shared a key, each would replace the other's page and admit it every time)."""

    def __init__(self, envoy: LdsEnvoy) -> None:
        self.envoy, self.seen = envoy, []
        self.kept = envoy.connection()

    def send(self, conn: http.client.HTTPConnection) -> None:
        conn.request("GET", "/x", headers={"x-api-key": "steady"})
        r = conn.getresponse()
        r.read()
        self.seen.append((r.getheader("server") or "", r.status))

    def alternate(self, rounds: int) -> None:
        """`rounds` times: one request on the kept connection, one on a fresh one; then the fresh
        connection of the last round is kept (for the next phase)."""
        for i in range(rounds):
            self.send(self.kept)
            fresh = self.envoy.connection()
            self.send(fresh)
            if i < rounds - 1:
                fresh.close()
        self.kept.close()
        self.kept = fresh


def swap(envoy: LdsEnvoy, clients: list[Client], build, server: str, updates: int) -> None:
    envoy.publish(CONFIG, build=build, server_name=server)
    envoy.wait_for("listener_manager.lds.update_success", updates)
    assert eventually(lambda: served_by(envoy, server), timeout=15, every=0.1), f"{server} never served"
    for c in clients:
        c.want_new_kept.set()


def test_layout_swaps_under_load_count_each_layout_apart(upstream, tmp_path, host):
    next_build = NEXT[host]
    if not next_build.exists():
        pytest.fail(f"{next_build} is missing: build it first (make build-layout-next)")
    envoy = LdsEnvoy(upstream.port, tmp_path, CONFIG, host).start()
    clients = [Client(envoy, key) for key in HAMMERED]
    steady = Steady(envoy)
    try:
        envoy.publish(CONFIG, server_name="this-1")
        envoy.wait_for("listener_manager.lds.update_success", 2)
        assert eventually(lambda: served_by(envoy, "this-1"), timeout=15, every=0.1)
        for c in clients:
            c.start()
        for _ in range(LIMIT - 1):
            steady.send(steady.kept)
        time.sleep(1.5)
        # To the next layout, and back, while the clients keep sending.
        swap(envoy, clients, next_build, "next-2", 3)
        steady.alternate(LIMIT + 2)
        time.sleep(2)
        swap(envoy, clients, None, "this-3", 4)
        steady.alternate(3)
        time.sleep(2)
    finally:
        for c in clients:
            c.stopping.set()
        for c in clients:
            c.join(timeout=15)
        log = envoy.log()
        envoy.close()

    layout = {"this-1": "this", "this-3": "this", "next-2": "next"}
    steady_admitted = Counter(layout[server] for server, status in steady.seen if status == 200)
    assert not [status for _, status in steady.seen if status not in (200, 429)], steady.seen
    assert steady_admitted == {"this": LIMIT, "next": LIMIT}, steady.seen
    # Phase 2: this-1's last admission, then next-2's LIMIT; phase 3: both layouts full.
    assert steady.seen[LIMIT - 1:] == (
        [("this-1", 200), ("next-2", 200)] + [("this-1", 429), ("next-2", 200)] * (LIMIT - 1)
        + [("this-1", 429), ("next-2", 429)] * 2 + [("next-2", 429), ("this-3", 429)] * 3
    ), steady.seen
    for c in clients:
        by_server = Counter(c.seen)
        assert not [s for s, status in c.seen if status >= 500], f"{c.key}: 5xx {by_server}"
        assert {s for s, _ in c.seen} <= set(layout), f"{c.key}: {by_server}"
        admitted = defaultdict(int)
        for (server, status), n in by_server.items():
            assert status in (200, 429), by_server
            if status == 200:
                admitted[layout[server]] += n
        # Both layouts served the key, at once: the old connections of the layout being drained
        # while new ones went to the other.
        assert by_server[("next-2", 429)] and by_server[("this-3", 429)], by_server
        # Exactly its limit on each layout's own pages: never more, however the two interleave;
        # the first layout's count kept while the next one served (still refused at this-3).
        assert admitted == {"this": LIMIT, "next": LIMIT}, f"{c.key}: {by_server}"
        assert by_server[("this-3", 200)] == 0, by_server
    for sign in TRAPS:
        assert sign not in log, sign
    # Each build says its layout when it loads: the shipped one is not the test build.
    assert "page layout 2" in log and "page layout 3" in log, log[-3000:]
    print({c.key: dict(Counter(c.seen)) for c in clients}, {c.key: len(c.errors) for c in clients},
          Counter(steady.seen))


def with_custom_section(wasm: Path, out: Path) -> Path:
    """`wasm` with a custom section appended: other bytes (so another VM for Envoy), the same code
    and page layout: a new version of the filter that kept the layout."""
    def leb(n: int) -> bytes:
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)
    name, payload = b"ratelimit-test", b"same layout, other bytes"
    body = leb(len(name)) + name + payload
    out.write_bytes(wasm.read_bytes() + b"\x00" + leb(len(body)) + body)
    return out


def test_same_layout_upgrade_and_vm_id_change(upstream, tmp_path, host):
    """A new build of the same layout under the same vm_id keeps the counts on the Wasm host (a new
    VM, the same shared data); the module's store lives in the loaded .so, so a new .so file starts
    afresh. A new vm_id starts afresh (Wasm)."""
    this = WASM if host == "wasm" else NATIVE
    if host == "wasm":
        same_layout = with_custom_section(this, tmp_path / "same-layout.wasm")
    else:
        same_layout = tmp_path / "libenvoy_ratelimit_copy.so"
        same_layout.write_bytes(this.read_bytes())

    def statuses(envoy, key, n):
        out = []
        for _ in range(n):
            conn = envoy.connection()
            try:
                conn.request("GET", "/x", headers={"x-api-key": key})
                r = conn.getresponse()
                r.read()
                out.append(r.status)
            finally:
                conn.close()
        return out

    with LdsEnvoy(upstream.port, tmp_path, CONFIG, host) as envoy:
        assert statuses(envoy, "k", LIMIT + 1) == [200] * LIMIT + [429]
        envoy.publish(CONFIG, build=same_layout, server_name="same-layout")
        envoy.wait_for("listener_manager.lds.update_success", 2)
        assert eventually(lambda: served_by(envoy, "same-layout"), timeout=15, every=0.1)
        after = statuses(envoy, "k", LIMIT + 1)
        if host == "wasm":
            assert after == [429] * (LIMIT + 1), "the new VM reads the old VM's pages"
        else:
            assert after == [200] * LIMIT + [429], "the new .so has a store of its own"
        if host == "wasm":
            # Another vm_id: another shared-data namespace, counts start afresh.
            envoy.publish(CONFIG, build=same_layout, server_name="other-vm-id", vm_id="ratelimit-other")
            envoy.wait_for("listener_manager.lds.update_success", 3)
            assert eventually(lambda: served_by(envoy, "other-vm-id"), timeout=15, every=0.1)
            assert statuses(envoy, "k", LIMIT + 1) == [200] * LIMIT + [429]
        log = envoy.log()
    for sign in TRAPS:
        assert sign not in log, sign
