"""k-fold cross-validation around any recipe: the pieces ``recipes/cross_validate.py`` is made of.

The recipe itself cuts fold ``i`` of its training data as the test split (``--num_folds K --fold i``, see
``shared/data/splits.py``); this module builds each fold's command line, removes a fold's model weights once its metrics
are written, and summarises the folds' ``all_results.json`` as mean and sample standard deviation.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
from collections.abc import Sequence

from shared.core.args import read_config
from shared.core.errors import DataError
from shared.tasks import TASKS

RECIPES = tuple(TASKS)  # every task this project trains (shared/tasks.py)
# What a fold's output folder keeps without --keep_fold_models: metrics, reports, predictions, plots, model card.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
SET_BY_RUNNER = ("--num_folds", "--fold", "--output_dir")


def split_at_double_dash(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the runner's own arguments, the recipe's): everything after the first ``--`` goes to the recipe unchanged."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def _option(argv: Sequence[str], name: str) -> tuple[int, str | None] | None:
    """(position, value) of ``--name value`` / ``--name=value`` in ``argv``, or None."""
    for i, arg in enumerate(argv):
        if arg == name:
            return i, argv[i + 1] if i + 1 < len(argv) else None
        if arg.startswith(name + "="):
            return i, arg.split("=", 1)[1]
    return None


def recipe_option(recipe_args: Sequence[str], name: str) -> str | None:
    """The value of ``--name`` in the recipe's arguments, from the command line or its ``--config`` file, or None."""
    found = _option(recipe_args, f"--{name}")
    if found and found[1]:
        return found[1]
    config = _option(recipe_args, "--config")
    if config and config[1]:

        value = read_config(config[1])[0].get(name)
        if value is not None:
            return str(value)
    return None


def output_dir_of(recipe_args: Sequence[str]) -> str:
    """The ``--output_dir`` of the recipe's arguments, from the command line or its ``--config`` file."""
    value = recipe_option(recipe_args, "output_dir")
    if value:
        return value
    raise DataError("the recipe arguments need --output_dir (each fold writes to <output_dir>/fold_<i>)")


def fold_args(recipe_args: Sequence[str], output_dir: str, k: int, fold: int,
              group_column: str | None = None) -> list[str]:
    """The recipe's arguments for one fold: its own, with the fold, the fold's folder and train + predict on."""
    for name in SET_BY_RUNNER[:2] + ("--test_file", "--test_dir"):
        if _option(recipe_args, name):
            what = "the runner sets it" if name in SET_BY_RUNNER else "each fold's test split is a fold of the training data"
            raise DataError(f"do not pass {name} to the recipe under cross-validation ({what})")
    args = list(recipe_args)
    found = _option(args, "--output_dir")
    if found:
        del args[found[0]: found[0] + (1 if "=" in args[found[0]] else 2)]
    args += ["--output_dir", os.path.join(output_dir, f"fold_{fold}"), "--num_folds", str(k), "--fold", str(fold)]
    for flag in ("--do_train", "--do_predict"):
        if flag not in args:
            args.append(flag)
    if group_column:
        args += ["--group_column", group_column]
    return args


def remove_weights(folder: str) -> int:
    """Delete model weights (and checkpoint folders) from a fold's output; metrics and predictions stay. Bytes freed."""
    freed = 0
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isdir(path) and name.startswith("checkpoint-"):
            freed += sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
            shutil.rmtree(path)
        elif os.path.isfile(path) and name.endswith(WEIGHT_SUFFIXES):
            freed += os.path.getsize(path)
            os.remove(path)
    return freed


def read_fold_results(folder: str) -> dict[str, float]:
    path = os.path.join(folder, "all_results.json")
    if not os.path.isfile(path):
        raise DataError("fold finished without all_results.json", path=folder)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def summarize(fold_results: Sequence[dict[str, float]]) -> dict:
    """Per-fold test metrics, their mean and sample standard deviation (ddof 1), for metrics every fold has.

    Confidence-interval bounds (``*_ci_low``/``*_ci_high``) stay in each fold's own results; NaN (a metric
    undefined on a fold) is left out of that metric's mean and sd, and the fold count says how many were used.
    """
    def number(value):  # NaN is saved as null
        return isinstance(value, (int, float)) and not isinstance(value, bool) or value is None

    names = [k for k in fold_results[0] if k.startswith("test_") and not k.endswith(("_ci_low", "_ci_high"))
             and all(k in r and number(r[k]) for r in fold_results)]
    summary = {}
    for name in names:
        values = [math.nan if r[name] is None else float(r[name]) for r in fold_results]
        finite = [v for v in values if not math.isnan(v)]
        mean = statistics.fmean(finite) if finite else math.nan
        sd = statistics.stdev(finite) if len(finite) > 1 else math.nan  # sample sd (n - 1)
        summary[name] = {"folds": values, "mean": mean, "sd": sd, "n": len(finite)}
    return {"num_folds": len(fold_results), "metrics": summary, "per_fold": list(fold_results)}


def markdown_table(summary: dict) -> str:
    """One table: a row per metric, a column per fold, then mean ± sd, then (when ``summary["pooled"]``) the metric
    of all out-of-fold predictions pooled, with its bootstrap 95% CI."""
    k, pooled = summary["num_folds"], summary.get("pooled")
    lines = ["| metric | " + " | ".join(f"fold {i}" for i in range(k)) + " | mean ± sd |" + (" pooled (95% CI) |" if pooled else ""),
             "|---|" + "---:|" * (k + 1 + bool(pooled))]
    for name, m in summary["metrics"].items():
        cells = [_fmt(v) for v in m["folds"]]
        line = f"| {name.removeprefix('test_')} | " + " | ".join(cells) + f" | {_fmt(m['mean'])} ± {_fmt(m['sd'])} |"
        if pooled:
            key = name.removeprefix("test_")
            value = pooled.get(key)
            cell = "–" if value is None else _fmt(float(value))
            if f"{key}_ci_low" in pooled:
                cell += f" ({_fmt(float(pooled[key + '_ci_low']))}–{_fmt(float(pooled[key + '_ci_high']))})"
            line += f" {cell} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.4f}"
