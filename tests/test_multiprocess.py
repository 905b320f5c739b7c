"""Every recipe under two processes (torchrun / accelerate launch, CPU, gloo) gives the single-process results.

Per recipe: train once in one process, then evaluate + predict that model folder with one and with two processes
(odd split sizes, so the last batch is uneven and DistributedSampler pads it with repeated samples): same metrics,
same predictions, same files, nothing written by the second process, no temporary files left, the process group
ended before exit. Then one two-process training run proves training works multi-process. Also: every config in
recipes/accelerate_configs/ loads with accelerate's own loader and maps to real `accelerate launch` options.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.core.runner import load_recipe
from tests.helpers import ROOT, recipe_case

CONFIGS = ROOT / "recipes" / "accelerate_configs"

# Installed into the child processes through PYTHONPATH (sitecustomize runs at interpreter start). A worker whose
# RANK is not 0 records every attempt to create, open for writing, rename or delete a path under MP_AUDIT_ROOT; every
# worker records, at exit, whether its process group was still alive (the recipe must destroy it).
SITECUSTOMIZE = r'''
import atexit, os, sys

_root = os.environ.get("MP_AUDIT_ROOT")
_logs = os.environ.get("MP_AUDIT_LOGS")
_rank = os.environ.get("RANK")
if _root and _logs and _rank is not None:
    _root = os.path.realpath(_root)
    _log = os.path.join(_logs, "rank%s-pid%d.txt" % (_rank, os.getpid()))
    _busy = []

    def _record(line):
        _busy.append(1)
        try:
            with open(_log, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        finally:
            _busy.pop()

    def _under_root(path):
        if isinstance(path, int):
            return False
        path = os.path.realpath(os.fsdecode(path))
        return path == _root or path.startswith(_root + os.sep)

    def _hook(event, args):
        if _busy or _rank == "0":
            return
        try:
            if event == "open":
                path, mode, flags = args
                writes = (mode is not None and any(c in mode for c in "wax+")) or (
                    mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
                paths = [path] if writes else []
            elif event in ("os.mkdir", "os.remove", "os.rmdir"):
                paths = [args[0]]
            elif event == "os.rename":  # os.rename and os.replace
                paths = [args[0], args[1]]
            else:
                return
            for path in paths:
                if _under_root(path):
                    _record("write %s %s" % (event, os.fsdecode(path)))
        except Exception as e:  # never break the run being audited
            _record("audit error %r" % (e,))

    sys.addaudithook(_hook)

    @atexit.register
    def _at_exit():
        dist = sys.modules.get("torch.distributed")
        alive = bool(dist is not None and dist.is_available() and dist.is_initialized())
        _record("exit process_group_alive=%s" % alive)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def audit(tmp_path_factory):
    """(environment for the children, folder of per-rank audit logs)."""
    hooks = tmp_path_factory.mktemp("mp_hooks")
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {
        **os.environ,
        "PYTHONPATH": str(hooks),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    return env, tmp_path_factory


def launch(audit, task: str, args: list[str], audit_root: Path, launcher: str = "torchrun"):
    """Run recipes/<task>/train.py in two CPU processes; returns (CompletedProcess, audit log lines)."""
    env, factory = audit
    logs = factory.mktemp("mp_logs")
    env = {**env, "MP_AUDIT_ROOT": str(audit_root), "MP_AUDIT_LOGS": str(logs)}
    script = str(ROOT / "recipes" / task / "train.py")
    if launcher == "torchrun":  # what `accelerate launch --multi_gpu` runs underneath
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(free_port()), script]
    else:  # the documented CPU config
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(CONFIGS / "cpu_multi_process.yaml"), "--main_process_port", str(free_port()), script]
    proc = subprocess.run([*cmd, *args, "--use_cpu", "true"], capture_output=True, text=True, timeout=400, env=env,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for path in sorted(logs.iterdir()) for line in path.read_text().splitlines()]
    return proc, lines


def launch_two_nodes(audit, task: str, args: list[str], audit_root: Path):
    """Two "machines" of one process each on localhost (torchrun --nnodes 2, static rendezvous on 127.0.0.1):
    the multi-node launch line of recipes/accelerate_configs/multi_node.yaml. Returns (stderr of both, audit lines)."""
    env, factory = audit
    logs = factory.mktemp("mn_logs")
    env = {**env, "MP_AUDIT_ROOT": str(audit_root), "MP_AUDIT_LOGS": str(logs)}
    port = str(free_port())
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank),
                               "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", port,
                               str(ROOT / "recipes" / task / "train.py"), *args, "--use_cpu", "true"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
             for rank in (0, 1)]
    errors = [node.communicate(timeout=400)[1] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], errors[0][-3000:] + errors[1][-3000:]
    lines = [line for path in sorted(logs.iterdir()) for line in path.read_text().splitlines()]
    return "".join(errors), lines


def check_clean_two_process_run(proc, audit_lines, output_dir: Path):
    exits = [line for line in audit_lines if line.startswith("exit ")]
    assert exits == ["exit process_group_alive=False"] * 2, audit_lines  # two workers, both ended their group
    writes = [line for line in audit_lines if not line.startswith("exit ")]
    assert writes == [], writes  # the second process wrote nothing
    assert "destroy_process_group" not in proc.stderr and "has NOT been destroyed" not in proc.stderr
    leftovers = [p for p in output_dir.rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def assert_same_numbers(a, b, where: str, tol: float = 1e-6):
    """Same keys/structure; numbers equal within ``tol`` (a different batch layout moves float32 logits by ~1 ulp)."""
    a, b = (None if isinstance(v, float) and not np.isfinite(v) else v for v in (a, b))  # NaN is null in JSON
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), (where, sorted(set(a) ^ set(b)))
        for key in a:
            if "runtime" in key or "per_second" in key:
                continue
            assert_same_numbers(a[key], b[key], f"{where}.{key}", tol)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_numbers(x, y, f"{where}[{i}]", tol)
    elif isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None and a == pytest.approx(b, abs=tol), (where, a, b)
    else:
        assert a == b, (where, a, b)


def read_table(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def assert_same_tables(a: Path, b: Path, tol: float = 2e-6):
    rows_a, rows_b = read_table(a), read_table(b)
    assert len(rows_a) == len(rows_b) and list(rows_a[0]) == list(rows_b[0])
    for row_a, row_b in zip(rows_a, rows_b):
        for key in row_a:
            if key.startswith("prob_"):
                assert float(row_a[key]) == pytest.approx(float(row_b[key]), abs=tol), (a.name, key)
            else:
                assert row_a[key] == row_b[key], (a.name, key)
    return rows_a


def assert_same_outputs(one: Path, two: Path):
    """The two-process folder holds exactly the single-process files, with the same contents."""
    assert files(one) == files(two)
    for name in sorted(files(one)):
        a, b = one / name, two / name
        if name.endswith(".json"):
            assert_same_numbers(json.loads(a.read_text()), json.loads(b.read_text()), name)
        elif name.endswith(".csv"):
            assert_same_tables(a, b)
        elif name == "README.md":  # the model card gives the effective batch size: per device x processes
            strip = lambda text: [l for l in text.splitlines() if "batch_size" not in l]  # noqa: E731
            assert strip(a.read_text()) == strip(b.read_text())
        elif not name.endswith(".png"):  # plots: same data, but float noise may move a pixel
            assert a.read_bytes() == b.read_bytes(), name


# ------------------------------------------------------------------------------------------------ recipes

@pytest.mark.multiprocess
@pytest.mark.parametrize("task", ["text_classification", "ner", "image_classification", "assertion_status",
                                  "relation_extraction"])
def test_two_processes_match_one(task, tiny_bert_dir, tmp_path_factory, audit):
    recipe = load_recipe(task)
    train_args, eval_args = recipe_case(task, tiny_bert_dir, tmp_path_factory)
    base = tmp_path_factory.mktemp(f"mp_{task}")

    # 1. One process: train, then evaluate + predict the saved folder.
    trained = base / "trained"
    recipe.main([*train_args, "--output_dir", str(trained), "--do_train", "--do_eval", "--do_predict"])
    one = base / "eval_1"
    single = recipe.main(["--model_name_or_path", str(trained), *eval_args, "--output_dir", str(one),
                          "--do_eval", "--do_predict"])

    # 2. Two processes evaluate + predict the same folder: same metrics, same files. (The image recipe goes
    #    through `accelerate launch --config_file cpu_multi_process.yaml`, the others through torchrun.)
    two = base / "eval_2"
    launcher = "accelerate" if task == "image_classification" else "torchrun"
    proc, lines = launch(audit, task, ["--model_name_or_path", str(trained), *eval_args, "--output_dir", str(two),
                                       "--do_eval", "--do_predict"], base, launcher)
    check_clean_two_process_run(proc, lines, two)
    assert_same_outputs(one, two)
    if task == "image_classification":  # two machines of one process each, sharing one image cache
        nodes = base / "eval_nodes"
        cache = tmp_path_factory.mktemp("mn_cache")  # outside the audited folder: the lock is any process's to take
        stderr, lines = launch_two_nodes(audit, task, ["--model_name_or_path", str(trained), *eval_args,
                                                       "--output_dir", str(nodes), "--do_eval", "--do_predict",
                                                       "--image_cache_dir", str(cache)], base)
        check_clean_two_process_run(subprocess.CompletedProcess([], 0, "", stderr), lines, nodes)
        assert_same_outputs(one, nodes)
        assert len([n for n in os.listdir(cache) if not n.endswith(".lock")]) == 2  # validation, test: once each
    results = json.loads((two / "all_results.json").read_text())
    assert_same_numbers({k: v for k, v in single.items() if k.startswith(("eval_", "test_"))}, results, "results")
    n_test = {"ner": 21}.get(task, 13)
    assert results["test_samples"] == n_test  # nothing repeated, nothing dropped
    if task == "ner":
        predicted = sum(1 for p in (two / "test_predictions").iterdir() for _ in p.read_text().splitlines())
        assert predicted == sum(1 for p in (one / "test_predictions").iterdir() for _ in p.read_text().splitlines())
    else:
        assert len(read_table(two / "test_predictions.csv")) == n_test

    # 3. Two processes train (effective batch 2 x 8): the run succeeds, writes once, and the folder is complete.
    trained_2 = base / "trained_2"
    proc, lines = launch(audit, task, [*train_args, "--output_dir", str(trained_2), "--do_train", "--do_eval",
                                       "--do_predict"], base)
    check_clean_two_process_run(proc, lines, trained_2)
    assert files(trained_2) == files(trained)
    results = json.loads((trained_2 / "all_results.json").read_text())
    assert np.isfinite(results["train_loss"]) and results["test_samples"] == n_test
    shutil.rmtree(base)


# ------------------------------------------------------------------------------------------------ configs

EXPECTED = {  # file -> (distributed_type, mixed_precision, num_processes)
    "cpu_multi_process": ("MULTI_GPU", "no", 2),  # MULTI_GPU on purpose: MULTI_CPU starts one process (see file)
    "single_gpu_bf16": ("NO", "bf16", 1),
    "multi_gpu_ddp": ("MULTI_GPU", "bf16", 2),
    "fsdp": ("FSDP", "bf16", 2),
    "deepspeed_zero2": ("DEEPSPEED", "bf16", 2),
    "multi_node": ("MULTI_GPU", "bf16", 8),
}


def test_every_config_is_tested():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_config_loads_and_maps_to_launch_options(name):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    path = str(CONFIGS / f"{name}.yaml")
    config = load_config_from_file(path)  # what `accelerate launch --config_file` does; unknown keys raise
    assert isinstance(config, ClusterConfig)
    distributed_type, mixed_precision, num_processes = EXPECTED[name]
    assert (config.distributed_type.value, config.mixed_precision, config.num_processes) == EXPECTED[name]
    parser = launch_command_parser()
    options = {action.dest for action in parser._actions}
    nested = {**config.fsdp_config, **config.deepspeed_config}
    assert set(nested) <= options, sorted(set(nested) - options)  # a misspelt nested key would be ignored silently
    args, _, _ = _validate_launch_command(parser.parse_args(["--config_file", path, "train.py"]))
    assert args.multi_gpu == (distributed_type == "MULTI_GPU") and args.use_fsdp == (distributed_type == "FSDP")
    assert args.use_deepspeed == (distributed_type == "DEEPSPEED") and args.num_processes == num_processes
    assert not args.cpu  # `--cpu` would route every config to the single-process launcher


def test_fsdp_config_gives_a_full_state_dict_plugin():
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin, patch_environment
    from accelerate.utils.launch import prepare_multi_gpu_env

    parser = launch_command_parser()
    args, _, _ = _validate_launch_command(parser.parse_args(["--config_file", str(CONFIGS / "fsdp.yaml"), "x.py"]))
    with patch_environment(**prepare_multi_gpu_env(args)):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and "FULL_STATE_DICT" in str(plugin.state_dict_type)
    assert not plugin.cpu_ram_efficient_loading


def test_deepspeed_config_without_deepspeed_fails_with_one_clear_line(tmp_path, audit):
    import importlib.util

    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed")
    env, _ = audit
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "deepspeed_zero2.yaml"),
         str(ROOT / "recipes" / "text_classification" / "train.py"), "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )
    assert proc.returncode != 0
    assert "DeepSpeed is not installed" in proc.stderr.strip().splitlines()[-1]
    assert "pip3 install deepspeed" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()
