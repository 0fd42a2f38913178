#!/usr/bin/env python3
"""The house rules of `src/`, checked by `make lint`:

- no function outside tests longer than 60 lines;
- no file with more than 600 lines of code outside tests (comments and blank lines not counted);
- no import cycle among the crate's top-level modules (`use crate::x`), nor among its files (a file
  inside a folder imports from the file that defines a name, not from the folder's `mod.rs` that
  re-exports it);
- the hosts (`src/host/`, `src/native/`) import the engine's face (`crate::engine`) and nothing
  else of the crate.

Prints each breach with its place and exits 1 if there is any; `--report` also prints the
longest functions and files and the module graph.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
MAX_FN_LINES = 60
MAX_FILE_CODE = 600
HOSTS = ("host", "native")
FN = re.compile(r"^(\s*)(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"C\"\s+)?fn\s+(\w+)")
TEST_MOD = re.compile(r"^\s*#\[cfg\(test\)\]")


def code_lines(lines: list[str]) -> list[tuple[int, str]]:
    """The lines before the file's test module, numbered from 1."""
    out = []
    for i, line in enumerate(lines):
        if TEST_MOD.match(line) and i + 1 < len(lines) and re.match(r"^\s*mod\s+\w+", lines[i + 1]):
            if not lines[i + 1].rstrip().endswith(";"):
                break
        out.append((i + 1, line))
    return out


def functions(lines: list[tuple[int, str]]):
    """(name, first line, length) of every function with a body, by rustfmt's layout: the body
    ends at the first `}` line at the function's own indentation."""
    for k, (number, line) in enumerate(lines):
        m = FN.match(line)
        if not m:
            continue
        indent = m.group(1)
        # A declaration without a body (trait method, extern) ends with `;` before any `{`.
        end = None
        for j in range(k, len(lines)):
            text = lines[j][1]
            if j > k and re.match(rf"^{indent}\}}", text):
                end = j
                break
            if text.rstrip().endswith(";") and "{" not in "".join(t for _, t in lines[k:j + 1]):
                break
            if j == k and text.rstrip().endswith("}") and "{" in text:
                end = j
                break
        if end is not None:
            yield m.group(8), number, end - k + 1


def crate_modules(text: str) -> set[str]:
    """The top-level modules a text names through `crate::`, also inside `crate::{a, b::c}`."""
    text = re.sub(r"//[^\n]*", "", text)
    found = set()
    for m in re.finditer(r"\bcrate::(\{|\w+)", text):
        if m.group(1) != "{":
            found.add(m.group(1))
            continue
        depth, start, items, i = 1, m.end(), [], m.end()
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            elif text[i] == "," and depth == 1:
                items.append(text[start:i])
                start = i + 1
            i += 1
        items.append(text[start:i - 1])
        for item in items:
            name = re.match(r"\s*(\w+)", item)
            if name and name.group(1) != "self":
                found.add(name.group(1))
    return found


def is_code(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("//")


def module_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="also print the longest functions and files")
    args = parser.parse_args()
    breaches: list[str] = []
    longest: list[tuple[int, str]] = []
    sizes: list[tuple[int, str]] = []
    graph: dict[str, set[str]] = defaultdict(set)
    for path in sorted(SRC.rglob("*.rs")):
        rel = path.relative_to(ROOT)
        if path.name == "tests.rs" or "tests" in path.relative_to(SRC).parts[:-1] or path.name == "testing.rs":
            continue
        lines = code_lines(path.read_text().splitlines())
        code = sum(1 for _, line in lines if is_code(line))
        sizes.append((code, str(rel)))
        if code > MAX_FILE_CODE:
            breaches.append(f"{rel}: {code} lines of code outside tests (at most {MAX_FILE_CODE})")
        for name, first, length in functions(lines):
            longest.append((length, f"{rel}:{first} {name}"))
            if length > MAX_FN_LINES:
                breaches.append(f"{rel}:{first}: fn {name} is {length} lines (at most {MAX_FN_LINES})")
        module = module_of(path)
        for used in crate_modules("\n".join(line for _, line in lines)):
            if used != module:
                graph[module].add(used)
                if module in HOSTS and used != "engine":
                    breaches.append(f"{rel}: the host imports crate::{used} (only crate::engine, the engine's face)")
    cycle = find_cycle(graph)
    if cycle:
        breaches.append("import cycle among top-level modules: " + " -> ".join(cycle))
    cycle = find_cycle(file_graph())
    if cycle:
        breaches.append("import cycle among files: " + " -> ".join(cycle))
    if args.report:
        print("longest functions:")
        for length, where in sorted(longest, reverse=True)[:10]:
            print(f"  {length:4} {where}")
        print("largest files (lines of code outside tests):")
        for code, where in sorted(sizes, reverse=True)[:10]:
            print(f"  {code:4} {where}")
        print("module graph:")
        for module in sorted(graph):
            print(f"  {module} -> {', '.join(sorted(graph[module]))}")
    for breach in sorted(set(breaches)):
        print(breach)
    return 1 if breaches else 0


def module_files() -> dict[tuple[str, ...], Path]:
    """Every module of the crate (outside tests) by its path, e.g. ("engine", "pipeline")."""
    modules = {(): SRC / "lib.rs"}
    for path in SRC.rglob("*.rs"):
        rel = path.relative_to(SRC)
        if "bin" in rel.parts or path.name in ("lib.rs", "tests.rs", "testing.rs") or "tests" in rel.parts[:-1]:
            continue
        parts = rel.with_suffix("").parts
        modules[parts[:-1] if parts[-1] == "mod" else parts] = path
    return modules


def use_paths(lines: list[str]) -> list[tuple[list[str], list[str]]]:
    """The paths a file's `use` declarations name, braces expanded (`a::{b, c::d}`), each with
    the inline modules (`mod name { ... }`) the declaration sits in."""
    out = []
    inline: list[tuple[int, str]] = []  # (indentation, name) of the open inline modules
    text = "\n".join(lines)
    offsets, pos = [], 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        inline = [(d, n) for d, n in inline if d < indent or (d == indent and not line.strip().startswith("}"))]
        m = re.match(r"\s*(pub(\([^)]*\))?\s+)?mod\s+(\w+)\s*\{", line)
        if m:
            inline.append((indent, m.group(3)))
            continue
        u = re.match(r"\s*(pub(\([^)]*\))?\s+)?use\s+", line)
        if not u:
            continue
        end = text.index(";", offsets[i])
        tree = re.sub(r"\s+", "", text[offsets[i] + u.end():end])
        for path in expand(tree):
            out.append(([p for p in path.split("::") if p], [n for _, n in inline]))
    return out


def expand(tree: str) -> list[str]:
    if "{" not in tree:
        return [tree.split(" as ")[0]]
    head, rest = tree.split("{", 1)
    inner = rest[: rest.rindex("}")]
    items, depth, start = [], 0, 0
    for i, c in enumerate(inner):
        depth += c == "{"
        depth -= c == "}"
        if c == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
    items.append(inner[start:])
    return [p for item in items if item for p in expand(head + item)]


def file_graph() -> dict[str, set[str]]:
    """Which file imports from which, among the crate's files outside tests."""
    modules = module_files()
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        lines = [re.sub(r"//.*", "", line) for _, line in code_lines(path.read_text().splitlines())]
        for parts, inner in use_paths(lines):
            here = module + tuple(inner)
            if parts[0] == "crate":
                target = parts[1:]
            elif parts[0] == "super":
                base = list(here)
                while parts and parts[0] == "super":
                    base = base[:-1]
                    parts = parts[1:]
                target = base + parts
            elif parts[0] == "self":
                target = list(here) + parts[1:]
            elif tuple(list(here) + parts[:1]) in modules:
                target = list(here) + parts
            else:
                continue  # another crate
            # The longest module the path names; an item of it lives in that module's file.
            while target and tuple(target) not in modules:
                target = target[:-1]
            imported = modules[tuple(target)]
            if imported != path and tuple(target) != ():
                graph[str(path.relative_to(ROOT))].add(str(imported.relative_to(ROOT)))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


if __name__ == "__main__":
    sys.exit(main())
