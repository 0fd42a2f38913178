"""Compose stacks on a Docker engine, for tests: the compose tool, whether an engine answers, the
stand-in images, and a Stack (one compose project) that is always taken down.

Each stack runs under a compose project name of its own with free host ports (the compose files
read them from environment variables), and is taken down with its volumes, also when a test
fails; whatever `down` missed is removed by the project's label. Used by test_compose.py (the
single-Envoy stack) and test_compose_fleet.py (the fleet stack).
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import ROOT, free_port

STANDIN = ROOT / "tests" / "docker" / "standin_images.py"
PROJECT_LABEL = "com.docker.compose.project"


def compose_tool() -> list[str] | None:
    """`docker compose` (v2) where installed, else `docker-compose` (1.x), else None."""
    if shutil.which("docker"):
        v2 = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if v2.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def engine_problem() -> str | None:
    """Why no Docker engine can be used here, or None when one answers."""
    if not shutil.which("docker"):
        return "the docker command is not installed"
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if info.returncode != 0 or not info.stdout.strip():
        return f"no Docker engine answers (`docker info`: {(info.stderr or info.stdout).strip()[:300]})"
    return None


COMPOSE = compose_tool()
NO_COMPOSE = "neither `docker compose` nor `docker-compose` is installed"


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    run = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and run.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {run.stderr.strip()}")
    return run


class Stack:
    """One compose project: its name, files, and a free host port for each port variable."""

    def __init__(self, files: list[Path], port_vars: list[str]) -> None:
        self.name = f"rle2e{os.getpid()}{secrets.token_hex(3)}"
        self.files = files
        self.ports = {var: free_port() for var in port_vars}
        self.env = dict(os.environ, **{var: str(port) for var, port in self.ports.items()})
        self.is_down = False

    def compose(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        command = [*COMPOSE, "--project-name", self.name]
        for f in self.files:
            command += ["--file", str(f)]
        run = subprocess.run([*command, *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and run.returncode != 0:
            raise RuntimeError(f"{' '.join(command + list(args))} failed ({run.returncode}):\n{run.stdout}{run.stderr}")
        return run

    def up(self) -> None:
        self.compose("up", "--detach")

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "5")
        self.is_down = True

    def container(self, service: str) -> str:
        """The id of the service's (one) container."""
        ids = self.compose("ps", "--quiet", service).stdout.split()
        assert len(ids) == 1, (service, ids)
        return ids[0]

    def network(self, name: str) -> str:
        """The id of the project's network `name` (as the compose file names it)."""
        ids = docker("network", "ls", "--quiet", "--filter", f"label={PROJECT_LABEL}={self.name}",
                     "--filter", f"label=com.docker.compose.network={name}").stdout.split()
        assert len(ids) == 1, (name, ids)
        return ids[0]

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label={PROJECT_LABEL}={self.name}"
        return {
            "containers": docker("ps", "--all", "--quiet", "--filter", label).stdout.split(),
            "networks": docker("network", "ls", "--quiet", "--filter", label).stdout.split(),
            "volumes": docker("volume", "ls", "--quiet", "--filter", label).stdout.split(),
        }

    def remove_leftovers(self) -> None:
        left = self.leftovers()
        if left["containers"]:
            docker("rm", "--force", "--volumes", *left["containers"], check=False)
        if left["networks"]:
            docker("network", "rm", *left["networks"], check=False)
        if left["volumes"]:
            docker("volume", "rm", "--force", *left["volumes"], check=False)

    def close(self) -> None:
        """Down (with volumes) unless already down, then whatever is left removed by label."""
        if not self.is_down:
            try:
                self.down()
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                print(f"compose down of {self.name} failed: {e}", file=sys.stderr)
        self.remove_leftovers()

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", service, check=False).stdout


# The image docker-compose.yml and docker-compose.native.yml name (both services).
ENVOY_IMAGE = "envoyproxy/envoy:v1.40.0"


def build_standins(*names: str) -> None:
    """Skips (saying why) without a compose tool or a Docker engine; otherwise builds the named
    stand-in images, all of them when none is named (quick when up to date; never replaces an
    image of that name that is not a stand-in)."""
    if COMPOSE is None:
        pytest.skip(f"compose stack tests skipped: {NO_COMPOSE}")
    problem = engine_problem()
    if problem:
        pytest.skip(f"compose stack tests skipped: {problem}")
    build = subprocess.run([sys.executable, str(STANDIN), "build", *names],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr


@pytest.fixture(scope="session")
def docker_images():
    """Every stand-in image the compose files name (the fleet stack's need Redis and the engine)."""
    build_standins()


@pytest.fixture(scope="session")
def envoy_image():
    """Only the Envoy image: what the single-Envoy stacks (Wasm and native) run."""
    build_standins(ENVOY_IMAGE)
