"""shared/ in layers: the import-linter contracts of pyproject.toml hold (and break when someone adds an upward
import or a cycle), the two layout trees (shared/__init__.py, CONTRIBUTING.md) list exactly the modules on disk, and
a public name means one thing."""

import ast
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT

SHARED = ROOT / "shared"
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"]


def lint(root, env=None):
    return subprocess.run(LINT, cwd=root, capture_output=True, text=True, env=env, timeout=300)


def test_the_import_contracts_hold():
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


@pytest.mark.parametrize("module, added, broken", [
    ("core/files.py", "from shared.deploy import service", "shared/ in layers"),  # the bottom layer imports the top
    ("ner/metrics.py", "from shared.images import readers", "shared/ in layers"),  # one task package imports another
    ("evaluation/metrics.py", "from shared.evaluation import reports", "no import cycles"),  # reports imports metrics
])
def test_an_upward_import_or_a_cycle_breaks_a_contract(module, added, broken, tmp_path):
    shutil.copytree(SHARED, tmp_path / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    path = tmp_path / "shared" / module
    path.write_text(path.read_text() + f"\n{added}  # noqa\n")
    done = lint(tmp_path, {**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode != 0
    assert re.search(re.escape(broken) + r".* BROKEN", done.stdout), done.stdout[-3000:]


def tree_modules(text: str) -> set[str]:
    """The modules a layout tree lists (``shared/`` first, two spaces of indent per level), as paths."""
    start = text.index("shared/\n")
    base = start - text.rindex("\n", 0, start) - 1  # the indent of the "shared/" line
    found, stack = set(), []
    for line in text[start - base:].splitlines():
        match = re.match(r"^(\s*)(\S+\.py|\S+/)(\s|$)", line)
        if not match:
            if line.strip() == "" or line.strip().startswith("```") or '"""' in line:
                break
            continue
        depth = (len(match.group(1)) - base) // 2
        stack[depth:] = [match.group(2)]
        if match.group(2).endswith(".py"):
            found.add("".join(stack))
    return found


def test_the_two_layout_trees_list_every_module_and_nothing_else():
    on_disk = {str(p.relative_to(ROOT)) for p in SHARED.rglob("*.py") if p.name != "__init__.py"}
    for document in (SHARED / "__init__.py", ROOT / "CONTRIBUTING.md"):
        assert tree_modules(document.read_text(encoding="utf-8")) == on_disk, document.name


def test_a_public_name_means_one_thing_across_the_package():
    defined: dict[str, list[str]] = {}
    for path in SHARED.rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else [
                t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            for name in names:
                if not name.startswith("_") and name != "logger":
                    defined.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert {name: where for name, where in defined.items() if len(where) > 1} == {}
