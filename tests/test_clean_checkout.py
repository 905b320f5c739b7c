"""tests/clean_checkout.py: a test session that writes into the git checkout fails and names what it wrote; what
was already uncommitted, what tests write into tmp_path and what .gitignore covers do not count."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT

INNER_TESTS = '''
from pathlib import Path


def test_writes_only_into_tmp_path(tmp_path):
    (tmp_path / "result.json").write_text("{}")


def test_writes_what_gitignore_covers():
    Path("outputs").mkdir(exist_ok=True)
    (Path("outputs") / "run.log").write_text("ok")


def test_leaves_a_scratch_file_in_the_working_directory():
    Path("sym_shape_infer_temp.onnx").write_bytes(b"")


def test_changes_a_tracked_file():
    Path("tracked.txt").write_text("changed")
'''


def git(folder, *args):
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_session_that_writes_into_the_checkout_fails_and_names_the_files(tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    git(checkout, "init", "-q")
    (checkout / ".gitignore").write_text("/outputs/\n")
    (checkout / "tracked.txt").write_text("as committed")
    (checkout / "test_inner.py").write_text(INNER_TESTS)
    git(checkout, "add", ".")
    git(checkout, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "start")
    (checkout / "draft.py").write_text("# uncommitted work before the session: not the tests' doing")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.clean_checkout", "-p", "no:cacheprovider",
                           "-q", "test_inner.py"], cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "4 passed" in proc.stdout  # every test passed: the session fails for what they left behind
    section = proc.stdout.split("the tests changed the git checkout", 1)[1]
    listed = [line.strip() for line in section.splitlines() if line.startswith("  ")]
    assert listed == ["M tracked.txt", "?? sym_shape_infer_temp.onnx"], section

    (checkout / "sym_shape_infer_temp.onnx").unlink()  # the same session after the leaks are fixed: passes
    (checkout / "tracked.txt").write_text("as committed")
    git(checkout, "add", "tracked.txt")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.clean_checkout", "-p", "no:cacheprovider",
                           "-q", "test_inner.py", "-k", "tmp_path or gitignore"], cwd=checkout, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "changed the git checkout" not in proc.stdout, proc.stdout + proc.stderr
