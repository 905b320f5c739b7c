"""shared/evaluation/metrics.py: classification metrics against scikit-learn, thresholds, bootstrap confidence
intervals."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from shared.evaluation.metrics import bootstrap_ci, classification_metrics, multilabel_metrics, selection_macro_f1
from shared.evaluation.metrics import softmax, tune_thresholds


def test_classification_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)
    probs = softmax(rng.normal(size=(50, 3)) + 2 * np.eye(3)[y])
    pred = probs.argmax(1)
    m = classification_metrics(y, probs)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["weighted_recall"] == pytest.approx(skm.recall_score(y, pred, average="weighted"))
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))


def test_binary_metrics_sensitivity_specificity_and_threshold():
    y = np.array([0, 0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.4, 0.6, 0.3, 0.7, 0.9])
    probs = np.stack([1 - p1, p1], 1)
    m = classification_metrics(y, probs)  # threshold 0.5: TN=2 FP=1 FN=1 TP=2
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(2 / 3)
    m = classification_metrics(y, probs, threshold=0.25)  # everything but 0.1 is positive
    assert m["sensitivity"] == 1.0 and m["specificity"] == pytest.approx(1 / 3)
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, p1))


def test_multilabel_metrics_match_scikit_learn():
    y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    probs = np.array([[0.9, 0.2, 0.4], [0.1, 0.8, 0.3], [0.6, 0.4, 0.2], [0.3, 0.1, 0.7]])
    thresholds = np.array([0.5, 0.5, 0.35])
    pred = (probs >= thresholds).astype(int)
    m = multilabel_metrics(y, probs, thresholds)
    assert m["micro_f1"] == pytest.approx(skm.f1_score(y, pred, average="micro"))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["subset_accuracy"] == pytest.approx(skm.accuracy_score(y, pred))


def test_tune_thresholds_maximises_f1():
    y = np.array([[0], [0], [1], [1], [1]])
    probs = np.array([[0.1], [0.35], [0.3], [0.4], [0.8]])
    t = tune_thresholds(y, probs)
    # 0.3 catches all three positives with one false positive: F1 = 6/7, the best achievable
    assert t[0] == pytest.approx(0.3)
    assert skm.f1_score(y[:, 0], probs[:, 0] >= t[0]) == pytest.approx(6 / 7)
    assert tune_thresholds(np.zeros((3, 1)), np.full((3, 1), 0.9))[0] == 0.5  # no positives: keep default


def test_bootstrap_ci_brackets_estimate_and_narrows_with_more_data():
    rng = np.random.default_rng(0)

    def interval(n):
        correct = rng.random(n) < 0.8
        return bootstrap_ci(lambda idx: {"acc": correct[idx].mean()}, n, resamples=500, seed=1)["acc"], correct.mean()

    (low_small, high_small), acc_small = interval(50)
    (low_big, high_big), acc_big = interval(2000)
    assert low_small <= acc_small <= high_small and low_big <= acc_big <= high_big
    assert (high_big - low_big) < (high_small - low_small) / 3
    # normal approximation for a proportion: half-width ~ 1.96 * sqrt(p(1-p)/n)
    assert (high_big - low_big) / 2 == pytest.approx(1.96 * np.sqrt(0.8 * 0.2 / 2000), rel=0.25)


def test_bootstrap_resamples_whole_groups():
    groups = np.repeat(np.arange(5), 3)
    seen = []

    def record(idx):
        seen.append(idx)
        return {"n": float(len(idx))}

    bootstrap_ci(record, len(groups), resamples=20, groups=groups, seed=0)
    for idx in seen:
        counts = np.bincount(groups[idx], minlength=5)
        assert set(counts.tolist()) <= {0, 3, 6, 9, 12, 15}  # each group drawn as a block of 3 rows


def test_bootstrap_with_one_group_resamples_rows():
    """A CoNLL file without -DOCSTART- is one document: resampling it whole gave a zero-width interval."""
    correct = np.random.default_rng(0).random(200) < 0.7
    low, high = bootstrap_ci(lambda idx: {"acc": correct[idx].mean()}, 200, resamples=200,
                             groups=["doc0"] * 200, seed=0)["acc"]
    assert high - low > 0.05
    assert (low, high) == bootstrap_ci(lambda idx: {"acc": correct[idx].mean()}, 200, resamples=200, seed=0)["acc"]


def test_bootstrap_skips_undefined_resamples():
    y = np.array([0] * 9 + [1])
    intervals = bootstrap_ci(lambda idx: {"pos": float("nan") if y[idx].sum() == 0 else y[idx].mean()}, 10, 200, seed=0)
    low, high = intervals["pos"]
    assert 0 < low <= high


def test_selection_macro_f1_tunes_multi_label_thresholds_first():
    gold = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    probs = np.array([[0.3, 0.1], [0.1, 0.2], [0.35, 0.05], [0.1, 0.1]])  # every probability under 0.5
    assert multilabel_metrics(gold, probs)["macro_f1"] == 0.0
    assert selection_macro_f1(gold, probs, multi_label=True) == 1.0
    single = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert selection_macro_f1(np.array([0, 1, 1]), single, multi_label=False) == pytest.approx(
        classification_metrics(np.array([0, 1, 1]), single)["macro_f1"])


def test_a_test_split_of_one_class_is_one_log_line_and_no_warnings(tmp_path, caplog, capfd):
    """scikit-learn warned "A single label was found" (balanced accuracy's confusion matrix) once per bootstrap
    resample, with source lines; now: no warning, one line naming the split and what is undefined."""
    import logging
    import warnings

    from shared.evaluation.reports import score_and_report

    gold, probs = np.zeros(10, dtype=int), np.tile([0.9, 0.05, 0.05], (10, 1))
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        metrics = score_and_report(str(tmp_path), "test", gold, probs, ["a", "b", "c"], False, resamples=20)
    assert [str(w.message) for w in caught] == []
    assert "Warning" not in capfd.readouterr().err
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [("test split: every example's gold label is 'a' (one class): AUROC and AUPRC are undefined (NaN), "
                      "and the classes without examples count as 0 in the macro averages")]
    assert np.isnan(metrics["auroc"]) and metrics["accuracy"] == metrics["balanced_accuracy"] == 1.0
