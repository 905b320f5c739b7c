"""Calibrated probabilities: temperature scaling fitted on the validation split and folded into the classifier head,
and the numbers that say how well calibrated a classifier is.

Why: a clinician reads "0.92 pneumonia" as "right 92% of the time". A fine-tuned network's softmax is usually
overconfident (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017); dividing its logits by one
temperature T fitted on held-out data (the NLL minimiser) fixes most of that and changes no argmax decision.
Multi-label heads get one temperature per label (each label's sigmoid is its own binary classifier).

The temperature minimises the validation NLL, so on the validation split itself it always looks like an improvement;
on a small split it is fitted to noise (12 examples: validation ECE 0.159 -> 0.359). :func:`calibrate` therefore
checks it on held-out data first: 5-fold cross-validation within the validation split (each fold scaled by the
temperature fitted on the other four). Only a temperature that lowers that held-out NLL is applied; otherwise the
probabilities stay the model's raw ones and the log and model card say what was tried and why it was dropped.

The temperature is folded into the head: the last linear layer's weights and bias divided by T (per label: its row),
so the saved folder gives calibrated probabilities everywhere (``pipeline()``, an exported model) with no extra code.
``config.calibration`` records what was fitted, and :func:`saved_calibration` reads it back (uncalibrated scores of
a saved folder are then recoverable: the logits times T).

Metrics (:func:`calibration_metrics`), checked against torchmetrics and scikit-learn in the tests:

- ``ece``: expected calibration error, 15 equal-width confidence bins (torchmetrics' binning: a confidence of exactly
  1 is a bin of its own), weighted by the bin's share of examples. Single-label: the top label's confidence against
  whether it was right. Multi-label: every (example, label) probability against the label.
- ``mce``: the largest per-bin gap of the same bins.
- ``brier``: mean squared error of the probabilities, as scikit-learn's ``brier_score_loss`` scales it: two classes,
  the positive class's (0 to 1); more, the sum over classes (0 to 2); multi-label: the mean over labels.
- ``nll``: mean negative log-likelihood (``log_loss``; multi-label: binary cross-entropy per label, averaged).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from shared.core.errors import DataError
from shared.core.files import save_figure

logger = logging.getLogger(__name__)

METHODS = ("temperature", "none")
N_BINS = 15
NAMES = ("ece", "mce", "brier", "nll")
UNCALIBRATED = "_uncalibrated"
# Temperatures searched (log-uniform bounds): wide enough for any fine-tuned head, narrow enough that a validation
# split the model fits perfectly cannot push T to 0.
LOWEST_T, HIGHEST_T = 0.05, 20.0
# Module names under which transformers' sequence / image classification heads live (BERT, ViT, DINOv2, ConvNeXt,
# ResNet: classifier; RoBERTa, ELECTRA: classifier.out_proj; GPT-2, Llama: score; BART: classification_head).
HEAD_NAMES = ("classifier", "score", "classification_head", "logits_proj")
EPS = 1e-12
FOLDS = 5  # cross-validation folds of the held-out check of a temperature (calibrate)


@dataclass
class Calibration:
    """Temperatures fitted on a validation split: one (single-label) or one per label (multi-label).

    ``rejected`` (set by :func:`calibrate`): why the temperature was not applied. Such a calibration is false in a
    boolean context, so the recipes' ``if calibration`` treat the head as the raw one
    that it is (nothing saved in ``config.calibration``, no before/after metrics), while :meth:`describe` still tells
    the model card what was tried and why it was dropped."""

    temperatures: np.ndarray
    fitted_on: int  # validation examples
    rejected: str | None = None
    checked: str = ""  # what the held-out check measured (:func:`calibrate`), for the log and the model card

    def __bool__(self) -> bool:
        return self.rejected is None

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated logits: what the head gives once :func:`fold_into_head` has run."""
        return np.asarray(logits) / self.temperatures

    def undo(self, logits: np.ndarray) -> np.ndarray:
        """The logits the head gave before calibration."""
        return np.asarray(logits) * self.temperatures

    def saved(self) -> dict:
        """What ``config.calibration`` holds (read back by :func:`saved_calibration`)."""
        return {"method": "temperature", "temperature": [float(t) for t in self.temperatures],
                "fitted_on_validation_examples": int(self.fitted_on)}

    def describe(self) -> str:
        values = ", ".join(f"{t:.3g}" for t in self.temperatures)
        if self.rejected:
            return (f"none (raw probabilities): temperature scaling (T = {values}, fitted on {self.fitted_on} "
                    f"validation examples) {self.rejected}, so it was not applied")
        checked = f"; {self.checked}" if self.checked else ""
        return (f"temperature scaling, T = {values} (fitted on {self.fitted_on} validation examples{checked}), folded "
                "into the classifier head: the probabilities this folder gives are the temperature-scaled ones")


def saved_calibration(config) -> Calibration | None:
    """The calibration a fine-tuned folder was saved with (``config.calibration``), or None."""
    saved = getattr(config, "calibration", None)
    if not isinstance(saved, dict) or saved.get("method") != "temperature":
        return None
    return Calibration(np.asarray(saved["temperature"], dtype=np.float64), int(saved.get("fitted_on_validation_examples", 0)))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _binary_nll(logits: np.ndarray, gold: np.ndarray) -> float:
    # -[y log s(z) + (1-y) log(1-s(z))] = softplus(z) - y z, computed stably
    return float(np.mean(np.logaddexp(0.0, logits) - gold * logits))


def _best_temperature(nll) -> float:
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(lambda log_t: nll(math.exp(log_t)), bounds=(math.log(LOWEST_T), math.log(HIGHEST_T)),
                            method="bounded", options={"xatol": 1e-5})
    return float(math.exp(found.x))


def fit_temperature(logits: np.ndarray, gold: np.ndarray, multi_label: bool, warn: bool = True) -> Calibration:
    """The temperature(s) minimising the validation NLL of ``logits`` (examples x classes; multi-label: x labels).
    A multi-label label with one value in every validation example has nothing to be fitted on and keeps T = 1."""
    logits, gold = np.asarray(logits, dtype=np.float64), np.asarray(gold)
    if len(logits) == 0:
        raise DataError("calibration needs a validation split with examples (or --calibration none)")
    if not multi_label:
        rows = np.arange(len(gold))
        temperatures = [_best_temperature(lambda t: -float(np.mean(_log_softmax(logits / t)[rows, gold])))]
    else:
        temperatures = []
        for j in range(logits.shape[1]):
            y = gold[:, j].astype(np.float64)
            if y.min() == y.max():
                temperatures.append(1.0)
                continue
            temperatures.append(_best_temperature(lambda t, z=logits[:, j], y=y: _binary_nll(z / t, y)))
    at_bound = [j for j, t in enumerate(temperatures) if not LOWEST_T * 1.01 < t < HIGHEST_T / 1.01]
    if at_bound and warn:
        logger.warning("calibration: the temperature stopped at its bound (%g-%g) for %d of %d outputs: on these %d "
                       "validation examples the model is perfectly separated (or says nothing), so they cannot say "
                       "how confident it should be; a larger validation split gives a meaningful temperature",
                       LOWEST_T, HIGHEST_T, len(at_bound), len(temperatures), len(logits))
    return Calibration(np.asarray(temperatures), len(logits))


def head_layers(model: torch.nn.Module, num_labels: int) -> list[tuple[str, torch.nn.Linear]]:
    """The linear layers that produce the classifier's logits: those with ``num_labels`` outputs inside the head
    (:data:`HEAD_NAMES`). Under PEFT this is the trained copy and the original, and the LoRA B matrix where LoRA
    wraps the head itself: every term of the logits, so scaling them all scales the logits."""
    found = []
    for name, module in model.named_modules():
        parts = name.split(".")
        if isinstance(module, torch.nn.Linear) and module.out_features == num_labels \
                and any(part in HEAD_NAMES for part in parts):
            found.append((name, module))
    return found


@torch.no_grad()
def fold_into_head(model: torch.nn.Module, calibration: Calibration, num_labels: int) -> None:
    """Divide the head's output rows by their temperature, so that the model's logits are the calibrated ones."""
    layers = head_layers(model, num_labels)
    if not layers:
        raise DataError(f"--calibration temperature: no classifier layer with {num_labels} outputs found under "
                        f"{'/'.join(HEAD_NAMES)} in {type(model).__name__}; use --calibration none")
    for _, layer in layers:
        scale = torch.as_tensor(1.0 / calibration.temperatures, dtype=layer.weight.dtype, device=layer.weight.device)
        scale = scale.expand(num_labels) if scale.numel() == 1 else scale
        layer.weight.mul_(scale[:, None])
        if layer.bias is not None:
            layer.bias.mul_(scale)


def _probabilities(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-logits)) if multi_label else np.exp(_log_softmax(logits))


def held_out_nll(logits: np.ndarray, gold: np.ndarray, multi_label: bool, folds: int = FOLDS) -> tuple[float, float]:
    """(NLL of the raw logits, NLL with each fold scaled by the temperature fitted on the other folds): whether a
    temperature fitted on this split helps on examples it was not fitted on. Folds interleave (example i is in fold
    i mod k), so a split sorted by label still gives every fold every label."""
    logits, gold = np.asarray(logits, dtype=np.float64), np.asarray(gold)
    fold = np.arange(len(logits)) % min(folds, len(logits))
    scaled = np.empty_like(logits)
    for k in np.unique(fold):
        held = fold == k
        scaled[held] = fit_temperature(logits[~held], gold[~held], multi_label, warn=False).apply(logits[held])
    return (calibration_metrics(gold, _probabilities(logits, multi_label), multi_label)["nll"],
            calibration_metrics(gold, _probabilities(scaled, multi_label), multi_label)["nll"])


def calibrate(trainer, logits: np.ndarray, gold: np.ndarray, multi_label: bool, num_labels: int) -> Calibration | None:
    """Fit temperature scaling on validation ``logits`` and fold it into ``trainer.model``'s head if it lowers the
    held-out NLL (:func:`held_out_nll`); otherwise a rejected (false) :class:`Calibration`, the head untouched, and
    a warning. None (and a warning) where weights are sharded across processes (FSDP, DeepSpeed), whose head this
    cannot rescale."""
    if getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False):
        logger.warning("calibration skipped: the classifier head is sharded (FSDP / DeepSpeed); probabilities are "
                       "uncalibrated")
        return None
    calibration = fit_temperature(logits, gold, multi_label)
    if len(gold) < 2:
        calibration.rejected = "cannot be checked on held-out examples (fewer than 2)"
    else:
        raw, scaled = held_out_nll(logits, gold, multi_label)
        measured = f"held-out NLL {raw:.3f} -> {scaled:.3f} ({min(FOLDS, len(gold))}-fold cross-validation)"
        if not scaled < raw:
            calibration.rejected = f"did not lower the {measured}"
        calibration.checked = measured
    if calibration.rejected:
        logger.warning("calibration: %s; a larger validation split may calibrate", calibration.describe())
        return calibration
    fold_into_head(trainer.model, calibration, num_labels)
    logger.info("calibration: %s", calibration.describe())
    return calibration


def calibration_metrics(gold: np.ndarray, probs: np.ndarray, multi_label: bool, n_bins: int = N_BINS) -> dict[str, float]:
    """``ece``, ``mce``, ``brier`` and ``nll`` of one labelled split (see the module docstring)."""
    gold, probs = np.asarray(gold), np.asarray(probs, dtype=np.float64)
    if len(gold) == 0:
        return {name: float("nan") for name in NAMES}
    if multi_label:
        confidence, hit = probs.ravel(), gold.ravel().astype(np.float64)
        brier = float(np.mean((probs - gold) ** 2))
        clipped = np.clip(probs, EPS, 1 - EPS)
        nll = float(-np.mean(gold * np.log(clipped) + (1 - gold) * np.log(1 - clipped)))
    else:
        confidence, hit = probs.max(axis=1), (probs.argmax(axis=1) == gold).astype(np.float64)
        onehot = np.eye(probs.shape[1])[gold]
        squared = np.sum((probs - onehot) ** 2, axis=1)
        brier = float(np.mean(squared) / (2 if probs.shape[1] == 2 else 1))  # as scikit-learn scales it
        nll = float(-np.mean(np.log(np.clip(probs[np.arange(len(gold)), gold], EPS, 1.0))))
    gap, share = _binned_gaps(confidence, hit, n_bins)
    return {"ece": float(np.sum(gap * share)), "mce": float(gap.max()), "brier": brier, "nll": nll}


def _binned_gaps(confidence: np.ndarray, hit: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """|accuracy - confidence| per equal-width bin, and each bin's share of the examples (empty bins: 0, 0)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.searchsorted(edges, confidence, side="right") - 1  # as torch.bucketize(right=True) - 1
    count = np.bincount(index, minlength=n_bins + 1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.nan_to_num(np.bincount(index, hit, minlength=n_bins + 1) / count)
        mean_confidence = np.nan_to_num(np.bincount(index, confidence, minlength=n_bins + 1) / count)
    return np.abs(accuracy - mean_confidence), count / count.sum()


def reliability_points(gold: np.ndarray, probs: np.ndarray, multi_label: bool, n_bins: int = N_BINS):
    """(mean confidence, observed accuracy) of the non-empty bins, from scikit-learn's ``calibration_curve``."""
    from sklearn.calibration import calibration_curve

    gold, probs = np.asarray(gold), np.asarray(probs)
    if multi_label:
        hit, confidence = gold.ravel(), probs.ravel()
    else:
        hit, confidence = (probs.argmax(axis=1) == gold).astype(int), probs.max(axis=1)
    if hit.min() == hit.max():  # calibration_curve needs both outcomes
        return np.array([confidence.mean()]), np.array([float(hit[0])])
    observed, predicted = calibration_curve(hit, confidence, n_bins=n_bins, strategy="uniform")
    return predicted, observed


def plot_reliability(gold: np.ndarray, probs: np.ndarray, multi_label: bool, path: str, title: str,
                     uncalibrated: np.ndarray | None = None) -> None:
    """The reliability diagram of a split, saved as PNG: observed accuracy against confidence per bin, with the
    uncalibrated curve beside the calibrated one when given."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt


    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    curves: Sequence = [("uncalibrated", uncalibrated, "tab:red"), ("calibrated" if uncalibrated is not None
                                                                      else "model", probs, "tab:blue")]
    for name, values, colour in curves:
        if values is None:
            continue
        x, y = reliability_points(gold, values, multi_label)
        ece = calibration_metrics(gold, values, multi_label)["ece"]
        ax.plot(x, y, marker="o", color=colour, label=f"{name} (ECE {ece:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability" if multi_label else "confidence (top class)")
    ax.set_ylabel("fraction positive" if multi_label else "accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left")
    save_figure(fig, path)
    plt.close(fig)
