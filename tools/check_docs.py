#!/usr/bin/env python3
"""Every example of the README and the book (docs/src) checked, and every link followed.

    python3 tools/check_docs.py --tool target/debug/ratelimit-config --envoy .venv/bin/envoy
    python3 tools/check_docs.py --links-only        # links and markers, no tool, no Envoy

`make docs-check` runs it (and `make test` runs that). What it checks, per fenced block, by the
block's language and the marker on the line before it (an HTML comment, invisible once rendered):

| block | marker | check |
|---|---|---|
| ```json | none | a whole filter configuration (an object with "rules"): `ratelimit-config check` passes |
| ```json | `<!-- check: fails "TEXT" -->` | meant to be wrong: the check fails, and its output contains TEXT |
| ```json | `<!-- check: fragment -->` | top-level members (`"plans": {...}`): checked inside a configuration of one rule |
| ```json | `<!-- check: json -->` | JSON that is not a configuration (a body, a template): it parses |
| ```yaml | none | a whole Envoy bootstrap: `envoy --mode validate` passes (the filter's own check included) |
| ```yaml | `<!-- check: yaml -->` | a YAML fragment (a Kubernetes annotation): it parses |
| any | `<!-- check: skip REASON -->` | nothing (the reason is required) |

A json or yaml block that is none of these (a fragment without a marker) is an error: every block
is either checked or says why not. Other languages (sh, text) are not checked.

Links, in every file: a relative link must name a file that exists, and an anchor (`#part`) a
heading of its target (ids as mdBook and GitHub make them). A chapter of the book links only inside
the book (docs/src): a link out of it would be broken on the built site; it names repository files
as code instead. Every chapter is in docs/src/SUMMARY.md, and every entry of SUMMARY.md exists.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "docs" / "src"
MARKER = re.compile(r"^<!--\s*check:\s*(\w+)\s*(.*?)\s*-->$")
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
# The rule a fragment is checked in: the smallest whole configuration.
FRAGMENT_RULES = '"rules": [{"name": "api", "limits": [{"requests": 10, "window": "1m"}]}]'


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    marker: str  # "" (none), or the marker's word: fails, fragment, json, yaml, skip
    argument: str  # what follows the marker's word

    def where(self) -> str:
        return f"{rel(self.path)}:{self.line}"


def rel(path: Path) -> str:
    """`path` as the messages show it: relative to the repository when it is inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def markdown_files(root: Path = ROOT) -> list[Path]:
    book = root / "docs" / "src"
    return [root / "README.md", *sorted(book.rglob("*.md"))] if book.exists() else [root / "README.md"]


def parse(path: Path) -> tuple[list[Block], list[tuple[int, str]], list[str]]:
    """The fenced blocks, the (line, text) of every line outside them, and marker errors."""
    blocks, prose, errors = [], [], []
    lines = path.read_text().splitlines()
    i, previous = 0, ""
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if not fence:
            prose.append((i + 1, line))
            if line.strip():
                previous = line.strip()
            i += 1
            continue
        indent, ticks, lang = fence.groups()
        body, j = [], i + 1
        while j < len(lines) and not lines[j].strip().startswith(ticks):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        marker = MARKER.match(previous)
        word, argument = (marker.group(1), marker.group(2)) if marker else ("", "")
        if marker and word not in ("fails", "fragment", "json", "yaml", "skip"):
            errors.append(f"{rel(path)}:{i + 1}: unknown marker {previous!r}")
        if word == "skip" and not argument:
            errors.append(f"{rel(path)}:{i + 1}: `check: skip` needs a reason")
        blocks.append(Block(path, i + 1, lang.lower(), "\n".join(body) + "\n", word, argument))
        previous = ""
        i = j + 1
    return blocks, prose, errors


# --- links -------------------------------------------------------------------------------------

def heading_id(text: str) -> str:
    """A heading's id as mdBook (and GitHub) make it: the rendered text, lower case, spaces to
    hyphens, everything but letters, digits, `_` and `-` dropped."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text
    text = text.replace("`", "").replace("*", "")
    out = []
    for ch in text.strip():
        if ch.isalnum() or ch in "_-":
            out.append(ch.lower())
        elif ch.isspace():
            out.append("-")
    return "".join(out)


def anchors(path: Path, cache: dict[Path, set[str]]) -> set[str]:
    if path not in cache:
        ids, seen = set(), {}
        _, prose, _ = parse(path)
        for _, line in prose:
            m = re.match(r"^#{1,6}\s+(.*?)\s*#*$", line)
            if m:
                base = heading_id(m.group(1))
                n = seen.get(base, 0)
                seen[base] = n + 1
                ids.add(base if n == 0 else f"{base}-{n}")
            ids.update(re.findall(r'<a\s+(?:id|name)="([^"]+)"', line))
        cache[path] = ids
    return cache[path]


def check_links(files: list[Path], root: Path = ROOT) -> tuple[list[str], int]:
    errors, count, cache = [], 0, {}
    book = (root / "docs" / "src").resolve()
    for path in files:
        _, prose, _ = parse(path)
        in_book = book in path.resolve().parents
        for number, line in prose:
            for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                    continue
                count += 1
                where = f"{rel(path)}:{number}"
                file_part, _, anchor = target.partition("#")
                resolved = (path.parent / file_part).resolve() if file_part else path.resolve()
                if not resolved.exists():
                    errors.append(f"{where}: broken link {target!r} ({file_part} does not exist)")
                    continue
                if in_book and book not in [resolved, *resolved.parents]:
                    errors.append(f"{where}: {target!r} leaves the book (broken on the built site): "
                                  "name the repository file as code instead")
                    continue
                if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved, cache):
                    errors.append(f"{where}: {target!r}: no heading #{anchor} in "
                                  f"{rel(resolved)}")
    return errors, count


def check_summary(root: Path = ROOT) -> list[str]:
    book = root / "docs" / "src"
    summary = book / "SUMMARY.md"
    if not summary.exists():
        return []
    listed = {(book / t).resolve() for t in re.findall(r"\]\(([^)]+\.md)\)", summary.read_text())}
    chapters = {p.resolve() for p in book.rglob("*.md") if p.name != "SUMMARY.md"}
    errors = [f"docs/src/SUMMARY.md: {rel(p)} is listed but does not exist"
              for p in sorted(listed - chapters)]
    errors += [f"{rel(p)}: not in docs/src/SUMMARY.md (the book would not show it)"
               for p in sorted(chapters - listed)]
    return errors


# --- examples ----------------------------------------------------------------------------------

def classify(block: Block) -> tuple[str, str | None]:
    """(what to do with the block, an error if it cannot be checked as it stands)."""
    if block.marker == "skip":
        return "skip", None
    if block.lang == "json":
        if block.marker in ("fails", "fragment", "json"):
            return block.marker, None
        if block.marker == "yaml":
            return "", f"{block.where()}: `check: yaml` on a json block"
        try:
            value = json.loads(block.text)
        except ValueError as e:
            return "", f"{block.where()}: not JSON ({e}); mark a fragment `<!-- check: fragment -->`"
        if not (isinstance(value, dict) and "rules" in value):
            return "", (f"{block.where()}: a JSON block that is not a whole configuration (no \"rules\"): "
                        "mark it `<!-- check: json -->` (not a configuration) or "
                        "`<!-- check: fragment -->` (top-level members)")
        return "config", None
    if block.lang in ("yaml", "yml"):
        if block.marker == "yaml":
            return "yaml", None
        if block.marker:
            return "", f"{block.where()}: `check: {block.marker}` on a yaml block"
        import yaml  # noqa: PLC0415 (PyYAML: only needed for yaml blocks)
        try:
            value = yaml.safe_load(block.text)
        except yaml.YAMLError as e:
            return "", f"{block.where()}: not YAML ({e})"
        if not (isinstance(value, dict) and "static_resources" in value):
            return "", (f"{block.where()}: a YAML block that is not a whole Envoy bootstrap (no "
                        "static_resources): mark it `<!-- check: yaml -->` or `<!-- check: skip REASON -->`")
        return "envoy", None
    return "", None


def fragment_config(text: str) -> str:
    return "{" + text.strip().rstrip(",") + ",\n" + FRAGMENT_RULES + "}\n"


def run_config_checks(jobs: list[tuple[Block, str]], tool: str, work: Path) -> list[str]:
    """One `ratelimit-config check` over every JSON file; its output is `PATH: ok ...` or one
    `PATH: ERROR` line per error."""
    if not jobs:
        return []
    files = []
    for n, (block, kind) in enumerate(jobs):
        f = work / f"block{n}.json"
        f.write_text(fragment_config(block.text) if kind == "fragment" else block.text)
        files.append(str(f))
    out = subprocess.run([tool, "check", *files], capture_output=True, text=True, cwd=ROOT)
    said: dict[str, list[str]] = {f: [] for f in files}
    for line in out.stdout.splitlines():
        for f in files:
            if line.startswith(f + ": "):
                said[f].append(line[len(f) + 2:])
    errors = []
    for (block, kind), f in zip(jobs, files):
        lines = said[f]
        passed = len(lines) == 1 and lines[0].startswith("ok:")
        if kind == "fails":
            expected = block.argument.strip()
            if len(expected) > 1 and expected[0] == expected[-1] and expected[0] in "'\"":
                expected = expected[1:-1]
            if passed:
                errors.append(f"{block.where()}: marked to fail, but the check passes: {lines[0]}")
            elif not expected:
                errors.append(f"{block.where()}: `check: fails` needs the error text, in quotes")
            elif not any(expected in line for line in lines):
                errors.append(f"{block.where()}: fails, but not with {expected!r}: " + " | ".join(lines))
        elif not passed:
            what = "fragment (inside a one-rule configuration)" if kind == "fragment" else "configuration"
            errors.append(f"{block.where()}: the {what} fails the check: " + " | ".join(lines or [out.stderr]))
    return errors


def run_envoy_validate(blocks: list[Block], envoy: str, work: Path) -> list[str]:
    errors = []
    for n, block in enumerate(blocks):
        f = work / f"bootstrap{n}.yaml"
        f.write_text(block.text)
        out = subprocess.run([envoy, "--mode", "validate", "-c", str(f), "--disable-hot-restart",
                              "--log-level", "error"], capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            tail = " | ".join((out.stdout + out.stderr).strip().splitlines()[-3:])
            errors.append(f"{block.where()}: envoy --mode validate fails: {tail}")
    return errors


def check(files: list[Path], tool: str | None, envoy: str | None, root: Path = ROOT) -> tuple[list[str], str]:
    errors, blocks = [], []
    for path in files:
        found, _, marker_errors = parse(path)
        blocks += found
        errors += marker_errors
    jobs: dict[str, list] = {k: [] for k in ("config", "fails", "fragment", "json", "yaml", "envoy", "skip")}
    for block in blocks:
        kind, error = classify(block)
        if error:
            errors.append(error)
        elif kind:
            jobs[kind].append(block)
    for block in jobs["json"]:
        try:
            json.loads(block.text)
        except ValueError as e:
            errors.append(f"{block.where()}: marked `check: json` but is not JSON: {e}")
    if jobs["yaml"]:
        import yaml  # noqa: PLC0415
        for block in jobs["yaml"]:
            try:
                yaml.safe_load(block.text)
            except yaml.YAMLError as e:
                errors.append(f"{block.where()}: marked `check: yaml` but is not YAML: {e}")
    with tempfile.TemporaryDirectory(prefix="docs-check-") as tmp:
        work = Path(tmp)
        if tool:
            configs = [(b, k) for k in ("config", "fails", "fragment") for b in jobs[k]]
            errors += run_config_checks(configs, tool, work)
        if envoy:
            errors += run_envoy_validate(jobs["envoy"], envoy, work)
    link_errors, links = check_links(files, root)
    errors += link_errors + check_summary(root)
    summary = (f"{len(files)} files: {len(jobs['config'])} configurations, {len(jobs['fails'])} meant to fail, "
               f"{len(jobs['fragment'])} fragments{'' if tool else ' (not run: no --tool)'}; "
               f"{len(jobs['envoy'])} Envoy bootstraps{'' if envoy else ' (not validated: no --envoy)'}; "
               f"{len(jobs['json'])} JSON and {len(jobs['yaml'])} YAML parsed; {len(jobs['skip'])} skipped; "
               f"{links} links")
    return errors, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tool", help="the ratelimit-config binary (make tool)")
    parser.add_argument("--envoy", help="the Envoy binary (make setup: .venv/bin/envoy)")
    parser.add_argument("--links-only", action="store_true", help="links, markers and SUMMARY.md only")
    parser.add_argument("files", nargs="*", type=Path, help="markdown files (default: README.md and docs/src)")
    args = parser.parse_args()
    if not args.links_only and not (args.tool and args.envoy):
        parser.error("--tool and --envoy are required (or --links-only)")
    files = [f.resolve() for f in args.files] or markdown_files()
    started = time.monotonic()
    errors, summary = check(files, None if args.links_only else args.tool,
                            None if args.links_only else args.envoy)
    for error in errors:
        print(error, file=sys.stderr)
    print(f"docs: {summary}; {len(errors)} errors ({time.monotonic() - started:.1f} s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
