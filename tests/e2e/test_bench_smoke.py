"""The benchmark harness (bench/envoy_bench.py, `make bench`) in its smoke mode, so it cannot rot:
all seven configurations start in real Envoys, answer as they should (config 4: 200 with
x-ratelimit headers, config 5: 429 with Retry-After), and take a second of wrk load each.
Needs what `make bench-setup` installs: wrk and the no-op Wasm filter."""
import shutil
import signal
import subprocess
import sys

import pytest

from harness import ROOT, WASM, envoy_binary

SCRIPT = ROOT / "bench" / "envoy_bench.py"
NOOP_WASM = ROOT / "bench" / "noop" / "target" / "wasm32-wasip1" / "release" / "noop_filter.wasm"


def test_benchmark_smoke_mode_succeeds():
    missing = [str(p) for p in (WASM, NOOP_WASM) if not p.exists()]
    if not shutil.which("wrk"):
        missing.append("wrk")
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `make build bench-setup`")
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--smoke", "--envoy", envoy_binary()],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
    )
    try:
        out, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        # SIGTERM lets the script stop the Envoys it started (by their ids) before it exits.
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        pytest.fail(f"smoke mode did not finish in 90 s:\n{out}")
    assert proc.returncode == 0, out
    assert "SMOKE OK: 7 configurations" in out, out
    for config in "1234567":
        assert f"config {config}: " in out, out
