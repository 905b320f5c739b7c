"""Conformal prediction sets of a single-label classifier: a set of labels that holds the true one with probability
at least 1 - alpha, whatever the model (split conformal prediction; Vovk et al. 2005, Sadinle et al. 2019).

How a recipe uses it (``--conformal_alpha``): after training, the validation split is cut in two, stratified by
label (:func:`plan_conformal`, before the model loads, so that a split too small for the asked alpha fails in
seconds): ``--conformal_split_percentage`` of it (default 50%) calibrates the sets, the rest fits the temperature
(``shared.evaluation.calibration``), so the two never see the same examples. The score of an example is the LAC
score, 1 - the probability the (temperature-scaled) model gives its true class; the threshold ``q`` is the
``ceil((n + 1)(1 - alpha))``-th smallest of the n calibration scores, and a new input's set is every class whose
score is at most ``q`` (probability >= 1 - q). That is MAPIE's ``SplitConformalClassifier(conformity_score="lac",
prefit=True)`` exactly (the tests compare them on fixed arrays), written here on probability arrays so that the
threshold travels in ``config.json`` to ``predict.py``, ``serve.py`` and the ONNX export without scikit-learn
estimators. ``--conformal_class_conditional`` (Mondrian by label) fits one threshold per class on that class's
calibration examples: coverage then holds for every true class, not only on average, at the price of larger sets
for the rare classes.

What the guarantee is: over random draws of calibration and test examples *from the same distribution*
(exchangeable), the share of test sets that hold the true label is at least 1 - alpha (and at most
1 - alpha + 1/(n + 1)). It is an average over draws, not a promise for one example, and it does not hold for data
unlike the calibration split (another hospital, scanner or period). The model chose its best epoch on the whole
validation split, the conformal part included: a mild dependence the guarantee does not cover.

A set can be empty (no class is plausible enough: an input unlike the training data) or hold several classes (the
model cannot tell them apart at this confidence); ``mean_set_size`` says how informative the sets are.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from shared.core.errors import DataError
from shared.data.splits import split_indices
from shared.evaluation.metrics import add_ci, bootstrap_ci

logger = logging.getLogger(__name__)

CONFORMITY_SCORES = ("lac",)  # MAPIE's name of the score; APS (randomised in MAPIE) is not offered
CONFIG_KEY = "conformal"  # the entry in a trained folder's config.json
# MAPIE's tolerance when comparing a score with the threshold (mapie.conformity_scores.sets.lac: EPSILON)
TOLERANCE = 1e-8
DEFAULT_SPLIT_PERCENTAGE = 50.0
SET_HEADLINE = ["coverage", "mean_set_size"]  # beside a recipe's headline metrics in the model card


@dataclass
class ConformalArguments:
    _argument_group_name = "prediction sets"

    conformal_alpha: float | None = field(
        default=None,
        metadata={"help": "Conformal prediction sets: each prediction also gives the set of labels that holds the true "
                          "one with probability at least 1 - alpha (e.g. 0.1 for 90%), calibrated on part of the "
                          "validation split (single-label classifiers, with --do_train). Default: off."})
    conformal_class_conditional: bool = field(
        default=False,
        metadata={"help": "One conformal threshold per class (Mondrian): the coverage holds for every true class, "
                          "not only on average (imbalanced data); needs enough validation examples of every class."})
    conformal_split_percentage: float = field(
        default=DEFAULT_SPLIT_PERCENTAGE,
        metadata={"help": "Share of the validation split (stratified by label) that calibrates the prediction sets; "
                          "the temperature is fitted on the rest, so the two never share an example."})

    def __post_init__(self):
        if self.conformal_alpha is not None and not 0 < self.conformal_alpha < 1:
            raise DataError(f"--conformal_alpha must be between 0 and 1 (exclusive), e.g. 0.1 for 90% sets; got "
                            f"{self.conformal_alpha:g}")
        if not 0 < self.conformal_split_percentage < 100:
            raise DataError(f"--conformal_split_percentage must be between 0 and 100, got "
                            f"{self.conformal_split_percentage:g}")


def examples_needed(alpha: float) -> int:
    """The fewest calibration examples for which the conformal threshold exists at ``alpha``: n with
    ceil((n + 1)(1 - alpha)) <= n (9 at 0.1, 19 at 0.05, 4 at 0.2)."""
    n = 1
    while math.ceil((n + 1) * (1 - alpha) - 1e-12) > n:
        n += 1
    return n


def lac_scores(probs: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """1 - the probability of the true class, per example."""
    probs = np.asarray(probs, dtype=np.float64)
    return 1.0 - probs[np.arange(len(probs)), np.asarray(gold, dtype=int)]


def conformal_quantile(scores: np.ndarray, alpha: float) -> float:
    """The ceil((n + 1)(1 - alpha))-th smallest score (MAPIE's ``_compute_classification_quantile``)."""
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    if n < examples_needed(alpha):
        raise ValueError(f"{n} calibration scores cannot give a threshold at alpha {alpha} "
                         f"(need {examples_needed(alpha)})")
    return float(np.quantile(scores, math.ceil((n + 1) * (1 - alpha)) / n, method="lower"))


@dataclass
class ConformalSets:
    """Fitted thresholds: one (marginal) or one per class (class-conditional)."""

    alpha: float
    thresholds: np.ndarray  # LAC score thresholds, shape (1,) or (classes,)
    class_conditional: bool
    fitted_on: int  # calibration examples
    method: str = "lac"

    def sets(self, probs: np.ndarray) -> np.ndarray:
        """A boolean (examples x classes) array: which classes each example's set holds."""
        probs = np.asarray(probs, dtype=np.float64)
        return (1.0 - probs) - self.thresholds[None, :] <= TOLERANCE

    def named(self, probs: np.ndarray, label_names: Sequence[str]) -> list[list[str]]:
        """Each example's set as label names, in class order."""
        return [[label_names[j] for j in np.flatnonzero(row)] for row in self.sets(probs)]

    def saved(self) -> dict:
        """The ``config.json`` entry (:data:`CONFIG_KEY`), read back by :func:`saved_conformal`."""
        return {"method": self.method, "alpha": float(self.alpha), "class_conditional": bool(self.class_conditional),
                "thresholds": [float(t) for t in self.thresholds], "fitted_on_calibration_examples": int(self.fitted_on)}

    def describe(self) -> str:
        kind = "one threshold per class" if self.class_conditional else "one threshold"
        return (f"{self.method.upper()} split-conformal sets at alpha {self.alpha:g} (coverage >= "
                f"{1 - self.alpha:.0%} on exchangeable data), {kind}, calibrated on {self.fitted_on} held-out "
                "validation examples")


def fit_conformal(probs: np.ndarray, gold: np.ndarray, alpha: float, class_conditional: bool = False) -> ConformalSets:
    """Thresholds from calibration ``probs`` (examples x classes) and their true class ids."""
    probs, gold = np.asarray(probs, dtype=np.float64), np.asarray(gold, dtype=int)
    scores = lac_scores(probs, gold)
    if class_conditional:
        thresholds = np.array([conformal_quantile(scores[gold == k], alpha) for k in range(probs.shape[1])])
    else:
        thresholds = np.array([conformal_quantile(scores, alpha)])
    return ConformalSets(alpha, thresholds, class_conditional, len(gold))


def saved_conformal(config) -> ConformalSets | None:
    """The sets a trained folder was saved with (``config.conformal``; a config object or a dict), or None."""
    saved = config.get(CONFIG_KEY) if isinstance(config, dict) else getattr(config, CONFIG_KEY, None)
    if not isinstance(saved, dict) or saved.get("method") not in CONFORMITY_SCORES:
        return None
    return ConformalSets(float(saved["alpha"]), np.asarray(saved["thresholds"], dtype=np.float64),
                         bool(saved.get("class_conditional")), int(saved.get("fitted_on_calibration_examples", 0)),
                         saved["method"])


def set_metrics(gold: np.ndarray, sets: np.ndarray) -> dict[str, float]:
    """``coverage`` (share of sets holding the true class), ``mean_set_size``, ``empty_sets`` (share)."""
    gold, sets = np.asarray(gold, dtype=int), np.asarray(sets, dtype=bool)
    if not len(gold):
        return {"coverage": float("nan"), "mean_set_size": float("nan"), "empty_sets": float("nan")}
    return {"coverage": float(sets[np.arange(len(gold)), gold].mean()), "mean_set_size": float(sets.sum(axis=1).mean()),
            "empty_sets": float((sets.sum(axis=1) == 0).mean())}


def per_class_coverage(gold: np.ndarray, sets: np.ndarray, label_names: Sequence[str]) -> dict[str, dict]:
    """Per true class: its examples, the share of their sets holding it, and their mean set size."""
    gold, sets = np.asarray(gold, dtype=int), np.asarray(sets, dtype=bool)
    table = {}
    for k, name in enumerate(label_names):
        rows = gold == k
        table[name] = {"examples": int(rows.sum()),
                       "coverage": float(sets[rows, k].mean()) if rows.any() else None,
                       "mean_set_size": float(sets[rows].sum(axis=1).mean()) if rows.any() else None}
    return table


def score_sets(conformal: ConformalSets, gold: np.ndarray, probs: np.ndarray, label_names: Sequence[str],
               resamples: int = 0, seed: int = 0, groups=None) -> tuple[dict[str, float], dict]:
    """(metrics with bootstrap 95% CIs when ``resamples``: coverage, mean set size, empty sets, the lowest class
    coverage; the report section: the settings and per-class coverage) of one labelled split."""
    gold = np.asarray(gold, dtype=int)
    sets = conformal.sets(probs)
    metrics = set_metrics(gold, sets)
    per_class = per_class_coverage(gold, sets, label_names)
    covered = [c["coverage"] for c in per_class.values() if c["coverage"] is not None]
    metrics["min_class_coverage"] = float(min(covered)) if covered else float("nan")
    if resamples and len(gold):
        intervals = bootstrap_ci(lambda idx: {k: v for k, v in set_metrics(gold[idx], sets[idx]).items()
                                              if k != "empty_sets"}, len(gold), resamples, groups=groups, seed=seed)
        metrics = add_ci(metrics, intervals)
    report = {**conformal.saved(), "target_coverage": 1 - conformal.alpha, "examples": len(gold), **metrics,
              "per_class": per_class}
    return metrics, report


@dataclass
class ConformalPlan:
    """Which validation rows fit the temperature and which calibrate the sets (:func:`plan_conformal`)."""

    alpha: float
    class_conditional: bool
    temperature_rows: np.ndarray
    calibration_rows: np.ndarray

    def fit(self, probs: np.ndarray, gold: np.ndarray) -> ConformalSets:
        """Thresholds from the calibration rows of the validation split's (calibrated) probabilities."""
        rows = self.calibration_rows
        conformal = fit_conformal(np.asarray(probs)[rows], np.asarray(gold)[rows], self.alpha, self.class_conditional)
        logger.info("prediction sets: %s", conformal.describe())
        return conformal


def plan_conformal(args: ConformalArguments, validation_gold, multi_label: bool, label_names: Sequence[str],
                   do_train: bool, seed: int) -> ConformalPlan | None:
    """The validation split cut for ``--conformal_alpha`` (None when off), or one line saying why it cannot be: a
    multi-label task, no training or no validation split, or too few calibration examples for the alpha (the
    number needed is named). Runs before the model loads."""
    alpha = args.conformal_alpha
    if alpha is None:
        return None
    if multi_label:
        raise DataError("--conformal_alpha: prediction sets are for single-label classification; this data is "
                        "multi-label")
    if not do_train:
        raise DataError("--conformal_alpha calibrates prediction sets while training (--do_train); a trained folder "
                        "gives the sets it was saved with")
    if validation_gold is None or not len(validation_gold):
        raise DataError("--conformal_alpha needs a validation split to calibrate on (--validation_file, or "
                        "--do_eval / --validation_split_percentage to carve one)")
    gold = np.asarray(validation_gold, dtype=int)
    needed = examples_needed(alpha)
    share = args.conformal_split_percentage / 100
    if len(gold) < 2:
        raise DataError(f"--conformal_alpha {alpha:g} needs at least {needed} calibration examples; the validation "
                        f"split has {len(gold)}")
    keep, held = split_indices(len(gold), share, labels=gold, seed=seed)
    what = (f"the {args.conformal_split_percentage:g}% of the {len(gold)} validation examples held out for it "
            "(--conformal_split_percentage)")
    if len(held) < needed:
        raise DataError(f"--conformal_alpha {alpha:g} needs at least {needed} calibration examples, but {what} holds "
                        f"{len(held)}: use a larger validation split or a larger alpha")
    if args.conformal_class_conditional:
        counts = np.bincount(gold[held], minlength=len(label_names))
        short = [f"'{label_names[k]}' {counts[k]}" for k in range(len(label_names)) if counts[k] < needed]
        if short:
            raise DataError(f"--conformal_class_conditional at alpha {alpha:g} needs at least {needed} calibration "
                            f"examples of every class, but {what} holds {', '.join(short)}: use a larger validation "
                            "split, a larger alpha or marginal sets")
    logger.info("prediction sets: %d validation examples calibrate them, %d fit the temperature", len(held), len(keep))
    return ConformalPlan(alpha, args.conformal_class_conditional, keep, held)


def sets_cells(named_sets: Sequence[Sequence[str]]) -> list[str]:
    """Prediction-table cells: each set as a JSON list of label names (``[]`` when empty)."""
    import json

    return [json.dumps(list(names), ensure_ascii=False) for names in named_sets]
