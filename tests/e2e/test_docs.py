"""The docs' checks (tools/check_docs.py, run over the README and the book by `make docs-check`)
can fail: each kind of mistake, made in a copy of real chapters, is caught. And the book's
pictures are there, shown, and drawn from figures BENCHMARKS.md still gives."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import ROOT, WASM, envoy_binary

sys.path.insert(0, str(ROOT / "tools"))
import check_docs  # noqa: E402

TOOL = ROOT / "target" / "debug" / "ratelimit-config"
BOOK = ROOT / "docs" / "src"
GOOD_CONFIG = '{"rules": [{"name": "api", "limits": [{"requests": 10, "window": "1m"}]}]}'


@pytest.fixture
def book(tmp_path):
    """A copy of the README and the book, to break."""
    if not TOOL.exists():
        subprocess.run(["cargo", "build", "--quiet", "--features", "cli", "--bin", "ratelimit-config"],
                       cwd=ROOT, check=True)
    for name in ("README.md", "BENCHMARKS.md"):  # the README links to the notebook
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(BOOK, tmp_path / "docs" / "src")
    return tmp_path


def run(root: Path, envoy: bool = False) -> list[str]:
    files = check_docs.markdown_files(root)
    errors, _ = check_docs.check(files, str(TOOL), envoy_binary() if envoy else None, root)
    return errors


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_the_real_readme_and_book_pass(book):
    assert WASM.exists(), "make build first: the bootstraps load the .wasm"
    assert run(book, envoy=True) == []


def test_a_broken_configuration_fails(book):
    replace(book / "README.md", '"requests": 3, "window": "1m"', '"requests": 3, "window": "1 fortnight"')
    errors = run(book)
    assert len(errors) == 1 and "README.md:" in errors[0], errors
    assert "the configuration fails the check" in errors[0] and "1 fortnight" in errors[0]


def test_a_block_meant_to_fail_must_fail_with_the_error_the_text_shows(book):
    limits = book / "docs" / "src" / "config" / "limits.md"
    replace(limits, '"window": "5 parsecs"', '"window": "5s"')  # now it passes
    assert any("marked to fail, but the check passes" in e for e in run(book))
    shutil.copy(BOOK / "config" / "limits.md", limits)
    replace(limits, '"window": "5 parsecs"}]}]}', '"window": "5 parsecs", "name": "bad name!"}]}]}')
    assert run(book) == [], "the shown error is still among the errors"
    shutil.copy(BOOK / "config" / "limits.md", limits)
    replace(limits, '{"requests": 10, "window": "5 parsecs"}', '{"requests": -1, "window": "1m"}')
    assert any("fails, but not with" in e for e in run(book))


def test_fragments_are_checked_inside_a_configuration(book):
    replace(book / "docs" / "src" / "config" / "keys-and-plans.md", '"default": "free",\n', '"default": "gold",\n')
    errors = run(book)
    assert any("the fragment (inside a one-rule configuration) fails the check" in e and "gold" in e
               for e in errors), errors


def test_an_unmarked_fragment_or_non_configuration_is_an_error(book):
    rules = book / "docs" / "src" / "config" / "response.md"
    replace(rules, "<!-- check: json -->\n", "")
    assert any("not a whole configuration" in e for e in run(book))
    replace(rules, "<!-- check: fragment -->\n", "<!-- check: skip -->\n")
    assert any("needs a reason" in e for e in run(book))


def test_an_envoy_bootstrap_envoy_rejects_fails(book):
    assert WASM.exists(), "make build first"
    envoy_md = book / "docs" / "src" / "deploying" / "envoy.md"
    # A filter configuration the filter rejects: Envoy's validate mode runs the filter's check.
    replace(envoy_md, '"requests": 10, "window": "1m"}]}]}', '"requests": 10, "window": "1 fortnight"}]}]}')
    errors = run(book, envoy=True)
    assert any("envoy --mode validate fails" in e for e in errors), errors
    shutil.copy(BOOK / "deploying" / "envoy.md", envoy_md)
    replace(envoy_md, "route: {cluster: upstream}", "route: {cluster: nowhere}")
    assert any("envoy --mode validate fails" in e for e in run(book, envoy=True))


def test_broken_links_anchors_and_links_out_of_the_book_fail(book):
    start = book / "docs" / "src" / "getting-started.md"
    replace(start, "(deploying/compose.md)", "(deploying/composer.md)")
    assert any("broken link 'deploying/composer.md'" in e for e in run(book))
    shutil.copy(BOOK / "getting-started.md", start)
    replace(start, "(deploying/compose.md)", "(deploying/compose.md#no-such-part)")
    assert any("no heading #no-such-part" in e for e in run(book))
    shutil.copy(BOOK / "getting-started.md", start)
    replace(start, "(deploying/compose.md)", "(../../README.md)")  # exists, out of the book
    assert any("leaves the book" in e for e in run(book))


def test_every_chapter_is_in_the_summary(book):
    summary = book / "docs" / "src" / "SUMMARY.md"
    replace(summary, "- [Logs](operating/logs.md)\n", "")
    assert any("operating/logs.md: not in docs/src/SUMMARY.md" in e for e in run(book))
    (book / "docs" / "src" / "operating" / "logs.md").unlink()
    replace(summary, "- [Stats](operating/stats.md)\n", "- [Stats](operating/stats.md)\n- [Logs](operating/logs.md)\n")
    assert any("is listed but does not exist" in e for e in run(book))


# --- pictures ------------------------------------------------------------------------------------

def shown_pictures() -> set[Path]:
    shown = set()
    for chapter in BOOK.rglob("*.md"):
        for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", chapter.read_text()):
            shown.add((chapter.parent / target).resolve())
    return shown


def test_every_picture_is_there_and_shown():
    images = {p.resolve() for p in (BOOK / "images").glob("*.png")}
    assert {"window-burst.png", "key-spray.png", "benchmark-ratios.png", "instructions.png"} <= {p.name for p in images}
    assert shown_pictures() == images, "every picture shown exists, every picture is shown"
    for image in images:
        head = image.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n", image
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        assert 600 <= width <= 1400 and 300 <= height <= 1000, (image.name, width, height)


def test_the_benchmark_pictures_figures_are_benchmarks_md_s():
    bench = json.loads((ROOT / "docs" / "pictures" / "benchmarks.json").read_text())
    notebook = (ROOT / "BENCHMARKS.md").read_text()
    for part in ("ratios", "instructions"):
        quotes = bench[part]["quotes"]
        for quote in quotes:
            assert quote in notebook, f"BENCHMARKS.md no longer says {quote!r}"
        said = " ".join(quotes)
        for row in bench[part]["rows"]:
            for value in [row.get("wall_clock"), row.get("instructions")] + row.get("values", []):
                if value is not None:
                    shown = f"{value:,}" if isinstance(value, int) else f"{value:.3f}"
                    assert shown in said, f"{part}: {shown} is not in the quoted lines"
