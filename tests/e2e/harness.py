"""Starting and stopping a real Envoy with the filter, and talking HTTP to it.

Every process is started here and stopped by its own process id (never by name), also when a test
fails. Envoy runs from `envoy/envoy.yaml` with only ports, the .wasm path, the concurrency and the
filter configuration swapped, so the tests exercise the config users run.
"""
from __future__ import annotations

import copy
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "envoy"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import fleet_config  # noqa: E402
import native_config  # noqa: E402
import procs  # noqa: E402
from procs import admin_get, free_port, stop, wait_for_port  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[2]
ENVOY_YAML = ROOT / "envoy" / "envoy.yaml"
# RATELIMIT_WASM points the tests at another build of the filter (e.g. one in a scratch target dir).
BUILT_WASM = ROOT / "target" / "filter" / "envoy_ratelimit_wasm.wasm"
WASM = Path(os.environ.get("RATELIMIT_WASM", BUILT_WASM))
UPSTREAM = ROOT / "envoy" / "demo_upstream.py"
# The same filter as an Envoy dynamic module (make build-native); RATELIMIT_NATIVE points at
# another build.
BUILT_NATIVE = ROOT / "target" / "filter" / "libenvoy_ratelimit.so"
NATIVE = Path(os.environ.get("RATELIMIT_NATIVE", BUILT_NATIVE))
# The hosts the end-to-end tests run the filter in: the proxy-wasm filter and the dynamic module
# (RATELIMIT_HOSTS=wasm or =native runs one of them).
HOSTS = [h.strip() for h in os.environ.get("RATELIMIT_HOSTS", "wasm,native").split(",") if h.strip()]
assert set(HOSTS) <= {"wasm", "native"} and HOSTS, f"RATELIMIT_HOSTS: wasm, native or both, not {HOSTS}"


def envoy_binary() -> str:
    return procs.envoy_binary()


class Upstream:
    """The demo upstream (or another upstream `script`) on a free port."""

    def __init__(self, script: Path = UPSTREAM) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(script), "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc)

    def close(self) -> None:
        stop(self.proc)


def render_config(
    filter_config: dict | str | None,
    upstream_port: int,
    listen_port: int,
    admin_port: int,
    hcm_overrides: dict | None = None,
    clusters: list[dict] | None = None,
    envoy_yaml: Path = ENVOY_YAML,
    host: str = "wasm",
    plugin_overrides: dict | None = None,
    build: Path | None = None,
) -> dict:
    """envoy/envoy.yaml (or another Envoy config of the same shape) with ports, .wasm path and
    (optionally) the filter configuration swapped, and `clusters` added (e.g. the rate limit
    service's). `host="native"` swaps the Wasm filter for the dynamic module, with the same
    configuration. `plugin_overrides` sets fields of the Wasm filter's `PluginConfig` (e.g. its failure
    policy; None removes one); `build` loads another build of the filter (a .wasm, or a .so for the module)."""
    config = yaml.safe_load(envoy_yaml.read_text())
    config = copy.deepcopy(config)
    config["admin"]["address"]["socket_address"]["port_value"] = admin_port
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"]["port_value"] = listen_port
    cluster = config["static_resources"]["clusters"][0]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    endpoint["address"]["socket_address"]["port_value"] = upstream_port
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm.update(hcm_overrides or {})
    wasm = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm")
    plugin = wasm["typed_config"]["config"]
    plugin["vm_config"]["code"]["local"]["filename"] = str(build if build and host == "wasm" else WASM)
    for name, value in (plugin_overrides or {}).items():
        if value is None:
            plugin.pop(name, None)
        else:
            plugin[name] = value
    if filter_config is not None:
        text = filter_config if isinstance(filter_config, str) else json.dumps(filter_config)
        plugin["configuration"]["value"] = text
    config["static_resources"]["clusters"].extend(clusters or [])
    if host == "native":
        filters = hcm["http_filters"]
        module = str(build if build else NATIVE)
        filters[filters.index(wasm)] = native_config.native_filter(plugin["configuration"]["value"], module)
    return config


def listener_resource(filter_config, listen_port, upstream_port, admin_port, host="wasm", build=None):
    """render_config's bootstrap without its listener, and the listener as an LDS resource."""
    bootstrap = render_config(filter_config, upstream_port, listen_port, admin_port, host=host, build=build)
    listener = bootstrap["static_resources"].pop("listeners")[0]
    listener["@type"] = "type.googleapis.com/envoy.config.listener.v3.Listener"
    return bootstrap, {"resources": [listener]}


def grpc_cluster(name: str, port: int) -> dict:
    """An HTTP/2 cluster on 127.0.0.1:`port`, as a rate limit service needs (the one
    envoy/fleet_config.py adds for `make run-fleet`, renamed)."""
    cluster = fleet_config.service_cluster("127.0.0.1", port)
    cluster["name"] = cluster["load_assignment"]["cluster_name"] = name
    return cluster


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)


@dataclass
class Envoy:
    """A running Envoy with the filter."""

    filter_config: dict | str | None
    upstream: Upstream
    concurrency: int = 2
    listen_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    hcm_overrides: dict | None = None
    clusters: list[dict] | None = None
    envoy_yaml: Path = ENVOY_YAML
    host: str = "wasm"
    plugin_overrides: dict | None = None
    build: Path | None = None

    def start(self, wait: bool = True) -> "Envoy":
        # One process per Envoy object: a second start would lose the first process's id.
        assert self.proc is None, "this Envoy has been started already"
        config = render_config(
            self.filter_config, self.upstream.port, self.listen_port, self.admin_port,
            self.hcm_overrides, self.clusters, self.envoy_yaml, self.host,
            self.plugin_overrides, self.build,
        )
        workdir = Path(tempfile.mkdtemp(prefix="envoy-e2e-"))
        config_path = workdir / "envoy.yaml"
        config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "envoy.log"
        self.proc = subprocess.Popen(
            [
                envoy_binary(),
                "-c", str(config_path),
                "--concurrency", str(self.concurrency),
                "--disable-hot-restart",
                "--log-level", "info",
                "--log-path", str(self.log_path),
                "--file-flush-interval-msec", "100",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        assert self.proc is not None
        procs.wait_envoy_ready(self.admin_port, self.listen_port, self.proc, timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def close(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def __enter__(self) -> "Envoy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- HTTP -----------------------------------------------------------------------------------
    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.listen_port, timeout=10)

    def request(
        self,
        path: str,
        headers: dict | None = None,
        method: str = "GET",
        conn: http.client.HTTPConnection | None = None,
    ) -> Response:
        own = conn is None
        conn = conn or self.connection()
        try:
            conn.request(method, path, headers=headers or {})
            r = conn.getresponse()
            body = r.read()
            return Response(r.status, r.getheaders(), body)
        finally:
            if own:
                conn.close()

    def burst(self, path: str, headers: dict, total: int, connections: int) -> list[Response]:
        """`total` requests over `connections` parallel keep-alive connections."""
        per_conn = [total // connections + (1 if i < total % connections else 0) for i in range(connections)]

        def run(n: int) -> list[Response]:
            conn = self.connection()
            try:
                return [self.request(path, headers, conn=conn) for _ in range(n)]
            finally:
                conn.close()

        with ThreadPoolExecutor(max_workers=connections) as pool:
            results = list(pool.map(run, per_conn))
        return [r for chunk in results for r in chunk]


class LdsEnvoy:
    """An Envoy whose listener (the filter with its configuration) comes by LDS from a file in a
    watched directory, as a control plane or an operator reloads it: `publish()` swaps the file
    atomically (write, then rename) for another filter configuration, another build of the filter,
    another server name or `vm_id`; Envoy applies it and drains the previous listener, or rejects
    it and keeps the previous one (`lds.update_rejected`). Same bootstrap as `Envoy` otherwise
    (render_config); `extra_args` are added to Envoy's command line (e.g. `--drain-time-s`).
    Started by `start()` (or as a context manager) and stopped by its process id."""

    def __init__(self, upstream_port: int, workdir: Path, filter_config, host: str = "wasm",
                 concurrency: int = 2, hcm_overrides: dict | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.upstream_port, self.workdir, self.host = upstream_port, Path(workdir), host
        self.hcm_overrides, self.concurrency, self.extra_args = hcm_overrides, concurrency, extra_args
        self.listen_port, self.admin_port = free_port(), free_port()
        self.lds_dir = self.workdir / "lds"
        self.lds_dir.mkdir(parents=True, exist_ok=True)
        self.lds_path = self.lds_dir / "lds.yaml"
        self.log_path = self.workdir / "envoy.log"
        self.proc: subprocess.Popen | None = None
        self.publish(filter_config)

    def _render(self, filter_config, build: Path | None = None) -> tuple[dict, dict]:
        bootstrap = render_config(filter_config, self.upstream_port, self.listen_port, self.admin_port,
                                  self.hcm_overrides, host=self.host, build=build)
        listener = bootstrap["static_resources"].pop("listeners")[0]
        listener["@type"] = "type.googleapis.com/envoy.config.listener.v3.Listener"
        return bootstrap, {"resources": [listener]}

    def publish(self, filter_config, build: Path | None = None, server_name: str | None = None,
                vm_id: str | None = None) -> None:
        """The listener with `filter_config`, the filter `build` (default: the one under test) and,
        if given, the connection manager's `server_name` (the `server` header of every response it
        sends: which listener answered) and the Wasm filter's `vm_id`, swapped in atomically
        (Envoy never reads half a file)."""
        _, resource = self._render(filter_config, build)
        hcm = resource["resources"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        if server_name:
            hcm["server_name"] = server_name
        if vm_id:
            wasm = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm")
            wasm["typed_config"]["config"]["vm_config"]["vm_id"] = vm_id
        staged = self.lds_dir / ".staged.yaml"
        staged.write_text(yaml.safe_dump(resource))
        os.rename(staged, self.lds_path)

    def start(self) -> "LdsEnvoy":
        assert self.proc is None, "this Envoy has been started already"
        bootstrap, _ = self._render(None)
        bootstrap["dynamic_resources"] = {"lds_config": {
            "resource_api_version": "V3",
            "path_config_source": {"path": str(self.lds_path), "watched_directory": {"path": str(self.lds_dir)}},
        }}
        bootstrap["node"] = {"id": "test", "cluster": "test"}
        boot = self.workdir / "bootstrap.yaml"
        boot.write_text(yaml.safe_dump(bootstrap))
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", str(boot), "--concurrency", str(self.concurrency), "--disable-hot-restart",
             "--log-path", str(self.log_path), "--file-flush-interval-msec", "100", *self.extra_args],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        try:
            procs.wait_envoy_ready(self.admin_port, self.listen_port, self.proc)
        except BaseException:
            self.close()
            raise
        return self

    def stat(self, name: str) -> int:
        """One of Envoy's stats by its full name (0 when it does not exist yet)."""
        text = admin_get(self.admin_port, f"/stats?filter=^{re.escape(name)}$")
        match = re.search(r": (\d+)", text)
        return int(match.group(1)) if match else 0

    def wait_for(self, name: str, value: int, timeout: float = 20) -> None:
        """Waits until stat `name` reaches `value` (e.g. `listener_manager.lds.update_success`)."""
        assert eventually(lambda: self.stat(name) >= value, timeout=timeout, every=0.1), f"{name} never reached {value}"

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.listen_port, timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        stop(self.proc)

    def __enter__(self) -> "LdsEnvoy":
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def http_get(port: int, path: str, headers: dict | None = None, host: str = "127.0.0.1") -> Response:
    """One GET on its own connection."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return Response(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


def prometheus(envoy: "Envoy") -> dict[str, int]:
    """The filter's stats from the admin endpoint's Prometheus output (name -> value), settled.
    The Wasm filter's appear as `ratelimit_...`, the module's under Envoy's prefix and the
    module's metrics namespace, `envoy_dynamicmodulescustom_ratelimit_...`: the same names."""
    return settled(lambda: {m.group(1): int(m.group(2)) for m in re.finditer(
        r"^(?:envoy_dynamicmodulescustom_)?(ratelimit_\w+)\{\} (\d+)$",
        admin_get(envoy.admin_port, "/stats/prometheus"), re.M)})


def settled(read, timeout: float = 15):
    """What `read()` gives once the filter's stats have settled. Each worker VM hands its counts to
    Envoy on a one-second timer, which a busy machine can delay: two reads a tick apart that agree
    show every worker has handed over (after `timeout`, the last read, for the test to judge)."""
    time.sleep(1.3)
    last, deadline = read(), time.monotonic() + timeout
    while True:
        time.sleep(1.1)
        now = read()
        if now == last or time.monotonic() > deadline:
            return now
        last = now


def eventually(check, timeout: float = 5, every: float = 0.05):
    """`check()`'s first true value, polled until `timeout` passes (then its last value, for the
    test's assertion to fail on): for what Envoy does a moment later, such as flushing its log
    file (every 100 ms) or serving from a listener it has just updated."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)
