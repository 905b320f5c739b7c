"""Classification metrics from scikit-learn, decision thresholds, and bootstrap confidence intervals.

Metric functions return flat ``{name: float}`` dicts (what goes into ``all_results.json``); detailed reports
(per class, confusion matrix) come from :func:`classification_report_dict`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from shared.data.labels import predict_classes
from shared.evaluation.calibration import NAMES, UNCALIBRATED, calibration_metrics


@contextlib.contextmanager
def _quiet():
    """Undefined metrics (a class absent from a small sample) are reported as NaN/0 without warning spam; a split
    of one class is said once, in one line, by :func:`shared.evaluation.reports.score_and_report`. (scikit-learn's
    "A single label was found" comes from ``balanced_accuracy_score``'s confusion matrix: the score itself is defined,
    the recall of the one class present.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.filterwarnings("ignore", message=".*(y_pred contains classes not in y_true|Only one class"
                                                  "|A single label was found).*")
        yield


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def classification_metrics(y_true: Sequence[int], probs: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    """Single-label metrics from true class ids and predicted probabilities ``(n, num_classes)``.

    Accuracy, balanced accuracy, macro/micro/weighted precision, recall and F1; AUROC (one-vs-rest, macro) and
    AUPRC (macro average precision) over the classes present in ``y_true``. For two classes, class 1 is
    "positive": ``threshold`` (default argmax, i.e. 0.5) sets the decision, and sensitivity/specificity are added.
    """
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    num_classes = probs.shape[1]
    y_pred = predict_classes(probs, threshold)
    labels = np.arange(num_classes)
    with _quiet():
        out = {
            "accuracy": skm.accuracy_score(y_true, y_pred),
            "balanced_accuracy": skm.balanced_accuracy_score(y_true, y_pred),
        }
        for average in ("macro", "micro", "weighted"):
            p, r, f, _ = skm.precision_recall_fscore_support(
                y_true, y_pred, labels=labels, average=average, zero_division=0
            )
            out.update({f"{average}_precision": p, f"{average}_recall": r, f"{average}_f1": f})
        out.update(_ranking_metrics(y_true, probs))
        if num_classes == 2:
            tn, fp, fn, tp = skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
            out["sensitivity"] = tp / (tp + fn) if tp + fn else float("nan")
            out["specificity"] = tn / (tn + fp) if tn + fp else float("nan")
    return {k: float(v) for k, v in out.items()}


def _ranking_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    present = np.unique(y_true)
    if len(present) < 2:  # AUROC needs both positives and negatives
        return {"auroc": float("nan"), "auprc": float("nan")}
    if probs.shape[1] == 2:
        return {
            "auroc": skm.roc_auc_score(y_true, probs[:, 1]),
            "auprc": skm.average_precision_score(y_true, probs[:, 1]),
        }
    one_hot = np.eye(probs.shape[1])[y_true][:, present]
    scores = probs[:, present]
    return {
        "auroc": skm.roc_auc_score(one_hot, scores, average="macro"),
        "auprc": skm.average_precision_score(one_hot, scores, average="macro"),
    }


def classification_report_dict(y_true: Sequence[int], probs: np.ndarray, label_names: list[str], threshold=None) -> dict:
    """Per-class precision/recall/F1/support (+ AUROC one-vs-rest) and the confusion matrix, JSON-serialisable."""
    y_true = np.asarray(y_true)
    y_pred = predict_classes(probs, threshold)
    labels = list(range(len(label_names)))
    with _quiet():
        report = skm.classification_report(
            y_true, y_pred, labels=labels, target_names=label_names, output_dict=True, zero_division=0
        )
        for i, name in enumerate(label_names):
            positives = y_true == i
            report[name]["auroc"] = (
                float(skm.roc_auc_score(positives, np.asarray(probs)[:, i])) if 0 < positives.sum() < len(y_true) else None
            )
    return {
        "per_class": {name: report[name] for name in label_names},
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "labels": label_names,
    }


def multilabel_metrics(y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | float = 0.5) -> dict[str, float]:
    """Multi-label metrics from a multi-hot matrix and per-label probabilities, with per-label thresholds.

    Micro/macro/weighted/samples P/R/F1, subset accuracy, Hamming loss, macro AUROC/AUPRC over labels that have
    both positives and negatives in ``y_true``.
    """
    y_true = np.asarray(y_true).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    y_pred = (probs >= np.asarray(thresholds)).astype(int)
    with _quiet():
        out = {"subset_accuracy": skm.accuracy_score(y_true, y_pred), "hamming_loss": skm.hamming_loss(y_true, y_pred)}
        for average in ("micro", "macro", "weighted", "samples"):
            p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)
            out.update({f"{average}_precision": p, f"{average}_recall": r, f"{average}_f1": f})
        scorable = [j for j in range(y_true.shape[1]) if 0 < y_true[:, j].sum() < len(y_true)]
        if scorable:
            out["auroc"] = skm.roc_auc_score(y_true[:, scorable], probs[:, scorable], average="macro")
            out["auprc"] = skm.average_precision_score(y_true[:, scorable], probs[:, scorable], average="macro")
        else:
            out["auroc"] = out["auprc"] = float("nan")
    return {k: float(v) for k, v in out.items()}


def multilabel_report_dict(y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, label_names: list[str]) -> dict:
    y_true = np.asarray(y_true).astype(int)
    y_pred = (np.asarray(probs) >= np.asarray(thresholds)).astype(int)
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    return {
        "per_label": {
            name: {"precision": float(p[j]), "recall": float(r[j]), "f1-score": float(f[j]), "support": int(s[j]),
                   "threshold": float(np.asarray(thresholds).reshape(-1)[j] if np.ndim(thresholds) else thresholds)}
            for j, name in enumerate(label_names)
        },
        "labels": label_names,
    }


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per-label decision thresholds that maximise F1 on (validation) data.

    Candidates are the observed probabilities (every distinct decision a threshold can make); ties go to the
    threshold closest to ``default``. A label with no positives keeps ``default``.
    """
    y_true = np.asarray(y_true).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    thresholds = np.full(y_true.shape[1], default)
    for j in range(y_true.shape[1]):
        if y_true[:, j].sum() == 0:
            continue
        precision, recall, cut = skm.precision_recall_curve(y_true[:, j], probs[:, j])
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=(precision + recall) > 0)
        f1 = f1[:-1]  # the last point (recall 0) has no threshold
        best = np.flatnonzero(np.isclose(f1, f1.max()))
        thresholds[j] = cut[best[np.argmin(np.abs(cut[best] - default))]]
    return thresholds


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray], dict[str, float]],
    n: int,
    resamples: int = 1000,
    confidence: float = 0.95,
    groups: Sequence | None = None,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence intervals for every metric ``metric_fn(indices)`` returns.

    ``metric_fn`` receives an index array (rows drawn with replacement) and returns ``{name: value}``. With
    ``groups`` (e.g. document or patient ids), whole groups are resampled, so correlated rows stay together; when
    every row is in one group (a CoNLL file without ``-DOCSTART-``) there is nothing to resample but rows.
    Resamples where a metric is undefined (NaN, e.g. AUROC with one class) are skipped for that metric.
    """
    rng = np.random.default_rng(seed)
    if groups is not None and len(set(groups)) < 2:
        groups = None  # one group drawn with replacement is the same data every time: a zero-width interval
    if groups is None:
        members = [np.array([i]) for i in range(n)]
    else:
        groups = np.asarray(groups)
        _, inverse = np.unique(groups, return_inverse=True)
        members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    samples: dict[str, list[float]] = {}
    for _ in range(resamples):
        picked = rng.integers(0, len(members), size=len(members))
        indices = np.concatenate([members[g] for g in picked])
        for name, value in metric_fn(indices).items():
            samples.setdefault(name, []).append(value)
    alpha = (1 - confidence) / 2
    intervals = {}
    for name, values in samples.items():
        values = np.asarray(values, dtype=np.float64)
        values = values[~np.isnan(values)]
        intervals[name] = (
            (float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))) if len(values) else (float("nan"),) * 2
        )
    return intervals


def add_ci(metrics: dict[str, float], intervals: dict[str, tuple[float, float]], prefix: str = "") -> dict[str, float]:
    """Flatten intervals into ``{prefix}{name}_ci_low`` / ``_ci_high`` keys beside the point estimates."""
    out = dict(metrics)
    for name, (low, high) in intervals.items():
        out[f"{prefix}{name}_ci_low"] = low
        out[f"{prefix}{name}_ci_high"] = high
    return out


def selection_macro_f1(gold: np.ndarray, probs: np.ndarray, multi_label: bool) -> float:
    """Macro-F1 of a validation split as the model will be used: argmax (single-label), or at per-label thresholds
    tuned on this split (multi-label, as the recipes tune them after training). At a fixed 0.5 a multi-label model
    early in training predicts no label at all, and every epoch scores 0."""
    if multi_label:
        return multilabel_metrics(gold, probs, tune_thresholds(gold, probs))["macro_f1"]
    return classification_metrics(gold, probs)["macro_f1"]


def positive_micro_metrics(gold: np.ndarray, probs: np.ndarray, negative: int, resamples: int = 0, seed: int = 0,
                           groups: Sequence | None = None) -> dict[str, float]:
    """``precision``, ``recall`` and ``f1`` micro-averaged over every class but ``negative`` (relation extraction's
    "no relation"), the i2b2 2010 / DDI 2013 convention: a pair given the wrong relation type is a false positive of
    that type and a false negative of its own; "no relation" itself earns nothing. Bootstrap 95% CIs with
    ``resamples`` (whole ``groups``, e.g. notes, resampled)."""
    gold, pred = np.asarray(gold), np.asarray(probs).argmax(axis=1)
    positive = [k for k in range(np.asarray(probs).shape[1]) if k != negative]

    def score(idx):
        p, r, f, _ = skm.precision_recall_fscore_support(gold[idx], pred[idx], labels=positive, average="micro",
                                                         zero_division=0)
        return {"precision": float(p), "recall": float(r), "f1": float(f)}

    metrics = score(np.arange(len(gold)))
    if resamples:
        metrics = add_ci(metrics, bootstrap_ci(score, len(gold), resamples, groups=groups, seed=seed))
    return metrics


# Metrics shown in the model card and given bootstrap confidence intervals (sensitivity/specificity: binary tasks);
# the calibration metrics (shared/evaluation/calibration.py) get intervals too.
SINGLE_LABEL_HEADLINE = ["accuracy", "balanced_accuracy", "macro_f1", "micro_f1", "weighted_f1", "auroc", "auprc",
                         "sensitivity", "specificity", "ece", "brier"]
MULTI_LABEL_HEADLINE = ["micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "auroc", "auprc", "ece", "brier"]


def classifier_metrics(gold: np.ndarray, probs: np.ndarray, multi_label: bool, thresholds=None,
                       resamples: int = 0, seed: int = 0, groups: Sequence | None = None,
                       uncalibrated: np.ndarray | None = None) -> dict[str, float]:
    """The metrics of a labelled split of a classifier (text or images), calibration metrics included, with
    bootstrap 95% CIs of the headline and calibration metrics when ``resamples`` (whole ``groups`` resampled when
    given). ``thresholds``: per-label decision thresholds (multi-label; default 0.5), or the positive-class threshold
    of a binary task (default argmax). ``uncalibrated``: the probabilities before calibration, whose calibration
    metrics are added as ``ece_uncalibrated`` etc."""

    gold, probs = np.asarray(gold), np.asarray(probs)
    if multi_label:
        cut = 0.5 if thresholds is None else thresholds

        def decisions(idx):
            return multilabel_metrics(gold[idx], probs[idx], cut)
    else:
        def decisions(idx):
            return classification_metrics(gold[idx], probs[idx], thresholds)

    def score(idx):
        metrics = {**decisions(idx), **calibration_metrics(gold[idx], probs[idx], multi_label)}
        if uncalibrated is not None:
            before = calibration_metrics(gold[idx], uncalibrated[idx], multi_label)
            metrics.update({f"{name}{UNCALIBRATED}": value for name, value in before.items()})
        return metrics
    metrics = score(np.arange(len(gold)))
    if resamples:
        wanted = {*(MULTI_LABEL_HEADLINE if multi_label else SINGLE_LABEL_HEADLINE), *NAMES,
                  *(f"{name}{UNCALIBRATED}" for name in NAMES)}
        intervals = bootstrap_ci(lambda idx: {k: v for k, v in score(idx).items() if k in wanted}, len(gold),
                                 resamples=resamples, groups=groups, seed=seed)
        metrics = add_ci(metrics, intervals)
    return metrics
