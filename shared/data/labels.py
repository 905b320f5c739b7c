"""Class labels of classification data (text, images): one cell format, one class order, one encoding.

A label cell holds a class name (single-label) or a list of names (multi-label): a JSON list (``["cardiac",
"renal"]``), a list value (JSON lines, parquet), or, with ``--label_separator ";"``, names split on the separator.
Surrounding whitespace is stripped, so ``"cardiac "`` is the class ``cardiac``, never a new one, and a whole number
written as a decimal is the whole number (``1.0`` is the class ``1``). Prediction files
write multi-label cells back the same way (a JSON list, or joined with the separator).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence

import numpy as np

from shared.core.errors import DataError

IGNORE_INDEX = -100  # the label id of a position no loss or metric counts (PyTorch's cross-entropy skips it)

Where = Callable[[int], tuple[str, int | None]]  # row index -> (file, line) for error messages


WHOLE_NUMBER_WRITTEN_AS_DECIMAL = re.compile(r"(-?\d+)\.0+")


def class_name(value) -> str:
    """The class a label value names: stripped of surrounding whitespace, and a whole number written as a decimal
    (``1.0``, as Excel or pandas turn ``1`` into when a column holds a gap) is the whole number (``1``), so that
    one split's ``1.0`` and another's ``1`` are one class."""
    text = str(value).strip()
    whole = WHOLE_NUMBER_WRITTEN_AS_DECIMAL.fullmatch(text)
    return whole.group(1) if whole else text


def parse_label_cell(value, separator: str | None = None):
    """A class name, a list of names, or None (empty cell). Raises ValueError for a malformed JSON list."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [class_name(v) for v in value if str(v).strip()]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError("label cell starts with '[' but is not a JSON list") from None
        if not isinstance(items, list):
            raise ValueError("label cell starts with '[' but is not a JSON list")
        return [class_name(v) for v in items if str(v).strip()]
    if separator is not None:
        return [class_name(v) for v in text.split(separator) if v.strip()]
    return class_name(text) or None


def parse_label_column(values: Sequence, where: Where, separator: str | None = None, column: str = "label"):
    """Every cell of a label column parsed; an empty, malformed or mixed (names and lists) cell is a DataError."""
    parsed = []
    for index, value in enumerate(values):
        try:
            label = parse_label_cell(value, separator)
        except ValueError as e:
            raise DataError(str(e), *where(index)) from None
        if label is None:
            raise DataError(f"missing label (column '{column}'); fill it in, or drop such rows with train.py "
                            "--drop_unlabelled_rows", *where(index))
        if parsed and isinstance(label, list) != isinstance(parsed[0], list):
            raise DataError("mixes single labels and label lists; use one kind in every row", *where(index))
        parsed.append(label)
    return parsed


def format_label_cell(label, separator: str | None = None) -> str:
    """A label for a prediction file: the name, or a list as a JSON list (or joined with ``separator``)."""
    if isinstance(label, list):
        return separator.join(label) if separator is not None else json.dumps(label, ensure_ascii=False)
    return str(label)


def sort_label_names(names, natural: Sequence[str] | None = None) -> list[str]:
    """The class order: ``natural`` first (folder or ``.npz`` order, when the data defines one), then the other names,
    numeric ones in numeric order ("2" before "10"), the rest alphabetically."""
    first = list(natural or [])
    rest = set(names) - set(first)
    return first + sorted(rest, key=lambda n: (0, int(n), "") if n.lstrip("-").isdigit() else (1, 0, n))


def require_classes(label_names: list[str], multi_label: bool, source: str) -> list[str]:
    """``label_names`` of the training data, or a DataError when single-label data has only one class."""
    if not multi_label and len(label_names) < 2:
        raise DataError("training data has a single class; classification needs at least two (--max_train_samples "
                        "keeps the first N examples: a file sorted by label holds one class there)", path=source)
    return label_names


def names_in(labels: Sequence) -> set[str]:
    """Every class name that occurs in a list of labels (names or lists of names)."""
    return {name for label in labels for name in (label if isinstance(label, list) else [label])}


def encode_labels(labels: Sequence, label2id: dict[str, int], multi_label: bool, where: Where,
                  known_as: str = "the training data") -> np.ndarray:
    """Class ids ``(N,)`` int64, or multi-hot ``(N, K)`` float32; a name outside ``label2id`` is a DataError."""
    out = np.zeros((len(labels), len(label2id)), dtype=np.float32) if multi_label else np.empty(len(labels), np.int64)
    for row, label in enumerate(labels):
        if isinstance(label, list) != multi_label:
            kind = "a list of labels" if multi_label else "a single label"
            raise DataError(f"the model is {'multi' if multi_label else 'single'}-label: expected {kind}", *where(row))
        for name in label if multi_label else [label]:
            if name not in label2id:
                raise DataError(f"label '{name}' does not occur in {known_as} (known: {', '.join(label2id)})",
                                *where(row))
        if multi_label:
            out[row, [label2id[n] for n in label]] = 1.0
        else:
            out[row] = label2id[label]
    return out


def label_counts(label_ids: np.ndarray, label_names: list[str]) -> dict[str, int]:
    """How many examples carry each class (multi-hot: each label counted), for the model card."""
    label_ids = np.asarray(label_ids)
    counts = label_ids.sum(axis=0) if label_ids.ndim == 2 else np.bincount(label_ids, minlength=len(label_names))
    return {name: int(c) for name, c in zip(label_names, counts)}


def decisions(probs: np.ndarray, label_names: list[str], multi_label: bool, thresholds=None) -> list:
    """The predicted label of every row: argmax (binary: class 1 when its probability >= ``thresholds``), or the
    names whose probability reaches their threshold (multi-label)."""
    probs = np.asarray(probs)
    if multi_label:
        cut = 0.5 if thresholds is None else np.asarray(thresholds)
        return [[label_names[j] for j in np.flatnonzero(row >= cut)] for row in probs]

    return [label_names[c] for c in predict_classes(probs, thresholds)]


def predict_classes(probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
    probs = np.asarray(probs)
    if threshold is not None and probs.shape[1] == 2:
        return (probs[:, 1] >= threshold).astype(int)
    return probs.argmax(axis=1)
