"""The benchmark harness (bench/envoy_bench.py, `make bench`) in its smoke mode, so it cannot rot:
all eleven configurations (1-7, and 4n-7n with the filter as a dynamic module) start in real
Envoys, answer as they should (config 4: 200 with x-ratelimit headers, config 5: 429 with
Retry-After), and take a second of wrk load each. Needs what `make bench-setup` installs (wrk
and the no-op Wasm filter) and the module (`make build-native`)."""
import shutil
import signal
import subprocess
import sys

import pytest

from harness import NATIVE, ROOT, WASM, envoy_binary

SCRIPT = ROOT / "bench" / "envoy_bench.py"
NOOP_WASM = ROOT / "bench" / "noop" / "target" / "wasm32-wasip1" / "release" / "noop_filter.wasm"


def test_benchmark_smoke_mode_succeeds():
    missing = [str(p) for p in (WASM, NOOP_WASM, NATIVE) if not p.exists()]
    if not shutil.which("wrk"):
        missing.append("wrk")
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `make build build-native bench-setup`")
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
    assert "SMOKE OK: 11 configurations" in out, out
    for config in ["1", "2", "3", "4", "5", "6", "7", "4n", "5n", "6n", "7n"]:
        assert f"config {config}: " in out, out
