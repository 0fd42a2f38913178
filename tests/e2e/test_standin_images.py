"""tests/docker/standin_images.py, the builder of the stand-in images (`make docker-images`), on a
small stand-in of its own: FROM scratch with a binary and the libraries ldd names, runnable,
rebuilt only when its inputs change, and never replacing an image that is not a stand-in.

Runs when a Docker engine answers; every image it makes has a name of its own and is removed at
the end, pass or fail."""
import importlib.util
import io
import secrets
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from harness import ROOT

# One Docker engine: its stacks and image builds run on one pytest-xdist worker (make e2e).
pytestmark = pytest.mark.xdist_group("docker")

spec = importlib.util.spec_from_file_location("standin_images", ROOT / "tests" / "docker" / "standin_images.py")
standin_images = importlib.util.module_from_spec(spec)
sys.modules["standin_images"] = standin_images  # its dataclasses look their module up there
spec.loader.exec_module(standin_images)


def docker(*args, check=True, input=None):
    run = subprocess.run(["docker", *args], capture_output=True, timeout=120, input=input)
    if check and run.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {run.stderr.decode()}")
    return run


@pytest.fixture
def image_name():
    from compose_harness import engine_problem

    problem = engine_problem()
    if problem:
        pytest.skip(f"stand-in image tests skipped: {problem}")
    name = f"rle2e-standin-{secrets.token_hex(4)}:test"
    yield name
    docker("image", "rm", name, check=False)  # build() removes the images it replaced


def labels(name):
    found = standin_images.image_labels(name)
    return found and found[1]


def test_a_standin_is_the_binary_and_its_libraries_and_is_rebuilt_only_when_they_change(image_name, tmp_path):
    echo = tmp_path / "echo"
    shutil.copy2(shutil.which("echo"), echo)
    standin = standin_images.Standin(name=image_name, files={"/bin/echo": lambda: echo},
                                     entrypoint=["/bin/echo"], cmd=["stand-in runs"])
    files = standin_images.rootfs(standin)
    assert "/bin/echo" in files and any("libc.so" in path for path in files), files

    assert "built from" in standin_images.build(standin)
    run = docker("run", "--rm", image_name)
    assert run.stdout.decode().strip() == "stand-in runs"
    first = labels(image_name)[standin_images.LABEL]

    assert "up to date" in standin_images.build(standin)

    echo.write_bytes(echo.read_bytes() + b"\0")  # another input: a new image
    assert "built from" in standin_images.build(standin)
    assert labels(image_name)[standin_images.LABEL] != first

    assert standin_images.remove(standin).endswith("removed")
    assert standin_images.image_labels(image_name) is None


def test_an_image_that_is_not_a_standin_is_never_replaced(image_name, tmp_path):
    # An image of the same name from elsewhere (as the official one would be): one empty file.
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("official"), io.BytesIO(b""))
    docker("import", "-", image_name, input=archive.getvalue())
    before = standin_images.image_labels(image_name)[0]

    standin = standin_images.Standin(name=image_name, files={"/bin/echo": lambda: Path(shutil.which("echo"))})
    assert "kept" in standin_images.build(standin)
    assert "kept" in standin_images.remove(standin)
    assert standin_images.image_labels(image_name)[0] == before
