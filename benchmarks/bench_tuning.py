#!/usr/bin/env python
"""Defaults vs a tuned configuration vs a 5-fold ensemble, per data set, in one run on one machine.

    python benchmarks/bench_tuning.py                                   # all three data sets from ../shared
    python benchmarks/bench_tuning.py --datasets medical_abstracts --trials 5 --folds 5
    python benchmarks/bench_tuning.py --max_train_samples 200 --trials 2 --folds 2    # quick check

For each data set (the shipped config in ``recipes/<task>/configs/``, the model it names from ``../shared/models``):

- **defaults**: ``train.py --config <config>``, scored once on the test split;
- **tuned**: ``recipes/tune.py`` with ``--trials`` trials over a search space sized for this CPU (``SPACES`` below;
  ``--pruning_startup_trials 2``), each trial scored on the validation split, the test split never read; the best
  trial's own folder (``--keep_trial_models``: the same weights a retrain from ``best_config.yaml`` gives, seeded)
  is then scored once on the test split;
- **ensemble**: ``recipes/cross_validate.py --folds K --keep_fold_models`` on the training file with the config's
  settings, then ``predict.py --model_dir <cv folder>`` on the test split: the mean of the K fold models' calibrated
  probabilities (NER: their tag scores at every position of the shared windows).

Reported per row: the test metrics the goals of issue #34 name, with bootstrap 95% CIs (1,000 resamples, rows), the
validation score that chose the row where there is one, the wall time of the whole row (the study and the K folds
included) and the training examples processed (examples x epochs, summed over trials or folds), the compute a row
cost independently of the machine's load. Results go to ``benchmarks/results/tuning.{json,md}``, rewritten after
every row so that a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# The search spaces: the parameters that matter most for a fine-tune, ranges narrowed to what a few trials on two
# CPU cores can explore. --long_text chunk (3-4x the training time on abstracts) is measured in bench_long_text.py.
SPACES = {
    "medical_abstracts": {
        "use_defaults": False,
        "learning_rate": {"type": "float", "low": 3.0e-5, "high": 5.0e-4, "log": True},
        "num_train_epochs": {"type": "int", "low": 2, "high": 5},
        "class_weighting": {"type": "categorical", "choices": ["none", "balanced", "inverse_sqrt"]},
        "warmup_steps": {"type": "float", "low": 0.0, "high": 0.2},
    },
    "pneumoniamnist": {
        "use_defaults": False,
        "learning_rate": {"type": "float", "low": 1.0e-5, "high": 1.0e-4, "log": True},
        "num_train_epochs": {"type": "int", "low": 2, "high": 4},
        "class_weighting": {"type": "categorical", "choices": ["none", "balanced"]},
        "weight_decay": {"type": "float", "low": 0.0, "high": 0.1},
    },
    "ncbi_disease": {
        "use_defaults": False,
        "learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-3, "log": True},
        "num_train_epochs": {"type": "int", "low": 2, "high": 5},
        "use_crf": {"type": "categorical", "choices": [False, True]},
        "warmup_steps": {"type": "float", "low": 0.0, "high": 0.2},
    },
}
DATASETS = {  # name: (recipe, shipped config, metrics to report; the validation column is the tuner's, SELECTED_BY)
    "medical_abstracts": ("text_classification", "recipes/text_classification/configs/medical_abstracts.yaml",
                          ("macro_f1", "accuracy")),
    "pneumoniamnist": ("image_classification", "recipes/image_classification/configs/pneumoniamnist_dinov2.yaml",
                       ("accuracy", "auroc", "macro_f1")),
    "ncbi_disease": ("ner", "recipes/ner/configs/ncbi_disease.yaml", ("f1",)),
}
SELECTED_BY = {"text_classification": "macro_f1", "image_classification": "macro_f1", "ner": "f1"}  # tune.py's default
GOALS = {"medical_abstracts": {"macro_f1": 0.66}, "pneumoniamnist": {"accuracy": 0.92, "auroc": 0.98},
         "ncbi_disease": {"f1": 0.85}}
RUN_ONLY = ("output_dir", "do_predict", "test_file", "test_dir")  # what each row sets itself


def run(command: list[str], log: Path) -> float:
    """Run one command with its output in ``log``; its wall time. Exits with the log's tail if it fails."""
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode:
        tail = log.read_text().splitlines()[-5:]
        sys.exit(f"error: {' '.join(command[:3])} ... failed ({done.returncode}); {log}:\n" + "\n".join(tail))
    return time.perf_counter() - start


def with_cis(results: dict, names, prefix: str = "test_") -> dict:
    """Each metric as [value, CI low, CI high] from a results dict (the recipes' ``<name>_ci_low`` / ``_ci_high``)."""
    return {name: [results.get(f"{prefix}{name}"), results.get(f"{prefix}{name}_ci_low"),
                   results.get(f"{prefix}{name}_ci_high")] for name in names}


def test_source(config: dict) -> tuple[str, str]:
    """The option and file that hold the test split: the config's test file, or a MedMNIST .npz train file, which
    holds the test arrays too."""
    return ("--test_file", config["test_file"]) if config.get("test_file") else ("--train_file", config["train_file"])


def examples_seen(results: dict) -> float:
    """Training examples x epochs (Trainer's samples/s x training time)."""
    return float(results.get("train_samples_per_second", 0)) * float(results.get("train_runtime", 0))


def derived_config(config: dict, folder: Path) -> Path:
    """The shipped config without the settings each row chooses (output folder, test split), for tuning and folds."""
    settings = {k: v for k, v in config.items() if k not in RUN_ONLY}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def defaults_row(recipe: str, config_path: str, metrics, folder: Path, extra: list[str]) -> dict:
    out = folder / "defaults"
    seconds = run([sys.executable, f"recipes/{recipe}/train.py", "--config", config_path, "--output_dir", str(out),
                   *extra], folder / "defaults.log")
    results = json.loads((out / "all_results.json").read_text())
    return {"row": "defaults", "metrics": with_cis(results, metrics), "seconds": seconds,
            "examples_seen": examples_seen(results), "validation": results.get(f"eval_{SELECTED_BY[recipe]}"),
            "what": f"`{config_path}`"}


def tuned_row(name: str, recipe: str, config: dict, base: Path, metrics, folder: Path, extra: list[str],
              args) -> dict:
    study = folder / "tune"
    space = folder / "space.yaml"
    space.write_text(yaml.safe_dump(SPACES[name], sort_keys=False))
    seconds = run([sys.executable, "recipes/tune.py", "--recipe", recipe, "--trials", str(args.trials),
                   "--search_space", str(space), "--pruning_startup_trials", "2", "--keep_trial_models",
                   "--output_dir", str(study), "--", "--config", str(base), *extra], folder / "tune.log")
    with open(study / "trials.csv", newline="") as handle:
        trials = list(csv.DictReader(handle))
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    best = max(complete, key=lambda t: float(t["value"]))
    best_run = study / "trials" / f"trial_{best['number']}" / "run"
    samples = json.loads((best_run / "all_results.json").read_text())["train_samples"]  # every trial's data
    epochs_run = 0  # every trial, pruned ones included: the epochs its log says it ran
    for trial in trials:
        epochs = study / "trials" / f"trial_{trial['number']}" / "epoch_metrics.jsonl"
        epochs_run += len(epochs.read_text().splitlines()) if epochs.is_file() else 0
    scored = folder / "tuned_test"
    seconds += run([sys.executable, f"recipes/{recipe}/train.py", "--model_name_or_path", str(best_run),
                    "--output_dir", str(scored), "--do_predict", *test_source(config), *extra],
                   folder / "tuned_test.log")
    results = json.loads((scored / "all_results.json").read_text())
    params = {k[len("params_"):]: v for k, v in best.items() if k.startswith("params_") and v != ""}
    states = {s: sum(t["state"] == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    return {"row": "tuned", "metrics": with_cis(results, metrics), "seconds": seconds,
            "examples_seen": float(samples * epochs_run), "validation": float(best["value"]),
            "what": f"best of {len(trials)} trials ({states['COMPLETE']} complete, {states['PRUNED']} pruned, "
            f"{states['FAIL']} failed): trial {best['number']}, "
            + ", ".join(f"{k} {_short(v)}" for k, v in params.items())}


def _short(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.2g}" if number < 0.01 else f"{number:.3g}"


def ensemble_row(recipe: str, config: dict, base: Path, metrics, folder: Path, extra: list[str], args) -> dict:
    cv = folder / "cv"
    seconds = run([sys.executable, "recipes/cross_validate.py", "--recipe", recipe, "--folds", str(args.folds),
                   "--keep_fold_models", "--", "--config", str(base), "--output_dir", str(cv), *extra],
                  folder / "cv.log")
    summary = json.loads((cv / "cv_results.json").read_text())
    seen = sum(examples_seen(json.loads((cv / f"fold_{i}" / "all_results.json").read_text()))
               for i in range(args.folds))
    predicted = folder / "ensemble_test"  # predict.py reads a MedMNIST .npz's test arrays
    seconds += run([sys.executable, f"recipes/{recipe}/predict.py", "--model_dir", str(cv),
                    "--input", test_source(config)[1],
                    "--output_dir", str(predicted)], folder / "ensemble_test.log")
    if recipe == "ner":
        found = score_tags(config["test_file"], predicted / Path(config["test_file"]).name, metrics, args.seed)
        averaged = "tag scores at every position (CRF: emissions and transitions, Viterbi)"
    else:
        found = score_predictions(predicted / "predictions.csv", metrics, args.seed)
        averaged = "calibrated probabilities"
    pooled = summary.get("pooled", {}).get(SELECTED_BY[recipe])
    return {"row": f"{args.folds}-fold ensemble", "metrics": found, "seconds": seconds, "examples_seen": seen,
            "validation": pooled, "what": f"mean of {args.folds} fold models' {averaged} (validation column: pooled "
            f"out-of-fold {SELECTED_BY[recipe]}, one member per row)"}


def score_predictions(path: Path, metrics, seed: int) -> dict:
    """Single-label predictions.csv (label, prob_<class>) scored with the recipes' own metrics and bootstrap."""
    from shared.evaluation.metrics import classifier_metrics

    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    classes = [c[len("prob_"):] for c in rows[0] if c.startswith("prob_")]
    probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows])
    gold = np.array([classes.index(r["label"]) for r in rows])
    return with_cis(classifier_metrics(gold, probs, False, resamples=1000, seed=seed), metrics, prefix="")


def score_tags(gold_file: str, predicted_file: Path, metrics, seed: int) -> dict:
    """A CoNLL test file and predict.py's copy of it with the predicted tags, scored as train.py scores NER (strict
    entity metrics, bootstrap over documents)."""
    from shared.evaluation.metrics import add_ci
    from shared.ner.data import load_split
    from shared.ner.metrics import entity_metrics, entity_metrics_ci

    gold, predicted = load_split(str(ROOT / gold_file), "auto"), load_split(str(predicted_file), "auto")
    scores = add_ci(entity_metrics(gold.tags, predicted.tags),
                    entity_metrics_ci(gold.tags, predicted.tags, groups=gold.groups, resamples=1000, seed=seed))
    return with_cis(scores, metrics, prefix="")


def markdown(report: dict) -> str:
    lines = [f"# Defaults vs tuned vs fold ensemble\n\n{report['setting']}\n"]
    for name, rows in report["datasets"].items():
        metrics = DATASETS[name][2]
        goals = GOALS[name]
        lines += [f"\n## {name}\n", "| row | " + " | ".join(f"test {m} (95% CI)" for m in metrics)
                  + f" | validation {SELECTED_BY[DATASETS[name][0]]} | wall time | examples x epochs | what |",
                  "|---" * (len(metrics) + 5) + "|"]
        for row in rows:
            cells = []
            for m in metrics:
                value = row["metrics"].get(m)
                if not value or value[0] is None:
                    cells.append("–")
                    continue
                gap = f", goal {goals[m]} {'met' if value[0] >= goals[m] else f'missed by {goals[m] - value[0]:.3f}'}" \
                    if m in goals else ""
                cells.append(f"{value[0]:.3f} ({value[1]:.3f}–{value[2]:.3f}){gap}")
            validation = "–" if row["validation"] is None else f"{row['validation']:.3f}"
            wall = "–" if row["seconds"] is None else f"{row['seconds']:.0f} s"
            seen = "–" if row["examples_seen"] is None else f"{row['examples_seen']:,.0f}"
            lines.append(f"| {row['row']} | " + " | ".join(cells)
                         + f" | {validation} | {wall} | {seen} | {row['what']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--rows", nargs="+", choices=["defaults", "tuned", "ensemble"],
                        default=["defaults", "tuned", "ensemble"])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42, help="Seed of the bootstrap over the ensemble's predictions.")
    parser.add_argument("--max_train_samples", type=int, default=None, help="Cut the training data (quick checks).")
    parser.add_argument("--work_dir", default="/tmp/bench_tuning")
    parser.add_argument("--results_name", default="tuning")
    args = parser.parse_args()

    extra = ["--max_train_samples", str(args.max_train_samples)] if args.max_train_samples else []
    report = {"setting": (f"{platform.machine()}, {os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d')}; "
                          f"{args.trials} trials, {args.folds} folds"
                          + (f", training data cut to {args.max_train_samples}" if args.max_train_samples else "")),
              "datasets": {}}
    RESULTS.mkdir(exist_ok=True)
    for name in args.datasets:
        recipe, config_path, metrics = DATASETS[name]
        config = yaml.safe_load((ROOT / config_path).read_text())
        folder = Path(args.work_dir) / name
        folder.mkdir(parents=True, exist_ok=False)
        rows = report["datasets"][name] = []
        base = derived_config(config, folder)
        for which in args.rows:
            print(f"== {name}: {which}", file=sys.stderr, flush=True)
            if which == "defaults":
                rows.append(defaults_row(recipe, config_path, metrics, folder, extra))
            elif which == "tuned":
                rows.append(tuned_row(name, recipe, config, base, metrics, folder, extra, args))
            else:
                rows.append(ensemble_row(recipe, config, base, metrics, folder, extra, args))
            (RESULTS / f"{args.results_name}.json").write_text(json.dumps(report, indent=2))
            (RESULTS / f"{args.results_name}.md").write_text(markdown(report))
            print(markdown(report), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
