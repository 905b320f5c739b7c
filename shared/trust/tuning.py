"""Hyperparameter search around any recipe: the pieces ``recipes/tune.py`` is made of.

A trial is one run of the recipe, in a process of its own, on the training data only: trained on the training split
and scored on the validation split (the recipe's own, or the one it carves out with ``--do_eval``), or on K folds of
the training data (``--folds``, the cross-validation runner's fold command lines, ``shared/trust/crossval.py``).
The test split is never read: test-file options are left out of a trial's command line and ``--do_predict false``
is added, so a test file named in a ``--config`` is not read either.

While a trial trains, the recipe's best-epoch callback appends each epoch's validation score to the file named by
``EPOCH_METRICS_FILE`` (``shared/training/adaptive.py``); the runner reports each score to Optuna and kills the
process when the pruner says the trial is behind the median of earlier trials at that epoch.

Search spaces: :data:`DEFAULT_SPACES` per task, only options the recipes have; a YAML file overrides them per
parameter (``name: null`` removes one, ``use_defaults: false`` starts from none), in the format of
:data:`SPACE_EXAMPLE`. Every bound and choice is checked by the recipe's own argument parser before any trial.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from shared.core.args import ArgumentParser, read_config
from shared.core.errors import DataError
from shared.core.runner import load_recipe
from shared.training.adaptive import EPOCH_METRICS_FILE
from shared.trust.crossval import _option, recipe_option, remove_weights

SPACE_EXAMPLE = """\
learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
num_train_epochs: {type: int, low: 2, high: 6}
long_text: {type: categorical, choices: [chunk, truncate]}
dropout: null            # not searched: the recipe's default
"""

_COMMON = {
    "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
    "num_train_epochs": {"type": "int", "low": 2, "high": 8},
    "per_device_train_batch_size": {"type": "categorical", "choices": [8, 16, 32]},
    "warmup_steps": {"type": "float", "low": 0.0, "high": 0.2},  # below 1: a fraction of the training steps
    "weight_decay": {"type": "float", "low": 0.0, "high": 0.1},
    "dropout": {"type": "float", "low": 0.0, "high": 0.3},
    "freeze_layers": {"type": "categorical", "choices": [0, 0.25, 0.5]},  # a fraction of the encoder's layers
}
_IMBALANCE = {
    "class_weighting": {"type": "categorical", "choices": ["none", "balanced", "inverse_sqrt"]},
    "focal_gamma": {"type": "categorical", "choices": [0.0, 1.0, 2.0]},
}
DEFAULT_SPACES: dict[str, dict[str, dict]] = {
    "text_classification": {**_COMMON, **_IMBALANCE,
                            "long_text": {"type": "categorical", "choices": ["chunk", "truncate"]}},
    # the CRF trains on its likelihood, which takes no class weights or focal loss: NER searches neither
    "ner": {**_COMMON, "use_crf": {"type": "categorical", "choices": [False, True]}},
    "image_classification": {**_COMMON, **_IMBALANCE,
                             "image_size": {"type": "categorical", "choices": [None, 112, 224]},  # None: the model's
                             "crop_scale_min": {"type": "float", "low": 0.5, "high": 1.0},
                             "rotation": {"type": "float", "low": 0.0, "high": 20.0},
                             "brightness": {"type": "float", "low": 0.0, "high": 0.3},
                             "contrast": {"type": "float", "low": 0.0, "high": 0.3}},
    "assertion_status": {**_COMMON, **_IMBALANCE},
    "relation_extraction": {**_COMMON, **_IMBALANCE},
}
SPEC_KEYS = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
             "categorical": {"type", "choices"}}
TEST_OPTIONS = ("--test_file", "--test_dir", "--test_concepts_dir")  # never on a trial's command line
SET_BY_TUNER = ("--num_folds", "--fold", "--drop_fold")
NOT_CONFIG = ("output_dir", "num_folds", "fold", "drop_fold", "config")  # left out of best_config.yaml


# ------------------------------------------------------------------------------------------------ search spaces
def load_search_space(task: str | None, path: str | None) -> dict[str, dict]:
    """The task's default space updated by the YAML file at ``path``; a malformed entry is one DataError line."""
    space = {name: dict(spec) for name, spec in DEFAULT_SPACES.get(task, {}).items()}
    if path is None:
        if not space:
            raise DataError("this recipe has no default search space: give one with --search_space file.yaml")
        return space
    config, lines = read_config(path)
    if config.pop("use_defaults", True) is False:
        space = {}
    for name, spec in config.items():
        def fail(problem, name=name):
            return DataError(f"{name}: {problem}", path=path, line=lines.get(name))

        if spec is None:
            space.pop(name, None)
            continue
        if not isinstance(spec, dict) or spec.get("type") not in SPEC_KEYS:
            raise fail("expected a mapping with type float, int or categorical (e.g. {type: float, low: 1.0e-5, "
                       "high: 1.0e-3, log: true}), or null to leave it out")
        unknown = sorted(set(spec) - SPEC_KEYS[spec["type"]])
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(SPEC_KEYS[spec["type"]]), n=1)
            raise fail(f"unknown key '{unknown[0]}' for type {spec['type']}"
                       + (f" (did you mean '{close[0]}'?)" if close else ""))
        space[name] = _checked_spec(spec, fail)
    if not space:
        raise DataError("the search space is empty: nothing to tune", path=path)
    return space


def _checked_spec(spec: dict, fail: Callable[[str], DataError]) -> dict:
    kind = spec["type"]
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices or \
                not all(c is None or isinstance(c, (str, int, float, bool)) for c in choices):
            raise fail("categorical needs choices: a non-empty list of plain values")
        return {"type": kind, "choices": choices}
    number = float if kind == "float" else int
    checked = {"type": kind, "log": spec.get("log", False)}
    if not isinstance(checked["log"], bool):
        raise fail(f"log must be true or false, got {checked['log']!r}")
    for key in ("low", "high", "step"):
        value = spec.get(key)
        if value is None:
            if key == "step":
                continue
            raise fail(f"{kind} needs {key}")
        try:  # PyYAML reads 1e-5 (no dot) as a string
            converted = number(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            converted = None
        if converted is None or (number is int and float(value) != converted):
            raise fail(f"{key} must be {'a whole number' if kind == 'int' else 'a number'}, got {value!r}")
        checked[key] = converted
    if not checked["low"] < checked["high"]:
        raise fail(f"low ({checked['low']}) must be below high ({checked['high']})")
    if checked["log"] and (checked["low"] <= 0 or "step" in checked):
        raise fail("log needs low > 0 and no step")
    return checked


def check_space_names(space: dict[str, dict], types: tuple, path: str | None) -> None:
    """Every parameter is an option of the recipe, spelt out in full (argparse would take a prefix of one)."""
    options = sorted({f.name for t in types for f in dataclasses.fields(t)})
    for name in space:
        if name not in options:
            close = difflib.get_close_matches(name, options, n=1)
            raise DataError(f"search space: '{name}' is not an option of the recipe"
                            + (f" (did you mean '{close[0]}'?)" if close else ""), path=path)


def suggest(trial: optuna.Trial, space: dict[str, dict]) -> dict[str, Any]:
    params = {}
    for name, spec in space.items():
        if spec["type"] == "categorical":
            params[name] = trial.suggest_categorical(name, spec["choices"])
        elif spec["type"] == "float":
            params[name] = trial.suggest_float(name, spec["low"], spec["high"], log=spec["log"],
                                               step=spec.get("step"))
        else:
            params[name] = trial.suggest_int(name, spec["low"], spec["high"], log=spec["log"], step=spec.get("step", 1))
    return params


def as_flags(params: dict[str, Any]) -> list[str]:
    """Parameters as recipe flags; a None choice leaves the option at the recipe's default."""
    flags = []
    for name, value in params.items():
        if value is not None:
            flags += [f"--{name}", str(value).lower() if isinstance(value, bool) else str(value)]
    return flags


def extremes(space: dict[str, dict]) -> list[dict[str, Any]]:
    """One parameter set per bound and choice, the others at their first: what the recipe's parser is shown."""
    first = {name: spec["choices"][0] if spec["type"] == "categorical" else spec["low"] for name, spec in space.items()}
    sets = [first]
    for name, spec in space.items():
        for value in (spec["choices"][1:] if spec["type"] == "categorical" else [spec["high"]]):
            sets.append({**first, name: value})
    return sets


# ------------------------------------------------------------------------------------------------ recipe arguments
class _Parsed(BaseException):  # not an Exception: nothing in a recipe's main catches it
    pass


def parse_recipe_arguments(recipe: str, argv: Sequence[str]) -> tuple[tuple, tuple]:
    """The recipe's own parse of ``argv`` (its dataclass types and values), without running the recipe: its
    ``main`` is stopped right after step 1. A user mistake is the recipe's own one-line DataError."""
    module = load_recipe(recipe)
    real, seen = module.parse_args, {}

    def capture(*types, **kwargs):
        seen["types"], seen["values"] = types, real(*types, **kwargs)
        raise _Parsed

    module.parse_args = capture
    try:
        getattr(module.main, "__wrapped__", module.main)([str(a) for a in argv])
    except _Parsed:
        pass
    finally:
        module.parse_args = real
    if "values" not in seen:
        raise DataError(f"--recipe {recipe}: its main() did not parse its arguments with parse_args")
    return seen["types"], seen["values"]


def without_test_options(recipe_args: Sequence[str]) -> tuple[list[str], list[str]]:
    """The recipe's arguments less ``--output_dir``, the test-file options and ``--do_predict`` (with its value);
    and the test options that were there."""
    args, dropped = list(recipe_args), []
    for name in ("--output_dir", *TEST_OPTIONS, "--do_predict"):
        while (found := _option(args, name)) is not None:
            i, value = found
            takes_value = "=" not in args[i] and value is not None and (
                name != "--do_predict" or value.lower() in ("true", "false", "yes", "no", "1", "0"))
            del args[i: i + (2 if takes_value else 1)]
            if name != "--output_dir" and name not in dropped:
                dropped.append(name)
    for name in SET_BY_TUNER:
        if _option(args, name):
            raise DataError(f"do not pass {name} to the recipe under tuning (--folds / --outer_folds set it)")
    return args, dropped


TEST_KEYS = ("test_file", "test_dir", "test_concepts_dir", "do_predict", "output_dir")


def without_test_config(recipe_args: Sequence[str], folder: str) -> tuple[list[str], list[str]]:
    """The recipe's arguments with their ``--config`` file (if any) rewritten into ``folder/trial_config.yaml``
    without its test-file keys, ``do_predict`` and ``output_dir``: a trial never sees the test file's name. The keys
    removed."""
    found = _option(recipe_args, "--config")
    if not found or not found[1]:
        return list(recipe_args), []
    import yaml

    config = read_config(found[1])[0]
    removed = [key for key in TEST_KEYS if key in config]
    if not removed:
        return list(recipe_args), []
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "trial_config.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump({k: v for k, v in config.items() if k not in TEST_KEYS}, f, sort_keys=False)
    args = list(recipe_args)
    i = found[0]
    args[i: i + (1 if "=" in args[i] else 2)] = ["--config", path]
    return args, removed


def user_settings(types: tuple, argv: Sequence[str]) -> dict[str, Any]:
    """What the user set: the ``--config`` file's keys, then the command line's options as the recipe's parser
    converts them (only those typed: defaults are the recipe's business)."""
    settings: dict[str, Any] = {}
    config = recipe_option([a for a in argv], "config") if _option(argv, "--config") else None
    rest = list(argv)
    if config:
        settings.update(read_config(config)[0])
        i = _option(rest, "--config")[0]
        del rest[i: i + (1 if "=" in rest[i] else 2)]
    parser = ArgumentParser(types)
    parser._defaults = {}
    for action in parser._actions:  # every default suppressed: the namespace holds only what was typed
        action.default, action.required = argparse.SUPPRESS, False
    typed, _ = parser.parse_known_args(rest)
    settings.update({k: getattr(v, "value", v) for k, v in vars(typed).items()})
    return {k: v for k, v in settings.items() if k not in NOT_CONFIG}


# ------------------------------------------------------------------------------------------------ trials
class TrialFailed(Exception):
    """A trial's process ended with an error: the trial is recorded as failed and the study goes on."""


_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()


def stop_live_trials() -> None:
    """Kill every trial process still running (the tuner is stopping)."""
    with _LIVE_LOCK:
        for process in list(_LIVE):
            process.kill()


def run_watched(command: list[str], log_path: str, metrics_path: str | None,
                on_score: Callable[[float], bool] | None = None, env: dict[str, str] | None = None,
                poll_seconds: float = 0.5) -> tuple[int, bool]:
    """Run ``command`` with its output in ``log_path``; each new line of ``metrics_path`` (an epoch's validation
    score) goes to ``on_score``, and the process is killed as soon as that returns True. (exit status, stopped)."""
    env = {**os.environ, **(env or {})}
    if metrics_path:
        env[EPOCH_METRICS_FILE] = metrics_path
    seen = 0
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        with _LIVE_LOCK:
            _LIVE.add(process)
        try:
            while True:
                try:
                    status = process.wait(timeout=poll_seconds)
                except subprocess.TimeoutExpired:
                    status = None
                if metrics_path and on_score and os.path.isfile(metrics_path):
                    with open(metrics_path, encoding="utf-8") as f:  # whole lines only: one may be half-written
                        lines = [line for line in f.read().split("\n")[:-1] if line.strip()]
                    for line in lines[seen:]:
                        seen += 1
                        if on_score(float(json.loads(line)["value"])):
                            if process.poll() is None:
                                process.kill()
                                process.wait()
                            return process.returncode, True
                if status is not None:
                    return status, False
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            with _LIVE_LOCK:
                _LIVE.discard(process)


def last_error_line(log_path: str) -> str:
    """The recipe's ``error: ...`` line (its one-line message), or the log's last line."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("error: ")]
    return (errors or lines or [""])[-1][:500]


def read_results(folder: str) -> dict[str, Any]:
    """A finished run's ``all_results.json``; a run that ended without one failed."""
    try:
        with open(os.path.join(folder, "all_results.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise TrialFailed(f"{folder}: no readable all_results.json ({error.__class__.__name__})") from None


def score_of(results: dict[str, Any], key: str, where: str) -> float:
    value = results.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise TrialFailed(f"{where}: no {key} in all_results.json")
    return float(value)


def counted_trials(study: optuna.Study) -> int:
    """Trials that count towards --trials: completed, pruned, or failed by the recipe (not those cut short by the
    tuner being stopped, which a rerun replaces)."""
    return sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
               or (t.state == optuna.trial.TrialState.FAIL and "exit_status" in t.user_attrs)
               for t in study.get_trials(deepcopy=False))


def clean_trial(folder: str, keep: bool) -> None:
    if keep or not os.path.isdir(folder):
        return
    for root, dirs, _ in os.walk(folder):
        remove_weights(root)


# ------------------------------------------------------------------------------------------------ study outputs
def write_trials_csv(study: optuna.Study, path: str) -> None:
    frame = study.trials_dataframe(attrs=("number", "state", "value", "duration", "params", "user_attrs"))
    frame.to_csv(path, index=False)


def write_history_plot(study: optuna.Study, path: str, metric: str) -> bool:
    """Optuna's optimisation history (every completed trial's score and the best so far) as a PNG."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = optuna.visualization.matplotlib.plot_optimization_history(study, target_name=metric)
    axes.figure.set_size_inches(7, 4)
    axes.figure.tight_layout()
    axes.figure.savefig(path, dpi=100)
    plt.close(axes.figure)
    return True


def write_importances(study: optuna.Study, path: str, seed: int) -> str | None:
    """Optuna's fANOVA parameter importances as a table; with too few completed trials (or nothing that varied)
    the table is left empty and the reason returned."""
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    reason = None
    importances: dict[str, float] = {}
    if len(complete) < 2:
        reason = f"{len(complete)} completed trial(s): parameter importances need at least 2"
    else:
        try:
            importances = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed))
        except (RuntimeError, ValueError) as error:  # e.g. no parameter varied among completed trials
            reason = f"parameter importances not computed: {error}"
    with open(path, "w", encoding="utf-8") as f:
        f.write("parameter,importance\n")
        f.writelines(f"{name},{value:.6f}\n" for name, value in importances.items())
    return reason


def best_config(settings: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The user's settings with the best parameters, trained as the trials were (``do_train``, ``do_eval``), the
    user's test settings kept: a ``--config`` the recipe runs as it is."""
    config = {**settings, **{k: v for k, v in params.items() if v is not None}}
    for name, value in params.items():
        if value is None:
            config.pop(name, None)  # the recipe's default was the best choice
    config.update(do_train=True, do_eval=True)  # as every trial trained: the best epoch kept on validation
    return config


def same_settings(saved: dict, current: dict) -> str | None:
    """The first setting in which a study folder's saved settings differ from this run's, or None."""
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            return key
    return None
