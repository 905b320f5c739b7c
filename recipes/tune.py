#!/usr/bin/env python
"""Hyperparameter search for any recipe with Optuna, scored on validation data only; nested cross-validation.

    python recipes/tune.py --recipe text_classification --trials 20 --output_dir runs/tune -- \
        --config recipes/text_classification/configs/demo.yaml --model_name_or_path <model folder>

Everything after ``--`` goes to the recipe (its ``--output_dir``, test-file options and ``--do_predict`` are left
out of every trial: the test split is never read). Each trial runs the recipe in its own process with one set of
parameters drawn by Optuna's TPE sampler (seeded), in ``<output_dir>/trials/trial_<n>/``, and is scored on the
validation split (``eval_<metric>``; the recipe carves one out of the training data when there is no validation
file), or with ``--folds K`` on K folds of the training data (mean ``test_<metric>`` of the held-out folds,
``--group_column`` keeping each patient in one fold). The recipe writes each epoch's validation score as it trains;
Optuna's median pruner stops a trial (its process is killed) whose score falls below the median of earlier trials
at the same epoch. A trial that crashes is recorded as failed and the study goes on.

The study lives in ``<output_dir>/study.db`` (SQLite): rerunning the same command resumes it, running only the
trials still missing from ``--trials``. ``--storage`` takes any database URL Optuna accepts (PostgreSQL, MySQL), so
that the same command on several machines works on one study. ``--n_jobs`` runs trials in parallel processes (with
several GPUs, each on its own).

Outputs in ``<output_dir>``: ``trials.csv`` (every trial: state, score, parameters, duration, error), ``best_config.yaml``
(the user's recipe settings with the best parameters: ``python recipes/<task>/train.py --config best_config.yaml
--output_dir ...``), ``optimization_history.png``, ``param_importances.csv`` (fANOVA; empty with under 2
completed trials) and each trial's folder (logs, metrics; model weights deleted unless ``--keep_trial_models``).

``--outer_folds K``: nested cross-validation, the honest estimate of "tune, then train". For each outer fold the
study tunes inside the outer training part only (trials are scored on a validation split carved from it), the best
parameters are trained on the whole outer training part and that model is scored once on the outer fold. Only these
outer scores are reported, per fold, as mean ± sd and pooled over every row with bootstrap 95% CIs, in
``nested_cv_results.json`` / ``.md``. The inner best validation score is not reported there: it is the maximum over
many trials of a noisy score, so it is biased upwards (see docs/tuning.md).
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import sys
import tempfile
import warnings

try:
    import shared.core.args  # noqa: F401  (this project's package, and through it torch and transformers)
except ImportError as error:
    print(f"error: this project is not installed ({error}): install it as its README.md says, torch first, then "
          "`pip install -e .`", file=sys.stderr)
    raise SystemExit(2) from None

import optuna
import yaml

from shared.core.args import main_guard
from shared.core.errors import DataError
from shared.core.files import atomic_write_json, atomic_write_text
from shared.core.runner import recipe_file
from shared.tasks import TASKS
from shared.trust import audit, tuning
from shared.trust.crossval import RECIPES, fold_args, markdown_table, recipe_option, remove_weights, summarize
from shared.trust.crossval import split_at_double_dash

SETTINGS_FILE = "tune_settings.json"  # what a resumed run must agree with


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit status 2 (main_guard), instead of usage + message
        raise DataError(message)


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = ArgumentParser(description="Hyperparameter search for a recipe. Usage: tune.py --recipe R --trials N "
                                        "--output_dir D -- <recipe args>")
    parser.add_argument("--recipe", required=True,
                        help=f"Which recipe to tune: {', '.join(RECIPES)}, or the folder of a recipe.")
    parser.add_argument("--trials", type=int, required=True,
                        help="Trials the study should hold (completed, pruned or failed); a rerun adds only the "
                             "missing ones.")
    parser.add_argument("--output_dir", required=True, help="The study's folder (its database, trials, outputs).")
    parser.add_argument("--folds", type=int, default=None,
                        help="Score each trial on K folds of the training data (mean of the held-out folds) instead "
                             "of the validation split.")
    parser.add_argument("--group_column", default=None,
                        help="Keep every group (patient, note) in one fold or split; passed to the recipe.")
    parser.add_argument("--outer_folds", type=int, default=None,
                        help="Nested cross-validation: tune inside each of K outer training parts, score each tuned "
                             "model once on its outer fold, report only those scores.")
    parser.add_argument("--search_space", default=None,
                        help="YAML file overriding the recipe's default search space, per parameter "
                             "(name: {type: float|int|categorical, ...}; name: null leaves one out; "
                             "use_defaults: false starts from none). See docs/tuning.md.")
    parser.add_argument("--metric", default=None,
                        help="The score to maximise, without its eval_/test_ prefix (default: the task's headline "
                             "metric, e.g. macro_f1; strict entity f1 for NER).")
    parser.add_argument("--storage", default=None,
                        help="An Optuna storage URL (default: sqlite in the output folder); a shared database lets "
                             "several machines work on one study.")
    parser.add_argument("--study_name", default=None, help="The study's name in the storage (default: the recipe's).")
    parser.add_argument("--n_jobs", type=int, default=1, help="Trials run at once, each in its own process.")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the TPE sampler.")
    parser.add_argument("--pruning_startup_trials", type=int, default=5,
                        help="Completed trials before the median pruner may stop one (Optuna's n_startup_trials).")
    parser.add_argument("--keep_trial_models", action="store_true",
                        help="Keep each trial's model weights (deleted by default; logs and metrics stay).")
    own, recipe_args = split_at_double_dash(argv)
    args = parser.parse_args(own)
    if args.trials < 1:
        raise DataError(f"--trials must be at least 1, got {args.trials}")
    if args.n_jobs < 1:
        raise DataError(f"--n_jobs must be at least 1, got {args.n_jobs}")
    if args.pruning_startup_trials < 0:
        raise DataError(f"--pruning_startup_trials must be at least 0, got {args.pruning_startup_trials}")
    for name in ("folds", "outer_folds"):
        value = getattr(args, name)
        if value is not None and value < 2:
            raise DataError(f"--{name} must be at least 2, got {value}")
    if args.folds and args.outer_folds:
        raise DataError("--folds and --outer_folds cannot be combined: inside an outer fold, trials are scored on a "
                        "validation split of the outer training part")
    if not recipe_args:
        raise DataError("give the recipe's arguments after `--` (e.g. -- --config my_run.yaml)")
    return args, recipe_args


def task_of(recipe: str) -> str | None:
    name = os.path.basename(os.path.normpath(recipe))
    return name if name in TASKS else None


def trial_commands(args, script, recipe_args: list[str], metric: str, params: dict, trial_dir: str,
                   outer: tuple[int, int] | None = None) -> list[tuple[list[str], str, str]]:
    """(command, run folder, score key) per run of a trial: one, or one per fold with --folds. ``outer``: (outer
    fold, outer folds) of nested cross-validation, cut out of the training data and never scored by a trial."""
    base = [*recipe_args, *tuning.as_flags(params)]
    if args.folds:
        return [([sys.executable, str(script), *fold_args(base + ["--do_eval"], trial_dir, args.folds, fold,
                                                          args.group_column)],
                 os.path.join(trial_dir, f"fold_{fold}"), f"test_{metric}") for fold in range(args.folds)]
    command = [*base, "--output_dir", os.path.join(trial_dir, "run"), "--do_train", "--do_eval", "--do_predict", "false"]
    if outer:
        command += ["--num_folds", str(outer[1]), "--fold", str(outer[0]), "--drop_fold"]
    if args.group_column:
        command += ["--group_column", args.group_column]
    return [([sys.executable, str(script), *command], os.path.join(trial_dir, "run"), f"eval_{metric}")]


def check_trials(args, script, recipe_args: list[str], metric: str, space: dict, folder: str) -> None:
    """Every trial's command line, at every bound and choice of the space, as the recipe's parser sees it: a
    mistake is the recipe's own line, before any folder is made or any trial runs."""
    outer = (0, args.outer_folds) if args.outer_folds else None  # the same in every outer fold but its number
    for params in tuning.extremes(space):
        command = trial_commands(args, script, recipe_args, metric, params, os.path.join(folder, "check"), outer)[0][0]
        try:
            tuning.parse_recipe_arguments(args.recipe, command[2:])
        except DataError as error:
            raise DataError(f"recipe arguments with {' '.join(tuning.as_flags(params)) or 'no parameters'}: "
                            f"{error}") from None


class Tuner:
    """One study: its trials' command lines, the objective, the outputs."""

    def __init__(self, args, script, recipe_args: list[str], space: dict, metric: str, folder: str, study_name: str,
                 storage: str, outer: tuple[int, int] | None = None):
        self.args, self.script, self.recipe_args, self.space = args, script, recipe_args, space
        self.metric, self.folder, self.outer = metric, folder, outer
        self.slots: queue.Queue = queue.Queue()
        gpus = _gpu_count()
        for slot in range(args.n_jobs):
            self.slots.put(None if gpus < 2 else str(slot % gpus))
        self.study = optuna.create_study(
            storage=open_storage(storage), study_name=study_name, direction="maximize", load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=args.seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=args.pruning_startup_trials))

    def trial_commands(self, params: dict, trial_dir: str) -> list[tuple[list[str], str, str]]:
        return trial_commands(self.args, self.script, self.recipe_args, self.metric, params, trial_dir, self.outer)

    def objective(self, trial: optuna.Trial) -> float:
        params = tuning.suggest(trial, self.space)
        trial_dir = os.path.join(self.folder, "trials", f"trial_{trial.number}")
        os.makedirs(trial_dir, exist_ok=True)
        slot = self.slots.get()
        scores = []
        try:
            for step, (command, run_dir, key) in enumerate(self.trial_commands(params, trial_dir)):
                epochs = []

                def on_score(value, epochs=epochs):  # an epoch's validation score (single split only)
                    epochs.append(value)
                    trial.report(value, step=len(epochs))
                    return trial.should_prune()

                log = run_dir + ".log"
                status, stopped = tuning.run_watched(
                    command, log, None if self.args.folds else os.path.join(trial_dir, "epoch_metrics.jsonl"),
                    on_score, env=None if slot is None else {"CUDA_VISIBLE_DEVICES": slot})
                if stopped:
                    trial.set_user_attr("pruned_at_epoch", len(epochs))
                    raise optuna.TrialPruned()
                if status:
                    trial.set_user_attr("exit_status", status)
                    trial.set_user_attr("error", tuning.last_error_line(log))
                    raise tuning.TrialFailed(f"trial {trial.number}: exit status {status}: {tuning.last_error_line(log)}")
                scores.append(tuning.score_of(tuning.read_results(run_dir), key, run_dir))
                if self.args.folds:  # a running mean per fold: the pruner compares trials fold by fold
                    trial.report(sum(scores) / len(scores), step=step + 1)
                    if trial.should_prune():
                        raise optuna.TrialPruned()
        except tuning.TrialFailed as error:
            trial.set_user_attr("exit_status", trial.user_attrs.get("exit_status", 1))
            trial.set_user_attr("error", trial.user_attrs.get("error", str(error)))
            print(f"trial {trial.number} failed: {error}", file=sys.stderr, flush=True)
            raise
        finally:
            self.slots.put(slot)
            tuning.clean_trial(trial_dir, self.args.keep_trial_models)
        value = sum(scores) / len(scores)
        print(f"trial {trial.number}: {self.metric} {value:.4f} with {params}", file=sys.stderr, flush=True)
        return value

    def run(self) -> None:
        missing = self.args.trials - tuning.counted_trials(self.study)
        if missing <= 0:
            print(f"the study holds {self.args.trials} trials already", file=sys.stderr)
            return

        def enough(study, _trial):  # other machines add trials to the same study
            if tuning.counted_trials(study) >= self.args.trials:
                study.stop()

        self.study.optimize(self.objective, n_trials=missing, n_jobs=self.args.n_jobs, callbacks=[enough],
                            catch=(tuning.TrialFailed,))

    def best(self) -> optuna.trial.FrozenTrial:
        try:
            return self.study.best_trial
        except ValueError:
            raise DataError(f"no trial of study '{self.study.study_name}' completed: see trials.csv and the trials' "
                            f"logs in {os.path.join(self.folder, 'trials')}") from None

    def write_outputs(self, settings: dict) -> optuna.trial.FrozenTrial:
        tuning.write_trials_csv(self.study, os.path.join(self.folder, "trials.csv"))
        tuning.write_history_plot(self.study, os.path.join(self.folder, "optimization_history.png"), self.metric)
        reason = tuning.write_importances(self.study, os.path.join(self.folder, "param_importances.csv"),
                                          self.args.seed)
        if reason:
            print(f"note: {reason}", file=sys.stderr)
        best = self.best()
        config = tuning.best_config(settings, best.params)
        header = (f"# The best of {len(self.study.trials)} trials of study '{self.study.study_name}' (trial {best.number}"
                  f"): validation {self.metric} {best.value:.4f}, the maximum over the trials, so optimistic: score "
                  "it on data the search never saw.\n# Run: python recipes/<task>/train.py --config best_config.yaml "
                  "--output_dir <folder>\n")
        atomic_write_text(os.path.join(self.folder, "best_config.yaml"),
                          header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        return best


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's database storage at ``url``, with a heartbeat: a trial whose machine died is marked failed after
    three minutes. A URL that does not open is one line."""
    from sqlalchemy.exc import SQLAlchemyError  # Optuna's database layer

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is one line of ours, not a traceback
    try:
        with warnings.catch_warnings():  # the heartbeat is an experimental feature of Optuna's
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)
    except (SQLAlchemyError, ValueError, ImportError) as error:  # a bad URL, a missing driver, a refused connection
        raise DataError(f"--storage {url}: {str(error).splitlines()[0] or error.__class__.__name__}") from None


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_output_dir(folder: str, settings: dict) -> None:
    """A new or empty folder, or one this same study wrote (resumed); anything else is refused before any trial."""
    saved_path = os.path.join(folder, SETTINGS_FILE)
    if os.path.isdir(folder) and os.listdir(folder):
        if not os.path.isfile(saved_path):
            raise DataError("--output_dir is not empty and holds no study of tune.py: give a new folder", path=folder)
        import json

        with open(saved_path, encoding="utf-8") as f:
            saved = json.load(f)
        differs = tuning.same_settings(saved, settings)
        if differs:
            raise DataError(f"--output_dir holds a study with another {differs}: rerun its own command to resume it, "
                            "or give a new folder", path=folder)
    os.makedirs(folder, exist_ok=True)
    atomic_write_json(saved_path, settings)


@main_guard
def main(argv: list[str] | None = None) -> dict:
    args, given_recipe_args = parse(list(sys.argv[1:] if argv is None else argv))
    try:
        script = recipe_file(args.recipe)
    except FileNotFoundError:
        raise DataError(f"--recipe {args.recipe}: no such recipe (a name in {', '.join(RECIPES)} or a recipe "
                        "folder with a train.py)") from None
    task = task_of(args.recipe)
    metric = args.metric or (TASKS[task].metric if task else None)
    if metric is None:
        raise DataError(f"--recipe {args.recipe} is not a task of shared/tasks.py: name the score with --metric")
    space = tuning.load_search_space(task, args.search_space)
    recipe_args, dropped = tuning.without_test_options(given_recipe_args)
    if dropped:
        print(f"note: {', '.join(dropped)} left out of every trial (tuning never reads the test split)", file=sys.stderr)
    folder = os.path.abspath(args.output_dir)
    storage = args.storage or f"sqlite:///{os.path.join(folder, 'study.db')}"
    study_name = args.study_name or (task or os.path.basename(os.path.normpath(args.recipe)))
    with tempfile.TemporaryDirectory() as scratch:  # every check before the output folder is made
        checked_args, removed = tuning.without_test_config(recipe_args, scratch)
        if removed:
            print(f"note: {', '.join(removed)} of the --config file left out of every trial (tuning never reads the "
                  "test split)", file=sys.stderr)
        types, _ = tuning.parse_recipe_arguments(args.recipe, checked_args + ["--do_train"])
        tuning.check_space_names(space, types, args.search_space)
        check_trials(args, script, checked_args, metric, space, folder)
    settings = tuning.user_settings(types, given_recipe_args)
    if args.storage:
        open_storage(args.storage)  # a URL that does not open, before the output folder is made
    check_output_dir(folder, {
        "recipe": args.recipe, "study_name": study_name, "storage": storage, "metric": metric, "folds": args.folds,
        "outer_folds": args.outer_folds, "group_column": args.group_column, "recipe_args": given_recipe_args,
        "search_space": space, "seed": args.seed})
    recipe_args, _ = tuning.without_test_config(recipe_args, folder)

    def stop(signum, frame):  # a killed tuner kills its trials; the study resumes on the next run
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        if args.outer_folds:
            return nested(args, script, recipe_args, space, metric, folder, study_name, storage, settings,
                          given_recipe_args)
        tuner = Tuner(args, script, recipe_args, space, metric, folder, study_name, storage)
        tuner.run()
        best = tuner.write_outputs(settings)
        print(f"best: trial {best.number}, validation {metric} {best.value:.4f}; {folder}/best_config.yaml")
        return {"best_value": best.value, "best_params": best.params, "trials": len(tuner.study.trials)}
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the running trials are killed (below), the study kept
        print("interrupted: rerun the same command to resume the study", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        tuning.stop_live_trials()
        signal.signal(signal.SIGTERM, previous)


def nested(args, script, recipe_args, space, metric, folder, study_name, storage, settings, given_recipe_args) -> dict:
    """Tune inside each outer training part, train its best parameters there, score once on the outer fold."""
    k = args.outer_folds
    tuners = [Tuner(args, script, recipe_args, space, metric, os.path.join(folder, f"fold_{outer}_tuning"),
                    f"{study_name}-outer{outer}", storage, outer=(outer, k)) for outer in range(k)]
    fold_results, chosen = [], []
    for outer, tuner in enumerate(tuners):
        print(f"== outer fold {outer} of {k}: tuning on the other {k - 1} folds", file=sys.stderr, flush=True)
        os.makedirs(tuner.folder, exist_ok=True)
        tuner.run()
        best = tuner.write_outputs(settings)
        fold_dir = os.path.join(folder, f"fold_{outer}")
        command = [sys.executable, str(script), *fold_args(
            [*recipe_args, *tuning.as_flags(best.params), "--do_eval"], folder, k, outer, args.group_column)]
        if not os.path.isfile(os.path.join(fold_dir, "all_results.json")):  # a resumed run keeps finished folds
            log = os.path.join(folder, f"fold_{outer}.log")
            status, _ = tuning.run_watched(command, log, None)
            if status:
                raise DataError(f"outer fold {outer}: the recipe stopped with exit status {status}: "
                                f"{tuning.last_error_line(log)}")
        fold_results.append(tuning.read_results(fold_dir))
        chosen.append({"fold": outer, "params": best.params})
        if not args.keep_trial_models:
            remove_weights(fold_dir)
    summary = summarize(fold_results)
    fold_dirs = [os.path.join(folder, f"fold_{outer}") for outer in range(k)]
    resamples = int(recipe_option(given_recipe_args, "bootstrap_resamples") or 1000)
    seed = int(recipe_option(given_recipe_args, "seed") or 42)
    if os.path.isfile(os.path.join(fold_dirs[0], audit.TAG_PROBABILITIES)):  # NER
        pooled = audit.read_fold_tag_probabilities(fold_dirs)
        audit.write_oof_tags(folder, pooled)
        summary["pooled"] = audit.pooled_entity_metrics(pooled, resamples, seed)
    else:
        pooled = audit.read_fold_predictions(fold_dirs, recipe_option(given_recipe_args, "label_separator"))
        audit.write_oof_predictions(folder, pooled)
        summary["pooled"] = audit.pooled_classifier_metrics(pooled, resamples, seed)
    summary.update(recipe=args.recipe, group_column=args.group_column, trials_per_fold=args.trials,
                   chosen_parameters=chosen)
    table = markdown_table(summary)
    atomic_write_json(os.path.join(folder, "nested_cv_results.json"), summary)
    atomic_write_text(
        os.path.join(folder, "nested_cv_results.md"),
        f"# Nested cross-validation: {args.recipe}, {k} outer folds, {args.trials} trials each\n\n{table}\n"
        "Each outer fold's model was tuned (Optuna, scored on a validation split of the other folds) and trained "
        "without ever seeing that fold, then scored on it once: the honest estimate of \"tune, then train\". Mean ± "
        "sample sd over the outer folds; pooled: every row's outer-fold prediction scored as one test set, bootstrap "
        "95% CI. The inner studies' best validation scores are not reported here: a maximum over trials of a noisy "
        "score, they are optimistic (docs/tuning.md). Each fold's chosen parameters: `nested_cv_results.json`, its "
        "study: `fold_<i>_tuning/`.\n")
    print(table)
    return summary


if __name__ == "__main__":
    main()
