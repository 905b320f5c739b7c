"""The test suite leaves the git checkout as it found it: pytest hooks (imported by tests/conftest.py) that take
``git status`` when the session starts and again when it ends, and fail the run, listing them, when entries
appeared that were not there before: a file some test (or a command it ran from the repository root) wrote into
the checkout instead of ``tmp_path``, or a tracked file it changed. What a run writes on purpose belongs in
.gitignore; files already changed or untracked at the start are left out, so uncommitted work does not count, but a
file edited while the tests run shows too. Outside a git checkout (an unpacked sdist) there is nothing to compare.
"""

from __future__ import annotations

import subprocess

import pytest

BEFORE = pytest.StashKey[frozenset]()
WRITTEN = pytest.StashKey[list]()


def checkout_status(where: str) -> frozenset[str] | None:
    """``git status`` entries of the checkout holding ``where`` ("XY path"; untracked files one by one, ignored ones
    left out), or None when it is not in a git checkout or git is missing."""
    try:
        top = subprocess.run(["git", "-C", where, "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                             timeout=60)
        if top.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", top.stdout.strip(), "status", "--porcelain=v1", "-z",
                                 "--untracked-files=all"], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if status.returncode != 0:
        return None
    return frozenset(entry for entry in status.stdout.split("\0") if entry)


def pytest_sessionstart(session):
    config = session.config
    if hasattr(config, "workerinput"):  # pytest-xdist: the controller's session compares the whole run
        return
    before = checkout_status(str(config.rootpath))
    if before is not None:
        config.stash[BEFORE] = before


def pytest_sessionfinish(session):
    config = session.config
    before = config.stash.get(BEFORE, None)
    if before is None:
        return
    after = checkout_status(str(config.rootpath))
    written = sorted((after or frozenset()) - before)
    if written:
        config.stash[WRITTEN] = written
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config):
    written = config.stash.get(WRITTEN, None)
    if not written:
        return
    terminalreporter.section("the tests changed the git checkout", red=True)
    for entry in written:
        terminalreporter.line(f"  {entry}")
    terminalreporter.line("write into tmp_path (or a temporary folder), or add what a run writes on purpose to "
                          ".gitignore; files edited while the tests ran show here too", red=True)
