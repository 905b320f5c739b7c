"""Conformal prediction sets (shared/evaluation/conformal.py): the same sets as MAPIE on fixed arrays, the coverage
guarantee on synthetic probabilities (marginal and per class), the split of the validation data and its refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.core.errors import DataError
from shared.evaluation.conformal import (
    ConformalArguments,
    examples_needed,
    fit_conformal,
    plan_conformal,
    saved_conformal,
    score_sets,
    set_metrics,
)


def synthetic(rng, n, classes=4, weights=None, sharpness=2.0, model_bias=None):
    """A miscalibrated, imperfect classifier's probabilities and the labels drawn from its own (tempered) beliefs:
    exchangeable examples, as the guarantee assumes. ``weights`` make classes rare; ``model_bias`` scales the model's
    probabilities per class (a model that underrates the rare class)."""
    logits = rng.normal(size=(n, classes)) * sharpness
    true_p = np.exp(logits / 2) / np.exp(logits / 2).sum(axis=1, keepdims=True)  # the truth is less sure than the model
    if weights is not None:
        true_p = true_p * np.asarray(weights)
        true_p /= true_p.sum(axis=1, keepdims=True)
    gold = np.array([rng.choice(classes, p=p) for p in true_p])
    probs = np.exp(logits) * (1 if model_bias is None else np.asarray(model_bias))
    return probs / probs.sum(axis=1, keepdims=True), gold


def mapie_sets(cal_probs, cal_gold, test_probs, alpha):
    pytest.importorskip("mapie")
    from mapie.classification import SplitConformalClassifier
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Fixed(ClassifierMixin, BaseEstimator):
        """A prefit classifier whose 'features' are its probabilities."""

        def __init__(self, classes=2):
            self.classes = classes

        def fit(self, X, y=None):
            self.classes_ = np.arange(self.classes)
            return self

        def predict_proba(self, X):
            return np.asarray(X)

        def predict(self, X):
            return np.asarray(X).argmax(axis=1)

    estimator = Fixed(cal_probs.shape[1]).fit(cal_probs)
    mapie = SplitConformalClassifier(estimator, confidence_level=1 - alpha, conformity_score="lac", prefit=True)
    mapie.conformalize(cal_probs, cal_gold)
    _, sets = mapie.predict_set(test_probs)
    return sets[:, :, 0]


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2, 0.33])
def test_sets_equal_mapie_on_fixed_arrays(alpha):
    rng = np.random.default_rng(7)
    cal_probs, cal_gold = synthetic(rng, 57)
    test_probs, _ = synthetic(rng, 40)
    ours = fit_conformal(cal_probs, cal_gold, alpha).sets(test_probs)
    np.testing.assert_array_equal(ours, mapie_sets(cal_probs, cal_gold, test_probs, alpha))
    assert ours.sum(axis=1).min() < ours.sum(axis=1).max()  # not a trivial all-or-nothing case


def test_class_conditional_equals_mapie_fitted_on_each_class():
    """Mondrian by label: class k's column is MAPIE's set on the calibration examples of class k only."""
    rng = np.random.default_rng(3)
    cal_probs, cal_gold = synthetic(rng, 120, classes=3)
    test_probs, _ = synthetic(rng, 30, classes=3)
    ours = fit_conformal(cal_probs, cal_gold, 0.1, class_conditional=True).sets(test_probs)
    for k in range(3):
        rows = cal_gold == k
        theirs = mapie_sets(cal_probs[rows], cal_gold[rows], test_probs, 0.1)
        np.testing.assert_array_equal(ours[:, k], theirs[:, k])


def test_marginal_coverage_holds_over_random_splits():
    """Mean test coverage over 300 random calibration/test splits >= 1 - alpha. The mean of 300 splits with 200
    calibration and 500 test examples has a standard error of ~0.0015 (the finite-sample spread of a split's coverage,
    ~0.02, over sqrt(300)): the tolerance 0.006 is four of them. It is also at most 1 - alpha + 1/(n + 1) (+ same)."""
    rng = np.random.default_rng(0)
    probs, gold = synthetic(rng, 20_000)
    alpha, n_cal, n_test = 0.1, 200, 500
    coverages, sizes = [], []
    for _ in range(300):
        order = rng.permutation(len(gold))
        cal, test = order[:n_cal], order[n_cal:n_cal + n_test]
        sets = fit_conformal(probs[cal], gold[cal], alpha).sets(probs[test])
        metrics = set_metrics(gold[test], sets)
        coverages.append(metrics["coverage"])
        sizes.append(metrics["mean_set_size"])
    assert np.mean(coverages) >= 1 - alpha - 0.006
    assert np.mean(coverages) <= 1 - alpha + 1 / (n_cal + 1) + 0.006
    assert 1 < np.mean(sizes) < 4  # informative: neither the top class alone nor every class


def test_class_conditional_coverage_holds_for_every_class():
    """On imbalanced data, marginal sets under-cover the rare class; class-conditional ones cover every class."""
    rng = np.random.default_rng(1)
    probs, gold = synthetic(rng, 30_000, classes=3, weights=[1.0, 1.0, 0.08], model_bias=[1.0, 1.0, 0.2])
    alpha, n_cal, n_test = 0.1, 1500, 1500
    per_class = {"marginal": [], "conditional": []}
    for _ in range(100):
        order = rng.permutation(len(gold))
        cal, test = order[:n_cal], order[n_cal:n_cal + n_test]
        for kind, conditional in (("marginal", False), ("conditional", True)):
            sets = fit_conformal(probs[cal], gold[cal], alpha, conditional).sets(probs[test])
            per_class[kind].append([sets[gold[test] == k, k].mean() for k in range(3)])
    conditional = np.mean(per_class["conditional"], axis=0)
    assert (conditional >= 1 - alpha - 0.01).all(), conditional  # ~100 calibration examples of the rare class
    assert np.mean(per_class["marginal"], axis=0).min() < 1 - alpha - 0.02  # the problem the option solves


def test_examples_needed_is_the_smallest_n_with_a_threshold():
    for alpha in (0.01, 0.05, 0.1, 0.2, 0.5, 0.9):
        n = examples_needed(alpha)
        assert math.ceil((n + 1) * (1 - alpha)) <= n
        assert n == 1 or math.ceil(n * (1 - alpha)) > n - 1
    assert examples_needed(0.1) == 9 and examples_needed(0.2) == 4
    with pytest.raises(ValueError):
        fit_conformal(np.full((8, 2), 0.5), np.zeros(8, dtype=int), 0.1)


def test_saved_round_trip_and_metrics():
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]] * 5)
    gold = np.array([0, 1, 2, 0] * 5)
    conformal = fit_conformal(probs, gold, 0.2)
    again = saved_conformal({"conformal": conformal.saved()})
    np.testing.assert_array_equal(again.sets(probs), conformal.sets(probs))
    metrics, report = score_sets(conformal, gold, probs, ["a", "b", "c"], resamples=50)
    sets = conformal.sets(probs)
    assert metrics["coverage"] == pytest.approx(sets[np.arange(20), gold].mean())
    assert metrics["mean_set_size"] == pytest.approx(sets.sum(axis=1).mean())
    assert metrics["coverage_ci_low"] <= metrics["coverage"] <= metrics["coverage_ci_high"]
    assert report["per_class"]["b"]["examples"] == 5
    assert saved_conformal({}) is None


def test_plan_splits_validation_and_refuses_what_cannot_cover():
    gold = np.array([0] * 30 + [1] * 10)
    plan = plan_conformal(ConformalArguments(conformal_alpha=0.2), gold, False, ["a", "b"], True, 0)
    assert not set(plan.temperature_rows) & set(plan.calibration_rows)
    assert len(plan.calibration_rows) == 20 and sorted(np.bincount(gold[plan.calibration_rows])) == [5, 15]
    with pytest.raises(DataError, match="needs at least 9 calibration examples, but .* holds 4"):
        plan_conformal(ConformalArguments(conformal_alpha=0.1), gold[:8], False, ["a", "b"], True, 0)
    with pytest.raises(DataError, match="needs at least 9 calibration examples of every class.*'b' 5"):
        plan_conformal(ConformalArguments(conformal_alpha=0.1, conformal_class_conditional=True), gold, False,
                       ["a", "b"], True, 0)
    with pytest.raises(DataError, match="multi-label"):
        plan_conformal(ConformalArguments(conformal_alpha=0.1), gold, True, ["a", "b"], True, 0)
    assert plan_conformal(ConformalArguments(), gold, False, ["a", "b"], True, 0) is None
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(DataError, match="between 0 and 1"):
            ConformalArguments(conformal_alpha=bad)
