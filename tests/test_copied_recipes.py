"""A recipe folder copies cleanly: `cp -r recipes/ner recipes/my_ner` gives a working recipe that depends on nothing
beside it but ``shared``, and the copy and the original run side by side in one process (each is its own module)."""

from __future__ import annotations

import json
import shutil

import pytest

from shared.core.runner import load_recipe, run_recipe
from tests.helpers import ROOT

CASES = {
    "ner": lambda d: ["--train_file", d / "train", "--validation_file", d / "validation", "--test_file", d / "test",
                      "--max_train_samples", "30"],
    "text_classification": lambda d: ["--train_file", d / "train.csv", "--validation_file", d / "validation.csv",
                                      "--test_file", d / "test.csv", "--max_train_samples", "32"],
}
FAST = ["--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "1", "--bootstrap_resamples", "10",
        "--per_device_train_batch_size", "16", "--seed", "4"]


@pytest.mark.parametrize("task", sorted(CASES))
def test_a_copied_recipe_runs_beside_the_original(task, tiny_bert_dir, tiny_ner_model, tmp_path):
    copy = tmp_path / "my_recipes" / f"my_{task}"
    shutil.copytree(ROOT / "recipes" / task, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert sorted(p.name for p in copy.iterdir()) == ["README.md", "configs", "predict.py", "sample_data", "train.py"]
    model = tiny_ner_model if task == "ner" else str(tiny_bert_dir)
    original = load_recipe(task)
    copied = load_recipe(copy)
    assert copied is not original and copied.__file__ == str(copy / "train.py")
    results = {}
    for name, recipe, folder in (("original", task, ROOT / "recipes" / task), ("copy", copy, copy)):
        args = ["--model_name_or_path", model, "--output_dir", tmp_path / name,
                *CASES[task](folder / "sample_data"), *FAST]
        results[name] = run_recipe(recipe, args)
    assert load_recipe(task) is original  # loading the copy replaced nothing
    metric = "test_f1" if task == "ner" else "test_accuracy"
    assert results["copy"][metric] == pytest.approx(results["original"][metric])  # same data, same seed
    for name in ("original", "copy"):
        assert json.loads((tmp_path / name / "all_results.json").read_text())[metric] == pytest.approx(
            results[name][metric])
