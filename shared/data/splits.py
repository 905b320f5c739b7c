"""Held-out splits carved from the training data: a validation split and cross-validation folds.

Index-based, so every recipe can use it whatever its data structure (a ``datasets.Dataset``, NER examples, an
image set): the functions return sorted index arrays ``(keep, holdout)`` and the recipe selects them.

- **Stratified** by label where that is possible (single-label data): each split keeps the class proportions.
- **Group-aware** with ``groups`` (patient id, note id, document): every group lands in exactly one split, so no
  patient is in both training and evaluation data.
- **Deterministic** given ``seed``: the same data and seed give the same splits (every fold of a cross-validation
  run sees the same partition).

The splitting itself is scikit-learn's (``train_test_split``, ``GroupShuffleSplit``, ``StratifiedKFold``,
``StratifiedGroupKFold``, ...). Only counts are logged, never examples.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
from sklearn.model_selection import GroupKFold, GroupShuffleSplit, KFold, StratifiedGroupKFold, StratifiedKFold
from sklearn.model_selection import train_test_split

from shared.core.args import SPLIT_FLAGS
from shared.core.errors import DataError
from shared.data.tables import read_table

logger = logging.getLogger(__name__)

DEFAULT_VALIDATION_PERCENTAGE = 10.0


# ------------------------------------------------------------------------------------------------ index splits
def _class_labels(labels: Sequence | None, n: int) -> np.ndarray | None:
    """Labels to stratify on: one class per example, or None (no labels, or multi-label lists)."""
    if labels is None:
        return None
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} examples")
    if any(isinstance(label, (list, tuple, set, np.ndarray)) for label in labels):
        return None  # multi-label (or sequence) labels: no single class to stratify on
    return np.asarray([str(label) for label in labels])


def _group_ids(groups: Sequence | None, n: int) -> np.ndarray | None:
    if groups is None:
        return None
    if len(groups) != n:
        raise ValueError(f"{len(groups)} groups for {n} examples")
    return np.asarray([str(g) for g in groups])


def _check_sizes(n: int, groups: np.ndarray | None, parts: int, what: str) -> None:
    if n < parts:
        raise DataError(f"{what} needs at least {parts} examples, the training data has {n}")
    if groups is not None and len(set(groups)) < parts:
        raise DataError(f"{what} needs at least {parts} groups, the training data has {len(set(groups))} "
                        "(every group stays in one split)")


def _quietly(splitter, n: int, y: np.ndarray | None, groups: np.ndarray | None):
    """All (keep, holdout) pairs of a scikit-learn splitter; its warning about rare classes is not repeated."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        return list(splitter.split(np.zeros((n, 1)), y, groups))


def fold_indices(n: int, k: int, fold: int, labels: Sequence | None = None, groups: Sequence | None = None,
                 seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``fold`` (0-based) of a ``k``-fold partition of ``n`` examples: ``(keep, holdout)`` sorted indices.

    Over ``fold = 0 .. k-1`` every example is held out exactly once. Stratified by ``labels`` when they are single
    classes (StratifiedKFold / StratifiedGroupKFold); with ``groups`` no group is split between keep and holdout.
    """
    if k < 2:
        raise DataError(f"cross-validation needs at least 2 folds, got {k}")
    if not 0 <= fold < k:
        raise DataError(f"fold must be in 0..{k - 1}, got {fold}")
    y, g = _class_labels(labels, n), _group_ids(groups, n)
    _check_sizes(n, g, k, f"{k}-fold cross-validation")
    folds = None
    if y is not None and Counter(y).most_common(1)[0][1] >= k:  # stratifiable: some class fills every fold
        splitter = (StratifiedGroupKFold(k, shuffle=True, random_state=seed) if g is not None
                    else StratifiedKFold(k, shuffle=True, random_state=seed))
        folds = _quietly(splitter, n, y, g)
    if folds is None:
        splitter = GroupKFold(k, shuffle=True, random_state=seed) if g is not None else KFold(k, shuffle=True, random_state=seed)
        folds = _quietly(splitter, n, None, g)
    keep, holdout = folds[fold]
    return np.sort(keep), np.sort(holdout)


def split_indices(n: int, fraction: float, labels: Sequence | None = None, groups: Sequence | None = None,
                  seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Hold out about ``fraction`` of ``n`` examples: ``(keep, holdout)`` sorted indices.

    Without groups: ``train_test_split``, stratified by ``labels`` when every class has at least two examples.
    With groups and class labels: one fold of StratifiedGroupKFold with ``round(1 / fraction)`` folds (the share
    held out is the nearest 1/k: 10% -> 1/10, 15% -> 1/7, 30% -> 1/3); without labels, GroupShuffleSplit (a
    ``fraction`` of the groups). No group is split between keep and holdout.
    """
    if not 0 < fraction < 1:
        raise DataError(f"the held-out fraction must be in (0, 1), got {fraction}")
    y, g = _class_labels(labels, n), _group_ids(groups, n)
    _check_sizes(n, g, 2, "a held-out split")
    if g is not None:
        if y is not None:
            # k folds, hold one out; above one half, keep one of k folds instead (round(1/(1-f)) folds)
            k = max(2, round(1 / min(fraction, 1 - fraction)))
            if len(set(g)) >= k and Counter(y).most_common(1)[0][1] >= k:
                keep, holdout = fold_indices(n, k, 0, y, g, seed)
                return (keep, holdout) if fraction <= 0.5 else (holdout, keep)
        splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        try:
            keep, holdout = _quietly(splitter, n, None, g)[0]
        except ValueError:
            keep = holdout = []
        if not len(keep) or not len(holdout):
            raise DataError(f"cannot hold out {fraction:.0%} of {len(set(g))} groups and keep the rest") from None
        return np.sort(keep), np.sort(holdout)
    index = np.arange(n)
    stratify = y if y is not None and min(Counter(y).values()) >= 2 else None
    try:
        keep, holdout = train_test_split(index, test_size=fraction, stratify=stratify, random_state=seed)
    except ValueError:
        if stratify is None:
            raise DataError(f"cannot hold out {fraction:.0%} of {n} examples and keep the rest") from None
        # more classes than held-out (or kept) examples: a stratified split is impossible, take a plain one
        keep, holdout = train_test_split(index, test_size=fraction, random_state=seed)
    return np.sort(keep), np.sort(holdout)


# ------------------------------------------------------------------------------------------- recipe helpers
LEFT_OUT = "left out"  # the fold --drop_fold cuts, named so in the log


def sample_limit(data_args, split: str) -> int | None:
    """``--max_train_samples`` / ``--max_eval_samples`` / ``--max_predict_samples`` of a split."""
    return {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples,
            "test": data_args.max_predict_samples}[split]


def check_split_sources(wanted: Iterable[str], available: Iterable[str], how: dict[str, str]) -> None:
    """Every requested split was read or will be carved; otherwise one line saying which flag it needs."""
    available = set(available)
    for split in wanted:
        if split not in available:
            raise DataError(f"{SPLIT_FLAGS[split]} needs {how[split]}")


def splits_to_carve(data_args, training_args, loaded: Iterable[str]) -> list[str]:
    """Which splits a recipe carves out of its training data, given the splits it ``loaded`` from files/the Hub.

    ``"test"``: fold ``--fold`` of ``--num_folds`` (scored like a test file, as if ``--do_predict``). ``"validation"``:
    ``--validation_split_percentage`` of the (remaining) training data, when ``--do_eval`` has no validation data,
    or whenever the percentage is given (evaluated as if ``--do_eval``). Nothing here changes the arguments: the
    recipe runs the splits it has.
    """
    loaded = set(loaded)
    carve = []
    if data_args.num_folds is not None:
        if "train" not in loaded:
            raise DataError("--num_folds cuts its folds from the training data: pass --do_train and a training file")
        if data_args.drop_fold and training_args.do_predict:
            raise DataError("--drop_fold scores nothing on the fold it leaves out: drop --do_predict")
        if data_args.drop_fold:
            logger.info("--drop_fold: fold %d of %d is left out of training and not scored", data_args.fold,
                        data_args.num_folds)
        elif not training_args.do_predict:
            logger.info("--num_folds: scoring the held-out fold as the test split (--do_predict)")
        carve.append("test")
    explicit = data_args.validation_split_percentage is not None
    if explicit or (training_args.do_eval and "validation" not in loaded):
        if "train" in loaded:
            if not training_args.do_eval:
                logger.info("--validation_split_percentage: evaluating on the held-out validation split (--do_eval)")
            carve.append("validation")
        elif explicit:
            raise DataError("--validation_split_percentage carves validation data out of the training data: pass "
                            "--do_train and a training file")
    return carve


def carve_splits(n: int, data_args, carve: Sequence[str], seed: int, labels: Sequence | None = None,
                 groups: Sequence | None = None) -> dict[str, np.ndarray]:
    """Indices into the training data for ``"train"`` and each split in ``carve`` (see :func:`splits_to_carve`).

    The test fold is cut first; validation comes out of what remains, so the three never overlap. Logs how many
    examples (and groups) each split got.
    """
    parts = {"train": np.arange(n)}
    if "test" in carve:
        keep, holdout = fold_indices(n, data_args.num_folds, data_args.fold, labels, groups, seed)
        parts = {"train": keep, LEFT_OUT if data_args.drop_fold else "test": holdout}  # --drop_fold: never used
    if "validation" in carve:
        train = parts["train"]
        percentage = data_args.validation_split_percentage or DEFAULT_VALIDATION_PERCENTAGE
        keep, holdout = split_indices(
            len(train), percentage / 100,
            None if labels is None else [labels[i] for i in train],
            None if groups is None else [groups[i] for i in train],
            seed,
        )
        parts["train"], parts["validation"] = train[keep], train[holdout]
    how = ("stratified by label where possible" if _class_labels(labels, n) is not None else "not stratified") + (
        ", whole groups" if groups is not None else "")
    counts = ", ".join(f"{split} {len(idx)}" + (f" ({len({groups[i] for i in idx})} groups)" if groups is not None else "")
                       for split, idx in parts.items())
    fold = f" (cross-validation fold {data_args.fold} of {data_args.num_folds})" if "test" in carve else ""
    logger.info("split the training data%s, %s: %s examples", fold, how, counts)
    parts.pop(LEFT_OUT, None)
    if labels is not None and _class_labels(labels, n) is not None:
        in_train = {str(labels[i]) for i in parts["train"]}
        for split, idx in parts.items():
            missing = sorted({str(labels[i]) for i in idx} - in_train)
            if missing:
                logger.warning("%s: %d class(es) have no example left in the training part (too rare to split)",
                               split, len(missing))
    return parts


def warn_shared_groups(groups: dict[str, Sequence[str]], column: str) -> int:
    """Warn when a held-out split shares groups (patients, notes) with ``groups["train"]``: its scores then say
    more about patients the model has seen than about new ones. Counts only: group ids can identify patients and
    are never logged. Returns how many splits share groups."""
    train = set(groups.get("train", ()))
    leaking = 0
    for split, values in groups.items():
        shared = train.intersection(values) if split != "train" else set()
        if shared:
            leaking += 1
            logger.warning("%s shares %d of its %d groups ('%s') with the training data: its scores are optimistic "
                           "for new %s", split, len(shared), len(set(values)), column, column)
    return leaking


def table_groups(table, column: str) -> list[str]:
    """``--group_column`` of a :class:`shared.data.tables.Table`; a missing column or an empty cell is a one-line
    error."""
    if column not in table.column_names:
        raise DataError(f"group column '{column}' not found (--group_column; columns: {', '.join(table.column_names)})",
                        path=table.source)
    out = []
    for index, value in enumerate(table[column]):
        if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
            raise DataError(f"empty group in column '{column}' (--group_column)", *table.where(index))
        out.append(str(value).strip())
    return out


def file_groups(path: str, column: str) -> list[str]:
    """``--group_column`` of a table file (CSV/JSONL/parquet/saved dataset) whose rows are the examples."""

    return table_groups(read_table(path), column)
