"""Command lines run as a user runs them, without paying for Python's start each time.

A test of the command line runs ``python <script> <args>`` and reads its exit status, stdout and stderr. Most of
the seconds such a process takes go to importing torch, transformers and the project before the first line of the
recipe runs. Here one server process imports all of that once (multiprocessing's ``forkserver``); each command is
a fork of it that sets the environment, working folder and ``sys.argv``, and runs the script as ``__main__`` with
stdout and stderr (the file descriptors, so logging and C libraries too) going to files. The child starts from the
server's clean state, not from the test process: nothing a test imported or configured leaks into it.

A command falls back to a fresh interpreter (``subprocess.run``) when the test changed an environment variable
that the preloaded libraries read at import time (``HF_*``, ``TRANSFORMERS_*``, ...), and for every command when
``TESTS_FRESH_PYTHON=1`` is set: the way to rule the fork server out when a result looks odd.
"""

from __future__ import annotations

import atexit
import functools
import json
import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile

# What the recipes import at the top (and the server's own bootstrap needs): imported once, in the server.
PRELOAD = ["tests.forked_cli_preload"]
# Read by the preloaded libraries when they are imported; a command whose environment changes one runs fresh.
READ_AT_IMPORT = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TORCH", "PYTORCH_", "OMP_", "MKL_", "CUDA_", "ACCELERATE_",
                  "TOKENIZERS_", "DATASETS_", "PYTHON")

_context = None
_server_environment: dict[str, str] = {}


def _server():
    global _context, _server_environment
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
        _server_environment = dict(os.environ)
    return _context


@functools.cache
def _fresh_sys_path() -> list[str]:
    """A fresh interpreter's ``sys.path`` after its first entry (the script's folder, or '' for ``-c``): the
    server's is the test process's, with pytest's additions."""
    listing = subprocess.run([sys.executable, "-c", "import json, sys; print(json.dumps(sys.path[1:]))"],
                             capture_output=True, text=True, check=True)
    return json.loads(listing.stdout)


def _needs_fresh_python(environment: dict[str, str]) -> bool:
    if os.environ.get("TESTS_FRESH_PYTHON") == "1":
        return True
    changed = {k for k in set(environment) | set(_server_environment)
               if environment.get(k) != _server_environment.get(k)}
    return any(k.startswith(READ_AT_IMPORT) for k in changed)


def _run_script(script: str, args: list[str], cwd: str, environment: dict[str, str], path: list[str], stdout: str,
                stderr: str):
    """In the forked child: the script as ``__main__``, as ``python script args`` would run it."""
    out = os.open(stdout, os.O_WRONLY)
    err = os.open(stderr, os.O_WRONLY)
    os.dup2(out, 1)
    os.dup2(err, 2)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False, buffering=1)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    os.environ.clear()
    os.environ.update(environment)
    os.chdir(cwd)
    sys.argv = [script, *args]
    sys.path[:] = [os.path.dirname(os.path.abspath(script)), *path]  # the script's folder first, as `python script`
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) or stop.code is None else 1
        if not isinstance(stop.code, (int, type(None))):
            print(stop.code, file=sys.stderr)
    except BaseException:  # an uncaught exception: the traceback on stderr and status 1, as Python does
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        atexit._run_exitfuncs()  # what the interpreter runs at exit: logging.shutdown, temporary files' finalizers
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code or 0)


def run(command: list[str], cwd: str, timeout: float) -> subprocess.CompletedProcess:
    """``subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=timeout)`` for a command
    ``[sys.executable, script, *args]``, run as a fork of the preloaded server."""
    fresh = command[0] != sys.executable or len(command) < 2 or command[1].startswith("-")
    if not fresh:
        context = _server()
        environment = dict(os.environ)
        fresh = _needs_fresh_python(environment)
    if fresh:
        return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=timeout)
    with tempfile.TemporaryDirectory(prefix="forked_cli_") as folder:
        stdout, stderr = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
        open(stdout, "w").close()
        open(stderr, "w").close()
        process = context.Process(target=_run_script, args=(command[1], command[2:], str(cwd), environment,
                                                            _fresh_sys_path(), stdout, stderr))
        process.start()
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired(command, timeout)
        with open(stdout, encoding="utf-8", errors="replace") as f:
            out = f.read()
        with open(stderr, encoding="utf-8", errors="replace") as f:
            err = f.read()
    return subprocess.CompletedProcess(command, process.exitcode, out, err)
