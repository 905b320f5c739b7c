"""Class imbalance: loss weights, focal loss and minority oversampling, plugged into an unmodified ``Trainer``.

The loss goes in through ``Trainer(compute_loss_func=make_loss_func(...))`` and oversampling is done on the
dataset itself, so every recipe uses the stock Trainer and stays correct under ``accelerate``/DDP.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from shared.core.errors import DataError
from shared.data.labels import IGNORE_INDEX

logger = logging.getLogger(__name__)

STRATEGIES = ("none", "balanced", "inverse_sqrt")


def class_weights(
    labels: Sequence[int] | np.ndarray, num_classes: int, strategy: str, allow_absent: bool = False
) -> np.ndarray | None:
    """Per-class loss weights from training labels (``-100`` entries are ignored, as for NER sub-tokens).

    ``balanced``: ``n / (k * count_c)`` (scikit-learn's definition). ``inverse_sqrt``: ``1 / sqrt(count_c)``,
    a milder correction. Both are scaled so the average weight over training examples is 1, which keeps the loss
    (and so the learning rate) on the same scale as unweighted training. Returns None for ``none``.

    A class with no training example is an error, unless ``allow_absent`` (e.g. NER tags such as ``I-X`` that a
    tagging scheme defines but the data never uses): such classes get weight 1.
    """
    if strategy not in STRATEGIES:
        raise DataError(f"unknown class weighting '{strategy}'; choose one of {', '.join(STRATEGIES)}")
    if strategy == "none":
        return None
    labels = np.asarray(labels).ravel()
    labels = labels[labels != IGNORE_INDEX]
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    absent = counts == 0
    if absent.any() and not allow_absent:
        raise DataError(f"cannot weight classes: class id(s) {np.flatnonzero(absent).tolist()} have no training examples")
    present = np.flatnonzero(~absent)
    weights = np.ones(num_classes)
    if strategy == "balanced":
        weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    else:
        weights[present] = 1.0 / np.sqrt(counts[present])
    weights[present] *= counts.sum() / (weights * counts).sum()
    return weights


def positive_weights(multi_hot: np.ndarray, strategy: str) -> np.ndarray | None:
    """``pos_weight`` per label for multi-label BCE: ``negatives / positives`` (balanced) or its square root."""
    if strategy not in STRATEGIES:
        raise DataError(f"unknown class weighting '{strategy}'; choose one of {', '.join(STRATEGIES)}")
    if strategy == "none":
        return None
    multi_hot = np.asarray(multi_hot, dtype=np.float64)
    positives = multi_hot.sum(axis=0)
    negatives = len(multi_hot) - positives
    ratio = negatives / np.maximum(positives, 1.0)  # a label never positive gets weight from one pseudo-positive
    return ratio if strategy == "balanced" else np.sqrt(ratio)


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float = 2.0,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Multi-class focal loss (Lin et al. 2017): ``-w_y (1 - p_y)^gamma log p_y``; ``gamma=0`` is weighted CE.

    ``targets`` equal to ``-100`` are ignored. ``reduction``: ``none``, ``sum`` or ``mean`` (over kept targets).
    ``label_smoothing`` eps mixes in the mean of ``-log p`` over all classes as Trainer's ``LabelSmoother`` does:
    ``(1 - eps) * loss + eps * mean_c(-log p_c)``, before the class weight.
    """
    logits = logits.reshape(-1, logits.shape[-1]).float()
    targets = targets.reshape(-1)
    keep = targets != IGNORE_INDEX
    logits, targets = logits[keep], targets[keep]
    log_probs = F.log_softmax(logits, dim=-1)
    log_p = log_probs.gather(1, targets[:, None]).squeeze(1)
    loss = -log_p if gamma == 0 else -((1 - log_p.exp()) ** gamma) * log_p
    if label_smoothing:
        loss = (1 - label_smoothing) * loss - label_smoothing * log_probs.mean(-1)
    if weight is not None:
        loss = loss * weight.to(loss.device, loss.dtype)[targets]
    return _reduce(loss, reduction)


def binary_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float = 2.0,
    pos_weight: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Element-wise focal BCE for multi-label targets in {0, 1}; ``gamma=0`` is ``BCEWithLogits``."""
    logits, targets = logits.float(), targets.float()
    if pos_weight is not None:
        pos_weight = pos_weight.to(logits.device, logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")
    if gamma:
        p = torch.sigmoid(logits)
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = loss * (1 - p_t) ** gamma
    return _reduce(loss, reduction)


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / max(loss.numel(), 1)


def make_loss_func(weights: np.ndarray | None = None, gamma: float = 0.0, multi_label: bool = False,
                   label_smoothing: float = 0.0):
    """A ``compute_loss_func`` for ``Trainer``: (weighted, focal, label-smoothed) cross-entropy or BCE, for sequence
    and token labels.

    Trainer passes ``num_items_in_batch``: the count of non-ignored labels over the gradient-accumulation steps and,
    with ``average_tokens_across_devices`` (its default), over all processes. Dividing the summed loss by it is what
    Trainer then assumes (it multiplies the loss by the number of processes, which DDP's gradient averaging undoes
    and skips dividing by the accumulation steps), so 2 processes x batch b train exactly as 1 process x batch 2b.
    """
    weight_tensor = None if weights is None else torch.as_tensor(weights, dtype=torch.float32)

    def compute_loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        if multi_label:
            # each label a two-class problem smoothed as LabelSmoother smooths one: target (1 - eps) y + eps / 2
            targets = labels.float() * (1 - label_smoothing) + label_smoothing / 2 if label_smoothing else labels
            loss = binary_focal_loss(logits, targets, gamma, weight_tensor, reduction="sum")
            count = labels.numel()
        else:
            loss = focal_loss(logits, labels, gamma, weight_tensor, reduction="sum", label_smoothing=label_smoothing)
            count = (labels != IGNORE_INDEX).sum()
        if num_items_in_batch is not None:
            count = num_items_in_batch
        return loss / count

    return compute_loss


def training_loss(labels: np.ndarray, num_labels: int, strategy: str, gamma: float = 0.0, multi_label: bool = False,
                  allow_absent: bool = False, label_smoothing: float = 0.0):
    """The ``compute_loss_func`` for ``Trainer``: the loss that ``--class_weighting``, ``--focal_gamma`` and
    ``--label_smoothing_factor`` ask for, plain cross-entropy (or BCE) when none. ``labels``: class ids (``-100``
    ignored, as for NER subwords) or a multi-hot matrix.

    Never None, on purpose: the models' own losses are a mean over one process's batch, but Trainer (transformers 5,
    ``average_tokens_across_devices`` on) treats the loss of any model whose ``forward`` takes ``**kwargs`` as
    divided by the labels of all processes and all accumulation steps: it multiplies it by the number of processes
    and does not divide it by ``--gradient_accumulation_steps``, so gradients (and the logged loss) would be that
    many times too large. :func:`make_loss_func` divides by exactly that count.
    """
    if multi_label:
        weights = positive_weights(labels, strategy)
    else:
        weights = class_weights(labels, num_labels, strategy, allow_absent=allow_absent)
    if weights is not None:
        logger.info("class weights (%s): %s", strategy, np.round(weights, 3).tolist())
    return make_loss_func(weights, max(gamma, 0.0), multi_label=multi_label, label_smoothing=label_smoothing)


def oversampled_order(labels: Sequence[int], seed: int = 0) -> np.ndarray:
    """Example indices, shuffled, with examples of smaller classes repeated (sampled with replacement) until each
    class matches the largest."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError("--oversample supports single-label data only; use --class_weighting for multi-label")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    target = counts.max()
    indices = [np.arange(len(labels))]
    for cls, count in zip(classes, counts):
        if count < target:
            members = np.flatnonzero(labels == cls)
            indices.append(rng.choice(members, size=target - count, replace=True))
    order = np.concatenate(indices)
    rng.shuffle(order)
    return order


def oversample(dataset, labels: Sequence[int], seed: int = 0):
    """The dataset with :func:`oversampled_order`'s rows.

    Done on the dataset rather than in a custom sampler so it composes with any sampler, length grouping and
    distributed training. Apply it to the training split only.
    """
    return dataset.select(oversampled_order(labels, seed).tolist())
