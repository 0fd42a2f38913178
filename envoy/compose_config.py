#!/usr/bin/env python3
"""Writes envoy/envoy.compose.yaml, the Envoy config of docker-compose.yml, from envoy/envoy.yaml.

`make run` serves envoy/envoy.yaml on the host's loopback, in front of the demo upstream on
127.0.0.1:8080. In docker-compose, Envoy runs in a container on a bridge network: it listens on
all of the container's addresses (compose publishes the ports) and reaches the upstream by its
service name. Those are the only changes; everything else, the filter configuration above all, is
envoy.yaml's text, comments included:

| where | envoy.yaml | envoy.compose.yaml |
|---|---|---|
| admin address | 127.0.0.1 | 0.0.0.0 (published on the host's 127.0.0.1 only) |
| listener address | 127.0.0.1 | 0.0.0.0 |
| cluster type | STATIC | STRICT_DNS (the upstream is a name) |
| upstream endpoint address | 127.0.0.1 | upstream (the compose service) |

    .venv/bin/python envoy/compose_config.py           # (re)write envoy/envoy.compose.yaml
    .venv/bin/python envoy/compose_config.py --check   # exit 1 if it is not what envoy.yaml gives

`make compose-config` runs the first; a test runs the second, so the two files cannot drift apart.
Each value is replaced where YAML puts it (the scalar node's position), then the result is checked
to parse to envoy.yaml with exactly these values changed.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "envoy.yaml"
TARGET = HERE / "envoy.compose.yaml"

# The compose service Envoy forwards to (docker-compose.yml, service "upstream").
UPSTREAM_SERVICE = "upstream"

LISTENER = ("static_resources", "listeners", 0)
CLUSTER = ("static_resources", "clusters", 0)
ENDPOINT = CLUSTER + ("load_assignment", "endpoints", 0, "lb_endpoints", 0, "endpoint")
REWRITES = {
    ("admin", "address", "socket_address", "address"): "0.0.0.0",
    LISTENER + ("address", "socket_address", "address"): "0.0.0.0",
    CLUSTER + ("type",): "STRICT_DNS",
    ENDPOINT + ("address", "socket_address", "address"): UPSTREAM_SERVICE,
}

HEADER = """\
# GENERATED from envoy/envoy.yaml by envoy/compose_config.py (make compose-config): do not edit.
# The Envoy config of envoy/docker-compose.yml: envoy.yaml with only the addresses changed for a
# container on a bridge network (listen on 0.0.0.0, reach the upstream by its service name).
"""


def node_at(root: yaml.Node, path: tuple) -> yaml.Node:
    node = root
    for step in path:
        if isinstance(step, int):
            assert isinstance(node, yaml.SequenceNode), f"{path}: {step} is not a list index"
            node = node.value[step]
        else:
            assert isinstance(node, yaml.MappingNode), f"{path}: {step} is not in a mapping"
            matches = [v for k, v in node.value if k.value == step]
            assert len(matches) == 1, f"{path}: {step!r} found {len(matches)} times"
            node = matches[0]
    assert isinstance(node, yaml.ScalarNode), f"{path} is not a scalar"
    return node


def set_at(data, path: tuple, value) -> None:
    for step in path[:-1]:
        data = data[step]
    data[path[-1]] = value


def render(source_text: str) -> str:
    root = yaml.compose(source_text)
    # Replace each scalar by its position in the text, last first so earlier offsets hold.
    spans = sorted(
        ((node_at(root, path).start_mark.index, node_at(root, path).end_mark.index, value)
         for path, value in REWRITES.items()),
        reverse=True,
    )
    text = source_text
    for start, end, value in spans:
        text = text[:start] + value + text[end:]
    # envoy.yaml's own header comment describes envoy.yaml: replace it.
    lines = text.splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    text = HEADER + "".join(lines)

    expected = copy.deepcopy(yaml.safe_load(source_text))
    for path, value in REWRITES.items():
        set_at(expected, path, value)
    assert yaml.safe_load(text) == expected, "the rewrite changed more than the addresses"
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help=f"fail if {TARGET.name} is not up to date")
    args = ap.parse_args(argv)
    text = render(SOURCE.read_text())
    if args.check:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is not what {SOURCE.name} gives: run `make compose-config`", file=sys.stderr)
            return 1
        print(f"{TARGET.name} is up to date")
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
