"""shared/trust/crossval.py: the cross-validation tool's parts (fold arguments, summary, weight removal) and its
errors."""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest

from shared.core.errors import DataError
from shared.core.runner import run_recipe
from shared.trust.crossval import fold_args, markdown_table, output_dir_of, remove_weights, summarize
from tests.helpers import ROOT


def run_tool(argv):
    """recipes/cross_validate.py's main, in-process, raising its DataError (shared.core.runner, as for recipes)."""
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


# ------------------------------------------------------------------------------------ pooled out-of-fold (audit)
def fake_fold(folder, rows, labels, predictions, probs, names, multi_label):
    from shared.evaluation.reports import predictions_csv

    os.makedirs(folder)
    with open(os.path.join(folder, "test_predictions.csv"), "w", encoding="utf-8") as f:
        f.write(predictions_csv(rows, predictions, np.asarray(probs), names, labels))
    problem = "multi_label_classification" if multi_label else "single_label_classification"
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump({"problem_type": problem}, f)
    return str(folder)


def test_pooled_multi_label_folds_parse_separated_labels_and_audit(tmp_path):
    from shared.trust import audit

    names = ["cardio", "renal"]
    rng = np.random.default_rng(0)
    folds, gold = [], {}
    for fold in range(2):
        rows = list(range(fold, 40, 2))  # interleaved, as a stratified split gives them
        truth = [[names[k] for k in range(2) if (row >> k) & 1] for row in rows]
        probs = [[0.9 if n in t else 0.1 for n in names] for t in truth]
        probs = np.clip(np.asarray(probs) + rng.normal(0, 0.03, (len(rows), 2)), 0.01, 0.99)
        given = [list(t) for t in truth]
        if fold == 1:
            given[3] = ["renal"] if given[3] != ["renal"] else ["cardio"]  # one planted wrong label set
        gold.update({row: g for row, g in zip(rows, given)})
        folds.append(fake_fold(tmp_path / f"fold_{fold}", rows, ["|".join(g) for g in given],
                               ["|".join(t) for t in truth], probs, names, multi_label=True))
    pooled = audit.read_fold_predictions(folds, separator="|")
    assert pooled["multi_label"] and pooled["label_names"] == names
    assert all(pooled["gold"][i] == sorted(names.index(n) for n in gold[row]) for i, row in enumerate(pooled["row"]))
    audit.write_oof_predictions(str(tmp_path), pooled)
    with open(tmp_path / "oof_predictions.csv", encoding="utf-8") as f:
        oof = list(csv.DictReader(f))
    assert [int(r["row"]) for r in oof] == list(range(40)) and list(oof[0])[:4] == ["row", "fold", "label", "prediction"]
    metrics = audit.pooled_classifier_metrics(pooled, resamples=20, seed=0)
    assert metrics["samples"] == 40 and "micro_f1_ci_low" in metrics
    issues = audit.classifier_label_issues(pooled)
    assert issues and issues[0]["row"] == 7 and issues[0]["fold"] == 1  # row 7: the planted one (fold 1, 4th row)
    summary = summarize([{"test_micro_f1": 0.9}, {"test_micro_f1": 0.8}])
    summary["pooled"] = metrics
    table = markdown_table(summary)
    assert "pooled (95% CI)" in table.splitlines()[0] and f"{metrics['micro_f1']:.4f} (" in table


def test_folds_with_different_classes_are_refused(tmp_path):
    from shared.trust import audit

    a = fake_fold(tmp_path / "fold_0", [0], ["x"], ["x"], [[0.9, 0.1]], ["x", "y"], multi_label=False)
    b = fake_fold(tmp_path / "fold_1", [1], ["x"], ["x"], [[0.9, 0.1]], ["x", "z"], multi_label=False)
    with pytest.raises(DataError, match=r"classes \['x', 'z'\] differ from fold 0's"):
        audit.read_fold_predictions([a, b])


def test_an_audit_from_a_model_at_chance_warns(tmp_path, capsys):
    from shared.core.runner import load_recipe

    rng = np.random.default_rng(0)
    folds = []
    for fold in range(2):
        probs = rng.dirichlet([1, 1], 30)  # a model that learned nothing
        labels = ["x" if k % 2 else "y" for k in range(30)]
        folds.append(fake_fold(tmp_path / f"fold_{fold}", list(range(fold, 60, 2)), labels,
                               ["x" if p[0] >= 0.5 else "y" for p in probs], probs, ["x", "y"], multi_label=False))
    tool = load_recipe(ROOT / "recipes" / "cross_validate.py")
    metrics, issues, _ = tool.pool_out_of_fold(str(tmp_path), folds, ["--bootstrap_resamples", "10"], audit_labels=True)
    assert metrics["samples"] == 60 and len(issues) > 12
    assert (tmp_path / "label_issues.csv").is_file() and (tmp_path / "oof_predictions.csv").is_file()
    assert "too weak to judge the labels" in capsys.readouterr().err
