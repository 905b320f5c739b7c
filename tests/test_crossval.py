"""Cross-validation: shared/crossval.py, recipes/cross_validate.py end to end (text), and a fold of NER and image."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import sys

import numpy as np
import pytest

from conftest import ROOT, load_recipe
from shared.crossval import fold_args, markdown_table, output_dir_of, remove_weights, summarize
from shared.errors import DataError
from shared.tiny_models import build_tiny_vit
from test_splits import with_patients


def load_runner():
    spec = importlib.util.spec_from_file_location("cross_validate", ROOT / "recipes" / "cross_validate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
        load_runner().main(argv)


def test_text_cross_validation_end_to_end(tiny_bert_dir, tmp_path):
    train = with_patients(tmp_path / "train.csv", 40, per_patient=4)
    out = tmp_path / "cv"
    summary = load_runner().main([
        "--recipe", "text_classification", "--folds", "2", "--group_column", "patient_id", "--",
        "--model_name_or_path", str(tiny_bert_dir), "--train_file", train, "--output_dir", str(out),
        "--num_train_epochs", "1", "--bootstrap_resamples", "20", "--seed", "1",
    ])
    saved = json.loads((out / "cv_results.json").read_text())
    acc = saved["metrics"]["test_accuracy"]
    assert len(acc["folds"]) == 2 and acc["mean"] == pytest.approx(np.mean(acc["folds"]))
    assert acc["sd"] == pytest.approx(np.std(acc["folds"], ddof=1))
    assert saved["metrics"]["test_samples"]["folds"][0] + saved["metrics"]["test_samples"]["folds"][1] == 40
    assert summary["metrics"].keys() == saved["metrics"].keys()
    assert "| accuracy |" in (out / "cv_results.md").read_text()
    patients, rows = [], []
    for fold in range(2):
        fold_dir = out / f"fold_{fold}"
        assert (fold_dir / "all_results.json").exists() and (fold_dir / "README.md").exists()
        assert not list(fold_dir.glob("*.safetensors"))  # weights deleted by default
        with open(fold_dir / "test_predictions.csv", encoding="utf-8") as f:
            fold_rows = [int(r["row"]) for r in csv.DictReader(f)]  # rows of the training file
        rows += fold_rows
        patients.append({r // 4 for r in fold_rows})
    assert sorted(rows) == list(range(40))  # each row scored exactly once
    assert not patients[0] & patients[1]  # no patient in both folds


# ------------------------------------------------------------------------------------------------ NER and image
def test_ner_fold_keeps_documents_together(tmp_path):
    from tests.ner_fixtures import SAMPLE, build_tiny_model

    recipe = load_recipe("ner")
    model = build_tiny_model(str(tmp_path / "tiny"))
    results = recipe.main([
        "--model_name_or_path", model, "--output_dir", str(tmp_path / "out"), "--train_file",
        os.path.join(SAMPLE, "train"), "--max_train_samples", "60", "--num_folds", "3", "--fold", "1", "--do_train",
        "--do_eval", "--validation_split_percentage", "25", "--num_train_epochs", "1", "--bootstrap_resamples", "10",
        "--bf16", "false", "--optim", "adamw_torch",
    ])
    assert "test_f1" in results and "eval_f1" in results
    with open(tmp_path / "out" / "predictions" / "predictions.jsonl", encoding="utf-8") as f:
        predicted = [json.loads(line) for line in f]
    assert len(predicted) == results["test_samples"]
    notes = {p["file"] for p in predicted}
    for note in notes:  # whole notes: every non-empty line of each held-out note is predicted
        with open(note.replace(".con", ".txt"), encoding="utf-8") as f:
            lines = sum(1 for line in f if line.strip())
        assert sum(p["file"] == note for p in predicted) == lines


def test_image_fold_by_patient_from_a_table(tmp_path, capsys):
    sample = ROOT / "recipes" / "image_classification" / "sample_data"
    with open(sample / "train.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    table = tmp_path / "train.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["image", "label", "patient_id"])
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({"image": str(sample / row["image"]), "label": row["label"], "patient_id": f"p{i // 2}"})
    recipe = load_recipe("image_classification")
    model = build_tiny_vit(tmp_path / "vit")
    common = ["--model_name_or_path", model, "--num_train_epochs", "1", "--bootstrap_resamples", "10",
              "--num_folds", "2", "--fold", "0", "--do_train", "--do_eval", "--validation_split_percentage", "25",
              "--group_column", "patient_id"]
    results = recipe.main([*common, "--output_dir", str(tmp_path / "out"), "--train_file", str(table)])
    assert "test_accuracy" in results and "eval_accuracy" in results
    assert results["test_samples"] + results["eval_samples"] + results["train_samples"] == len(rows)
    assert results["test_samples"] % 2 == 0 and results["eval_samples"] % 2 == 0  # whole patients (2 images each)

    with pytest.raises(DataError, match="image folders, .npz files and hub datasets have no such column"):
        recipe.main([*common, "--output_dir", str(tmp_path / "bad"), "--train_dir", str(sample / "folders" / "train")])
