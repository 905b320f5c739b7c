"""Every notebook has one source of truth that reviewers can diff: ``notebooks/src/<name>.py`` (jupytext's
py:percent format, paired through the notebook's ``jupytext.formats`` metadata). Edit either, then
``jupytext --sync notebooks/<name>.ipynb`` and execute the notebook; this test fails while the two disagree."""

from __future__ import annotations

import pytest

from tests.helpers import ROOT

jupytext = pytest.importorskip("jupytext")

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SOURCES = ROOT / "notebooks" / "src"


def cells(path) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in jupytext.read(path).cells]


def test_every_source_has_its_notebook():
    assert NOTEBOOKS
    orphans = {p.stem for p in SOURCES.glob("*.py")} - {p.stem for p in NOTEBOOKS}
    assert not orphans, f"sources without a notebook: {sorted(orphans)}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_and_its_source_hold_the_same_cells(notebook):
    source = SOURCES / f"{notebook.stem}.py"
    assert source.exists(), f"{notebook.name} has no source: jupytext --set-formats ipynb,src//py:percent {notebook}"
    formats = jupytext.read(notebook).metadata.get("jupytext", {}).get("formats", "")
    assert formats == "ipynb,src//py:percent", f"{notebook.name} is not paired with {source.name} ({formats!r})"
    assert cells(notebook) == cells(source), (
        f"{notebook.name} and src/{source.name} disagree: run jupytext --sync {notebook.relative_to(ROOT)}, then "
        "execute the notebook")
