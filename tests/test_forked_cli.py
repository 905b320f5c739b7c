"""tests/forked_cli.py runs a command line as a fork of a preloaded server: what the command sees and what the test
reads back must be what ``python script args`` gives in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests import forked_cli

SCRIPT = textwrap.dedent("""\
    import atexit, os, sys
    atexit.register(lambda: print("at exit", file=sys.stderr))
    print("args", sys.argv[1:], "cwd", os.path.basename(os.getcwd()), "path0", os.path.basename(sys.path[0]))
    print("variable", os.environ.get("FORKED_CLI_PROBE"))
    os.write(2, b"written to fd 2\\n")
    print("caf\\u00e9", file=sys.stderr)
    if sys.argv[1] == "raise":
        raise ValueError("boom")
    if sys.argv[1] == "message":
        sys.exit("a message")
    sys.exit(int(sys.argv[1]))
""")


def fresh(command, cwd):
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("argument", ["0", "3", "raise", "message"])
def test_a_forked_command_reads_back_as_a_fresh_one(argument, tmp_path, monkeypatch):
    script = tmp_path / "scripts" / "probe.py"
    script.parent.mkdir()
    script.write_text(SCRIPT, encoding="utf-8")
    (tmp_path / "work").mkdir()
    monkeypatch.setenv("FORKED_CLI_PROBE", "set by the test")  # not read at import: the fork is still used
    command = [sys.executable, str(script), argument, "two words"]
    forked, expected = forked_cli.run(command, cwd=tmp_path / "work", timeout=120), fresh(command, tmp_path / "work")
    assert forked.returncode == expected.returncode
    assert forked.stdout == expected.stdout
    if argument == "raise":  # the same traceback but for the frames of the machinery that ran the script
        assert forked.stderr.splitlines()[-4:] == expected.stderr.splitlines()[-4:]
        assert "ValueError: boom" in forked.stderr
    else:
        assert sorted(forked.stderr.splitlines()) == sorted(expected.stderr.splitlines())


def test_the_fork_is_used_and_an_import_time_variable_gets_a_fresh_interpreter(tmp_path, monkeypatch):
    script = tmp_path / "probe.py"
    script.write_text("import sys\nprint('torch' in sys.modules)\n", encoding="utf-8")
    command = [sys.executable, str(script)]
    assert forked_cli.run(command, cwd=tmp_path, timeout=120).stdout == "True\n"  # the server preloaded it
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # read by huggingface_hub when it is imported
    assert forked_cli.run(command, cwd=tmp_path, timeout=120).stdout == "False\n"
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("TESTS_FRESH_PYTHON", "1")
    assert forked_cli.run(command, cwd=tmp_path, timeout=120).stdout == "False\n"


def test_a_command_past_its_timeout_is_stopped(tmp_path):
    script = tmp_path / "sleep.py"
    script.write_text("import time\ntime.sleep(60)\n", encoding="utf-8")
    with pytest.raises(subprocess.TimeoutExpired):
        forked_cli.run([sys.executable, str(script)], cwd=tmp_path, timeout=1)
