"""shared/crossval.py: the cross-validation tool's parts (fold arguments, summary, weight removal) and its errors."""

from __future__ import annotations

import json
import math
import os

import pytest

from shared.crossval import fold_args, markdown_table, output_dir_of, remove_weights, summarize
from shared.errors import DataError
from shared.runner import run_recipe
from tests.helpers import ROOT


def run_tool(argv):
    """recipes/cross_validate.py's main, in-process, raising its DataError (shared.runner, as for recipes)."""
    return run_recipe(ROOT / "recipes" / "cross_validate.py", argv, raise_errors=True)


def test_fold_args_rewrite_output_dir_and_add_the_fold():
    args = fold_args(["--config", "c.yaml", "--output_dir=runs/x", "--do_eval"], "runs/x", 5, 3, "patient_id")
    assert "--output_dir=runs/x" not in args
    assert args[args.index("--output_dir") + 1] == os.path.join("runs/x", "fold_3")
    assert args[args.index("--num_folds") + 1] == "5" and args[args.index("--fold") + 1] == "3"
    assert {"--do_train", "--do_predict", "--do_eval"} <= set(args) and args[-2:] == ["--group_column", "patient_id"]
    for bad in (["--test_file", "t.csv"], ["--fold", "1"]):
        with pytest.raises(DataError, match=f"do not pass {bad[0]}"):
            fold_args(["--output_dir", "o", *bad], "o", 2, 0)


def test_output_dir_from_the_command_line_or_the_config(tmp_path):
    assert output_dir_of(["--output_dir", "a"]) == "a"
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"output_dir": "from_config"}))
    assert output_dir_of(["--config", str(config)]) == "from_config"
    with pytest.raises(DataError, match="need --output_dir"):
        output_dir_of(["--train_file", "x.csv"])


def test_summary_mean_sd_and_table():
    folds = [{"test_accuracy": 0.8, "test_accuracy_ci_low": 0.7, "test_auroc": None, "test_samples": 10, "train_loss": 1},
             {"test_accuracy": 0.6, "test_accuracy_ci_low": 0.5, "test_auroc": 0.9, "test_samples": 10, "train_loss": 1}]
    summary = summarize(folds)
    acc = summary["metrics"]["test_accuracy"]
    assert acc["folds"] == [0.8, 0.6] and acc["mean"] == pytest.approx(0.7) and acc["sd"] == pytest.approx(0.141421, abs=1e-6)
    assert "test_accuracy_ci_low" not in summary["metrics"] and "train_loss" not in summary["metrics"]
    assert summary["metrics"]["test_auroc"]["n"] == 1 and math.isnan(summary["metrics"]["test_auroc"]["sd"])
    table = markdown_table(summary)
    assert "| accuracy | 0.8000 | 0.6000 | 0.7000 ± 0.1414 |" in table and "| samples | 10 | 10 | 10 ± 0.0000 |" in table


def test_remove_weights_keeps_metrics(tmp_path):
    for name in ("model.safetensors", "crf.safetensors", "all_results.json", "test_predictions.csv", "config.json"):
        (tmp_path / name).write_text("x")
    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "checkpoint-5" / "optimizer.pt").write_text("x")
    remove_weights(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["all_results.json", "config.json", "test_predictions.csv"]


@pytest.mark.parametrize("argv, message", [
    (["--recipe", "ner", "--folds", "1", "--", "--output_dir", "o"], "--folds must be at least 2, got 1"),
    (["--recipe", "ner", "--folds", "2"], "give the recipe's arguments after `--`"),
])
def test_runner_bad_arguments(argv, message):
    with pytest.raises(DataError, match=message):
        run_tool(argv)
