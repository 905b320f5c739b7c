"""--conformal_alpha through the real command line: the text recipe writes coverage, set sizes and each test row's
prediction set; predict.py, the ONNX export and serve.py give the same sets from the saved folder; the image and
assertion recipes do the same; a bad alpha or a validation split too small for it is one line before training."""

from __future__ import annotations

import csv
import glob
import json
from pathlib import Path

import numpy as np
import pytest

from shared.core.runner import run_recipe
from shared.deploy.predictors import TextClassifier
from shared.training.tiny_models import build_tiny_bert
from tests.helpers import ASSERTION_SAMPLE, IMAGE_SAMPLE, TEXT_SAMPLE, assert_one_line, run_cli

QUIET = ["--bf16", "false", "--seed", "3"]
TEXT = ["--train_file", TEXT_SAMPLE / "train.csv", "--validation_file", TEXT_SAMPLE / "validation.csv",
        "--max_train_samples", "120", "--num_train_epochs", "2", "--learning_rate", "3e-3", "--max_seq_length", "24"]


def rows_of(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def same_sets(expected_csv, got_csv, atol=1e-6):
    """The same rows, decisions and prediction sets; probabilities equal within ``atol`` (the training run's
    in-memory model and the saved folder differ in the last float bits)."""
    expected, got = rows_of(expected_csv), rows_of(got_csv)
    assert len(expected) == len(got) > 0 and list(expected[0]) == list(got[0])
    for e, g in zip(expected, got):
        assert (e["row"], e["prediction"], e["prediction_set"]) == (g["row"], g["prediction"], g["prediction_set"])
        probs = [k for k in e if k.startswith("prob_")]
        np.testing.assert_allclose([float(g[k]) for k in probs], [float(e[k]) for k in probs], rtol=0, atol=atol)


def coverage_of(rows):
    return np.mean([row["label"] in json.loads(row["prediction_set"]) for row in rows])


@pytest.fixture(scope="module")
def set_folder(tiny_bert_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("conformal") / "model"
    proc = run_cli("text_classification", [
        "--model_name_or_path", tiny_bert_dir, *TEXT, "--test_file", TEXT_SAMPLE / "test.csv", "--output_dir", out,
        "--do_train", "--do_eval", "--do_predict", "--bootstrap_resamples", "30", "--conformal_alpha", "0.2", *QUIET])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_text_run_writes_coverage_set_sizes_and_sets(set_folder):
    results = json.loads((set_folder / "all_results.json").read_text())
    rows = rows_of(set_folder / "test_predictions.csv")
    sets = [json.loads(row["prediction_set"]) for row in rows]
    assert results["test_coverage"] == pytest.approx(coverage_of(rows))
    assert results["test_mean_set_size"] == pytest.approx(np.mean([len(s) for s in sets]))
    assert results["test_coverage_ci_low"] <= results["test_coverage"] <= results["test_coverage_ci_high"]
    assert "eval_coverage" in results and "eval_mean_set_size" in results
    saved = json.loads((set_folder / "config.json").read_text())["conformal"]
    assert saved["alpha"] == 0.2 and saved["fitted_on_calibration_examples"] == 40 and len(saved["thresholds"]) == 1
    # the set is every class whose probability reaches 1 - threshold
    labels = [k[len("prob_"):] for k in rows[0] if k.startswith("prob_")]
    for row, named in zip(rows, sets):
        assert named == [name for name in labels if 1 - float(row[f"prob_{name}"]) <= saved["thresholds"][0] + 1e-8]
    report = json.loads((set_folder / "test_report.json").read_text())["prediction_sets"]
    assert set(report["per_class"]) == set(labels) and report["target_coverage"] == pytest.approx(0.8)
    assert sum(c["examples"] for c in report["per_class"].values()) == len(rows)
    card = (set_folder / "README.md").read_text()
    assert "| coverage |" in card and "split-conformal sets at alpha 0.2" in card


def test_predict_gives_the_same_sets(set_folder, tmp_path):
    run_recipe("text_classification", ["--model_dir", set_folder, "--input", TEXT_SAMPLE / "test.csv",
                                       "--output_dir", tmp_path / "predict"], entry="predict")
    same_sets(set_folder / "test_predictions.csv", tmp_path / "predict" / "predictions.csv")


def test_sets_survive_the_onnx_export_and_the_service(set_folder, tmp_path, serve):
    import httpx

    export = tmp_path / "export"
    run_recipe("export_onnx.py", ["--model_dir", set_folder, "--input", TEXT_SAMPLE / "validation.csv",
                                  "--output_dir", export])
    run_recipe("text_classification", ["--model_dir", export, "--backend", "onnx", "--input",
                                       TEXT_SAMPLE / "test.csv", "--output_dir", tmp_path / "onnx"], entry="predict")
    same_sets(set_folder / "test_predictions.csv", tmp_path / "onnx" / "predictions.csv", atol=1e-5)

    notes = [row["text"] for row in rows_of(TEXT_SAMPLE / "test.csv")[:3]]
    expected = TextClassifier(str(set_folder)).predict(notes)
    for folder, backend in ((set_folder, "pytorch"), (export, "onnx")):
        url = serve("--model_dir", folder, "--backend", backend)
        answers = httpx.post(f"{url}/predict", json={"texts": notes}).json()["results"]
        assert [a["prediction_set"] for a in answers] == expected.sets


@pytest.mark.parametrize("extra, expected", [
    (["--conformal_alpha", "0"], r"--conformal_alpha must be between 0 and 1 \(exclusive\).*got 0"),
    (["--conformal_alpha", "1.5"], r"--conformal_alpha must be between 0 and 1 \(exclusive\).*got 1.5"),
    (["--conformal_alpha", "0.1", "--max_eval_samples", "12"],
     (r"--conformal_alpha 0.1 needs at least 9 calibration examples, but the 50% of the 12 validation examples held "
      r"out for it \(--conformal_split_percentage\) holds 6: .*")),
    (["--conformal_alpha", "0.1", "--conformal_class_conditional"],
     r"--conformal_class_conditional at alpha 0.1 needs at least 9 calibration examples of every class, .*"),
])
def test_a_bad_alpha_or_too_small_a_split_is_one_line_before_training(tiny_bert_dir, tmp_path, extra, expected):
    out = tmp_path / "out"
    proc = run_cli("text_classification", ["--model_name_or_path", tiny_bert_dir, *TEXT, "--output_dir", out,
                                           "--do_train", "--do_eval", *extra, *QUIET])
    assert_one_line(proc.returncode, proc.stderr, expected, out)
    assert "train_runtime" not in proc.stderr


def test_image_recipe_sets_class_conditional(tiny_vit, tmp_path):
    out = tmp_path / "out"
    results = run_recipe("image_classification", [
        "--model_name_or_path", tiny_vit, "--train_dir", IMAGE_SAMPLE / "folders" / "train", "--validation_dir",
        IMAGE_SAMPLE / "folders" / "validation", "--test_dir", IMAGE_SAMPLE / "folders" / "test", "--output_dir", out,
        "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "1", "--learning_rate", "1e-3",
        "--bootstrap_resamples", "0", "--conformal_alpha", "0.25", "--conformal_class_conditional", *QUIET])
    saved = json.loads((out / "config.json").read_text())["conformal"]
    assert saved["class_conditional"] and len(saved["thresholds"]) == 2
    rows = rows_of(out / "test_predictions.csv")
    assert results["test_coverage"] == pytest.approx(coverage_of(rows))
    run_recipe("image_classification", ["--model_dir", out, "--input", IMAGE_SAMPLE / "folders" / "test",
                                        "--output_dir", tmp_path / "predict"], entry="predict")
    same_sets(out / "test_predictions.csv", tmp_path / "predict" / "predictions.csv")


def test_assertion_recipe_sets(tmp_path_factory, tmp_path, serve):
    import httpx

    corpus = [Path(p).read_text() for p in sorted(glob.glob(str(ASSERTION_SAMPLE / "*" / "*.txt")))]
    model = build_tiny_bert(tmp_path_factory.mktemp("tiny_assertion_bert"), corpus)
    out = tmp_path / "out"
    results = run_recipe("assertion_status", [
        "--model_name_or_path", model, "--output_dir", out, "--train_file", ASSERTION_SAMPLE / "train",
        "--validation_file", ASSERTION_SAMPLE / "validation", "--test_file", ASSERTION_SAMPLE / "test", "--do_train",
        "--do_eval", "--do_predict", "--num_train_epochs", "1", "--learning_rate", "1e-3", "--bootstrap_resamples",
        "0", "--conformal_alpha", "0.2", *QUIET])
    rows = rows_of(out / "test_predictions.csv")
    assert results["test_coverage"] == pytest.approx(coverage_of(rows))
    run_recipe("assertion_status", ["--model_dir", out, "--input", ASSERTION_SAMPLE / "test",
                                    "--output_dir", tmp_path / "predict"], entry="predict")
    same_sets(out / "test_predictions.csv", tmp_path / "predict" / "predictions.csv")
    url = serve("--model_dir", out)
    text = "Chest pain. No fever."
    answer = httpx.post(f"{url}/predict", json={"text": text, "concepts": [
        {"start": 0, "end": 10, "type": "problem"}, {"start": 15, "end": 20, "type": "problem"}]}).json()
    for concept in answer["concepts"]:
        assert isinstance(concept["prediction_set"], list)
        assert set(concept["prediction_set"]) <= set(concept["probabilities"])
