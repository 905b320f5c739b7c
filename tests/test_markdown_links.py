"""Every relative link and ``#anchor`` in the repository's Markdown files resolves (issue #33).

Links are read by markdown-it-py (installed with jupytext, a test dependency), so links inside code blocks and
inline code do not count. Anchors are GitHub's heading slugs: lowercase, punctuation other than ``-`` and ``_``
dropped, spaces turned into ``-``, and a repeated heading suffixed ``-1``, ``-2``, ...
"""

from __future__ import annotations

import re
import subprocess
from itertools import pairwise
from pathlib import Path
from urllib.parse import unquote, urlsplit

from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[1]
PARSER = MarkdownIt("commonmark").enable("table")
README_LIMIT_BYTES = 8192


def markdown_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    return sorted(ROOT / name for name in listed if (ROOT / name).exists())


def anchors(path: Path) -> set[str]:
    """The ``#anchor`` of every heading of a Markdown file, as GitHub makes them."""
    tokens, found, seen = PARSER.parse(path.read_text(encoding="utf-8")), set(), {}
    for opening, inline in pairwise(tokens):
        if opening.type != "heading_open":
            continue
        text = "".join(child.content for child in inline.children or [] if child.type in ("text", "code_inline"))
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(path: Path) -> list[str]:
    """The targets of every link and image of a Markdown file."""
    found = []
    for block in PARSER.parse(path.read_text(encoding="utf-8")):
        for child in block.children or []:
            if child.type == "link_open":
                found.append(child.attrGet("href"))
            elif child.type == "image":
                found.append(child.attrGet("src"))
    return found


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in links(path):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc:  # http(s), mailto: not checked offline
            continue
        linked = (path.parent / unquote(parts.path)).resolve() if parts.path else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif parts.fragment and linked.suffix == ".md" and unquote(parts.fragment) not in anchors(linked):
            broken.append(f"{target}: no such heading")
    return broken


def test_anchors_are_githubs_heading_slugs(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Small training sets (`bench_small_data.py`)\n\n## Notes\n\n## Notes\n\n## Deploy: predict, serve\n")
    assert anchors(page) == {"small-training-sets-bench_small_datapy", "notes", "notes-1", "deploy-predict-serve"}


def test_every_relative_link_and_anchor_resolves():
    files = markdown_files()
    assert ROOT / "README.md" in files and len(files) > 5
    broken = {str(path.relative_to(ROOT)): found for path in files if (found := broken_links(path))}
    assert broken == {}


def test_the_readme_is_a_landing_page():
    assert (ROOT / "README.md").stat().st_size <= README_LIMIT_BYTES
