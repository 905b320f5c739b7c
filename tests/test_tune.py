"""recipes/tune.py: Optuna studies around a recipe (resumed, pruned, crashed trials), the test split never read,
best_config.yaml run as it is, nested cross-validation reporting outer scores only, and mistakes as one line.

The pruning, crash and interruption tests use a stand-in recipe (a folder with a train.py that trains nothing and
scores each epoch by its --learning_rate): the tuner's machinery, without paying for training. The text recipe with
a tiny BERT shows the real path end to end."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from shared.trust import tuning
from tests.helpers import ROOT, TEXT_SAMPLE, assert_one_line, run_cli

FAKE_RECIPE = '''\
"""A stand-in recipe: trains nothing; each epoch's validation score is its --learning_rate."""
import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional


@dataclass
class FakeArguments:
    learning_rate: float = 0.1
    num_train_epochs: int = 10
    output_dir: str = "out"
    do_train: bool = False
    do_eval: bool = False
    do_predict: bool = False
    crash: bool = False
    test_file: Optional[str] = None
    num_folds: Optional[int] = None
    fold: Optional[int] = None
    group_column: Optional[str] = None


def _bool(value):
    return str(value).lower() in ("true", "1", "yes")


def parse_args(*types, args=None):
    parser = argparse.ArgumentParser()
    for name in ("learning_rate",):
        parser.add_argument("--" + name, type=float, default=0.1)
    parser.add_argument("--num_train_epochs", type=int, default=10)
    parser.add_argument("--output_dir", default="out")
    parser.add_argument("--test_file", default=None)
    parser.add_argument("--num_folds", type=int, default=None)
    parser.add_argument("--fold", type=int, default=None)
    parser.add_argument("--group_column", default=None)
    for name in ("do_train", "do_eval", "do_predict", "crash"):
        parser.add_argument("--" + name, type=_bool, nargs="?", const=True, default=False)
    return (parser.parse_args(args),)


def main(args=None):
    (options,) = parse_args(FakeArguments, args=sys.argv[1:] if args is None else args)
    if options.crash:
        print("error: a deliberate crash", file=sys.stderr)
        raise SystemExit(1)
    if options.test_file and options.do_predict:
        open(options.test_file).close()
    os.makedirs(options.output_dir, exist_ok=True)
    for epoch in range(1, options.num_train_epochs + 1):
        time.sleep(0.15)
        if os.environ.get("EPOCH_METRICS_FILE"):
            with open(os.environ["EPOCH_METRICS_FILE"], "a") as f:
                f.write(json.dumps({"epoch": epoch, "metric": "score", "value": options.learning_rate}) + "\\n")
    results = {"eval_score": options.learning_rate}
    if options.num_folds:  # the held-out fold scored as the test split, as the recipes do
        results["test_score"] = options.learning_rate + options.fold / 100
    with open(os.path.join(options.output_dir, "all_results.json"), "w") as f:
        json.dump(results, f)
    with open(os.path.join(options.output_dir, "argv.json"), "w") as f:
        json.dump(sys.argv[1:] if args is None else args, f)


if __name__ == "__main__":
    main()
'''


@pytest.fixture
def fake_recipe(tmp_path):
    folder = tmp_path / "fake_recipe"
    folder.mkdir()
    (folder / "train.py").write_text(FAKE_RECIPE)
    return folder


def space_file(path, text: str) -> str:
    path.write_text("use_defaults: false\n" + text)
    return str(path)


def read_trials(folder) -> list[dict]:
    with open(folder / "trials.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def tune(args: list[str], timeout: int = 600):
    done = run_cli("tune.py", args, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


# ------------------------------------------------------------------------------------------------ the machinery
def test_pruning_kills_hopeless_trials_crashes_fail_one_trial_and_a_rerun_resumes(fake_recipe, tmp_path):
    space = space_file(tmp_path / "space.yaml", "learning_rate: {type: float, low: 0.0, high: 1.0}\n"
                                                "crash: {type: categorical, choices: [false, true]}\n")
    out = tmp_path / "study"
    common = ["--recipe", str(fake_recipe), "--metric", "score", "--search_space", space, "--output_dir", out,
              "--pruning_startup_trials", "1", "--seed", "3"]
    tune([*common, "--trials", "8", "--", "--num_train_epochs", "12"])
    trials = read_trials(out)
    states = [t["state"] for t in trials]
    assert len(trials) == 8 and {"COMPLETE", "PRUNED", "FAIL"} <= set(states), states
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    for t in trials:
        folder = out / "trials" / f"trial_{t['number']}"
        if t["state"] == "PRUNED":  # behind the median at its first epochs: killed there, never finished
            epochs = len((folder / "epoch_metrics.jsonl").read_text().splitlines())
            assert int(float(t["user_attrs_pruned_at_epoch"])) <= epochs < 12
            assert not (folder / "run" / "all_results.json").exists()
            assert float(t["params_learning_rate"]) < max(float(c["value"]) for c in complete)
        elif t["state"] == "FAIL":  # the crash ended its trial only, with the recipe's own line recorded
            assert t["params_crash"] == "True" and t["user_attrs_error"] == "error: a deliberate crash"
        else:
            assert float(t["value"]) == pytest.approx(float(t["params_learning_rate"]))
    best = max(complete, key=lambda t: float(t["value"]))
    assert f"learning_rate: {float(best['params_learning_rate'])}" in (out / "best_config.yaml").read_text()
    assert (out / "optimization_history.png").stat().st_size > 0
    with open(out / "param_importances.csv", encoding="utf-8") as f:
        assert next(csv.reader(f)) == ["parameter", "importance"]

    tune([*common, "--trials", "9", "--", "--num_train_epochs", "12"])  # the same study, one trial more
    after = read_trials(out)
    assert len(after) == 9
    assert [(t["number"], t["state"], t["value"]) for t in after[:8]] == [(t["number"], t["state"], t["value"])
                                                                          for t in trials]


def test_a_killed_study_resumes_where_it_stopped(fake_recipe, tmp_path):
    space = space_file(tmp_path / "space.yaml", "learning_rate: {type: float, low: 0.0, high: 1.0}\n")
    out = tmp_path / "study"
    command = [sys.executable, str(ROOT / "recipes" / "tune.py"), "--recipe", str(fake_recipe), "--metric", "score",
               "--search_space", space, "--output_dir", str(out), "--trials", "3", "--pruning_startup_trials", "9",
               "--", "--num_train_epochs", "12"]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    metrics = out / "trials" / "trial_1" / "epoch_metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)  # mid-trial: the tuner stops and kills the trial's process
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "rerun the same command to resume" in stderr, stderr[-2000:]
    written = metrics.read_text()
    time.sleep(1)
    assert metrics.read_text() == written  # the trial's process is gone
    tune(command[2:])
    trials = read_trials(out)
    assert [t["state"] for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]  # trial 1: interrupted
    assert not trials[1].get("user_attrs_exit_status")  # not a failure of the recipe: it does not count


def test_parallel_trials(fake_recipe, tmp_path):
    space = space_file(tmp_path / "space.yaml", "learning_rate: {type: float, low: 0.0, high: 1.0}\n")
    out = tmp_path / "study"
    tune(["--recipe", fake_recipe, "--metric", "score", "--search_space", space, "--output_dir", out, "--trials", "2",
          "--n_jobs", "2", "--", "--num_train_epochs", "10"])
    from optuna import load_study

    trials = load_study(study_name="fake_recipe", storage=f"sqlite:///{out}/study.db").trials
    assert len(trials) == 2
    assert trials[0].datetime_start < trials[1].datetime_complete and trials[1].datetime_start < trials[0].datetime_complete


def test_folds_score_each_trial_by_the_mean_of_its_held_out_folds(fake_recipe, tmp_path):
    space = space_file(tmp_path / "space.yaml", "learning_rate: {type: float, low: 0.0, high: 1.0}\n")
    out = tmp_path / "study"
    tune(["--recipe", fake_recipe, "--metric", "score", "--search_space", space, "--output_dir", out, "--trials", "1",
          "--folds", "3", "--group_column", "patient_id", "--", "--num_train_epochs", "1", "--test_file", "x.csv"])
    (trial,) = read_trials(out)
    assert float(trial["value"]) == pytest.approx(float(trial["params_learning_rate"]) + 0.01)  # folds 0, 1, 2
    for fold in range(3):
        argv = json.loads((out / "trials" / "trial_0" / f"fold_{fold}" / "argv.json").read_text())
        assert argv[argv.index("--fold") + 1] == str(fold) and argv[argv.index("--num_folds") + 1] == "3"
        assert argv[argv.index("--group_column") + 1] == "patient_id" and "--test_file" not in argv


# ------------------------------------------------------------------------------------------------ the text recipe
def test_text_study_never_reads_the_test_file_and_its_best_config_runs(tiny_bert_dir, tmp_path):
    unreadable = tmp_path / "test.csv"
    unreadable.write_text("note,kind\n1,2\n")  # no text column: the recipe refuses it as soon as it reads it
    recipe_args = ["--model_name_or_path", tiny_bert_dir, "--train_file", TEXT_SAMPLE / "train.csv",
                   "--validation_file", TEXT_SAMPLE / "validation.csv", "--max_train_samples", "60",
                   "--max_eval_samples", "30", "--max_seq_length", "32", "--freeze_layers", "0",
                   "--bootstrap_resamples", "0", "--bf16", "false", "--seed", "1"]
    read = run_cli("text_classification", [*recipe_args, "--test_file", unreadable, "--do_train", "--do_predict",
                                           "--num_train_epochs", "1", "--output_dir", tmp_path / "direct"])
    assert read.returncode == 2 and "test.csv" in read.stderr.strip().splitlines()[-1]  # so it would have failed
    space = space_file(tmp_path / "space.yaml", "learning_rate: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}\n"
                                                "long_text: {type: categorical, choices: [chunk, truncate]}\n")
    out = tmp_path / "study"
    config = tmp_path / "run.yaml"  # the test file named in a --config file, --do_predict on the command line
    config.write_text(f"test_file: {unreadable}\nnum_train_epochs: 2\n")
    done = tune(["--recipe", "text_classification", "--trials", "2", "--search_space", space, "--output_dir", out,
                 "--", "--config", config, *recipe_args, "--do_predict"])
    assert "--do_predict left out of every trial" in done.stderr
    assert "test_file of the --config file left out of every trial" in done.stderr
    assert "test_file" not in (out / "trial_config.yaml").read_text()  # what the trials read instead
    trials = read_trials(out)
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE"]
    for number in (0, 1):
        run = out / "trials" / f"trial_{number}" / "run"
        results = json.loads((run / "all_results.json").read_text())
        assert not any(k.startswith("test_") for k in results) and "eval_macro_f1" in results
        assert len((run.parent / "epoch_metrics.jsonl").read_text().splitlines()) == 2  # one score per epoch
        assert not list(run.glob("*.safetensors"))  # weights deleted
    config = (out / "best_config.yaml").read_text()
    assert f"test_file: {unreadable}" in config and "\noutput_dir:" not in config

    final = tmp_path / "final"  # the config as it is, with a real test file given on the command line
    done = run_cli("text_classification", ["--config", out / "best_config.yaml", "--test_file",
                                           TEXT_SAMPLE / "test.csv", "--output_dir", final])
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((final / "all_results.json").read_text())
    best = max(trials, key=lambda t: float(t["value"]))
    assert results["eval_macro_f1"] == pytest.approx(float(best["value"]), abs=1e-6)  # the best trial, reproduced
    assert "test_macro_f1" in results


def balanced_with_patients(path, per_label: int) -> str:
    """``per_label`` sample rows of each label, two rows of one label per patient: every fold and split sees every
    label."""
    with open(TEXT_SAMPLE / "train.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    chosen = [r for label in sorted({r["label"] for r in rows}) for r in [r for r in rows if r["label"] == label][:per_label]]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["patient_id", "text", "label"])
        writer.writeheader()
        for i, row in enumerate(chosen):
            writer.writerow({"patient_id": f"p{i // 2:03d}", **row})
    return str(path)


@pytest.mark.slow  # four trainings of the text recipe: about a minute
def test_nested_cross_validation_reports_outer_scores_only(tiny_bert_dir, tmp_path):
    train = balanced_with_patients(tmp_path / "train.csv", per_label=12)
    space = space_file(tmp_path / "space.yaml", "learning_rate: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}\n")
    out = tmp_path / "nested"
    tune(["--recipe", "text_classification", "--trials", "1", "--outer_folds", "2", "--group_column", "patient_id",
          "--search_space", space, "--output_dir", out, "--", "--model_name_or_path", tiny_bert_dir,
          "--train_file", train, "--max_seq_length", "32", "--num_train_epochs", "2", "--freeze_layers", "0",
          "--bootstrap_resamples", "20", "--bf16", "false", "--seed", "1"])
    summary = json.loads((out / "nested_cv_results.json").read_text())
    assert set(summary["metrics"]) and all(name.startswith("test_") for name in summary["metrics"])
    assert "eval_macro_f1" not in json.dumps(summary["metrics"]) and "best_value" not in summary
    assert summary["metrics"]["test_samples"]["folds"][0] + summary["metrics"]["test_samples"]["folds"][1] == 48
    assert "macro_f1_ci_low" in summary["pooled"]
    assert [c["fold"] for c in summary["chosen_parameters"]] == [0, 1]
    for outer in (0, 1):
        # the inner trial never scored the outer fold: it trained and validated inside the outer training part
        inner = json.loads((out / f"fold_{outer}_tuning" / "trials" / "trial_0" / "run" / "all_results.json").read_text())
        assert not any(k.startswith("test_") for k in inner) and "eval_macro_f1" in inner
        run = out / f"fold_{outer}_tuning" / "trials" / "trial_0" / "run"
        assert not list(run.glob("test_*"))
        assert "| metric | eval |\n" in (run / "README.md").read_text()  # the model card has no test column
        # the outer fold was cut out (--drop_fold): the trial's training and validation rows are the other fold's 24
        assert inner["train_samples"] + inner["eval_samples"] == 24
        with open(out / f"fold_{outer}" / "test_predictions.csv", encoding="utf-8") as f:
            rows = {int(r["row"]) for r in csv.DictReader(f)}
        assert len(rows) == 24
    assert "| macro_f1 |" in (out / "nested_cv_results.md").read_text()


# ------------------------------------------------------------------------------------------------ mistakes
@pytest.mark.parametrize("own, recipe, space, expected", [
    (["--recipe", "no_such_task", "--trials", "2"], ["--train_file", "x.csv"], None, r"--recipe no_such_task: no such recipe.*"),
    (["--recipe", "text_classification", "--trials", "0"], ["--train_file", "x.csv"], None, r"--trials must be at least 1, got 0"),
    (["--recipe", "text_classification", "--trials", "2"], [], "learning_rat: {type: float, low: 1, high: 2}\n",
     r".*space.yaml: search space: 'learning_rat' is not an option of the recipe \(did you mean 'learning_rate'\?\)"),
    (["--recipe", "text_classification", "--trials", "2"], [], "learning_rate: {type: float, low: 1, hihg: 2}\n",
     r".*space.yaml:2: learning_rate: unknown key 'hihg' for type float \(did you mean 'high'\?\)"),
    (["--recipe", "text_classification", "--trials", "2"], [], "long_text: {type: categorical, choices: [chunk, all]}\n",
     r"recipe arguments with --long_text all: .*"),
    (["--recipe", "text_classification", "--trials", "2", "--storage", "nosuchdb://somewhere"], [], None,
     r"--storage nosuchdb://somewhere: .*"),
    (["--recipe", "text_classification", "--trials", "2"], ["--num_folds", "3"], None,
     r"do not pass --num_folds to the recipe under tuning .*"),
])
def test_mistakes_are_one_line_before_any_trial(own, recipe, space, expected, tiny_bert_dir, tmp_path):
    out = tmp_path / "study"
    flags = ["--search_space", space_file(tmp_path / "space.yaml", space)] if space else []
    done = run_cli("tune.py", [*own, *flags, "--output_dir", out, "--", "--model_name_or_path", tiny_bert_dir,
                               "--train_file", TEXT_SAMPLE / "train.csv", *recipe])
    assert_one_line(done.returncode, done.stderr, expected, out)


def test_an_output_folder_of_another_study_is_refused(fake_recipe, tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    (out / "notes.txt").write_text("someone else's")
    done = run_cli("tune.py", ["--recipe", fake_recipe, "--metric", "score", "--trials", "1", "--search_space",
                               space_file(tmp_path / "s.yaml", "learning_rate: {type: float, low: 0, high: 1}\n"),
                               "--output_dir", out, "--", "--num_train_epochs", "1"])
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "holds no study of tune.py" in done.stderr and sorted(os.listdir(out)) == ["notes.txt"]


def test_search_space_defaults_are_options_of_each_recipe():
    for task, space in tuning.DEFAULT_SPACES.items():
        for params in tuning.extremes(space):
            tuning.parse_recipe_arguments(task, ["--model_name_or_path", "m", "--do_train", "--do_eval",
                                                 *tuning.as_flags(params)])
